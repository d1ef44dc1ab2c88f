"""``spikeforge doctor``: what this machine can run, and what to install for the rest.

Each check runs the real thing where it can (the C++ compiler builds and runs an OpenMP
program, the CUDA driver is loaded and initialised, MPI's library is asked its version)
and reports one line: found or missing, what was found, and for a missing piece the
command that installs it. Nothing here is imported by ``import spikeforge``.

Examples:
    >>> from spikeforge.doctor import diagnose
    >>> report = diagnose()
    >>> [check.name for check in report][:3]
    ['python', 'C++ compiler', 'OpenMP']
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Check", "diagnose", "format_report", "backends_ready"]

#: What the GPU route needs beyond the toolkit; documented in docs/install.md.
PYCUDA_STEP = "pip install pycuda   (built against your CUDA toolkit: docs/install.md, 'One GPU')"
GPU_EXTRA = "pip install 'spikeforge[gpu]'"
#: Headers pycuda's build includes besides cuda.h (its default build wraps cuRAND).
PYCUDA_HEADERS = ("curand.h",)


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` (found and working), what was found (``detail``), what
    it is needed for (``needed_for``) and, when missing, how to get it (``fix``)."""

    name: str
    ok: bool
    detail: str
    needed_for: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _cxx() -> tuple[Check, str | None]:
    from .errors import CompilerNotFoundError
    from .runtime.build import find_cxx_compiler

    try:
        cxx = find_cxx_compiler()
    except CompilerNotFoundError as exc:
        return Check("C++ compiler", False, str(exc).split(". ")[0], "every backend but cuda",
                     "apt install g++ (Debian/Ubuntu), dnf install gcc-c++ (Fedora), xcode-select --install "
                     "(macOS), or set CXX"), None
    version = _first_line(_run([cxx, "--version"]).stdout) or "version unknown"
    return Check("C++ compiler", True, f"{cxx}: {version}", "every backend but cuda"), cxx


_OPENMP_PROBE = """
#include <omp.h>
#include <cstdio>
int main() { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  std::printf("%d %d\\n", n, omp_get_max_threads()); return n > 0 ? 0 : 1; }
"""


def _openmp(cxx: str | None) -> Check:
    needed = "threads over the batch (cpu, cuda-emu)"
    if cxx is None:
        return Check("OpenMP", False, "no C++ compiler to try it with", needed, "install a C++ compiler first")
    with tempfile.TemporaryDirectory(prefix="spikeforge-doctor-") as tmp:
        src, exe = Path(tmp) / "omp.cpp", Path(tmp) / "omp"
        src.write_text(_OPENMP_PROBE)
        built = _run([cxx, "-fopenmp", str(src), "-o", str(exe)])
        if built.returncode != 0:
            return Check("OpenMP", False, f"{Path(cxx).name} -fopenmp failed: {_first_line(built.stderr)}", needed,
                         "apt install libgomp1 (gcc) or libomp-dev (clang); on macOS brew install libomp. "
                         "Without it spikeforge runs one thread")
        ran = _run([str(exe)])
    if ran.returncode != 0:
        return Check("OpenMP", False, f"the OpenMP test program failed: {_first_line(ran.stderr)}", needed,
                     "check the OpenMP runtime (libgomp/libomp) is installed")
    threads = ran.stdout.split()[-1] if ran.stdout.split() else "?"
    return Check("OpenMP", True, f"{Path(cxx).name} -fopenmp builds and runs ({threads} threads)", needed)


def _nvcc() -> tuple[Check, str | None]:
    from .errors import CompilerNotFoundError
    from .runtime.nvcc import find_nvcc, nvcc_identity

    needed = "cuda (and `spikeforge build --backend cuda` without a GPU)"
    try:
        nvcc = find_nvcc()
    except CompilerNotFoundError:
        return Check("nvcc", False, "not found (PATH, NVCC, CUDA_HOME, /usr/local/cuda)", needed,
                     "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads; on a cluster: "
                     "module load cuda), or set NVCC/CUDA_HOME"), None
    return Check("nvcc", True, nvcc_identity(nvcc), needed), nvcc


