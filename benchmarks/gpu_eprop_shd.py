"""e-prop training of an SHD-sized network on the GPU (backend ``cuda``): seconds per batch.

The network of ``examples/shd.yaml``: 700 inputs -> 256 recurrent ALIF neurons -> 20
leaky readouts (tau_m 20 ms, v_th 0.6, r_m 20, tau_a 500 ms, beta 0.05, no
refractoriness; symmetric feedback; rate regularisation 1.0 towards 10 Hz; Adam, lr
0.002, mean over the batch), batch 512, 1000 steps of 1 ms per trial. The Spiking
Heidelberg Digits are not needed: the inputs are Poisson-like random spikes
(``--rate`` Hz per channel, default 10, drawn with numpy), with random labels. The cost
of a batch does not depend on what the spikes mean, only (a little) on how many there are.

Measured, after ``--warmup`` batches (the Trainer's runtime compiles its network for the
trial length on the first batch: a warm-up batch):

* train step: a ``Trainer.fit`` call over one batch (gathering the samples, ``to_dense``,
  ``run_batch`` = upload + forward pass with eligibility traces and per-instance
  gradients on the device + download of the outputs, the Adam step of the trainable arrays, metrics), min and median
  of ``--batches`` batches; of it: ``run_batch``, Adam, and the rest (host side); and
  inside ``run_batch``: host<->device copies and memsets, and the wait for the kernels.
* ``run_batch`` called directly on one dense batch (min of ``--repeats`` calls): with
  its defaults, and where the runtime offers the keywords, with ``grads=False`` (the
  per-instance gradients are not copied to the host) and forward only (``learn=False``,
  what evaluation needs).
* ``Trainer.evaluate`` on one batch (min of ``--repeats``).

The train step is compared with mlGeNN's reported 3.3 s per batch of 512 for e-prop on
SHD on an NVIDIA A100 (a different GPU: read the ratio with that in mind).

    python benchmarks/gpu_eprop_shd.py [--batch 512] [--steps 1000] [--json gpu_eprop_shd.json]
    python benchmarks/gpu_eprop_shd.py --quick --backend cuda-emu
"""

from __future__ import annotations

import inspect
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import common_parser, finish_args, fmt, fmt_s, print_table  # noqa: E402
from gpu_cuba import Results, start  # noqa: E402

MLGENN_SECONDS_PER_BATCH = 3.3
MLGENN_BATCH = 512
MLGENN_GPU = "NVIDIA A100"

SHD = dict(n_inputs=700, n_hidden=256, n_outputs=20, batch=512, steps=1000, dt=1.0)
ALIF_PARAMS = {"tau_m": 20.0, "v_th": 0.6, "r_m": 20.0, "tau_a": 500.0, "beta": 0.05, "t_ref": 0.0}
TRAINER_OPTIONS = dict(lr=0.002, reduce="mean", seed=1)  # Adam, mean over the (global) batch


def shd_config(args, name: str = "gpu_eprop_shd"):
    """The network of ``examples/shd.yaml`` at the sizes of ``args`` (see :func:`add_network_arguments`)."""
    from spikeforge.models import ALIF
    from spikeforge.training.model import EpropConfig

    return EpropConfig(args.inputs, args.hidden, args.outputs, ALIF, dict(ALIF_PARAMS), recurrent=True, tau_out=20.0,
                       dt=SHD["dt"], loss="xent", feedback="symmetric", reg_rate=1.0, reg_target_hz=10.0, name=name)


