"""A built network, running on one backend: run, read and write state, recordings."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codegen.ir import param_array_name
from ..errors import NetworkError, NonFiniteStateError, NonFiniteStateWarning
from ..fileio import atomic_savez
from ..recording import recorded_steps, rows_between
from ..timed import make_timed_array
from . import memory
from .backends import get_backend
from .run_control import (
    CHECKED_ROLES,
    ChunkPlanner,
    DeferredInterrupt,
    NonFiniteState,
    ProgressBar,
    nonfinite_count,
)

if TYPE_CHECKING:
    from ..network import Network

log = logging.getLogger("spikeforge.runtime")

ON_NONFINITE = ("warn", "raise", "ignore")


class Simulation:
    """``network`` generated, compiled and loaded on ``backend``, with its state initialised.

    Batch instance ``b`` draws its random numbers as global instance ``batch_offset + b``:
    a run with ``batch_size=1, batch_offset=k`` reproduces instance ``k`` of a batched run
    (and data-parallel ranks each take their slice of the global batch).

    Examples:
        >>> from spikeforge import cuba_network
        >>> sim = cuba_network(n=400).build()    # or Simulation(network, backend="cpu")
        >>> _ = sim.run(duration=100.0)          # ms
        >>> times, ids = sim.spikes("exc")[0]   # batch instance 0
        >>> sim.step
        1000

    A run goes in chunks of about 0.1 s of work: a run longer than 2 s shows a progress
    bar on stderr (``progress``: None = when stderr is a terminal, True, False), and
    Ctrl-C stops it at the end of the chunk in progress, keeping what was simulated
    (``KeyboardInterrupt`` is raised once ``sim.step``, the spikes and the recordings
    hold it).

    After every run, and every ``check_every`` steps if given, the model's variables are
    checked for NaN and inf. What was found is kept in ``sim.nonfinite``
    (:class:`~spikeforge.runtime.run_control.NonFiniteState`, one per variable) and,
    by ``on_nonfinite``, reported with a ``NonFiniteStateWarning`` (``"warn"``), raised
    as ``NonFiniteStateError`` at the first check that sees it (``"raise"``), or not
    checked at all (``"ignore"``).
    """

    def __init__(self, network: Network, backend: str = "cpu", threads: int | None = None, batch_offset: int = 0,
                 on_nonfinite: str = "warn", check_every: int | None = None, progress: bool | None = None,
                 spec: Any = None, initial_values: Any = None, keep_initial_values: bool = False,
                 **backend_options: Any) -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise NetworkError(f"on_nonfinite must be one of {', '.join(ON_NONFINITE)}, got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.check_every = _check_every(check_every)
        self.progress = progress
        #: Steps per backend call; None sizes chunks from the measured speed (see run_control).
        self.chunk_steps: int | None = None
        self.network = network
        self.batch_size = int(network.batch_size)
        t0 = time.perf_counter()
        # ``spec``: the network's kernel specs with a compiler's kernels added (training); by default
        # the network's own
        if spec is None:
            from ..codegen.generate import generate  # sympy: only when the specs are made here

            spec = generate(network)
        self.spec = spec
        for name, method in self.spec.integrators.items():
            log.info("%s: integrator %s", name, method)
        if isinstance(batch_offset, bool) or not isinstance(batch_offset, int) or batch_offset < 0:
            raise NetworkError(f"batch_offset must be a non-negative integer, got {batch_offset!r}")
        self.batch_offset = batch_offset
        chosen = get_backend(backend)  # an unknown name is refused before anything is built
        memory.check_simulation(self.spec, self.batch_size, chosen.name)  # refuse before allocating
        self.backend = chosen.create(self.spec, self.batch_size, threads=threads, batch_offset=batch_offset,
                                     **backend_options)
        self.build_seconds = time.perf_counter() - t0
        self.from_cache = self.backend.build.from_cache
        self._spike_pops = [p["name"] for p in self.spec.populations if p["record_spikes"]]
        self._pop_info = {p["name"]: p for p in self.spec.populations}
        self._var_chunks: list[list[np.ndarray]] = [[] for _ in self.spec.recorded_vars]
        self._var_steps: list[list[np.ndarray]] = [[] for _ in self.spec.recorded_vars]
        self._spike_inputs: dict[str, tuple] = {}
        self._checked = [a for a in self.spec.arrays if a.dtype == "scalar" and a.role in CHECKED_ROLES]
        self._owner_kind = {p["name"]: "population" for p in self.spec.populations}
        self._owner_kind.update({q["name"]: "projection" for q in self.spec.projections})
        self.run_seconds = 0.0
        #: Steps the latest run was asked for and steps it ran (fewer if Ctrl-C stopped it).
        self.run_steps_requested = 0
        self.run_steps_done = 0
        # ``initial_values``: what an earlier build of the same network loaded from the host at
        # its first reset (``(params, vars)``, see ``initial_values`` below), loaded as is
        # instead of being computed from the models (the warm-start cache gives them back)
        self._stored_params: dict | None
        self._stored_vars: list | None
        self._stored_params, self._stored_vars = initial_values if initial_values is not None else (None, None)
        #: With ``keep_initial_values``: ``(params, vars)``, the parameters read at run time (array
        #: name -> values) and the variables computed on the host (``[(array name, values)]``, in
        #: the order loaded) at the first reset; None otherwise
        self.initial_values: tuple[dict, list] | None = ({}, []) if keep_initial_values else None
        #: current values of the parameters read at run time, by array name (see set_param)
        self._params = self._initial_params()
        if self.initial_values is not None:
            self.initial_values[0].update({k: v.copy() for k, v in self._params.items()})
        self._capturing = keep_initial_values
        self.reset()
        self._capturing = False

    # -- time ----------------------------------------------------------------------------
    @property
    def dt(self) -> float:
        return self.network.dt

    @property
    def step(self) -> int:
        return self.backend.step

    @property
    def t(self) -> float:
        """Time of the next step, in ms."""
        return self.step * self.dt

    @property
    def source(self) -> str:
        """The generated source code."""
        return self.backend.source

    def reset(self) -> None:
        """Back to the initial state (same seed, same initial values), recordings cleared.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> _ = sim.run(duration=10.0)
            >>> sim.reset()
            >>> sim.step, sim.spike_counts()["exc"]
            (0, 0)
        """
        self.backend.initialise()
        self._load_values()
        for pop, (start, end, times) in self._spike_inputs.items():
            self._push_spike_input(pop, start, end, times)
        self._var_chunks = [[] for _ in self.spec.recorded_vars]
        self._var_steps = [[] for _ in self.spec.recorded_vars]
        #: Variables found holding NaN or inf since the last reset (see the class docstring).
        self.nonfinite: list[NonFiniteState] = []
        self._last_check_step: int | None = None

    def run(self, duration: float | None = None, steps: int | None = None, *, check_every: int | None = None,
            progress: bool | None = None) -> Simulation:
        """Advance by ``duration`` ms or by ``steps`` steps; the loop runs in generated code,
        in chunks (see the class docstring). ``check_every`` and ``progress`` override the
        simulation's settings for this run.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> _ = sim.run(duration=10.0)        # ms
            >>> _ = sim.run(steps=50)             # goes on from there
            >>> sim.step
            150
        """
        if (duration is None) == (steps is None):
            raise ValueError("give exactly one of duration (ms) or steps")
        if steps is None:
            if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration < 0:
                raise ValueError(f"duration must be a non-negative number of ms, got {duration!r}")
            from ..timed import steps_for_duration

            steps = steps_for_duration(duration, self.dt)  # a NetworkError unless a multiple of dt
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        steps = int(steps)
        step0 = self.step
        memory.check_recording(self.spec, self.batch_size, steps, self.spec.recorded_vars, step0)
        buffers = []
        for r in self.spec.recorded_vars:
            rows = rows_between(step0, step0 + steps, r["every"])
            shape = (rows, self.batch_size, r["n"]) if r["batched"] else (rows, r["n"])
            buffers.append(np.zeros(shape, dtype=self._scalar))
        if buffers:
            self.backend.set_var_recording(buffers, steps)
        check_every = _check_every(check_every) if check_every is not None else self.check_every
        if self.on_nonfinite == "ignore":
            check_every = None
        planner = ChunkPlanner(getattr(self.backend, "step_granularity", 1), self.chunk_steps)
        bar = ProgressBar(steps, self.dt, self.network.name, self.progress if progress is None else progress)
        log.info("running %d steps (%g ms) on %s", steps, steps * self.dt, self.backend.name)
        t0 = time.perf_counter()
        done = 0
        self.run_steps_requested, self.run_steps_done = steps, 0
        try:
            with DeferredInterrupt() as interrupt:
                while done < steps and not interrupt.interrupted:
                    n = planner.next(steps - done)
                    if check_every:
                        n = min(n, check_every - self.step % check_every)
                    t_chunk = time.perf_counter()
                    self.backend.run(n)
                    planner.measured(n, time.perf_counter() - t_chunk)
                    done += n
                    bar.update(done)
                    if check_every and self.step % check_every == 0 and done < steps:
                        self._check_finite(check_every)
        finally:
            bar.close()
            self.run_seconds = time.perf_counter() - t0
            self.run_steps_done = done
            if buffers:
                end = step0 + self.backend.var_recorded()
                for r, chunks, steps_kept, buf in zip(self.spec.recorded_vars, self._var_chunks,
                                                      self._var_steps, buffers):
                    kept = recorded_steps(step0, end, r["every"])
                    chunks.append(buf[: kept.size])
                    steps_kept.append(kept)
        if self.on_nonfinite != "ignore":
            self._check_finite(check_every)
        if interrupt.interrupted:
            log.info("interrupted after %d of %d steps", done, steps)
            raise KeyboardInterrupt(f"simulation interrupted at step {self.step} ({done} of {steps} steps run)")
        return self

    # -- NaN and inf -----------------------------------------------------------------------
    def _check_finite(self, check_every: int | None):
        """Look for NaN/inf in the model's variables; record, then warn or raise."""
        step = self.step
        known = {(r.owner, r.var): r for r in self.nonfinite}
        new = []
        for a in self._checked:
            count = nonfinite_count(self.backend.peek(a.name))
            record = known.get((a.owner, a.var))
            if record is not None:
                record.count = count
            elif count:
                record = NonFiniteState(
                    self._owner_kind.get(a.owner, "current source"), a.owner, a.var, count,
                    int(np.prod(a.shape(self.batch_size))), step, step * self.dt, self._last_check_step,
                    check_every)
                self.nonfinite.append(record)
                new.append(record)
        self._last_check_step = step  # every variable not in self.nonfinite was finite here
        if not new:
            return
        if self.on_nonfinite == "raise":
            more = f" (and {len(new) - 1} more variables)" if len(new) > 1 else ""
            raise NonFiniteStateError(new[0].message() + more)
        for record in new:
            warnings.warn(record.message(), NonFiniteStateWarning, stacklevel=3)

    @property
    def _scalar(self):
        return np.float32 if self.spec.precision == "float" else np.float64

    # -- state ---------------------------------------------------------------------------
    def _array_for(self, owner: str, var: str):
        for a in self.spec.arrays:
            if a.owner == owner and a.var == var and a.role in ("state", "trace"):
                return a
        owners = sorted({a.owner for a in self.spec.arrays})
        if owner not in owners:
            raise NetworkError(f"no population, projection or current source named '{owner}' "
                               f"(known: {', '.join(owners)})")
        names = sorted(a.var for a in self.spec.arrays if a.owner == owner and a.role in ("state", "trace"))
        raise NetworkError(f"'{owner}' has no variable '{var}' (variables: {', '.join(names) or 'none'})")

    def get(self, owner: str, var: str) -> np.ndarray:
        """A copy of a variable: shape (batch, n) if batched, else (n,).

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> sim.get("exc", "v").shape       # (batch, neurons)
            (2, 320)
        """
        return self.backend.pull(self._array_for(owner, var).name)

    def set(self, owner: str, var: str, values: Any) -> None:
        """Write a variable; ``values`` must have its shape or broadcast to it.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> sim.set("exc", "v", -60.0)        # every neuron of every instance
            >>> float(sim.get("exc", "v").max())
            -60.0
        """
        a = self._array_for(owner, var)
        shape = a.shape(self.batch_size)
        arr = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise NetworkError(f"{owner}.{var}: values must be finite")
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise NetworkError(
                f"{owner}.{var}: cannot set values of shape {np.shape(values)}; the variable has shape "
                f"{shape}" + (" (batch, elements)" if a.batched else "")
            ) from None
        self.backend.push(a.name, arr)

    # -- parameters read at run time ------------------------------------------------------
    def _initial_params(self) -> dict[str, np.ndarray]:
        if self._stored_params is not None:
            return {name: np.array(values, dtype=np.float64) for name, values in self._stored_params.items()}
        out = {}
        for owner, part, _, params, specs, _ in self.network.value_parts():
            for name, kind in specs.kinds.items():
                a = self.spec.array(param_array_name(owner, part, name))
                value = specs.batch[name].reshape(-1, 1) if kind == "batch" else params[name]
                out[a.name] = np.broadcast_to(np.asarray(value, dtype=np.float64), a.shape(self.batch_size)).copy()
        return out

    def _current_params(self, owner, part, params, specs) -> dict:
        """Every parameter of one model: a float, (n,) per element, (batch, 1) per instance."""
        out: dict[str, Any] = {}
        for name, value in params.items():
            kind = specs.kind(name)
            if kind == "constant":
                out[name] = float(value)
            else:
                values = self._params[param_array_name(owner, part, name)]
                out[name] = float(values[0]) if kind == "dynamic" else values
        return out

    def _load_values(self):
        """Load the parameters read at run time, then compute the variables initialised by
        expressions, arrays or {values, counts} (after the generated initialisation, whose
        values they may use)."""
        for name, values in self._params.items():
            self.backend.push(name, values)
        if self._stored_vars is not None:
            for name, values in self._stored_vars:
                self.backend.push(name, values)
            return
        from ..models.variables import is_generated
        from ..values import host_initial_values

        kept = self.initial_values if self._capturing else None  # only the first reset's
        for owner, part, model, params, specs, vars_ in self.network.value_parts():
            if all(is_generated(v.init) for v in vars_.values()):
                continue
            values = host_initial_values(
                model, vars_, specs, self._current_params(owner, part, params, specs), dt=self.dt,
                seed=int(self.network.seed), batch_size=self.batch_size, batch_offset=self.batch_offset,
                read_var=lambda n, owner=owner: self.backend.pull(f"{owner}_{n}"), where=f"'{owner}'")
            for name, v in values.items():
                self.backend.push(f"{owner}_{name}", v)
                if kept is not None:
                    kept[1].append((f"{owner}_{name}", np.array(v)))

    def _param_part(self, owner: str, name: str, part: str | None):
        parts = [p for p in self.network.value_parts() if p[0] == owner]
        if not parts:
            raise NetworkError(f"no population, projection or current source named '{owner}'")
        found = [p for p in parts if name in p[2].params and (part is None or p[1] == part)]
        if not found:
            known = sorted({n for p in parts for n in p[2].params})
            raise NetworkError(f"'{owner}' has no parameter '{name}'" + (f" in its {part} model" if part else "")
                               + f" (parameters: {', '.join(known) or 'none'})")
        if len(found) > 1:
            raise NetworkError(f"'{owner}': both its {found[0][1]} and {found[1][1]} models have a parameter "
                               f"'{name}'; say which with part=")
        return found[0]

    def set_param(self, owner: str, name: str, value: Any, part: str | None = None) -> None:
        """Change a parameter read at run time, for the next runs, without recompiling: a
        dynamic one (one number; or one per batch instance if it has ``batch_values``) or
        one given per element (a number for all, or one value per element). ``part``
        (``weight_update`` or ``postsynaptic``) picks a projection's model when both have
        ``name``. A parameter compiled in (a plain number) cannot change: declare it
        dynamic. Variables initialised from it keep their values until :meth:`reset`.

        Examples:
            >>> from spikeforge import LIF, Network
            >>> net = Network("demo", dt=0.1)
            >>> _ = net.add_population("exc", 10, LIF, dynamic=["v_th"])
            >>> sim = net.build()
            >>> sim.set_param("exc", "v_th", -55.0)    # for the next runs, no recompiling
            >>> sim.get_param("exc", "v_th")
            -55.0
        """
        owner_name, part, model, params, specs, _ = self._param_part(owner, name, part)
        kind = specs.kind(name)
        if kind == "constant":
            raise NetworkError(f"{owner}.{name} is compiled into the generated code; declare it dynamic "
                               f"(dynamic: [{name}]) to set it between runs without rebuilding")
        a = self.spec.array(param_array_name(owner_name, part, name))
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise NetworkError(f"{owner}.{name}: expected numbers, got {value!r}") from None
        if not np.all(np.isfinite(arr)):
            raise NetworkError(f"{owner}.{name}: values must be finite")
        n = {"dynamic": 1, "batch": self.batch_size, "element": a.size}[kind]
        what = {"dynamic": "one number (it is dynamic)", "batch": f"a number or {n} (one per batch instance)",
                "element": f"a number or {n} (one per element)"}[kind]
        if not (arr.size == 1 or (arr.ndim == 1 and arr.size == n)):
            raise NetworkError(f"{owner}.{name}: expected {what}, got shape {arr.shape}")
        from ..models.parameters import check_parameter_values

        check_parameter_values(model, {**params, name: arr.ravel()}, self.dt, f"'{owner}'")
        self._stored_vars = None  # variables initialised from parameters are computed again at reset
        values = np.broadcast_to(arr.reshape(-1, 1) if kind == "batch" else arr.ravel(), a.shape(self.batch_size))
        self._params[a.name] = values.copy()
        self.backend.push(a.name, self._params[a.name])

    def get_param(self, owner: str, name: str, part: str | None = None) -> Any:
        """The current value of a parameter: a float (compiled in or dynamic), or an array
        (one value per element, or per batch instance).

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> sim.get_param("exc", "tau_m")
            20.0
        """
        owner_name, part, _, params, specs, _ = self._param_part(owner, name, part)
        kind = specs.kind(name)
        if kind == "constant":
            return float(params[name])
        values = self._params[param_array_name(owner_name, part, name)]
        return float(values[0]) if kind == "dynamic" else values.ravel().copy()

    # -- spikes in ------------------------------------------------------------------------
    def set_spike_times(self, population: str, spikes: Any) -> None:
        """Spike times (ms) of a spike-source-array population.

        ``spikes`` is ``(times, ids)`` for every batch instance alike, or a list of
        ``batch_size`` such pairs, one per instance.

        Examples:
            >>> from spikeforge import SPIKE_SOURCE_ARRAY, Network
            >>> net = Network("demo", dt=0.1)
            >>> _ = net.add_population("inp", 3, SPIKE_SOURCE_ARRAY, record_spikes=True)
            >>> sim = net.build()
            >>> sim.set_spike_times("inp", ([1.0, 2.5, 4.0], [0, 2, 1]))    # (times in ms, neurons)
            >>> _ = sim.run(duration=5.0)
            >>> sim.spike_counts()["inp"]
            3
        """
        info = self._pop_info.get(population)
        if info is None or not info["spike_source_array"]:
            raise NetworkError(f"'{population}' is not a spike source array population")
        n = info["size"]
        B = self.batch_size
        if isinstance(spikes, tuple) and len(spikes) == 2:
            per_batch = [spikes] * B
        else:
            per_batch = list(spikes)
            if len(per_batch) != B:
                raise NetworkError(f"{population}: expected spikes for {B} batch instances, got {len(per_batch)}")
        from .spike_inputs import pack_spike_times

        start, end, times = pack_spike_times(population, per_batch, n)
        times = np.concatenate([times, [np.inf]]).astype(self._scalar)  # never empty
        self._spike_inputs[population] = (start, end, times)
        self._push_spike_input(population, start, end, times)

    # -- timed inputs ----------------------------------------------------------------------
    def set_timed_input(self, population: str, param: str, values: Any, dt: float | None = None) -> None:
        """Replace the array of a timed input (``Network.add_timed_input``) for the next runs,
        without recompiling: ``values`` (or a TimedArray) must have the same width (1 or one
        column per neuron) and the same batch layout; the number of rows and ``dt`` may differ.

        Examples:
            >>> from spikeforge import LIF, Network
            >>> net = Network("demo", dt=0.1)
            >>> _ = net.add_population("exc", 10, LIF)
            >>> _ = net.add_timed_input("exc", "v_rest", [-65.0, -60.0], dt=5.0)
            >>> sim = net.build()
            >>> sim.set_timed_input("exc", "v_rest", [-65.0, -55.0], dt=5.0)   # new values, same width
            >>> _ = sim.run(duration=10.0)
        """
        old = self.network.timed_inputs.get((population, param))
        if old is None:
            known = [f"{p}.{n}" for p, n in self.network.timed_inputs]
            raise NetworkError(f"'{population}' has no timed input '{param}' (timed inputs: "
                               f"{', '.join(known) or 'none'})")
        where = f"population '{population}': timed input '{param}'"
        try:
            array = make_timed_array(values if dt is None else (values, dt), where)
        except NetworkError as exc:
            raise NetworkError(f"{where}: {str(exc).removeprefix('timed array: ')}") from None
        array.check_for(self._pop_info[population]["size"], self.batch_size, where)
        if not old.same_layout(array):
            raise NetworkError(f"{where}: the new array has shape {array.values.shape}, the generated code "
                               f"reads shape {old.values.shape} (width and batch must match; rows may differ)")
        for name, data in ((f"{population}_{param}_timed", array.values),
                           (f"{population}_{param}_timing", array.timing(self.dt))):
            spec_array = self.spec.array(name)
            spec_array.data = np.ascontiguousarray(data, dtype=np.float64 if spec_array.dtype == "double"
                                                   else self._scalar)
            self.backend.replace(name, spec_array.data)

    def _push_spike_input(self, pop, start, end, times):
        self.backend.replace(f"{pop}_ss_times", times)
        self.backend.push(f"{pop}_ss_start", start)
        self.backend.push(f"{pop}_ss_end", end)
        self.backend.push(f"{pop}_ss_ptr", start)

    # -- recordings ------------------------------------------------------------------------
    def spikes(self, population: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Recorded spikes of ``population``: per batch instance, (times in ms, neuron ids).

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> _ = sim.run(duration=50.0)
            >>> times, ids = sim.spikes("exc")[1]    # batch instance 1
            >>> times.shape == ids.shape
            True
        """
        if population not in self._spike_pops:
            raise NetworkError(f"spikes of '{population}' are not recorded (recorded: "
                               f"{', '.join(self._spike_pops) or 'none'})")
        k = self._spike_pops.index(population)
        out = []
        for b in range(self.batch_size):
            pairs = self.backend.spikes(k, b)
            out.append((pairs[:, 0].astype(np.float64) * self.dt, pairs[:, 1].astype(np.int64)))
        return out

    def spike_counts(self) -> dict[str, int]:
        """Total recorded spikes per population, over all batch instances.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> _ = sim.run(duration=50.0)
            >>> sorted(sim.spike_counts())
            ['exc', 'inh']
        """
        return {p: int(sum(ids.size for _, ids in self.spikes(p))) for p in self._spike_pops}

    def _recording(self, population: str, var: str | None, kind: str = "var") -> int:
        for k, r in enumerate(self.spec.recorded_vars):
            if r["kind"] == kind and r["population"] == population and (var is None or r["var"] == var):
                return k
        if kind == "rate":
            known = [r["population"] for r in self.spec.recorded_vars if r["kind"] == "rate"]
            raise NetworkError(f"the population rate of '{population}' is not recorded (recorded: "
                               f"{', '.join(known) or 'none'}; Network.record_rate or YAML record: [rate])")
        known = [f"{r['population']}.{r['var']}" for r in self.spec.recorded_vars if r["kind"] == "var"]
        raise NetworkError(f"{population}.{var} is not recorded (recorded: {', '.join(known) or 'none'})")

    def recorded(self, population: str, var: str) -> np.ndarray:
        """Recorded values of ``population.var``: (recorded steps, batch, recorded neurons), or
        (recorded steps, recorded neurons) if the variable is shared across the batch. Which
        steps and neurons: :meth:`recorded_steps` (or :meth:`recorded_times`) and
        :meth:`recorded_indices`.

        Examples:
            >>> from spikeforge import cuba_network
            >>> net = cuba_network(n=400, batch_size=2)
            >>> net.record_var("exc", "v", neurons=[0, 1, 2], every=10)
            >>> sim = net.build()
            >>> _ = sim.run(duration=20.0)
            >>> sim.recorded("exc", "v").shape       # (recorded steps, batch, recorded neurons)
            (20, 2, 3)
        """
        k = self._recording(population, var)
        r, chunks = self.spec.recorded_vars[k], self._var_chunks[k]
        if not chunks:
            shape = (0, self.batch_size, r["n"]) if r["batched"] else (0, r["n"])
            return np.zeros(shape, dtype=self._scalar)
        return np.concatenate(chunks, axis=0)

    def recorded_steps(self, population: str, var: str) -> np.ndarray:
        """The step of each row of :meth:`recorded`: the value is the state at the end of that step.

        Examples:
            >>> from spikeforge import cuba_network
            >>> net = cuba_network(n=400)
            >>> net.record_var("exc", "v", neurons=[0], every=10)
            >>> sim = net.build()
            >>> _ = sim.run(duration=3.0)
            >>> sim.recorded_steps("exc", "v").tolist()
            [0, 10, 20]
        """
        steps = self._var_steps[self._recording(population, var)]
        return np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)

    def recorded_times(self, population: str, var: str) -> np.ndarray:
        """The time (ms) of each row of :meth:`recorded`: the end of the step that computed it,
        ``(step + 1) * dt``.

        Examples:
            >>> from spikeforge import cuba_network
            >>> net = cuba_network(n=400)
            >>> net.record_var("exc", "v", neurons=[0], every=10)
            >>> sim = net.build()
            >>> _ = sim.run(duration=3.0)
            >>> sim.recorded_times("exc", "v").round(3).tolist()
            [0.1, 1.1, 2.1]
        """
        return (self.recorded_steps(population, var) + 1) * self.dt

    def recorded_indices(self, population: str, var: str | None = None) -> np.ndarray:
        """The neuron of each column of :meth:`recorded` (``var`` given) or the neurons whose
        spikes are recorded (``var`` None).

        Examples:
            >>> from spikeforge import cuba_network
            >>> net = cuba_network(n=400)
            >>> net.record_var("exc", "v", neurons={"step": 100})
            >>> sim = net.build()
            >>> sim.recorded_indices("exc", "v").tolist()
            [0, 100, 200, 300]
        """
        if var is None:
            info: Any = self._pop_info.get(population)
            if population not in self._spike_pops:
                raise NetworkError(f"spikes of '{population}' are not recorded (recorded: "
                                   f"{', '.join(self._spike_pops) or 'none'})")
            chosen = info.get("spike_rec_neurons")
            return np.arange(info["size"]) if chosen is None else np.asarray(chosen, dtype=np.int64)
        r = self.spec.recorded_vars[self._recording(population, var)]
        if r["neurons"] is None:
            return np.arange(r["n"])
        return np.asarray(self.spec.array(r["neurons"]).data, dtype=np.int64)

    def population_rate(self, population: str, bin_ms: float | None = None) -> np.ndarray:
        """The population rate of ``population`` in Hz, per step and batch instance: shape
        (steps recorded, batch), the number of its spikes in the step / (N * dt). ``bin_ms``
        (a multiple of dt) averages over bins of that length instead (a partial last bin is
        left out); the rows then start at the first recorded step.

        Examples:
            >>> from spikeforge import cuba_network
            >>> net = cuba_network(n=400, batch_size=2)
            >>> net.record_rate("exc")
            >>> sim = net.build()
            >>> _ = sim.run(duration=50.0)
            >>> sim.population_rate("exc").shape, sim.population_rate("exc", bin_ms=10.0).shape
            ((500, 2), (5, 2))
        """
        k = self._recording(population, None, "rate")
        r = self.spec.recorded_vars[k]
        chunks = self._var_chunks[k]
        counts = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, self.batch_size), self._scalar)
        counts = counts.reshape(-1, self.batch_size).astype(np.float64)
        if bin_ms is not None:
            from ..timed import steps_for_duration

            if not isinstance(bin_ms, (int, float)) or isinstance(bin_ms, bool) or bin_ms <= 0:
                raise NetworkError(f"bin_ms must be a positive number of ms, got {bin_ms!r}")
            per_bin = steps_for_duration(bin_ms, self.dt)
            n = counts.shape[0] // per_bin
            counts = counts[: n * per_bin].reshape(n, per_bin, self.batch_size).mean(axis=1)
        return counts / (r["population_size"] * self.dt * 1e-3)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the recordings to ``path`` (.npz), written atomically.

        Layout: ``spikes/<pop>/times`` and ``spikes/<pop>/ids`` (concatenated over the
        batch) with ``spikes/<pop>/batch`` (the batch instance of each spike);
        ``vars/<pop>/<var>`` with shape (recorded steps, batch, recorded neurons) and, beside it,
        ``vars/<pop>/<var>/steps``, ``.../times`` (ms) and ``.../indices`` (the neurons);
        ``rates/<pop>`` (Hz, (steps, batch)) for each population rate; ``spikes/<pop>/indices``
        where a subset of the neurons' spikes is recorded; ``dt`` and ``batch_size``.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> import tempfile, pathlib
            >>> _ = sim.run(duration=20.0)
            >>> path = sim.save(pathlib.Path(tempfile.mkdtemp()) / "run.npz")
            >>> path.suffix
            '.npz'
        """
        path = Path(path)
        data = {"dt": np.float64(self.dt), "batch_size": np.int64(self.batch_size)}
        for pop in self._spike_pops:
            sp = self.spikes(pop)
            data[f"spikes/{pop}/times"] = np.concatenate([t for t, _ in sp])
            data[f"spikes/{pop}/ids"] = np.concatenate([i for _, i in sp])
            data[f"spikes/{pop}/batch"] = np.concatenate(
                [np.full(i.size, b, dtype=np.int64) for b, (_, i) in enumerate(sp)])
        for r in self.spec.recorded_vars:
            pop, var = r["population"], r["var"]
            if r["kind"] == "rate":
                data[f"rates/{pop}"] = self.population_rate(pop)
                continue
            data[f"vars/{pop}/{var}"] = self.recorded(pop, var)
            data[f"vars/{pop}/{var}/steps"] = self.recorded_steps(pop, var)
            data[f"vars/{pop}/{var}/times"] = self.recorded_times(pop, var)
            data[f"vars/{pop}/{var}/indices"] = self.recorded_indices(pop, var)
        for pop in self._spike_pops:
            if self._pop_info[pop].get("spike_rec_neurons") is not None:
                data[f"spikes/{pop}/indices"] = self.recorded_indices(pop)
        return atomic_savez(path, data)

    def close(self) -> None:
        """Free the backend's state (the generated code's context, device memory); the
        compiled library stays in the build cache.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400, batch_size=2).build()
            >>> _ = sim.run(duration=10.0)
            >>> sim.close()                         # the compiled library stays in the cache
        """
        self.backend.close()


def _check_every(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise NetworkError(f"check_every must be a positive number of steps, got {value!r}")
    return int(value)
