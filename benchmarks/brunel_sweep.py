"""A 32-point sweep of Brunel's g: one batched spikeforge run against separate runs and Brian2.

Brunel (2000) as ``examples/brian2/brunel2000_*.yaml`` and ``brunel_regime_b.py`` build it
(N_E = 10,000, N_I = 2,500, p = 0.1, J = 0.1 mV, delay 1.5 ms, ``PoissonInput`` of C_E = 1000
sources at ``--nu-ratio`` x nu_thr, dt = 0.1 ms), with the relative inhibition g swept over
``--points`` values from 0 to ``--g-max`` (the inhibitory weight J_I = -g J, in both inhibitory
projections). Each way is timed in wall-clock seconds per sweep point:

* spikeforge ``batched``: one network of batch size = points, ``batch_values`` of the inhibitory
  weight, one build and one run (the instances share the connectivity and draw their own
  Poisson input);
* spikeforge ``dynamic``: one build with the weight dynamic; per point ``set_param``, ``reset``, run;
* spikeforge ``separate``: per point a new network with g compiled in (a compiler run per point),
  built and run; measured on ``--separate-points`` of the points, with ``batch_offset = b`` so
  that point b draws the random numbers of batch instance b: its spike count must equal the
  batched instance's exactly;
* Brian2 ``rebuild``: C++ standalone, per point a new Brian2 process with g compiled in, built in
  the same project directory (a user's script run once per value: ``make`` recompiles what
  changed) and run; measured on ``--brian2-rebuild-points`` of the points and extrapolated to the
  sweep as first point + (points - 1) x the mean of the others;
* Brian2 ``run_args``: one build with the inhibitory weight a shared synaptic variable, its binary
  run once per point with ``device.run(run_args={inh.w_inh: -g*J})`` (no recompilation).

Brian2 runs in the peer environment (``bash benchmarks/setup_peers.sh``) and is skipped without
it; its standalone binary seeds from the OS, so its rates differ from spikeforge's by Poisson
noise only. Both simulators use ``--threads`` threads (default 1).

    python benchmarks/brunel_sweep.py                       # 32 points, 200 ms each
    python benchmarks/brunel_sweep.py --quick               # N_E = 1000, 4 points, no Brian2: a smoke run
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import brunel_regime_b as brunel  # noqa: E402
from batched_sweep import spikes  # noqa: E402


def spread(points: int, measured: int) -> list[int]:
    """``measured`` indices spread evenly over ``range(points)``, first and last included."""
    return sorted({round(k * (points - 1) / max(measured - 1, 1)) for k in range(measured)})


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of the subprocesses it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Wall and CPU seconds of the blocks measured with it, and the other processes' load meanwhile
    (in cores: the machine is shared; on a quiet machine wall ~ CPU with one thread)."""

    def __init__(self):
        self.load = C.LoadMeter(include_children=True)
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def measure(self):
        c0, t0 = cpu_seconds(), time.perf_counter()
        with self.load.measure():
            yield
        self.cpu += cpu_seconds() - c0
        self.wall += time.perf_counter() - t0

    def per_point(self, points: int) -> dict:
        return {"per_point_s": self.wall / points, "cpu_per_point_s": self.cpu / points,
                "other_cores": self.load.as_dict()["other_cores"]}


def spikeforge_ways(g, args) -> dict:
    """Batched, dynamic and separate spikeforge runs over the values ``g``."""
    points, n_e, duration, options = len(g), args.n_e, args.duration, {"threads": args.threads}
    out = {}
    # untimed: compile and load the connectivity builder (one per process; a source that depends on no
    # value, cached on disk after a user's first run), so that no way below pays for it
    brunel.brunel_network(-1.0, args.nu_ratio, 100, args.seed).build(**options).close()
    meter = Meter()
    with meter.measure():
        sim = brunel.brunel_network(g, args.nu_ratio, n_e, args.seed).build(**options)
    t_build = meter.wall
    with meter.measure():
        sim.run(duration=duration)
    batched = [spikes(sim, b) for b in range(points)]
    sim.close()
    out["batched"] = {"build_s": t_build, "run_s": meter.wall - t_build, **meter.per_point(points),
                      "spikes": batched}

    meter = Meter()
    with meter.measure():
        sim = brunel.brunel_network(g[0], args.nu_ratio, n_e, args.seed, g_dynamic=True).build(**options)
    t_build = meter.wall
    dynamic = []
    for gb in g:
        with meter.measure():
            for projection in ("inh_exc", "inh_inh"):
                sim.set_param(projection, "w", -gb * 0.1)
            sim.reset()
            sim.run(duration=duration)
        dynamic.append(spikes(sim))
    sim.close()
    out["dynamic"] = {"build_s": t_build, "run_s": meter.wall - t_build, **meter.per_point(points),
                      "spikes": dynamic, "point_0_equals_batched": dynamic[0] == batched[0]}

    chosen = spread(points, args.separate_points)
    meter, t_builds, separate = Meter(), 0.0, {}
    for b in chosen:
        with meter.measure():
            t0 = time.perf_counter()
            sim = brunel.brunel_network(g[b], args.nu_ratio, n_e, args.seed).build(batch_offset=b, **options)
            t_builds += time.perf_counter() - t0
            sim.run(duration=duration)
        separate[b] = spikes(sim)
        sim.close()
    out["separate"] = {"points_measured": chosen, "build_s": t_builds / len(chosen), **meter.per_point(len(chosen)),
                       "spikes": separate,
                       "spikes_agree_with_batched": all(separate[b] == batched[b] for b in chosen)}
    return out


