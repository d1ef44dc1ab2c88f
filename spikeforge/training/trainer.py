"""Training loop: minibatches, Adam, metrics, callbacks, progress bar, checkpoints.

>>> trainer = Trainer(EpropConfig(64, 128, 10, ALIF), batch_size=32, lr=5e-3)
>>> history = trainer.fit(train_set, epochs=10, validation=test_set, checkpoint="run.ckpt.npz")
>>> trainer.evaluate(test_set)["accuracy"]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NetworkError, SpikeforgeError
from ..fileio import atomic_savez
from .model import EpropConfig
from .runtime import WEIGHTS, EpropRuntime

CHECKPOINT_VERSION = 1


class CheckpointError(SpikeforgeError, ValueError):
    """A checkpoint is missing, corrupt or belongs to another network."""


def _inject_fault(rank: int, step: int):
    """Testing aid: ``SPIKEFORGE_FAULT=RANK:STEP:kill|raise`` makes that rank die (SIGKILL)
    or raise before optimiser step STEP, to exercise the fault handling of multi-rank jobs."""
    spec = os.environ.get("SPIKEFORGE_FAULT")
    if not spec:
        return
    r, s, kind = spec.split(":")
    if int(r) == rank and int(s) == step:
        if kind == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault before optimiser step {step}")


@dataclass
class Adam:
    """Adam's hyper-parameters; all are run-time values (no recompilation to change them)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


def _metrics(cfg: EpropConfig, out: dict, y_true, mask: np.ndarray) -> dict:
    """Loss, accuracy (classification) or squared error (regression) of one batch."""
    B = out["y"].shape[1]
    res = {"loss_sum": float(out["loss"].sum()), "n": B,
           "spikes": float(out["hidden_spikes"].sum()), "steps": out["y"].shape[0]}
    window = mask > 0
    if cfg.loss == "xent":
        pred = out["y"][window].mean(axis=0).argmax(axis=1) if window.any() else np.zeros(B, dtype=int)
        res["correct"] = int((pred == np.asarray(y_true)).sum())
    else:
        err = (out["y"][window] - np.asarray(y_true)[window]) ** 2
        res["sq_err"] = float(err.sum())
        res["sq_n"] = int(err.size)
    return res


def _summarise(cfg: EpropConfig, parts: list[dict], n_hidden: int, dt: float, targets=None) -> dict:
    n = sum(p["n"] for p in parts)
    logs = {"loss": sum(p["loss_sum"] for p in parts) / max(n, 1)}
    if cfg.loss == "xent":
        logs["accuracy"] = sum(p["correct"] for p in parts) / max(n, 1)
    else:
        logs["mse"] = sum(p["sq_err"] for p in parts) / max(sum(p["sq_n"] for p in parts), 1)
    steps = parts[0]["steps"] if parts else 1
    logs["rate_hz"] = sum(p["spikes"] for p in parts) / max(n * n_hidden * steps * dt / 1000.0, 1e-12)
    return logs


