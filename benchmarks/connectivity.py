"""Connectivity generation: the generated C++ builder against the former numpy path.

One 10,000 x 10,000 projection (``--n``) at p = 0.1 (10 M synapses), drawn:

* ``numpy (before)``: the numpy drawing spikeforge used before the C++ builder (per row a
  binomial count, uniform post indices, repeats redrawn until none is left), kept here
  only to be measured;
* ``C++ fixed_probability``: geometric skipping, 1 thread and the default team;
* ``C++ fixed_in_degree`` (K = p * N_pre per postsynaptic neuron, the same 10 M synapses),
  ``fixed_out_degree`` and ``fixed_total``;
* ``C++ probability expression`` ``exp(-abs(i - j)/tau)``: evaluated for every one of the
  N_pre * N_post pairs (100 M at the default size), a counting pass and a drawing pass.

With ``--networks``, procedural against stored connectivity in a whole simulation, each in
a fresh process (peak RSS = the process's VmHWM): N LIF neurons driven by a noisy current,
recurrent fixed_probability connectivity with 1,000 synapses per neuron (p = 1000 / N) and
a small inhibitory static weight, ``--duration`` ms; stored at the smaller sizes, procedural
at every size (1 M neurons = 10^9 synapses, which stored would need 16 GB to draw).

Each is timed in wall and CPU seconds (``time.process_time``: every thread of this
process) after one untimed call that compiles or loads the builder; the machine may be
shared, so the table's ratios come from the same run. ``--repeats`` keeps the best.

    python benchmarks/connectivity.py [--n 10000] [--p 0.1] [--repeats 3] [--json out.json]
    python benchmarks/connectivity.py --networks 100000 1000000 [--stored-max 100000] [--duration 100]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def numpy_fixed_probability(n_pre, n_post, p, seed, projection_id):
    """The numpy path spikeforge drew fixed-probability connectivity with before the C++
    builder (from network.py as it was), for comparison only."""
    rng = np.random.Generator(np.random.Philox(key=[seed, projection_id]))
    counts = rng.binomial(n_post, p, size=n_pre)
    pre = np.repeat(np.arange(n_pre, dtype=np.int64), counts)
    post = rng.integers(0, n_post, size=pre.size, dtype=np.int64)
    for _ in range(1000):
        key = pre * n_post + post
        order = np.argsort(key, kind="stable")
        bad = np.zeros(pre.size, dtype=bool)
        bad[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not bad.any():
            break
        post[bad] = rng.integers(0, n_post, size=int(bad.sum()), dtype=np.int64)
    pre, post = pre[order], post[order]
    row_start = np.zeros(n_pre + 1, dtype=np.uint32)
    np.cumsum(np.bincount(pre, minlength=n_pre), out=row_start[1:])
    return row_start, post.astype(np.uint32)


def network_worker(n: int, procedural: bool, duration: float) -> dict:
    """One simulation with recurrent connectivity of 1000 synapses per neuron (this process)."""
    from spikeforge import models as m
    from spikeforge.network import FixedProbability, Network

    t0 = time.perf_counter()
    net = Network(f"proc_{n}", dt=0.1, seed=1)
    net.add_population("exc", n, m.LIF)
    net.add_current_source("drive", "exc", m.NOISE, {"mean": 15.5, "sd": 3.0})
    t1 = time.perf_counter()
    net.add_projection("rec", "exc", "exc", m.STATIC_CONSTANT, m.EXP_CURR,
                       FixedProbability(min(1.0, 1000 / n), allow_autapses=False, procedural=procedural),
                       wu_params={"w": -0.02})
    t_conn = time.perf_counter() - t1
    net.record_rate("exc")
    sim = net.build("cpu")
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.run(duration=duration)
    t_run = time.perf_counter() - t0
    spikes = int(np.asarray(sim.population_rate("exc")).sum() * n * 0.1 / 1000)
    return {"n": n, "procedural": procedural, "synapses": net.projections["rec"].n_synapses,
            "connectivity_s": t_conn, "build_s": t_build, "run_s": t_run, "duration_ms": duration,
            "rate_hz": spikes / n / (duration / 1000), "peak_rss_mb": C.peak_rss_mb()}


def networks(sizes, stored_max, duration, quick):
    rows, out = [], []
    for n in sizes:
        for procedural in (False, True):
            if not procedural and n > stored_max:
                continue
            cmd = [sys.executable, __file__, "--worker", json.dumps([n, procedural, duration])]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise C.BenchmarkError(proc.stderr[-2000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append(r)
            rows.append([f"{n:,}", "procedural" if procedural else "stored", f"{r['synapses']:,}",
                         C.fmt_s(r["connectivity_s"]), C.fmt_s(r["build_s"]), C.fmt_s(r["run_s"]),
                         f"{r['rate_hz']:.1f}", f"{r['peak_rss_mb']:,.0f}"])
    C.print_table(["neurons", "connectivity", "synapses", "drawing s", "build s (with drawing)",
                   f"run s ({duration:g} ms)", "rate Hz", "peak RSS MB"], rows,
                  title="procedural vs stored connectivity, 1000 synapses per neuron (cpu, default threads)")
    return out


def timed(fn, repeats):
    best = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if best is None or w < best[0]:
            best = (w, c, int(out[1].size))
        del out
    return {"wall_s": best[0], "cpu_s": best[1], "synapses": best[2]}


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def main(argv=None):
    parser = C.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="N_pre = N_post (default 10000)")
    parser.add_argument("--p", type=float, default=0.1, help="connection probability (default 0.1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case, best kept (default 3)")
    parser.add_argument("--networks", type=int, nargs="*", metavar="N",
                        help="also simulate networks of these sizes, procedural and stored")
    parser.add_argument("--stored-max", type=int, default=100_000, help="largest stored network (default 100000)")
    parser.add_argument("--duration", type=float, default=100.0, help="ms simulated per network (default 100)")
    parser.add_argument("--worker", help=argparse_hidden())
    args = C.finish_args(parser.parse_args(argv))
    if args.worker:
        print(json.dumps(network_worker(*json.loads(args.worker))))
        return
    if args.quick:
        args.n, args.repeats = 1000, 1
        args.networks, args.duration = [2000], 10.0
    from spikeforge.connectivity import FixedInDegree, FixedOutDegree, FixedTotal, FromExpressions, draw_rows
    from spikeforge.network import FixedProbability

    n, p, seed, proj = args.n, args.p, 1, 3
    k = round(p * n)
    expression = FromExpressions(probability="exp(-abs(i - j)/tau)", params={"tau": 30.0})
    cases = [
        ("numpy fixed_probability (before)", lambda: numpy_fixed_probability(n, n, p, seed, proj)),
        ("C++ fixed_probability, 1 thread", lambda: draw_rows(FixedProbability(p), n, n, seed, proj, "b", threads=1)),
        ("C++ fixed_probability", lambda: draw_rows(FixedProbability(p), n, n, seed, proj, "b")),
        (f"C++ fixed_in_degree {k}, 1 thread", lambda: draw_rows(FixedInDegree(k), n, n, seed, proj, "b", threads=1)),
        (f"C++ fixed_in_degree {k}", lambda: draw_rows(FixedInDegree(k), n, n, seed, proj, "b")),
        (f"C++ fixed_out_degree {k}", lambda: draw_rows(FixedOutDegree(k), n, n, seed, proj, "b")),
        (f"C++ fixed_total {k * n}", lambda: draw_rows(FixedTotal(k * n), n, n, seed, proj, "b")),
        ("C++ probability exp(-abs(i - j)/30)", lambda: draw_rows(expression, n, n, seed, proj, "b")),
    ]
    results = {"machine": C.machine_info(), "n": n, "p": p, "cases": {}}
    for name, fn in cases:
        fn()  # compile or load the builder
        load = C.LoadMeter()
        with load.measure():
            results["cases"][name] = timed(fn, args.repeats)
        results["cases"][name]["other_load"] = load.as_dict()["other_cores"]
    base = results["cases"]["numpy fixed_probability (before)"]["wall_s"]
    rows = []
    for name, r in results["cases"].items():
        # an expression is evaluated for every pair: its cost is per pair, not per synapse
        per = n * n if "probability exp" in name else max(r["synapses"], 1)
        rows.append([name, f"{r['synapses']:,}", C.fmt_s(r["wall_s"]), C.fmt_s(r["cpu_s"]),
                     C.fmt_s(r["wall_s"] / per * 1e7) + (" (pairs)" if per == n * n else ""),
                     f"{base / r['wall_s']:.1f}x", C.fmt_load(r["other_load"])])
    C.print_table(["case", "synapses", "wall s", "CPU s", "wall s per 10 M synapses", "vs numpy", "other load"],
                  rows, title=f"connectivity of one {n:,} x {n:,} projection, p = {p:g}")
    if args.networks:
        results["networks"] = networks(args.networks, args.stored_max, args.duration, args.quick)
    print(C.OTHER_LOAD_NOTE)
    print(C.describe_machine(results["machine"]))
    if args.json:
        C.write_json(args.json, results)


if __name__ == "__main__":
    main()
