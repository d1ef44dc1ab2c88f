"""CUBA on the cuda-emu backend: the generated CUDA kernels run on the CPU.

cuda-emu is a correctness tool (CI runs every CUDA kernel through it): this records what
it costs, next to the cpu backend on the same network, and checks that both give the
same spikes (with one thread the emulator fills spike queues in neuron order, like the
CPU backend, so the results are bit-identical).

    python benchmarks/cuda_emu_cuba.py            # CUBA 4000 neurons, 0.1 s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import common_parser, finish_args, machine_info, print_table, write_json  # noqa: E402


def main(argv=None):
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=100.0, help="biological time in ms (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="emulator threads (default 1: deterministic)")
    args = finish_args(parser.parse_args(argv))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np

    from spikeforge.networks import cuba_network

    n, duration = (400, 10.0) if args.quick else (4000, args.duration)
    rows, raw = [], {"machine": machine_info(), "n": n, "duration_ms": duration, "threads": args.threads}
    results = {}
    for backend in ("cpu", "cuda-emu"):
        net = cuba_network(n=n)
        t0 = time.perf_counter()
        sim = net.build(backend=backend, threads=args.threads)
        build = time.perf_counter() - t0
        sim.run(duration=duration)
        steps = sim.step
        spikes = sim.spike_counts()
        results[backend] = sim
        raw[backend] = {"build_seconds": build, "run_seconds": sim.run_seconds, "steps": steps, "spikes": spikes}
        per_thread = sim.run_seconds / (steps * n) * 1e6
        rows.append([backend, f"{build:.2f} s", f"{sim.run_seconds:.3f} s", f"{sim.run_seconds / steps * 1e3:.3f} ms",
                     f"{per_thread:.3f} µs", sum(spikes.values())])
    same = all(np.array_equal(results["cpu"].spikes(p)[0][1], results["cuda-emu"].spikes(p)[0][1])
               for p in ("exc", "inh"))
    raw["identical_spikes"] = bool(same)
    print_table(["backend", "build", "run", "per step", "per neuron-step", "spikes"], rows,
                title=f"CUBA {n} neurons, {duration:g} ms, batch 1, {args.threads} thread(s)")
    print(f"\nspikes identical on cpu and cuda-emu: {same}")
    if args.json:
        write_json(args.json, raw)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
