"""Digits: hidden spikes per sample and deterministic evaluation of the time-parallel method.

Trains, on sklearn's digits as the examples encode them (latency, 40 ms trials, 1,438 training
/ 359 test digits, 64 -> 512 -> 10):

* ``eprop``: ``examples/digits.yaml`` (e-prop, LIF with reset, firing-rate regularisation);
* ``first_crossing``: ``examples/digits_first_crossing.yaml`` (time-parallel, one spike per
  neuron at most, a rate penalty);
* ``threshold``: ``examples/digits_parallel.yaml`` (time-parallel, ParaLIF-D);
* ``bernoulli_sigmoid`` (SPSN-SB) and ``gumbel`` (SPSN-GS, hard): ``digits_parallel.yaml`` with
  ``training.spike`` set to the rule and a firing-rate regulariser (``--reg-rate``,
  ``--reg-hz``).

For each: test accuracy and hidden spikes per test sample (the evaluation's hidden rate times
neurons times trial length: the count of the trained network's hidden spikes on the same
359 test digits), and for the time-parallel ones the accuracy under the ``threshold`` rule on
the same weights (``Trainer.evaluate(test, spike="threshold")``: deterministic); a stochastic
rule's own evaluation is the mean (and spread) over ``--draws`` passes, each with new random
numbers. Then the reduction in hidden spikes of ``first_crossing`` against e-prop.

    python benchmarks/parallel_spikes.py --threads 1 [--json out.json]
    python benchmarks/parallel_spikes.py --jobs first_crossing bernoulli_sigmoid   # a subset
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

EXAMPLES = REPO / "examples"
JOBS = ("eprop", "first_crossing", "threshold", "bernoulli_sigmoid", "gumbel")


def _job(name: str, args):
    """The job of ``name``: an example, or digits_parallel.yaml with a stochastic rule appended to
    its ``training`` section (the file's last)."""
    from spikeforge.training.config import load_training

    if name in ("eprop", "first_crossing", "threshold"):
        return load_training(EXAMPLES / {"eprop": "digits.yaml", "first_crossing": "digits_first_crossing.yaml",
                                         "threshold": "digits_parallel.yaml"}[name])
    text = (EXAMPLES / "digits_parallel.yaml").read_text()
    text = text.replace("name: digits_parallel", f"name: digits_{name}")
    spike = name if name == "bernoulli_sigmoid" else "{rule: gumbel, hard: true}"
    text += (f"  spike: {spike}\n  regularisation: {{rate: {args.reg_rate}, target_hz: {args.reg_hz}}}\n"
             f"  epochs: {args.epochs}\n" if args.epochs else
             f"  spike: {spike}\n  regularisation: {{rate: {args.reg_rate}, target_hz: {args.reg_hz}}}\n")
    if args.epochs:
        text = text.replace("  epochs: 10\n", "", 1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"digits_{name}.yaml"
        path.write_text(text)
        return load_training(path)


def _spikes_per_sample(ev: dict, trainer, test) -> float:
    """Hidden spikes per sample from the evaluation's mean hidden rate (Hz)."""
    return ev["rate_hz"] * trainer._io.n_hidden * test.n_steps * test.dt / 1000.0


def run(name: str, args) -> dict:
    from spikeforge.training.trainer import Trainer

    job = _job(name, args)
    trainer = Trainer(job.config, threads=args.threads, **job.trainer_options)
    t0 = time.perf_counter()
    trainer.fit(job.train, epochs=job.epochs, progress=False)
    seconds = time.perf_counter() - t0
    test = job.test
    row = {"job": name, "epochs": job.epochs, "train_s": seconds, "load": os.getloadavg()}
    stochastic = name in ("bernoulli_sigmoid", "gumbel")
    evs = [trainer.evaluate(test) for _ in range(args.draws if stochastic else 1)]
    acc = np.array([e["accuracy"] for e in evs])
    row["accuracy"], row["accuracy_sd"] = float(acc.mean()), float(acc.std())
    row["spikes"] = float(np.mean([_spikes_per_sample(e, trainer, test) for e in evs]))
    if name != "eprop":
        det = trainer.evaluate(test, spike="threshold")
        row["threshold_accuracy"] = det["accuracy"]
        row["threshold_spikes"] = _spikes_per_sample(det, trainer, test)
    print(f"  {name}: {json.dumps({k: v for k, v in row.items()})}", flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    p.add_argument("--draws", type=int, default=5, help="passes of a stochastic rule's evaluation")
    p.add_argument("--reg-rate", type=float, default=1.0, help="regulariser of the stochastic rules")
    p.add_argument("--reg-hz", type=float, default=20.0)
    p.add_argument("--epochs", type=int, default=0, help="epochs of the stochastic rules (default: the example's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(f"commit {git_revision()}  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"load {[round(x, 2) for x in os.getloadavg()]}  {vars(args)}", flush=True)
    rows = [run(name, args) for name in args.jobs]
    print("\n| job | epochs | train s | test accuracy (own rule) | hidden spikes / sample | "
          "accuracy, `threshold` rule | spikes, `threshold` rule | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        sd = f" ± {100 * r['accuracy_sd']:.1f}" if r["accuracy_sd"] else ""
        thr = (f"{100 * r['threshold_accuracy']:.1f} % | {r['threshold_spikes']:.0f}" if "threshold_accuracy" in r
               else "– | –")
        print(f"| {r['job']} | {r['epochs']} | {r['train_s']:.1f} | {100 * r['accuracy']:.1f}{sd} % | "
              f"{r['spikes']:.0f} | {thr} | {' '.join(f'{x:.2f}' for x in r['load'])} |")
    by = {r["job"]: r for r in rows}
    if "eprop" in by and "first_crossing" in by:
        fc, ep = by["first_crossing"], by["eprop"]
        print(f"\nfirst_crossing: {100 * fc['accuracy']:.1f} % (target >= 90 %), {fc['spikes']:.0f} hidden spikes per "
              f"sample against e-prop's {ep['spikes']:.0f}: {100 * (1 - fc['spikes'] / ep['spikes']):.1f} % fewer "
              "(target >= 70 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
