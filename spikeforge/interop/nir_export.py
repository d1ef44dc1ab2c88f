"""Export to NIR, the Neuromorphic Intermediate Representation (the ``nir`` package).

:func:`to_nir` turns a network into a ``nir.NIRGraph``: every population a node, every
projection a ``Linear`` (or ``Affine``) node between them, inputs ``Input`` nodes and the
populations nothing reads from ``Output`` nodes. A neuron model maps onto a NIR primitive by
its equations, not by its name: its one state variable must follow a linear ODE
``dv/dt = a + b v + c i_syn`` (or the exact one-step update of one, ``v = A v + B i_syn + C``),
which is NIR's ``tau dv/dt = (v_leak - v) + r I`` with ``tau = -1/b``, ``r = c tau`` and
``v_leak = a tau``; the threshold ``v > v_threshold``, the reset ``v = v_reset`` (or
``v -= x``, a reset by subtraction). A model with other dynamics (ALIF's adaptation,
Izhikevich's quadratic term) has no NIR primitive and is refused, naming the population and
the model.

A reset by subtraction (``v -= x``, e-prop's LIF) exports as ``v_reset = v_threshold - x``,
where the membrane lands after a crossing exactly at the threshold, with ``spikeforge_reset:
subtract`` in the node's metadata; a spiking model without a reset exports as its ``LI`` followed
by a ``Threshold`` node. A refractory period other than 0 is refused. The leak voltage of a
leaky integrator fed by one projection (a readout's bias) becomes that projection's ``Affine``
bias, ``bias = v_leak / r``.

Units: NIR's time unit is the second (spikeforge's is the ms): time constants and delays are
converted; voltages, resistances and currents keep the model's units (mV, MOhm, nA for the
built-in LIF). NIR leaves the time step to the simulator; the graph's metadata holds
spikeforge's (``dt``, in seconds). As discrete-time simulators (and spikeforge's NIR import)
do, the export reads what a ``Linear`` node delivers in one step as a current held for that
step, so a projection's NIR weight is the current one spike gives for one step: ``w`` itself
for ``one_step_curr`` (e-prop's synapse); for ``exp_curr``, whose current jumps by ``w`` and
then decays, also ``w``, with the Cuba neuron's ``w_in = 1 / (1 - exp(-dt / tau_syn))`` making
that one-step input the jump (and the same charge); for ``delta`` (a jump of ``w`` in ``v``),
``w * tau / (r * dt)``. Each node's
metadata names what it came from (model, reset rule, postsynaptic model, weight rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sympy

from ..errors import NetworkError
from ..models.evaluate import evaluate
from ..models.expressions import symbol
from ..models.neuron import INPUT_NAME, SpikeSourceArrayModel
from ..models.variables import Constant, ValueCounts, Values

#: seconds per ms: spikeforge computes in ms, NIR in seconds
SECONDS_PER_MS = 1e-3
#: The weight-update variable the postsynaptic input names.
POST_INPUT = "post_input"


class NirExportError(NetworkError):
    """A part of the network that NIR cannot describe; the message names it."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NirExportError("NIR export needs the package nir: pip install 'spikeforge[nir]'") from None
    return nir


# -- where the numbers come from ---------------------------------------------------------


