"""Spike-train data sets for training: a light container and four sources.

* :class:`SpikeDataset` holds many trials of spikes (times in ms, input channel ids) in two
  flat arrays plus per-sample index ranges, with the labels (classification) or targets
  (regression) and the metadata a trainer needs: ``n_inputs``, ``n_outputs``, ``duration``,
  ``dt``, ``task`` and ``readout_window`` (the part of each trial where the loss counts).
  Subsets (slices, index lists, :meth:`SpikeDataset.split`, :meth:`SpikeDataset.shuffled`)
  share the spike arrays; :meth:`SpikeDataset.to_dense` bins a batch at ``dt`` into a
  time-major ``(n_steps, batch, n_inputs)`` array.
* :func:`evidence_accumulation` and :func:`pattern_generation`: the two tasks of Bellec et
  al. 2020 (e-prop), generated deterministically from a seed.
* :func:`digits`: scikit-learn's bundled 8x8 handwritten digits, latency- or rate-coded.
* :func:`load_shd`: the Spiking Heidelberg Digits HDF5 files (Cramer et al. 2020), read
  from disk (spikeforge never downloads anything).

scikit-learn (for :func:`digits`) and h5py (for :func:`load_shd`) are optional:
``pip install 'spikeforge[data]'``. See ``docs/datasets.md`` for the exact timings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "SpikeSample",
    "SpikeDataset",
    "DenseBatch",
    "SpikeRaster",
    "evidence_accumulation",
    "pattern_generation",
    "normalized_mse",
    "digits",
    "load_shd",
]

TASKS = ("classification", "regression")
_EPS = 1e-9  # tolerance in units of dt for binning and windows


# --------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpikeSample:
    """One trial: spike times (ms, float64), input channels (int64), label or target.

    ``times`` and ``ids`` are read-only views into the data set's arrays, sorted by time,
    then channel. ``label`` is the class (classification) or ``None``; ``target`` is the
    regression target, one row per time step, shape ``(n_steps, n_outputs)``, or ``None``.
    """

    times: np.ndarray
    ids: np.ndarray
    label: int | None = None
    target: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.times.shape[0])


class DenseBatch(NamedTuple):
    """What :meth:`SpikeDataset.to_dense` returns; unpacks as ``x, y, mask``.

    ``x``: float32 ``(n_steps, batch, n_inputs)`` spikes binned at ``dt`` (a
    :class:`SpikeRaster` that bins on reading, with ``to_dense(lazy=True)``).
    ``y``: int64 ``(batch,)`` labels (classification) or float32
    ``(n_steps, batch, n_outputs)`` targets (regression).
    ``mask``: bool ``(n_steps,)``, True on the steps of the readout window.
    """

    x: np.ndarray | SpikeRaster
    y: np.ndarray
    mask: np.ndarray


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _binned(x: np.ndarray, where: tuple, counts: bool) -> np.ndarray:
    """``x`` with a spike added at each ``(step, sample, channel)`` of ``where``: counted
    (``counts``), or 1 however many fall in one bin."""
    if counts:
        np.add.at(x, where, 1.0)
    else:
        x[where] = 1.0
    return x


class SpikeRaster:
    """A batch's spikes as the float32 ``(n_steps, batch, n_inputs)`` raster that
    :meth:`SpikeDataset.to_dense` returns, binned a range of steps at a time: ``r[t0:t1]``
    is the array of steps ``t0 .. t1 - 1`` alone, so a training run that reads its input a
    part at a time never holds the whole raster (``np.asarray(r)`` makes it whole)."""

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, steps: np.ndarray, owner: np.ndarray, ids: np.ndarray, shape: tuple, counts: bool):
        order = np.argsort(steps, kind="stable")
        self._steps, self._owner, self._ids = steps[order], owner[order], ids[order]
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self._counts = counts

    def __len__(self) -> int:
        return self.shape[0]

    def with_batch(self, batch: int) -> SpikeRaster:
        """The same spikes in a batch of ``batch`` >= this one's (the extra instances silent)."""
        return SpikeRaster(self._steps, self._owner, self._ids, (self.shape[0], batch, self.shape[2]), self._counts)

    def _bin(self, t0: int, t1: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._steps, [t0, t1])
        where = (self._steps[lo:hi] - t0, self._owner[lo:hi], self._ids[lo:hi])
        return _binned(np.zeros((t1 - t0, self.shape[1], self.shape[2]), dtype=np.float32), where, self._counts)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            t0, t1, _ = key.indices(self.shape[0])
            return self._bin(t0, max(t0, t1))
        return self._bin(0, self.shape[0])[key]

    def __array__(self, dtype=None, copy=None):
        x = self._bin(0, self.shape[0])
        return x if dtype is None else x.astype(dtype, copy=False)


