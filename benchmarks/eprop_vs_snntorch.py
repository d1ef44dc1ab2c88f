"""Training cost on the CPU: spikeforge's e-prop against BPTT (snnTorch, and a plain PyTorch loop).

The same network on every side: 40 Poisson inputs -> 100 recurrent LIF neurons (reset by
subtraction, tau_m = 20 ms, threshold 0.6, dt = 1 ms, no refractoriness) -> 2 leaky
readout units (tau_out = 20 ms), per-step softmax cross-entropy over the last 10 % of the
trial, Adam, minibatch 32, the same initial weights (spikeforge's: Gaussian, scaled by
fan-in, no self-connections, written by the driver and loaded by every worker) and the same
data. Two BPTT baselines:

* ``snntorch``: snnTorch's ``RLeaky`` (reset by subtraction, fast-sigmoid surrogate), the
  input projection applied to the whole sequence at once, the readout step by step;
* ``torch``: a plain PyTorch LIF loop with the dynamics spikeforge simulates
  (``v = alpha v + (1 - alpha) r_m (W_in x + W_rec z)``, ``z = H(v - v_th)``, ``v -= z v_th``
  with the spike detached in the reset, the same surrogate as snnTorch's), the input
  projection and the readout (a linear layer, then the leaky filter as one matrix over time)
  applied to the whole sequence at once: only the recurrence is a Python loop.

For each sequence length (100, 500, 1000, 2000 steps) and thread count (``--threads``, default
1 and 2) the script measures, each case in a fresh process, the cases of one round
interleaved (every side at one length and thread count, then the next):

* seconds per minibatch (forward + gradients + Adam step), the median over ``--repeats``
  epochs of ``--batches`` minibatches after one warm-up epoch (so nothing is compiled or
  allocated while timing);
* memory: the peak resident set of the process (VmHWM, i.e. ``ru_maxrss``), and the
  training's own share: the peak while training minus the resident set just before (the
  libraries, the network and the data set already loaded). The kernel's high-water mark
  is reset (``/proc/self/clear_refs``) after the setup, so that the setup's transients
  (building the data) do not hide it; where that is not possible the share is the peak
  minus the resident set before training;
* the load average when the case started and the CPU time other processes used while it
  was timed (``other``, in cores). ``--rounds`` repeats every case; the table keeps each
  case's fastest round (the one least disturbed by other work).

A baseline's "best" time at a thread count is its fastest at that count or fewer threads
(torch's intra-op threads do not always pay for a network this small).

e-prop (Bellec et al. 2020) computes gradients forward in time: its state is the
eligibility traces, whose size does not depend on the sequence length. BPTT keeps the
whole trajectory for the backward pass, so its memory grows with the sequence length.

spikeforge runs in this interpreter, the baselines in the virtual environment
``benchmarks/.env-torch`` or the interpreter ``--torch-python`` names (create it once)::

    python -m venv benchmarks/.env-torch
    benchmarks/.env-torch/bin/pip install torch==2.13.0 snntorch numpy   # CPU wheel of torch

    python benchmarks/eprop_vs_snntorch.py [--json out.json]   # ~10 min on 2 cores
    python benchmarks/eprop_vs_snntorch.py --quick             # smoke run, seconds
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # this checkout's spikeforge, not an installed one

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


# --------------------------------------------------------------------------- BPTT workers


def initial_weights() -> dict:
    """spikeforge's initial weights of this network (the Trainer's, seed 0), float32."""
    import numpy as np

    from spikeforge.models.builtins import LIF_SUBTRACTIVE
    from spikeforge.training.model import EpropConfig
    from spikeforge.training.network_runtime import initial_weights as spikeforge_initial_weights

    cfg = EpropConfig(N_IN, N_HIDDEN, N_OUT, LIF_SUBTRACTIVE, {"tau_m": TAU_M, "v_th": V_TH, "r_m": TAU_M / DT},
                      tau_out=TAU_OUT, dt=DT, name="bench_eprop_vs_snntorch")
    weights, _ = spikeforge_initial_weights(cfg, 0, 1.0, np.float32)
    return weights


def _bptt_timing(cfg: dict, side: str, model, params, forward) -> dict:
    """Time ``forward(xb, yb) -> (loss, spikes)`` + backward + Adam over the data of ``cfg``."""
    import torch

    steps, batch, batches = cfg["steps"], cfg["batch"], cfg["batches"]
    x_np, labels_np, _ = make_data(steps, batch * batches)
    x = torch.from_numpy(x_np)
    labels = torch.from_numpy(labels_np)
    opt = torch.optim.Adam(params, lr=1e-3)
    out = {"side": side, "steps": steps, "threads": cfg["threads"], "torch": torch.__version__,
           "setup_peak_rss_mb": peak_rss_mb()}
    del x_np
    out["rss_before_mb"] = start_memory_window()

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        spikes = 0.0
        for k in range(batches):
            sl = slice(k * batch, (k + 1) * batch)
            opt.zero_grad(set_to_none=True)
            loss, s = forward(x[:, sl], labels[sl])
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


def _load_weights(cfg: dict) -> dict:
    import numpy as np
    import torch

    with np.load(cfg["weights"]) as f:
        return {k: torch.from_numpy(np.array(f[k], dtype=np.float32)) for k in f.files}


def snntorch_worker(cfg: dict) -> dict:
    import math

    import snntorch as snn
    import torch
    from snntorch import surrogate

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    steps = cfg["steps"]
    _, _, mask_np = make_data(steps, 1)
    start = int(mask_np.nonzero()[0][0])
    alpha, kappa = math.exp(-DT / TAU_M), math.exp(-DT / TAU_OUT)
    w = _load_weights(cfg)

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
            # the input projection of the whole sequence at once, split into steps by unbind (indexing
            # step by step would give each step's gradient the whole sequence's size: quadratic in T)
            current = self.fc_in(xb).unbind(0)
            for t in range(xb.shape[0]):
                spk, mem = self.lif(current[t], spk, mem)
                y = kappa * y + (1 - kappa) * self.fc_out(spk)
                if t >= start:
                    loss = loss + torch.nn.functional.cross_entropy(y, yb, reduction="sum")
                spikes = spikes + spk.detach().sum()
            return loss / xb.shape[1], spikes

    net = Net()
    with torch.no_grad():  # spikeforge's initial weights
        net.fc_in.weight.copy_(w["w_in"])
        net.lif.recurrent.weight.copy_(w["w_rec"])
        if net.lif.recurrent.bias is not None:
            net.lif.recurrent.bias.zero_()
        net.fc_out.weight.copy_(w["w_out"])
        net.fc_out.bias.copy_(w["b_out"])
    out = _bptt_timing(cfg, "snnTorch BPTT", net, list(net.parameters()), net.forward)
    out["snntorch"] = snn.__version__
    return out


def torch_worker(cfg: dict) -> dict:
    """A plain PyTorch LIF loop: only the recurrence steps in Python."""
    import math

    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    steps = cfg["steps"]
    _, _, mask_np = make_data(steps, 1)
    window = torch.from_numpy(mask_np.nonzero()[0])
    alpha, kappa = math.exp(-DT / TAU_M), math.exp(-DT / TAU_OUT)
    gain = (1 - alpha) * TAU_M / DT  # (1 - alpha) r_m: spikeforge's exact integration of dv/dt = (r_m i - v) / tau_m
    w = {k: v.clone().requires_grad_(True) for k, v in _load_weights(cfg).items()}

    class Spike(torch.autograd.Function):  # Heaviside forward, fast sigmoid backward (snnTorch's default slope 25)
        @staticmethod
        def forward(ctx, g):
            ctx.save_for_backward(g)
            return (g > 0).to(g.dtype)

        @staticmethod
        def backward(ctx, grad):
            (g,) = ctx.saved_tensors
            return grad / (25.0 * g.abs() + 1.0) ** 2

    # the readout filter over the window as one matrix: y_t = sum_s (1 - kappa) kappa^(t - s) u_s, s <= t
    t_idx = torch.arange(steps, dtype=torch.float64)
    lag = window.to(torch.float64)[:, None] - t_idx[None, :]
    filt = torch.where(lag >= 0, (1 - kappa) * kappa ** lag.clamp(min=0), torch.zeros(())).to(torch.float32)

    no_self = 1 - torch.eye(N_HIDDEN)

    def forward(xb, yb):
        T, B = xb.shape[0], xb.shape[1]
        w_rec = w["w_rec"] * no_self  # no self-connections (their gradient is zero, as spikeforge's)
        # the input projection of the whole sequence at once, split into steps by unbind (indexing
        # step by step would give each step's gradient the whole sequence's size: quadratic in T)
        current = (gain * (xb @ w["w_in"].T)).unbind(0)
        v = torch.zeros(B, N_HIDDEN)
        z = torch.zeros(B, N_HIDDEN)
        zs = []
        for t in range(T):
            i_t = current[t - 1] if t > 0 else torch.zeros(B, N_HIDDEN)  # a spike reaches its targets a step later
            v = alpha * v + i_t + gain * (z @ w_rec.T)
            z = Spike.apply(v - V_TH)
            v = v - z.detach() * V_TH  # reset by subtraction, the spike detached
            zs.append(z)
        z_all = torch.stack(zs)  # (T, B, N)
        u = z_all @ w["w_out"].T + w["b_out"]  # the readout layer of the whole sequence at once
        y = torch.einsum("ws,sbk->wbk", filt, u)  # its leaky filter over the window
        loss = torch.nn.functional.cross_entropy(y.reshape(-1, N_OUT), yb.repeat(len(window)), reduction="sum")
        return loss / B, z_all.detach().sum()

    return _bptt_timing(cfg, "PyTorch BPTT", None, list(w.values()), forward)


# --------------------------------------------------------------------------- driver

SIDES = ("eprop", "torch", "snntorch")
LABELS = {"eprop": "spikeforge e-prop", "torch": "PyTorch BPTT", "snntorch": "snnTorch BPTT"}


def run_case(side: str, cfg: dict, torch_python: str, timeout: float) -> dict:
    python = sys.executable if side == "eprop" else torch_python
    cmd = [python, str(Path(__file__).resolve()), f"--worker-{side}", json.dumps(cfg)]
    load = os.getloadavg()[0]
    out = run_json(cmd, env=thread_env(cfg["threads"]), timeout=timeout)
    out["load_average_start"] = round(load, 2)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    return out


def _best(results: dict, side: str, steps: int, threads: int, upto: bool = False) -> dict | None:
    """The fastest round of a case; ``upto``: at ``threads`` or fewer."""
    rows = [r for (s, T, th), rs in results.items() if s == side and T == steps and (th <= threads if upto else
                                                                                     th == threads) for r in rs
            if "seconds_per_batch" in r]
    return min(rows, key=lambda r: r["seconds_per_batch"]) if rows else None


def _ms(r):
    return fmt(r["seconds_per_batch"] * 1e3) if r else "-"


def _load(r):
    return f"{r['load_average_start']:.1f}" if r else "-"


def report(results: dict, args, sides: list[str]) -> list[list]:
    tables = []
    for threads in args.threads:
        rows = []
        for steps in args.steps:
            e = _best(results, "eprop", steps, threads)
            row = [steps, _ms(e), _load(e), fmt(e["training_mb"]) if e else "-"]
            for side in sides[1:]:
                b = _best(results, side, steps, threads, upto=True)
                row += [_ms(b), f"{b['threads']}" if b else "-", _load(b), fmt(b["training_mb"]) if b else "-",
                        fmt(b["seconds_per_batch"] / e["seconds_per_batch"]) if (b and e) else "-"]
            rows.append(row)
        headers = ["steps", "e-prop ms", "load", "e-prop MiB"]
        for side in sides[1:]:
            name = "PyTorch" if side == "torch" else "snnTorch"
            headers += [f"{name} ms", "its threads", "load", f"{name} MiB", f"{name} / e-prop"]
        print_table(headers, rows, title=f"{N_IN} inputs -> {N_HIDDEN} recurrent LIF -> {N_OUT} readout, batch "
                                         f"{args.batch}, e-prop on {threads} thread(s), each baseline at its best "
                                         f"of <= {threads} (ms per minibatch; MiB: peak while training minus the "
                                         "resident set before; load: 1-min load average when the case started)")
        tables.append(rows)
    return tables


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 500, 1000, 2000],
                        help="sequence lengths in steps of 1 ms (default 100 500 1000 2000)")
    parser.add_argument("--batch", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--batches", type=int, default=4, help="minibatches per timed epoch (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per case (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread counts (default: 1 and all usable)")
    parser.add_argument("--rounds", type=int, default=1, help="measure every case this many times (default 1)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="what to run (default all)")
    parser.add_argument("--torch-python", default=str(TORCH_PYTHON), help="the interpreter with torch and snntorch")
    args = finish_args(parser.parse_args(argv))
    if args.threads is None:
        args.threads = sorted({1, available_threads()})
    if args.quick:
        args.steps, args.batches, args.repeats, args.batch, args.threads = [20, 50], 1, 1, 8, [1]
    info = machine_info()
    print(describe_machine(info))
    sides = [s for s in SIDES if s in args.sides]
    if not Path(args.torch_python).exists():
        print(f"\n{args.torch_python} not found: the BPTT baselines are skipped (see the docstring)")
        sides = [s for s in sides if s == "eprop"]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="eprop-vs-bptt-") as tmp:
        weights = Path(tmp) / "weights.npz"
        import numpy as np

        np.savez(weights, **initial_weights())
        for rnd in range(args.rounds):
            for steps in args.steps:
                for threads in args.threads:
                    for side in sides:  # interleaved: every side at this length and thread count
                        cfg = {"batch": args.batch, "batches": args.batches, "repeats": args.repeats,
                               "threads": threads, "steps": steps, "weights": str(weights)}
                        try:
                            res = run_case(side, cfg, args.torch_python, timeout=1800)
                        except BenchmarkError as exc:
                            print(f"\n{side} at {steps} steps, {threads} threads failed: {exc}")
                            res = {"error": str(exc)}
                        res.setdefault("threads", threads)
                        results.setdefault((side, steps, threads), []).append(res)
                        print(f"  round {rnd + 1} {LABELS[side]:18s} {steps:5d} steps {threads} thr: " + (
                            f"{fmt_s(res['seconds_per_batch'])} per batch, training {fmt(res['training_mb'])} MiB, "
                            f"{fmt(res['rate_hz'])} Hz, load {res['load_average_start']:.2f}, other "
                            f"{fmt(res.get('other_cores'))} cores" if "error" not in res else "failed"), flush=True)
    report(results, args, sides)
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args),
                               "cases": [dict(r, case=[s, T, th]) for (s, T, th), rs in results.items() for r in rs]})
    return 0


if __name__ == "__main__":
    workers = {"--worker-eprop": eprop_worker, "--worker-snntorch": snntorch_worker, "--worker-torch": torch_worker}
    if len(sys.argv) >= 3 and sys.argv[1] in workers:
        print(json.dumps(workers[sys.argv[1]](json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    sys.exit(main())
