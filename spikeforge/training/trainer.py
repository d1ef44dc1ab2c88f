"""Training loop: minibatches, Adam, metrics, callbacks, progress bar, checkpoints.

>>> trainer = Trainer(EpropConfig(64, 128, 10, ALIF), batch_size=32, lr=5e-3)
>>> history = trainer.fit(train_set, epochs=10, validation=test_set, checkpoint="run.ckpt.npz")
>>> trainer.evaluate(test_set)["accuracy"]

or, any network the training compiler takes:

>>> trainer = Trainer(net, compiler=EpropCompiler(loss="xent"), inputs="inp", hidden=["h1", "h2"],
...                   readout="out", trainable=["inp_h1", "h1_h1", "h1_h2", "h2_h2", "h2_out", "out.bias"])

An ``EpropConfig`` is translated into such a network (:func:`.network_runtime.translate`)
and trained by the compiler too, on every backend of the registry.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NetworkError, SpikeforgeError
from ..runtime.backends import get_backend
from .checkpoints import CHECKPOINT_VERSION, CheckpointError, check_checkpoint_path, read_checkpoint, write_checkpoint
from .identity import describe_network, describe_network_job, describe_schedule
from .model import EpropConfig
from .objectives import Adam

if TYPE_CHECKING:
    from ..network import Network

__all__ = ["Adam", "Trainer", "TrainingDiverged", "CheckpointError", "CHECKPOINT_VERSION"]


class TrainingDiverged(SpikeforgeError, FloatingPointError):
    """The loss or a weight became NaN or infinite during training."""


def _inject_fault(rank: int, step: int):
    """Testing aid: ``SPIKEFORGE_FAULT=RANK:STEP:kill|raise|hang`` makes that rank die
    (SIGKILL), raise, or stop answering (sleep for an hour) before optimiser step STEP, to
    exercise the fault handling of multi-rank jobs."""
    spec = os.environ.get("SPIKEFORGE_FAULT")
    if not spec:
        return
    r, s, kind = spec.split(":")
    if int(r) == rank and int(s) == step:
        if kind == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            time.sleep(3600)
        raise RuntimeError(f"injected fault before optimiser step {step}")


def _metrics(classify: bool, out: dict, y_true, mask: np.ndarray, readout=None) -> dict:
    """Loss, accuracy (classification) or squared error (regression) of one batch.

    With the per-step readout (``readout`` None or :class:`~.objectives.PerStep`) the kernel
    sums each trial's loss over the steps of the readout window (weighted by the mask); the
    reported loss is its mean per step, so cross-entropy at chance is ln C for C classes and
    the mse loss is half the squared error of one step, summed over the outputs; a trial's
    class is the argmax of its mean readout over the window. A readout that aggregates over
    the window has one loss per trial (reported as it is), its output gives the class, and
    the squared error is its output's against the targets aggregated alike. ``loss_sum`` is
    the sum of the per-trial losses over the batch."""
    from .objectives import PerStep

    readout = readout or PerStep()
    B = out["y"].shape[1]
    res = {"loss_sum": float(out["loss"].sum(dtype=np.float64)) / readout.loss_scale(mask), "n": B,
           "spikes": float(out["hidden_spikes"].sum()), "steps": out["y"].shape[0]}
    window = mask > 0
    if classify:
        pred = readout.output(out["y"], mask).argmax(axis=1)
        res["correct"] = int((pred == np.asarray(y_true)).sum())
    elif readout.aggregated:
        err = (readout.output(out["y"], mask) - readout.output(np.asarray(y_true, dtype=np.float64), mask)) ** 2
        res["sq_err"] = float(err.sum())
        res["sq_n"] = int(err.size)
    else:
        err = (out["y"][window] - np.asarray(y_true)[window]) ** 2
        res["sq_err"] = float(err.sum())
        res["sq_n"] = int(err.size)
    return res


def _summarise(classify: bool, parts: list[dict], n_hidden: int, dt: float) -> dict:
    n = sum(p["n"] for p in parts)
    logs = {"loss": sum(p["loss_sum"] for p in parts) / max(n, 1)}
    if classify:
        logs["accuracy"] = sum(p["correct"] for p in parts) / max(n, 1)
    else:
        logs["mse"] = sum(p["sq_err"] for p in parts) / max(sum(p["sq_n"] for p in parts), 1)
    steps = parts[0]["steps"] if parts else 1
    logs["rate_hz"] = sum(p["spikes"] for p in parts) / max(n * n_hidden * steps * dt / 1000.0, 1e-12)
    return logs


def _check_number(what: str, value, positive: bool = False, below_one: bool = False) -> float:
    """A finite real number (> 0 with ``positive``; in [0, 1) with ``below_one``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise NetworkError(f"{what} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise NetworkError(f"{what} must be positive, got {value!r}")
    if below_one and not 0 <= value < 1:
        raise NetworkError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


def _check_job(config, optimizer, init_scale, compiler, inputs, hidden, readout, trainable):
    """What the Trainer trains: an EpropConfig, or a Network with its compiler and the names
    of its roles (and then neither an optimizer nor an init_scale)."""
    from ..network import Network

    if isinstance(config, Network):
        if compiler is None or any(v is None for v in (inputs, hidden, readout, trainable)):
            raise NetworkError("Trainer: a Network needs compiler=EpropCompiler(...) (or ParallelCompiler(...)) and "
                               "the names inputs=, hidden=, readout= and trainable=")
        if optimizer is not None:
            raise NetworkError("Trainer: with a Network, the optimiser is the compiler's "
                               "(EpropCompiler(optimiser=...)); leave optimizer out")
        if init_scale != 1.0:
            raise NetworkError("Trainer: a Network starts from its own initial weights; init_scale applies to "
                               "an EpropConfig only")
    elif not isinstance(config, EpropConfig):
        raise NetworkError(f"Trainer needs an EpropConfig or a Network, got {type(config).__name__}")


def _check_batching(batch_size, reduce, lr):
    """A positive integer batch size, ``reduce`` of mean or sum, and a positive learning rate
    (unless ``lr`` is a schedule, checked at every step)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NetworkError(f"batch_size must be a positive integer, got {batch_size!r}")
    if reduce not in ("mean", "sum"):
        raise NetworkError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if not callable(lr):
        _check_number("lr (the learning rate)", lr, positive=True)


def _check_run_options(seed, init_scale, threads, clamp):
    """Checks ``seed``, ``init_scale`` and ``threads``; returns ``clamp`` as ``(low, high)``
    floats (or None)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NetworkError(f"seed must be a non-negative integer, got {seed!r}")
    _check_number("init_scale", init_scale, positive=True)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise NetworkError(f"threads must be a positive integer, got {threads!r}")
    if clamp is not None:
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise NetworkError(f"clamp must be (low, high), got {clamp!r}")
        lo, hi = (_check_number(f"clamp's {k}", v) for k, v in zip(("low", "high"), clamp))
        if lo >= hi:
            raise NetworkError(f"clamp must be (low, high) with low < high, got {clamp!r}")
        clamp = (lo, hi)
    return clamp


class Trainer:
    """Trains a network with e-prop: an :class:`EpropConfig`, or a
    :class:`~spikeforge.network.Network` with a ``compiler``
    (:class:`~.compiler.EpropCompiler`, or :class:`~.parallel.ParallelCompiler` for
    time-parallel BPTT of a feed-forward network) and the names of its ``inputs``, ``hidden`` and
    ``readout`` populations and ``trainable`` projections (see the module docstring).

    ``reduce`` says how per-instance gradients combine across the batch (``mean`` or
    ``sum``); ``lr`` may be a number or a function ``(epoch, step) -> lr`` (a schedule).
    ``clamp`` = (lo, hi) clips the hidden weights (the projections into hidden
    populations) after every step. With a network, the compiler's optimiser takes the steps
    (``optimizer`` must be left out) and ``lr`` replaces its learning rate at every step.

    Examples:
        >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
        >>> config = EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0), name="demo")
        >>> trainer = Trainer(config, batch_size=32, lr=5e-3)
        >>> history = trainer.fit(digits()[:64], epochs=1, progress=False)
        >>> len(history), "train_loss" in history[-1]
        (1, True)
    """

    def __init__(self, config: EpropConfig | Network, *, batch_size: int = 32, lr: float | Callable = 1e-3,
                 optimizer: Adam | None = None, reduce: str = "mean", seed: int = 0, threads: int | None = None,
                 clamp: tuple[float, float] | None = None, init_scale: float = 1.0, backend: str = "cpu",
                 comm: Any = None, compiler: Any = None, inputs: str | None = None,
                 hidden: str | Sequence[str] | None = None, readout: str | None = None,
                 trainable: Sequence[str] | None = None) -> None:
        from ..network import Network

        _check_job(config, optimizer, init_scale, compiler, inputs, hidden, readout, trainable)
        _check_batching(batch_size, reduce, lr)
        self.optimizer = optimizer or _adam_of(compiler)
        if not isinstance(self.optimizer, Adam):  # its constants were checked when it was made
            raise NetworkError(f"optimizer must be an Adam, got {type(self.optimizer).__name__}")
        clamp = _check_run_options(seed, init_scale, threads, clamp)
        chosen = get_backend(backend)  # an unknown name: BackendUnavailableError listing the available ones
        from .distributed import check_same_job, communicator

        self.comm = comm if comm is not None else communicator()
        if batch_size % self.comm.size:
            raise NetworkError(f"the global batch size {batch_size} does not divide across {self.comm.size} ranks; "
                               f"use a multiple of {self.comm.size}")
        self.config: Any = config  # an EpropConfig, or the Network of a compiler's job
        self.network = config if isinstance(config, Network) else None
        self._roles = (compiler, inputs, hidden, readout, None if trainable is None else list(trainable))
        self.batch_size = batch_size
        self.lr = lr
        self.reduce = reduce
        self.seed = seed
        self.clamp = clamp
        self.init_scale = init_scale
        self.backend = backend
        # weights in host memory are checked for NaN after every batch, device ones after the epoch
        self._host_weights = not chosen.device
        # every rank must train the same job: compare before anything is compiled
        check_same_job(self.comm, self.job_description(), "job configuration")
        if self.comm.rank != 0:
            self.comm.wait_for_build()  # rank 0 generates and compiles; the others then load from the cache
        self.runtime = self._compiled_runtime(compiler, inputs, hidden, readout, trainable, threads, chosen)
        if self.comm.rank == 0:
            self.comm.wait_for_build()
        self._io = self._describe_io()
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.step = 0  # optimiser steps taken
        self.last_lr: float | None = None  # the learning rate of the last optimiser step
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []

    def _compiled_runtime(self, compiler, inputs, hidden, readout, trainable, threads, chosen):
        """The compiler's runtime: of the network given, or of the EpropConfig translated."""
        from .distributed import pin_gpu
        from .network_runtime import CompiledRuntime, NetworkJob, copy_with_batch, network_weights, translate
        from .parallel import ParallelCompiler
        from .parallel_runtime import ParallelRuntime

        local = self.batch_size // self.comm.size
        options = {"device": pin_gpu(self.comm.local_rank)} if chosen.gpu else {}
        if self.network is None:  # the trainer's lr replaces the optimiser's at every step
            job, names, initial, feedback = translate(self.config, local, self.seed, self.init_scale, self.optimizer)
            job.backend, job.backend_options = self.backend, options
            return CompiledRuntime(job, names, threads=threads, feedback=feedback, initial=initial)
        trainable = list(trainable)
        job = NetworkJob(copy_with_batch(self.network, local), compiler, inputs, hidden, readout, trainable,
                         backend=self.backend, backend_options=options)
        kind = ParallelRuntime if isinstance(compiler, ParallelCompiler) else CompiledRuntime
        runtime = kind(job, network_weights(job), threads=threads)
        runtime.check()  # names, models and the rest of the job, before any data is read
        return runtime

    def _describe_io(self):
        """What data fits the job: inputs, outputs, dt, task, hidden neurons, clamped weights."""
        from types import SimpleNamespace

        from .objectives import PerStep

        if self.network is None:
            cfg = self.config
            return SimpleNamespace(n_inputs=cfg.n_inputs, n_outputs=cfg.n_outputs, dt=cfg.dt,
                                   classify=cfg.loss == "xent", n_hidden=cfg.n_hidden, loss=cfg.loss,
                                   clamped=("w_in", "w_rec"), names=tuple(self.runtime.names),
                                   readout=PerStep())
        plan = self.runtime.plan
        names = list(self.runtime.names)
        clamped = tuple(f"{q.name}_w" for q in plan.hidden_projections)
        classify = plan_loss_classifies(self.runtime.job.compiler)
        return SimpleNamespace(n_inputs=plan.inputs.size, n_outputs=plan.readout.size, dt=plan.dt,
                               classify=classify, n_hidden=sum(h.size for h in plan.hidden),
                               loss=self.runtime.job.compiler.loss.name, clamped=clamped, names=tuple(names),
                               readout=getattr(self.runtime.job.compiler, "readout", None) or PerStep())

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

    def _apply(self, batch: int, epoch: int, reduced: dict | None = None):
        """One optimiser step. ``reduced``: gradients already summed over the global batch
        (across ranks), host arrays; else the generated optimiser reduces this process's batch."""
        self.step += 1
        lr = self.last_lr = self._lr(epoch)
        clamp = {} if self.clamp is None else {name: self.clamp for name in self._io.clamped}
        if reduced is None:
            self.runtime.step(batch=batch, mean=self.reduce == "mean", lr=lr, step=self.step, clamp=clamp)
            return
        scale = 1.0 / batch if self.reduce == "mean" else 1.0
        for name in self._io.names:
            self.runtime.set_gradient(name, reduced[name], scale)
        self.runtime.step(batch=1, mean=False, lr=lr, step=self.step, clamp=clamp)

    # -- running ---------------------------------------------------------------------------
    def _dataset(self, data, what: str, allow_empty: bool = False):
        """``data`` as a data set the network can run: a :class:`SpikeDataset` (or any object
        with its interface) as it is, or a plain sequence of ``(x, y)`` pairs converted with
        :meth:`SpikeDataset.from_pairs` (x: ``(steps, n_inputs)`` spikes of 0/1; y: the class,
        or the ``(steps, n_outputs)`` target). Checked against the network."""
        from .datasets import SpikeDataset

        cfg = self._io
        task = "classification" if cfg.classify else "regression"
        if not all(hasattr(data, a) for a in ("n_inputs", "n_outputs", "dt", "task", "to_dense")):
            if isinstance(data, (str, bytes)) or not isinstance(data, (list, tuple)):
                raise NetworkError(f"the {what} must be a SpikeDataset or a list of (x, y) pairs, "
                                   f"got {type(data).__name__}")
            try:
                data = SpikeDataset.from_pairs(data, n_inputs=cfg.n_inputs, n_outputs=cfg.n_outputs, dt=cfg.dt,
                                               task=task)
            except ValueError as exc:
                raise NetworkError(f"the {what}: {exc}") from None
        if data.n_inputs != cfg.n_inputs:
            raise NetworkError(f"the data has {data.n_inputs} input channels, the network {cfg.n_inputs}")
        if data.n_outputs != cfg.n_outputs:
            raise NetworkError(f"the data has {data.n_outputs} outputs/classes, the network {cfg.n_outputs}")
        if abs(data.dt - cfg.dt) > 1e-9:
            raise NetworkError(f"the data is binned at dt = {data.dt} ms, the network runs at {cfg.dt} ms")
        if data.task != task:
            raise NetworkError(f"loss '{cfg.loss}' needs a {task} data set, got {data.task}")
        if not allow_empty and len(data) == 0:
            raise NetworkError(f"the {what} has no samples")
        return data

    def _run(self, data, samples, learn: bool = True):
        """One minibatch; ``learn=False``: the forward pass only. The per-instance gradients
        stay in the runtime."""
        # a runtime that reads its input a part at a time gets the spikes binned as it reads
        lazy = getattr(self.runtime, "reads_input_in_parts", False) and hasattr(data, "n_steps")
        x, y, mask = data.to_dense(samples, lazy=True) if lazy else data.to_dense(samples)
        if self._io.classify:
            out = self.runtime.run_batch(x, mask, labels=y, learn=learn, grads=False)
        else:
            out = self.runtime.run_batch(x, mask, targets=y, learn=learn, grads=False)
        return out, y, mask

    def fit(self, train: Any, epochs: int = 1, validation: Any = None, callbacks: Sequence[Callable] = (),
            progress: bool = True, checkpoint: str | os.PathLike | None = None, resume: bool = False) -> list[dict]:
        """See :meth:`_fit`; with several ranks, an error on any rank stops the whole job.

        Examples:
            >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
            >>> data = digits()
            >>> trainer = Trainer(EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0)), batch_size=32)
            >>> history = trainer.fit(data[:64], epochs=2, validation=data[1700:], progress=False)
            >>> [h["epoch"] for h in history], "val_accuracy" in history[-1]
            ([1, 2], True)
        """
        if self.comm.size == 1:
            return self._fit(train, epochs, validation, callbacks, progress, checkpoint, resume)
        try:
            return self._fit(train, epochs, validation, callbacks, progress, checkpoint, resume)
        except Exception as exc:  # every rank must stop, not wait forever in a collective
            self.comm.abort(f"{type(exc).__name__}: {exc}")
            raise

    def _fit(self, train, epochs, validation, callbacks, progress, checkpoint, resume) -> list[dict]:
        """Train for ``epochs`` epochs (in total, counting those of a resumed checkpoint).

        ``train`` and ``validation``: :class:`~.datasets.SpikeDataset` objects or plain lists
        of ``(x, y)`` pairs (see :meth:`_dataset`). The checkpoint path is checked for
        writing before the first epoch; training that diverges (a non-finite loss or weight)
        raises :class:`TrainingDiverged`.

        After every epoch: validation metrics, ``callback(trainer, epoch, logs)`` for each
        callback (return ``False`` to stop), and the checkpoint if ``checkpoint`` is set.
        ``resume=True`` continues from ``checkpoint`` if it exists.
        """
        train, validation = self._prepare_fit(train, epochs, validation, checkpoint, resume)
        bar = None
        if progress and self.comm.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=max(0, epochs - self.epoch) * math.ceil(len(train) / self.batch_size),
                       unit="batch", desc=self._method(), leave=True)
        try:
            while self.epoch < epochs:
                epoch = self.epoch
                t0 = time.perf_counter()
                parts = self._train_epoch(train, epoch, bar)
                logs = {f"train_{k}": v for k, v in _summarise(self._io.classify, parts, self._io.n_hidden,
                                                               self._io.dt).items()}
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

    def _prepare_fit(self, train, epochs, validation, checkpoint, resume) -> tuple:
        """Before :meth:`_fit`'s first epoch: ``epochs`` checked, ``(train, validation)`` as
        data sets (see :meth:`_dataset`), the checkpoint path checked for writing, a resumed
        checkpoint loaded, and (with several ranks) the same job on every rank."""
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise NetworkError(f"epochs must be a positive integer, got {epochs!r}")
        train = self._dataset(train, "training data")
        if validation is not None:
            validation = self._dataset(validation, "validation data")
        if checkpoint is not None and self.comm.rank == 0:
            check_checkpoint_path(checkpoint)  # before any epoch is spent, not after the first
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
        if self.comm.size > 1:  # the same data and the same starting point on every rank
            from .distributed import check_same_job

            check_same_job(self.comm, self._fit_description(train, validation, epochs), "training data and state")
        return train, validation

    def _train_epoch(self, train, epoch: int, bar) -> list[dict]:
        """One epoch over ``train`` in a fresh random order: a minibatch and an optimiser step
        at a time, each checked for divergence; the progress ``bar`` (or None) advanced. The
        metrics of every minibatch."""
        order = self.rng.permutation(len(train))
        parts = []
        for start in range(0, len(train), self.batch_size):
            idx = order[start: start + self.batch_size]
            _inject_fault(self.comm.rank, self.step)
            if self.comm.size == 1:
                samples = [train[int(i)] for i in idx]
                out, y, mask = self._run(train, samples)
                self._apply(len(samples), epoch)
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
                    parts.append(_metrics(self._io.classify, out, y, mask, self._io.readout))
            else:
                reduced, metrics = self._distributed_batch(train, idx)
                self._apply(len(idx), epoch, reduced)
                parts.append(metrics)
            last = start + self.batch_size >= len(train)
            self._check_finite(epoch, parts[-1]["loss_sum"], weights=self._host_weights or last)
            if bar is not None:
                logs = _summarise(self._io.classify, parts, self._io.n_hidden, self._io.dt)
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
                bar.update(1)
        return parts

    def _check_finite(self, epoch: int, loss: float, weights: bool):
        """Stop training that diverged: the loss of the batch just run, and (``weights``) every
        weight after the optimiser step just taken, must be finite. On the CPU the weights are
        checked after every step; on a device (where they would have to be copied) after the
        last step of each epoch, and whenever the loss is not finite."""
        bad_loss = not math.isfinite(loss)
        if not (bad_loss or weights):
            return
        current = self.runtime.weights
        bad = {name: int(np.count_nonzero(~np.isfinite(current[name]))) for name in self._io.names}
        bad = {name: n for name, n in bad.items() if n}
        if not bad and not bad_loss:
            return
        where = f"training diverged in epoch {epoch + 1} at optimiser step {self.step}"
        what = []
        if bad:
            what += [f"weight '{name}' has {n} non-finite values (NaN or inf)" for name, n in bad.items()]
        if bad_loss:
            what.append(f"the loss is {loss}")
        raise TrainingDiverged(f"{where}: {'; '.join(what)}; the learning rate was {self.last_lr:g} "
                               "(lower it, or check the model)")

    def evaluate(self, data: Any, batch_size: int | None = None, spike: Any = None) -> dict:
        """Loss (mean per step of the readout window), accuracy (classification) or mse
        (regression), and the hidden rate (Hz). With several ranks each evaluates its shard
        and the metrics are summed. ``data``: a SpikeDataset or a list of (x, y) pairs.
        ``spike`` (time-parallel method only): evaluate under this spike rule instead of the
        one trained with, on the same weights (e.g. ``"threshold"``: deterministically).

        Examples:
            >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
            >>> data = digits()
            >>> trainer = Trainer(EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0)), batch_size=32)
            >>> metrics = trainer.evaluate(data[1700:])
            >>> sorted(metrics)[:3]
            ['accuracy', 'loss', 'rate_hz']
        """
        if spike is not None:
            if not hasattr(self.runtime, "spike_rule"):
                raise NetworkError("evaluate(spike=...): only a network trained by the time-parallel method "
                                   "(ParallelCompiler) can be evaluated under another spike rule")
            with self.runtime.spike_rule(spike):
                return self.evaluate(data, batch_size)
        data = self._dataset(data, "evaluation data")
        parts = []
        bs = batch_size or self.batch_size
        for start in range(0, len(data), bs):
            idx = np.arange(start, min(start + bs, len(data)))
            if self.comm.size > 1:
                parts.append(self._distributed_batch(data, idx, gradients=False)[1])
                continue
            out, y, mask = self._run(data, [data[int(i)] for i in idx], learn=False)
            parts.append(_metrics(self._io.classify, out, y, mask, self._io.readout))
        return _summarise(self._io.classify, parts, self._io.n_hidden, self._io.dt)

    def predict(self, data: Any, batch_size: int | None = None) -> np.ndarray:
        """Classes (classification: argmax of each trial's output: the mean readout over the
        window, or the aggregate of a readout that aggregates) or, for regression, the readout
        traces ((steps, samples, outputs)) or the aggregated outputs ((samples, outputs)).

        Examples:
            >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
            >>> data = digits()
            >>> trainer = Trainer(EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0)), batch_size=32)
            >>> trainer.predict(data[:5]).shape      # one class per sample
            (5,)
        """
        data = self._dataset(data, "prediction data")
        outs = []
        bs = batch_size or self.batch_size
        for start in range(0, len(data), bs):
            samples = [data[i] for i in range(start, min(start + bs, len(data)))]
            out, _, mask = self._run(data, samples, learn=False)
            readout = self._io.readout
            if self._io.classify:
                outs.append(readout.output(out["y"], mask).argmax(axis=1))
            else:
                outs.append(readout.output(out["y"], mask) if readout.aggregated else out["y"])
        return np.concatenate(outs, axis=0 if self._io.classify or self._io.readout.aggregated else 1)

    _METRIC_KEYS = ("loss_sum", "n", "spikes", "correct", "sq_err", "sq_n")

    def _distributed_batch(self, data, idx, gradients: bool = True):
        """Run this rank's shard of a global batch; all-reduce gradients and metrics.

        Gradients are summed over the shard, then all-reduced through the host with MPI
        together with the metrics. Returns (the reduced gradients, a dict (empty without
        ``gradients``), the summed metrics)."""
        from .distributed import shard

        local = shard(idx, self.comm.rank, self.comm.size)
        metrics = dict.fromkeys(self._METRIC_KEYS, 0.0)
        steps = data.n_steps
        if local.size:
            out, y, mask = self._run(data, [data[int(i)] for i in local], learn=gradients)
            metrics.update(_metrics(self._io.classify, out, y, mask, self._io.readout))
            steps = metrics.pop("steps")
        grads: dict = {}
        if gradients:
            grads = (self.runtime.gradient_sums() if local.size
                     else {w: np.zeros(self.runtime.weight_shape(w)) for w in self._io.names})
        parts = [grads[w].ravel() for w in self._io.names] if grads else []
        parts.append(np.array([float(metrics.get(k, 0.0)) for k in self._METRIC_KEYS]))
        vector = np.concatenate(parts)
        total = self.comm.allreduce_sum(vector)
        reduced, offset = {}, 0
        for w in grads:
            n = grads[w].size
            reduced[w] = total[offset: offset + n].reshape(grads[w].shape)
            offset += n
        summed = dict(zip(self._METRIC_KEYS, total[offset:]))
        summed["n"] = int(summed["n"])
        summed["steps"] = steps
        return reduced, summed

    # -- identity ---------------------------------------------------------------------------
    def training_description(self) -> dict:
        """The settings a checkpoint must share with the run that resumes it: they decide how
        its Adam moments and step count continue."""
        opt = self.optimizer
        return {"batch_size": self.batch_size, "reduce": self.reduce,
                "adam": {"beta1": float(opt.beta1), "beta2": float(opt.beta2), "eps": float(opt.eps)},
                "clamp": None if self.clamp is None else [float(c) for c in self.clamp]}

    def job_description(self) -> dict:
        """The whole job as data (see :mod:`.identity`): what every rank of an MPI job must
        agree on."""
        return {"network": {"name": self._name(), **self._network_description()},
                "trainer": {**self.training_description(), "lr": describe_schedule(self.lr), "seed": int(self.seed),
                            "init_scale": float(self.init_scale), "backend": self.backend}}

    def _method(self) -> str:
        """The training method, as the progress bar names it."""
        from .parallel import ParallelCompiler

        return "parallel" if isinstance(self._roles[0], ParallelCompiler) else "e-prop"

    def _name(self) -> str:
        return self.network.name if self.network is not None else self.config.name

    def _network_description(self) -> dict:
        if self.network is None:
            return describe_network(self.config)
        return describe_network_job(self.network, *self._roles)

    def _fit_description(self, train, validation, epochs) -> dict:
        import hashlib

        def data(d):
            if d is None:
                return None
            return {"samples": len(d), "fingerprint": d.fingerprint()[:16] if hasattr(d, "fingerprint") else None}

        weights = hashlib.sha256()
        for name, w in self.runtime.get_weights().items():
            weights.update(name.encode() + np.ascontiguousarray(w).tobytes())
        return {"fit": {"epochs": int(epochs), "train": data(train), "validation": data(validation)},
                "state": {"epoch": self.epoch, "step": self.step, "weights": weights.hexdigest()}}

    # -- checkpoints -------------------------------------------------------------------------
    def _expected_arrays(self) -> dict[str, tuple]:
        names = self._io.names
        shapes = {w: tuple(self.runtime.weight_shape(w)) for w in names}
        expected = {f"weight/{w}": shapes[w] for w in names}
        expected.update({f"adam/{k}_{w}": shapes[w] for w in names for k in ("m", "v")})
        if self.network is None:  # the old path's feedback matrix
            expected["feedback"] = (self.config.n_hidden, self.config.n_outputs)
        return expected

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Weights, optimiser state, epoch, step and RNG position, written atomically (see
        :mod:`.checkpoints` for the format).

        Examples:
            >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
            >>> data = digits()
            >>> trainer = Trainer(EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0)), batch_size=32)
            >>> import tempfile, pathlib
            >>> path = trainer.save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "run.npz")
            >>> path.name
            'run.npz'
        """
        data = {f"weight/{k}": v for k, v in self.runtime.get_weights().items()}
        data.update({f"adam/{k}": v for k, v in self.runtime.moments().items()})
        if self.network is None:
            data["feedback"] = np.asarray(self.runtime.feedback)
        meta = {"version": CHECKPOINT_VERSION, "epoch": self.epoch, "step": self.step,
                "rng": self.rng.bit_generator.state, "history": self.history,
                "network": self._network_description(), "training": self.training_description()}
        return write_checkpoint(Path(path), data, meta)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the state saved by :meth:`save_checkpoint`. Every array and every field of
        the metadata is checked before anything changes; a checkpoint of another network or
        other training settings, or a damaged one, raises :class:`CheckpointError`.

        Examples:
            >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig, Trainer, digits
            >>> data = digits()
            >>> trainer = Trainer(EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0)), batch_size=32)
            >>> import tempfile, pathlib
            >>> path = trainer.save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "run.npz")
            >>> _ = trainer.fit(data[:32], progress=False)
            >>> trainer.load_checkpoint(path)         # back to the weights saved
            >>> trainer.epoch
            0
        """
        arrays, meta = read_checkpoint(path, self._expected_arrays(), self.runtime.dtype,
                                       self._network_description(), self.training_description())
        self.runtime.set_weights({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("weight/")})
        self.runtime.set_moments({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("adam/")})
        if "feedback" in arrays:
            self.runtime.set_feedback(arrays["feedback"])
        self.epoch, self.step, self.history = meta["epoch"], meta["step"], meta["history"]
        self.rng.bit_generator.state = meta["rng"]


def _adam_of(compiler) -> Adam:
    """The trainer's Adam constants: the compiler's Adam (its steps are the compiler's)."""
    opt = getattr(compiler, "optimiser", None)
    return opt if isinstance(opt, Adam) else Adam()


def plan_loss_classifies(compiler) -> bool:
    """A classification loss (one label per trial) or a regression loss (targets per step)."""
    return compiler.loss.name == "softmax_cross_entropy"