def cuda_root(nvcc: str | None) -> Path | None:
    """The CUDA toolkit's folder (with include/cuda.h): $CUDA_HOME, $CUDA_ROOT, $CUDA_PATH,
    else the folder above nvcc's real bin/ folder, else /usr/local/cuda. pycuda's build looks
    only beside nvcc, so it is told this folder as CUDA_ROOT."""
    candidates = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_ROOT", "CUDA_PATH")]
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if c and (Path(c) / "include" / "cuda.h").is_file():
            return Path(c)
    return None


def _headers(nvcc: str | None) -> tuple[Check, Path | None]:
    root = cuda_root(nvcc)
    needed = "building pycuda"
    if root is None:
        return Check("CUDA headers", False, "no include/cuda.h under CUDA_HOME, next to nvcc or in /usr/local/cuda",
                     needed, "install the CUDA toolkit (its include/ folder), or set CUDA_HOME to it"), None
    include = root / "include"
    missing = [h for h in PYCUDA_HEADERS if not (include / h).is_file()]
    if missing:
        return Check("CUDA headers", False, f"{include / 'cuda.h'}, but no {', '.join(missing)} in {include}",
                     needed, "install the toolkit's cuRAND development files (e.g. apt install "
                     "libcurand-dev-<version>, or the full CUDA toolkit)"), root
    return Check("CUDA headers", True, str(include / "cuda.h"), needed), root


