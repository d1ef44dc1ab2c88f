"""CUBA batch scaling: cost per batch instance at batch 1, 8, 32, 128.

Each configuration runs in a fresh subprocess (so its peak memory is its own):
CUBA, 4000 neurons, 80 synapses per neuron, ``--duration`` s of biological time
(default 1), all usable threads (OMP_NUM_THREADS and ``threads=`` both set), and
also on one thread (skip with ``--no-single-thread``).

* wall: ``Simulation.run_seconds`` (wall clock around the generated C++ loop),
  minimum of ``--repeats`` runs each after ``sim.reset()``, after a warm-up run;
* per instance = wall / batch; ratio = per-instance(batch) / per-instance(1)
  at the same thread count (targets: batch 32 <= 1.0 on one thread and <= 0.55 on two,
  batch 128 <= 0.6 on two);
* memory: ``state`` = the arrays the generated code works on (state variables,
  connectivity, spike queues), ``peak RSS`` = VmHWM of the worker process at the
  end (includes the interpreter, numpy, sympy and connectivity generation
  temporaries; ``base`` = RSS after interpreter start, before importing spikeforge).

The batch instances share the connectivity (and the constant weights); each has its
own state variables, spike queues and random streams (here: different initial
membrane potentials), so their spike trains differ.

    python benchmarks/batch_scaling.py [--batches 1 8 32 128] [--duration 1] [--json out.json]
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OTHER_LOAD_NOTE,
    available_threads,
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
    verdict,
    write_json,
)

#: (batch, threads) -> the largest per-instance ratio against batch 1 that meets the target
TARGETS = {(32, 1): 1.0, (32, 2): 0.55, (128, 2): 0.6}


def parse_args():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128], help="batch sizes")
    p.add_argument("--duration", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the minimum is reported (default 5)")
    p.add_argument("--n", type=int, default=4000, help="neurons (default 4000)")
    p.add_argument("--threads", type=int, default=available_threads(),
                   help=f"threads of the main series (default: all usable = {available_threads()})")
    p.add_argument("--no-single-thread", action="store_true", help="skip the one-thread series")
    args = p.parse_args()
    if args.quick:
        args.batches = [1, 4]
        args.duration = min(args.duration, 0.02)
        args.repeats = min(args.repeats, 2)
    if 1 not in args.batches:
        args.batches = [1, *args.batches]
    args.batches = sorted(set(args.batches))
    return finish_args(args)


def main() -> int:
    args = parse_args()
    machine = machine_info()
    print(f"CUBA batch scaling ({args.n} neurons, 80 synapses/neuron)")
    print(describe_machine(machine))
    print(f"duration {args.duration} s biological, repeats {args.repeats}, batches {args.batches}"
          + ("  [--quick: smoke run, not a measurement]" if args.quick else ""))

    series = [args.threads] + ([1] if args.threads != 1 and not args.no_single_thread else [])
    results: dict[int, list[dict]] = {}
    for threads in series:
        results[threads] = []
        for batch in args.batches:
            r = quiet_best(partial(run_cuba_worker, n=args.n, batch=batch, threads=threads,
                                   duration_ms=args.duration * 1000.0, repeats=args.repeats),
                           args.attempts, args.max_other_load, threads)
            results[threads].append(r)
            print(f"  threads {threads} batch {batch:4d}: {fmt_s(r['run_seconds'])} "
                  f"(other load {fmt_load(r['other_cores'])})", flush=True)

    summary = []
    for threads in series:
        rows = []
        base = results[threads][0]["run_seconds"]  # batch 1
        for r in results[threads]:
            b = r["config"]["batch"]
            per = r["run_seconds"] / b
            ratio = per / base
            r["per_instance_seconds"] = per
            r["per_instance_ratio"] = ratio
            rates = [s / (args.n * r["duration_s"]) for s in r["spikes_per_instance"]]
            rows.append([b, fmt_s(r["run_seconds"]), fmt_s(per), fmt(ratio, 3),
                         f"{min(rates):.3g}-{max(rates):.3g}" if b > 1 else f"{rates[0]:.3g}",
                         fmt(r["state_mb"], 3), fmt(r["peak_rss_mb"], 3), fmt(r["rss_start_mb"], 3),
                         fmt_load(r['other_cores'])])
            summary.append({"threads": threads, "batch": b, "wall_seconds": r["run_seconds"],
                            "per_instance_seconds": per, "ratio": ratio, "state_mb": r["state_mb"],
                            "peak_rss_mb": r["peak_rss_mb"]})
        print_table(["batch", "wall (min)", "per instance", "ratio vs batch 1", "rate/instance (Hz)",
                     "state MiB", "peak RSS MiB", "base MiB", "other load"], rows,
                    title=f"{threads} thread{'s' if threads > 1 else ''}: {args.duration:g} s biological time "
                          f"(min of {args.repeats})")

    print(OTHER_LOAD_NOTE)
    trows = []
    for (batch, threads), goal in TARGETS.items():
        hit = [r for r in results.get(threads, []) if r["config"]["batch"] == batch]
        if hit:
            ratio = hit[0]["per_instance_ratio"]
            trows.append([f"per-instance ratio at batch {batch}, {threads} thread(s)",
                          f"<= {goal}", fmt(ratio, 3), verdict(ratio <= goal)])
    if trows:
        print_table(["target", "goal", "measured", "verdict"], trows, title="Targets", align="llrl")

    if args.json:
        write_json(args.json, {
            "benchmark": "batch_scaling", "machine": machine, "quick": args.quick, "n": args.n,
            "duration_s": args.duration, "repeats": args.repeats, "batches": args.batches,
            "summary": summary, "runs": {str(t): v for t, v in results.items()},
            "targets": [{"batch": b, "threads": t, "ratio": g} for (b, t), g in TARGETS.items()],
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