class _Numbers:
    """The parameter values and weights of an export: the network's own, a built
    simulation's current arrays, or a trainer's trained weights."""

    def __init__(self, network, sim=None):
        self.network, self.sim = network, sim
        self.weights: dict[str, np.ndarray] = {}  # projection -> per-synapse weights (trained)
        self.params: dict[tuple[str, str], np.ndarray] = {}  # (population, parameter) -> values (trained)

    def param(self, owner: str, part: str, name: str, params: dict, specs, where: str):
        """One parameter: a float, or one value per element."""
        if (owner, name) in self.params:
            return self.params[(owner, name)]
        kind = specs.kind(name)
        if self.sim is not None and kind != "constant":
            value = self.sim.get_param(owner, name, part)
        else:
            value = specs.batch[name] if kind == "batch" else params[name]
        if kind == "batch":
            values = np.asarray(value, dtype=np.float64)
            if np.any(values != values[0]):
                raise NirExportError(f"{where}: parameter '{name}' has one value per batch instance; a NIR graph "
                                     "is one network: give it one value")
            return float(values[0])
        return value if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)

    def synapse_weights(self, proj, name: str) -> np.ndarray:
        """The weight ``name`` of every synapse of ``proj``, in synapse order."""
        n = proj.n_synapses
        where = f"projection '{proj.name}'"
        if proj.name in self.weights:
            return self.weights[proj.name]
        if name in proj.weight_update.params:
            value = self.param(proj.name, "weight_update", name, proj.wu_params, proj.wu_values, where)
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
        if self.sim is not None:
            values = np.asarray(self.sim.get(proj.name, name), dtype=np.float64)
            if values.ndim == 2:  # one set of weights per batch instance
                if np.any(values != values[:1]):
                    raise NirExportError(f"{where}: weight '{name}' differs between batch instances; a NIR graph "
                                         "is one network")
                values = values[0]
            return np.broadcast_to(values, (n,))
        init = proj.wu_vars[name].init
        if isinstance(init, Constant):
            return np.full(n, float(init.value))
        if isinstance(init, Values):
            return np.asarray(init.values, dtype=np.float64).reshape(n)
        if isinstance(init, ValueCounts):
            return np.repeat(np.asarray(init.values, dtype=np.float64), init.counts)
        raise NirExportError(f"{where}: weight '{name}' is {init.describe()}, drawn when the network is built; "
                             "export the built simulation instead: to_nir(network.build())")


def _numbers_of_trainer(trainer) -> _Numbers:
    """The network a trainer trains, with its current (trained) weights and biases."""
    runtime = trainer.runtime
    net = runtime.job.network
    numbers = _Numbers(net)
    for name, value in trainer.weights.items():
        wt = runtime.names[name]
        flat = np.asarray(wt.to_compiled(value), dtype=np.float64)
        proj = next((q for q in net.projections if wt.array == f"{q}_w"), None)
        if proj is not None:
            numbers.weights[proj] = flat
            continue
        pop = next((p for p in net.populations if wt.array.startswith(f"{p}_p_")), None)
        if pop is not None:
            numbers.params[(pop, wt.array[len(pop) + 3:])] = flat
        elif not wt.fixed:
            raise NirExportError(f"trained array '{wt.array}' ({name}) belongs to no projection or population")
    return numbers


# -- matching the models ----------------------------------------------------------------


@dataclass
class _Neuron:
    """A population as a NIR neuron: ``tau dv/dt = (v_leak - v) + r I`` (``tau`` None: no
    leak, ``dv/dt = r I``), with a threshold and a reset when it spikes. Arrays of the
    population's size; ``tau`` in ms."""

    state: str
    tau: np.ndarray | None
    r: np.ndarray
    v_leak: np.ndarray
    threshold: np.ndarray | None = None
    reset: str | None = None  # "value", "subtract" or None (spiking without a reset)
    v_reset: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    leak_input: np.ndarray | None = None  # v_leak / r, worked out from the equations (a readout's bias exactly)

    def jump_per_step_input(self, dt: float) -> np.ndarray:
        """The jump of ``v`` that an input of 1 held for one step of ``dt`` ms gives (to first
        order in dt: ``r dt / tau``, or ``r dt`` without a leak)."""
        return self.r * dt * SECONDS_PER_MS if self.tau is None else self.r * dt / self.tau


def _refuse(pop, why: str):
    raise NirExportError(f"population '{pop.name}' (model '{pop.model.name}'): {why}; NIR has no primitive for it")


def _linear_in(expr, state: sympy.Symbol, drive: sympy.Symbol):
    """(constant, coefficient of ``state``, coefficient of ``drive``) of an expression linear
    in both, or None."""
    expr = sympy.expand(expr)
    b, c = expr.diff(state), expr.diff(drive)
    a = sympy.expand(expr - b * state - c * drive)
    if any(e.has(state) or e.has(drive) for e in (a, b, c)):
        return None
    return a, b, c


class _Env:
    """Evaluates expressions of a model's parameters, derived parameters and ``dt`` (numpy,
    one value per element where a parameter has one)."""

    def __init__(self, model, values: dict, dt: float, where: str):
        self.model, self.where = model, where
        self.env = {"dt": float(dt), **values}
        for name, expr in model.derived.items():
            self.env[name] = self(expr, f"derived parameter '{name}'")

    def __call__(self, expr, what: str, size: int | None = None):
        names = {s.name for s in sympy.sympify(expr).free_symbols}
        unknown = sorted(names - set(self.env))
        if unknown:
            raise NirExportError(f"{self.where}: {what} depends on '{unknown[0]}', not only on parameters; NIR has "
                                 "no primitive for it")

        def no_draws(kind, site):
            raise NirExportError(f"{self.where}: {what} draws random numbers; NIR has no primitive for it")

        value = np.asarray(evaluate(sympy.sympify(expr), self.env, no_draws), dtype=np.float64)
        return value if size is None else np.broadcast_to(value, (size,)).copy()


