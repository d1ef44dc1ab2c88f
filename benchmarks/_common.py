"""Shared helpers of the spikeforge benchmark scripts.

* :func:`run_json` runs a command in a subprocess and returns the JSON object it
  prints last on stdout (used for the Brian2 peer and for our own workers).
* :func:`run_cuba_worker` measures one CUBA configuration in a *fresh* Python
  process (so nothing is cached in-process and the peak memory is that of this
  one configuration): ``python benchmarks/_common.py --worker '<json config>'``.
* :func:`format_table` / :func:`print_table` print Markdown tables that read well
  on a terminal and paste straight into ``RESULTS.md``.
* :class:`LoadMeter` measures, from /proc/stat, how much CPU other processes used
  while we timed something; :func:`quiet_best` repeats a measurement that other
  work may have disturbed and keeps the best quiet one.
* :func:`machine_info` describes the machine (CPU, cores, memory, OS, compiler,
  Python, load average, date, git revision).
* :func:`common_parser`, :func:`single_thread_env`, :func:`write_json`,
  :func:`fresh_cache_dir`, :func:`peak_rss_mb` and small formatting helpers.

Only the standard library is imported at module level, so that the scripts start
fast and ``--help`` works anywhere; spikeforge is imported in the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_PYTHON = HERE / ".env" / "bin" / "python"
BRIAN2_SCRIPT = HERE / "brian2_cuba.py"
GENN_PYTHON = HERE / ".env-genn" / "bin" / "python"  # PyGeNN built from source (setup_genn.sh)


# --------------------------------------------------------------------------- arguments


def common_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and durations: a smoke run (seconds), not a measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE (JSON)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="measure a configuration again (up to this many times in all) when other "
                             "work on the machine was running meanwhile (default 3; 1 with --quick)")
    parser.add_argument("--max-other-load", type=float, default=0.25, metavar="CORES",
                        help="'other work' = CPU use by other processes, in cores, while measuring "
                             "(default 0.25)")
    return parser


def finish_args(args):
    """Adjustments common to all scripts once parsed (call after the script's own)."""
    if args.quick:
        args.attempts = 1
    return args


# --------------------------------------------------------------------------- subprocesses


class BenchmarkError(RuntimeError):
    """A measuring subprocess failed or printed no JSON."""


def run_json(cmd: list[str], env: dict | None = None, timeout: float | None = None,
             cwd: str | os.PathLike | None = None) -> dict:
    """Run ``cmd`` and return the last line of its stdout that parses as a JSON object."""
    try:
        res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"timed out after {timeout} s: {' '.join(map(str, cmd))}") from exc
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-30:])
        raise BenchmarkError(f"exit status {res.returncode}: {' '.join(map(str, cmd))}\n{tail}")
    for line in reversed(res.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise BenchmarkError(f"no JSON line in the output of {' '.join(map(str, cmd))}:\n{res.stdout[-2000:]}")


def thread_env(threads: int, base: dict | None = None) -> dict:
    """A copy of the environment with OMP_NUM_THREADS set to ``threads``."""
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def single_thread_env(base: dict | None = None) -> dict:
    return thread_env(1, base)


@contextlib.contextmanager
def fresh_cache_dir(prefix: str = "spikeforge-bench-cache-"):
    """A new, empty directory to use as SPIKEFORGE_CACHE_DIR; removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- CUBA worker


def run_cuba_worker(*, n: int = 4000, batch: int = 1, threads: int = 1, duration_ms: float = 1000.0,
                    repeats: int = 5, warmup: bool = True, seed: int = 42, precision: str = "float",
                    cache_dir: str | None = None, timeout: float | None = 3600) -> dict:
    """Measure one CUBA configuration in a fresh process (see :func:`measure_cuba`).

    The worker gets OMP_NUM_THREADS=``threads`` and builds with ``threads=threads``;
    ``cache_dir`` (if given) becomes its SPIKEFORGE_CACHE_DIR.
    """
    cfg = dict(n=n, batch=batch, threads=threads, duration_ms=duration_ms, repeats=repeats,
               warmup=warmup, seed=seed, precision=precision)
    env = thread_env(threads)
    if cache_dir is not None:
        env["SPIKEFORGE_CACHE_DIR"] = str(cache_dir)
    t0 = time.perf_counter()
    out = run_json([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                   env=env, timeout=timeout, cwd=REPO)
    out["process_wall_seconds"] = time.perf_counter() - t0
    return out


def run_brian2_cuba(duration: float, repeats: int, seed: int = 42, n: int | None = None,
                   timeout: float = 1800) -> dict:
    """``brian2_cuba.py`` (``n`` neurons, default its 4,000) in the peer environment, one thread,
    with the machine's other load measured meanwhile."""
    meter = LoadMeter(include_children=True)
    cmd = [str(PEER_PYTHON), str(BRIAN2_SCRIPT), str(duration), "--repeats", str(repeats), "--seed", str(seed)]
    with meter.measure():
        out = run_json(cmd + ([] if n is None else ["--n", str(n)]), env=single_thread_env(), timeout=timeout)
    out.update(meter.as_dict())
    return out


def quiet_best(measure, attempts: int = 3, max_other: float = 0.25, threads: int = 1,
               key: str = "run_seconds") -> dict:
    """Call ``measure()`` (which returns a dict with ``other_cores`` and ``key``) until the
    rest of the machine left our ``threads`` cores alone during it, or ``attempts`` calls
    were made; return the result with the smallest ``key`` among the quiet ones (or among
    all, if none was quiet), with ``attempts`` and ``noisy`` added.

    "Quiet": other work used at most ``max_other`` cores beyond the cores we do not use
    (``usable cores - threads``), i.e. it had no need to take CPU time from us.
    """
    limit = max_other + max(0, available_threads() - threads)
    results = []
    for attempt in range(1, max(1, attempts) + 1):
        r = measure()
        results.append(r)
        other = r.get("other_cores")
        if other is None or other <= limit:  # None: too short to tell
            break
        if attempt < attempts:
            print(f"    (other work on the machine used {other:.2f} cores during that measurement, "
                  f"more than the {limit:.2f} that leave our {threads} thread(s) alone; measuring again)",
                  flush=True)
    quiet = [r for r in results if not (r.get("other_cores") or 0) > limit]
    best = min(quiet or results, key=lambda r: r[key])
    best["attempts"] = len(results)
    best["noisy"] = not quiet
    return best


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM, else ru_maxrss), in MiB."""
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB (0 where /proc is unavailable)."""
    kb = _proc_status_kb("VmRSS")
    return (kb or 0) / 1024.0