def add_network_arguments(p) -> None:
    """The options that size the network and its random input (shared with gpu_eprop_scaling.py)."""
    p.add_argument("--backend", default="cuda", choices=("cuda", "cuda-emu", "cpu"),
                   help="backend (default cuda; cuda-emu/cpu for smoke runs without a GPU)")
    p.add_argument("--steps", type=int, default=SHD["steps"], help="steps of 1 ms per trial (default 1000)")
    p.add_argument("--inputs", type=int, default=SHD["n_inputs"], help="input channels (default 700)")
    p.add_argument("--hidden", type=int, default=SHD["n_hidden"], help="hidden ALIF neurons (default 256)")
    p.add_argument("--outputs", type=int, default=SHD["n_outputs"], help="classes (default 20)")
    p.add_argument("--rate", type=float, default=10.0, help="input rate per channel, Hz (default 10)")
    p.add_argument("--threads", type=int, default=None, help="threads of the cpu and cuda-emu backends")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")


def quick_network(args) -> None:
    """--quick: a tiny network and short trials (a smoke run)."""
    args.inputs, args.hidden, args.outputs = min(args.inputs, 20), min(args.hidden, 16), min(args.outputs, 4)
    args.steps = min(args.steps, 20)
    args.rate = max(args.rate, 50.0)


def is_shd_size(args) -> bool:
    return (args.inputs, args.hidden, args.outputs, args.steps) == (
        SHD["n_inputs"], SHD["n_hidden"], SHD["n_outputs"], SHD["steps"])