class SpikeDataset:
    """A sequence of :class:`SpikeSample` with the metadata a trainer needs.

    Parameters
    ----------
    times, ids:
        all samples' spikes, concatenated: times in ms (finite, in ``[0, duration)``) and
        input channels (in ``[0, n_inputs)``).
    offsets:
        ``n_samples + 1`` non-decreasing indices; sample ``i`` owns spikes
        ``offsets[i]:offsets[i+1]``. ``offsets[0] == 0``, ``offsets[-1] == len(times)``.
    n_inputs, n_outputs:
        input channels; classes (classification) or target dimensions (regression).
    duration, dt:
        trial length and time step, in ms. A trial has ``n_steps = ceil(duration / dt)``
        steps; step ``k`` covers ``[k dt, (k+1) dt)``.
    task:
        ``"classification"`` (give ``labels``) or ``"regression"`` (give ``targets``).
    labels:
        ``(n_samples,)`` ints in ``[0, n_outputs)``.
    targets:
        ``(n_samples, n_steps, n_outputs)``, or ``(n_steps, n_outputs)`` for one target
        shared by every sample (stored once).
    readout_window:
        ``(start, end)`` in ms, the part of the trial where the loss counts; default: the
        whole trial.
    info:
        free-form dictionary about the data set (timings, channel groups, provenance).
    sample_info:
        per-sample arrays (first axis ``n_samples``) that follow the samples through
        slicing, shuffling and splitting (e.g. the cue sides of evidence accumulation).
    sort:
        sort each sample's spikes by time, then channel (default True; pass False only
        for spikes already in that order, to save the sort).

    Invalid input raises :class:`ValueError`; a bad spike is named by sample and position.
    The arrays are copied once and made read-only; subsets share them.

    Examples:
        >>> from spikeforge import SpikeDataset
        >>> data = SpikeDataset(times=[1.0, 5.0, 2.0], ids=[0, 1, 1], offsets=[0, 2, 3],
        ...                     n_inputs=2, n_outputs=2, duration=10.0, labels=[0, 1])
        >>> len(data), data[1].label
        (2, 1)
    """

    def __init__(
        self,
        times: Any,
        ids: Any,
        offsets: Any,
        *,
        n_inputs: int,
        n_outputs: int,
        duration: float,
        dt: float = 1.0,
        task: str = "classification",
        labels: Any = None,
        targets: Any = None,
        readout_window: tuple[float, float] | None = None,
        info: dict | None = None,
        sample_info: dict[str, Any] | None = None,
        sort: bool = True,
    ) -> None:
        n_inputs, n_outputs, duration, dt = _check_meta(n_inputs, n_outputs, duration, dt, task)
        times = np.array(times, dtype=np.float64).reshape(-1)
        try:
            ids_raw = np.asarray(ids)
            if ids_raw.size and not np.issubdtype(ids_raw.dtype, np.integer):
                if not np.all(np.isfinite(ids_raw)) or np.any(ids_raw != np.round(ids_raw)):
                    raise ValueError("SpikeDataset: ids must be integers (input channel indices)")
            ids = np.array(ids_raw, dtype=np.int64).reshape(-1)
        except TypeError as exc:
            raise ValueError(f"SpikeDataset: ids must be an integer array ({exc})") from None
        offsets = np.array(offsets, dtype=np.int64).reshape(-1)
        if times.shape != ids.shape:
            raise ValueError(f"SpikeDataset: times has {times.size} spikes but ids has {ids.size}")
        if offsets.size < 1:
            raise ValueError("SpikeDataset: offsets needs n_samples + 1 entries (at least [0])")
        if offsets[0] != 0 or offsets[-1] != times.size:
            raise ValueError(
                f"SpikeDataset: offsets must start at 0 and end at the number of spikes ({times.size}), "
                f"got {offsets[0]} ... {offsets[-1]}"
            )
        if np.any(np.diff(offsets) < 0):
            bad = int(np.flatnonzero(np.diff(offsets) < 0)[0])
            raise ValueError(f"SpikeDataset: offsets must be non-decreasing (sample {bad} has a negative length)")
        n = offsets.size - 1

        def where(k: int) -> str:
            s = int(np.searchsorted(offsets, k, side="right") - 1)
            return f"sample {s}, spike {k - int(offsets[s])}"

        bad = np.flatnonzero(~np.isfinite(times))
        if bad.size:
            raise ValueError(f"SpikeDataset: spike time {times[bad[0]]} is not finite ({where(int(bad[0]))})")
        bad = np.flatnonzero((times < 0) | (times >= duration))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"SpikeDataset: spike time {times[k]!r} ms is outside [0, duration={duration!r}) ms ({where(k)}; "
                f"{bad.size} such spikes)"
            )
        bad = np.flatnonzero((ids < 0) | (ids >= n_inputs))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"SpikeDataset: input channel {ids[k]} is out of range [0, n_inputs={n_inputs}) ({where(k)}; "
                f"{bad.size} such spikes)"
            )

        if sort and times.size:
            owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
            order = np.lexsort((ids, times, owner))
            times, ids = times[order], ids[order]

        labels_arr, targets_arr, target_index = _check_outputs(task, n, n_outputs, labels, targets, duration, dt)
        self._setup(
            times=_readonly(times),
            ids=_readonly(ids),
            starts=offsets[:-1].copy(),
            stops=offsets[1:].copy(),
            n_inputs=n_inputs,
            n_outputs=n_outputs,
            duration=duration,
            dt=dt,
            task=task,
            labels=labels_arr,
            targets=targets_arr,
            target_index=target_index,
            readout_window=_check_window(readout_window, duration),
            info=dict(info or {}),
            sample_info=_check_sample_info(sample_info, n),
        )
        if not self.readout_mask.any():
            raise ValueError(
                f"SpikeDataset: readout_window {self.readout_window} contains no step start k*dt (dt={dt:g} ms)"
            )

    # ---- internal construction (no validation: used by subsets) --------------------

    def _setup(self, **kw: Any) -> None:
        self._times: np.ndarray = kw["times"]
        self._ids: np.ndarray = kw["ids"]
        self._starts: np.ndarray = kw["starts"]
        self._stops: np.ndarray = kw["stops"]
        self.n_inputs: int = kw["n_inputs"]
        self.n_outputs: int = kw["n_outputs"]
        self.duration: float = kw["duration"]
        self.dt: float = kw["dt"]
        self.task: str = kw["task"]
        self._labels: np.ndarray | None = kw["labels"]
        self._targets: np.ndarray | None = kw["targets"]
        self._target_index: np.ndarray | None = kw["target_index"]
        self.readout_window: tuple[float, float] = kw["readout_window"]
        self.info: dict = kw["info"]
        self.sample_info: dict[str, np.ndarray] = kw["sample_info"]

    def _take(self, index: np.ndarray) -> SpikeDataset:
        new = SpikeDataset.__new__(SpikeDataset)
        new._setup(
            times=self._times,
            ids=self._ids,
            starts=self._starts[index],
            stops=self._stops[index],
            n_inputs=self.n_inputs,
            n_outputs=self.n_outputs,
            duration=self.duration,
            dt=self.dt,
            task=self.task,
            labels=None if self._labels is None else _readonly(self._labels[index]),
            targets=self._targets,
            target_index=None if self._target_index is None else self._target_index[index],
            readout_window=self.readout_window,
            info=dict(self.info),
            sample_info={k: _readonly(v[index]) for k, v in self.sample_info.items()},
        )
        return new

    @classmethod
    def from_samples(cls, samples: Sequence[SpikeSample], **meta: Any) -> SpikeDataset:
        """Build a data set from :class:`SpikeSample` objects; ``meta`` as for the constructor.

        Labels and targets come from the samples (for the task given in ``meta``).
        """
        samples = list(samples)
        lengths = [len(np.asarray(s.times).reshape(-1)) for s in samples]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        times = np.concatenate([np.asarray(s.times, np.float64).reshape(-1) for s in samples] or [np.zeros(0)])
        ids = np.concatenate([np.asarray(s.ids).reshape(-1) for s in samples] or [np.zeros(0, np.int64)])
        task = meta.get("task", "classification")
        if task == "classification" and "labels" not in meta:
            if any(s.label is None for s in samples):
                raise ValueError("SpikeDataset.from_samples: a classification sample has no label")
            meta["labels"] = [s.label for s in samples]
        if task == "regression" and "targets" not in meta:
            if any(s.target is None for s in samples):
                raise ValueError("SpikeDataset.from_samples: a regression sample has no target")
            meta["targets"] = np.stack([np.asarray(s.target) for s in samples]) if samples else None
        return cls(times, ids, offsets, **meta)

    @classmethod
    def from_pairs(
        cls,
        pairs: Any,
        *,
        n_inputs: int,
        n_outputs: int,
        dt: float = 1.0,
        task: str = "classification",
        readout_window: tuple[float, float] | None = None,
    ) -> SpikeDataset:
        """Build a data set from plain ``(x, y)`` pairs.

        ``x``: the spikes of one trial as an ``(n_steps, n_inputs)`` array of 0 and 1 (or
        bools), step ``k`` covering ``[k dt, (k+1) dt)``; every trial has the same number of
        steps. ``y``: the class, an integer in ``[0, n_outputs)`` (classification), or the
        target, ``(n_steps, n_outputs)`` numbers (regression). The readout window is the
        whole trial unless ``readout_window`` says otherwise. A bad pair raises
        :class:`ValueError` naming it.
        """
        try:
            pairs = list(pairs)
        except TypeError:
            raise ValueError(f"from_pairs: expected a sequence of (x, y) pairs, got {type(pairs).__name__}") from None
        if not pairs:
            raise ValueError("from_pairs: no (x, y) pairs")
        times, ids, offsets, ys = [], [], [0], []
        n_steps = None
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"from_pairs: item {i} is not an (x, y) pair")
            x = _pair_spikes(i, pair[0], n_inputs, n_steps)
            n_steps = x.shape[0]
            step, channel = np.nonzero(x)
            times.append(step * float(dt))
            ids.append(channel)
            offsets.append(offsets[-1] + step.size)
            ys.append(_pair_label(i, pair[1], n_outputs) if task == "classification"
                      else _pair_target(i, pair[1], n_steps, n_outputs))
        meta: dict[str, Any] = dict(n_inputs=n_inputs, n_outputs=n_outputs, duration=n_steps * float(dt), dt=dt,
                                    task=task, readout_window=readout_window, info={"name": "pairs"})
        if task == "classification":
            meta["labels"] = ys
        else:
            meta["targets"] = np.stack(ys)
        return cls(np.concatenate(times), np.concatenate(ids), offsets, **meta)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the samples in order (spikes, labels or targets) and the metadata
        that decides how they are binned: equal for equal data, whichever way it was built."""
        import hashlib

        h = hashlib.sha256()
        h.update(repr((len(self), self.n_inputs, self.n_outputs, float(self.duration), float(self.dt), self.task,
                       tuple(float(v) for v in self.readout_window))).encode())
        for sample in self:
            h.update(np.int64(len(sample)).tobytes())
            h.update(np.ascontiguousarray(sample.times, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(sample.ids, dtype=np.int64).tobytes())
            if sample.label is not None:
                h.update(np.int64(sample.label).tobytes())
            if sample.target is not None:
                h.update(np.ascontiguousarray(sample.target, dtype=np.float64).tobytes())
        return h.hexdigest()

    # ---- sequence protocol ------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._starts.shape[0])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            n = len(self)
            i = int(key)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"sample index {int(key)} out of range for a data set of {n} samples")
            return self._sample(i)
        if isinstance(key, slice):
            return self._take(np.arange(len(self))[key])
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index has shape {index.shape}, expected ({len(self)},)")
            return self._take(np.flatnonzero(index))
        if index.size == 0:
            index = index.astype(np.int64)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise IndexError("index a SpikeDataset with an int, a slice, or a 1-D array of ints or bools")
        n = len(self)
        if np.any((index < -n) | (index >= n)):
            raise IndexError(f"sample index out of range for a data set of {n} samples")
        return self._take(np.where(index < 0, index + n, index))

    def __iter__(self) -> Iterator[SpikeSample]:
        for i in range(len(self)):
            yield self._sample(i)

    def _sample(self, i: int) -> SpikeSample:
        a, b = int(self._starts[i]), int(self._stops[i])
        label = None if self._labels is None else int(self._labels[i])
        target = None
        if self._targets is not None:
            target = self._targets[int(self._target_index[i])]
        return SpikeSample(times=self._times[a:b], ids=self._ids[a:b], label=label, target=target)

    def __repr__(self) -> str:
        name = self.info.get("name", "SpikeDataset")
        return (
            f"<{name}: {len(self)} samples, {self.n_inputs} inputs, {self.n_outputs} outputs, {self.task}, "
            f"duration {self.duration:g} ms, dt {self.dt:g} ms, readout {self.readout_window[0]:g}-"
            f"{self.readout_window[1]:g} ms>"
        )

    # ---- properties ---------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """Time steps per trial, ``ceil(duration / dt)``."""
        return _n_steps(self.duration, self.dt)

    @property
    def labels(self) -> np.ndarray | None:
        """int64 ``(n_samples,)`` labels (classification), else None."""
        return self._labels

    @property
    def targets(self) -> np.ndarray | None:
        """``(n_samples, n_steps, n_outputs)`` targets (regression; a read-only view when shared), else None."""
        if self._targets is None:
            return None
        if self._targets.shape[0] == 1:
            return np.broadcast_to(self._targets[0], (len(self),) + self._targets.shape[1:])
        return self._targets[self._target_index]

    @property
    def spike_counts(self) -> np.ndarray:
        """Spikes per sample, ``(n_samples,)``."""
        return self._stops - self._starts

    @property
    def readout_mask(self) -> np.ndarray:
        """bool ``(n_steps,)``: step ``k`` is in the readout window if ``start <= k dt < end``."""
        k = np.arange(self.n_steps)
        start, end = self.readout_window
        return (k >= start / self.dt - _EPS) & (k < end / self.dt - _EPS)

    # ---- subsets and iteration ------------------------------------------------------

    def shuffled(self, seed: int | None) -> SpikeDataset:
        """The samples in a random order drawn from ``seed`` (same seed, same order; None: fresh entropy)."""
        return self._take(_rng(seed).permutation(len(self)))

    def split(self, fraction: float, seed: int | None) -> tuple[SpikeDataset, SpikeDataset]:
        """``(train, test)``: ``round(fraction * n)`` samples in ``train``, the rest in ``test``.

        With an integer ``seed`` the samples are shuffled first (deterministically); with
        ``seed=None`` the split keeps the stored order (first samples to ``train``).
        """
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"split: fraction must be in [0, 1], got {fraction!r}")
        n = len(self)
        order = np.arange(n) if seed is None else _rng(seed).permutation(n)
        k = int(round(float(fraction) * n))
        return self._take(order[:k]), self._take(order[k:])

    def batches(self, batch_size: int, seed: int | None = None, drop_last: bool = False) -> Iterator[list[SpikeSample]]:
        """Lists of ``batch_size`` samples covering the data set once (the last may be short).

        ``seed=None``: stored order; an integer shuffles with that seed (use e.g. the epoch
        number for a new order every epoch). ``drop_last`` drops a short last batch.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = np.arange(n) if seed is None else _rng(seed).permutation(n)
        for a in range(0, n, batch_size):
            idx = order[a : a + batch_size]
            if drop_last and idx.size < batch_size:
                return
            yield [self._sample(int(i)) for i in idx]

    # ---- dense conversion -----------------------------------------------------------

    def to_dense(self, samples: Sequence[SpikeSample] | SpikeDataset | None = None, counts: bool = False,
                 lazy: bool = False) -> DenseBatch:
        """Bin ``samples`` (default: the whole data set) at ``dt``, time-major.

        A spike at ``s`` ms goes into step ``floor(s / dt + 1e-9)`` (clipped to the last
        step). Returns ``DenseBatch(x, y, mask)``: ``x`` float32 ``(n_steps, batch,
        n_inputs)`` of 0/1 (several spikes of one channel in one step count once, unless
        ``counts=True``), ``y`` the int64 labels ``(batch,)`` or float32 targets
        ``(n_steps, batch, n_outputs)``, ``mask`` the bool readout mask ``(n_steps,)``.
        ``lazy=True``: ``x`` is a :class:`SpikeRaster`, binned a range of steps at a time
        when read.
        """
        if samples is None:
            samples = self
        samples = list(samples)
        b = len(samples)
        n_steps = self.n_steps
        shape = (n_steps, b, self.n_inputs)
        steps = owner = ids = np.zeros(0, np.int64)  # every spike: its step, sample and channel
        if b:
            lengths = np.array([len(s.times) for s in samples], dtype=np.int64)
            times = np.concatenate([np.asarray(s.times, np.float64) for s in samples])
            ids = np.concatenate([np.asarray(s.ids, np.int64) for s in samples])
            if ids.size and (ids.min() < 0 or ids.max() >= self.n_inputs):
                raise ValueError(f"to_dense: a spike's input channel is outside [0, n_inputs={self.n_inputs})")
            owner = np.repeat(np.arange(b), lengths)
            steps = np.clip(np.floor(times / self.dt + _EPS).astype(np.int64), 0, n_steps - 1)
        if lazy:
            x = SpikeRaster(steps, owner, ids, shape, counts)
        else:
            x = _binned(np.zeros(shape, dtype=np.float32), (steps, owner, ids), counts)
        if self.task == "classification":
            if any(s.label is None for s in samples):
                raise ValueError("to_dense: a sample of a classification data set has no label")
            y = np.array([s.label for s in samples], dtype=np.int64)
        else:
            if any(s.target is None for s in samples):
                raise ValueError("to_dense: a sample of a regression data set has no target")
            y = np.zeros((n_steps, b, self.n_outputs), dtype=np.float32)
            for j, s in enumerate(samples):
                t = np.asarray(s.target)
                if t.shape != (n_steps, self.n_outputs):
                    raise ValueError(f"to_dense: target of shape {t.shape}, expected ({n_steps}, {self.n_outputs})")
                y[:, j, :] = t
        return DenseBatch(x, y, self.readout_mask)


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------


