"""The ``event`` backend: exact event-driven simulation (no time grid).

:func:`event_spec` checks a :class:`~spikeforge.network.Network` against what the backend
simulates and gathers what the kernel needs (the maps of :mod:`spikeforge.codegen.event_maps`,
parameters, connectivity, sources); :func:`render_event` writes the C++ of
``templates/cpu/event.cpp.j2``; :class:`EventSimulation` builds, loads and runs it.

What is simulated (everything else is refused, naming the population or projection and
the field):

* neuron populations whose model has one ODE with a closed-form flow (LIF, QIF, ...),
  parameters compiled in or given per neuron, a constant drive ``i_syn`` per neuron from
  ``dc`` current sources, and a refractory period if the ODE is flagged ``(unless
  refractory)`` (the state is held at the reset and inputs are lost meanwhile, as on the
  clock-driven backends);
* external spike sources: ``poisson`` populations (rates per neuron) and spike-source
  arrays (``set_spike_times``), and Poisson inputs (``add_poisson_input``) merged into one
  Poisson process per neuron;
* projections with delta synapses (``delta``: the target jumps by the weight), a static
  weight (``static``: one per synapse, ``static_constant``: one per projection), one delay
  per projection (a multiple of the network's ``dt``; ``dt`` plays no other part), stored
  connectivity of any kind or procedural ``fixed_probability`` (rows drawn again from the
  Philox stream at every spike, never stored).

Results: ``sim.spikes(pop)`` is, per batch instance, ``(times, ids)`` with the exact spike
times in ms (float64) in the order they happened (ties: time, then unit index), the same
layout as the clock-driven backends' recordings.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import NetworkError

#: Weight-update models whose on_pre is ``post_input += w``, by where ``w`` lives.
_WEIGHT = {"var": "per synapse", "param": "per projection"}


@dataclass
class EventSpec:
    """What the event kernel of one network is made of (plain data; ``event_maps`` is the
    maps of every neuron population as readable text)."""

    name: str
    seed: int
    neuron_pops: list = field(default_factory=list)
    source_pops: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    projections: list = field(default_factory=list)
    arrays: list = field(default_factory=list)  # dicts: name, ctype, doc, data (numpy)
    maps: dict = field(default_factory=dict)  # population -> EventMaps
    n_neurons: int = 0
    n_units: int = 0

    @property
    def event_maps(self) -> str:
        return "\n\n".join(f"population '{pop}':\n{m.text()}" for pop, m in self.maps.items())

    @property
    def populations(self) -> list:
        return self.neuron_pops + self.source_pops

    def population(self, name: str) -> dict:
        for p in self.populations:
            if p["name"] == name:
                return p
        raise NetworkError(f"network '{self.name}' has no population '{name}' (populations: "
                           f"{', '.join(p['name'] for p in self.populations)})")


def _literal(x: float) -> str:
    x = float(x)
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(x)


def _param_values(pop, where: str) -> tuple[list, list, dict]:
    """(constants, per-neuron names, values for numeric checks) of a population's parameters."""
    constants, per_neuron, values = [], [], {}
    for name, value in pop.params.items():
        kind = pop.values.kind(name)
        if kind == "constant":
            constants.append({"name": name, "value": _literal(value)})
            values[name] = float(value)
        elif kind == "element":
            per_neuron.append(name)
            values[name] = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=np.float64), (pop.size,)))
        else:
            raise NetworkError(f"{where}: parameter '{name}' is given {kind}; the event backend takes parameters "
                               "compiled in or per neuron")
    return constants, per_neuron, values


def _refractory(pop, maps, where: str) -> str | None:
    """The C expression of the refractory period (ms), or None when it is zero for every neuron.
    While refractory, the variable is held at its reset value and inputs are lost (the rule of
    a variable flagged ``(unless refractory)``, as on the clock-driven backends)."""
    model = pop.model
    if model.refractory is None:
        return None
    from ..codegen.cprint import CPrinter
    from ..models.evaluate import evaluate

    value = np.asarray(evaluate(model.refractory, dict(pop.params.items()), None), dtype=np.float64)
    if not np.any(value != 0):
        return None
    if np.any(value < 0) or not np.all(np.isfinite(value)):
        raise NetworkError(f"{where}: the refractory period {model.refractory_source} must be finite and not "
                           "negative")
    if not all(o.unless_refractory for o in model.odes):
        raise NetworkError(f"{where}: model '{model.name}' has a refractory period, but its equation is not flagged "
                           f"'(unless refractory)': the event backend holds {maps.var} while refractory")
    return CPrinter("double").doprint(model.refractory)