def poisson_dataset(n_samples: int, n_inputs: int, n_outputs: int, steps: int, dt: float, rate_hz: float,
                    seed: int):
    """``n_samples`` trials of Poisson-like spikes (one spike at most per channel and step
    counts once in ``to_dense``), random labels; spikes sorted by time then channel."""
    import numpy as np

    from spikeforge.training.datasets import SpikeDataset

    rng = np.random.default_rng(seed)
    counts = rng.poisson(n_inputs * steps * rate_hz * dt / 1000.0, size=n_samples)
    total = int(counts.sum())
    owner = np.repeat(np.arange(n_samples, dtype=np.int64), counts)
    key = owner * (steps * n_inputs) + rng.integers(0, steps * n_inputs, size=total, dtype=np.int64)
    key.sort()  # by sample, then step, then channel
    within = key % (steps * n_inputs)
    times = (within // n_inputs).astype(np.float64) * dt
    ids = within % n_inputs
    offsets = np.concatenate([[0], np.cumsum(counts)])
    labels = rng.integers(0, n_outputs, size=n_samples)
    return SpikeDataset(times, ids, offsets, n_inputs=n_inputs, n_outputs=n_outputs, duration=steps * dt, dt=dt,
                        labels=labels, sort=False, info={"kind": "poisson", "rate_hz": rate_hz})


class CallTimer:
    """Wraps method ``name`` of ``obj`` (if it has one) to add up the wall time of its calls."""

    def __init__(self, obj, name: str):
        self.seconds, self.calls = 0.0, 0
        fn = getattr(obj, name, None) if obj is not None else None
        self.active = callable(fn)
        if not self.active:
            return

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(obj, name, timed)

    def snapshot(self) -> float:
        return self.seconds


def gpu_used_mib(runtime) -> float | None:
    drv = getattr(getattr(runtime, "device", None), "drv", None)
    if drv is None:
        return None
    try:
        free, total = drv.mem_get_info()
        return (total - free) / 2**20
    except Exception:
        return None


def summary(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "all": times} if times else {}


def run(args, res: Results) -> dict:
    import numpy as np

    from spikeforge.training.trainer import Trainer

    out = res.data
    B, T = args.batch, args.steps
    t0 = time.perf_counter()
    data = poisson_dataset(B * (args.warmup + args.batches), args.inputs, args.outputs, T, SHD["dt"], args.rate,
                           args.seed)
    out["data_seconds"] = time.perf_counter() - t0
    out["input_spikes_per_sample"] = float(np.mean(data.spike_counts))
    print(f"\ninput: {len(data)} samples of Poisson spikes, {out['input_spikes_per_sample']:.0f} spikes per sample "
          f"({fmt_s(out['data_seconds'])} to draw)", flush=True)

    cfg = shd_config(args)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, batch_size=B, **TRAINER_OPTIONS, backend=args.backend, threads=args.threads)
    out["build_seconds"] = time.perf_counter() - t0
    runtime = trainer.runtime
    build = getattr(runtime, "build", None)
    out["from_cache"] = getattr(build, "from_cache", None)
    print(f"build (Trainer construction: codegen, compile or cache, allocation): {fmt_s(out['build_seconds'])}"
          + (" (cached)" if out["from_cache"] else ""), flush=True)
    res.save()

    timers = {"run_batch": CallTimer(runtime, "run_batch"), "adam": CallTimer(runtime, "step")}
    device = getattr(runtime, "device", None)
    for name in ("upload", "download", "memset0", "synchronise"):
        timers[name] = CallTimer(device, name)

    # -- train steps: Trainer.fit over one batch at a time ---------------------------------------
    steps = []
    for i in range(args.warmup + args.batches):
        batch = data[i * B:(i + 1) * B]
        before = {k: t.snapshot() for k, t in timers.items()}
        t0 = time.perf_counter()
        trainer.fit(batch, epochs=trainer.epoch + 1, progress=False)
        seconds = time.perf_counter() - t0
        logs = trainer.history[-1] if trainer.history else {}
        step = {"seconds": seconds, "epoch_seconds": logs.get("seconds"), "warmup": i < args.warmup,
                "loss": logs.get("train_loss"), "rate_hz": logs.get("train_rate_hz")}
        step.update({k: t.snapshot() - before[k] for k, t in timers.items() if t.active})
        steps.append(step)
        print(f"  batch {i + 1}{' (warm-up)' if step['warmup'] else ''}: {fmt_s(step['seconds'])}, "
              f"loss {fmt(step['loss'])}, hidden rate {fmt(step['rate_hz'])} Hz", flush=True)
        out["train_steps"] = steps
        res.save()
    timed = [s for s in steps if not s["warmup"]] or steps
    out["train_step"] = summary([s["seconds"] for s in timed])
    out["gpu_used_mib"] = gpu_used_mib(runtime)

    def mean_of(key):
        vals = [s[key] for s in timed if key in s]
        return statistics.mean(vals) if vals else None

    out["train_breakdown"] = {k: mean_of(k) for k in timers if timers[k].active}

    # -- run_batch directly, on one dense batch ------------------------------------------------------
    x, y, mask = data[:B].to_dense()
    params = inspect.signature(type(runtime).run_batch).parameters  # the class's: the timer hides the instance's
    defaults = ", ".join(f"{k}={params[k].default}" for k in ("learn", "grads") if k in params)
    variants = [(f"defaults ({defaults})" if defaults else "defaults", {})]
    if "grads" in params:
        variants.append(("grads=False (gradients stay on the device)", {"grads": False}))
    if "learn" in params:
        variants.append(("learn=False (forward only)", {"learn": False}))
    out["run_batch_keywords"] = sorted(k for k in ("learn", "grads") if k in params)
    out["run_batch"] = {}
    for label, kw in variants:  # the shapes are those of the train steps: nothing new to allocate
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            runtime.run_batch(x, mask, labels=y, **kw)
            times.append(time.perf_counter() - t0)
        out["run_batch"][label] = summary(times)
        print(f"  run_batch {label}: {fmt_s(min(times))}", flush=True)
        res.save()

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        trainer.evaluate(data[:B])
        times.append(time.perf_counter() - t0)
    out["evaluate"] = summary(times)
    res.save()
    close = getattr(runtime, "close", None)
    if callable(close):
        close()
    return out


