"""Time-parallel training on sklearn's digits shown pixel by pixel (sequential digits).

The 64 pixels of each 8x8 digit arrive one after the other, row by row, each held for ``k``
steps (``digits(encoding="pixels", hold=k, levels=4)``: 4 input channels, a thermometer code
of the grey level), so a trial has T = 64 k steps. The network is
``examples/digits_pixels_parallel.yaml`` (4 -> 128 -> 128 LIF without reset -> 10, time
constants log-spaced from 2 to 64 ms per layer, a constant input per neuron, the readout read
at the last step), with, for ``k`` > 1, every time constant (hidden and readout) times ``k``:
the same network in slow motion (``r_m = 1``: v is an exponentially weighted mean of its
input), so the accuracy should not depend on ``k`` and the time per epoch should be
proportional to T.

Prints, per k: test accuracy (the last epoch's and the best), seconds per epoch (the median of
epochs 2..n: the first compiles), milliseconds per epoch per step, hidden spikes per test
sample, and the load average.

    python benchmarks/parallel_pixels.py --ks 1 10 100 --threads 1
    python benchmarks/parallel_pixels.py --ks 1 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import git_revision  # noqa: E402

EXAMPLE = REPO / "examples" / "digits_pixels_parallel.yaml"


def job_at(k: int, args):
    """``examples/digits_pixels_parallel.yaml`` at slow-down ``k``: each pixel held for ``k``
    steps, every time constant (hidden and readout) times ``k``."""
    import yaml

    from spikeforge.training.config import load_training

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data"]["options"]["hold"] = k
    for pop in doc["network"]["populations"].values():
        tau = pop.get("params", {}).get("tau_m")
        if isinstance(tau, str):
            pop["params"]["tau_m"] = f"({tau}) * {k}"
        elif tau is not None:
            pop["params"]["tau_m"] = float(tau) * k
    doc["training"]["epochs"] = args.epochs
    doc["name"] = f"digits_pixels_k{k}"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"digits_pixels_k{k}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_training(path)


def run(k: int, args) -> dict:
    from spikeforge.training.trainer import Trainer

    job = job_at(k, args)
    train, test = job.train, job.test
    trainer = Trainer(job.config, threads=args.threads, **job.trainer_options)
    per_epoch, accs = [], []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        trainer.fit(train, epochs=epoch + 1, progress=False)
        per_epoch.append(time.perf_counter() - t0)
        if k >= args.eval_last_from and epoch + 1 < args.epochs:  # long trials: tested after the last epoch only
            print(f"  k={k} epoch {epoch + 1}: train loss {trainer.history[-1]['train_loss']:.3f}  "
                  f"{per_epoch[-1]:.1f} s  load {os.getloadavg()[0]:.2f}", flush=True)
            continue
        ev = trainer.evaluate(test)
        accs.append(ev["accuracy"])
        spikes = ev["rate_hz"] * trainer._io.n_hidden * test.n_steps * test.dt / 1000.0
        print(f"  k={k} epoch {epoch + 1}: train loss {trainer.history[-1]['train_loss']:.3f} test "
              f"{100 * ev['accuracy']:.1f} % hidden spikes/sample {spikes:.0f}  {per_epoch[-1]:.1f} s  "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    T = test.n_steps
    # the first epoch compiles the kernels: the median of the later ones
    s = float(np.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch))
    return {"k": k, "T": T, "test_accuracy": accs[-1], "best_accuracy": max(accs), "epochs": args.epochs,
            "s_per_epoch": s, "ms_per_epoch_per_step": 1000 * s / T, "epoch_s": per_epoch,
            "hidden_spikes_per_sample": spikes, "train_samples": len(train), "load": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eval-last-from", type=int, default=100,
                   help="from this k on, evaluate after the last epoch only (default 100)")
    p.add_argument("--epochs-long", type=int, default=None, help="epochs for k >= 100 (default: --epochs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(f"commit {git_revision()}  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"load {[round(x, 2) for x in os.getloadavg()]}  {vars(args)}", flush=True)
    rows = []
    base_epochs = args.epochs
    for k in args.ks:
        args.epochs = args.epochs_long if (k >= 100 and args.epochs_long) else base_epochs
        rows.append(run(k, args))
    print("\n| k | T | test accuracy (last / best) | epochs | s per epoch | ms per epoch per step | load |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['k']} | {r['T']} | {100 * r['test_accuracy']:.1f} / {100 * r['best_accuracy']:.1f} % | "
              f"{r['epochs']} | {r['s_per_epoch']:.2f} | {r['ms_per_epoch_per_step']:.2f} | "
              f"{' '.join(f'{x:.2f}' for x in r['load'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