def _neuron_env(pop, numbers: _Numbers, dt: float) -> _Env:
    where = f"population '{pop.name}' (model '{pop.model.name}')"
    values = {p: numbers.param(pop.name, "neuron", p, pop.params, pop.values, where) for p in pop.model.params}
    return _Env(pop.model, values, dt, where)


def _exactly(env: _Env, expr, numeric: np.ndarray, what: str, n: int) -> np.ndarray:
    """``expr`` simplified before it is evaluated (``(1 - kappa) bias / (1 - kappa)`` is ``bias``
    exactly), else the value worked out from the numbers."""
    try:
        value = env(sympy.simplify(expr), what, n)
    except (NirExportError, TypeError, ValueError, ZeroDivisionError):
        return numeric
    return value if np.all(np.isfinite(value)) and np.allclose(value, numeric, rtol=1e-9, atol=0) else numeric


def _continuous(pop, env: _Env, dt: float) -> tuple[str, tuple]:
    """(state variable, (tau or None, r, v_leak, v_leak / r)) of a model with one linear state
    variable."""
    m, n = pop.model, pop.size
    drive = symbol(INPUT_NAME)
    states = sorted(m.vars)
    if len(states) != 1:
        _refuse(pop, f"{len(states)} state variables ({', '.join(states)}); NIR's neurons have one")
    v = states[0]
    state = symbol(v)
    if m.odes and m.sim_code:
        _refuse(pop, "equations and sim_code together")
    if m.odes:
        parts = _linear_in(m.odes[0].rhs, state, drive)
        if parts is None:
            _refuse(pop, f"'{m.odes[0].source}' is not linear in {v} and {INPUT_NAME}")
        a, b, c = (env(e, f"the equation of {v}", n) for e in parts)
        if np.all(b == 0):  # no leak: dv/dt = c i_syn (NIR's I and IF)
            if np.any(a != 0):
                _refuse(pop, f"a constant drive without a leak in '{m.odes[0].source}'")
            return v, (None, c / SECONDS_PER_MS, np.zeros(n), None)  # r per second
        if np.any(b >= 0):
            _refuse(pop, f"'{m.odes[0].source}' does not decay (its coefficient of {v} must be negative)")
        leak_input = _exactly(env, parts[0] / parts[2], a / c, "the leak", n) if np.all(c != 0) else None
        return v, (-1.0 / b, -c / b, -a / b, leak_input)
    if len(m.sim_code) != 1 or m.sim_code[0].target != v:
        _refuse(pop, "no equation of its state variable" if not m.sim_code else
                f"sim_code '{'; '.join(s.source for s in m.sim_code)}' is not one update of {v}")
    update = m.sim_code[0]
    parts = _linear_in(update.value, state, drive)
    if parts is None:
        _refuse(pop, f"'{update.source}' is not linear in {v} and {INPUT_NAME}")
    # v' = A v + B i + C, the exact step of tau dv/dt = (v_leak - v) + r i: A = exp(-dt / tau)
    c0, a, b = (env(e, f"the update of {v}", n) for e in parts)
    if np.any(a <= 0) or np.any(a >= 1):
        _refuse(pop, f"'{update.source}' is not the step of a decay (its factor of {v} must lie in (0, 1))")
    # tau from the factor's expression where it is an exponential (kappa = exp(-dt / tau_m): tau_m)
    factor = parts[1].subs({symbol(k): e for k, e in m.derived.items()})
    tau = _exactly(env, -symbol("dt") / sympy.expand_log(sympy.log(factor), force=True), -dt / np.log(a),
                   f"the time constant of {v}", n)
    leak_input = _exactly(env, parts[0] / parts[2], c0 / b, "the leak", n) if np.all(b != 0) else None
    return v, (tau, b / (1 - a), c0 / (1 - a), leak_input)


