"""CUBA size scaling: 4k, 40k, 400k neurons with 80 synapses per neuron, one thread.

Each size runs in a fresh subprocess (``cuba_network(n=N)``, i.e. connection
probability 80/N, so every neuron has on average 80 incoming and 80 outgoing
synapses and the firing rate stays about the same), batch 1, ONE thread
(``threads=1`` and OMP_NUM_THREADS=1), ``--duration`` s of biological time
(default 1):

* run: ``Simulation.run_seconds`` (the C++ loop only), minimum of ``--repeats``
  runs (at most 3 for N >= 100k) each after ``sim.reset()``, after a warm-up run;
  normalised per biological second and per neuron-second; ``vs 4k`` is the time
  per neuron-second relative to the smallest size (1.0 = linear scaling);
  ``ns/event`` = run time per synaptic event (spikes x outgoing synapses), for
  reference, since the cost has a per-neuron and a per-spike part;
* connectivity: time spent drawing the fixed-probability connectivity
  (``Network._sparse_rows``, inside ``add_projection``), and build =
  ``Simulation.build_seconds`` (codegen + compile or cache hit + load);
* memory: peak RSS (VmHWM) of the worker at the end, and the size of the arrays
  the generated code works on (``state``: variables + connectivity + queues).

    python benchmarks/size_scaling.py [--sizes 4000 40000 400000] [--duration 1] [--json out.json]
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OTHER_LOAD_NOTE,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_load,
    fmt_s,
    machine_info,
    print_table,
    quiet_best,
    run_cuba_worker,
    write_json,
)

LINEAR_TOLERANCE = 1.25  # time per neuron-second within 25 % of the smallest size: "about linear"


def parse_args():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000, 400000], help="neuron counts")
    p.add_argument("--duration", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed runs, min reported (default 5; at most 3 for N >= 100k)")
    args = p.parse_args()
    if args.quick:
        args.sizes = [500, 1000, 2000]
        args.duration = min(args.duration, 0.02)
        args.repeats = min(args.repeats, 2)
    args.sizes = sorted(set(args.sizes))
    return finish_args(args)


def main() -> int:
    args = parse_args()
    machine = machine_info()
    print("CUBA size scaling (80 synapses/neuron, batch 1, one thread)")
    print(describe_machine(machine))
    print(f"duration {args.duration} s biological, sizes {args.sizes}"
          + ("  [--quick: smoke run, not a measurement]" if args.quick else ""))

    results = []
    for n in args.sizes:
        repeats = min(args.repeats, 3) if n >= 100_000 else args.repeats
        r = quiet_best(partial(run_cuba_worker, n=n, threads=1, duration_ms=args.duration * 1000.0,
                               repeats=repeats), args.attempts, args.max_other_load)
        r["repeats"] = repeats
        results.append(r)
        print(f"  {n:>9,} neurons: run {fmt_s(r['run_seconds'])}, connectivity {fmt_s(r['connectivity_seconds'])}, "
              f"peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)

    ref = None
    rows, crows = [], []
    for r in results:
        n = r["n_neurons"]
        per_bio = r["run_seconds"] / r["duration_s"]
        per_neuron_s = per_bio / n
        ref = ref or per_neuron_s
        events = r["total_spikes"] * r["n_synapses"] / n  # spikes x mean out-degree
        r.update(per_bio_second=per_bio, per_neuron_second=per_neuron_s, vs_smallest=per_neuron_s / ref,
                 ns_per_event=r["run_seconds"] / events * 1e9 if events else None)
        rows.append([f"{n:,}", f"{r['n_synapses']:,}", fmt_s(r["run_seconds"]), fmt_s(r["run_seconds"] / r["steps"]),
                     fmt_s(per_bio),
                     fmt(per_neuron_s * 1e6, 3), fmt(r["vs_smallest"], 3), fmt(r["mean_rate_hz"], 3),
                     fmt(r["ns_per_event"], 3), fmt(r["state_mb"], 3), fmt(r["peak_rss_mb"], 4),
                     fmt_load(r['other_cores'])])
        crows.append([f"{n:,}", fmt_s(r["connectivity_seconds"]), fmt_s(r["network_seconds"]),
                      fmt_s(r["build_seconds"]) + (" (cached)" if r["from_cache"] else " (compiled)"),
                      fmt(r["rss_built_mb"], 4)])
    print_table(["neurons", "synapses", "run (min)", "per step", "per bio s", "µs per neuron-s", "vs smallest",
                 "rate Hz", "ns/event", "state MiB", "peak RSS MiB", "other load"], rows,
                title=f"Run time, {args.duration:g} s biological time, 1 thread (min of "
                      f"{', '.join(str(r['repeats']) for r in results)} runs)")
    print(OTHER_LOAD_NOTE)
    print_table(["neurons", "connectivity generation", "network construction", "build", "RSS after build MiB"],
                crows, title="Set-up (fresh process per size)")

    worst = max(r["vs_smallest"] for r in results)
    linear = worst <= LINEAR_TOLERANCE
    rel = ", ".join(f"{r['vs_smallest']:.2f}x at {r['n_neurons']:,}" for r in results[1:])
    print(f"\nscaling: time per neuron-second relative to {results[0]['n_neurons']:,} neurons: {rel or '-'}"
          f" -> {'linear or better' if linear else 'NOT linear'} (tolerance {LINEAR_TOLERANCE}x)")

    if args.json:
        write_json(args.json, {
            "benchmark": "size_scaling", "machine": machine, "quick": args.quick,
            "duration_s": args.duration, "sizes": args.sizes, "runs": results,
            "max_vs_smallest": worst, "linear_tolerance": LINEAR_TOLERANCE,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
