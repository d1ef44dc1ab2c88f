"""CUBA (Vogels & Abbott 2005): spikeforge vs Brian2 C++ standalone, one thread.

Measures, on the same machine in the same invocation:

* run time: 1 s of biological time (``--duration``), batch 1, ONE thread
  (``threads=1`` and OMP_NUM_THREADS=1). spikeforge: ``Simulation.run_seconds``
  (the generated C++ loop only), minimum over ``--processes`` fresh processes of
  ``--repeats`` runs each (each run after ``sim.reset()``, after one warm-up run).
  Brian2: ``benchmarks/brian2_cuba.py`` in the peer environment ``benchmarks/.env``
  (its C++ main-loop time, ``device._last_run_time``), minimum of ``--repeats``
  runs of the built binary (each run is a fresh process of the binary). Both
  record all spikes (SpikeMonitor / record_spikes) and use dt = 0.1 ms.
* cold build: ``Simulation.build_seconds`` (code generation + compilation + load)
  in a fresh subprocess with a fresh, empty SPIKEFORGE_CACHE_DIR, next to Brian2's
  ``build_seconds`` (code generation + compilation into a fresh directory).
* warm start: a second fresh subprocess with the same cache directory, time from
  the ``net.build()`` call to a ready Simulation.

Targets: run time ratio spikeforge/Brian2 <= 1.0, cold build <= 5 s, warm start
<= 0.5 s.

    python benchmarks/cuba_vs_brian2.py [--duration 1] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BRIAN2_SCRIPT,
    OTHER_LOAD_NOTE,
    PEER_PYTHON,
    BenchmarkError,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_load,
    fmt_s,
    fresh_cache_dir,
    machine_info,
    print_table,
    quiet_best,
    run_brian2_cuba,
    run_cuba_worker,
    verdict,
    write_json,
)

TARGET_RATIO = 1.0
TARGET_COLD_S = 5.0
TARGET_WARM_S = 0.5


def parse_args():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the minimum is reported (default 5)")
    p.add_argument("--processes", type=int, default=3,
                   help="spikeforge processes, each doing --repeats runs; the minimum over all is reported "
                        "(default 3)")
    p.add_argument("--builds", type=int, default=3,
                   help="cold builds (each with its own fresh cache) and warm starts to time (default 3)")
    p.add_argument("--no-brian2", action="store_true", help="skip the Brian2 column")
    p.add_argument("--brian2", action="store_true", help="run Brian2 even with --quick")
    p.add_argument("--rate-seeds", type=int, default=0, metavar="K",
                   help="also compare mean rates over seeds 1..K (both simulators, short runs)")
    args = p.parse_args()
    if args.quick:
        args.duration = min(args.duration, 0.05)
        args.repeats = min(args.repeats, 2)
        args.builds = 1
        args.processes = 1
        args.rate_seeds = 0
    return finish_args(args)


def brian2_available() -> bool:
    return PEER_PYTHON.exists() and BRIAN2_SCRIPT.exists()


def main() -> int:
    args = parse_args()
    machine = machine_info()
    print("CUBA: spikeforge vs Brian2 C++ standalone (batch 1, one thread)")
    print(describe_machine(machine))
    print(f"duration {args.duration} s biological, dt 0.1 ms, repeats {args.repeats}, "
          f"{args.builds} cold build(s) / warm start(s)" + ("  [--quick: smoke run, not a measurement]"
                                                             if args.quick else ""))

    # -- spikeforge: cold builds and warm starts, each in a fresh process ------------------
    cold, warm = [], []
    for _ in range(args.builds):
        with fresh_cache_dir() as cache:
            c = run_cuba_worker(repeats=0, cache_dir=cache)
            if c["from_cache"]:
                raise BenchmarkError("the cold build came from the cache: the cache dir was not empty?")
            w = run_cuba_worker(repeats=0, cache_dir=cache)
            if not w["from_cache"]:
                raise BenchmarkError("the warm start recompiled: the cache was not reused")
        cold.append(c)
        warm.append(w)

    # -- spikeforge: run time (the user's cache; the library is built once if missing) -------
    # Run times differ by up to ~10 % from one process to the next (memory placement), so
    # like Brian2, whose --repeats each start the binary anew, take the minimum over processes.
    sf_procs = [quiet_best(partial(run_cuba_worker, duration_ms=args.duration * 1000.0, repeats=args.repeats,
                                   threads=1), args.attempts, args.max_other_load)
                for _ in range(args.processes)]
    sf = dict(min(sf_procs, key=lambda r: r["run_seconds"]))
    sf["run_seconds_all"] = [t for r in sf_procs for t in r["run_seconds_all"]]
    sf["run_seconds_median"] = statistics.median(sf["run_seconds_all"])
    sf["per_process_min"] = [r["run_seconds"] for r in sf_procs]
    sf["other_cores"] = max((r["other_cores"] for r in sf_procs if r["other_cores"] is not None), default=None)

    # -- Brian2 ------------------------------------------------------------------------------
    b2, b2_note = None, None
    if args.no_brian2 or (args.quick and not args.brian2):
        b2_note = "Brian2 skipped (" + ("--no-brian2" if args.no_brian2 else "--quick; add --brian2") + ")"
    elif not brian2_available():
        b2_note = (f"Brian2 skipped: the peer environment {PEER_PYTHON.parent.parent} is missing; "
                   "create it with:  bash benchmarks/setup_peers.sh")
    else:
        b2 = quiet_best(partial(run_brian2_cuba, args.duration, args.repeats), min(args.attempts, 2),
                        args.max_other_load)
    if b2_note:
        print("\n" + b2_note)

    # -- tables ------------------------------------------------------------------------------
    rows = [["spikeforge " + machine.get("spikeforge", ""), fmt_s(sf["run_seconds"]),
             fmt_s(sf["run_seconds_median"]), fmt(sf["total_spikes"]), fmt(sf["mean_rate_hz"], 3, " Hz"),
             fmt_load(sf['other_cores'])]]
    if b2:
        rows.append([f"Brian2 {b2['brian2_version']} cpp_standalone", fmt_s(b2["run_seconds"]),
                     fmt_s(statistics.median(b2["run_seconds_all"])), fmt(b2["total_spikes"]),
                     fmt(b2["mean_rate_hz"], 3, " Hz"), fmt_load(b2['other_cores'])])
    print_table(["simulator", "run time (min)", "median", "spikes", "mean rate", "other load (cores)"], rows,
                title=f"Run time, {args.duration:g} s biological time, 4000 neurons, batch 1, 1 thread "
                      f"(C++ main loop only; spikeforge: min of {args.processes} processes x {args.repeats} runs, "
                      f"Brian2: min of {args.repeats} runs of its binary)")
    print(OTHER_LOAD_NOTE)
    ratio = sf["run_seconds"] / b2["run_seconds"] if b2 else None
    sf_ms_per_bio_s = sf["run_seconds"] / args.duration
    print(f"\nspikeforge: {fmt_s(sf_ms_per_bio_s)} per biological second; minimum of each of "
          f"{len(sf_procs)} process(es): " + ", ".join(fmt_s(t) for t in sf["per_process_min"])
          + "; all runs: " + ", ".join(fmt_s(t) for t in sf["run_seconds_all"]))
    if b2:
        print("Brian2 all runs (each a fresh process of its binary): "
              + ", ".join(fmt_s(t) for t in b2["run_seconds_all"]))
        print("(spike counts differ because connectivity and initial values come from different "
              "random number generators; the networks are statistically the same)")

    cold_s = [c["build_seconds"] for c in cold]
    warm_s = [w["build_wall_seconds"] for w in warm]
    brows = [
        ["spikeforge cold build (codegen + compile + load)", fmt_s(min(cold_s)),
         ", ".join(fmt_s(x) for x in cold_s)],
        ["  of which code generation (render)", fmt_s(min(c["codegen_seconds"] for c in cold)), ""],
        ["  of which compiler (incl. flag probes)", fmt_s(min(c["compile_or_lookup_seconds"] for c in cold)), ""],
        ["spikeforge warm start (net.build() from cache)", fmt_s(min(warm_s)),
         ", ".join(fmt_s(x) for x in warm_s)],
        ["spikeforge network construction (connectivity)", fmt_s(min(w["network_seconds"] for w in warm)),
         "not in the build times above"],
    ]
    if b2:
        brows.append(["Brian2 cold build (codegen + compile, make -j)", fmt_s(b2["build_seconds"]), "1 build"])
    print_table(["build", "time (min)", "all"], brows,
                title="Build times (each in a fresh Python process; cold = fresh empty cache)",
                align="lrl")

    trows = [
        ["run time spikeforge / Brian2", f"<= {TARGET_RATIO}", fmt(ratio, 3) if ratio else "-",
         verdict(ratio <= TARGET_RATIO if ratio else None)],
        ["cold build", f"<= {TARGET_COLD_S:g} s", fmt_s(min(cold_s)), verdict(min(cold_s) <= TARGET_COLD_S)],
        ["warm start from cache", f"<= {TARGET_WARM_S:g} s", fmt_s(min(warm_s)),
         verdict(min(warm_s) <= TARGET_WARM_S)],
    ]
    print_table(["target", "goal", "measured", "verdict"], trows, title="Targets", align="llrl")

    if args.rate_seeds > 0:
        rate_rows = []
        short = min(args.duration, 1.0)
        for seed in range(1, args.rate_seeds + 1):
            s = run_cuba_worker(duration_ms=short * 1000.0, repeats=1, warmup=False, seed=seed)
            b = run_brian2_cuba(short, 1, seed) if b2 else None
            rate_rows.append([seed, fmt(s["mean_rate_hz"], 3), fmt(b["mean_rate_hz"], 3) if b else "-"])
        sf_rates = [float(r[1]) for r in rate_rows]
        line = ["mean ± sd", f"{statistics.mean(sf_rates):.3g} ± {statistics.pstdev(sf_rates):.2g}", "-"]
        if b2:
            b2_rates = [float(r[2]) for r in rate_rows]
            line[2] = f"{statistics.mean(b2_rates):.3g} ± {statistics.pstdev(b2_rates):.2g}"
        rate_rows.append(line)
        print_table(["seed", "spikeforge rate (Hz)", "Brian2 rate (Hz)"], rate_rows,
                    title=f"Mean firing rate over seeds ({short:g} s each)")

    if args.json:
        write_json(args.json, {
            "benchmark": "cuba_vs_brian2", "machine": machine, "quick": args.quick,
            "duration_s": args.duration, "repeats": args.repeats,
            "spikeforge": {"run": sf, "run_processes": sf_procs, "cold_builds": cold, "warm_starts": warm,
                           "cold_build_seconds": min(cold_s), "warm_start_seconds": min(warm_s)},
            "brian2": b2, "brian2_note": b2_note, "ratio": ratio,
            "targets": {"ratio": TARGET_RATIO, "cold_build_s": TARGET_COLD_S, "warm_start_s": TARGET_WARM_S},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
