"""nvcc: find it, check the target architecture, compile kernels to cubin (cached).

Used by the ``cuda`` backend (for the detected GPU) and by ``spikeforge build --backend
cuda --arch sm_XX`` (no GPU needed). Cubins share the build cache of the CPU libraries:
key = (source, nvcc version, flags, arch), atomic publish, locked builds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import BuildError, CompilerNotFoundError
from .build import CACHE_FORMAT_VERSION, BuildResult, Toolchain, build_artifact

#: nvcc flags: no fused multiply-add, so kernels round like the CPU backend does; single-precision
#: subnormals flushed to zero, as the CPU backend flushes them while its kernels run (-ftz=true).
NVCC_FLAGS = ("-cubin", "-O3", "-std=c++17", "--fmad=false", "-ftz=true", "-diag-suppress=177",
              "-Xptxas=-v")  # ptxas reports registers and shared memory per kernel (build.log)

_HINT = ("Install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads), put nvcc on "
         "PATH, or set NVCC or CUDA_HOME.")


def find_nvcc() -> str:
    """``$NVCC``, else ``nvcc`` on PATH, else ``$CUDA_HOME/bin/nvcc``, else /usr/local/cuda."""
    env = os.environ.get("NVCC")
    if env:
        path = shutil.which(env)
        if not path:
            raise CompilerNotFoundError(f"NVCC={env!r} does not name an existing program. {_HINT}")
        return path
    candidates = [shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise CompilerNotFoundError(f"no CUDA compiler (nvcc) was found. {_HINT}")


@functools.lru_cache(maxsize=None)
def nvcc_identity(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return f"{lines[-1] if lines else 'unknown'} ({os.path.realpath(nvcc)})"


@functools.lru_cache(maxsize=None)
def supported_archs(nvcc: str) -> tuple[str, ...]:
    out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, check=False)
    archs = tuple(sorted(set(re.findall(r"sm_\d+[a-z]?", out.stdout)), key=lambda a: (len(a), a)))
    return archs


def check_arch(arch: str, nvcc: str) -> str:
    if not isinstance(arch, str) or not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise BuildError(f"unsupported CUDA architecture {arch!r}: expected a name like 'sm_80' or 'sm_90'")
    known = supported_archs(nvcc)
    if known and arch not in known:
        raise BuildError(
            f"unsupported CUDA architecture {arch!r} for {nvcc_identity(nvcc)}; this nvcc targets "
            f"{', '.join(known)}")
    return arch


def build_cubin(source: str, arch: str, *, name: str = "model", describe: str = "model",
                nvcc: str | None = None) -> BuildResult:
    """Compile CUDA ``source`` to ``<name>.cubin`` for ``arch`` (cached)."""
    nvcc = nvcc or find_nvcc()
    check_arch(arch, nvcc)
    flags = (*NVCC_FLAGS, f"-arch={arch}")
    blob = json.dumps([CACHE_FORMAT_VERSION, "cubin", nvcc_identity(nvcc), " ".join(flags), name, source])
    key = hashlib.sha256(blob.encode()).hexdigest()
    chain = Toolchain(nvcc, nvcc_identity(nvcc), flags, "source.cu", f"{name}.cubin", kind="CUDA")
    return build_artifact(source, chain, key, describe=describe)


def build_log(build: BuildResult) -> str:
    """What the compiler printed while building ``build`` (empty if nothing was kept)."""
    log = build.path.parent / "build.log"
    return log.read_text() if log.is_file() else ""


def build_network_cubin(spec, arch: str, block_sizes: dict | None = None, *, name: str, describe: str,
                        nvcc: str | None = None, source: str | None = None):
    """Render and compile a network's CUDA kernels for ``arch``.

    Without ``block_sizes``, the block sizes are chosen by occupancy
    (:mod:`spikeforge.codegen.occupancy`) from the registers and shared memory ptxas
    reports for the default sizes; when that changes any of them, the kernels are rendered
    and compiled again (both builds are cached). Returns (source, build, block sizes,
    occupancy report). ``source``: the kernels already rendered with ``block_sizes``."""
    from ..codegen.launch import plan
    from ..codegen.occupancy import choose_block_sizes, parse_ptxas
    from ..codegen.render import render_network

    if source is None:
        source = render_network(spec, "cuda", block_sizes)
    build = build_cubin(source, arch, name=name, describe=describe, nvcc=nvcc)
    if block_sizes is not None:
        return source, build, dict(block_sizes), []
    chosen, report = choose_block_sizes(spec, parse_ptxas(build_log(build)), arch)
    defaults = {launch.name: launch.block for launch in plan(spec)}
    if any(defaults.get(kernel) != block for kernel, block in chosen.items()):
        source = render_network(spec, "cuda", chosen)
        build = build_cubin(source, arch, name=name, describe=describe, nvcc=nvcc)
    return source, build, chosen, report
