"""Learning-rate schedules: picklable callables ``(epoch, step) -> lr`` for the Trainer.

The trainer asks for the learning rate before every optimiser step, passing ``epoch``,
the 0-based index of the epoch being trained, and ``step``, the 1-based number of the
step about to be taken (the first step of a run is 1; a resumed run goes on counting).
The learning rate is a run-time argument of the generated Adam kernel, so a schedule
never recompiles anything.

>>> from spikeforge.training.schedules import CosineDecay, StepDecay, Warmup
>>> trainer = Trainer(config, lr=StepDecay(0.01, every=10, factor=0.5))
>>> trainer = Trainer(config, lr=Warmup(CosineDecay(0.01, epochs=40, min_lr=1e-4), steps=200))

In a training job (YAML) the same schedules are ``training.lr_schedule``, built from
``training.lr`` (see :mod:`spikeforge.training.config`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import NetworkError

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "CosineDecay", "Warmup"]


def _number(owner: str, name: str, value, low: float = 0.0, low_open: bool = False, high: float | None = None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NetworkError(f"{owner}: {name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise NetworkError(f"{owner}: {name} must be in {bounds}, got {value!r}")
    return float(value)


def _count(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NetworkError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


class Schedule:
    """Base of the schedules: ``schedule(epoch, step)`` is the learning rate of that step."""

    def __call__(self, epoch: int, step: int) -> float:
        raise NotImplementedError

    def over(self, epochs: int) -> Schedule:
        """The same schedule for a run of ``epochs`` epochs (only :class:`CosineDecay` depends on it)."""
        return self


@dataclass(frozen=True)
class Constant(Schedule):
    """``lr`` throughout."""

    lr: float

    def __post_init__(self):
        object.__setattr__(self, "lr", _number("Constant", "lr", self.lr))

    def __call__(self, epoch: int, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``lr * factor ** (epoch // every)``: multiplied by ``factor`` every ``every`` epochs.

    Examples:
        >>> from spikeforge import StepDecay
        >>> lr = StepDecay(1e-2, factor=0.1, every=5)
        >>> lr(4, 0), round(lr(5, 0), 6)
        (0.01, 0.001)
    """

    lr: float
    every: int
    factor: float

    def __post_init__(self):
        object.__setattr__(self, "lr", _number("StepDecay", "lr", self.lr))
        _count("StepDecay", "every", self.every)
        object.__setattr__(self, "factor", _number("StepDecay", "factor", self.factor, low_open=True, high=1.0))

    def __call__(self, epoch: int, step: int) -> float:
        return self.lr * self.factor ** (max(epoch, 0) // self.every)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """``lr * gamma ** n`` with ``n`` the epoch (``per="epoch"``, 0 in the first epoch) or
    the number of optimiser steps already taken (``per="step"``, 0 at the first step).

    Examples:
        >>> from spikeforge import ExponentialDecay
        >>> lr = ExponentialDecay(1e-2, gamma=0.5)
        >>> lr(0, 0), lr(2, 0)
        (0.01, 0.0025)
    """

    lr: float
    gamma: float
    per: str = "epoch"

    def __post_init__(self):
        object.__setattr__(self, "lr", _number("ExponentialDecay", "lr", self.lr))
        object.__setattr__(self, "gamma", _number("ExponentialDecay", "gamma", self.gamma, low_open=True, high=1.0))
        if self.per not in ("epoch", "step"):
            raise NetworkError(f"ExponentialDecay: per must be 'epoch' or 'step', got {self.per!r}")

    def __call__(self, epoch: int, step: int) -> float:
        n = epoch if self.per == "epoch" else step - 1
        return self.lr * self.gamma ** max(n, 0)


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Half a cosine from ``lr`` (first epoch) down to ``min_lr`` over ``epochs`` epochs:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``; ``min_lr`` from epoch
    ``epochs`` on.

    Examples:
        >>> from spikeforge import CosineDecay
        >>> lr = CosineDecay(1e-2, epochs=10, min_lr=1e-4)
        >>> round(lr(0, 0), 6), round(lr(5, 0), 6), round(lr(10, 0), 6)
        (0.01, 0.00505, 0.0001)
    """

    lr: float
    epochs: int
    min_lr: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "lr", _number("CosineDecay", "lr", self.lr))
        _count("CosineDecay", "epochs", self.epochs)
        object.__setattr__(self, "min_lr", _number("CosineDecay", "min_lr", self.min_lr, high=self.lr))

    def __call__(self, epoch: int, step: int) -> float:
        e = min(max(epoch, 0), self.epochs)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * e / self.epochs))

    def over(self, epochs: int) -> CosineDecay:
        return dataclasses.replace(self, epochs=epochs)


@dataclass(frozen=True)
class Warmup(Schedule):
    """A linear ramp over the first ``steps`` optimiser steps: ``schedule(epoch, step) *
    min(1, step / steps)`` (step 1 gets ``1/steps`` of it, step ``steps`` and later all).
    ``schedule`` is a number or another schedule.

    Examples:
        >>> from spikeforge import StepDecay, Warmup
        >>> lr = Warmup(StepDecay(1e-2, factor=0.1, every=5), steps=100)
        >>> lr(0, 1), lr(0, 100)
        (0.0001, 0.01)
    """

    schedule: float | Callable
    steps: int

    def __post_init__(self):
        if not callable(self.schedule):
            object.__setattr__(self, "schedule", _number("Warmup", "schedule", self.schedule))
        _count("Warmup", "steps", self.steps)

    def __call__(self, epoch: int, step: int) -> float:
        base = self.schedule(epoch, step) if callable(self.schedule) else self.schedule
        return base * min(1.0, max(step, 0) / self.steps)

    def over(self, epochs: int) -> Warmup:
        if isinstance(self.schedule, Schedule):
            return dataclasses.replace(self, schedule=self.schedule.over(epochs))
        return self