def _refractory_ms(pop) -> np.ndarray:
    from ..models.evaluate import evaluate

    value = evaluate(pop.model.refractory, dict(pop.params.items()), None)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (pop.size,)).copy()


def _initial_state(pop, var: str, where: str) -> np.ndarray:
    from ..models.variables import Constant, ValueCounts, Values

    init = pop.vars[var].init
    if isinstance(init, Constant):
        return np.full(pop.size, float(init.value))
    if isinstance(init, Values):
        return np.broadcast_to(np.asarray(init.values, dtype=np.float64), (pop.size,)).copy()
    if isinstance(init, ValueCounts):
        return np.repeat(np.asarray(init.values, dtype=np.float64), np.asarray(init.counts)).astype(np.float64)
    raise NetworkError(f"{where}: init.{var} is {init.describe()}; the event backend takes initial values as a "
                       "number or an array (draw them with numpy and pass the array)")


def _drive(net, pop, where: str) -> np.ndarray:
    drive = np.zeros(pop.size)
    for cs in net.current_sources.values():
        if cs.population is not pop:
            continue
        if cs.model.name != "dc":
            raise NetworkError(f"current source '{cs.name}': model '{cs.model.name}' is not a constant drive; the "
                               "event backend takes 'dc' sources (a noisy or time-dependent input has no closed-form "
                               "flow)")
        drive += np.broadcast_to(np.asarray(cs.params["amp"], dtype=np.float64), (pop.size,))
    return drive


def _check_requirements(maps, values: dict, drive: np.ndarray, where: str):
    import sympy

    from ..codegen.event_maps import DRIVE

    for cond, why in maps.requires:
        fn = sympy.lambdify([sympy.Symbol(DRIVE, real=True), *[sympy.Symbol(k, real=True) for k in maps.symbols]],
                            cond, modules="numpy")
        ok = np.asarray(fn(drive, *[values[k] for k in maps.symbols]))
        if not np.all(ok):
            raise NetworkError(f"{where}: model '{maps.model}' needs {cond} ({why}); it fails for "
                               f"{int(np.size(ok) - np.count_nonzero(ok)) if np.ndim(ok) else 'all'} neuron(s)")
    f = {k: values[k] for k in maps.symbols}
    reset = _evaluate(maps.reset, f, drive, maps)
    threshold = _evaluate(maps.threshold, f, drive, maps)
    if np.any(reset >= threshold):
        raise NetworkError(f"{where}: model '{maps.model}' resets to {np.max(reset):g}, at or above its threshold "
                           f"{np.min(threshold):g}; the neuron would fire forever at one instant")


def _evaluate(expr, values, drive, maps):
    import sympy

    from ..codegen.event_maps import DRIVE

    fn = sympy.lambdify([sympy.Symbol(DRIVE, real=True), *[sympy.Symbol(k, real=True) for k in maps.symbols]],
                        expr, modules="numpy")
    return np.broadcast_to(np.asarray(fn(drive, *[values[k] for k in maps.symbols]), dtype=np.float64), drive.shape)