def _threshold_and_reset(pop, env: _Env, v: str) -> tuple:
    """(threshold, reset rule, v_reset) of a spiking model."""
    m, n = pop.model, pop.size
    state = symbol(v)
    cond = m.threshold
    if isinstance(cond, (sympy.StrictLessThan, sympy.LessThan)):
        cond = cond.reversed
    if not isinstance(cond, (sympy.StrictGreaterThan, sympy.GreaterThan)) or cond.lhs != state \
            or cond.rhs.has(*(symbol(s) for s in m.vars)):
        _refuse(pop, f"threshold '{m.threshold_source}' is not '{v} > value'")
    threshold = env(cond.rhs, "the threshold", n)
    if not m.reset:
        return threshold, None, None
    if len(m.reset) != 1 or m.reset[0].target != v:
        _refuse(pop, f"reset '{'; '.join(s.source for s in m.reset)}' changes more than {v}")
    value = sympy.expand(m.reset[0].value)
    if not value.has(state):
        return threshold, "value", env(value, "the reset", n)
    step = sympy.expand(state - value)
    if step.has(state):
        _refuse(pop, f"reset '{m.reset[0].source}' is not '{v} = value' or '{v} -= value'")
    # v -= x: at the crossing v = threshold, so v becomes threshold - x
    return threshold, "subtract", threshold - env(step, "the reset", n)


def _match_neuron(pop, numbers: _Numbers, dt: float) -> _Neuron | None:
    """``pop`` as a NIR neuron; None for an input (a model that does not read ``i_syn``)."""
    m = pop.model
    drive = symbol(INPUT_NAME)
    fields = [o.rhs for o in m.odes] + [s.value for s in m.sim_code]
    if m.threshold is not None and m.threshold is not True:
        fields.append(m.threshold)
    if isinstance(m, SpikeSourceArrayModel) or not any(sympy.sympify(f).has(drive) for f in fields):
        return None
    env = _neuron_env(pop, numbers, dt)
    v, (tau, r, v_leak, leak_input) = _continuous(pop, env, dt)
    neuron = _Neuron(v, tau, r, v_leak, metadata={"spikeforge_model": m.name}, leak_input=leak_input)
    if m.sim_code:  # written as the exact step of its ODE (leaky_readout): the import can take it back so
        neuron.metadata["spikeforge_update"] = "exact_step"
    if m.refractory is not None:
        period = env(m.refractory, "the refractory period", pop.size)
        if np.any(period != 0):
            _refuse(pop, f"a refractory period ('{m.refractory_source}' = {float(np.max(period)):g} ms)")
    if m.threshold is not None:
        neuron.threshold, neuron.reset, neuron.v_reset = _threshold_and_reset(pop, env, v)
        neuron.metadata["spikeforge_reset"] = neuron.reset or "none"
    return neuron


@dataclass
class _Synapse:
    """How a projection's input reaches its target: ``kind`` step (a current for one step),
    jump (a jump of the state variable) or exp (an exponentially decaying current of time
    constant ``tau_syn`` ms); ``gain`` multiplies the weights."""

    kind: str
    gain: np.ndarray
    tau_syn: np.ndarray | None = None


def _match_synapse(proj, numbers: _Numbers, state: str) -> _Synapse:
    ps, post = proj.postsynaptic, proj.post
    where = f"projection '{proj.name}' (postsynaptic model '{ps.name}')"
    n = post.size
    values = {p: numbers.param(proj.name, "postsynaptic", p, proj.ps_params, proj.ps_values, where)
              for p in ps.params}
    env = _Env(ps, values, numbers.network.dt, where)
    apply = ps.parse_apply(list(post.model.vars))
    in_syn, i_syn = symbol("in_syn"), symbol(INPUT_NAME)

    def added(st, target, amount):
        """The factor of ``amount`` that statement ``st`` adds to ``target``, or None."""
        if st.target != target:
            return None
        increment = sympy.expand(st.value - symbol(target))
        factor = sympy.simplify(increment / amount)
        return None if factor.free_symbols & {in_syn, i_syn, *map(symbol, ps.vars), symbol(state)} \
            else factor

    if not ps.vars and len(apply) == 1:
        for kind, target in (("step", INPUT_NAME), ("jump", state)):
            factor = added(apply[0], target, in_syn)
            if factor is not None:
                return _Synapse(kind, env(factor, "the input's factor", n))
    if len(ps.vars) == 1 and len(ps.odes) == 1 and len(apply) == 2:
        x = symbol(ps.odes[0].var)
        rate = sympy.expand(ps.odes[0].rhs).diff(x)
        into_x, into_i = added(apply[0], x.name, in_syn), added(apply[1], INPUT_NAME, x)
        if sympy.expand(ps.odes[0].rhs - rate * x) == 0 and not rate.has(x) and None not in (into_x, into_i):
            rate = env(rate, f"the decay of {x.name}", n)
            if np.all(rate < 0):
                return _Synapse("exp", env(into_x * into_i, "the input's factor", n), -1.0 / rate)
    raise NirExportError(f"{where}: '{ps.apply_source}' is not a current for one step ('i_syn += in_syn'), a jump "
                         f"of {state} ('{state} += in_syn') or an exponential current ('x += in_syn; i_syn += x' with "
                         "dx/dt = -x / tau); NIR has no primitive for it")


