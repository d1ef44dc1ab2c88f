"""Training cost on the CPU: the time-parallel method against spikeforge's e-prop and snnTorch BPTT.

The network of benchmarks/eprop_vs_snntorch.py without its recurrent weights, on all three
sides: 40 Poisson inputs -> 100 LIF neurons (tau_m = 20 ms, threshold 0.6, dt = 1 ms, no
refractoriness) -> 2 leaky readout units (tau_out = 20 ms), per-step softmax cross-entropy over
the last 10 % of the trial, Adam, minibatch 32, Gaussian weights scaled by fan-in. The
parallel method's neuron has no reset (its ``threshold`` spike rule, ParaLIF); e-prop and
snnTorch run the same neuron without reset too, so all three compute the same network.

For each thread count (``--threads``, default 2 and 1) and sequence length (``--steps``,
default 100, 1,000 and 10,000) the script measures, each case in a fresh process:

* seconds per minibatch (forward + gradients + Adam step), the median over ``--repeats``
  epochs after one warm-up epoch, and the cost per step (seconds per batch / T: constant when
  the cost is linear in T);
* memory: the process's peak resident set, the training's share (the peak while training
  minus the resident set just before), and for the parallel method the bytes it keeps for
  every step (``CompiledParallel.memory()``: O(T B N)).

The ratios (e-prop / parallel, BPTT / parallel) are taken within one run, side by side. The
load average and the CPU time other processes used while timing are reported: the machine
may be shared.

snnTorch runs in the virtual environment ``benchmarks/.env-torch`` (see
benchmarks/eprop_vs_snntorch.py), or the interpreter ``--torch-python`` names.

    python benchmarks/parallel_vs_eprop.py [--json out.json]   # a few minutes on 2 cores
    python benchmarks/parallel_vs_eprop.py --quick             # smoke run, seconds
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
from eprop_vs_snntorch import (  # noqa: E402
    DT,
    N_HIDDEN,
    N_IN,
    N_OUT,
    TAU_M,
    TAU_OUT,
    V_TH,
    make_data,
    spike_dataset,
    start_memory_window,
    time_fit,
)

TORCH_PYTHON = HERE / ".env-torch" / "bin" / "python"
SIDES = {"parallel": "spikeforge parallel", "eprop": "spikeforge e-prop", "torch": "snnTorch BPTT"}
TARGETS = {"eprop": 5.0, "torch": 30.0}  # at T = 1,000 on 2 threads: at least this many times faster


def _paralif():
    from spikeforge.models.neuron import NeuronModel

    return NeuronModel("paralif", params={"tau_m": TAU_M, "v_th": V_TH, "r_m": TAU_M / DT}, vars={"v": 0.0},
                       equations="dv/dt = (r_m * i_syn - v) / tau_m", threshold="v > v_th")


def _weights(seed: int = 1):
    import numpy as np

    rng = np.random.default_rng(seed)  # [pre][post], Gaussian scaled by fan-in
    return (rng.normal(0.0, 1.0 / np.sqrt(N_IN), (N_IN, N_HIDDEN)),
            rng.normal(0.0, 1.0 / np.sqrt(N_HIDDEN), (N_HIDDEN, N_OUT)))


def _timed(out: dict, epoch, repeats: int, batches: int, steps: int, batch: int):
    """Warm-up epoch, then ``repeats`` timed epochs of ``epoch()`` (returning the hidden spikes)."""
    out["rss_before_mb"] = start_memory_window()
    epoch()
    meter, per_batch, spikes = LoadMeter(), [], 0.0
    with meter.measure():
        for _ in range(repeats):
            t0 = time.perf_counter()
            spikes = epoch()
            per_batch.append((time.perf_counter() - t0) / batches)
    out.update(seconds_per_batch=statistics.median(per_batch), seconds_per_batch_all=per_batch,
               rate_hz=spikes / (batch * batches * N_HIDDEN * steps * DT / 1000.0),
               training_peak_rss_mb=peak_rss_mb(), **meter.as_dict())
    out["peak_rss_mb"] = max(out["setup_peak_rss_mb"], out["training_peak_rss_mb"])
    out["training_mb"] = out["training_peak_rss_mb"] - out["rss_before_mb"]
    return out


# --------------------------------------------------------------------------- spikeforge workers


def parallel_worker(cfg: dict) -> dict:
    import numpy as np

    from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
    from spikeforge.network import Network
    from spikeforge.training.objectives import Adam
    from spikeforge.training.parallel import ParallelCompiler

    steps, batch, batches = cfg["steps"], cfg["batch"], cfg["batches"]
    x, labels, mask = make_data(steps, batch * batches)
    w_in, w_out = _weights()
    net = Network("bench_parallel_vs_eprop", dt=DT, batch_size=batch, precision="float")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", N_HIDDEN, _paralif())
    net.add_projection("inp_h", "inp", "h", STATIC, ONE_STEP_CURR, wu_init={"w": w_in.ravel()})
    net.add_population("out", N_OUT, LEAKY_READOUT, {"tau_m": TAU_OUT, "bias": [0.0] * N_OUT})
    net.add_projection("h_out", "h", "out", STATIC, ONE_STEP_CURR, wu_init={"w": w_out.ravel()})
    compiled = ParallelCompiler(loss="xent", optimiser=Adam(lr=1e-3)).compile(
        net, inputs="inp", hidden=["h"], readout="out", n_steps=steps, threads=cfg["threads"])
    out = {"side": SIDES["parallel"], "steps": steps, "setup_peak_rss_mb": peak_rss_mb(),
           "method_bytes": sum(compiled.memory().values())}
    mask = mask.astype(np.float64)

    def epoch() -> float:
        spikes = 0.0
        for k in range(batches):
            sl = slice(k * batch, (k + 1) * batch)
            compiled.gradients(x[:, sl], mask, labels=labels[sl])
            compiled.apply_gradients()
            # the spikes (0 or 1) of every instance: where the last step's list of senders ends
            spikes += float(compiled.backend.pull("par_h_n_senders").reshape(batch, steps)[:, -1].sum())
        return spikes

    return _timed(out, epoch, cfg["repeats"], batches, steps, batch)


def eprop_worker(cfg: dict) -> dict:
    from spikeforge.training.model import EpropConfig
    from spikeforge.training.trainer import Trainer

    steps, batch, batches = cfg["steps"], cfg["batch"], cfg["batches"]
    data = spike_dataset(steps, batch * batches)
    net = EpropConfig(N_IN, N_HIDDEN, N_OUT, _paralif(), {}, recurrent=False, tau_out=TAU_OUT, dt=DT,
                      name="bench_parallel_vs_eprop_e")
    trainer = Trainer(net, batch_size=batch, lr=1e-3, threads=cfg["threads"])
    out = {"side": SIDES["eprop"], "steps": steps, "setup_peak_rss_mb": peak_rss_mb()}
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
    x, labels = torch.from_numpy(x_np), torch.from_numpy(labels_np)
    start = int(mask_np.nonzero()[0][0])
    alpha, kappa = math.exp(-DT / TAU_M), math.exp(-DT / TAU_OUT)
    w_in, w_out = _weights()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in = torch.nn.Linear(N_IN, N_HIDDEN, bias=False)
            self.lif = snn.Leaky(beta=alpha, threshold=V_TH, reset_mechanism="none",
                                 spike_grad=surrogate.fast_sigmoid())
            self.fc_out = torch.nn.Linear(N_HIDDEN, N_OUT)

        def forward(self, xb, yb):
            mem = self.lif.init_leaky()
            y = torch.zeros(xb.shape[1], N_OUT)
            loss, spikes = 0.0, 0.0
            for t in range(xb.shape[0]):
                spk, mem = self.lif(self.fc_in(xb[t]), mem)
                y = kappa * y + (1 - kappa) * self.fc_out(spk)
                if t >= start:
                    loss = loss + torch.nn.functional.cross_entropy(y, yb, reduction="sum")
                spikes = spikes + spk.detach().sum()
            return loss / xb.shape[1], spikes

    net = Net()
    with torch.no_grad():
        net.fc_in.weight.copy_(torch.from_numpy(w_in.T))
        net.fc_out.weight.copy_(torch.from_numpy(w_out.T))
        net.fc_out.bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out = {"side": SIDES["torch"], "steps": steps, "torch": torch.__version__, "snntorch": snn.__version__,
           "setup_peak_rss_mb": peak_rss_mb()}
    del x_np

    def epoch() -> float:
        spikes = 0.0
        for k in range(batches):
            sl = slice(k * batch, (k + 1) * batch)
            opt.zero_grad(set_to_none=True)
            loss, s = net(x[:, sl], labels[sl])
            loss.backward()
            opt.step()
            spikes += float(s)
        return spikes

    return _timed(out, epoch, cfg["repeats"], batches, steps, batch)


# --------------------------------------------------------------------------- driver

WORKERS = {"parallel": parallel_worker, "eprop": eprop_worker, "torch": torch_worker}


def run_case(side: str, cfg: dict, torch_python: str, timeout: float) -> dict:
    python = torch_python if side == "torch" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), f"--worker-{side}", json.dumps(cfg)]
    return run_json(cmd, env=thread_env(cfg["threads"]), timeout=timeout)


def _rows(results: dict, sides: list, threads: int, steps_list: list, batch: int) -> list:
    def get(side, steps, key):
        return results["cases"].get(f"{side}/{threads}/{steps}", {}).get(key)

    rows = []
    for steps in steps_list:
        p = get("parallel", steps, "seconds_per_batch")
        row = [threads, steps, fmt_s(p), fmt(p / steps * 1e6 if p else None),
               fmt((get("parallel", steps, "method_bytes") or 0) / 2 ** 20), fmt(get("parallel", steps, "peak_rss_mb"))]
        for side in sides[1:]:
            s = get(side, steps, "seconds_per_batch")
            row += [fmt_s(s), fmt(s / steps * 1e6 if s else None), fmt(get(side, steps, "peak_rss_mb")),
                    fmt(s / p if (s and p) else None)]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000],
                        help="sequence lengths in steps of 1 ms (default 100 1000 10000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts (default 2 1)")
    parser.add_argument("--batch", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--samples", type=int, default=4000,
                        help="timesteps x minibatches per timed epoch: minibatches = max(1, samples // steps) "
                             "up to --max-batches (default 4000)")
    parser.add_argument("--max-batches", type=int, default=4, help="most minibatches per timed epoch (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per case (default 3)")
    parser.add_argument("--no-snntorch", action="store_true", help="spikeforge only")
    parser.add_argument("--torch-python", default=str(TORCH_PYTHON), help="the interpreter with torch and snntorch")
    args = finish_args(parser.parse_args(argv))
    if args.quick:
        args.steps, args.threads, args.repeats, args.batch, args.max_batches = [20, 40], [2], 1, 8, 1
    info = machine_info()
    print(describe_machine(info))
    sides = ["parallel", "eprop"]
    if not args.no_snntorch:
        if Path(args.torch_python).exists():
            sides.append("torch")
        else:
            print(f"\n{args.torch_python} not found: snnTorch skipped (see the docstring)")
    results: dict = {"machine": info, "git": git_revision(), "args": vars(args), "cases": {},
                     "loadavg_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                time.gmtime())}
    for threads in args.threads:
        for steps in args.steps:
            batches = max(1, min(args.max_batches, args.samples // steps))
            for side in sides:
                cfg = {"steps": steps, "batch": args.batch, "batches": batches, "repeats": args.repeats,
                       "threads": threads}
                try:
                    res = run_case(side, cfg, args.torch_python, timeout=3600)
                except BenchmarkError as exc:
                    print(f"\n{side} at {steps} steps, {threads} threads failed: {exc}")
                    res = {"error": str(exc)}
                results["cases"][f"{side}/{threads}/{steps}"] = res
                print(f"  {side:8s} {threads} threads {steps:6d} steps: " + (
                    fmt_s(res["seconds_per_batch"]) + " per batch, peak " + fmt(res["peak_rss_mb"]) + " MiB"
                    + (f", other load {res['other_cores']:.2f} cores" if res.get("other_cores") is not None else "")
                    if "error" not in res else "failed"), flush=True)
    results["loadavg_end"] = os.getloadavg()
    headers = ["threads", "steps", "parallel s/batch", "parallel us/step", "parallel kept MiB", "parallel peak MiB"]
    short = {"eprop": "e-prop", "torch": "BPTT"}
    for side in sides[1:]:
        headers += [f"{short[side]} s/batch", f"{short[side]} us/step", f"{short[side]} peak MiB",
                    f"{short[side]}/parallel"]
    rows = [r for threads in args.threads for r in _rows(results, sides, threads, args.steps, args.batch)]
    print_table(headers, rows, title=f"{N_IN} inputs -> {N_HIDDEN} LIF (no reset, feed-forward) -> {N_OUT} readout, "
                                     f"batch {args.batch}; kept: CompiledParallel.memory(), peak: the process")
    if 2 in args.threads and 1000 in args.steps:
        p = results["cases"].get("parallel/2/1000", {}).get("seconds_per_batch")
        for side, target in TARGETS.items():
            s = results["cases"].get(f"{side}/2/1000", {}).get("seconds_per_batch")
            if p and s:
                print(f"T = 1,000, 2 threads: {SIDES[side]} / parallel = {s / p:.1f}x (target >= {target:g}x): "
                      + ("met" if s / p >= target else "NOT met"))
    loads = [r.get("other_cores") for r in results["cases"].values() if r.get("other_cores") is not None]
    print(f"\nload average {results['loadavg_start'][0]:.2f} at the start, {results['loadavg_end'][0]:.2f} at the end"
          + (f"; other processes while timing: up to {max(loads):.2f} cores" if loads else ""))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1].startswith("--worker-") and sys.argv[1][9:] in WORKERS:
        print(json.dumps(WORKERS[sys.argv[1][9:]](json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    sys.exit(main())