def _neuron_pop(net, pop, offset: int, spec: EventSpec):
    from ..codegen.event_maps import derive_event_maps

    where = f"population '{pop.name}'"
    maps = derive_event_maps(pop.model)
    refractory = _refractory(pop, maps, where)
    constants, per_neuron, values = _param_values(pop, where)
    drive = _drive(net, pop, where)
    _check_requirements(maps, values, drive, where)
    spec.maps[pop.name] = maps
    for name in per_neuron:
        spec.arrays.append({"name": f"{pop.name}_{name}", "ctype": "double", "doc": f"'{pop.name}'.{name}, per neuron",
                            "data": values[name]})
    spec.arrays.append({"name": f"{pop.name}_drive", "ctype": "double",
                        "doc": f"constant drive i_syn of '{pop.name}' (dc sources), per neuron", "data": drive})
    used = set(maps.symbols) | ({s.name for s in pop.model.refractory.free_symbols} if refractory else set())
    return {"name": pop.name, "model": pop.model.name, "size": pop.size, "offset": offset, "var": maps.var,
            "kind": maps.kind, "equation": maps.equation, "id": pop.id, "record": bool(pop.record_spikes),
            "constants": [c for c in constants if c["name"] in used],
            "per_neuron": [n for n in per_neuron if n in used],
            "T": maps.c["T"], "V": maps.c["V"], "jump": maps.c["jump"], "threshold": maps.c["threshold"],
            "threshold_source": pop.model.threshold_source, "reset": maps.c["reset"],
            "reset_source": "; ".join(st.source for st in pop.model.reset) or "none",
            "init": _initial_state(pop, maps.var, where), "source": False, "values": values, "drive": drive,
            "refractory": refractory, "refractory_source": pop.model.refractory_source,
            "refractory_ms": _refractory_ms(pop) if refractory else np.zeros(pop.size)}


def _source_pop(net, pop, offset: int, spec: EventSpec):
    from .. import rng

    where = f"population '{pop.name}'"
    info = {"name": pop.name, "model": pop.model.name, "size": pop.size, "offset": offset, "id": pop.id,
            "record": bool(pop.record_spikes), "source": True}
    if pop.model.name == "spike_source_array":
        info["kind"] = "array"
        for suffix, ctype, doc in (("times", "double", "spike times, sorted per neuron and instance"),
                                   ("end", "uint32_t", "end of each (instance, neuron)'s times")):
            spec.arrays.append({"name": f"{pop.name}_{suffix}", "ctype": ctype, "doc": f"'{pop.name}': {doc}",
                                "data": None})
        return info
    if pop.model.name == "poisson":
        info["kind"] = "poisson"
        info["stream"] = int(rng.stream_id(pop.id, 0))
        rate = _initial_state(pop, "rate", where)
        if np.any(rate < 0) or not np.all(np.isfinite(rate)):
            raise NetworkError(f"{where}: Poisson rates must be finite and non-negative")
        spec.arrays.append({"name": f"{pop.name}_rate", "ctype": "double", "doc": f"'{pop.name}' rates (Hz)",
                            "data": rate})
        return info
    raise AssertionError(pop.model.name)


def _increment(statement) -> str | None:
    """``x`` of a statement ``target += x`` (stored as ``target = target + x``), x a name; else None."""
    import sympy

    if statement.op != "+=":
        return None
    rest = sympy.expand(statement.value - sympy.Symbol(statement.target))
    rest = rest.xreplace({s: sympy.Symbol(s.name) for s in rest.free_symbols})
    return rest.name if isinstance(rest, sympy.Symbol) else None


def _weight_of(proj, where: str):
    """('var', name) or ('param', value) of a static weight update (``post_input += w``)."""
    wu = proj.weight_update
    code = [st for st in wu.on_pre]
    ok = (len(code) == 1 and _increment(code[0]) is not None and code[0].target == "post_input" and not wu.on_post
          and not wu.has_dynamics and not wu.pre_vars and not wu.post_vars and not wu.pathways)
    if ok:
        name = _increment(code[0])
        if name in proj.wu_vars:
            return "var", name
        if name in proj.wu_params:
            return "param", float(proj.wu_params[name])
    raise NetworkError(f"projection '{proj.name}': weight update '{wu.name}' is not a static weight "
                       "('post_input += w'); the event backend takes static and static_constant")


def _postsynaptic_target(proj, maps, where: str):
    ps = proj.postsynaptic
    stmts = ps.parse_apply(list(proj.post.vars)) if ps.apply_source else []
    if ps.odes or len(stmts) != 1 or _increment(stmts[0]) != "in_syn":
        raise NetworkError(f"{where}: postsynaptic model '{ps.name}' is not a delta synapse; the event backend "
                           "needs inputs that jump the target at once ('delta'): a synaptic current that decays "
                           "is a time-dependent input with no closed-form flow here")
    if stmts[0].target != maps.var:
        raise NetworkError(f"{where}: the delta synapse jumps '{stmts[0].target}'; it must jump '{maps.var}', the "
                           f"variable of model '{maps.model}'")


