"""E2 and E4 of the event backend: cost per network spike against N, and batch over threads.

E2: a sparse inhibitory LIF network (K = 100 targets per neuron, procedural connectivity, so
nothing is stored per synapse; constant drives spread so that each neuron alone fires at
about 8-12 Hz) at N = 10^3 ... 10^6 on the ``event`` backend, one thread. Reports
microseconds per network spike (each spike advances and re-keys its ~K targets), the
growth from N = 10^3, the same for an O(N)-per-spike reference in numpy (every neuron's
next spike time recomputed at every spike, as event-driven code without a heap does; and the
generated kernel itself with its heap replaced by such a scan, ``queue="scan"``), and
the peak memory (ru_maxrss) of the process at every N, beside the resident memory after the
imports alone.

E4: 8 batch instances (N = 10^4) on 2 threads against 1 thread: throughput ratio, and the
CPU time the process got per wall second (2.0: both threads ran all the time).

Every configuration runs in a fresh Python process; the load average (/proc/loadavg) is
recorded beside every figure (the machine is shared). Reproduce:

    python benchmarks/event_scaling.py [--sizes 1000 10000 100000 1000000] [--json out.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's spikeforge
from _common import common_parser, print_table, write_json  # noqa: E402

K = 100


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def network(n: int, batch: int = 1, seed: int = 1, active: float = 1.0, dt: float = 0.1):
    """The benchmark network: ``active`` is the fraction of neurons driven above threshold;
    ``dt`` matters to the clock-driven backends only (the delay, 1 ms, is a multiple of it)."""
    import numpy as np

    import spikeforge.models.builtins as m
    from spikeforge.network import Network

    rng = np.random.default_rng(seed)
    tag = f"{n}_{batch}_{active:g}_{dt:g}".replace(".", "_")
    net = Network(f"event_bench_{tag}", dt=dt, seed=seed, batch_size=batch)
    net.add_population("exc", n, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 10.0, "v_th": 20.0},
                       init={"v": rng.uniform(10.0, 20.0, n)})
    # alone, a neuron with drive I fires every 20 ln((I - 10)/(I - 20)) ms: I in [22.5, 24.5] gives 8-12 Hz
    drive = rng.uniform(22.5, 24.5, n)
    drive[rng.random(n) >= active] = 15.0  # below threshold: fires only if excited (never, here)
    net.add_current_source("drive", "exc", m.DC, params={"amp": drive})
    net.add_projection("inh", "exc", "exc", m.STATIC_CONSTANT, m.DELTA_CURR,
                       {"fixed_probability": {"p": min(1.0, K / n), "procedural": True}}, wu_params={"w": -0.2},
                       delay=1.0)
    net.record_spikes("exc")
    return net


def worker(cfg: dict) -> dict:
    import resource

    t_import = time.perf_counter()
    import numpy as np  # noqa: F401

    import spikeforge.codegen.event_maps  # noqa: F401  (sympy: part of the baseline)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"cfg": cfg, "load_before": loadavg(), "rss_after_imports_mb": rss_imports}
    if cfg["kind"] == "reference":
        out.update(reference(cfg["n"], cfg["spikes"]))
    else:
        net = network(cfg["n"], cfg.get("batch", 1))
        sim = net.build(backend="event", threads=cfg.get("threads", 1), queue=cfg.get("queue", "heap"))
        sim.run(cfg["warmup_ms"])
        warm_spikes = sum(sim.spike_counts().values())
        d0 = sim.deliveries()
        cpu0 = os.times()
        t0 = time.perf_counter()
        sim.run(cfg["duration_ms"])
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        out["cpu_per_wall"] = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall
        spikes = sum(sim.spike_counts().values()) - warm_spikes
        out.update({"wall_s": wall, "spikes": spikes, "us_per_spike": wall / max(spikes, 1) * 1e6,
                    "deliveries_per_spike": (sim.deliveries() - d0) / max(spikes, 1),
                    "rate_hz": spikes / (cfg["n"] * cfg.get("batch", 1) * cfg["duration_ms"] / 1000.0),
                    "spikes_per_s": spikes / wall, "build_s": sim.build_seconds})
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_after"] = loadavg()
    out["seconds"] = time.perf_counter() - t_import
    return out


def reference(n: int, n_spikes: int) -> dict:
    """O(N) per spike: the same network's dynamics, next spike = argmin over all neurons."""
    import numpy as np

    rng = np.random.default_rng(1)
    v = rng.uniform(10.0, 20.0, n)
    drive = rng.uniform(22.5, 24.5, n)
    t_last = np.zeros(n)
    tau, v_th = 20.0, 20.0
    t0 = time.perf_counter()
    for _ in range(n_spikes):
        with np.errstate(divide="ignore", invalid="ignore"):
            due = t_last + tau * np.log((drive - v) / (drive - v_th))
        i = int(np.argmin(due))
        t = due[i]
        v[i], t_last[i] = 10.0, t
        targets = rng.integers(0, n, K)  # K random targets: the row's work, O(K)
        v[targets] = drive[targets] + (v[targets] - drive[targets]) * np.exp(-(t - t_last[targets]) / tau) - 0.2
        t_last[targets] = t
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "spikes": n_spikes, "us_per_spike": wall / n_spikes * 1e6}


