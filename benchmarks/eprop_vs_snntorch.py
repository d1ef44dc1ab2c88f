"""Training cost on the CPU: spikeforge's e-prop against snnTorch with BPTT.

The same network on both sides: 40 Poisson inputs -> 100 recurrent LIF neurons (reset by
subtraction, tau_m = 20 ms, threshold 0.6, dt = 1 ms, no refractoriness) -> 2 leaky
readout units (tau_out = 20 ms), per-step softmax cross-entropy over the last 10 % of the
trial, Adam, minibatch 32, the same weight initialisation (Gaussian, scaled by fan-in, no
self-connections) so that both fire at similar rates. For each sequence length (100, 500,
1000, 2000 steps) the script measures, each case in a fresh process:

* seconds per minibatch (forward + gradients + Adam step), the median over ``--repeats``
  epochs of ``--batches`` minibatches after one warm-up epoch (so nothing is compiled or
  allocated while timing);
* memory: the peak resident set of the process (VmHWM, i.e. ``ru_maxrss``), and the
  training's own share: the peak while training minus the resident set just before (the
  libraries, the network and the data set already loaded). The kernel's high-water mark
  is reset (``/proc/self/clear_refs``) after the setup, so that the setup's transients
  (building the data) do not hide it; where that is not possible the share is the peak
  minus the resident set before training.

e-prop (Bellec et al. 2020) computes gradients forward in time: its state is the
eligibility traces, whose size does not depend on the sequence length. BPTT keeps the
whole trajectory for the backward pass, so its memory grows with the sequence length.

spikeforge runs in this interpreter, snnTorch in the virtual environment
``benchmarks/.env-torch`` (create it once)::

    python -m venv benchmarks/.env-torch
    benchmarks/.env-torch/bin/pip install torch==2.13.0 snntorch numpy   # CPU wheel of torch

Both sides use all usable cores (``--threads``): spikeforge spreads the minibatch over
OpenMP threads, torch its operators over intra-op threads.

    python benchmarks/eprop_vs_snntorch.py [--json out.json]   # ~1 min on 2 cores
    python benchmarks/eprop_vs_snntorch.py --quick             # smoke run, seconds
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402  (only the standard library at module level)
    BenchmarkError,
    LoadMeter,
    available_threads,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_s,
    machine_info,
    peak_rss_mb,
    print_table,
    run_json,
    thread_env,
    write_json,
)

TORCH_PYTHON = HERE / ".env-torch" / "bin" / "python"
N_IN, N_HIDDEN, N_OUT = 40, 100, 2
TAU_M, TAU_OUT, V_TH, DT = 20.0, 20.0, 0.6, 1.0
INPUT_RATE_HZ = 20.0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_memory_window() -> float:
    """Reset the peak-RSS mark (Linux >= 4.0) and return the current RSS, MiB."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS") / 1024.0