def _rows(proj):
    kind = proj.connectivity.kind
    n_pre, n_post = proj.pre.size, proj.post.size
    if kind == "dense":
        return (np.arange(n_pre + 1, dtype=np.uint32) * n_post,
                np.tile(np.arange(n_post, dtype=np.uint32), n_pre))
    if kind == "one_to_one":
        return np.arange(n_pre + 1, dtype=np.uint32), np.arange(n_pre, dtype=np.uint32)
    return proj.rows.row_start, proj.rows.post_ind


def _projection(net, proj, spec: EventSpec):
    from ..connectivity import procedural_info
    from ..models.variables import Constant, Values

    where = f"projection '{proj.name}'"
    if proj.post.name not in spec.maps:
        raise NetworkError(f"{where}: its target '{proj.post.name}' is a spike source; it cannot receive input")
    _postsynaptic_target(proj, spec.maps[proj.post.name], where)
    if proj.pathway_delay_steps or proj.synapse_delay_steps is not None:
        raise NetworkError(f"{where}: delays per pathway or per synapse; the event backend takes one delay per "
                           "projection")
    where_w, w = _weight_of(proj, where)
    delay = proj.delay_steps * net.dt
    info = {"name": proj.name, "pre": proj.pre.name, "post": proj.post.name,
            "delay": _literal(delay) if proj.delay_steps else 0, "procedural": proj.connectivity.kind == "procedural"}
    info["delay_ms"] = proj.delay_steps * net.dt
    if info["procedural"]:
        if where_w != "param":
            raise NetworkError(f"{where}: procedural connectivity stores no weights; give the weight as a parameter "
                               "(static_constant)")
        info["info"] = {**procedural_info(proj, int(net.seed)), "n_post": proj.post.size}
        info["weight"] = _literal(w)
        info["describe"] = f"procedural fixed_probability p = {proj.connectivity.p}, weight {w:g}"
        return info
    row_start, post = _rows(proj)
    spec.arrays.append({"name": f"{proj.name}_row_start", "ctype": "uint32_t", "doc": f"'{proj.name}' row starts",
                        "data": np.ascontiguousarray(row_start, dtype=np.uint32)})
    spec.arrays.append({"name": f"{proj.name}_post", "ctype": "uint32_t", "doc": f"'{proj.name}' targets",
                        "data": np.ascontiguousarray(post, dtype=np.uint32)})
    if where_w == "param":
        info["weight"] = _literal(w)
        info["describe"] = f"{proj.connectivity.kind} rows, weight {w:g}"
        return info
    init = proj.wu_vars[w].init
    if isinstance(init, Constant):
        weights = np.full(post.size, float(init.value))
    elif isinstance(init, Values):
        weights = np.broadcast_to(np.asarray(init.values, dtype=np.float64), (post.size,)).copy()
    else:
        raise NetworkError(f"{where}: wu_init.{w} is {init.describe()}; the event backend takes weights as a number "
                           "or an array (one per synapse)")
    spec.arrays.append({"name": f"{proj.name}_w", "ctype": "double", "doc": f"'{proj.name}' weights, per synapse",
                        "data": np.ascontiguousarray(weights)})
    info["weight"] = f"net.{proj.name}_w[k]"
    info["describe"] = f"{proj.connectivity.kind} rows, a weight per synapse"
    return info


def _refuse_unsupported(net):
    if net.timed_inputs:
        (pop, param), = list(net.timed_inputs)[:1]
        raise NetworkError(f"population '{pop}': timed input '{param}' is a time-dependent input; the event backend "
                           "needs a constant drive")
    if net.spike_neurons:
        raise NetworkError(f"population '{next(iter(net.spike_neurons))}': the event backend records the spikes of "
                           "whole populations; record all neurons and select afterwards")
    if net.var_recordings or net.recorded_rates:
        what = (f"variable '{next(iter(net.var_recordings))[1]}'" if net.var_recordings else "population rates")
        raise NetworkError(f"network '{net.name}': the event backend records exact spike times only, not {what}; "
                           "read the state with sim.state(population) after a run")


