"""Inputs that change over time, given as arrays (Brian2's ``TimedArray`` convention).

A timed input gives a *parameter* of a population's neuron model a value that follows an
array over time: at step ``n`` (time ``t = n * dt``) the parameter takes row
``floor(t / array_dt)`` of the array, each row held for ``array_dt`` ms, and the last row
after the array's end (before its start, the first). The model keeps its ordinary
parameter (its default or given value is what the model means without the input); the
generated code reads the array instead. The array is loaded when the simulation starts
and may be replaced between runs (``Simulation.set_timed_input``) without recompiling:
only its width (1 or one column per neuron) and whether it has one array per batch
instance are part of the generated code.

Shapes of ``values``: ``(rows,)`` or ``(rows, 1)`` (one value for every neuron),
``(rows, n)`` (one column per neuron), ``(rows, batch, 1)`` or ``(rows, batch, n)``
(one array per batch instance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import NetworkError

#: A step counts as reaching the next row within this fraction of a step (rounding of t / array_dt).
ROW_TOLERANCE_STEPS = 1e-3


@dataclass
class TimedArray:
    """``values`` over time, one row every ``dt`` ms (see the module docstring for shapes)."""

    values: np.ndarray
    dt: float

    def __post_init__(self):
        if isinstance(self.dt, bool) or not isinstance(self.dt, (int, float, np.floating, np.integer)) \
                or not math.isfinite(self.dt) or self.dt <= 0:
            raise NetworkError(f"timed array: dt must be a positive number of ms, got {self.dt!r}")
        self.dt = float(self.dt)
        try:
            values = np.asarray(self.values, dtype=np.float64)
        except (TypeError, ValueError):
            raise NetworkError("timed array: values must be an array of numbers") from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim not in (2, 3) or values.shape[0] == 0 or values.size == 0:
            raise NetworkError(f"timed array: values must have shape (rows,), (rows, n) or (rows, batch, n), "
                               f"got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise NetworkError("timed array: values must be finite")
        self.values = values

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def width(self) -> int:
        return int(self.values.shape[-1])

    @property
    def batched(self) -> bool:
        return self.values.ndim == 3

    def check_for(self, size: int, batch_size: int, where: str):
        """Refuse shapes that do not fit a population of ``size`` neurons at ``batch_size``."""
        if self.width not in (1, size):
            raise NetworkError(f"{where}: the array has {self.width} columns; expected 1 (every neuron alike) "
                               f"or {size} (one per neuron), shape {self.values.shape}")
        if self.batched and self.values.shape[1] != batch_size:
            raise NetworkError(f"{where}: the array has {self.values.shape[1]} batch instances (shape "
                               f"{self.values.shape}), the network runs {batch_size}")

    def same_layout(self, other: TimedArray) -> bool:
        """Whether ``other`` fits the generated code made for this array."""
        return self.width == other.width and self.batched == other.batched

    def timing(self, sim_dt: float, first_row: int = 0) -> np.ndarray:
        """[steps per row, rows, first row]: what the generated code needs to find the row of a
        step, when the array holds the rows ``first_row`` .. ``first_row + rows - 1`` of the
        input (a long input fed in parts)."""
        return np.array([self.dt / sim_dt, float(self.rows), float(first_row)], dtype=np.float64)


def steps_for_duration(duration: float, dt: float) -> int:
    """The number of steps of ``dt`` ms in ``duration`` ms, which must be a multiple of dt
    (to a relative 1e-9: ``1000`` with dt ``0.1`` is 10000 steps; ``0.05`` is refused
    rather than run as 0 or 1 steps)."""
    steps = round(duration / dt)
    if abs(steps * dt - duration) > 1e-9 * max(abs(duration), dt):
        lower, upper = math.floor(duration / dt), math.ceil(duration / dt)
        options = " or ".join(f"{n * dt:g} ms ({n} step{'s' * (n != 1)})" for n in (lower, upper) if n > 0)
        raise NetworkError(f"duration {duration:g} ms is not a multiple of dt = {dt:g} ms (nearest: {options})")
    return int(steps)


def make_timed_array(value, where: str) -> TimedArray:
    """A TimedArray, or a ``(values, dt)`` pair / ``{"values": ..., "dt": ...}`` mapping."""
    if isinstance(value, TimedArray):
        return value
    if isinstance(value, dict) and set(value) == {"values", "dt"}:
        return TimedArray(value["values"], value["dt"])
    if isinstance(value, tuple) and len(value) == 2:
        return TimedArray(*value)
    raise NetworkError(f"{where}: expected a TimedArray(values, dt), got {type(value).__name__}")