def run_worker(cfg: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.get("threads", 1))}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = common_parser(__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--spikes", type=int, default=200_000, help="network spikes measured per size")
    parser.add_argument("--reference-sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--e4-only", action="store_true", help="only E4 (batch 8 on 1 and 2 threads)")
    parser.add_argument("--worker", help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.sizes, args.spikes, args.reference_sizes = [1000, 10_000], 5000, [1000, 10_000]
    results = {"e2": [], "reference": [], "e4": []}
    if not args.e4_only:
        e2_tables(args, results)
    e4_table(args, results)
    if args.json:
        write_json(args.json, results)
    return 0


def e2_tables(args, results):
    rows = []
    for n in args.sizes:
        duration = args.spikes / (n * 10.0) * 1000.0  # ms at about 10 Hz
        r = run_worker({"kind": "event", "n": n, "duration_ms": duration, "warmup_ms": min(100.0, duration / 4)})
        results["e2"].append(r)
    base = results["e2"][0]["us_per_spike"]
    for r in results["e2"]:
        rows.append([r["cfg"]["n"], r["spikes"], f"{r['rate_hz']:.1f}", f"{r['us_per_spike']:.2f}",
                     f"{r['us_per_spike'] / base:.2f}", f"{r['deliveries_per_spike']:.0f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['rss_after_imports_mb']:.0f}", f"{r['load_before']:.2f} / {r['load_after']:.2f}"])
    print_table(["N", "spikes", "rate (Hz)", "us / spike", "vs N=1e3", "deliveries / spike", "peak RSS (MB)",
                 "RSS after imports (MB)", "load avg before / after"], rows, title="E2: event backend, K = 100")
    rows = []
    for n in args.reference_sizes:
        r = run_worker({"kind": "reference", "n": n, "spikes": max(30, min(2000, 20_000_000 // n))})
        results["reference"].append(r)
    rbase = results["reference"][0]["us_per_spike"]
    for r in results["reference"]:
        rows.append([r["cfg"]["n"], r["spikes"], f"{r['us_per_spike']:.1f}", f"{r['us_per_spike'] / rbase:.1f}",
                     f"{r['load_before']:.2f} / {r['load_after']:.2f}"])
    print_table(["N", "spikes", "us / spike", "vs N=1e3", "load avg before / after"], rows,
                title="E2: O(N)-per-spike reference (numpy)")
    # the same kernel with the heap replaced by a scan that recomputes every neuron's next spike
    rows = []
    results["scan"] = []
    for n in args.reference_sizes:
        spikes = max(200, min(20_000, 2_000_000_000 // (n * n)))
        results["scan"].append(run_worker({"kind": "event", "queue": "scan", "n": n, "warmup_ms": 0.0,
                                           "duration_ms": spikes / (n * 10.0) * 1000.0}))
    sbase = results["scan"][0]["us_per_spike"]
    for r in results["scan"]:
        rows.append([r["cfg"]["n"], r["spikes"], f"{r['us_per_spike']:.1f}", f"{r['us_per_spike'] / sbase:.1f}",
                     f"{r['load_before']:.2f} / {r['load_after']:.2f}"])
    print_table(["N", "spikes", "us / spike", "vs N=1e3", "load avg before / after"], rows,
                title="E2: O(N)-per-spike reference (the generated kernel, queue='scan')")


def e4_table(args, results):
    n4 = 1000 if args.quick else 10_000
    rows = []
    for threads in (1, 2):
        r = run_worker({"kind": "event", "n": n4, "batch": 8, "threads": threads,
                        "duration_ms": 200.0 if args.quick else 1000.0, "warmup_ms": 50.0})
        results["e4"].append(r)
    t1 = results["e4"][0]["spikes_per_s"]
    for r in results["e4"]:
        rows.append([r["cfg"]["threads"], r["spikes"], f"{r['wall_s']:.2f}", f"{r['spikes_per_s']:.3g}",
                     f"{r['spikes_per_s'] / t1:.2f}", f"{r['cpu_per_wall']:.2f}",
                     f"{r['load_before']:.2f} / {r['load_after']:.2f}"])
    print_table(["threads", "spikes", "wall (s)", "spikes / s", "vs 1 thread", "CPU time / wall",
                 "load avg before / after"], rows,
                title=f"E4: batch 8, N = {n4}")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