def event_spec(net) -> EventSpec:
    """Check ``net`` against the event backend and gather what its kernel needs."""
    _refuse_unsupported(net)
    spec = EventSpec(net.name, int(net.seed))
    offset = 0
    sources = []
    for pop in net.populations.values():
        if pop.model.name in ("poisson", "spike_source_array"):
            sources.append(pop)
            continue
        if not pop.model.spiking:
            raise NetworkError(f"population '{pop.name}': model '{pop.model.name}' does not spike; the event backend "
                               "simulates spiking neurons and spike sources")
        spec.neuron_pops.append(_neuron_pop(net, pop, offset, spec))
        offset += pop.size
    spec.n_neurons = offset
    for pop in sources:
        spec.source_pops.append(_source_pop(net, pop, offset, spec))
        offset += pop.size
    for pi in net.poisson_inputs.values():
        where = f"poisson input '{pi.name}'"
        maps = spec.maps.get(pi.population.name)
        if maps is None or pi.target != maps.var:
            raise NetworkError(f"{where}: it must jump the variable of a neuron population's ODE")
        from .. import rng

        spec.inputs.append({"name": pi.name, "target_pop": pi.population.name, "offset": offset,
                            "size": pi.population.size, "n": pi.n, "rate": pi.rate_hz,
                            "total_rate": _literal(pi.n * pi.rate_hz),
                            "weight": _literal(pi.weight), "stream": int(rng.stream_id(pi.id, 0))})
        offset += pi.population.size
    spec.n_units = offset
    if offset >= 2**32 - 1:
        raise NetworkError(f"network '{net.name}': {offset} units, more than uint32 indexes")
    for proj in net.projections.values():
        spec.projections.append(_projection(net, proj, spec))
    return spec


def render_event(spec: EventSpec, scan: bool = False) -> str:
    """The C++ of the event kernel of ``spec`` (stable text). ``scan``: the O(N)-per-spike
    reference instead of the heap (the next event found by recomputing every neuron's next
    spike time; the same events, for benchmarks)."""
    from .. import __version__
    from ..codegen.render import environment, philox_header

    template = environment().get_template("cpu/event.cpp.j2")
    return template.render(
        name=spec.name, version=__version__, philox=philox_header(), n_neurons=spec.n_neurons, n_units=spec.n_units,
        seed=spec.seed, arrays=spec.arrays, neuron_pops=spec.neuron_pops, source_pops=spec.source_pops,
        all_pops=spec.neuron_pops + spec.source_pops, inputs=spec.inputs, projections=spec.projections, scan=scan)


def _load(library):
    lib = library
    lib.sf_event_create.restype = ctypes.c_void_p
    lib.sf_event_create.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
    lib.sf_event_bind.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.sf_event_initialise.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.sf_event_run.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_int]
    for fn in ("sf_event_spike_count", "sf_event_deliveries"):
        getattr(lib, fn).restype = ctypes.c_uint64
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.sf_event_runaway.restype = ctypes.c_double
    lib.sf_event_runaway.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    lib.sf_event_take_spikes.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]
    lib.sf_event_state.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    lib.sf_event_set_state.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    lib.sf_event_free.argtypes = [ctypes.c_void_p]
    return lib


