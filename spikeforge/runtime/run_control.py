"""How ``Simulation.run`` drives a backend: in chunks, so that a long run shows progress,
can be stopped with Ctrl-C, and has its state checked for NaN and inf between chunks.

The generated code runs ``n`` steps per call and cannot be interrupted inside a call, so
the run is cut into chunks of about ``TARGET_SECONDS`` of work each, sized from the
measured time of the previous chunk. A chunk is a plain ``backend.run(n)``: the steps,
the random numbers (keyed by step), the recordings and the spike inputs are exactly
those of one long call.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

#: Work per chunk the planner aims at; Ctrl-C waits for the chunk in progress.
TARGET_SECONDS = 0.1
#: A chunk at most this many times the previous one (the first chunks measure the speed).
MAX_GROWTH = 4
#: A progress bar appears once a run has taken this long.
PROGRESS_AFTER_SECONDS = 2.0
#: Array roles whose values are checked for NaN and inf: the model's variables.
CHECKED_ROLES = ("state", "trace", "in_syn")


class ChunkPlanner:
    """Steps for the next ``backend.run`` call.

    Starts at ``granularity`` steps and grows (at most ``MAX_GROWTH``-fold per chunk)
    towards ``target_seconds`` of work at the speed measured so far; shrinks at once when
    steps get slower. ``fixed`` gives every chunk that many steps instead. Chunks of at
    least ``granularity`` steps are kept multiples of it (the ``cuda`` backend replays
    captured graphs of that many steps).
    """

    def __init__(self, granularity: int = 1, fixed: int | None = None, target_seconds: float = TARGET_SECONDS):
        self.granularity = max(1, int(granularity))
        self.fixed = None if fixed is None else max(1, int(fixed))
        self.target_seconds = target_seconds
        self.size = self.fixed or self.granularity

    def next(self, remaining: int) -> int:
        return max(1, min(self.size, remaining))

    def measured(self, steps: int, seconds: float):
        if self.fixed is not None or steps <= 0:
            return
        per_step = max(seconds, 1e-7) / steps
        size = int(min(self.target_seconds / per_step, MAX_GROWTH * max(steps, self.size)))
        if size >= self.granularity:
            size -= size % self.granularity
        self.size = max(1, size)


class DeferredInterrupt:
    """While active, Ctrl-C (SIGINT) only sets ``interrupted``; the run loop stops at the
    end of the chunk in progress, leaves the simulation consistent, then raises.

    Python delivers signals to the main thread only, and only if the handler is still
    Python's default (a program with its own SIGINT handler keeps it)."""

    def __init__(self):
        self.interrupted = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.interrupted = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


class ProgressBar:
    """A tqdm bar on stderr, created only once the run has lasted ``PROGRESS_AFTER_SECONDS``.

    ``enabled``: True always (after the delay), False never, None when stderr is a terminal."""

    def __init__(self, total_steps: int, dt: float, label: str, enabled: bool | None):
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.enabled = enabled
        self.total = total_steps
        self.dt = dt
        self.label = label
        self.start = time.perf_counter()
        self.bar = None

    def update(self, done: int):
        if not self.enabled:
            return
        if self.bar is None:
            if time.perf_counter() - self.start < PROGRESS_AFTER_SECONDS:
                return
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=done, unit="step", desc=self.label, file=sys.stderr,
                            dynamic_ncols=True, leave=True)
            self.bar.set_postfix_str(self._postfix(done), refresh=True)
            return
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(self._postfix(done), refresh=False)

    def _postfix(self, done: int) -> str:
        return f"t={done * self.dt:g} of {self.total * self.dt:g} ms"

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -------------------------------------------------------------------------- non-finite state


@dataclass
class NonFiniteState:
    """A variable found holding NaN or inf.

    ``count`` of its ``size`` elements (over the batch) are not finite at the latest
    check; ``first_step`` is the step (``sim.step``) of the first check that saw it;
    ``last_finite_step`` that of the check before, which found it finite (None if there
    was none): it became non-finite somewhere in between. ``exact`` when those checks
    were one step apart."""

    kind: str  # population | projection | current source
    owner: str
    var: str
    count: int
    size: int
    first_step: int
    first_time_ms: float
    last_finite_step: int | None
    check_every: int | None

    @property
    def exact(self) -> bool:
        return self.last_finite_step is not None and self.first_step - self.last_finite_step <= 1

    def as_dict(self) -> dict:
        return {"kind": self.kind, "owner": self.owner, "var": self.var, "count": self.count, "size": self.size,
                "first_step": self.first_step, "first_time_ms": self.first_time_ms,
                "last_finite_step": self.last_finite_step, "exact": self.exact}

    def message(self) -> str:
        where = (f"{self.kind} '{self.owner}', variable '{self.var}': {self.count} of {self.size} elements "
                 "(over the batch) are NaN or inf")
        at = f"step {self.first_step} (t = {self.first_time_ms:g} ms)"
        how = (f"checked every {self.check_every} steps" if self.check_every
               else "checked at the end of each run; check_every=N checks every N steps")
        if self.exact:
            when = f"first non-finite at {at}"
        elif self.last_finite_step is None:
            when = f"first seen at {at}, the first check since the start ({how})"
        else:
            when = f"first seen at {at}; finite at the check before, step {self.last_finite_step} ({how})"
        return f"non-finite state in {where}; {when}"


def nonfinite_count(values: np.ndarray) -> int:
    """Number of NaN/inf elements. A sum is finite only if every term is, so the common
    all-finite case costs one reduction (an overflowing sum falls through to the count)."""
    if values.size == 0:
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(values, axis=None)):
            return 0
    return int(values.size - np.count_nonzero(np.isfinite(values)))
