"""Shared-machine behaviour: default threads against one thread while other work runs.

Three scenarios, each timed in fresh worker processes:

* ``stdp``: Song, Miller & Abbott (2000) as in Brian2's STDP example: 1000 Poisson
  inputs at 15 Hz, all-to-all plastic synapses (additive STDP, weights shared, so the
  batch-reduction kernel runs every step) onto one conductance-based LIF neuron,
  dt = 0.1 ms, batch 1. Default threads (no ``threads=``, no OMP_NUM_THREADS) against
  ``threads=1``. Goal: default within 10 % of one thread.
* ``cuba``: CUBA (``examples/cuba.yaml``: 4000 LIF neurons, 80 synapses each) at
  batch 8 on 2 threads against 1 thread. Goal: 2 threads no worse than 1.5x one thread.
* ``stdp_batch``: the ``stdp`` network at batch 8 (``--batch``), its weights shared and
  learned across the batch, so the instances meet at the batch reduction every step; 2
  threads against 1 thread, the same goal as ``cuba``.

While each worker runs, ``--competitors`` busy-loop processes (default 1) keep one
core busy, so the pair is measured on a busy machine by construction (and whatever
else runs on the machine adds to that). The two thread settings of a scenario are run
back to back, ``--repeats`` times, alternating which goes first; the table reports
median wall times, the median of the per-repeat ratios and the CPU time the worker
used (a spinning OpenMP thread shows up as CPU time without progress).

``--spikeforge PATH`` runs the workers against another checkout of spikeforge (put
first on PYTHONPATH): with a worktree of the commit before a change it measures the
"before". ``--env KEY=VALUE`` adds environment variables to every worker (e.g.
``OMP_WAIT_POLICY=active`` to see the effect of busy waiting).

    python benchmarks/shared_machine.py [--duration 10] [--repeats 3] [--json out.json]
    python benchmarks/shared_machine.py --spikeforge /tmp/sf-before     # the old code
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    BenchmarkError,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_s,
    machine_info,
    print_table,
    run_json,
    verdict,
    write_json,
)

STDP_GOAL = 1.10  # default threads / one thread
CUBA_GOAL = 1.50  # two threads / one thread, with a competing process
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DYNAMIC")


# --------------------------------------------------------------------------- the networks


def song_network(n_inputs: int = 1000, seed: int = 1, batch: int = 1):
    """Song, Miller & Abbott (2000) as written in Brian2's STDP example (dt 0.1 ms)."""
    from spikeforge import models as m
    from spikeforge.models.neuron import NeuronModel
    from spikeforge.network import Network

    gmax = 0.01
    neuron = NeuronModel(
        "song_lif",
        params={"tau_m": 10.0, "e_l": -74.0, "e_e": 0.0, "v_th": -54.0, "v_reset": -60.0},
        vars={"v": -60.0},
        # i_syn is the excitatory conductance g_e (relative to the leak), decaying with 5 ms
        equations="dv/dt = (i_syn * (e_e - v) + e_l - v) / tau_m",
        threshold="v > v_th",
        reset="v = v_reset",
    )
    net = Network("song2000", dt=0.1, batch_size=batch, seed=seed, precision="double")
    net.add_population("input", n_inputs, m.POISSON, init={"rate": 15.0})
    net.add_population("neuron", 1, neuron, record_spikes=True)
    stdp = dict(tau_plus=20.0, tau_minus=20.0, a_plus=0.01 * gmax, a_minus=0.01 * 1.05 * gmax, w_min=0.0,
                w_max=gmax)
    net.add_projection("input_neuron", "input", "neuron", m.STDP, m.EXP_CURR, "dense", wu_params=stdp,
                       wu_init={"w": {"uniform": [0.0, gmax]}}, ps_params={"tau_syn": 5.0})
    return net


def cuba_network(batch: int):
    from spikeforge.config import load_network

    net, _ = load_network(REPO / "examples" / "cuba.yaml", batch_size=batch)
    return net


# --------------------------------------------------------------------------- worker


