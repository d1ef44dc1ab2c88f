"""The time-parallel method over long sequences: the whole sequence at once against chunks.

The network of benchmarks/parallel_vs_eprop.py (40 Poisson inputs -> 100 LIF without reset ->
2 leaky readouts, per-step cross-entropy over the last 10 % of the trial, Adam, float), minibatch
32, at ``--steps`` (default 10,000) run whole and in chunks of ``--chunk`` steps (default 1,000:
``ParallelCompiler(chunk=...)``). Each case in a fresh process, one after the other in one run:

* seconds per minibatch (forward + gradients + Adam step), the median over ``--repeats`` timed
  minibatches after a warm-up one;
* memory: ``CompiledParallel.memory()`` (the arrays of the kernels' steps, and in chunks the
  boundary states the host keeps), the training's share of the peak resident set (the peak while
  training minus the resident set before it) and the process's peak;
* the largest relative difference of the summed gradients from the whole sequence's (the same
  batch), and the load average and other processes' CPU use while timing.

    python benchmarks/parallel_chunks.py [--json out.json]     # about a minute on 2 cores
    python benchmarks/parallel_chunks.py --quick               # smoke run, seconds
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402  (only the standard library at module level)
    BenchmarkError,
    LoadMeter,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_s,
    git_revision,
    machine_info,
    peak_rss_mb,
    print_table,
    run_json,
    thread_env,
    write_json,
)


def worker(cfg: dict) -> dict:
    import numpy as np
    from eprop_vs_snntorch import DT, N_IN, N_OUT, TAU_OUT, make_data, start_memory_window
    from parallel_vs_eprop import _paralif, _weights

    from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
    from spikeforge.network import Network
    from spikeforge.training.objectives import Adam
    from spikeforge.training.parallel import ParallelCompiler

    steps, batch, repeats = cfg["steps"], cfg["batch"], cfg["repeats"]
    x, labels, mask = make_data(steps, batch * (repeats + 1))
    w_in, w_out = _weights()
    net = Network("bench_parallel_chunks", dt=DT, batch_size=batch, precision="float")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", 100, _paralif())
    net.add_projection("inp_h", "inp", "h", STATIC, ONE_STEP_CURR, wu_init={"w": w_in.ravel()})
    net.add_population("out", N_OUT, LEAKY_READOUT, {"tau_m": TAU_OUT, "bias": [0.0] * N_OUT})
    net.add_projection("h_out", "h", "out", STATIC, ONE_STEP_CURR, wu_init={"w": w_out.ravel()})
    compiled = ParallelCompiler(loss="xent", optimiser=Adam(lr=1e-3), chunk=cfg["chunk"]).compile(
        net, inputs="inp", hidden=["h"], readout="out", n_steps=steps, threads=cfg["threads"])
    mem = compiled.memory()
    out = {"chunk": cfg["chunk"], "steps": steps, "setup_peak_rss_mb": peak_rss_mb(),
           "kept_bytes": sum(mem.values()), "boundary_bytes": mem.get("chunk boundaries", 0)}
    mask = mask.astype(np.float64)
    out["rss_before_mb"] = start_memory_window()
    first = compiled.gradients(x[:, :batch], mask, labels=labels[:batch])  # the warm-up batch, not stepped
    np.savez(cfg["grads"], **{k: v.sum(axis=0, dtype=np.float64) for k, v in first["grads"].items()})
    meter, per_batch = LoadMeter(), []
    with meter.measure():
        for k in range(1, repeats + 1):
            sl = slice(k * batch, (k + 1) * batch)
            t0 = time.perf_counter()
            compiled.gradients(x[:, sl], mask, labels=labels[sl])
            compiled.apply_gradients()
            per_batch.append(time.perf_counter() - t0)
    out.update(seconds_per_batch=statistics.median(per_batch), seconds_per_batch_all=per_batch,
               training_peak_rss_mb=peak_rss_mb(), loadavg=os.getloadavg()[0], **meter.as_dict())
    out["training_mb"] = out["training_peak_rss_mb"] - out["rss_before_mb"]
    compiled.close()
    return out


def main(argv=None) -> int:
    import numpy as np

    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="sequence length in steps of 1 ms (default 10000)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[1000], help="chunk lengths (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument("--batch", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed minibatches per case (default 3)")
    args = finish_args(parser.parse_args(argv))
    if args.quick:
        args.steps, args.chunk, args.batch, args.repeats = 50, [16], 4, 1
    info = machine_info()
    print(describe_machine(info))
    results: dict = {"machine": info, "git": git_revision(), "args": vars(args), "cases": {},
                     "loadavg_start": os.getloadavg(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    grads = {}
    for chunk in [None, *args.chunk]:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"parallel_chunks_{os.getpid()}_{chunk}.npz"
        cfg = {"steps": args.steps, "batch": args.batch, "repeats": args.repeats, "threads": args.threads,
               "chunk": chunk, "grads": str(path)}
        try:
            res = run_json([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                           env=thread_env(args.threads), timeout=3600)
            with np.load(path) as g:
                grads[chunk] = dict(g)
            path.unlink()
        except BenchmarkError as exc:
            print(f"\nchunk {chunk} failed: {exc}")
            res = {"error": str(exc)}
        results["cases"][str(chunk)] = res
    whole = grads.get(None)
    rows = []
    for chunk in [None, *args.chunk]:
        r = results["cases"][str(chunk)]
        if chunk in grads and whole is not None:
            r["gradient_rel_diff"] = max(float(np.abs(grads[chunk][k] - w).max() / np.abs(w).max())
                                         for k, w in whole.items())
        rows.append([chunk or "whole", fmt_s(r.get("seconds_per_batch")), fmt((r.get("kept_bytes") or 0) / 2 ** 20),
                     fmt((r.get("boundary_bytes") or 0) / 2 ** 20), fmt(r.get("training_mb")),
                     fmt(r.get("training_peak_rss_mb")), fmt(r.get("gradient_rel_diff")), fmt(r.get("loadavg")),
                     fmt(r.get("other_cores"))])
    results["loadavg_end"] = os.getloadavg()
    print_table(["chunk", "s/batch", "kept MiB", "of it boundaries MiB", "training MiB", "peak MiB",
                 "gradient rel. diff", "load avg", "other cores"], rows,
                title=f"{args.steps} steps, batch {args.batch}, {args.threads} thread(s)")
    print(f"\nload average {results['loadavg_start'][0]:.2f} at the start, {results['loadavg_end'][0]:.2f} at the end")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    sys.exit(main())