def brian2_spike_count(run) -> int:
    return int(np.load(run["path"])["i"].size)


def brian2_ways(g, args, work) -> dict:
    """Brian2 standalone: a rebuild per point (a measured subset), and one build run per point."""
    points, out = len(g), {}
    chosen = spread(points, args.brian2_rebuild_points)
    rebuild_dir = Path(work) / "rebuild"  # one project directory for every point, as a user's script
    rebuild_dir.mkdir()
    meter, walls, cpus, builds, counts = Meter(), [], [], [], {}
    overheads = []  # per process: start Python, import Brian2, build the network objects; neither build nor run
    for b in chosen:
        wall, cpu = meter.wall, meter.cpu
        with meter.measure():
            info = brunel.run_brian2(g[b], args.nu_ratio, args.n_e, [1], args.duration, "baseline", rebuild_dir,
                                     threads=args.threads)
        walls.append(meter.wall - wall)
        cpus.append(meter.cpu - cpu)
        builds.append(info["build_s"])
        overheads.append(walls[-1] - info["build_s"] - info["runs"][0]["wall"])
        counts[b] = brian2_spike_count(info["runs"][0])

    def extrapolated(values):  # the first point builds afresh, the others recompile what changed
        others = values[1:] or values
        return values[0] + (points - 1) * sum(others) / len(others)

    out["rebuild"] = {"points_measured": chosen, "wall_s": walls, "cpu_s": cpus, "build_s": builds,
                      "spikes": counts, "process_overhead_s": overheads, **meter.per_point(points),
                      "sweep_s_extrapolated": extrapolated(walls), "per_point_s": extrapolated(walls) / points,
                      "cpu_per_point_s": extrapolated(cpus) / points}

    meter = Meter()
    with meter.measure():
        info = brunel.run_brian2(list(g), args.nu_ratio, args.n_e, [1], args.duration, "baseline", work,
                                 threads=args.threads)
    out["run_args"] = {"build_s": info["build_s"], "total_s": meter.wall, **meter.per_point(points),
                       "run_s": [r["wall"] for r in info["runs"]],
                       "spikes": [brian2_spike_count(r) for r in info["runs"]]}
    return out