def make_data(steps: int, n_samples: int, seed: int = 0):
    """Poisson input spikes (steps, n_samples, N_IN), random labels, the readout mask."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.random((steps, n_samples, N_IN)) < INPUT_RATE_HZ * DT / 1000.0).astype(np.float32)
    labels = rng.integers(0, N_OUT, n_samples)
    mask = np.zeros(steps, dtype=bool)
    mask[steps - max(1, steps // 10):] = True
    return x, labels, mask


# --------------------------------------------------------------------------- spikeforge worker


def spike_dataset(steps: int, n_samples: int):
    """:func:`make_data` as a SpikeDataset (the spikes only), readout window from the mask."""
    import numpy as np

    from spikeforge.training.datasets import SpikeDataset

    x, labels, mask = make_data(steps, n_samples)
    sample, step, channel = np.nonzero(x.transpose(1, 0, 2))  # sample-major
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=x.shape[1]))])
    first = int(np.argmax(mask))
    return SpikeDataset(step * DT, channel, offsets, n_inputs=N_IN, n_outputs=N_OUT, duration=steps * DT, dt=DT,
                        labels=labels, readout_window=(first * DT, steps * DT))


def time_fit(trainer, data, batches: int, repeats: int, out: dict) -> dict:
    """Seconds per minibatch of ``trainer.fit`` (median of ``repeats`` epochs after a warm-up
    epoch), the firing rate, the other load and the memory window, added to ``out``."""
    out["rss_before_mb"] = start_memory_window()
    trainer.fit(data, epochs=1, progress=False)  # warm-up: sizes the per-batch arrays
    meter = LoadMeter()
    with meter.measure():
        trainer.fit(data, epochs=1 + repeats, progress=False)
    per_batch = [h["seconds"] / batches for h in trainer.history[1:]]
    out.update(seconds_per_batch=statistics.median(per_batch), seconds_per_batch_all=per_batch,
               rate_hz=trainer.history[-1]["train_rate_hz"], training_peak_rss_mb=peak_rss_mb(), **meter.as_dict())
    out["peak_rss_mb"] = max(out["setup_peak_rss_mb"], out["training_peak_rss_mb"])
    out["training_mb"] = out["training_peak_rss_mb"] - out["rss_before_mb"]
    return out


def eprop_worker(cfg: dict) -> dict:
    from spikeforge.models.builtins import LIF_SUBTRACTIVE
    from spikeforge.training.model import EpropConfig
    from spikeforge.training.trainer import Trainer

    steps, batch, batches = cfg["steps"], cfg["batch"], cfg["batches"]
    data = spike_dataset(steps, batch * batches)
    net = EpropConfig(N_IN, N_HIDDEN, N_OUT, LIF_SUBTRACTIVE, {"tau_m": TAU_M, "v_th": V_TH, "r_m": TAU_M / DT},
                      tau_out=TAU_OUT, dt=DT, name="bench_eprop_vs_snntorch")
    trainer = Trainer(net, batch_size=batch, lr=1e-3, threads=cfg["threads"])
    out = {"side": "spikeforge e-prop", "steps": steps, "setup_peak_rss_mb": peak_rss_mb()}
    return time_fit(trainer, data, batches, cfg["repeats"], out)


# --------------------------------------------------------------------------- snnTorch worker


def torch_worker(cfg: dict) -> dict:
    import math

    import snntorch as snn
    import torch
    from snntorch import surrogate

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    steps, batch, batches = cfg["steps"], cfg["batch"], cfg["batches"]
    x_np, labels_np, mask_np = make_data(steps, batch * batches)
    x = torch.from_numpy(x_np)
    labels = torch.from_numpy(labels_np)
    window = [int(k) for k in mask_np.nonzero()[0]]
    alpha, kappa = math.exp(-DT / TAU_M), math.exp(-DT / TAU_OUT)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in = torch.nn.Linear(N_IN, N_HIDDEN, bias=False)
            self.lif = snn.RLeaky(beta=alpha, linear_features=N_HIDDEN, threshold=V_TH, reset_mechanism="subtract",
                                  spike_grad=surrogate.fast_sigmoid())
            self.fc_out = torch.nn.Linear(N_HIDDEN, N_OUT)

        def forward(self, xb, yb):
            spk, mem = self.lif.init_rleaky()
            y = torch.zeros(xb.shape[1], N_OUT)
            loss = 0.0
            spikes = 0.0
            start = window[0]
            for t in range(xb.shape[0]):
                spk, mem = self.lif(self.fc_in(xb[t]), spk, mem)
                y = kappa * y + (1 - kappa) * self.fc_out(spk)
                if t >= start:
                    loss = loss + torch.nn.functional.cross_entropy(y, yb, reduction="sum")
                spikes = spikes + spk.detach().sum()
            return loss / xb.shape[1], spikes

    net = Net()
    with torch.no_grad():  # spikeforge's initialisation (same statistics, so similar firing rates)
        net.fc_in.weight.normal_(0.0, 1.0 / math.sqrt(N_IN))
        w_rec = net.lif.recurrent.weight
        w_rec.normal_(0.0, 1.0 / math.sqrt(N_HIDDEN)).fill_diagonal_(0.0)
        if net.lif.recurrent.bias is not None:
            net.lif.recurrent.bias.zero_()
        net.fc_out.weight.normal_(0.0, 1.0 / math.sqrt(N_HIDDEN))
        net.fc_out.bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out = {"side": "snnTorch BPTT", "steps": steps, "torch": torch.__version__, "snntorch": snn.__version__,
           "setup_peak_rss_mb": peak_rss_mb()}
    del x_np
    out["rss_before_mb"] = start_memory_window()

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        spikes = 0.0
        for k in range(batches):
            sl = slice(k * batch, (k + 1) * batch)
            opt.zero_grad(set_to_none=True)
            loss, s = net(x[:, sl], labels[sl])
            loss.backward()
            opt.step()
            spikes += float(s)
        return (time.perf_counter() - t0) / batches, spikes

    epoch()  # warm-up
    meter = LoadMeter()
    per_batch = []
    with meter.measure():
        for _ in range(cfg["repeats"]):
            s, spikes = epoch()
            per_batch.append(s)
    rate = spikes / (batch * batches * N_HIDDEN * steps * DT / 1000.0)
    out.update(seconds_per_batch=statistics.median(per_batch), seconds_per_batch_all=per_batch, rate_hz=rate,
               training_peak_rss_mb=peak_rss_mb(), **meter.as_dict())
    out["peak_rss_mb"] = max(out["setup_peak_rss_mb"], out["training_peak_rss_mb"])
    out["training_mb"] = out["training_peak_rss_mb"] - out["rss_before_mb"]
    return out


# --------------------------------------------------------------------------- driver


def run_case(side: str, cfg: dict, timeout: float) -> dict:
    python = sys.executable if side == "eprop" else str(TORCH_PYTHON)
    cmd = [python, str(Path(__file__).resolve()), f"--worker-{side}", json.dumps(cfg)]
    return run_json(cmd, env=thread_env(cfg["threads"]), timeout=timeout)


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 500, 1000, 2000],
                        help="sequence lengths in steps of 1 ms (default 100 500 1000 2000)")
    parser.add_argument("--batch", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--batches", type=int, default=4, help="minibatches per timed epoch (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per case (default 3)")
    parser.add_argument("--threads", type=int, default=available_threads(), help="threads (default: all usable)")
    parser.add_argument("--no-snntorch", action="store_true", help="spikeforge only")
    args = finish_args(parser.parse_args(argv))
    if args.quick:
        args.steps, args.batches, args.repeats, args.batch = [20, 50], 1, 1, 8
    info = machine_info()
    print(describe_machine(info))
    sides = ["eprop"]
    if not args.no_snntorch:
        if TORCH_PYTHON.exists():
            sides.append("torch")
        else:
            print(f"\n{TORCH_PYTHON} not found: snnTorch skipped (see the docstring to create it)")
    results: dict = {"machine": info, "args": vars(args), "cases": {}}
    for side in sides:
        base = {"batch": args.batch, "batches": args.batches, "repeats": args.repeats, "threads": args.threads}
        for steps in args.steps:
            cfg = dict(base, steps=steps)
            try:
                res = run_case(side, cfg, timeout=1800)
            except BenchmarkError as exc:
                print(f"\n{side} at {steps} steps failed: {exc}")
                res = {"error": str(exc)}
            results["cases"].setdefault(side, {})[steps] = res
            print(f"  {side:6s} {steps:5d} steps: " + (fmt_s(res["seconds_per_batch"]) + " per batch, peak "
                  + fmt(res["peak_rss_mb"]) + " MiB, training " + fmt(res["training_mb"]) + " MiB"
                  if "error" not in res else "failed"), flush=True)

    def cell(side, steps, key):
        r = results["cases"].get(side, {}).get(steps, {})
        return r.get(key)

    rows = []
    for steps in args.steps:
        e, t = cell("eprop", steps, "seconds_per_batch"), cell("torch", steps, "seconds_per_batch")
        row = [steps, fmt_s(e), fmt(args.batch / e if e else None), fmt(cell("eprop", steps, "peak_rss_mb")),
               fmt(cell("eprop", steps, "training_mb"))]
        if "torch" in sides:
            row += [fmt_s(t), fmt(args.batch / t if t else None), fmt(cell("torch", steps, "peak_rss_mb")),
                    fmt(cell("torch", steps, "training_mb")), fmt(t / e if (t and e) else None)]
        rows.append(row)
    headers = ["steps", "e-prop s/batch", "e-prop samples/s", "e-prop peak MiB", "e-prop training MiB"]
    if "torch" in sides:
        headers += ["BPTT s/batch", "BPTT samples/s", "BPTT peak MiB", "BPTT training MiB", "BPTT/e-prop time"]
    print_table(headers, rows, title=f"{N_IN} inputs -> {N_HIDDEN} recurrent LIF -> {N_OUT} readout, batch "
                                     f"{args.batch}, {args.threads} threads (peak: the whole process; training: "
                                     f"peak while training minus the resident set just before)")
    loads = [r.get("other_cores") for s in results["cases"].values() for r in s.values() if isinstance(r, dict)]
    loads = [x for x in loads if x is not None]
    if loads:
        print(f"\nother load while timing: max {max(loads):.2f} cores")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] in ("--worker-eprop", "--worker-torch"):
        fn = eprop_worker if sys.argv[1] == "--worker-eprop" else torch_worker
        print(json.dumps(fn(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    sys.exit(main())