def cpu_counters() -> tuple[float, float] | None:
    """Machine-wide (busy, steal) CPU seconds from /proc/stat, or None without it."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = vals
    return (user + nice + system + irq + softirq) / hz, steal / hz


class LoadMeter:
    """How busy the rest of the machine was while we measured.

    ``other_cores``: CPU seconds used machine-wide minus those of this process, per
    wall second (0 on a quiet machine; 1 means another core's worth of work ran next
    to us); ``steal_cores``: the same for hypervisor steal time. /proc/stat counts in
    jiffies (10 ms), so short intervals are coarse; the meter accumulates intervals.
    """

    def __init__(self, include_children: bool = False):
        self.include_children = include_children  # count our subprocesses as our own work
        self.wall = self.other = self.steal = 0.0

    def _own(self) -> float:
        own = time.process_time()  # all threads of this process
        if self.include_children:  # waited-for subprocesses
            t = os.times()
            own += t.children_user + t.children_system
        return own

    @contextlib.contextmanager
    def measure(self):
        c0, p0, t0 = cpu_counters(), self._own(), time.perf_counter()
        try:
            yield
        finally:
            c1, p1, t1 = cpu_counters(), self._own(), time.perf_counter()
            self.wall += t1 - t0
            if c0 and c1:
                self.other += max(0.0, (c1[0] - c0[0]) - (p1 - p0))
                self.steal += c1[1] - c0[1]

    MIN_WALL = 0.2  # s; below this the jiffy resolution makes the numbers meaningless

    def as_dict(self) -> dict:
        if self.wall < self.MIN_WALL:
            return {"other_cores": None, "steal_cores": None}
        return {"other_cores": self.other / self.wall, "steal_cores": self.steal / self.wall}


def fmt_load(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def measure_cuba(cfg: dict) -> dict:
    """Build CUBA as configured and time it; runs *inside* the worker process.

    * ``network_seconds``: ``cuba_network(...)`` (almost all of it is drawing the
      fixed-probability connectivity), of which ``connectivity_seconds`` is the time
      spent in ``Network._sparse_rows`` (timed by wrapping it in this process).
    * ``build_seconds``: ``Simulation.build_seconds`` (codegen + compile or cache
      lookup + load + state allocation); ``build_wall_seconds``: the ``net.build()``
      call as a whole (from the call to a ready Simulation).
    * ``run_seconds_all``: ``sim.run_seconds`` (the C++ loop only) of ``repeats``
      runs, each after ``sim.reset()``, after one warm-up run of the same length.
    * memory: ``rss_start_mb`` (interpreter + imports), ``rss_built_mb`` (after the
      build), ``peak_rss_mb`` (VmHWM at the end), ``state_mb`` (the numpy arrays the
      generated code works on: state, connectivity, spike queues).
    """
    rss_start = rss_mb()
    from spikeforge import network as network_module
    from spikeforge.networks import cuba_network

    conn_seconds = [0.0]
    original = network_module.Network._sparse_rows

    def timed_sparse_rows(self, proj):
        t = time.perf_counter()
        try:
            return original(self, proj)
        finally:
            conn_seconds[0] += time.perf_counter() - t

    network_module.Network._sparse_rows = timed_sparse_rows
    try:
        t0 = time.perf_counter()
        net = cuba_network(n=cfg["n"], batch_size=cfg["batch"], precision=cfg["precision"], seed=cfg["seed"])
        network_seconds = time.perf_counter() - t0
    finally:
        network_module.Network._sparse_rows = original
    n_synapses = sum(p.n_synapses for p in net.projections.values())

    t0 = time.perf_counter()
    sim = net.build(threads=cfg["threads"])
    build_wall = time.perf_counter() - t0
    rss_built = rss_mb()
    backend = sim.backend

    out = {
        "config": cfg,
        "n_neurons": cfg["n"],
        "n_synapses": int(n_synapses),
        "network_seconds": network_seconds,
        "connectivity_seconds": conn_seconds[0],
        "build_seconds": sim.build_seconds,
        "build_wall_seconds": build_wall,
        "from_cache": bool(sim.from_cache),
        "codegen_seconds": getattr(backend, "codegen_seconds", None),
        "compile_or_lookup_seconds": getattr(getattr(backend, "build", None), "seconds", None),
        "omp_threads": int(backend.lib.sf_set_num_threads(0)) if hasattr(backend, "lib") else None,
        "state_mb": sum(a.nbytes for a in getattr(backend, "arrays", {}).values()) / 2**20,
        "rss_start_mb": rss_start,
        "rss_built_mb": rss_built,
    }

    times: list[float] = []
    cpu_times: list[float] = []
    meter = LoadMeter()
    if cfg["repeats"] > 0:
        steps = int(round(cfg["duration_ms"] / sim.dt))
        if cfg["warmup"]:
            sim.reset()
            sim.run(steps=steps)
            out["warmup_seconds"] = sim.run_seconds
        for _ in range(cfg["repeats"]):
            sim.reset()
            c0 = time.process_time()
            with meter.measure():
                sim.run(steps=steps)
            cpu_times.append(time.process_time() - c0)
            times.append(sim.run_seconds)
        counts = sim.spike_counts()
        total = int(sum(counts.values()))
        bio_s = steps * sim.dt / 1000.0
        out.update({
            "duration_s": bio_s,
            "steps": steps,
            "run_seconds": min(times),
            "run_seconds_median": statistics.median(times),
            "run_seconds_all": times,
            # process CPU time per run / wall: ~1 per busy thread; less: we were preempted
            "cpu_per_wall_all": [c / t for c, t in zip(cpu_times, times)],
            **meter.as_dict(),
            "total_spikes": total,
            "mean_rate_hz": total / (cfg["n"] * cfg["batch"] * bio_s) if bio_s > 0 else 0.0,
        })
        # total spikes of each batch instance (all populations): shows that instances differ
        per_b = [0] * sim.batch_size
        for pop in counts:
            for b, (_, ids) in enumerate(sim.spikes(pop)):
                per_b[b] += int(ids.size)
        out["spikes_per_instance"] = per_b
    out["peak_rss_mb"] = peak_rss_mb()
    sim.close()
    return out


# --------------------------------------------------------------------------- machine


def _cpuinfo() -> dict:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                info.setdefault(k, v)
    except OSError:
        pass
    return info


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def git_revision() -> str | None:
    """The commit of the checkout the benchmarks run from, '+dirty' if spikeforge/ has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "spikeforge"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """What the numbers were measured on."""
    cpu = _cpuinfo()
    model = cpu.get("model name") or platform.processor() or platform.machine()
    if cpu.get("cpu family"):
        model += f" (family {cpu['cpu family']}, model {cpu.get('model', '?')}, stepping {cpu.get('stepping', '?')})"
    if "hypervisor" in cpu.get("flags", "").split():
        model += ", virtual machine"
    info = {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": available_threads(),
        "memory_gib": round(_mem_total_gib() or 0.0, 1),
        "os": f"{_os_name()}, kernel {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": git_revision(),
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import spikeforge
        from spikeforge.runtime import build as sf_build

        info["spikeforge"] = getattr(spikeforge, "__version__", "?")
        cxx = sf_build.find_cxx_compiler()
        info["compiler"] = sf_build.compiler_identity(cxx)
        info["compile_flags"] = " ".join(sf_build._default_flags(cxx))  # private, informational only
    except Exception as exc:  # pragma: no cover - informational only
        info.setdefault("compiler", f"unknown ({exc})")
    return info


def describe_machine(info: dict) -> str:
    lines = [
        f"CPU:      {info['cpu']}; {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable)",
        f"Memory:   {info['memory_gib']} GiB",
        f"OS:       {info['os']}",
        f"Compiler: {info.get('compiler', '?')}",
        f"Flags:    {info.get('compile_flags', '?')}",
        f"Python:   {info['python']}, numpy {info.get('numpy', '?')}, spikeforge {info.get('spikeforge', '?')} "
        f"(git {info.get('git') or '?'})",
        f"Load avg: {info.get('load_average')}   Date: {info['date']}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- output


OTHER_LOAD_NOTE = ("other load = CPU time used by other processes on the machine while the runs were timed, "
                   "in cores (from /proc/stat; 0 = quiet machine). A measurement is repeated (--attempts) "
                   "when other work exceeded --max-other-load plus the cores our run leaves idle.")


def format_table(headers: list[str], rows: list[list], title: str | None = None,
                 align: str | None = None) -> str:
    """A Markdown table with padded columns; ``align`` is one char per column
    ('l' or 'r'; default: first column left, the others right)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(r):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(r, widths, align)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                         for w, a in zip(widths, align)) + "|"
    out = [line(cells[0]), sep] + [line(r) for r in cells[1:]]
    if title:
        out.insert(0, f"\n{title}\n")
    return "\n".join(out)


def print_table(headers, rows, title=None, align=None) -> None:
    print(format_table(headers, rows, title, align), flush=True)


def fmt(x, digits: int = 3, unit: str = "") -> str:
    """Format a number with ``digits`` significant digits (None -> '-')."""
    if x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}{unit}"
    if x == 0:
        return f"0{unit}"
    return f"{x:.{digits}g}{unit}" if abs(x) < 10 ** digits else f"{x:,.0f}{unit}"


def fmt_s(x, digits: int = 3) -> str:
    """Seconds, in s, ms or µs as fits."""
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.{digits}g} s" if x < 10 ** digits else f"{x:,.0f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.{digits}g} ms"
    return f"{x * 1e6:.{digits}g} µs"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def write_json(path: str | os.PathLike, data: dict) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nraw numbers written to {path}")


# --------------------------------------------------------------------------- entry


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="measure one CUBA configuration (internal)")
    parser.add_argument("--worker", required=True, metavar="JSON", help="configuration (see run_cuba_worker)")
    args = parser.parse_args(argv)
    cfg = json.loads(args.worker)
    print(json.dumps(measure_cuba(cfg)), flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
