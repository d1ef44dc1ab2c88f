"""E3: the event backend against the clock-driven ``cpu`` backend, wall time per biological second.

The network of ``event_scaling.py`` at N = 10^5, K = 100 (procedural inhibitory delta
synapses, 1 ms delay, constant drives), with a fraction of the neurons driven above
threshold so that the mean rate is about 10, 1 or 0.1 Hz (all of them: ~10 Hz each under the
network's inhibition; 3.3 % or 0.33 %: ~30 Hz each); the others sit below threshold.
``event`` (exact, float64) against ``cpu`` (float, the default precision, exact integration
of the same LIF) at dt = 0.1 ms and 0.01 ms, all on one thread,
each configuration in a fresh process. The crossover is the mean rate at which the two cost
the same (interpolated in log-log between the measured rates). The load average
(/proc/loadavg) is recorded beside every figure: the machine is shared. Reproduce:

    python benchmarks/event_vs_clock.py [--n 100000] [--json out.json]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's spikeforge
from _common import common_parser, print_table, write_json  # noqa: E402
from event_scaling import loadavg, network  # noqa: E402

# nominal mean rate (Hz) -> fraction of neurons driven above threshold: with all of them active
# the inhibition holds each near 10 Hz; a small active fraction fires at about 30 Hz
ACTIVE = {10.0: 1.0, 1.0: 0.033, 0.1: 0.0033}


def worker(cfg: dict) -> dict:
    out = {"cfg": cfg, "load_before": loadavg()}
    net = network(cfg["n"], active=cfg["active"], dt=cfg["dt"])
    sim = net.build(backend=cfg["backend"], threads=1)
    warm = 20.0
    if cfg["backend"] == "event":
        sim.run(warm)
    else:
        sim.run(duration=warm)
    before = sum(sim.spike_counts().values())
    t0 = time.perf_counter()
    if cfg["backend"] == "event":
        sim.run(cfg["duration_ms"])
    else:
        sim.run(duration=cfg["duration_ms"])
    wall = time.perf_counter() - t0
    spikes = sum(sim.spike_counts().values()) - before
    out.update({"wall_s": wall, "wall_per_bio_s": wall / (cfg["duration_ms"] / 1000.0), "spikes": spikes,
                "rate_hz": spikes / (cfg["n"] * cfg["duration_ms"] / 1000.0), "load_after": loadavg()})
    return out


def run_worker(cfg: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def crossover(rates, event, clock):
    """The rate where event and clock cost the same, log-log interpolation (None: no crossing)."""
    pairs = sorted(zip(rates, event, clock))
    for (r0, e0, c0), (r1, e1, c1) in zip(pairs, pairs[1:]):
        d0, d1 = math.log(e0 / c0), math.log(e1 / c1)
        if d0 <= 0 <= d1 or d1 <= 0 <= d0:
            f = d0 / (d0 - d1) if d0 != d1 else 0.0
            return math.exp(math.log(r0) + f * (math.log(r1) - math.log(r0)))
    return None


def main(argv=None):
    import argparse

    parser = common_parser(__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    n = 2000 if args.quick else args.n
    results = []
    for nominal, active in ACTIVE.items():
        # about 10^5 spikes for the event backend (at least 100 ms); 100 ms (dt 0.1) or 20 ms (dt 0.01) of clock
        event_ms = 20.0 if args.quick else max(100.0, min(10_000.0, 1e5 / (n * nominal) * 1000.0))
        results.append(run_worker({"backend": "event", "n": n, "active": active, "dt": 0.1, "duration_ms": event_ms,
                                   "nominal": nominal}))
        for dt, ms in ((0.1, 100.0), (0.01, 20.0)):
            results.append(run_worker({"backend": "cpu", "n": n, "active": active, "dt": dt,
                                       "duration_ms": 10.0 if args.quick else ms, "nominal": nominal}))
    rows = []
    table = {}
    for r in results:
        c = r["cfg"]
        key = "event" if c["backend"] == "event" else f"cpu dt={c['dt']:g}"
        table.setdefault(c["nominal"], {})[key] = r
    for nominal in ACTIVE:
        t = table[nominal]
        ev = t["event"]["wall_per_bio_s"]
        rows.append([f"{nominal:g}", f"{t['event']['rate_hz']:.3g}", f"{ev:.3g}",
                     f"{t['cpu dt=0.1']['wall_per_bio_s']:.3g}", f"{t['cpu dt=0.1']['wall_per_bio_s'] / ev:.2f}",
                     f"{t['cpu dt=0.01']['wall_per_bio_s']:.3g}", f"{t['cpu dt=0.01']['wall_per_bio_s'] / ev:.2f}",
                     " / ".join(f"{t[k]['load_before']:.2f}" for k in ("event", "cpu dt=0.1", "cpu dt=0.01"))])
    print_table(["nominal rate (Hz)", "measured rate (Hz)", "event (s / bio s)", "cpu dt 0.1 (s / bio s)",
                 "cpu dt 0.1 / event", "cpu dt 0.01 (s / bio s)", "cpu dt 0.01 / event",
                 "load avg (event / 0.1 / 0.01)"], rows, title=f"E3: N = {n}, K = 100, one thread")
    rates = [table[x]["event"]["rate_hz"] for x in ACTIVE]
    event = [table[x]["event"]["wall_per_bio_s"] for x in ACTIVE]
    cross = {}
    for dt in ("0.1", "0.01"):
        clock = [table[x][f"cpu dt={dt}"]["wall_per_bio_s"] for x in ACTIVE]
        cross[dt] = crossover(rates, event, clock)
        where = f"{cross[dt]:.3g} Hz" if cross[dt] else "outside the measured rates"
        print(f"crossover against cpu at dt = {dt} ms: {where}")
    if args.json:
        write_json(args.json, {"results": results, "crossover_hz": cross})
    return 0


if __name__ == "__main__":
    sys.exit(main())