class Trainer:
    """Trains an :class:`EpropConfig` network with e-prop.

    ``reduce`` says how per-instance gradients combine across the batch (``mean`` or
    ``sum``); ``lr`` may be a number or a function ``(epoch, step) -> lr`` (a schedule).
    ``clamp`` = (lo, hi) clips the hidden weights after every step.
    """

    def __init__(self, config: EpropConfig, *, batch_size: int = 32, lr: float | Callable = 1e-3,
                 optimizer: Adam | None = None, reduce: str = "mean", seed: int = 0, threads: int | None = None,
                 clamp: tuple[float, float] | None = None, init_scale: float = 1.0, backend: str = "cpu",
                 comm=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise NetworkError(f"batch_size must be a positive integer, got {batch_size!r}")
        if reduce not in ("mean", "sum"):
            raise NetworkError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        from .distributed import communicator, pin_gpu

        self.comm = comm if comm is not None else communicator()
        if batch_size % self.comm.size:
            raise NetworkError(f"the global batch size {batch_size} does not divide across {self.comm.size} ranks; "
                               f"use a multiple of {self.comm.size}")
        self.config = config
        self.batch_size = batch_size
        self.optimizer = optimizer or Adam()
        self.lr = lr
        self.reduce = reduce
        self.seed = seed
        self.clamp = clamp
        if backend not in ("cpu", "cuda", "cuda-emu"):
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError(f"unknown backend {backend!r} (cpu, cuda, cuda-emu)")
        if self.comm.rank != 0:
            self.comm.barrier()  # rank 0 generates and compiles; the others then load from the cache
        if backend == "cpu":
            self.runtime = EpropRuntime(config, seed=seed, threads=threads, init_scale=init_scale)
        else:
            from .device_runtime import DeviceEpropRuntime

            self.runtime = DeviceEpropRuntime(config, backend=backend, seed=seed, threads=threads,
                                              init_scale=init_scale, device=pin_gpu(self.comm.local_rank))
        if self.comm.rank == 0:
            self.comm.barrier()
        from .distributed import device_allreducer

        self._device_reduce = device_allreducer(self.comm, self.runtime, backend)
        self.backend = backend
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.step = 0  # optimiser steps taken
        self.last_lr: float | None = None  # the learning rate of the last optimiser step
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []

    # -- weights ---------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self.runtime.get_weights()

    @property
    def _moments(self) -> dict[str, np.ndarray]:
        return self.runtime.moments()

    def _lr(self, epoch: int) -> float:
        lr = self.lr(epoch, self.step) if callable(self.lr) else self.lr
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise NetworkError(f"learning rate must be a finite non-negative number, got {lr!r}")
        return float(lr)

    def _apply(self, batch: int, epoch: int, reduced: dict | str | None = None):
        """One optimiser step. ``reduced``: gradients already summed over the global batch
        (across ranks): a dict of host arrays, or ``"device"`` when they were all-reduced in
        place on the device; else the generated kernel reduces this process's batch."""
        self.step += 1
        opt = self.optimizer
        lr = self.last_lr = self._lr(epoch)
        for index, name in enumerate(WEIGHTS):
            if name == "w_rec" and not self.config.recurrent:
                continue
            clamp = self.clamp if self.clamp is not None and name in ("w_in", "w_rec") else None
            if reduced is None:
                self.runtime.apply_gradients(index, batch, self.reduce == "mean", lr, opt.beta1, opt.beta2, opt.eps,
                                             self.step, clamp)
            else:
                scale = 1.0 / batch if self.reduce == "mean" else 1.0
                if not isinstance(reduced, str):
                    self.runtime.set_gradient(name, reduced[name])
                self.runtime.apply_reduced(index, scale, lr, opt.beta1, opt.beta2, opt.eps, self.step, clamp)

    # -- running ---------------------------------------------------------------------------
    def _check(self, data):
        cfg = self.config
        if data.n_inputs != cfg.n_inputs:
            raise NetworkError(f"the data has {data.n_inputs} input channels, the network {cfg.n_inputs}")
        if data.n_outputs != cfg.n_outputs:
            raise NetworkError(f"the data has {data.n_outputs} outputs/classes, the network {cfg.n_outputs}")
        if abs(data.dt - cfg.dt) > 1e-9:
            raise NetworkError(f"the data is binned at dt = {data.dt} ms, the network runs at {cfg.dt} ms")
        want = "classification" if cfg.loss == "xent" else "regression"
        if data.task != want:
            raise NetworkError(f"loss '{cfg.loss}' needs a {want} data set, got {data.task}")

    def _run(self, data, samples, learn: bool = True):
        """One minibatch; ``learn=False``: the forward pass only. The per-instance gradients
        stay in the runtime."""
        x, y, mask = data.to_dense(samples)
        if self.config.loss == "xent":
            out = self.runtime.run_batch(x, mask, labels=y, learn=learn, grads=False)
        else:
            out = self.runtime.run_batch(x, mask, targets=y, learn=learn, grads=False)
        return out, y, mask

    def fit(self, train, epochs: int = 1, validation=None, callbacks: Sequence[Callable] = (),
            progress: bool = True, checkpoint: str | os.PathLike | None = None, resume: bool = False) -> list[dict]:
        """See :meth:`_fit`; with several ranks, an error on any rank stops the whole job."""
        if self.comm.size == 1:
            return self._fit(train, epochs, validation, callbacks, progress, checkpoint, resume)
        try:
            return self._fit(train, epochs, validation, callbacks, progress, checkpoint, resume)
        except Exception as exc:  # every rank must stop, not wait forever in a collective
            self.comm.abort(f"{type(exc).__name__}: {exc}")
            raise

    def _fit(self, train, epochs, validation, callbacks, progress, checkpoint, resume) -> list[dict]:
        """Train for ``epochs`` epochs (in total, counting those of a resumed checkpoint).

        After every epoch: validation metrics, ``callback(trainer, epoch, logs)`` for each
        callback (return ``False`` to stop), and the checkpoint if ``checkpoint`` is set.
        ``resume=True`` continues from ``checkpoint`` if it exists.
        """
        self._check(train)
        if validation is not None:
            self._check(validation)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
        bar = None
        if progress and self.comm.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=max(0, epochs - self.epoch) * math.ceil(len(train) / self.batch_size),
                       unit="batch", desc="e-prop", leave=True)
        try:
            while self.epoch < epochs:
                epoch = self.epoch
                t0 = time.perf_counter()
                order = self.rng.permutation(len(train))
                parts = []
                for start in range(0, len(train), self.batch_size):
                    idx = order[start: start + self.batch_size]
                    _inject_fault(self.comm.rank, self.step)
                    if self.comm.size == 1:
                        samples = [train[int(i)] for i in idx]
                        out, y, mask = self._run(train, samples)
                        self._apply(len(samples), epoch)
                        parts.append(_metrics(self.config, out, y, mask))
                    else:
                        reduced, metrics = self._distributed_batch(train, idx)
                        self._apply(len(idx), epoch, reduced)
                        parts.append(metrics)
                    if bar is not None:
                        logs = _summarise(self.config, parts, self.config.n_hidden, self.config.dt)
                        bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
                        bar.update(1)
                logs = {f"train_{k}": v for k, v in _summarise(self.config, parts, self.config.n_hidden,
                                                               self.config.dt).items()}
                seconds = time.perf_counter() - t0
                logs.update(epoch=epoch + 1, seconds=seconds, samples_per_second=len(train) / seconds)
                logs["lr"] = self.last_lr  # the learning rate of the epoch's last optimiser step
                if validation is not None:
                    logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
                self.epoch = epoch + 1
                self.history.append(logs)
                if checkpoint is not None and self.comm.rank == 0:
                    self.save_checkpoint(checkpoint)
                stop = False
                for cb in callbacks:
                    if cb(self, self.epoch, logs) is False:
                        stop = True
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def evaluate(self, data, batch_size: int | None = None) -> dict:
        """Loss, accuracy (classification) or mse (regression), and the hidden rate (Hz).
        With several ranks each evaluates its shard and the metrics are summed."""
        self._check(data)
        parts = []
        bs = batch_size or self.batch_size
        for start in range(0, len(data), bs):
            idx = np.arange(start, min(start + bs, len(data)))
            if self.comm.size > 1:
                parts.append(self._distributed_batch(data, idx, gradients=False)[1])
                continue
            out, y, mask = self._run(data, [data[int(i)] for i in idx], learn=False)
            parts.append(_metrics(self.config, out, y, mask))
        return _summarise(self.config, parts, self.config.n_hidden, self.config.dt)

    def predict(self, data, batch_size: int | None = None) -> np.ndarray:
        """Classes (classification: argmax of the mean readout over the window) or the readout
        traces (regression: (steps, samples, outputs))."""
        self._check(data)
        outs = []
        bs = batch_size or self.batch_size
        for start in range(0, len(data), bs):
            samples = [data[i] for i in range(start, min(start + bs, len(data)))]
            out, _, mask = self._run(data, samples, learn=False)
            if self.config.loss == "xent":
                outs.append(out["y"][mask > 0].mean(axis=0).argmax(axis=1))
            else:
                outs.append(out["y"])
        return np.concatenate(outs, axis=0 if self.config.loss == "xent" else 1)

    _METRIC_KEYS = ("loss_sum", "n", "spikes", "correct", "sq_err", "sq_n")

    def _distributed_batch(self, data, idx, gradients: bool = True):
        """Run this rank's shard of a global batch; all-reduce gradients and metrics.

        Gradients are summed over the shard where they are (on the device for the CUDA
        backends), then all-reduced: in place on the device through NCCL when the job has it
        (see :mod:`.distributed`), else through the host with MPI together with the metrics.
        Returns (the reduced gradients: a dict, ``"device"`` or ``None``, the summed metrics)."""
        from .distributed import shard

        local = shard(idx, self.comm.rank, self.comm.size)
        metrics = dict.fromkeys(self._METRIC_KEYS, 0.0)
        steps = data.n_steps
        if local.size:
            out, y, mask = self._run(data, [data[int(i)] for i in local], learn=gradients)
            metrics.update(_metrics(self.config, out, y, mask))
            steps = metrics.pop("steps")
        device = gradients and self._device_reduce is not None
        grads = {}
        if device:
            self._device_reduce.allreduce(self.runtime.device_gradient_sums(zero=not local.size))
        elif gradients:
            grads = (self.runtime.gradient_sums() if local.size
                     else {w: np.zeros(self.runtime.weight_shape(w)) for w in WEIGHTS})
        parts = [grads[w].ravel() for w in WEIGHTS] if grads else []
        parts.append(np.array([float(metrics.get(k, 0.0)) for k in self._METRIC_KEYS]))
        vector = np.concatenate(parts)
        total = self.comm.allreduce_sum(vector)
        reduced, offset = ("device" if device else {}), 0
        for w in grads:
            n = grads[w].size
            reduced[w] = total[offset: offset + n].reshape(grads[w].shape)
            offset += n
        summed = dict(zip(self._METRIC_KEYS, total[offset:]))
        summed["n"] = int(summed["n"])
        summed["steps"] = steps
        return reduced, summed

    # -- checkpoints -------------------------------------------------------------------------
    def _signature(self) -> dict:
        c = self.config
        sig = {"n_inputs": c.n_inputs, "n_hidden": c.n_hidden, "n_outputs": c.n_outputs,
               "model": c.hidden_model.name, "recurrent": c.recurrent, "loss": c.loss}
        if c.per_neuron_params:  # which neurons are which (e.g. an LSNN's LIF/ALIF split)
            sig["per_neuron"] = {k: [float(x) for x in v] for k, v in sorted(c.per_neuron_params.items())}
        return sig

    def save_checkpoint(self, path) -> Path:
        """Weights, optimiser state, epoch, step and RNG position, written atomically."""
        path = Path(path)
        data = {f"weight/{k}": v for k, v in self.runtime.get_weights().items()}
        data.update({f"adam/{k}": v for k, v in self.runtime.moments().items()})
        data["feedback"] = self.runtime.feedback
        meta = {"version": CHECKPOINT_VERSION, "epoch": self.epoch, "step": self.step,
                "rng": self.rng.bit_generator.state, "history": self.history, "network": self._signature()}
        data["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        return atomic_savez(path, data)

    def load_checkpoint(self, path):
        path = Path(path)
        try:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
            meta = json.loads(bytes(data["meta"]).decode())
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
        except Exception as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} is not readable ({exc})") from None
        if meta.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {str(path)!r} has format {meta.get('version')}, expected "
                                  f"{CHECKPOINT_VERSION}")
        if meta["network"] != self._signature():
            raise CheckpointError(f"checkpoint {str(path)!r} belongs to another network: {meta['network']} "
                                  f"vs {self._signature()}")
        self.runtime.set_weights({k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("weight/")})
        self.runtime.set_moments({k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("adam/")})
        self.runtime.set_feedback(data["feedback"])
        self.epoch, self.step, self.history = meta["epoch"], meta["step"], meta["history"]
        self.rng.bit_generator.state = meta["rng"]
