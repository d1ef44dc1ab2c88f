"""A parameter sweep as one batched run, against separate runs.

CUBA (Vogels & Abbott, Brian2's example: 4,000 LIF neurons, 80 synapses per neuron)
with its inhibitory weight ``g`` swept over ``--points`` values (default 32, from 0 to
-2 x the published -9). Three ways, each timed in wall-clock seconds per sweep point:

* ``batched``: one network with ``batch_values: {w: [...]}``, batch size = points, one
  build and one run (instances in parallel on the CPU's threads);
* ``dynamic``: one build with ``w`` dynamic, then for each point ``set_param``, ``reset``
  and a run (no recompilation);
* ``separate``: a new network per point with ``w`` compiled in: generate, compile (a new
  source each time: a compiler run per point) and run; measured on ``--separate-points``
  of the points (default 4), per point.

Instance b of the batched run equals the separate run of point b with ``batch_offset=b``
bit for bit in double precision (tests/test_heterogeneous.py); the script checks the
spike counts of the points it ran both ways.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def cuba(g, n: int, batch: int, dynamic: bool = False, seed: int = 42, precision: str = "float"):
    from spikeforge import models as m
    from spikeforge.network import FixedProbability, Network

    net = Network("cuba_sweep", dt=0.1, batch_size=batch, seed=seed, precision=precision)
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)
    n_exc = n * 4 // 5
    for pop, size in (("exc", n_exc), ("inh", n - n_exc)):
        net.add_population(pop, size, m.LIF, params=lif, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    sweep = isinstance(g, list)
    for pre, w, tau in (("exc", 1.62, 5.0), ("inh", g[0] if sweep else g, 10.0)):
        for post in ("exc", "inh"):
            inh = pre == "inh"
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(80.0 / n),
                               wu_params={"w": w}, ps_params={"tau_syn": tau},
                               wu_batch_values={"w": g} if inh and sweep else None,
                               wu_dynamic=["w"] if inh and dynamic else None)
    return net


def spikes(sim, b=0) -> int:
    return int(sum(ids.size for _, ids in (sim.spikes(p)[b] for p in ("exc", "inh"))))


def main(argv=None):
    parser = C.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=32, help="sweep points (default 32)")
    parser.add_argument("--separate-points", type=int, default=4,
                        help="points measured as separate compiled-in runs (default 4)")
    parser.add_argument("--n", type=int, default=4000, help="neurons (default 4000)")
    parser.add_argument("--duration", type=float, default=1000.0, help="ms simulated per point (default 1000)")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.separate_points, args.n, args.duration = 4, 2, 400, 50.0
    points = args.points
    g = [-18.0 * k / max(points - 1, 1) for k in range(points)]
    results = {"machine": C.machine_info(), "points": points, "n": args.n, "duration_ms": args.duration, "g": g}
    with C.fresh_cache_dir() as cache:
        os.environ["SPIKEFORGE_CACHE_DIR"] = cache  # every build compiles: no entry from earlier runs
        t0 = time.perf_counter()
        sim = cuba(g, args.n, points).build()
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim.run(duration=args.duration)
        t_run = time.perf_counter() - t0
        batched = [spikes(sim, b) for b in range(points)]
        results["batched"] = {"build_s": t_build, "run_s": t_run, "per_point_s": (t_build + t_run) / points,
                              "spikes": batched}
        del sim

        t0 = time.perf_counter()
        sim = cuba(g[0], args.n, 1, dynamic=True).build()
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        dynamic = []
        for gb in g:
            sim.set_param("inh_exc", "w", gb)
            sim.set_param("inh_inh", "w", gb)
            sim.reset()
            sim.run(duration=args.duration)
            dynamic.append(spikes(sim))
        t_run = time.perf_counter() - t0
        results["dynamic"] = {"build_s": t_build, "run_s": t_run, "per_point_s": (t_build + t_run) / points}
        del sim

        chosen = sorted({round(k * (points - 1) / max(args.separate_points - 1, 1))
                         for k in range(args.separate_points)})
        t_total, t_builds, agree = 0.0, 0.0, True
        for b in chosen:
            t0 = time.perf_counter()
            sim = cuba(g[b], args.n, 1).build(batch_offset=b)
            t_builds += time.perf_counter() - t0
            sim.run(duration=args.duration)
            t_total += time.perf_counter() - t0
            agree &= spikes(sim) == batched[b]
        results["separate"] = {"points_measured": chosen, "build_s": t_builds / len(chosen),
                               "per_point_s": t_total / len(chosen), "spikes_agree_with_batched": bool(agree)}
    base = results["separate"]["per_point_s"]
    rows = [[name, C.fmt_s(r["per_point_s"]), C.fmt_s(r["build_s"]), f"{base / r['per_point_s']:.1f}x"]
            for name, r in (("batched (1 build, 1 run)", results["batched"]),
                            ("dynamic (1 build, set_param + run per point)", results["dynamic"]),
                            ("separate (build + run per point, w compiled in)", results["separate"]))]
    C.print_table(["way", "wall s per point", "build s (total; separate: per point)", "vs separate"], rows,
                  title=f"CUBA {args.n} neurons, {args.duration:g} ms per point, {points}-point sweep of the "
                        "inhibitory weight (cpu)")
    print(f"batched instance spike counts equal the separate runs': {results['separate']['spikes_agree_with_batched']}")
    print(C.describe_machine(results["machine"]))
    if args.json:
        C.write_json(args.json, results)
    if not results["separate"]["spikes_agree_with_batched"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