class EventSimulation:
    """A network on the ``event`` backend: ``run(duration)`` in ms, exact spike times.

    >>> sim = net.build(backend="event")
    >>> sim.run(1000.0)
    >>> times, ids = sim.spikes("exc")[0]   # batch instance 0: exact times (ms), neuron ids

    ``queue="scan"`` builds the O(N)-per-spike reference instead of the heap (every neuron's
    next spike time recomputed at each event; the same events, for benchmarks).
    """

    name = "event"

    def __init__(self, network, threads: int | None = None, batch_offset: int = 0, queue: str = "heap", **options):
        unknown = sorted(set(options) - {"progress", "on_nonfinite", "check_every", "keep_initial_values"})
        if unknown:
            raise NetworkError(f"backend 'event': unknown option(s) {', '.join(unknown)}")
        if isinstance(batch_offset, bool) or not isinstance(batch_offset, int) or batch_offset < 0:
            raise NetworkError(f"batch_offset must be a non-negative integer, got {batch_offset!r}")
        if queue not in ("heap", "scan"):
            raise NetworkError(f"backend 'event': queue must be 'heap' or 'scan' (the O(N) reference), got {queue!r}")
        from .build import build_and_load

        t0 = time.perf_counter()
        self.network = network
        self.batch_size = int(network.batch_size)
        self.batch_offset = batch_offset
        self.threads = int(threads or 0)
        self.spec = event_spec(network)
        self.source = render_event(self.spec, scan=queue == "scan")
        library = f"{network.name}_event" if queue == "heap" else f"{network.name}_event_scan"
        self._lib, self.build = build_and_load(self.source, name=library, describe=f"network '{network.name}' (event)")
        _load(self._lib)
        self.from_cache = self.build.from_cache
        self.build_seconds = time.perf_counter() - t0
        self.run_seconds = 0.0
        self._handle = self._lib.sf_event_create(self.batch_size, batch_offset)
        if not self._handle:
            raise MemoryError(f"network '{network.name}': out of memory creating the event simulation")
        self._arrays = {a["name"]: a for a in self.spec.arrays}
        self._spike_arrays: dict[str, tuple] = {}
        for p in self.spec.source_pops:
            if p["kind"] == "array":
                self._set_spike_arrays(p, [(np.zeros(0), np.zeros(0, dtype=np.int64))] * self.batch_size)
        self._bind()
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def _bind(self):
        self._pointers = (ctypes.c_void_p * max(1, len(self.spec.arrays)))()
        for k, a in enumerate(self.spec.arrays):
            dtype = np.uint32 if a["ctype"] == "uint32_t" else np.float64
            a["data"] = np.ascontiguousarray(a["data"], dtype=dtype)
            self._pointers[k] = a["data"].ctypes.data
        self._lib.sf_event_bind(self._handle, self._pointers)

    def reset(self):
        """Back to t = 0 and the initial state; recordings cleared."""
        v0 = np.zeros((self.batch_size, max(1, self.spec.n_neurons)))
        for p in self.spec.neuron_pops:
            v0[:, p["offset"]:p["offset"] + p["size"]] = p["init"]
        self._v0 = np.ascontiguousarray(v0)
        first = np.zeros((self.batch_size, max(1, self.spec.n_units)), dtype=np.uint32)
        for name, (start, _) in self._spike_arrays.items():
            p = self.spec.population(name)
            first[:, p["offset"]:p["offset"] + p["size"]] = start
        self._first = np.ascontiguousarray(first)
        self._lib.sf_event_initialise(self._handle, self._v0.ctypes.data, self._first.ctypes.data)
        self.t = 0.0
        self._spikes = [[] for _ in range(self.batch_size)]

    def run(self, duration: float | None = None, steps: int | None = None, *, check_every: int | None = None,
            progress: bool | None = None) -> EventSimulation:
        """Advance every batch instance by ``duration`` ms (events at times < t + duration), or by
        ``steps`` steps of the network's ``dt``; returns the simulation, as the clock-driven
        ``run`` does. ``check_every`` and ``progress`` are accepted for the same signature and
        have nothing to do here: the event loop has no steps to check between."""
        del check_every, progress
        if (duration is None) == (steps is None):
            raise ValueError("give run() either duration (ms) or steps, not both or neither")
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
                raise ValueError(f"steps must be a non-negative whole number, got {steps!r}")
            duration = int(steps) * self.dt
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
                or duration < 0:
            raise ValueError(f"duration must be a non-negative number of ms, got {duration!r}")
        t0 = time.perf_counter()
        self._lib.sf_event_run(self._handle, self.t + float(duration), self.threads)
        self.run_seconds = time.perf_counter() - t0
        self.t += float(duration)
        self._collect()
        self._check_runaway()
        return self

    def _check_runaway(self):
        unit = ctypes.c_uint32()
        for b in range(self.batch_size):
            t = self._lib.sf_event_runaway(self._handle, b, ctypes.byref(unit))
            if not math.isnan(t):
                p = next(p for p in self.spec.populations if p["offset"] <= unit.value < p["offset"] + p["size"])
                raise NetworkError(f"population '{p['name']}': neuron {unit.value - p['offset']} (batch instance {b}) "
                                   f"and others fired without end at t = {t:g} ms: an excitatory loop without delay "
                                   "whose jumps cross the threshold again after the reset; give the projection a "
                                   "delay or smaller weights (the run stopped there)")

    def _collect(self):
        for b in range(self.batch_size):
            n = int(self._lib.sf_event_spike_count(self._handle, b))
            times = np.empty(n)
            units = np.empty(n, dtype=np.uint32)
            self._lib.sf_event_take_spikes(self._handle, b, times.ctypes.data, units.ctypes.data)
            self._spikes[b].append((times, units))

    def events(self, b: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Every recorded spike of batch instance ``b`` in the order it happened: (times in ms,
        units: a model neuron's index is its population's offset plus its own)."""
        chunks = self._spikes[b]
        if not chunks:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]).astype(np.int64)

    def deliveries(self) -> int:
        """Synaptic events applied since the last reset, all instances together."""
        return sum(int(self._lib.sf_event_deliveries(self._handle, b)) for b in range(self.batch_size))

    # -- time, as the clock-driven simulations report it (dt: the network's, for delays only) --
    @property
    def dt(self) -> float:
        return self.network.dt

    @property
    def step(self) -> int:
        """The time reached, in steps of the network's dt (the dynamics have no steps)."""
        return int(round(self.t / self.dt))

    run_steps_requested = property(lambda self: self.step)

    @property
    def nonfinite(self) -> list:
        """The event backend checks no state for NaN or inf: nothing is found."""
        return []

    # -- recordings -------------------------------------------------------------------------
    def spikes(self, population: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Recorded spikes of ``population``: per batch instance, (exact times in ms, neuron ids),
        in the order they happened."""
        p = self.spec.population(population)
        if not p["record"]:
            recorded = [q["name"] for q in self.spec.populations if q["record"]]
            raise NetworkError(f"spikes of '{population}' are not recorded (recorded: {', '.join(recorded) or 'none'})")
        out = []
        for chunks in self._spikes:
            times = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0)
            units = np.concatenate([c[1] for c in chunks]).astype(np.int64) if chunks else np.zeros(0, np.int64)
            mine = (units >= p["offset"]) & (units < p["offset"] + p["size"])
            out.append((times[mine], units[mine] - p["offset"]))
        return out

    def recorded_indices(self, population: str, var: str | None = None) -> np.ndarray:
        """The neurons whose spikes are recorded: all of the population's."""
        p = self.spec.population(population)
        return np.arange(p["size"])

    def save(self, path):
        """Save the spikes to ``path`` (.npz, written atomically), as ``Simulation.save``:
        ``spikes/<pop>/times`` (exact, ms), ``.../ids``, ``.../batch``; ``batch_size`` and
        ``dt`` (the network's)."""
        from pathlib import Path

        from ..fileio import atomic_savez

        data = {"dt": np.float64(self.dt), "batch_size": np.int64(self.batch_size)}
        for p in self.spec.populations:
            if not p["record"]:
                continue
            sp = self.spikes(p["name"])
            data[f"spikes/{p['name']}/times"] = np.concatenate([t for t, _ in sp])
            data[f"spikes/{p['name']}/ids"] = np.concatenate([i for _, i in sp])
            data[f"spikes/{p['name']}/batch"] = np.concatenate(
                [np.full(i.size, b, dtype=np.int64) for b, (_, i) in enumerate(sp)])
        return atomic_savez(Path(path), data)

    def spike_counts(self) -> dict[str, int]:
        """Total recorded spikes per population, over all batch instances."""
        return {p["name"]: int(sum(ids.size for _, ids in self.spikes(p["name"])))
                for p in self.spec.populations if p["record"]}

    def state(self, population: str) -> np.ndarray:
        """The variable of ``population``'s ODE at the current time, (batch, n)."""
        p = self.spec.population(population)
        if p["source"]:
            raise NetworkError(f"population '{population}' is a spike source; it has no state to read")
        out = np.empty((self.batch_size, max(1, self.spec.n_neurons)))
        for b in range(self.batch_size):
            self._lib.sf_event_state(self._handle, b, out[b].ctypes.data)
        return out[:, p["offset"]:p["offset"] + p["size"]].copy()

    def set_state(self, population: str, values):
        """Set the variable of ``population``'s ODE at the current time: ``values`` of shape (n,)
        (every instance alike) or (batch, n); each neuron's next spike time follows from it."""
        p = self.spec.population(population)
        if p["source"]:
            raise NetworkError(f"population '{population}' is a spike source; it has no state to set")
        try:
            v = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.batch_size, p["size"]))
        except ValueError:
            raise NetworkError(f"population '{population}': expected {p['size']} values (or one row per batch "
                               f"instance), got shape {np.shape(values)}") from None
        if not np.all(np.isfinite(v)):
            raise NetworkError(f"population '{population}': state values must be finite")
        full = np.empty((self.batch_size, max(1, self.spec.n_neurons)))
        for b in range(self.batch_size):
            self._lib.sf_event_state(self._handle, b, full[b].ctypes.data)
        full[:, p["offset"]:p["offset"] + p["size"]] = v
        full = np.ascontiguousarray(full)
        for b in range(self.batch_size):
            self._lib.sf_event_set_state(self._handle, b, full[b].ctypes.data)

    # -- inputs and weights -----------------------------------------------------------------
    def set_spike_times(self, population: str, spikes):
        """Spike times (ms) of a spike-source-array population, ``(times, ids)`` for every batch
        instance alike or a list of one pair per instance; takes effect at the next reset
        (called here)."""
        p = self.spec.population(population)
        if p.get("kind") != "array":
            raise NetworkError(f"'{population}' is not a spike source array population")
        per_batch = [spikes] * self.batch_size if isinstance(spikes, tuple) and len(spikes) == 2 else list(spikes)
        if len(per_batch) != self.batch_size:
            raise NetworkError(f"{population}: expected spikes for {self.batch_size} batch instances, got "
                               f"{len(per_batch)}")
        self._set_spike_arrays(p, per_batch)
        self._bind()
        self.reset()

    def _set_spike_arrays(self, p, per_batch):
        from .spike_inputs import pack_spike_times

        n, name = p["size"], p["name"]
        start, end, times = pack_spike_times(name, per_batch, n)
        self._arrays[f"{name}_times"]["data"] = np.concatenate([times, [np.inf]])
        self._arrays[f"{name}_end"]["data"] = end.ravel()
        self._spike_arrays[name] = (start, end)

    def has_weights(self, projection: str) -> bool:
        """Whether ``projection`` has one weight per synapse (stored, ``static``)."""
        return f"{projection}_w" in self._arrays

    def weights(self, projection: str) -> np.ndarray:
        """The weights of a stored projection with one weight per synapse (in row order)."""
        a = self._arrays.get(f"{projection}_w")
        if a is None:
            raise NetworkError(f"projection '{projection}' has no weights per synapse on the event backend")
        return a["data"].copy()

    def set_weights(self, projection: str, weights):
        """Replace the weights of ``projection`` (one per synapse, row order); the state is kept."""
        a = self._arrays.get(f"{projection}_w")
        if a is None:
            raise NetworkError(f"projection '{projection}' has no weights per synapse on the event backend")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != a["data"].shape or not np.all(np.isfinite(w)):
            raise NetworkError(f"projection '{projection}': expected {a['data'].size} finite weights, got shape "
                               f"{w.shape}")
        a["data"][:] = w

    def rows(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """(row_start, post) of a stored projection, in the order of its weights."""
        return self._arrays[f"{projection}_row_start"]["data"], self._arrays[f"{projection}_post"]["data"]

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.sf_event_free(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


__all__ = ["EventSpec", "EventSimulation", "event_spec", "render_event"]
