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

Each is timed in wall and CPU seconds (``time.process_time``: every thread of this
process) after one untimed call that compiles or loads the builder; the machine may be
shared, so the table's ratios come from the same run. ``--repeats`` keeps the best.

    python benchmarks/connectivity.py [--n 10000] [--p 0.1] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

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


def main(argv=None):
    parser = C.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="N_pre = N_post (default 10000)")
    parser.add_argument("--p", type=float, default=0.1, help="connection probability (default 0.1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case, best kept (default 3)")
    args = C.finish_args(parser.parse_args(argv))
    if args.quick:
        args.n, args.repeats = 1000, 1
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
    print(C.OTHER_LOAD_NOTE)
    print(C.describe_machine(results["machine"]))
    if args.json:
        C.write_json(args.json, results)


if __name__ == "__main__":
    main()
