"""Kernel specs → source text, through the Jinja2 templates of a backend.

Brian2's contract: ``StrictUndefined`` (a missing value is an error, never an empty
string), ``trim_blocks``/``lstrip_blocks`` so the templates can be indented for people,
and one template per kernel kind extending a common base.

Each kernel template declares, in its first line, the array roles it names (as Brian2's
templates declare ``USES_VARIABLES``)::

    {#- uses: spk, spk_cnt, ptr?, end?, times?; ignores: flags -#}

``role?`` is a role the template uses when the kernel spec gives it (a spike source
array's pointers); ``ignores`` lists roles a spec may give for another target's template of
the same kind that this one has no use for (the CUDA neuron update gathers spikes in shared
memory, not in the CPU's flag array). Rendering checks the spec against the declaration
(every required role given, no role the template does not declare) and the kernel's pointers
are exactly its loads, its ``reads`` and ``writes`` and the arrays of its declared roles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jinja2

from .. import __version__
from .cprint import code_names, comment_text
from .ir import KernelSpec, NetworkSpec
from .launch import RECORD_BLOCK, kernel_launch


@dataclass(frozen=True)
class Target:
    """What the templates of one target need from the renderer."""

    suffix: str  # of the template files
    launch: bool  # kernels are rendered with their launch shape (threads per block, barriers)


#: The code generator's targets, by template folder: C++ for the CPU, and the .cu kernels
#: that the ``cuda`` and ``cuda-emu`` backends share (see spikeforge.runtime.backends).
TARGETS = {"cpu": Target(".cpp.j2", launch=False),
           "cuda": Target(".cu.j2", launch=True)}


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
    env.filters["named_in"] = named_in
    return env


def named_in(accesses, code: str) -> list:
    """The accesses (loads) whose local variable ``code`` names: a pass that runs apart, such
    as the CPU's reset of the neurons that spiked, loads and stores only what it touches."""
    names = code_names(code)
    return [a for a in accesses if a.local in names]


def philox_header() -> str:
    return (resources.files("spikeforge") / "templates" / "common" / "philox.h").read_text()


_CTYPES = {"scalar": "scalar", "double": "double", "int32": "int32_t", "uint32": "uint32_t", "uint16": "uint16_t",
           "uint8": "uint8_t"}


_ROLE = r"[A-Za-z_][A-Za-z0-9_]*"
_DECLARATION = re.compile(rf"\{{#- uses:(?: (?P<uses>{_ROLE}\??(?:, {_ROLE}\??)*))?"
                          rf"(?:; ignores: (?P<ignores>{_ROLE}(?:, {_ROLE})*))? -#\}}")


@dataclass(frozen=True)
class Declaration:
    """The array roles a kernel template declares in its first line (see the module docstring)."""

    template: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def roles(self) -> tuple[str, ...]:
        return self.required + self.optional


def template_path(kernel: KernelSpec, target: str) -> str:
    return f"{target}/{kernel.template}{TARGETS[target].suffix}"


def parse_declaration(template: str, first: str) -> Declaration:
    """The declaration in ``first``, the first line of ``template``."""
    match = _DECLARATION.fullmatch(first)
    if match is None:
        raise ValueError(f"template {template}: the first line must declare the array roles the template uses, "
                         f"as '{{#- uses: role, optional_role?; ignores: role -#}}' (got {first!r})")
    uses = match["uses"].split(", ") if match["uses"] else []
    ignored = tuple(match["ignores"].split(", ")) if match["ignores"] else ()
    required = tuple(r for r in uses if not r.endswith("?"))
    optional = tuple(r[:-1] for r in uses if r.endswith("?"))
    roles = [*required, *optional, *ignored]
    if len(set(roles)) != len(roles):
        raise ValueError(f"template {template}: a role is declared twice in {first!r}")
    return Declaration(template, required, optional, ignored)


@lru_cache(maxsize=None)
def declaration(template: str) -> Declaration:
    """The declaration of ``template`` (a path under templates/, e.g. ``cpu/neuron_update.cpp.j2``),
    parsed once."""
    env = environment()
    return parse_declaration(template, env.loader.get_source(env, template)[0].split("\n", 1)[0])


def check_roles(kernel: KernelSpec, target: str = "cpu") -> Declaration:
    """The template's declaration, after checking that ``kernel`` gives every role it requires
    and no role it does not declare."""
    decl = declaration(template_path(kernel, target))
    where = f"kernel '{kernel.name}' (template {decl.template})"
    missing = [r for r in decl.required if r not in kernel.arrays]
    if missing:
        raise ValueError(f"{where}: the template uses the array role '{missing[0]}', which the kernel spec does "
                         f"not give (it gives: {', '.join(kernel.arrays) or 'none'})")
    extra = [r for r in kernel.arrays if r not in decl.roles and r not in decl.ignored]
    if extra:
        raise ValueError(f"{where}: the kernel spec gives the array role '{extra[0]}', which the template does "
                         f"not declare (it declares: {', '.join(decl.roles) or 'none'})")
    return decl


def kernel_arrays(spec: NetworkSpec, kernel: KernelSpec, target: str = "cpu") -> list[str]:
    """Every array a kernel touches, in a stable order: its loads, ``reads`` and ``writes``,
    and the arrays of the roles its template declares."""
    decl = check_roles(kernel, target)
    used = {a.array for a in kernel.loads} | {a.delta for a in kernel.loads if a.delta}
    used |= set(kernel.reads) | set(kernel.writes)
    used |= set(kernel.role_arrays(r for r in decl.roles if r in kernel.arrays))
    names = {a.name for a in spec.arrays}
    unknown = sorted(used - names)
    if unknown:
        raise ValueError(f"kernel '{kernel.name}': array '{unknown[0]}' is not an array of network '{spec.name}'")
    return sorted(used)


def render_kernel(spec: NetworkSpec, kernel: KernelSpec, target: str = "cpu", block_sizes: dict | None = None) -> str:
    template = environment().get_template(template_path(kernel, target))
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
