"""Compile generated C++ into shared libraries, with a content-addressed on-disk cache.

Layout of the cache (``cache_dir()``)::

    <key[:2]>/<key>/            one published entry (never modified once published)
        lib<name>.so            the compiled library
        source.cpp              the exact source it was built from
        meta.json               key, sha256 of the .so, compiler, flags, timings
    <key[:2]>/<key>.lock        flock'ed while the entry is being (re)built
    <key[:2]>/<key>.tmp-XXXX/   a build in progress (or left behind by a killed one)
    failed/<key>.cpp            sources that did not compile, kept for inspection

An entry is built in a private temporary directory next to its final place and published
with a single ``os.rename``, so readers see either no entry or a complete one; a build
killed half-way only leaves a ``.tmp-`` directory, which later builds of the same key
delete.  Concurrent builds of the same key are serialised by an exclusive ``flock`` on the
key's lock file; whoever gets the lock second finds the entry published and uses it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spikeforge.errors import BuildError, CacheError, CompilerNotFoundError

try:  # POSIX only; without it builds still work, just without cross-process locking.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BuildResult",
    "Toolchain",
    "build_artifact",
    "CorruptLibraryError",
    "build_and_load",
    "build_shared_library",
    "cache_dir",
    "cache_key",
    "cached_source",
    "compiler_identity",
    "find_cxx_compiler",
    "load_library",
    "toolchain_fingerprint",
]

log = logging.getLogger("spikeforge.build")
#: One line, "compiling <what> ...", each time a compiler actually runs (never on a cache hit).
compile_log = logging.getLogger("spikeforge.compiling")

# Bump whenever the layout of an entry or the meaning of the key changes.
CACHE_FORMAT_VERSION = "1"

# -ffp-contract=off forbids fusing a*b+c into an FMA, which would round differently from
# numpy and from the other backends; with it (and no -ffast-math) every operation is
# IEEE-rounded as written, so backends can be compared bit for bit. -fno-trapping-math
# changes no result (we never enable FP traps) but lets conditional selects vectorise.
# -march=native (added when the compiler takes it, unless SPIKEFORGE_PORTABLE=1) only
# widens the vectors: element-wise IEEE arithmetic gives the same bits at any width. The
# host CPU's feature flags are part of the cache key, so a cache shared by different
# machines never hands one a library built for another's instruction set.
# SPIKEFORGE_KEEP_SUBNORMALS=1 defines SF_KEEP_SUBNORMALS: the generated code then leaves the
# threads' handling of subnormal numbers as it finds it instead of flushing them to zero.
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-trapping-math")

_CANDIDATES = ("c++", "g++", "clang++")
_INSTALL_HINT = (
    "Install one (e.g. 'apt-get install g++' on Debian/Ubuntu, 'dnf install gcc-c++' on "
    "Fedora, 'xcode-select --install' on macOS) or set the CXX environment variable to "
    "the compiler to use."
)
_MAX_STDERR_LINES = 40


class CorruptLibraryError(BuildError):
    """A library file exists but cannot be loaded (truncated, overwritten...)."""


@dataclass
class BuildResult:
    path: Path  # the lib<name>.so inside the cache entry
    key: str  # sha256 hex digest naming the entry
    from_cache: bool  # True when no compiler was run by this call
    seconds: float  # wall time of this call (lookup, lock wait and compile)


# --------------------------------------------------------------------------- compiler


def find_cxx_compiler() -> str:
    """Absolute path of the C++ compiler: ``$CXX`` if set, else c++, g++, clang++ on PATH."""
    env = os.environ.get("CXX", "").strip()
    if env:
        found = shutil.which(env)
        if found is None:
            raise CompilerNotFoundError(
                f"the CXX environment variable is set to {env!r}, but no such program was "
                f"found (is it installed and on PATH?). Fix or unset CXX. {_INSTALL_HINT}"
            )
        return found
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise CompilerNotFoundError(
        f"no C++ compiler was found: tried {', '.join(_CANDIDATES)} on PATH and CXX is not "
        f"set. {_INSTALL_HINT}"
    )


def _remembered(kind: str, cxx: str, compute):
    """A fact about a compiler, remembered on disk across processes (keyed by the
    compiler's resolved path, size and mtime), so that a warm start runs no compiler."""
    path = os.path.realpath(shutil.which(cxx) or cxx)
    try:
        st = os.stat(path)
    except OSError:
        return compute()
    ident = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{kind}|{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    file = cache_dir() / "probes" / f"{ident[:32]}.json"
    try:  # validated when read: a damaged or foreign file is probed again, never trusted
        data = json.loads(file.read_text())
        if isinstance(data, dict) and data.get("kind") == kind and \
                isinstance(data.get("value"), str if kind == "identity" else bool):
            return data["value"]
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        from ..fileio import atomic_write_text

        atomic_write_text(file, json.dumps({"kind": kind, "compiler": path, "value": value}))
    except OSError:
        pass  # a read-only cache only costs the probe next time
    return value


@functools.lru_cache(maxsize=None)
def compiler_identity(cxx: str) -> str:
    """First line of ``cxx --version`` plus the compiler's resolved path (part of the key)."""
    return _remembered("identity", cxx, lambda: _compiler_identity(cxx))


def _compiler_identity(cxx: str) -> str:
    path = os.path.realpath(shutil.which(cxx) or cxx)
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CompilerNotFoundError(f"cannot run the C++ compiler {cxx!r}: {exc}. {_INSTALL_HINT}") from exc
    lines = (out.stdout or out.stderr).strip().splitlines()
    return f"{lines[0] if lines else 'unknown version'} ({path})"


@functools.lru_cache(maxsize=None)
def _supports_openmp(cxx: str) -> bool:
    return _remembered("openmp", cxx, lambda: _probe_openmp(cxx))


def _probe_openmp(cxx: str) -> bool:
    """Whether ``cxx -fopenmp`` can build a shared library using the OpenMP runtime."""
    probe = '#include <omp.h>\nextern "C" int n() { return omp_get_max_threads(); }\n'
    with tempfile.TemporaryDirectory(prefix="spikeforge-omp-") as tmp:
        Path(tmp, "probe.cpp").write_text(probe)
        try:
            res = subprocess.run(
                [cxx, "-shared", "-fPIC", "-fopenmp", "probe.cpp", "-o", "libprobe.so"],
                cwd=tmp,
                capture_output=True,
                check=False,
            )
        except OSError:
            return False
    if res.returncode != 0:
        log.info("%s does not support -fopenmp; building without OpenMP", cxx)
    return res.returncode == 0


@functools.lru_cache(maxsize=None)
def _supports_flag(cxx: str, flag: str) -> bool:
    return _remembered(f"flag {flag}", cxx, lambda: _probe_flag(cxx, flag))


def _probe_flag(cxx: str, flag: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="spikeforge-flag-") as tmp:
        Path(tmp, "probe.cpp").write_text('extern "C" int n() { return 1; }\n')
        try:
            res = subprocess.run([cxx, "-shared", "-fPIC", flag, "probe.cpp", "-o", "libprobe.so"],
                                 cwd=tmp, capture_output=True, check=False)
        except OSError:
            return False
    return res.returncode == 0


def _default_flags(cxx: str) -> list[str]:
    # Without OpenMP the '#pragma omp' lines are simply ignored, silently.
    extra = ["-fopenmp" if _supports_openmp(cxx) else "-Wno-unknown-pragmas"]
    if os.environ.get("SPIKEFORGE_PORTABLE", "") in ("", "0") and _supports_flag(cxx, "-march=native"):
        extra.append("-march=native")
    if os.environ.get("SPIKEFORGE_KEEP_SUBNORMALS", "") not in ("", "0"):
        extra.append("-DSF_KEEP_SUBNORMALS")  # gradual underflow kept while kernels run (slower; to compare)
    return [*BASE_FLAGS, *extra]


def debug_flags(cxx: str | None = None) -> list[str]:
    """The default flags with ``-O3`` replaced by ``-O0 -g``: a build to step through in gdb."""
    return [f for f in _default_flags(cxx or find_cxx_compiler()) if f != "-O3"] + ["-O0", "-g"]


@functools.lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """What the compiler's -march=native sees: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in text.splitlines() if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return hashlib.sha256("\n".join(sorted(set(wanted))).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$SPIKEFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/spikeforge``, else ``~/.cache/spikeforge``
    (created if missing; CacheError if it cannot be)."""
    if os.environ.get("SPIKEFORGE_CACHE_DIR"):
        root = Path(os.environ["SPIKEFORGE_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "spikeforge"
    else:
        root = Path.home() / ".cache" / "spikeforge"
    root = root.expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(_cache_problem(root, "cannot be created", exc)) from None
    return root


def _cache_problem(path: Path, what: str, exc: OSError) -> str:
    """One line: which directory, why it cannot be used, and how to choose another."""
    if isinstance(exc, FileExistsError) or (path.exists() and not path.is_dir()):
        why = "it is a file, not a directory"
    else:
        blocker = next((p for p in (path, *path.parents) if p.exists()), None)
        why = exc.strerror or str(exc)
        if blocker is not None and not blocker.is_dir():
            why = f"{blocker} is a file, not a directory"
        elif isinstance(exc, PermissionError) and blocker is not None:
            why = f"{blocker} is not writable"
    source = "SPIKEFORGE_CACHE_DIR" if os.environ.get("SPIKEFORGE_CACHE_DIR") else "the default location"
    return (f"the compile cache {path} ({source}) {what}: {why}; set SPIKEFORGE_CACHE_DIR to a writable "
            "directory")


def _resolve(name: str, flags: Sequence[str] | None, cxx: str | None) -> tuple[str, list[str]]:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ValueError(f"library name {name!r} must be letters, digits, '_', '.' or '-'")
    cxx = cxx or find_cxx_compiler()
    return cxx, list(flags) if flags is not None else _default_flags(cxx)


def _key(source: str, name: str, flags: list[str], cxx: str) -> str:
    # JSON keeps the fields unambiguous; the machine is included because, whatever the
    # flags, code compiled for x86_64 is of no use to an aarch64 host sharing the cache.
    blob = json.dumps(
        [CACHE_FORMAT_VERSION, compiler_identity(cxx), " ".join(flags), platform.machine(),
         cpu_fingerprint() if "-march=native" in flags else "", name, source]
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(
    source: str, *, name: str = "model", flags: Sequence[str] | None = None, cxx: str | None = None
) -> str:
    """The key ``build_shared_library`` would use for these arguments."""
    cxx, flags = _resolve(name, flags, cxx)
    return _key(source, name, flags, cxx)


def toolchain_fingerprint(flags: Sequence[str] | None = None, cxx: str | None = None) -> str:
    """What, besides the source, names a library in the cache: the cache format, the compiler,
    the flags, the machine and (with -march=native) the CPU."""
    cxx, flags = _resolve("model", flags, cxx)
    return json.dumps([CACHE_FORMAT_VERSION, compiler_identity(cxx), " ".join(flags), platform.machine(),
                       cpu_fingerprint() if "-march=native" in flags else ""])


def cached_source(key: str, source_name: str = "source.cpp") -> str | None:
    """The source a published entry was built from, or None when there is no such entry."""
    try:
        return (cache_dir() / key[:2] / key / source_name).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry_ok(entry: Path, output: str, source_name: str = "source.cpp", warn: bool = False) -> bool:
    """True if ``entry`` holds a complete, untampered build; False if absent or corrupt."""
    if not entry.exists():
        return False
    try:
        meta = json.loads((entry / "meta.json").read_text())
        ok = (meta["key"] == entry.name and (entry / source_name).is_file()
              and _sha256_file(entry / output) == meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok and warn:
        log.warning("cache entry %s is corrupt or incomplete; it will be rebuilt", entry)
    return ok


def _remove(path: Path) -> None:
    """Remove a directory so that it vanishes at once (rename first, then delete)."""
    if not path.exists():
        return
    doomed = Path(tempfile.mkdtemp(prefix=path.name + ".del-", dir=path.parent))
    try:
        os.rename(path, doomed / "x")
    except OSError:  # someone else removed it meanwhile
        pass
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Seconds a build may wait for a lock whose holder is stopped or cannot be seen
#: (``$SPIKEFORGE_LOCK_TIMEOUT``); a holder seen working is waited for 10 times as long.
DEFAULT_LOCK_TIMEOUT = 120.0
LOCK_NOTICE_SECONDS = 3.0  # a wait longer than this (or half the timeout) is reported
_RUNNING_HOLDER_FACTOR = 10


def lock_timeout() -> float:
    text = os.environ.get("SPIKEFORGE_LOCK_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise CacheError(f"SPIKEFORGE_LOCK_TIMEOUT must be a number of seconds, got {text!r}")
    return value


@dataclass
class _Holder:
    """Who holds a build lock, as its lock file says (pid and host), and its state."""

    pid: int | None
    host: str
    state: str  # "running", "stopped" or "unknown"

    @classmethod
    def read(cls, path: Path) -> _Holder:
        try:
            pid_text, host = (path.read_text().split() + ["", ""])[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return cls(None, "", "unknown")
        if host != platform.node():
            return cls(pid, host, "unknown")
        try:  # field 3 of /proc/<pid>/stat, after the command name in parentheses
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return cls(pid, host, "unknown")
        return cls(pid, host, "stopped" if state in "Tt" else "unknown" if state in "ZXx" else "running")

    def describe(self) -> str:
        if self.pid is None:
            return "a process that did not say its pid"
        if self.host != platform.node():
            return f"pid {self.pid} on {self.host or 'another machine'}"
        return f"pid {self.pid}" + {"stopped": " (stopped)", "running": ""}.get(self.state, "")


class _KeyLock:
    """Exclusive flock on ``<parent>/<key>.lock`` (released on exit or process death, so a
    killed builder never leaves it held). The holder writes its pid and host into the file,
    so a build that waits can say whom it waits for; see :func:`lock_timeout`."""

    def __init__(self, path: Path, describe: str = "this code"):
        self.path = path
        self.describe = describe

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CacheError(_cache_problem(self.path.parent, "is not writable", exc)) from None
        if fcntl is not None:
            try:
                if not self._try():
                    self._wait()
            except BaseException:
                os.close(self.fd)
                raise
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()} {platform.node()}\n".encode(), 0)
        return self

    def _try(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _wait(self):
        timeout = lock_timeout()
        notice_at = min(LOCK_NOTICE_SECONDS, timeout / 2)
        start = last = time.monotonic()
        stalled = 0.0  # seconds the holder was seen stopped, or could not be seen
        noticed = False
        pause = 0.01
        while not self._try():
            time.sleep(pause)
            pause = min(0.2, pause * 2)
            now = time.monotonic()
            holder = _Holder.read(self.path)
            if holder.state != "running":
                stalled += now - last
            last = now
            if not noticed and now - start >= notice_at:
                log.warning("waiting for another build of %s, lock held by %s ... (%s)", self.describe,
                            holder.describe(), self.path)
                noticed = True
            if stalled >= timeout or now - start >= _RUNNING_HOLDER_FACTOR * timeout:
                hint = f"; resume it (kill -CONT {holder.pid}) or end it" if holder.state == "stopped" else ""
                raise CacheError(
                    f"gave up waiting for another build of {self.describe} after {now - start:.0f} s: the lock "
                    f"{self.path} is held by {holder.describe()}{hint}, or set SPIKEFORGE_LOCK_TIMEOUT (seconds) "
                    "to wait longer")

    def __exit__(self, *exc):
        try:
            os.ftruncate(self.fd, 0)  # no stale pid for the next reader
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Toolchain:
    """How one kind of artefact is built: ``tool flags <source_name> -o <output>``.

    ``identity`` (tool version, target...) goes into the cache key with the flags."""

    tool: str
    identity: str
    flags: tuple
    source_name: str
    output: str
    kind: str = "C++"


def build_shared_library(
    source: str,
    *,
    name: str = "model",
    flags: Sequence[str] | None = None,
    cxx: str | None = None,
    describe: str = "model",
    line_comments: bool = True,
) -> BuildResult:
    """Compile ``source`` into ``lib<name>.so`` in the cache, or reuse a cached build.

    ``flags`` replaces the default flags entirely.  ``describe`` names what is being built
    in error messages.  With ``line_comments`` a compile error also quotes the generated
    source lines the compiler complains about (generated code carries comments saying
    which model and field each line comes from).
    """
    t0 = time.perf_counter()
    cxx, flags = _resolve(name, flags, cxx)
    key = _key(source, name, flags, cxx)
    chain = Toolchain(cxx, compiler_identity(cxx), tuple(flags), "source.cpp", f"lib{name}.so")
    return build_artifact(source, chain, key, describe=describe, line_comments=line_comments, t0=t0)


def build_artifact(
    source: str,
    chain: Toolchain,
    key: str,
    *,
    describe: str = "model",
    line_comments: bool = True,
    t0: float | None = None,
) -> BuildResult:
    """Build ``source`` with ``chain`` into the cache entry ``key`` (atomic, locked), or
    reuse the published entry."""
    t0 = time.perf_counter() if t0 is None else t0
    root = cache_dir()
    parent = root / key[:2]
    entry = parent / key
    out = entry / chain.output

    # Fast path: published entries are immutable, so no lock is needed to read one.
    if _entry_ok(entry, chain.output, chain.source_name):
        return BuildResult(out, key, True, time.perf_counter() - t0)

    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(_cache_problem(root, "is not writable", exc)) from None
    with _KeyLock(parent / f"{key}.lock", describe):
        # Someone may have published it while we waited for the lock.
        if _entry_ok(entry, chain.output, chain.source_name, warn=True):
            return BuildResult(out, key, True, time.perf_counter() - t0)
        _remove(entry)  # a corrupt entry, if any; we hold the lock, so nobody is building it
        for stale in parent.glob(f"{key}.tmp-*"):  # left by killed builds (they held the lock)
            shutil.rmtree(stale, ignore_errors=True)

        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=parent))
        except OSError as exc:
            raise CacheError(_cache_problem(root, "is not writable", exc)) from None
        compile_log.info("compiling %s ...", describe)
        try:
            _compile(tmp, source, chain, key, describe, line_comments, root)
            meta = {
                "key": key,
                "sha256": _sha256_file(tmp / chain.output),
                "compiler": chain.identity,
                "flags": list(chain.flags),
                "build_seconds": round(time.perf_counter() - t0, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            for f in (chain.output, chain.source_name, "meta.json", "build.log", "."):
                if (tmp / f).exists():
                    _fsync(tmp / f)
            os.rename(tmp, entry)  # atomic publish
            _fsync(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    seconds = time.perf_counter() - t0
    log.info("compiled %s in %.2f s -> %s", describe, seconds, out)
    return BuildResult(out, key, False, seconds)


def _compile(tmp: Path, source: str, chain: Toolchain, key: str, describe: str, line_comments: bool,
             root: Path) -> None:
    (tmp / chain.source_name).write_text(source)
    cmd = [chain.tool, *chain.flags, chain.source_name, "-o", chain.output]
    try:
        res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CompilerNotFoundError(
            f"cannot run the {chain.kind} compiler {chain.tool!r}: {exc}. {_INSTALL_HINT}") from exc
    if res.returncode == 0 and (tmp / chain.output).is_file():
        printed = (res.stdout or "") + (res.stderr or "")
        if printed.strip():  # warnings, or ptxas's resource report: kept with the artifact
            (tmp / "build.log").write_text(printed)
        return

    # Keep the failing source where the user can open it.
    failed = root / "failed" / f"{key}{Path(chain.source_name).suffix}"
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_text(source)

    lines = (res.stderr or res.stdout or f"exit status {res.returncode}").rstrip().splitlines()
    text = "\n".join(lines[:_MAX_STDERR_LINES])
    if len(lines) > _MAX_STDERR_LINES:
        text += f"\n... ({len(lines) - _MAX_STDERR_LINES} more lines)"
    msg = f"failed to compile the generated code for {describe}\n\n{text}\n"
    if line_comments:
        src = source.splitlines()
        pattern = re.escape(chain.source_name) + r"(?::|\()(\d+)"
        nums = sorted({int(n) for n in re.findall(pattern, text)})[:10]
        quoted = [f"  {n:5d} | {src[n - 1].strip()}" for n in nums if 0 < n <= len(src)]
        if quoted:
            msg += "\nthe generated lines in question:\n" + "\n".join(quoted) + "\n"
    msg += f"\nthe failing source was kept at {failed}\ncommand: {' '.join(cmd)}"
    raise BuildError(msg)


# --------------------------------------------------------------------------- load


# OpenMP threads that wait for work sleep instead of spinning, so that a run shares a busy
# machine well (docs/backends.md, "Threads"). The OpenMP runtime reads these variables once,
# when the first generated library loads it, so they are set here, before every load;
# values already in the environment (the user's) are kept.
OPENMP_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "passive"}


def load_library(path: str | os.PathLike) -> ctypes.CDLL:
    """dlopen ``path`` privately; a file that cannot be loaded raises CorruptLibraryError."""
    for key, value in OPENMP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        raise CorruptLibraryError(f"cannot load the compiled library {path}: {exc}") from exc


def build_and_load(source: str, **kw) -> tuple[ctypes.CDLL, BuildResult]:
    """``build_shared_library`` then ``load_library``; a cached library that will not load
    is removed and rebuilt once."""
    result = build_shared_library(source, **kw)
    try:
        return load_library(result.path), result
    except CorruptLibraryError:
        if not result.from_cache:
            raise
        log.warning("cached library %s does not load; rebuilding it", result.path)
        with _KeyLock(result.path.parent.parent / f"{result.key}.lock"):
            _remove(result.path.parent)
        result = build_shared_library(source, **kw)
        return load_library(result.path), result