def _weight_name(proj) -> str:
    """The weight of a static projection (``post_input += w`` or ``post_input += w * value_pre``)."""
    wu = proj.weight_update
    where = f"projection '{proj.name}' (weight update '{wu.name}')"
    plastic = wu.on_post or wu.odes or wu.pre_odes or wu.post_odes or wu.on_pre_spike or wu.on_post_spike \
        or wu.summed or wu.pathways
    if plastic:
        raise NirExportError(f"{where}: has code besides delivering its weight (plasticity or synapse dynamics); "
                             "NIR has no primitive for it")
    if len(wu.on_pre) == 1 and wu.on_pre[0].target == POST_INPUT:
        delivered = sympy.expand(wu.on_pre[0].value - symbol(POST_INPUT)) / symbol("value_pre") \
            if "value_pre" in wu.neuron_names else sympy.expand(wu.on_pre[0].value - symbol(POST_INPUT))
        delivered = sympy.simplify(delivered)
        if delivered.is_Symbol and (delivered.name in wu.vars or delivered.name in wu.params):
            return delivered.name
    raise NirExportError(f"{where}: on_pre '{wu.source['on_pre']}' is not 'post_input += w' (or 'post_input += w * "
                         "value_pre'); NIR has no primitive for it")


# -- the graph ---------------------------------------------------------------------------


def _weight_matrix(proj, flat: np.ndarray) -> np.ndarray:
    """spikeforge's per-synapse weights as NIR's (post, pre) matrix, zero where no synapse is."""
    kind, n_pre, n_post = proj.connectivity.kind, proj.pre.size, proj.post.size
    if kind == "dense":
        return np.ascontiguousarray(np.asarray(flat, dtype=np.float64).reshape(n_pre, n_post).T)
    matrix = np.zeros((n_post, n_pre))
    if kind == "one_to_one":
        matrix[np.arange(n_pre), np.arange(n_pre)] = flat
        return matrix
    rows = proj.rows
    np.add.at(matrix, (rows.post_ind.astype(np.int64), rows.pre_ind.astype(np.int64)), flat)
    return matrix


def _check_network(net):
    for kind, items in (("current source", net.current_sources), ("Poisson input", net.poisson_inputs)):
        for name in items:
            raise NirExportError(f"{kind} '{name}': NIR has no primitive for input that is not a graph input; "
                                 "drive the network through an input population")
    for q in net.projections.values():
        where = f"projection '{q.name}'"
        if q.connectivity.kind == "procedural":
            raise NirExportError(f"{where}: procedural connectivity stores no synapses to export; use stored "
                                 "connectivity (fixed_probability without procedural)")
        if q.synapse_delay_steps is not None:
            raise NirExportError(f"{where}: a delay per synapse; NIR's Delay delays a signal per neuron: give the "
                                 "projection one delay")