def report(args, out: dict):
    B = args.batch
    rows = []
    ts = out["train_step"]
    br = out.get("train_breakdown", {})

    def row(label, seconds, median=None, note=""):
        rows.append([label, fmt_s(seconds), fmt_s(median), fmt(seconds / B * 1e3 if seconds else None, 3),
                     fmt(B / seconds if seconds else None, 4), note])

    row("train step (Trainer.fit, one batch)", ts["min"], ts["median"],
        f"{len(ts['all'])} batches after {args.warmup} warm-up")
    if br.get("run_batch") is not None:
        row("  of it: run_batch", br["run_batch"], note="inputs in, kernels, outputs out")
        inside = [(k, br.get(k)) for k in ("upload", "download", "memset0", "synchronise") if br.get(k) is not None]
        for k, v in inside:
            row(f"    of it: {k}", v, note="waiting for the kernels" if k == "synchronise" else "")
    if br.get("adam") is not None:
        row("  of it: Adam (apply_gradients)", br["adam"], note="per weight: reduce over the batch + Adam step")
        if br.get("run_batch") is not None:
            row("  of it: rest (host)", statistics.mean(s["seconds"] for s in out["train_steps"] if not s["warmup"])
                - br["run_batch"] - br["adam"], note="samples, to_dense, metrics (mean)")
    for label, s in out.get("run_batch", {}).items():
        row(f"run_batch, {label}", s["min"], s["median"])
    if "learn" not in out.get("run_batch_keywords", []):
        rows.append(["run_batch, forward only", "-", "-", "-", "-", "the runtime has no 'learn' keyword"])
    row("Trainer.evaluate (one batch)", out["evaluate"]["min"], out["evaluate"]["median"])
    print_table(["what", "min", "median", "ms per sample", "samples/s", "note"], rows,
                title=f"e-prop, backend {args.backend}: {args.inputs} inputs -> {args.hidden} recurrent ALIF -> "
                      f"{args.outputs} readouts, batch {B}, {args.steps} steps of 1 ms, input {args.rate:g} Hz",
                align="lrrrrl")
    shd = is_shd_size(args) and B == MLGENN_BATCH
    ratio = MLGENN_SECONDS_PER_BATCH / ts["min"]
    out["mlgenn"] = {"seconds_per_batch": MLGENN_SECONDS_PER_BATCH, "batch": MLGENN_BATCH, "gpu": MLGENN_GPU,
                     "comparable": shd and args.backend == "cuda", "speedup": ratio}
    print_table(["", "batch", "s per batch", "GPU"],
                [["mlGeNN e-prop on SHD (reported)", MLGENN_BATCH, f"{MLGENN_SECONDS_PER_BATCH:g} s", MLGENN_GPU],
                 ["spikeforge train step (min)", B, fmt_s(ts["min"]), out.get("gpu_name") or args.backend]],
                title="Comparison with mlGeNN", align="lrrl")
    print(f"\nmlGeNN time / spikeforge time = {ratio:.2f} (> 1: spikeforge faster)"
          + ("" if out["mlgenn"]["comparable"] else
             "  [NOT comparable: not the SHD size at batch 512 and 1000 steps on backend cuda]"))


def parse_args(argv=None):
    p = common_parser(__doc__.splitlines()[0])
    add_network_arguments(p)
    p.add_argument("--batch", type=int, default=SHD["batch"], help="batch size (default 512)")
    p.add_argument("--batches", type=int, default=3, help="timed batches (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up batches before timing (default 1)")
    p.add_argument("--repeats", type=int, default=2,
                   help="calls of each direct run_batch variant and of evaluate, the minimum is reported (default 2)")
    args = p.parse_args(argv)
    if args.quick:
        quick_network(args)
        args.batch = min(args.batch, 4)
        args.batches, args.warmup, args.repeats = min(args.batches, 2), min(args.warmup, 1), min(args.repeats, 2)
    if min(args.batch, args.steps, args.batches, args.repeats, args.inputs, args.hidden, args.outputs) < 1 \
            or args.warmup < 0:
        p.error("sizes, --batch, --steps, --batches and --repeats must be positive, --warmup non-negative")
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    res = start(args, f"e-prop, SHD-sized network, backend {args.backend}", "gpu_eprop_shd")
    if res is None:
        return 2
    out = run(args, res)
    report(args, out)
    if args.json:
        res.save(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