def worker(cfg: dict) -> dict:
    """Build (cache) and time one run in this process; print one JSON line."""
    import spikeforge

    net = (cuba_network(cfg["batch"]) if cfg["scenario"] == "cuba"
           else song_network(cfg["n_inputs"], batch=cfg["batch"]))
    sim = net.build(threads=cfg["threads"])
    cpu0, t0 = time.process_time(), time.perf_counter()
    sim.run(duration=cfg["duration_ms"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    times, _ = sim.spikes("exc" if cfg["scenario"] == "cuba" else "neuron")[0]
    out = {"wall_seconds": wall, "cpu_seconds": cpu, "spikes": len(times), "from_cache": sim.from_cache,
           "spikeforge": str(Path(spikeforge.__file__).parent),
           "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    print(json.dumps(out), flush=True)
    return out


def _start_competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def measure(cfg: dict, args) -> dict:
    env = dict(os.environ)
    for key in THREAD_ENV:  # the worker sees the defaults unless --env sets them
        env.pop(key, None)
    if cfg["threads"] is not None:
        env["OMP_NUM_THREADS"] = str(cfg["threads"])
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    if args.spikeforge:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.spikeforge).resolve()), env.get("PYTHONPATH", "")])
    competitors = _start_competitors(args.competitors if cfg["duration_ms"] else 0)
    try:
        time.sleep(0.05 if competitors else 0)
        return run_json([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)], env=env,
                        timeout=args.timeout, cwd=REPO)
    except BenchmarkError as exc:
        if "timed out" not in str(exc):
            raise
        # a run that did not finish: its time is at least the limit (shown as ">= ...")
        return {"wall_seconds": args.timeout, "cpu_seconds": float("nan"), "timed_out": True}
    finally:
        _stop(competitors)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", choices=["stdp", "cuba", "stdp_batch"], default=["stdp", "cuba"])
    p.add_argument("--duration", type=float, default=10.0,
                   help="biological time of the STDP run in s (default 10); CUBA runs a tenth of it")
    p.add_argument("--cuba-duration", type=float, default=None, help="biological time of the CUBA run in s")
    p.add_argument("--n-inputs", type=int, default=1000, help="Poisson inputs of the STDP network (default 1000)")
    p.add_argument("--batch", type=int, default=8, help="batch size of cuba and stdp_batch (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs per scenario; medians (default 3)")
    p.add_argument("--competitors", type=int, default=1, help="busy-loop processes during each run (default 1)")
    p.add_argument("--spikeforge", metavar="PATH", help="run the workers against this spikeforge checkout")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra worker environment")
    p.add_argument("--label", default=None, help="a name for this series in the table (e.g. before, after)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker (default 3600)")
    p.add_argument("--worker", help="internal: run one measurement (a JSON configuration)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.n_inputs, args.batch, args.repeats = 0.05, 50, 2, 1
    if args.cuba_duration is None:
        args.cuba_duration = args.duration / 10
    return finish_args(args)


def _median(values):
    return statistics.median(values) if values else None


def _pairs(args) -> list[tuple[str, dict, dict]]:
    pairs = []
    if "stdp" in args.scenarios:
        base = dict(scenario="stdp", n_inputs=args.n_inputs, batch=1, duration_ms=args.duration * 1000)
        pairs.append(("stdp", {**base, "threads": None}, {**base, "threads": 1}))
    if "cuba" in args.scenarios:
        base = dict(scenario="cuba", n_inputs=0, batch=args.batch, duration_ms=args.cuba_duration * 1000)
        pairs.append(("cuba", {**base, "threads": 2}, {**base, "threads": 1}))
    if "stdp_batch" in args.scenarios:
        base = dict(scenario="stdp_batch", n_inputs=args.n_inputs, batch=args.batch,
                    duration_ms=args.cuba_duration * 1000)
        pairs.append(("stdp_batch", {**base, "threads": 2}, {**base, "threads": 1}))
    return pairs


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    info = machine_info()
    print(describe_machine(info))
    label = args.label or ("before" if args.spikeforge else "this checkout")
    print(f"series: {label}; spikeforge from {args.spikeforge or REPO}; extra env: {args.env or 'none'}; "
          f"{args.competitors} busy-loop competitor(s) during every run", flush=True)
    rows, results = [], {}
    for name, many, one in _pairs(args):
        measure({**one, "duration_ms": 0}, args)  # compile (or find in the cache) before timing
        runs_many, runs_one, ratios = [], [], []
        for r in range(args.repeats):
            order = (many, one) if r % 2 == 0 else (one, many)
            got = {id(cfg): measure(cfg, args) for cfg in order}
            a, b = got[id(many)], got[id(one)]
            runs_many.append(a)
            runs_one.append(b)
            ratios.append(a["wall_seconds"] / b["wall_seconds"])
            print(f"  {name} repeat {r + 1}: {fmt_s(a['wall_seconds'])} vs {fmt_s(b['wall_seconds'])} "
                  f"(ratio {ratios[-1]:.2f})", flush=True)
        goal = STDP_GOAL if name == "stdp" else CUBA_GOAL
        med = statistics.median(ratios)
        many_label = "default" if many["threads"] is None else f"{many['threads']} threads"
        what = {"stdp": f"STDP Song 2000, {args.n_inputs} inputs, batch 1, {args.duration:g} s",
                "stdp_batch": f"STDP Song 2000, {args.n_inputs} inputs, batch {args.batch}, {args.cuba_duration:g} s",
                "cuba": f"CUBA batch {args.batch}, {args.cuba_duration:g} s"}[name]
        rows.append([label, what, many_label,
                     (">= " if sum(x.get("timed_out", False) for x in runs_many) * 2 > len(runs_many) else "")
                     + fmt_s(statistics.median(x["wall_seconds"] for x in runs_many)),
                     fmt_s(_median([x["cpu_seconds"] for x in runs_many if not x.get("timed_out")])),
                     fmt_s(statistics.median(x["wall_seconds"] for x in runs_one)),
                     fmt(med), f"<= {goal:g}", verdict(med <= goal)])
        results[name] = {"many": runs_many, "one": runs_one, "ratios": ratios, "median_ratio": med, "goal": goal}
    print_table(["series", "run", "threads", "wall", "CPU time", "wall, 1 thread", "ratio (median)", "goal",
                 "verdict"], rows, title=f"Shared machine ({args.competitors} busy-loop competitor(s); "
                                         f"medians of {args.repeats} repeats)")
    if args.json:
        write_json(args.json, {"machine": info, "label": label, "spikeforge": args.spikeforge, "env": args.env,
                               "competitors": args.competitors, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
