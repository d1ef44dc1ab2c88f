"""Does e-prop learn? The three tasks of the e-prop issue, from the example YAML files.

* ``digits``: scikit-learn's 8x8 digits, spike-encoded (``examples/digits.yaml``);
  target: >= 90 % test accuracy.
* ``evidence``: evidence accumulation, 7 cues (Bellec et al. 2020, Fig. 3), with the ALIF
  network of ``examples/evidence_accumulation.yaml`` (target: >= 85 % test accuracy) and
  ``evidence_lif``: the same network, same size and settings, with LIF neurons only (no
  threshold adaptation), which should do clearly worse.
* ``pattern``: pattern generation (Bellec et al. 2020, Fig. 2), a regression
  (``examples/pattern_generation.yaml``); target: normalised MSE <= 0.2.
* ``evidence_full`` (only when asked for with ``--tasks``): evidence accumulation in the
  paper's full setting (dt = 1 ms, 1050 ms delay, 2250 steps per trial) with the network of
  ``examples/evidence_accumulation.yaml`` (``r_m`` rescaled to keep ``r_m dt``), trained for
  at most ``--full-minutes`` minutes of wall time or ``--full-epochs`` epochs of 40
  optimiser steps; ``evidence_full_lif`` is the same with LIF neurons, ``evidence_full_lsnn``
  with half LIF, half ALIF neurons (Bellec's LSNN: ALIF with beta = 0 in the first half).

Prints a table: task, setting, score, epochs, optimiser steps, seconds, training samples
per second, mean hidden rate. ``--quick`` is a smoke run of a few seconds (tiny data, one
epoch: the scores mean nothing).

    python benchmarks/eprop_learning.py [--json out.json]       # ~15 min on 2 cores
    python benchmarks/eprop_learning.py --quick
    python benchmarks/eprop_learning.py --tasks evidence_full evidence_full_lif --full-epochs 25
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import common_parser, describe_machine, finish_args, fmt, machine_info, print_table, write_json  # noqa: E402

EXAMPLES = REPO / "examples"
TASKS = ("digits", "evidence", "evidence_lif", "pattern", "evidence_full", "evidence_full_lif", "evidence_full_lsnn")
DEFAULT_TASKS = ("digits", "evidence", "evidence_lif", "pattern")


def _job(name: str):
    from spikeforge.training.config import load_training

    return load_training(EXAMPLES / f"{name}.yaml")


def _quick(job, epochs: int | None = None):
    """Tiny data and one epoch: a smoke run."""
    n = min(8, len(job.train))
    return dataclasses.replace(job, train=job.train[:n], test=job.test[: min(8, len(job.test))], epochs=epochs or 1)


def _lif_variant(config):
    """The same network with LIF neurons (reset by subtraction, no adaptation)."""
    from spikeforge.models.builtins import LIF_SUBTRACTIVE

    params = {k: v for k, v in config.hidden_params.items() if k in LIF_SUBTRACTIVE.params}
    return dataclasses.replace(config, hidden_model=LIF_SUBTRACTIVE, hidden_params=params, name=config.name + "_lif")


def _lsnn_variant(config):
    """Bellec's LSNN: the same ALIF layer with beta = 0 (plain LIF) in its first half."""
    import numpy as np

    half = config.n_hidden // 2
    beta = np.r_[np.zeros(half), np.full(config.n_hidden - half, config.hidden_params["beta"])]
    return dataclasses.replace(config, hidden_params={**config.hidden_params, "beta": beta},
                               name=config.name + "_lsnn")


def _full_evidence(job, quick: bool):
    """The paper's setting: dt = 1 ms, the default 1050 ms delay (2250 steps a trial)."""
    from spikeforge.training.datasets import evidence_accumulation

    cfg = job.config
    params = dict(cfg.hidden_params)
    if "r_m" in params:
        params["r_m"] = params["r_m"] * cfg.dt / 1.0  # keep (1 - alpha) r_m ~ r_m dt / tau_m
    n_train, n_test = (len(job.train), len(job.test)) if not quick else (8, 8)
    seed = job.train.info.get("seed", 0)
    full = evidence_accumulation(n_train + n_test, seed, dt=1.0)
    train, test = full[:n_train], full[n_train:]
    config = dataclasses.replace(cfg, dt=1.0, hidden_params=params, name=cfg.name + "_full")
    return dataclasses.replace(job, config=config, train=train, test=test)


def _describe(job, task: str) -> str:
    c = job.config
    p = c.hidden_params
    parts = [f"{c.n_hidden} {c.hidden_model.name}" + (" (LSNN)" if task.endswith("lsnn") else "")]
    if task.startswith("digits"):
        parts.append(f"{job.train.info.get('encoding', '?')} coding")
    if task.startswith("evidence"):
        delay = job.train.info["recall_window"][0] - len(job.train.info["cue_windows"]) * 150.0
        parts.append(f"delay {delay:g} ms")
    parts.append(f"dt {c.dt:g} ms")
    parts.append(f"{job.train.n_steps} steps")
    keys = [k for k in ("r_m", "v_th", "tau_m", "tau_a", "beta") if k in p]

    def value(v):  # a number, or per-neuron values as runs: "0 x50 / 0.1 x50"
        if isinstance(v, (int, float)):
            return f"{v:g}"
        runs = []
        for x in v:
            if runs and runs[-1][0] == x:
                runs[-1][1] += 1
            else:
                runs.append([x, 1])
        return " / ".join(f"{x:g} x{n}" for x, n in runs)

    parts.append(", ".join(f"{k} {value(p[k])}" for k in keys))
    if c.reg_rate:
        parts.append(f"rate reg {c.reg_rate:g} @ {c.reg_target_hz:g} Hz")
    lr = job.trainer_options["lr"]
    parts.append(f"batch {job.trainer_options['batch_size']}, lr {lr:g}" if isinstance(lr, (int, float))
                 else f"batch {job.trainer_options['batch_size']}, lr {lr}")
    return "; ".join(parts)


