"""Ctrl-C latency of a long run, and what running in chunks costs.

Measures, on the CUBA network (``spikeforge.networks.cuba_network``, batch 1):

* Python API: a run of hours of biological time is interrupted by SIGINT sent from a
  timer thread of the same process; latency = time from ``os.kill`` to the
  ``KeyboardInterrupt`` reaching the caller (``sim.step`` then holds the steps done).
  For each ``--sizes`` (a bigger network has slower steps, so fewer per chunk).
* CLI: ``spikeforge -v run examples/cuba.yaml --duration 1e7 --json`` in a subprocess;
  SIGINT once the run has started (its ``running ...`` log line plus a random
  0.3-1.0 s); latency = time from the signal to the process's exit (it prints the
  partial result and exits 130; interpreter shutdown included).
* Chunking overhead: ``sim.run(duration)`` (chunks of ~0.1 s, NaN/inf check at the end)
  against a single ``backend.run(steps)`` call for the same steps; best of ``--repeats``.

Target: latency < 0.5 s; overhead negligible (< 2 %).

    python benchmarks/ctrl_c_latency.py [--tries 5] [--sizes 4000 40000] [--json out.json]
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    common_parser,
    describe_machine,
    finish_args,
    fmt_s,
    machine_info,
    print_table,
    verdict,
    write_json,
)

TARGET_LATENCY_S = 0.5


def parse_args():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5, help="interrupts per configuration (default 5)")
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000], help="CUBA sizes for the API test")
    p.add_argument("--repeats", type=int, default=5, help="timed runs for the overhead (default 5)")
    p.add_argument("--duration", type=float, default=2000.0, help="ms simulated for the overhead (default 2000)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the simulation (default 1)")
    args = p.parse_args()
    if args.quick:
        args.tries, args.sizes, args.repeats, args.duration = 1, [1000], 2, 100.0
    return finish_args(args)


def api_latencies(n: int, tries: int, threads: int) -> dict:
    from spikeforge.networks import cuba_network

    sim = cuba_network(n).build(threads=threads, progress=False)
    sim.run(duration=10.0)  # warm
    latencies, steps = [], []
    for _ in range(tries):
        sim.reset()
        sent = {}

        def interrupt(sent=sent):
            sent["t"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(random.uniform(0.3, 1.0), interrupt)
        timer.start()
        try:
            sim.run(duration=3.6e6)  # an hour of biological time
        except KeyboardInterrupt:
            latencies.append(time.perf_counter() - sent["t"])
            steps.append(sim.step)
        timer.join()
    sim.close()
    return {"n": n, "latencies_s": latencies, "steps_done": steps}


def cli_latencies(tries: int, threads: int) -> dict:
    base = [sys.executable, "-m", "spikeforge.cli", "-v", "run", str(REPO / "examples" / "cuba.yaml"),
            "--threads", str(threads)]
    subprocess.run([*base, "--duration", "1", "-q"], capture_output=True, check=True)  # build once
    cmd = [*base, "--duration", "1e7", "--json"]
    latencies, steps, codes = [], [], []
    for _ in range(tries):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "running" in line:
                break
        time.sleep(random.uniform(0.3, 1.0))
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        latencies.append(time.perf_counter() - t0)
        codes.append(proc.returncode)
        steps.append(json.loads(out)["steps"] if out.strip() else None)
    return {"latencies_s": latencies, "exit_codes": codes, "steps_done": steps}


def chunk_overhead(duration: float, repeats: int, threads: int) -> dict:
    from spikeforge.networks import cuba_network

    sim = cuba_network(4000).build(threads=threads, progress=False)
    steps = int(round(duration / sim.dt))
    chunked, single = [], []
    for _ in range(repeats):
        sim.reset()
        t0 = time.perf_counter()
        sim.run(steps=steps)
        chunked.append(time.perf_counter() - t0)
        spikes_chunked = sim.spike_counts()
        sim.reset()
        t0 = time.perf_counter()
        sim.backend.run(steps)
        single.append(time.perf_counter() - t0)
        assert sim.spike_counts() == spikes_chunked, "chunked and single runs differ"
    sim.close()
    return {"steps": steps, "chunked_s": chunked, "single_s": single,
            "overhead": min(chunked) / min(single) - 1.0}


def main():
    args = parse_args()
    info = machine_info()
    print(describe_machine(info))
    api = [api_latencies(n, args.tries, args.threads) for n in args.sizes]
    cli = cli_latencies(args.tries, args.threads)
    over = chunk_overhead(args.duration, args.repeats, args.threads)
    rows = []
    for r in api:
        lat = r["latencies_s"]
        rows.append([f"Python API, CUBA {r['n']}", len(lat), fmt_s(statistics.median(lat)),
                     fmt_s(max(lat)), verdict(max(lat) < TARGET_LATENCY_S)])
    lat = cli["latencies_s"]
    ok = max(lat) < TARGET_LATENCY_S and all(c == 130 for c in cli["exit_codes"])
    rows.append(["`spikeforge run` (to process exit), CUBA 4000", len(lat), fmt_s(statistics.median(lat)),
                 fmt_s(max(lat)), verdict(ok)])
    print_table(["Ctrl-C", "tries", "median latency", "max", f"< {TARGET_LATENCY_S} s"], rows,
                title="Ctrl-C latency")
    print_table(["run", "steps", "sim.run (chunks)", "one backend.run", "overhead"],
                [[f"CUBA 4000, {args.duration:g} ms", over["steps"], fmt_s(min(over["chunked_s"])),
                  fmt_s(min(over["single_s"])), f"{100 * over['overhead']:+.1f} %"]],
                title="Cost of running in chunks (best of repeats)")
    if args.json:
        write_json(args.json, {"machine": info, "api": api, "cli": cli, "chunk_overhead": over})


if __name__ == "__main__":
    main()