def main(argv=None):
    parser = C.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=32, help="sweep points (default 32)")
    parser.add_argument("--g-max", type=float, default=8.0, help="g runs from 0 to this (default 8)")
    parser.add_argument("--nu-ratio", type=float, default=2.0, help="nu_ext / nu_thr (default 2)")
    parser.add_argument("--n-e", type=int, default=10000, help="excitatory neurons, N_I = N_E / 4 (default 10000)")
    parser.add_argument("--duration", type=float, default=200.0, help="ms simulated per point (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="threads of spikeforge and Brian2 (default 1)")
    parser.add_argument("--separate-points", type=int, default=4,
                        help="points measured as separate compiled-in spikeforge runs (default 4)")
    parser.add_argument("--brian2-rebuild-points", type=int, default=4,
                        help="points measured as Brian2 rebuilds (default 4); 0 skips Brian2")
    parser.add_argument("--brian2", action="store_true", help="run Brian2 even with --quick")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.separate_points, args.brian2_rebuild_points = 4, 2, 2 if args.brian2 else 0
        args.n_e, args.duration = 1000, 50.0
    points = args.points
    g = [args.g_max * k / max(points - 1, 1) for k in range(points)]
    n = args.n_e + args.n_e // 4
    results = {"machine": C.machine_info(), "points": points, "n": n, "duration_ms": args.duration,
               "nu_ratio": args.nu_ratio, "threads": args.threads, "g": g}
    with C.fresh_cache_dir() as cache:
        os.environ["SPIKEFORGE_CACHE_DIR"] = cache  # every build compiles: no entry from earlier runs
        results["spikeforge"] = sf = spikeforge_ways(g, args)
    b2 = None
    if args.brian2_rebuild_points > 0 and brunel.PEER_PYTHON.exists():
        with tempfile.TemporaryDirectory(prefix="brunel_sweep_b2_") as work:
            results["brian2"] = b2 = brian2_ways(g, args, work)
    elif args.brian2_rebuild_points > 0:
        print(f"(Brian2 skipped: no peer environment at {brunel.PEER_PYTHON})", file=sys.stderr)

    ways = [("spikeforge batched (1 build, 1 run of batch {p})", sf["batched"], "1"),
            ("spikeforge dynamic (1 build, set_param + reset + run per point)", sf["dynamic"], "1"),
            ("spikeforge separate (g compiled in; {k} of {p} points measured)", sf["separate"], "1 per point")]
    if b2:
        ways += [("Brian2 rebuild (g compiled in; {k} of {p} points measured, extrapolated)", b2["rebuild"],
                  "1 per point (first fresh, then make)"),
                 ("Brian2 run_args (1 build, binary run per point)", b2["run_args"], "1")]
    base = sf["separate"]["per_point_s"]
    rows = []
    for label, r, builds in ways:
        k = len(r.get("points_measured", ()))
        build = r["build_s"] if not isinstance(r["build_s"], list) else sum(r["build_s"]) / len(r["build_s"])
        rows.append([label.format(p=points, k=k), C.fmt_s(r["per_point_s"]), f"{base / r['per_point_s']:.1f}x",
                     C.fmt_s(r["cpu_per_point_s"]), C.fmt_load(r["other_cores"]), C.fmt_s(build), builds])
    C.print_table(["way", "wall s per point", "vs spikeforge separate", "CPU s per point", "other load (cores)",
                   "build s (each)", "builds"], rows,
                  title=f"Brunel 2000, {n} neurons, nu_ext = {args.nu_ratio:g} nu_thr, g = 0..{args.g_max:g} "
                        f"({points} points), {args.duration:g} ms per point, {args.threads} thread(s)")

    def rate(count):
        return f"{count / (n * args.duration * 1e-3):.1f}" if count is not None else "-"

    rate_rows = [[f"{gb:.2f}", rate(sf["batched"]["spikes"][b]), rate(sf["dynamic"]["spikes"][b]),
                  rate(sf["separate"]["spikes"].get(b)),
                  rate(b2["run_args"]["spikes"][b]) if b2 else "-",
                  rate(b2["rebuild"]["spikes"].get(b)) if b2 else "-"] for b, gb in enumerate(g)]
    C.print_table(["g", "spikeforge batched", "dynamic", "separate", "Brian2 run_args", "Brian2 rebuild"],
                  rate_rows, title=f"rates (Hz) over the {args.duration:g} ms")
    print(f"spikeforge batched: build {sf['batched']['build_s']:.2f} s, run {sf['batched']['run_s']:.2f} s; "
          f"dynamic: build {sf['dynamic']['build_s']:.2f} s, runs {sf['dynamic']['run_s']:.2f} s")
    if b2:
        rb = b2["rebuild"]
        print("Brian2 rebuild, per measured point: wall " + ", ".join(f"{x:.2f}" for x in rb["wall_s"])
              + " s; build " + ", ".join(f"{x:.2f}" for x in rb["build_s"]) + " s; process start, import and "
              "network objects " + ", ".join(f"{x:.2f}" for x in rb["process_overhead_s"]) + " s")
        print(f"Brian2 run_args: build {b2['run_args']['build_s']:.2f} s, total {b2['run_args']['total_s']:.2f} s, "
              f"binary runs {sum(b2['run_args']['run_s']):.2f} s")
    agree = sf["separate"]["spikes_agree_with_batched"] and sf["dynamic"]["point_0_equals_batched"]
    print(f"separate runs (batch_offset = b) give the batched instances' spike counts: "
          f"{sf['separate']['spikes_agree_with_batched']}; dynamic point 0 = batched instance 0: "
          f"{sf['dynamic']['point_0_equals_batched']}")
    print(C.describe_machine(results["machine"]))
    if args.json:
        C.write_json(args.json, results)
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
