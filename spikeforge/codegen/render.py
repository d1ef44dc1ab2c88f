"""Kernel specs → source text, through the Jinja2 templates of a backend.

Brian2's contract: ``StrictUndefined`` (a missing value is an error, never an empty
string), ``trim_blocks``/``lstrip_blocks`` so the templates can be indented for people,
and one template per kernel kind extending a common base.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jinja2

from .. import __version__
from .cprint import comment_text
from .ir import NetworkSpec
from .launch import RECORD_BLOCK, kernel_launch


@dataclass(frozen=True)
class Target:
    """What the templates of one target need from the renderer."""

    suffix: str  # of the template files
    launch: bool  # kernels are rendered with their launch shape (threads per block, barriers)
    spike_flags: bool  # kernels read the presynaptic spike flags (CUDA gathers spikes in shared memory instead)


#: The code generator's targets, by template folder: C++ for the CPU, and the .cu kernels
#: that the ``cuda`` and ``cuda-emu`` backends share (see spikeforge.runtime.backends).
TARGETS = {"cpu": Target(".cpp.j2", launch=False, spike_flags=True),
           "cuda": Target(".cu.j2", launch=True, spike_flags=False)}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    root = resources.files("spikeforge") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["comment"] = comment_text  # user text inside a // comment
    return env


def philox_header() -> str:
    return (resources.files("spikeforge") / "templates" / "common" / "philox.h").read_text()


_CTYPES = {"scalar": "scalar", "double": "double", "int32": "int32_t", "uint32": "uint32_t", "uint8": "uint8_t"}


def kernel_arrays(spec: NetworkSpec, kernel, target: str = "cpu") -> list[str]:
    """Every array a kernel touches, in a stable order."""
    names = {a.name for a in spec.arrays}
    used = {a.array for a in kernel.loads} | {a.delta for a in kernel.loads if a.delta}
    used |= {v for key, v in kernel.info.items() if isinstance(v, str) and v in names
             and (TARGETS[target].spike_flags or key != "flags")}
    used |= set(kernel.writes) | (set(kernel.info.get("reads", ())) & names)
    return sorted(used)


def render_kernel(spec: NetworkSpec, kernel, target: str = "cpu", block_sizes: dict | None = None) -> str:
    template = environment().get_template(f"{target}/{kernel.template}{TARGETS[target].suffix}")
    pointers = [(_CTYPES[spec.array(n).dtype], n) for n in kernel_arrays(spec, kernel, target)]
    extra = {"launch": kernel_launch(kernel, block_sizes)} if TARGETS[target].launch else {}
    return template.render(k=kernel, spec=spec, pointers=pointers, **extra).rstrip() + "\n"


def render_network(spec: NetworkSpec, target: str = "cpu", block_sizes: dict | None = None) -> str:
    """The whole translation unit for ``target`` (stable: same spec, same text).

    ``target`` is ``cpu`` (C++) or ``cuda`` (the kernels shared by the ``cuda`` and
    ``cuda-emu`` runtimes); see :data:`TARGETS`.
    """
    kernels = [render_kernel(spec, k, target, block_sizes) for k in [*spec.kernels, *spec.custom_updates]]
    recorded_pops = [p["name"] for p in spec.populations if p["record_spikes"]]
    template = environment().get_template(f"{target}/model{TARGETS[target].suffix}")
    text = template.render(
        spec=spec,
        kernels=kernels,
        philox=philox_header(),
        version=__version__,
        recorded_pops=recorded_pops,
        rsuffix="f" if spec.precision == "float" else "d",
        record_block=RECORD_BLOCK,
    )
    # collapse runs of blank lines left by conditional blocks
    lines, blank = [], 0
    for line in text.splitlines():
        blank = blank + 1 if not line.strip() else 0
        if blank <= 1:
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n"
