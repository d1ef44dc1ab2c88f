"""Ctrl-C latency of a long run, and what running in chunks costs.

Measures, on the CUBA network (``spikeforge.networks.cuba_network``, batch 1):

* Python API: a run of hours of biological time is interrupted by SIGINT sent from a
  timer thread of the same process; latency = time from ``os.kill`` to the
  ``KeyboardInterrupt`` reaching the caller (``sim.step`` then holds the steps done).
  For each ``--sizes`` (a bigger network has slower steps, so fewer per chunk).
* CLI: ``spikeforge -v run examples/cuba.yaml --duration 1e7 --json`` in a subprocess;
  SIGINT once the run has started (its ``running ...`` log line plus a random
  0.3-1.0 s); latency = time from the signal to the ``interrupted at`` line on stderr
  (the run has stopped), and to the process's exit (after it printed the partial result;
  Python's interpreter shutdown, mostly sympy's, is included).
* Chunking overhead: ``sim.run(duration)`` (chunks of ~0.1 s, NaN/inf check at the end)
  against a single ``backend.run(steps)`` call for the same steps, in process CPU time
  (median of ``--repeats``, alternating); and the fixed cost of ``sim.run(steps=1)``.

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
    p.add_argument("--repeats", type=int, default=9, help="timed runs for the overhead (default 9)")
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
    stopped, exited, steps, codes = [], [], [], []
    for _ in range(tries):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "running" in line:
                break
        time.sleep(random.uniform(0.3, 1.0))
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        stop = None
        for line in proc.stderr:
            if "interrupted at" in line:  # the run has stopped; the result is printed next
                stop = time.perf_counter() - t0
                break
        out, _ = proc.communicate(timeout=60)
        exited.append(time.perf_counter() - t0)
        stopped.append(stop)
        codes.append(proc.returncode)
        steps.append(json.loads(out)["steps"] if out.strip() else None)
    return {"stopped_s": stopped, "exited_s": exited, "exit_codes": codes, "steps_done": steps}


def chunk_overhead(duration: float, repeats: int, threads: int) -> dict:
    """Process CPU time (less disturbed by other processes than wall time) of a run in
    chunks and of one backend call, alternating; and the fixed cost of a 1-step run."""
    from spikeforge.networks import cuba_network

    sim = cuba_network(4000).build(threads=threads, progress=False)
    steps = int(round(duration / sim.dt))
    chunked, single = [], []
    for k in range(repeats):
        for mode in ("chunked", "single") if k % 2 else ("single", "chunked"):
            sim.reset()
            t0 = time.process_time()
            if mode == "chunked":
                sim.run(steps=steps)
                chunked.append(time.process_time() - t0)
                spikes_chunked = sim.spike_counts()
            else:
                sim.backend.run(steps)
                single.append(time.process_time() - t0)
                spikes_single = sim.spike_counts()
        assert spikes_single == spikes_chunked, "chunked and single runs differ"
    calls = 200 if steps > 1000 else 20
    sim.reset()
    t0 = time.process_time()
    for _ in range(calls):
        sim.run(steps=1)
    per_run = (time.process_time() - t0) / calls
    t0 = time.process_time()
    for _ in range(calls):
        sim.backend.run(1)
    per_call = (time.process_time() - t0) / calls
    sim.close()
    return {"steps": steps, "chunked_cpu_s": chunked, "single_cpu_s": single,
            "overhead": statistics.median(chunked) / statistics.median(single) - 1.0,
            "one_step_run_s": per_run, "one_step_backend_call_s": per_call}


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
    lat = [t if t is not None else float("inf") for t in cli["stopped_s"]]
    ok = max(lat) < TARGET_LATENCY_S and all(c == 130 for c in cli["exit_codes"])
    rows.append(["`spikeforge run`, CUBA 4000: run stopped (`interrupted at` line)", len(lat),
                 fmt_s(statistics.median(lat)), fmt_s(max(lat)), verdict(ok)])
    lat = cli["exited_s"]
    rows.append(["`spikeforge run`, CUBA 4000: result printed, process exited (130)", len(lat),
                 fmt_s(statistics.median(lat)), fmt_s(max(lat)), "-"])
    print_table(["Ctrl-C", "tries", "median latency", "max", f"< {TARGET_LATENCY_S} s"], rows,
                title="Ctrl-C latency")
    print_table(["run", "steps", "sim.run (chunks)", "one backend.run", "overhead"],
                [[f"CUBA 4000, {args.duration:g} ms", over["steps"], fmt_s(statistics.median(over["chunked_cpu_s"])),
                  fmt_s(statistics.median(over["single_cpu_s"])), f"{100 * over['overhead']:+.1f} %"]],
                title="Cost of running in chunks (process CPU time, median of repeats)")
    print(f"A 1-step run costs {fmt_s(over['one_step_run_s'])} of CPU time against "
          f"{fmt_s(over['one_step_backend_call_s'])} for the bare backend call (checks and bookkeeping of a run).")
    if args.json:
        write_json(args.json, {"machine": info, "api": api, "cli": cli, "chunk_overhead": over})


if __name__ == "__main__":
    main()
