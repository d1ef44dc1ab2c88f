"""Brunel (2000), 12,500 neurons, 1 s: spikeforge's run time against Brian2 C++ standalone.

The network of ``examples/brian2/brunel2000_<regime>.yaml`` (default regime B: g = 6,
nu_ext = 4 nu_thr; N_E = 10,000, N_I = 2,500 LIF neurons, p = 0.1 (15.6 M synapses), delta
synapses with D = 1.5 ms, a Poisson drive of 1000 sources per neuron, dt = 0.1 ms, all spikes
recorded) simulated for ``--duration`` ms (default 1000), and the same model in Brian2's C++
standalone mode, as ``brunel_regime_b.py`` builds it (its worker script, with its build and
run replaced by the loop below).

Every simulator runs in a process of its own that builds once and then runs on request, so
the repeats are **interleaved** (spikeforge 1 thread, spikeforge 2 threads, Brian2, then again,
the order rotated each round) and the minimum of each is taken: a shared machine's load hits
all of them alike. One warm-up run each comes first.

* spikeforge: ``Simulation.run_seconds`` (wall clock around the generated C++ loop) after
  ``sim.reset()``, and the process CPU time of the same run; ``build(threads=T)`` with
  ``OMP_NUM_THREADS=T``.
* Brian2: ``device._last_run_time`` of each ``device.run()``: the time of the main loop as the
  generated ``main`` measures it, not the compilation nor the network construction; and the
  wall time of the whole binary. Two builds, one thread each: without OpenMP
  (``openmp_threads = 0``, Brian2's default), whose loop is timed by ``std::clock()``, i.e. CPU
  time; and with one OpenMP thread (``openmp_threads = 1``), timed by ``omp_get_wtime()``, wall
  time (``--no-brian2-wall`` skips it). Its binary seeds from the OS: every run draws new
  connectivity and input, so its spike count varies between runs.
* ratios, spikeforge 1 thread / Brian2, each the minimum over the repeats (target <= 0.5): wall
  time / Brian2's wall time, and CPU time / Brian2's CPU time. Like with like: on a loaded
  machine a wall time grows with the other processes' load, a CPU time hardly.
* other load: CPU time other processes used while a run was timed, in cores (from /proc/stat).

    python benchmarks/brunel_speed.py                        # regime B, 5 repeats: ~2 min
    python benchmarks/brunel_speed.py --regimes A,B,C,D --repeats 3
    python benchmarks/brunel_speed.py --quick                # 20 ms, no Brian2: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    BenchmarkError,
    LoadMeter,
    describe_machine,
    fmt,
    fmt_load,
    fmt_s,
    machine_info,
    print_table,
    thread_env,
    write_json,
)
from brunel_regime_b import PEER_PYTHON, REGIMES, brian2_worker_source, nu_ext_hz  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLES = REPO / "examples" / "brian2"
TARGET_RATIO = 0.5
# Brian2's main loop time: without OpenMP it is std::clock(), CPU time; with OpenMP (here one
# thread) omp_get_wtime(), wall time. spikeforge's CPU time is compared with the first, its wall
# time with the second.
B2_CPU = "Brian2 standalone 1 thread"
B2_WALL = "Brian2 standalone, OpenMP 1 thread"

# The Brian2 worker: brunel_regime_b's script up to its build, then: build, and one run per
# "run" line on stdin, each answered by one JSON line.
BRIAN2_BUILD_MARKER = "t0 = time.perf_counter()\ndevice.build("
BRIAN2_SERVE = r'''
sys.path.insert(0, cfg["benchmarks"])
from _common import LoadMeter
t0 = time.perf_counter()
device.build(directory=cfg["dir"], run=False)
print(json.dumps({"build_s": time.perf_counter() - t0, "n": N}), flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    meter = LoadMeter(include_children=True)  # the binary is our child: its CPU time is ours
    with meter.measure():
        device.run(with_output=False)
    print(json.dumps({"run_s": float(device._last_run_time), "wall_s": float(device.timers["run_binary"]),
                      "spikes": int(mon.num_spikes), **meter.as_dict()}), flush=True)
'''


def brian2_speed_source() -> str:
    base = brian2_worker_source()
    if BRIAN2_BUILD_MARKER not in base:
        raise BenchmarkError("brunel_regime_b.brian2_worker_source() has no 'device.build(' step to replace")
    return base.split(BRIAN2_BUILD_MARKER)[0] + BRIAN2_SERVE


# --------------------------------------------------------------------------- spikeforge worker


def spikeforge_worker(cfg: dict) -> None:
    """Runs in its own process: build the YAML network, then one run per "run" line on stdin."""
    from spikeforge.config import load_file

    net, _ = load_file(cfg["yaml"])
    t0 = time.perf_counter()
    sim = net.build(threads=cfg["threads"])
    steps = int(round(cfg["duration"] / sim.dt))
    import spikeforge

    info = {"build_s": time.perf_counter() - t0, "n": sum(p.size for p in net.populations.values()),
            "spikeforge": str(Path(spikeforge.__file__).parent),
            "steps": steps, "from_cache": bool(sim.from_cache),
            "omp_threads": int(sim.backend.lib.sf_set_num_threads(0)) if hasattr(sim.backend, "lib") else None}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        sim.reset()
        meter = LoadMeter()
        c0 = time.process_time()
        with meter.measure():
            sim.run(steps=steps)
        cpu = time.process_time() - c0
        counts = sim.spike_counts()
        print(json.dumps({"run_s": sim.run_seconds, "cpu_s": cpu, "spikes": int(sum(counts.values())),
                          "spikes_by_population": {k: int(v) for k, v in counts.items()}, **meter.as_dict()}),
              flush=True)
    sim.close()


# --------------------------------------------------------------------------- coordinator


class Worker:
    """A measuring process that answers each "run" on its stdin with one JSON line."""

    def __init__(self, name: str, cmd: list[str], env: dict, cwd, log: Path):
        self.name = name
        self.log = log  # its stderr: a file, so that a chatty process never blocks on a full pipe
        with open(log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True, env=env, cwd=cwd)
        self.info = self._answer()
        self.runs: list[dict] = []

    def _answer(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise BenchmarkError(f"{self.name} stopped (exit status {self.proc.returncode}):\n"
                                     + "\n".join(self.log.read_text().strip().splitlines()[-30:]))
            if line.startswith("{"):
                return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def start_workers(regime: str, args, workdir: str) -> list[Worker]:
    yaml_path = EXAMPLES / f"brunel2000_{regime}.yaml"
    workers = []
    for threads in args.threads:
        cfg = {"yaml": str(yaml_path), "threads": threads, "duration": args.duration}
        workers.append(Worker(f"spikeforge {threads} thread{'s' if threads > 1 else ''}",
                              [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                              thread_env(threads), REPO, Path(workdir) / f"spikeforge_{threads}.log"))
    if args.baseline_tree:  # another checkout (say, before a change): its spikeforge on one thread
        tree = Path(args.baseline_tree).resolve()
        cfg = {"yaml": str(tree / "examples" / "brian2" / yaml_path.name), "threads": 1, "duration": args.duration}
        env = thread_env(1)
        env["PYTHONPATH"] = str(tree)  # its spikeforge package, ahead of this one
        workers.append(Worker(f"spikeforge 1 thread, {args.baseline_label}",
                              [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                              env, tree, Path(workdir) / "spikeforge_baseline.log"))
    script = Path(workdir) / "brunel_speed_brian2.py"
    script.write_text(brian2_speed_source())
    g, nu_ratio = REGIMES[regime]
    n_e = 10000
    for name, openmp_threads in ((B2_CPU, 0), (B2_WALL, 1)):
        if not args.brian2 or (openmp_threads and not args.brian2_wall):
            continue
        cfg = {"g": g, "g_values": None, "nu_ext": nu_ext_hz(nu_ratio, n_e // 10), "n_e": n_e, "seeds": [1],
               "duration": args.duration, "variant": "baseline", "threads": openmp_threads,
               "dir": str(Path(workdir) / f"b2_{regime}_{openmp_threads}"),
               "out": str(Path(workdir) / f"b2_{regime}_{openmp_threads}"), "benchmarks": str(HERE)}
        workers.append(Worker(name, [str(PEER_PYTHON), str(script), json.dumps(cfg)], thread_env(1), workdir,
                              Path(workdir) / f"brian2_{openmp_threads}.log"))
    return workers


def check_same_model(regime: str) -> None:
    """The YAML port must be the model the Brian2 worker builds (g and nu_ext of REGIMES)."""
    from spikeforge.config import load_network

    net, _ = load_network(EXAMPLES / f"brunel2000_{regime}.yaml")
    g, nu_ratio = REGIMES[regime]
    rate = net.poisson_inputs["ext_exc"].rate_hz
    w_inh = net.projections["inh_exc"].wu_params["w"]
    if abs(rate - nu_ext_hz(nu_ratio, 1000)) > 1e-9 or abs(w_inh + g * 0.1) > 1e-9:
        raise BenchmarkError(f"brunel2000_{regime}.yaml (rate {rate} Hz, w_inh {w_inh}) is not regime {regime} "
                             f"of brunel_regime_b.REGIMES (g = {g}, nu_ext = {nu_ratio} nu_thr)")


def measure_regime(regime: str, args) -> dict:
    check_same_model(regime)
    with tempfile.TemporaryDirectory(prefix="brunel_speed_") as workdir:
        who = ["spikeforge"] * bool(args.threads) + ["Brian2"] * args.brian2
        print(f"\nregime {regime}: building ({', '.join(who)})", flush=True)
        workers = start_workers(regime, args, workdir)
        try:
            for w in workers:  # warm-up
                w.run()
            for r in range(args.repeats):
                order = workers[r % len(workers):] + workers[:r % len(workers)]
                for w in order:
                    res = w.run()
                    w.runs.append(res)
                    print(f"  {w.name}: {res['run_s']:.3f} s  ({res['spikes']} spikes, "
                          f"other load {fmt_load(res.get('other_cores'))})", flush=True)
        finally:
            for w in workers:
                w.close()
    out = {}
    for w in workers:
        best = min(w.runs, key=lambda x: x["run_s"])
        n, seconds = w.info["n"], args.duration / 1000.0
        out[w.name] = {"build": w.info, "runs": w.runs, "run_s": best["run_s"], "cpu_s": min(
            x.get("cpu_s", x["run_s"]) for x in w.runs), "wall_s": min(x.get("wall_s", x["run_s"]) for x in w.runs),
            "rate_hz": [x["spikes"] / (n * seconds) for x in w.runs], "other_cores": best.get("other_cores")}
    return out


def ratios(result: dict, name: str = "spikeforge 1 thread") -> dict:
    """``cpu``: CPU time of spikeforge's run / Brian2's loop time without OpenMP (CPU time);
    ``wall``: spikeforge's run_seconds / Brian2's loop time with one OpenMP thread (wall time);
    ``mixed``: spikeforge's run_seconds / Brian2's CPU time (above the others on a loaded machine)."""
    sf, b2, b2_wall = result.get(name), result.get(B2_CPU), result.get(B2_WALL)
    out = {}
    if sf and b2:
        out.update(cpu=sf["cpu_s"] / b2["run_s"], mixed=sf["run_s"] / b2["run_s"])
    if sf and b2_wall:
        out["wall"] = sf["run_s"] / b2_wall["run_s"]
    return out


def print_results(regime: str, result: dict, duration: float) -> None:
    rows = []
    for name, r in result.items():
        rates = r["rate_hz"]
        rate = f"{min(rates):.1f}" if max(rates) - min(rates) < 0.05 else f"{min(rates):.1f}-{max(rates):.1f}"
        spikeforge = "cpu_s" in r["runs"][0]
        q = ratios(result, name) if spikeforge else {}
        clock = "-" if spikeforge else ("CPU" if name == B2_CPU else "wall")
        rows.append([name, fmt_s(r["run_s"]), clock, fmt_s(r["cpu_s"]) if spikeforge else "-",
                     "-" if spikeforge else fmt_s(r["wall_s"]), fmt(q.get("wall")), fmt(q.get("cpu")),
                     len(r["runs"]), rate, fmt_load(r["other_cores"])])
    print_table(["simulator", "run time (min)", "Brian2's clock", "CPU time of the run", "binary wall",
                 "wall / Brian2 wall", "CPU / Brian2 CPU", "repeats", "rate (Hz)", "other load"], rows,
                title=f"Brunel 2000 regime {regime}, 12,500 neurons, {duration:g} ms, dt = 0.1 ms")
    q = ratios(result)
    if q:
        met = all(q[k] <= TARGET_RATIO for k in ("cpu", "wall") if k in q)
        print(f"\nspikeforge 1 thread / Brian2 standalone: {fmt(q.get('wall'))} (wall / wall), {fmt(q['cpu'])} "
              f"(CPU / CPU), {fmt(q['mixed'])} (spikeforge wall / Brian2 CPU); target <= {TARGET_RATIO}: "
              f"{'met' if met else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", default="B", help="comma-separated, of A, B, C, D (default B)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each simulator (default 5, >= 3)")
    parser.add_argument("--duration", type=float, default=1000.0, help="simulated ms (default 1000)")
    parser.add_argument("--threads", default="1,2", help="spikeforge thread counts (default 1,2)")
    parser.add_argument("--no-brian2", dest="brian2", action="store_false", help="spikeforge only")
    parser.add_argument("--no-brian2-wall", dest="brian2_wall", action="store_false",
                        help="skip the second Brian2 build (one OpenMP thread, its loop timed in wall time)")
    parser.add_argument("--baseline-tree", metavar="DIR",
                        help="also time the spikeforge of another checkout (e.g. 'git archive <commit>' unpacked)")
    parser.add_argument("--baseline-label", default="baseline", help="its name in the table")
    parser.add_argument("--quick", action="store_true", help="20 ms, 1 repeat, no Brian2: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write every run's numbers to FILE")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return spikeforge_worker(json.loads(args.worker))
    if args.quick:
        args.duration, args.repeats, args.brian2, args.threads = 20.0, 1, False, "1"
    args.threads = [int(t) for t in args.threads.split(",") if t]
    regimes = [r for r in args.regimes.split(",") if r]
    for r in regimes:
        if r not in REGIMES:
            parser.error(f"unknown regime {r!r} (known: {', '.join(REGIMES)})")
    if args.brian2 and not PEER_PYTHON.exists():
        print(f"(Brian2 skipped: no peer environment at {PEER_PYTHON}; bash benchmarks/setup_peers.sh)")
        args.brian2 = False
    machine = machine_info()
    print(describe_machine(machine), flush=True)
    results = {}
    for regime in regimes:
        results[regime] = measure_regime(regime, args)
        print_results(regime, results[regime], args.duration)
    if args.json:
        write_json(args.json, {"machine": machine, "duration_ms": args.duration, "repeats": args.repeats,
                               "results": results, "ratios": {r: ratios(v) for r, v in results.items()}})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