def _neuron_node(nir, pop, neuron: _Neuron, cuba: _Synapse | None, dt: float):
    """The NIR node of a population, and the ``Threshold`` node that follows it when it spikes
    without a reset (else None)."""
    tau_s = None if neuron.tau is None else neuron.tau * SECONDS_PER_MS
    meta = dict(neuron.metadata)
    spikes_with_reset = neuron.threshold is not None and neuron.reset is not None
    if cuba is not None:
        if tau_s is None:
            _refuse(pop, "an exponential synaptic current into a neuron without a leak")
        meta["spikeforge_postsynaptic"] = "exp_curr"
        tau_syn = cuba.tau_syn * SECONDS_PER_MS
        # exp_curr's x jumps by w and decays by exp(-dt / tau_syn) a step: an input w held for one
        # step raises NIR's I (exactly integrated) by w_in w (1 - exp(-dt / tau_syn)), which is w,
        # and delivers the same charge, w dt / (1 - exp(-dt / tau_syn)), over its decay
        w_in = 1.0 / -np.expm1(-dt / cuba.tau_syn)
        if spikes_with_reset:
            node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_s, r=neuron.r, v_leak=neuron.v_leak,
                               v_threshold=neuron.threshold, v_reset=neuron.v_reset, w_in=w_in, metadata=meta)
        else:
            node = nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_s, r=neuron.r, v_leak=neuron.v_leak, w_in=w_in,
                              metadata=meta)
    elif tau_s is None:
        node = nir.IF(r=neuron.r, v_threshold=neuron.threshold, v_reset=neuron.v_reset, metadata=meta) \
            if spikes_with_reset else nir.I(r=neuron.r, metadata=meta)
    elif spikes_with_reset:
        node = nir.LIF(tau=tau_s, r=neuron.r, v_leak=neuron.v_leak, v_threshold=neuron.threshold,
                       v_reset=neuron.v_reset, metadata=meta)
    else:
        node = nir.LI(tau=tau_s, r=neuron.r, v_leak=neuron.v_leak, metadata=meta)
    if neuron.threshold is not None and neuron.reset is None:  # spikes while v > threshold: a Threshold node
        return node, nir.Threshold(threshold=neuron.threshold, metadata={"spikeforge_reset": "none"})
    return node, None


def _target_synapse(pop, synapses: list[_Synapse], names: list[str]) -> _Synapse | None:
    """The exponential current all projections into ``pop`` share (a Cuba neuron), or None."""
    exp = [s for s in synapses if s.kind == "exp"]
    if not exp:
        return None
    if len(exp) != len(synapses):
        other = names[next(i for i, s in enumerate(synapses) if s.kind != "exp")]
        _refuse(pop, f"exponential synaptic currents and projection '{other}' without one (a Cuba neuron has one "
                     "synaptic current for all of its inputs)")
    if any(not np.allclose(s.tau_syn, exp[0].tau_syn, rtol=1e-12, atol=0) for s in exp):
        _refuse(pop, "exponential synaptic currents of different time constants "
                     f"({', '.join(names)}); a Cuba neuron has one")
    return exp[0]


def _unique_name(base: str, taken) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _readout_bias(neuron: _Neuron, synapses: list[_Synapse]) -> np.ndarray | None:
    """A leaky integrator fed by one current (a readout): its leak voltage as the bias of that
    input (``r * bias = v_leak``), the leak voltage then 0; None for any other population."""
    readout = neuron.threshold is None and neuron.tau is not None and len(synapses) == 1 \
        and synapses[0].kind != "exp" and np.all(neuron.r != 0)
    if not readout:
        return None
    bias = neuron.v_leak / neuron.r if neuron.leak_input is None else neuron.leak_input
    neuron.v_leak = np.zeros_like(bias)
    return bias


