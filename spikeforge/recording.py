"""What a network records: which neurons, how often.

A variable recording keeps ``neurons`` (all, or a list of indices) every ``every``-th step:
the steps ``n`` with ``n % every == 0``. A spike recording may keep a subset of neurons too.
A population-rate recording keeps, per step and batch instance, the number of the
population's spikes. Everything here is plain data checked in Python; the generated code
only copies what it is told to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NetworkError


@dataclass(frozen=True)
class VarRecording:
    """Record ``var`` of ``population``: ``neurons`` (None = all) at steps ``n % every == 0``."""

    population: str
    var: str
    neurons: np.ndarray | None = None
    every: int = 1


def neuron_selection(neurons, size: int, where: str) -> np.ndarray | None:
    """``neurons`` as an array of distinct indices in [0, size), or None for all of them.

    Accepted: None or ``"all"``; a list (or array) of indices; a ``slice`` or ``range``;
    a mapping ``{start, stop, step}`` (each optional, as in a Python slice, e.g.
    ``{step: 10}`` for every 10th neuron)."""
    if neurons is None or (isinstance(neurons, str) and neurons == "all"):
        return None
    if isinstance(neurons, dict):
        unknown = sorted(set(neurons) - {"start", "stop", "step"})
        if unknown:
            raise NetworkError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} in a neuron slice "
                               "(start, stop, step)")
        parts = [neurons.get(k) for k in ("start", "stop", "step")]
        for k, v in zip(("start", "stop", "step"), parts, strict=True):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise NetworkError(f"{where}: neuron slice {k} must be an integer, got {v!r}")
        neurons = slice(*parts)
    if isinstance(neurons, slice):
        if neurons.step is not None and neurons.step <= 0:
            raise NetworkError(f"{where}: neuron slice step must be positive, got {neurons.step}")
        idx = np.arange(size)[neurons]
    elif isinstance(neurons, range):
        idx = np.asarray(neurons, dtype=np.int64)
    elif isinstance(neurons, str):
        raise NetworkError(f"{where}: neurons must be 'all', a list of indices or {{start, stop, step}}, "
                           f"got {neurons!r}")
    else:
        try:
            idx = np.asarray(neurons)
        except (TypeError, ValueError):
            raise NetworkError(f"{where}: neurons must be a list of indices, got {neurons!r}") from None
        if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iuf" or not np.all(idx == np.round(idx)))):
            raise NetworkError(f"{where}: neurons must be a flat list of integer indices, got {neurons!r}")
    idx = idx.astype(np.int64)
    if idx.size == 0:
        raise NetworkError(f"{where}: the neuron selection is empty")
    if idx.min() < 0 or idx.max() >= size:
        bad = int(idx[(idx < 0) | (idx >= size)][0])
        raise NetworkError(f"{where}: neuron index {bad} is out of range [0, {size})")
    if np.unique(idx).size != idx.size:
        raise NetworkError(f"{where}: the neuron selection names a neuron twice")
    return idx


def check_every(every, where: str) -> int:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise NetworkError(f"{where}: every must be a positive number of steps, got {every!r}")
    return int(every)


def recorded_steps(first: int, end: int, every: int) -> np.ndarray:
    """The steps ``n`` in ``[first, end)`` with ``n % every == 0``."""
    start = -(-first // every) * every
    return np.arange(start, max(start, end), every, dtype=np.int64)


def rows_between(first: int, end: int, every: int) -> int:
    """How many steps of ``[first, end)`` a recording every ``every`` steps keeps."""
    return max(0, -(-end // every) - -(-first // every))