def _driver() -> Check:
    needed = "cuda (running kernels on a GPU)"
    fix = ("install the NVIDIA driver (https://www.nvidia.com/drivers; on a cluster, run on a GPU node); "
           "without it, use cpu or cuda-emu")
    try:
        lib = ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
    except OSError:
        return Check("CUDA driver", False, "libcuda.so.1 not found (no NVIDIA driver)", needed, fix)
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    v = f"CUDA {version.value // 1000}.{version.value % 1000 // 10}"
    status = lib.cuInit(0)
    if status != 0:
        return Check("CUDA driver", False, f"libcuda.so.1 ({v}) loaded, but cuInit failed with error {status}",
                     needed, "check the GPU is visible (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    count = ctypes.c_int(0)
    lib.cuDeviceGetCount(ctypes.byref(count))
    return Check("CUDA driver", count.value > 0, f"{v}, {count.value} GPU(s)", needed,
                 "" if count.value else "no GPU visible: check nvidia-smi and CUDA_VISIBLE_DEVICES")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def pycuda_command(root: Path) -> str:
    """The command that builds pycuda against the toolkit in ``root``. pycuda's build takes the
    toolkit from the first nvcc on PATH (CUDA_ROOT only when there is none), so that nvcc goes
    first."""
    return f"PATH={root}/bin:$PATH CUDA_ROOT={root} pip install pycuda"


def _pycuda(root: Path | None, headers_ok: bool, driver_ok: bool) -> Check:
    needed = "cuda (launching kernels)"
    version = _version("pycuda")
    if version is not None:
        return Check("pycuda", True, f"pycuda {version}", needed)
    first = []
    if root is None:
        first.append("the CUDA toolkit")
    elif not headers_ok:
        first.append("the toolkit's missing headers (see CUDA headers)")
    if not driver_ok:
        first.append("the NVIDIA driver (pycuda links against libcuda)")
    command = pycuda_command(root) if root is not None else PYCUDA_STEP
    fix = f"first {' and '.join(first)}, then {command}" if first else command
    return Check("pycuda", False, "not installed", needed, fix)


def _mpi() -> Check:
    needed = "data-parallel training over processes (mpiexec -n K spikeforge train)"
    version = _version("mpi4py")
    if version is None:
        return Check("MPI", False, "mpi4py not installed", needed,
                     "pip install 'spikeforge[mpi]' mpich (or, on a cluster, module load openmpi, then "
                     "pip install --no-binary=mpi4py mpi4py)")
    code = ("import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
            "print(MPI.Get_library_version().splitlines()[0])")
    probe = _run([sys.executable, "-c", code], timeout=60)
    if probe.returncode != 0:
        return Check("MPI", False, f"mpi4py {version}, but no MPI library: {_first_line(probe.stderr[-300:])}",
                     needed, "pip install mpich (or module load openmpi / mpich on a cluster)")
    return Check("MPI", True, f"mpi4py {version}, {' '.join(probe.stdout.split())}", needed)


def _nccl() -> Check:
    needed = "all-reducing gradients between GPUs (several GPUs)"
    dist = next((d for d in ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy") if _version(d)), None)
    if dist is None:
        return Check("NCCL (cupy)", False, "cupy not installed", needed, GPU_EXTRA)
    code = "from cupy.cuda import nccl; v = nccl.get_version(); print(f'{v // 10000}.{v % 10000 // 100}.{v % 100}')"
    probe = _run([sys.executable, "-c", code], timeout=120)
    if probe.returncode != 0:
        return Check("NCCL (cupy)", False, f"{dist} {_version(dist)}, but NCCL does not load: "
                     f"{_first_line(probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else '')}",
                     needed, "pip install nvidia-nccl-cu12 (part of " + GPU_EXTRA + "); needs the NVIDIA driver")
    return Check("NCCL (cupy)", True, f"{dist} {_version(dist)}, NCCL {probe.stdout.strip()}", needed)


def diagnose() -> list[Check]:
    """Run every check, in the order of the report.

    Returns:
        One :class:`Check` per component: Python, the C++ compiler, OpenMP, nvcc, the CUDA
        headers, the CUDA driver, pycuda, MPI and NCCL.

    Examples:
        >>> from spikeforge.doctor import diagnose
        >>> checks = {c.name: c for c in diagnose()}
        >>> checks["python"].ok
        True
    """
    py = Check("python", sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})",
               "everything", "Python >= 3.10")
    cxx_check, cxx = _cxx()
    nvcc_check, nvcc = _nvcc()
    headers, root = _headers(nvcc)
    driver = _driver()
    pycuda = _pycuda(root, headers.ok, driver.ok)
    return [py, cxx_check, _openmp(cxx), nvcc_check, headers, driver, pycuda, _mpi(), _nccl()]


#: What a backend needs, by whether it runs on a GPU (the registry's ``gpu`` flag).
NEEDS = {False: ("C++ compiler",), True: ("nvcc", "CUDA driver", "pycuda")}


def backends_ready(checks: list[Check]) -> dict[str, bool]:
    """Which registered backends can run, from :func:`diagnose`'s checks: a GPU backend needs
    nvcc, the driver and pycuda, every other backend the C++ compiler.

    Examples:
        >>> from spikeforge.doctor import Check, backends_ready
        >>> ready = backends_ready([Check("C++ compiler", True, "g++", "")])
        >>> ready["cpu"], ready["cuda-emu"], ready["cuda"]
        (True, True, False)
    """
    from .runtime.backends import backend_names, get_backend

    ok = {c.name: c.ok for c in checks}
    return {name: all(ok.get(n, False) for n in NEEDS[get_backend(name).gpu]) for name in backend_names()}


def format_report(checks: list[Check]) -> str:
    """The report as ``spikeforge doctor`` prints it: one line per check, its fix below it.

    Examples:
        >>> from spikeforge.doctor import Check, format_report
        >>> missing = Check("nvcc", False, "not found", "cuda", "install the CUDA toolkit")
        >>> print(format_report([missing]))  # doctest: +ELLIPSIS
        spikeforge ...
          missing  nvcc  not found
                   needed for cuda; install the CUDA toolkit
        ...
    """
    from . import __version__

    width = max(len(c.name) for c in checks)
    lines = [f"spikeforge {__version__} on {platform.system()} {platform.machine()}"]
    for c in checks:
        lines.append(f"  {'ok' if c.ok else 'missing':<7}  {c.name:<{width}}  {c.detail}")
        if not c.ok:
            lines.append(f"  {'':<7}  needed for {c.needed_for}; {c.fix}")
    ready = backends_ready(checks)
    lines.append("backends that can run here: " + (", ".join(b for b, r in ready.items() if r) or "none"))
    return "\n".join(lines)
