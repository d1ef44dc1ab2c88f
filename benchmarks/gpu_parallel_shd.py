"""Time-parallel training against e-prop on the GPU (backend ``cuda``), SHD-shaped: seconds per batch.

The network, the same on both sides: 700 Poisson inputs (``--rate`` Hz, default 10) -> 3
feed-forward hidden layers of 128 LIF neurons without reset (tau_m 20 ms, threshold 0.6, r_m
= tau_m / dt, dt 1 ms: ParaLIF's neuron, the ``threshold`` spike rule) -> 20 leaky readouts
(tau_m 20 ms), ``one_step_curr`` synapses, Gaussian weights scaled by fan-in, per-step softmax
cross-entropy over the last 10 % of the trial against random labels, Adam (mean over the
batch), batch 64, float. For each trial length (``--steps``, default 1,000 and 10,000):

* the parallel method: ``ParallelCompiler(...).compile(..., backend=)`` (chunked scans on the
  device), a batch = ``gradients`` (upload of the inputs, forward and reverse kernels,
  per-instance gradients) + ``apply_gradients``;
* e-prop: ``EpropCompiler(..., feedback="random").compile(..., backend=)`` on the same network
  (feed-forward; random feedback, as the layers below the last have no projection to the
  readout), a batch = ``run_batch`` + ``apply_gradients``;
* seconds per batch: the minimum over ``--repeats`` batches after one warm-up batch, and
  their ratio (e-prop / parallel: the speed-up; targets 20x at T = 1,000 and 200x at 10,000);
  for the parallel method also the time of the inputs' upload alone (one ``push`` of the
  (batch, T, 700) values) and of its kernels alone (forward, backward and Adam, the inputs in
  place), and e-prop's time over the latter (the method's own speed-up: at T = 10,000 the
  upload of 1.8 GB of inputs weighs on both sides);
* GPU memory (``cuda``): the device memory in use after the batches minus before compiling
  (MiB; the arrays are allocated when the network is compiled), and the bytes the parallel
  method keeps for every step (``CompiledParallel.memory()``);
* as a check, the readout values of the first batch on both sides (the same network, the
  same weights, forward: equal to float rounding).

    python benchmarks/gpu_parallel_shd.py [--steps 1000 10000] [--json gpu_parallel_shd.json]
    python benchmarks/gpu_parallel_shd.py --backend cuda-emu --quick    # smoke run, < 1 min
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import common_parser, finish_args, fmt, fmt_s, print_table  # noqa: E402
from gpu_cuba import start  # noqa: E402

SHD = dict(inputs=700, hidden=[128, 128, 128], outputs=20, batch=64, steps=[1000, 10000])
TAU_M, V_TH, TAU_OUT, DT = 20.0, 0.6, 20.0, 1.0
TARGETS = {1000: 20.0, 10000: 200.0}  # e-prop / parallel at these T (SHD size, backend cuda)


def _paralif():
    from spikeforge.models.neuron import NeuronModel

    return NeuronModel("paralif", params={"tau_m": TAU_M, "v_th": V_TH, "r_m": TAU_M / DT}, vars={"v": 0.0},
                       equations="dv/dt = (r_m * i_syn - v) / tau_m", threshold="v > v_th")


def network(args, name: str):
    """The stack: inp -> h1 .. hN -> out, [pre][post] weights from a fixed seed."""
    import numpy as np

    from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
    from spikeforge.network import Network

    rng = np.random.default_rng(1)
    net = Network(name, dt=DT, batch_size=args.batch, precision="float")
    net.add_population("inp", args.inputs, VALUE_INPUT)
    pre, projections = "inp", []
    sizes = [args.inputs, *args.hidden]
    for k, n in enumerate(args.hidden):
        net.add_population(f"h{k + 1}", n, _paralif())
        w = rng.normal(0.0, 1.0 / np.sqrt(sizes[k]), (sizes[k], n))
        net.add_projection(f"{pre}_h{k + 1}", pre, f"h{k + 1}", STATIC, ONE_STEP_CURR, wu_init={"w": w.ravel()})
        projections.append(f"{pre}_h{k + 1}")
        pre = f"h{k + 1}"
    net.add_population("out", args.outputs, LEAKY_READOUT, {"tau_m": TAU_OUT})
    w = rng.normal(0.0, 1.0 / np.sqrt(sizes[-1]), (sizes[-1], args.outputs))
    net.add_projection(f"{pre}_out", pre, "out", STATIC, ONE_STEP_CURR, wu_init={"w": w.ravel()})
    projections.append(f"{pre}_out")
    return net, [f"h{k + 1}" for k in range(len(args.hidden))], projections


def batch_data(args, T: int):
    """Poisson inputs (T, batch, inputs) as float32, random labels, the loss window's mask. The
    inputs are a view of a (batch, T, inputs) array: the layout the parallel method uploads,
    so that no host copy is timed with it."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    x = (rng.random((args.batch, T, args.inputs), dtype=np.float32) < args.rate * DT / 1000.0).astype(np.float32)
    x = x.transpose(1, 0, 2)
    mask = np.zeros(T)
    mask[T - max(1, T // 10):] = 1.0
    return x, rng.integers(0, args.outputs, args.batch), mask


def gpu_used_mib(backend: str) -> float | None:
    if backend != "cuda":
        return None
    try:
        import pycuda.driver as drv

        free, total = drv.mem_get_info()
        return (total - free) / 2**20
    except Exception:
        return None


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (first launches, the host's first allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run_parallel(args, T, x, labels, mask) -> dict:
    from spikeforge.training.objectives import Adam
    from spikeforge.training.parallel import ParallelCompiler

    net, hidden, _ = network(args, "gpu_parallel_shd")
    before = gpu_used_mib(args.backend)
    t0 = time.perf_counter()
    options = {"scan_chunk": args.chunk} if args.chunk else {}
    compiled = ParallelCompiler(loss="xent", optimiser=Adam(lr=1e-3)).compile(
        net, inputs="inp", hidden=hidden, readout="out", n_steps=T, backend=args.backend, **options)
    out = {"build_seconds": time.perf_counter() - t0, "method_bytes": sum(compiled.memory().values())}
    try:
        first = compiled.gradients(x, mask, labels=labels)
        out["y"] = first["y"]
        out["loss"] = float(first["loss"].mean())
        out["rate_hz"] = [float(compiled.backend.pull(f"par_{h}_z").mean()) * 1000.0 / DT for h in hidden]

        def batch():
            compiled.gradients(x, mask, labels=labels)
            compiled.apply_gradients(mean=True)

        out["seconds"] = _timed(batch, args.repeats)
        B = args.batch
        staged = x.transpose(1, 0, 2).reshape(B, -1)
        out["upload_seconds"] = min(_timed(lambda: compiled.backend.push("par_inp_x", staged), args.repeats))

        def kernels():  # the inputs, mask and labels in place: the kernels of a batch, each waited for
            for index in range(compiled.n_backward):
                compiled.backend.custom_update(index)
            compiled.apply_gradients(mean=True)

        out["kernel_seconds"] = min(_timed(kernels, args.repeats))
        used = gpu_used_mib(args.backend)
        out["gpu_mib"] = None if used is None or before is None else used - before
    finally:
        compiled.close()
    return out


def run_eprop(args, T, x, labels, mask) -> dict:
    from spikeforge.training.compiler import EpropCompiler
    from spikeforge.training.objectives import Adam

    net, hidden, projections = network(args, "gpu_parallel_shd_eprop")
    before = gpu_used_mib(args.backend)
    t0 = time.perf_counter()
    # random feedback: the hidden layers without a projection to the readout get the error through it
    compiled = EpropCompiler(loss="xent", optimiser=Adam(lr=1e-3), feedback="random").compile(
        net, inputs="inp", hidden=hidden, readout="out", trainable=projections, n_steps=T, backend=args.backend)
    out = {"build_seconds": time.perf_counter() - t0}
    try:
        first = compiled.run_batch(x, mask, labels=labels)
        out["y"] = first["y"]
        out["loss"] = float(first["loss"].mean())

        def batch():
            compiled.run_batch(x, mask, labels=labels)
            compiled.apply_gradients(mean=True)

        out["seconds"] = _timed(batch, args.repeats)
        used = gpu_used_mib(args.backend)
        out["gpu_mib"] = None if used is None or before is None else used - before
    finally:
        compiled.close()
    return out


def run(args, res) -> None:
    import numpy as np

    res.data["cases"] = cases = []
    for T in args.steps:
        x, labels, mask = batch_data(args, T)
        case = {"steps": T}
        cases.append(case)
        print(f"\nT = {T}: {args.inputs} -> {' -> '.join(map(str, args.hidden))} -> {args.outputs}, "
              f"batch {args.batch}, {x.mean() * 1000.0 / DT:.1f} Hz input", flush=True)
        for side, fn in (("parallel", run_parallel), ("eprop", run_eprop)):
            try:
                r = fn(args, T, x, labels, mask)
            except Exception as exc:  # one side failing (e.g. out of memory) leaves the others
                case[side] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {side}: FAILED: {case[side]['error']}", flush=True)
                res.save()
                continue
            y = r.pop("y")
            case.setdefault("_y", {})[side] = y
            r["seconds_per_batch"] = min(r["seconds"])
            case[side] = r
            print(f"  {side}: {fmt_s(r['seconds_per_batch'])} per batch (build {fmt_s(r['build_seconds'])}), "
                  f"loss {r['loss']:.4g}" + (f", GPU memory {r['gpu_mib']:.0f} MiB" if r.get("gpu_mib") else ""),
                  flush=True)
            res.save()
        ys = case.pop("_y", {})
        if len(ys) == 2:
            case["readout_max_abs_diff"] = float(np.abs(ys["parallel"] - ys["eprop"]).max())
            case["readout_scale"] = float(np.abs(ys["eprop"]).max())
        par, ep = case.get("parallel", {}), case.get("eprop", {})
        if "seconds_per_batch" in par and "seconds_per_batch" in ep:
            case["speedup"] = ep["seconds_per_batch"] / par["seconds_per_batch"]
            case["speedup_kernels"] = ep["seconds_per_batch"] / par["kernel_seconds"]
        res.save()


def report(args, res) -> None:
    full = (args.inputs, args.hidden, args.outputs, args.batch) == (
        SHD["inputs"], SHD["hidden"], SHD["outputs"], SHD["batch"]) and args.backend == "cuda"
    rows = []
    for case in res.data["cases"]:
        par, ep = case.get("parallel", {}), case.get("eprop", {})
        target = TARGETS.get(case["steps"])
        met = "-" if not (full and target and "speedup" in case) else ("yes" if case["speedup"] >= target else "NO")
        rows.append([case["steps"], fmt_s(par.get("seconds_per_batch")), fmt_s(par.get("upload_seconds")),
                     fmt_s(par.get("kernel_seconds")), fmt_s(ep.get("seconds_per_batch")), fmt(case.get("speedup"), 3),
                     fmt(case.get("speedup_kernels"), 3),
                     f"{target:g}x ({met})" if target else "-",
                     fmt(par.get("gpu_mib"), 4), fmt(ep.get("gpu_mib"), 4),
                     fmt(par.get("method_bytes", 0) / 2**20 if par.get("method_bytes") else None, 4),
                     fmt(case.get("readout_max_abs_diff"), 2)])
    print_table(["T", "parallel s/batch", "upload", "kernels", "e-prop s/batch", "e-prop / parallel",
                 "e-prop / kernels", "target",
                 "parallel GPU MiB", "e-prop GPU MiB", "parallel per-step MiB", "|y diff| max"], rows,
                title=f"time-parallel vs e-prop, backend {args.backend}, batch {args.batch}"
                      + ("" if full else "  [not the SHD-shaped size on cuda: targets not judged]"),
                align="rrrrrrrrrrrr")


def parse_args(argv=None):
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--backend", default="cuda", choices=("cuda", "cuda-emu", "cpu"),
                   help="backend (default cuda; cuda-emu for a smoke run without a GPU)")
    p.add_argument("--steps", type=int, nargs="+", default=SHD["steps"], help="trial lengths (default 1000 10000)")
    p.add_argument("--batch", type=int, default=SHD["batch"], help="batch size (default 64)")
    p.add_argument("--inputs", type=int, default=SHD["inputs"], help="input channels (default 700)")
    p.add_argument("--hidden", type=int, nargs="+", default=SHD["hidden"], help="hidden layer sizes (default 3 x 128)")
    p.add_argument("--outputs", type=int, default=SHD["outputs"], help="readouts (default 20)")
    p.add_argument("--rate", type=float, default=10.0, help="input rate per channel, Hz (default 10)")
    p.add_argument("--chunk", type=int, default=None, help="the parallel scans' chunk length (default ceil(sqrt(T)))")
    p.add_argument("--repeats", type=int, default=3, help="timed batches after one warm-up (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and labels")
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.outputs, args.batch = min(args.inputs, 12), min(args.outputs, 3), min(args.batch, 2)
        args.hidden = [min(n, 6) for n in args.hidden[:2]]
        args.steps, args.repeats, args.rate = [min(min(args.steps), 40)], 1, max(args.rate, 100.0)
    if min(args.batch, args.inputs, args.outputs, args.repeats, *args.steps, *args.hidden) < 1:
        p.error("sizes, --steps, --batch and --repeats must be positive")
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    res = start(args, f"time-parallel training vs e-prop, SHD-shaped, backend {args.backend}", "gpu_parallel_shd")
    if res is None:
        return 2
    run(args, res)
    report(args, res)
    if args.json:
        res.save(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