def build_graph(numbers: _Numbers, outputs=None, metadata=None):
    """The ``nir.NIRGraph`` of ``numbers.network`` with the values of ``numbers``."""
    nir = _nir()
    net = numbers.network
    _check_network(net)
    dt_s = net.dt * SECONDS_PER_MS
    neurons = {p.name: _match_neuron(p, numbers, net.dt) for p in net.populations.values()}
    incoming = {p: [q for q in net.projections.values() if q.post.name == p] for p in net.populations}
    for (pop, param) in net.timed_inputs:
        if neurons[pop] is not None:
            raise NirExportError(f"population '{pop}': parameter '{param}' follows a timed input; only input "
                                 "populations (graph inputs) may")
    nodes, edges, last, synapses, biases = {}, [], {}, {}, {}
    taken = set(net.populations) | set(net.projections)
    for name, pop in net.populations.items():
        neuron = neurons[name]
        last[name] = name
        if neuron is None:
            if incoming[name]:
                raise NirExportError(f"population '{name}' (model '{pop.model.name}') is an input (its model does "
                                     f"not read {INPUT_NAME}) but projection '{incoming[name][0].name}' targets it")
            nodes[name] = nir.Input(input_type={"input": np.array([pop.size])},
                                    metadata={"spikeforge_model": pop.model.name})
            continue
        synapses[name] = [_match_synapse(q, numbers, neuron.state) for q in incoming[name]]
        cuba = _target_synapse(pop, synapses[name], [q.name for q in incoming[name]])
        biases[name] = _readout_bias(neuron, synapses[name])
        nodes[name], threshold = _neuron_node(nir, pop, neuron, cuba, net.dt)
        if threshold is not None:  # spikes while v > threshold, without a reset
            last[name] = _unique_name(f"{name}_threshold", taken)
            taken.add(last[name])
            nodes[last[name]] = threshold
            edges.append((name, last[name]))
    for name in synapses:
        for q, syn in zip(incoming[name], synapses[name]):
            nodes[q.name] = _projection_node(nir, q, syn, neurons[name], numbers, biases[name])
            source = last[q.pre.name]
            if q.delay_steps:
                delay = _unique_name(f"{q.name}_delay", taken)
                taken.add(delay)
                nodes[delay] = nir.Delay(delay=np.full(q.pre.size, q.delay_steps * dt_s))
                edges.append((source, delay))
                source = delay
            edges += [(source, q.name), (q.name, name)]
    if isinstance(outputs, str):
        outputs = [outputs]
    if outputs is None:
        outputs = [p for p in net.populations if not any(q.pre.name == p for q in net.projections.values())]
    for p in outputs:
        if p not in net.populations:
            raise NirExportError(f"outputs: unknown population '{p}' (populations: {', '.join(net.populations)})")
        out = _unique_name(f"{p}_output", taken)
        taken.add(out)
        nodes[out] = nir.Output(output_type={"output": np.array([net.populations[p].size])})
        edges.append((last[p], out))
    meta = {"source": "spikeforge", "network": net.name, "dt": dt_s, **(metadata or {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _projection_node(nir, q, syn: _Synapse, neuron: _Neuron, numbers: _Numbers, bias):
    """The Linear node of ``q`` (Affine with ``bias`` for the input of a readout)."""
    flat = numbers.synapse_weights(q, _weight_name(q))
    factor, rule = np.ones(q.post.size), "w"
    if syn.kind == "jump":  # the input held for one step that makes v jump by w
        jump = neuron.jump_per_step_input(numbers.network.dt)
        if np.any(jump == 0):
            raise NirExportError(f"projection '{q.name}': its target '{q.post.name}' has r = 0, so a jump of "
                                 f"{neuron.state} cannot be an input current")
        factor, rule = 1.0 / jump, "w * tau / (r * dt)" if neuron.tau is not None else "w / (r * dt)"
    weight = _weight_matrix(q, flat) * (syn.gain * factor)[:, None]
    meta = {"spikeforge_postsynaptic": q.postsynaptic.name, "spikeforge_weight": rule}
    if q.delay_steps:
        meta["spikeforge_delay_steps"] = int(q.delay_steps)
    if bias is not None:
        return nir.Affine(weight=weight, bias=bias, metadata=meta)
    return nir.Linear(weight=weight, metadata=meta)


# -- the public interface ----------------------------------------------------------------


def _numbers_of(source, checkpoint) -> tuple[_Numbers, dict]:
    from ..network import Network
    from ..runtime.simulation import Simulation
    from ..training.trainer import Trainer

    if isinstance(source, (str, Path)):
        source, checkpoint = _source_of_file(Path(source), checkpoint), None
    if isinstance(source, Trainer):
        if checkpoint is not None:
            source.load_checkpoint(checkpoint)  # every field checked against the trainer's job
        from ..training.parallel import ParallelCompiler

        method = "parallel" if isinstance(source.runtime.job.compiler, ParallelCompiler) else "e-prop"
        return _numbers_of_trainer(source), {"training_method": method, "epochs_trained": int(source.epoch)}
    if checkpoint is not None:
        raise NirExportError("a checkpoint belongs to a training job: export a Trainer (or a job file) with it")
    if isinstance(source, Simulation):
        return _Numbers(source.network, sim=source), {}
    if isinstance(source, Network):
        return _Numbers(source), {}
    raise NirExportError(f"to_nir exports a Network, a Simulation, a Trainer or a training job file, got "
                         f"{type(source).__name__}")


def _source_of_file(path: Path, checkpoint):
    """What a YAML file describes: a training job's trainer (with the weights of ``checkpoint``,
    by default of the job's ``training.checkpoint`` where that file exists), or a network file's
    network (built, when the generated code draws its weights)."""
    from ..errors import ConfigError
    from ..frontend import parse
    from ..frontend.network import load_file
    from ..training.config import load_training

    try:
        top = parse(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ConfigError("no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", str(path)) from None
    if isinstance(top, dict) and "data" in top:  # a training job (a network file has no data)
        job = load_training(path)
        if checkpoint is None and job.checkpoint is not None and job.checkpoint.exists():
            checkpoint = job.checkpoint
        return trainer_of_job(job, checkpoint)
    if checkpoint is not None:
        raise NirExportError(f"{path}: a network file, not a training job: it has no checkpoint to export")
    network = load_file(path)[0]
    return network.build() if weights_drawn_at_build(network) else network


def weights_drawn_at_build(network) -> list[str]:
    """The projections of ``network`` whose weights the generated code draws when it is built
    (``uniform``, ``normal``, expressions): only a built simulation holds them, so export
    ``network.build()`` for these."""
    drawn = []
    for q in network.projections.values():
        try:
            name = _weight_name(q)
        except NirExportError:
            continue  # refused when exported
        var = q.wu_vars.get(name)
        if var is not None and not isinstance(var.init, (Constant, Values, ValueCounts)):
            drawn.append(q.name)
    return drawn


def trainer_of_job(job, checkpoint=None):
    """The :class:`~spikeforge.training.trainer.Trainer` of a training job (a YAML file's path,
    or a loaded :class:`~spikeforge.training.config.TrainingJob`), with the weights of
    ``checkpoint`` (every field checked against the job) when given."""
    from ..training.config import load_training
    from ..training.trainer import Trainer

    if isinstance(job, (str, Path)):
        job = load_training(job)
    trainer = Trainer(job.config, **job.trainer_options)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    return trainer


def to_nir(source, *, checkpoint=None, outputs=None):
    """``source`` as a ``nir.NIRGraph``.

    ``source`` is a :class:`~spikeforge.network.Network` (its weights as initialised: numbers,
    lists or ``{values, counts}``), a built :class:`~spikeforge.runtime.simulation.Simulation`
    (its current weights and parameters), a :class:`~spikeforge.training.trainer.Trainer` (its
    trained weights; ``checkpoint``: load this checkpoint into it first), the path of a
    training job file (with the weights of ``checkpoint``, by default of the job's
    ``training.checkpoint`` where that file exists, else the initial ones) or the path of a
    network file (built first when its weights are drawn at build). ``outputs`` names the
    populations that become graph outputs (default: those no projection leaves).

    Raises :class:`NirExportError` naming the population, model or projection NIR has no
    primitive for (module docstring: the mapping and the units).

    Examples:
        >>> from spikeforge import LIF, SPIKE_SOURCE_ARRAY, STATIC, EXP_CURR, Network, to_nir
        >>> net = Network("demo", dt=0.5)
        >>> _ = net.add_population("inp", 3, SPIKE_SOURCE_ARRAY)
        >>> _ = net.add_population("exc", 4, LIF)
        >>> _ = net.add_projection("inp_exc", "inp", "exc", STATIC, EXP_CURR, wu_init={"w": 0.5})
        >>> graph = to_nir(net)                 # needs the package nir
        >>> type(graph).__name__, len(graph.edges) > 0
        ('NIRGraph', True)"""
    numbers, meta = _numbers_of(source, checkpoint)
    return build_graph(numbers, outputs=outputs, metadata=meta)


def write_nir(source, path, *, checkpoint=None, outputs=None) -> Path:
    """Export ``source`` (see :func:`to_nir`; or a ``nir.NIRGraph`` as it is) and write it to
    ``path`` with ``nir.write``."""
    nir = _nir()
    graph = source if isinstance(source, nir.NIRGraph) and checkpoint is None and outputs is None \
        else to_nir(source, checkpoint=checkpoint, outputs=outputs)
    path = Path(path)
    nir.write(path, graph)
    return path


__all__ = ["NirExportError", "to_nir", "write_nir", "trainer_of_job", "weights_drawn_at_build", "build_graph",
           "SECONDS_PER_MS"]