def _n_steps(duration: float, dt: float) -> int:
    return max(1, int(math.ceil(duration / dt - _EPS)))


def _check_meta(n_inputs: Any, n_outputs: Any, duration: Any, dt: Any, task: str) -> tuple[int, int, float, float]:
    if task not in TASKS:
        raise ValueError(f"SpikeDataset: task must be one of {TASKS}, got {task!r}")
    for name, v in (("n_inputs", n_inputs), ("n_outputs", n_outputs)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"SpikeDataset: {name} must be a positive integer, got {v!r}")
    duration, dt = float(duration), float(dt)
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"SpikeDataset: duration must be a positive number of ms, got {duration!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"SpikeDataset: dt must be a positive number of ms, got {dt!r}")
    return int(n_inputs), int(n_outputs), duration, dt


def _check_window(window: Any, duration: float) -> tuple[float, float]:
    if window is None:
        return (0.0, duration)
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"SpikeDataset: readout_window must be (start, end) in ms, got {window!r}") from None
    if not (0.0 <= start < end <= duration):
        raise ValueError(
            f"SpikeDataset: readout_window {window!r} must satisfy 0 <= start < end <= duration ({duration:g} ms)"
        )
    return (start, end)


def _check_outputs(
    task: str, n: int, n_outputs: int, labels: Any, targets: Any, duration: float, dt: float
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    if task == "classification":
        if targets is not None:
            raise ValueError("SpikeDataset: a classification data set takes labels, not targets")
        if labels is None:
            raise ValueError("SpikeDataset: a classification data set needs labels (one int per sample)")
        raw = np.asarray(labels)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"SpikeDataset: labels must be integers, got dtype {raw.dtype}")
        lab = raw.astype(np.int64).reshape(-1)
        if lab.size != n:
            raise ValueError(f"SpikeDataset: {lab.size} labels for {n} samples")
        bad = np.flatnonzero((lab < 0) | (lab >= n_outputs))
        if bad.size:
            raise ValueError(
                f"SpikeDataset: label {lab[bad[0]]} of sample {bad[0]} is outside [0, n_outputs={n_outputs})"
            )
        return _readonly(lab), None, None
    if labels is not None:
        raise ValueError("SpikeDataset: a regression data set takes targets, not labels")
    if targets is None:
        raise ValueError("SpikeDataset: a regression data set needs targets (n_samples, n_steps, n_outputs)")
    tgt = np.array(targets, dtype=np.float32)
    if not np.all(np.isfinite(tgt)):
        raise ValueError("SpikeDataset: targets contain NaN or infinity")
    n_steps = _n_steps(duration, dt)
    if tgt.ndim == 2:
        if tgt.shape != (n_steps, n_outputs):
            raise ValueError(f"SpikeDataset: shared target has shape {tgt.shape}, expected ({n_steps}, {n_outputs})")
        return None, _readonly(tgt[None]), np.zeros(n, dtype=np.int64)
    if tgt.shape != (n, n_steps, n_outputs):
        raise ValueError(f"SpikeDataset: targets have shape {tgt.shape}, expected ({n}, {n_steps}, {n_outputs})")
    return None, _readonly(tgt), np.arange(n, dtype=np.int64)