def run_task(task: str, quick: bool, full_minutes: float, threads: int | None, full_epochs: int | None = None) -> dict:
    from spikeforge.training.datasets import normalized_mse
    from spikeforge.training.trainer import Trainer

    yaml = {"digits": "digits", "evidence": "evidence_accumulation", "evidence_lif": "evidence_accumulation",
            "evidence_full": "evidence_accumulation", "evidence_full_lif": "evidence_accumulation",
            "evidence_full_lsnn": "evidence_accumulation",
            "pattern": "pattern_generation"}[task]
    job = _job(yaml)
    if task == "evidence_full_lsnn":
        job = dataclasses.replace(job, config=_lsnn_variant(job.config))
    if task in ("evidence_lif", "evidence_full_lif"):
        job = dataclasses.replace(job, config=_lif_variant(job.config))
    full = task.startswith("evidence_full")
    if full:
        job = _full_evidence(job, quick)
        job = dataclasses.replace(job, epochs=full_epochs or 10**6)  # else stopped by the time budget
    if quick:
        job = _quick(job, epochs=2 if task == "pattern" else 1)
    trainer = Trainer(job.config, threads=threads, **job.trainer_options)
    budget = full_minutes * 60.0 if full and not quick else math.inf
    t0 = time.perf_counter()

    def stop(tr, epoch, logs):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
        print(f"[{task}] epoch {epoch}, {time.perf_counter() - t0:.0f} s: {shown}", file=sys.stderr, flush=True)
        return time.perf_counter() - t0 < budget

    trainer.fit(job.train, epochs=job.epochs, progress=False, callbacks=[stop] if budget < math.inf else ())
    seconds = time.perf_counter() - t0
    ev = trainer.evaluate(job.test)
    res = {"task": task, "setting": _describe(job, task), "epochs": trainer.epoch, "steps": trainer.step,
           "seconds": seconds, "samples_per_second": trainer.epoch * len(job.train) / seconds,
           "train_samples": len(job.train), "test_samples": len(job.test), "test": ev,
           "history": trainer.history}
    if job.config.loss == "xent":
        res["metric"], res["score"] = "test accuracy", ev["accuracy"]
        res["target"] = {"digits": 0.90, "evidence": 0.85, "evidence_full": 0.85}.get(task)
        res["met"] = None if res["target"] is None else ev["accuracy"] >= res["target"]
    else:
        pred = trainer.predict(job.test)  # (steps, samples, outputs)
        nmse = normalized_mse(pred, job.test.to_dense().y)
        res["metric"], res["score"], res["target"] = "test NMSE", nmse, 0.2
        res["met"] = nmse <= 0.2
    res["rate_hz"] = ev["rate_hz"]
    return res


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS),
                        help=f"which tasks (default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--full-minutes", type=float, default=10.0,
                        help="wall-time budget of evidence_full(_lif), minutes (default 10)")
    parser.add_argument("--full-epochs", type=int, default=None,
                        help="stop evidence_full(_lif) after this many epochs (40 optimiser steps each)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    args = finish_args(parser.parse_args(argv))
    info = machine_info()
    print(describe_machine(info), flush=True)
    results = []
    for task in args.tasks:
        print(f"\n{task} ...", flush=True)
        res = run_task(task, args.quick, args.full_minutes, args.threads, args.full_epochs)
        results.append(res)
        print(f"  {res['metric']} {res['score']:.3f} after {res['epochs']} epochs ({res['steps']} steps), "
              f"{res['seconds']:.1f} s", flush=True)
    by_task = {r["task"]: r for r in results}
    for lif_task, alif_task in (("evidence_lif", "evidence"), ("evidence_full_lif", "evidence_full")):
        if lif_task in by_task and alif_task in by_task:  # "clearly worse": at least 10 points below ALIF
            lif, alif = by_task[lif_task], by_task[alif_task]
            lif["target"] = "ALIF - 10 points"
            lif["met"] = lif["score"] <= alif["score"] - 0.10
    if args.quick:
        for r in results:
            r["met"] = None
    rows = []
    for r in results:
        score = f"{100 * r['score']:.1f} %" if r["metric"].endswith("accuracy") else f"{r['score']:.3f}"
        if r["target"] is None or isinstance(r["target"], str):
            target = "<= " + r["target"] if r["target"] else "-"
        elif r["metric"].endswith("accuracy"):
            target = f">= {100 * r['target']:.0f} %"
        else:
            target = f"<= {r['target']:g}"
        met = "-" if r["met"] is None else ("met" if r["met"] else "NOT met")
        rows.append([r["task"], r["setting"], r["metric"], score, target, met, r["epochs"], r["steps"],
                     f"{r['seconds']:.1f}", fmt(r["samples_per_second"]), fmt(r["rate_hz"])])
    print_table(["task", "setting", "metric", "score", "target", "", "epochs", "opt. steps", "seconds",
                 "train samples/s", "rate Hz"], rows,
                title="e-prop on the CPU" + (" (--quick: smoke run, scores mean nothing)" if args.quick else ""),
                align="llllllrrrrr")
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
