"""Spike times given per batch instance, packed for generated code: the times of each neuron in
order, one block per instance, with a [start, end) range per (instance, neuron)."""

from __future__ import annotations

import numpy as np

from ..errors import NetworkError


def pack_spike_times(population: str, per_batch: list, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_batch``: one ``(times, ids)`` pair per batch instance, for a population of ``n``
    neurons. Returns ``start`` and ``end`` (uint32, shape (batch, n)) and the times (float64,
    grouped by instance, then neuron, ascending within a neuron). Refuses, naming the
    population, pairs of unequal length, non-finite times and ids outside [0, n)."""
    start = np.zeros((len(per_batch), n), dtype=np.uint32)
    end = np.zeros((len(per_batch), n), dtype=np.uint32)
    all_times, offset = [], 0
    for b, (times, ids) in enumerate(per_batch):
        times = np.asarray(times, dtype=float).ravel()
        ids = np.asarray(ids).ravel()
        if times.shape != ids.shape:
            raise NetworkError(f"{population}: times and ids differ in length ({times.size} vs {ids.size})")
        if not np.all(np.isfinite(times)):
            raise NetworkError(f"{population}: spike times must be finite")
        if ids.size and (ids.min() < 0 or ids.max() >= n or not np.all(ids == np.round(ids))):
            raise NetworkError(f"{population}: neuron ids must be integers in [0, {n})")
        ids = ids.astype(np.int64)
        order = np.lexsort((times, ids))
        counts = np.bincount(ids, minlength=n)
        start[b] = offset + np.concatenate([[0], np.cumsum(counts)[:-1]])
        end[b] = offset + np.cumsum(counts)
        all_times.append(times[order])
        offset += times.size
    times = np.concatenate(all_times) if all_times else np.zeros(0)
    return start, end, times