def _check_sample_info(sample_info: dict | None, n: int) -> dict[str, np.ndarray]:
    out = {}
    for key, value in (sample_info or {}).items():
        arr = np.array(value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"SpikeDataset: sample_info[{key!r}] must have {n} rows (one per sample)")
        out[key] = _readonly(arr)
    return out


def _rng(seed: Any) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _sample_rng(seed: int, i: int) -> np.random.Generator:
    """Sample ``i``'s own stream: a sample depends on (seed, i) only, not on n_samples."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(i,))))


def _grid_poisson(
    rng: np.random.Generator,
    k0: np.ndarray,
    k1: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    rate_hz: np.ndarray,
    dt: float,
    n_inputs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Spikes on the time grid: in each segment (steps ``[k0, k1)`` x channels ``[c0, c1)``,
    rate in Hz) every (step, channel) spikes independently with probability ``rate * dt``.

    Drawn as a Poisson number of points per segment with intensity ``-log(1 - p)`` per cell,
    dropped uniformly into the cells, duplicates merged: a cell is hit with probability
    exactly ``p``. Returns (step, channel), sorted by step then channel.
    """
    p = np.asarray(rate_hz, np.float64) * dt / 1000.0
    if np.any(p < 0) or np.any(p >= 1):
        raise ValueError(f"rate * dt must be in [0, 1000) Hz*ms (one spike per step at most), got p={p.max():g}")
    cells = np.maximum(k1 - k0, 0) * np.maximum(c1 - c0, 0)
    counts = rng.poisson(-np.log1p(-p) * cells)
    seg = np.repeat(np.arange(cells.size), counts)
    u = rng.random(seg.size)
    flat = np.minimum((u * cells[seg]).astype(np.int64), cells[seg] - 1)
    width = (c1 - c0)[seg]
    key = np.unique((k0[seg] + flat // width) * n_inputs + c0[seg] + flat % width)
    return key // n_inputs, key % n_inputs


def _first_step(t: float, dt: float) -> int:
    """First step whose start time ``k dt`` is at or after ``t``."""
    return int(math.ceil(t / dt - _EPS))


# --------------------------------------------------------------------------------------
# evidence accumulation (Bellec et al. 2020, Fig. 3)
# --------------------------------------------------------------------------------------


def evidence_accumulation(
    n_samples: int,
    seed: int,
    n_cues: int = 7,
    *,
    t_cue: float = 100.0,
    t_pause: float = 50.0,
    delay: float = 1050.0,
    t_recall: float = 150.0,
    channels_per_group: int = 10,
    cue_rate: float = 40.0,
    recall_rate: float = 40.0,
    background_rate: float = 10.0,
    cue_prob: float = 0.7,
    dt: float = 1.0,
) -> SpikeDataset:
    """The cue (evidence) accumulation task of Bellec et al. 2020 (e-prop, Fig. 3).

    Four groups of ``channels_per_group`` (10) input channels, 40 in all:
    ``0-9`` left cue, ``10-19`` right cue, ``20-29`` recall cue, ``30-39`` background.

    Timing (defaults; ms, half-open intervals), 2250 ms per trial::

        cue k = 0..6     [150 k, 150 k + 100)   left or right cue channels at 40 Hz
        pause            [150 k + 100, 150 (k + 1))   silence (but for the background)
        delay            [1050, 2100)           silence
        recall           [2100, 2250)           recall channels at 40 Hz = readout window
        background       [0, 2250)              background channels at 10 Hz throughout

    i.e. ``duration = n_cues * (t_cue + t_pause) + delay + t_recall``. Label 0 = left,
    1 = right: the side that got more cues (``n_cues`` must be odd). As in the authors'
    code, each trial first picks a favoured side (fair coin), then each cue independently
    goes to the favoured side with probability ``cue_prob`` (0.7), so labels are balanced.

    Spikes are on the ``dt`` grid: in each step a channel spikes with probability
    ``rate * dt`` (a Bernoulli process, as in the reference implementation). Sample ``i``
    depends only on ``(seed, i)``, so ``evidence_accumulation(100, s)[:10]`` equals
    ``evidence_accumulation(10, s)``. ``sample_info["cue_sides"]`` holds the cue sides
    (``n_samples x n_cues``, 0 left, 1 right); ``info`` the windows and channel groups.

    Sources: the rates (40 Hz cues and recall, 10 Hz background), 7 cues of 100 ms spaced
    150 ms, the 150 ms recall, 40 inputs in 4 groups, ``p = 0.3/0.7`` and the 2250 ms trial
    follow the authors' code (IGITUGraz/eligibility_propagation, ``generate_click_task_data``
    and the Fig. 3 tutorial). That code puts each cue's 50 ms of silence *before* the cue and
    leaves 1050 ms between the last cue and the recall; here each cue is followed by its
    pause, so the last cue ends at 1000 ms and the recall starts 1100 ms later (same total).
    The paper's text itself was not checked; the numbers come from that code.

    Examples:
        >>> from spikeforge import evidence_accumulation
        >>> data = evidence_accumulation(4, seed=0)
        >>> len(data), data.n_inputs, data.n_outputs, data.duration
        (4, 40, 2, 2250.0)
    """
    n_samples = _check_count(n_samples, "n_samples")
    n_cues = _check_count(n_cues, "n_cues")
    if n_cues % 2 == 0:
        raise ValueError(f"evidence_accumulation: n_cues must be odd so that there is no tie, got {n_cues}")
    g = _check_count(channels_per_group, "channels_per_group")
    if not 0.0 <= cue_prob <= 1.0:
        raise ValueError(f"evidence_accumulation: cue_prob must be in [0, 1], got {cue_prob!r}")
    for name, v in (("t_cue", t_cue), ("t_recall", t_recall)):
        if not v > 0:
            raise ValueError(f"evidence_accumulation: {name} must be > 0 ms, got {v!r}")
    for name, v in (("t_pause", t_pause), ("delay", delay)):
        if not v >= 0:
            raise ValueError(f"evidence_accumulation: {name} must be >= 0 ms, got {v!r}")
    dt = _check_dt(dt)
    period = t_cue + t_pause
    recall_start = n_cues * period + delay
    duration = recall_start + t_recall
    n_inputs = 4 * g
    n_steps = _n_steps(duration, dt)

    cue_k0 = np.array([_first_step(k * period, dt) for k in range(n_cues)], dtype=np.int64)
    cue_k1 = np.array([_first_step(k * period + t_cue, dt) for k in range(n_cues)], dtype=np.int64)
    r0, r1 = _first_step(recall_start, dt), n_steps
    # fixed segments: recall group during recall, background group throughout
    fix_k0, fix_k1 = np.array([r0, 0]), np.array([r1, n_steps])
    fix_c0, fix_c1 = np.array([2 * g, 3 * g]), np.array([3 * g, 4 * g])
    fix_rate = np.array([recall_rate, background_rate], dtype=np.float64)

    all_steps, all_ids, lengths = [], [], np.zeros(n_samples, np.int64)
    sides = np.zeros((n_samples, n_cues), dtype=np.int8)
    for i in range(n_samples):
        rng = _sample_rng(seed, i)
        favoured = int(rng.integers(2))
        s = np.where(rng.random(n_cues) < cue_prob, favoured, 1 - favoured)
        sides[i] = s
        steps, ids = _grid_poisson(
            rng,
            np.concatenate([cue_k0, fix_k0]),
            np.concatenate([cue_k1, fix_k1]),
            np.concatenate([s * g, fix_c0]),
            np.concatenate([s * g + g, fix_c1]),
            np.concatenate([np.full(n_cues, float(cue_rate)), fix_rate]),
            dt,
            n_inputs,
        )
        all_steps.append(steps)
        all_ids.append(ids)
        lengths[i] = steps.size
    labels = (sides.sum(axis=1) * 2 > n_cues).astype(np.int64)
    info = {
        "name": "evidence_accumulation",
        "channels": {"left": (0, g), "right": (g, 2 * g), "recall": (2 * g, 3 * g), "background": (3 * g, 4 * g)},
        "cue_windows": [(k * period, k * period + t_cue) for k in range(n_cues)],
        "recall_window": (recall_start, duration),
        "rates_hz": {"cue": cue_rate, "recall": recall_rate, "background": background_rate},
        "labels": {0: "left", 1: "right"},
        "seed": seed,
    }
    return _from_steps(
        all_steps,
        all_ids,
        lengths,
        dt,
        n_inputs=n_inputs,
        n_outputs=2,
        duration=duration,
        task="classification",
        labels=labels,
        readout_window=(recall_start, duration),
        info=info,
        sample_info={"cue_sides": sides},
    )


def _check_dt(dt: Any) -> float:
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of ms, got {dt!r}")
    return dt


def _check_count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _from_steps(
    steps: list[np.ndarray], ids: list[np.ndarray], lengths: np.ndarray, dt: float, **meta: Any
) -> SpikeDataset:
    """Spikes given as grid steps -> times ``k dt`` (already sorted per sample)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    all_steps = np.concatenate(steps) if steps else np.zeros(0, np.int64)
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    return SpikeDataset(all_steps * dt, all_ids, offsets, dt=dt, sort=False, **meta)


# --------------------------------------------------------------------------------------
# pattern generation (Bellec et al. 2020, Fig. 2)
# --------------------------------------------------------------------------------------


def pattern_generation(
    n_samples: int,
    seed: int,
    n_outputs: int = 3,
    duration: float = 1000.0,
    *,
    n_inputs: int = 100,
    rate: float = 50.0,
    frequencies: Sequence[float] = (1.0, 2.0, 3.0, 5.0),
    amplitude_range: tuple[float, float] = (0.5, 2.0),
    normalize: bool = True,
    dt: float = 1.0,
) -> SpikeDataset:
    """The pattern generation task of Bellec et al. 2020 (e-prop, Fig. 2): a regression.

    Input: ``n_inputs`` (100) channels of *frozen* Poisson noise at ``rate`` Hz (50 Hz, the
    authors' tutorial value), drawn once from ``seed``: every sample has the same spikes
    (stored once). Target, per output ``d`` and step ``k`` (``t = k dt`` in seconds)::

        y_d(t) = sum_j a_dj sin(2 pi f_j t + phi_dj),   f = 1, 2, 3, 5 Hz,
        a_dj ~ U(0.5, 2), phi_dj ~ U(0, 2 pi)

    and with ``normalize`` (default, as in the authors' ``sum_of_sines_target``) shifted
    so that ``y_d(0) = 0`` and scaled so that ``max |y_d| = 1``. The target is the same for
    all samples (one pattern to learn); ``n_samples`` only sets how many copies one epoch
    has. The readout window is the whole trial. The input and the target come from
    independent streams of ``seed``: changing ``n_outputs`` does not change the input.
    Score with :func:`normalized_mse`.

    Examples:
        >>> from spikeforge import pattern_generation
        >>> data = pattern_generation(2, seed=0, duration=100.0)
        >>> len(data), data.n_inputs, data.n_outputs, data.task
        (2, 100, 3, 'regression')
    """
    n_samples = _check_count(n_samples, "n_samples")
    n_outputs = _check_count(n_outputs, "n_outputs")
    n_inputs = _check_count(n_inputs, "n_inputs")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dt, duration = _check_dt(dt), float(duration)
    if not duration > 0:
        raise ValueError(f"pattern_generation: duration must be > 0 ms, got {duration!r}")
    lo, hi = (float(v) for v in amplitude_range)
    freqs = np.asarray(frequencies, dtype=np.float64).reshape(-1)
    n_steps = _n_steps(duration, dt)
    input_ss, target_ss = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.Generator(np.random.PCG64(input_ss))
    steps, ids = _grid_poisson(
        rng, np.array([0]), np.array([n_steps]), np.array([0]), np.array([n_inputs]), np.array([rate]), dt, n_inputs
    )
    rng = np.random.Generator(np.random.PCG64(target_ss))
    amps = rng.uniform(lo, hi, size=(n_outputs, freqs.size))
    phases = rng.uniform(0.0, 2 * np.pi, size=(n_outputs, freqs.size))
    t = np.arange(n_steps) * dt / 1000.0
    y = np.einsum("dj,tdj->td", amps, np.sin(2 * np.pi * freqs[None, None, :] * t[:, None, None] + phases[None]))
    if normalize:
        y = y - y[0]
        y = y / np.maximum(np.abs(y).max(axis=0), 1e-6)
    one = SpikeDataset(
        steps * dt,
        ids,
        [0, steps.size],
        n_inputs=n_inputs,
        n_outputs=n_outputs,
        duration=duration,
        dt=dt,
        task="regression",
        targets=y,
        info={
            "name": "pattern_generation",
            "rate_hz": rate,
            "frequencies_hz": tuple(freqs.tolist()),
            "amplitudes": amps,
            "phases": phases,
            "normalize": normalize,
            "seed": seed,
        },
        sort=False,
    )
    return one[np.zeros(n_samples, dtype=np.int64)]


def normalized_mse(prediction: Any, target: Any) -> float:
    """``mean((prediction - target)**2) / var(target)``: 0 is perfect, 1 is as good as predicting the mean.

    Both arrays must have the same shape; mean and variance run over all elements.
    """
    p = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"normalized_mse: prediction has shape {p.shape}, target {t.shape}")
    var = float(np.var(t))
    if not var > 0:
        raise ValueError("normalized_mse: the target has zero variance")
    return float(np.mean((p - t) ** 2) / var)


# --------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------


def digits(
    seed: int = 0,
    dt: float = 1.0,
    duration: float | None = None,
    encoding: str = "latency",
    *,
    t_max: float = 20.0,
    threshold: float = 0.0,
    max_rate: float = 100.0,
    readout_window: tuple[float, float] | None = None,
    hold: int = 1,
    levels: int = 1,
) -> SpikeDataset:
    """scikit-learn's 8x8 handwritten digits (1797 samples, 10 classes, bundled: no download).

    64 input channels, channel ``8 * row + col`` for pixel (row, col); grey levels ``v`` in
    0..16. Needs scikit-learn (``pip install 'spikeforge[data]'``).

    * ``encoding="latency"``: each pixel with ``v > threshold`` spikes once, at
      ``(1 - v / 16) * t_max`` ms (brightest first, at 0 ms; default ``t_max`` 20 ms, so a
      level-1 pixel spikes at 18.75 ms). Times are exact, not snapped to the grid.
      Deterministic: ``seed`` is unused. Default readout window: ``[t_max, duration)``,
      after the last input spike (20-40 ms).
    * ``encoding="rate"``: each pixel fires over the whole trial with rate
      ``v / 16 * max_rate`` Hz (100 Hz for a full pixel), a Bernoulli process on the
      ``dt`` grid as in :func:`evidence_accumulation`; sample ``i`` depends only on
      ``(seed, i)``. Default readout window: the second half ``[duration / 2, duration)``.
    * ``encoding="pixels"``: the image shown pixel by pixel, row by row (sequential digits):
      pixel ``i`` (channel order above) is held for ``hold`` steps, ``[i hold, (i+1) hold)``,
      on ``levels`` input channels, a thermometer code of its grey level: channel ``j``
      spikes in every step of the pixel's window when ``v > max(threshold, 16 j / levels)``
      (``levels=1``: one channel, on for every pixel brighter than ``threshold``). Default
      ``duration``: the ``64 hold`` steps (a longer one adds silent steps after the image).
      Deterministic. Default readout window: the whole trial.

    ``duration`` defaults to 40 ms (latency, rate).

    Examples:
        >>> from spikeforge import digits
        >>> data = digits()
        >>> len(data), data.n_inputs, data.n_outputs, data.duration
        (1797, 64, 10, 40.0)
        >>> train, test = data[:1500], data[1500:]
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "spikeforge.training.datasets.digits needs scikit-learn: pip install 'spikeforge[data]'"
        ) from None
    if encoding not in ("latency", "rate", "pixels"):
        raise ValueError(f"digits: encoding must be 'latency', 'rate' or 'pixels', got {encoding!r}")
    dt = _check_dt(dt)
    if encoding == "pixels":
        hold, levels = _check_count(hold, "digits: hold"), _check_count(levels, "digits: levels")
    duration = float(duration if duration is not None else 64 * hold * dt if encoding == "pixels" else 40.0)
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"digits: duration must be > 0 ms, got {duration!r}")
    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64)  # (1797, 64), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    n = images.shape[0]
    if encoding == "pixels":
        return _digit_pixels(images, labels, dt, duration, hold, levels, threshold, readout_window)
    if encoding == "latency":
        if not 0 < t_max <= duration:
            raise ValueError(f"digits: t_max must be in (0, duration={duration:g}] ms, got {t_max!r}")
        rows, cols = np.nonzero((images > threshold) & (images > 0))
        times = (1.0 - images[rows, cols] / 16.0) * t_max
        keep = times < duration
        rows, cols, times = rows[keep], cols[keep], times[keep]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        window = readout_window if readout_window is not None else (min(t_max, duration - dt), duration)
        params = {"t_max": t_max, "threshold": threshold}
        return SpikeDataset(
            times,
            cols,
            offsets,
            n_inputs=64,
            n_outputs=10,
            duration=duration,
            dt=dt,
            labels=labels,
            readout_window=window,
            info={"name": "digits", "encoding": encoding, **params},
        )
    n_steps = _n_steps(duration, dt)
    all_steps, all_ids, lengths = [], [], np.zeros(n, np.int64)
    k0, k1 = np.zeros(64, np.int64), np.full(64, n_steps, np.int64)
    c0 = np.arange(64, dtype=np.int64)
    for i in range(n):
        rates = images[i] / 16.0 * max_rate
        steps, ids = _grid_poisson(_sample_rng(seed, i), k0, k1, c0, c0 + 1, rates, dt, 64)
        all_steps.append(steps)
        all_ids.append(ids)
        lengths[i] = steps.size
    return _from_steps(
        all_steps,
        all_ids,
        lengths,
        dt,
        n_inputs=64,
        n_outputs=10,
        duration=duration,
        task="classification",
        labels=labels,
        readout_window=readout_window if readout_window is not None else (duration / 2, duration),
        info={"name": "digits", "encoding": encoding, "max_rate_hz": max_rate, "seed": seed},
    )


def _digit_pixels(images, labels, dt, duration, hold, levels, threshold, readout_window) -> SpikeDataset:
    """``digits(encoding="pixels")``: pixel ``i`` on steps ``[i hold, (i+1) hold)``, channel ``j``
    of the thermometer code on while the pixel's grey level is above ``max(threshold, 16 j / levels)``."""
    n_steps = _n_steps(duration, dt)
    if n_steps < 64 * hold:
        raise ValueError(f"digits: duration {duration:g} ms is shorter than the 64 pixels x hold={hold} steps "
                         f"x dt={dt:g} ms")
    cuts = np.maximum(threshold, 16.0 * np.arange(levels) / levels)
    on = images[:, :, None] > cuts  # (sample, pixel, channel)
    sample, pixel, channel = np.nonzero(on)  # sample-major, then pixel (= time), then channel
    lengths = np.bincount(sample, minlength=images.shape[0]) * hold
    # every (pixel, channel) that is on spikes in each of the pixel's hold steps; sorted by
    # sample, then step, then channel
    steps = (pixel[:, None] * hold + np.arange(hold, dtype=np.int64)[None, :]).ravel()
    ids, owner = np.repeat(channel, hold), np.repeat(sample, hold)
    order = np.lexsort((ids, steps, owner))
    all_steps, all_ids = [steps[order]], [ids[order]]
    return _from_steps(
        all_steps,
        all_ids,
        lengths,
        dt,
        n_inputs=levels,
        n_outputs=10,
        duration=duration,
        task="classification",
        labels=labels,
        readout_window=readout_window if readout_window is not None else (0.0, duration),
        info={"name": "digits", "encoding": "pixels", "hold": hold, "levels": levels, "threshold": threshold},
    )


# --------------------------------------------------------------------------------------
# Spiking Heidelberg Digits (Cramer et al. 2020)
# --------------------------------------------------------------------------------------

_SHD_WHERE = (
    "The Spiking Heidelberg Digits (SHD) files (shd_train.h5, shd_test.h5) are published, under CC BY 4.0, on the "
    "official page of the Heidelberg spiking data sets kept by the Zenke lab (Cramer, Stradmann, Schemmel & Zenke, "
    "'The Heidelberg spiking data sets for the systematic evaluation of spiking neural networks', IEEE TNNLS 2020, "
    "doi:10.1109/TNNLS.2020.3044364). Download one yourself, decompress it, and pass its path: spikeforge does not "
    "download data."
)


def load_shd(
    path: str | os.PathLike,
    max_samples: int | None = None,
    dt: float = 1.0,
    max_time: float | None = 1000.0,
    *,
    readout_window: tuple[float, float] | None = None,
    n_inputs: int = 700,
    n_classes: int = 20,
) -> SpikeDataset:
    """Read a Spiking Heidelberg Digits HDF5 file (Cramer et al. 2020) into a :class:`SpikeDataset`.

    The file holds ``spikes/times`` (one variable-length float array per sample, seconds),
    ``spikes/units`` (variable-length int arrays, channels 0..699) and ``labels`` (20
    classes: digits 0-9 in English and German); ``extra/...`` is ignored except
    ``extra/speaker``, kept as ``sample_info["speaker"]`` when present.

    Times are converted to ms. ``max_time`` (ms, default 1000) is the trial duration:
    spikes at or after it are dropped (SHD trials last up to about 1.4 s, most of the
    activity is in the first second). ``max_time=None`` keeps every spike, with the
    duration the latest spike rounded up to the next ``dt``. ``max_samples`` reads only
    the first samples. Classification, readout window the whole trial unless
    ``readout_window`` is given. ``n_inputs``/``n_classes`` let the same reader take the
    Spiking Speech Commands files (700 inputs, 35 classes). Needs h5py
    (``pip install 'spikeforge[data]'``).

    Examples:
        >>> from spikeforge import load_shd
        >>> train = load_shd("shd_train.h5", max_samples=256)   # doctest: +SKIP
        >>> ssc = load_shd("ssc_train.h5", n_classes=35)        # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_shd: no file at {path!r}. {_SHD_WHERE}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"load_shd: {path!r} is a directory; give the path of an SHD .h5 file")
    try:
        import h5py
    except ImportError:
        raise ImportError("spikeforge.training.datasets.load_shd needs h5py: pip install 'spikeforge[data]'") from None
    dt = _check_dt(dt)
    if max_samples is not None:
        max_samples = int(max_samples)
        if max_samples < 0:
            raise ValueError(f"load_shd: max_samples must be >= 0, got {max_samples}")
    times_list, units_list, labels, speaker = _read_shd_arrays(h5py, path, max_samples)
    n = labels.shape[0]
    lengths = np.zeros(n, np.int64)
    for i in range(n):
        times_list[i] = np.asarray(times_list[i], dtype=np.float64).reshape(-1) * 1000.0
        units_list[i] = np.asarray(units_list[i]).reshape(-1)
        if times_list[i].size != units_list[i].size:
            raise ValueError(
                f"load_shd: {path!r}: sample {i} has {times_list[i].size} spike times but {units_list[i].size} units"
            )
        lengths[i] = times_list[i].size
    times = np.concatenate(times_list) if n else np.zeros(0)
    units = np.concatenate(units_list) if n else np.zeros(0, np.int64)
    if units.size and not np.issubdtype(units.dtype, np.integer):
        raise ValueError(f"load_shd: {path!r}: spikes/units must hold integers, found {units.dtype}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"load_shd: {path!r}: labels must be integers, found {labels.dtype}")
    owner = np.repeat(np.arange(n), lengths)
    if max_time is None:
        finite = times[np.isfinite(times)]
        last = float(finite.max()) if finite.size else 0.0
        duration = (math.floor(last / dt + _EPS) + 1) * dt
    else:
        duration = float(max_time)
        keep = ~(times >= duration)  # NaN stays, so that validation reports it
        times, units, owner = times[keep], units[keep], owner[keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))])
    try:
        return SpikeDataset(
            times,
            units,
            offsets,
            n_inputs=n_inputs,
            n_outputs=n_classes,
            duration=duration,
            dt=dt,
            task="classification",
            labels=labels.astype(np.int64),
            readout_window=readout_window,
            info={"name": "shd", "path": path, "max_time": max_time},
            sample_info=None if speaker is None else {"speaker": speaker},
        )
    except ValueError as exc:
        raise ValueError(f"load_shd: {path!r}: {exc}") from None


def _read_shd_arrays(h5py, path: str, max_samples: int | None):
    """(spike times per sample in s, units per sample, labels, speakers or None) of the first
    ``max_samples`` samples (all if None) of the SHD file at ``path``; checks its layout."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        compressed = path.endswith((".gz", ".zip"))
        hint = " (SHD files are distributed compressed: decompress them first)" if compressed else ""
        raise ValueError(f"load_shd: {path!r} is not a readable HDF5 file{hint}: {exc}") from None
    with f:
        missing = [name for name in ("spikes/times", "spikes/units", "labels") if name not in f]
        if missing:
            raise ValueError(
                f"load_shd: {path!r} is not an SHD file: missing {', '.join(repr(m) for m in missing)} "
                "(expected datasets spikes/times, spikes/units and labels)"
            )
        d_times, d_units, d_labels = f["spikes/times"], f["spikes/units"], f["labels"]
        for name, d in (("spikes/times", d_times), ("spikes/units", d_units), ("labels", d_labels)):
            if not isinstance(d, h5py.Dataset) or d.ndim != 1:
                raise ValueError(f"load_shd: {path!r}: {name!r} must be a one-dimensional dataset")
        n = d_labels.shape[0]
        if d_times.shape[0] != n or d_units.shape[0] != n:
            raise ValueError(
                f"load_shd: {path!r}: spikes/times has {d_times.shape[0]} samples, spikes/units {d_units.shape[0]}, "
                f"labels {n}; they must match"
            )
        if max_samples is not None:
            n = min(n, max_samples)
        times_list = list(d_times[:n])
        units_list = list(d_units[:n])
        labels = np.asarray(d_labels[:n])
        speaker = None
        if "extra/speaker" in f and isinstance(f["extra/speaker"], h5py.Dataset):
            sp = f["extra/speaker"]
            if sp.ndim == 1 and sp.shape[0] >= n:
                speaker = np.asarray(sp[:n])
    return times_list, units_list, labels, speaker

def _pair_spikes(i: int, x, n_inputs: int, n_steps: int | None) -> np.ndarray:
    """``x`` of pair ``i`` of :meth:`SpikeDataset.from_pairs`: (n_steps, n_inputs) zeros and ones,
    as long as the pairs before it (``n_steps``, None for the first)."""
    try:
        x = np.asarray(x)
        if x.dtype == object:
            raise TypeError
        x = x.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"from_pairs: pair {i}: x must be an array of numbers") from None
    if x.ndim != 2 or x.shape[1] != n_inputs:
        raise ValueError(f"from_pairs: pair {i}: x must have shape (n_steps, n_inputs={n_inputs}), got {x.shape}")
    if n_steps is None:
        n_steps = x.shape[0]
    if x.shape[0] != n_steps or n_steps < 1:
        raise ValueError(f"from_pairs: pair {i}: x has {x.shape[0]} steps, pair 0 has {n_steps} "
                         "(every trial must have the same length, at least 1 step)")
    if not np.all((x == 0) | (x == 1)):
        raise ValueError(f"from_pairs: pair {i}: x must hold spikes, 0 or 1 per step and input")
    return x


def _pair_label(i: int, y, n_outputs: int) -> int:
    """``y`` of pair ``i`` of a classification: a class in [0, n_outputs)."""
    if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)) or not 0 <= y < n_outputs:
        raise ValueError(f"from_pairs: pair {i}: y must be a class, an integer in [0, {n_outputs}), got {y!r}")
    return int(y)


def _pair_target(i: int, y, n_steps: int, n_outputs: int) -> np.ndarray:
    """``y`` of pair ``i`` of a regression: (n_steps, n_outputs) finite numbers."""
    try:
        target = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"from_pairs: pair {i}: y must be an array of numbers") from None
    if target.shape != (n_steps, n_outputs) or not np.all(np.isfinite(target)):
        raise ValueError(f"from_pairs: pair {i}: y must be ({n_steps}, {n_outputs}) finite numbers "
                         f"(the target of every step), got shape {target.shape}")
    return target
