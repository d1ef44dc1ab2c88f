"""Time-parallel training (in progress): the per-step linear map of a layer's subthreshold dynamics.

A neuron whose subthreshold dynamics are linear, run without a reset, is a linear filter of
its input. One simulation step of a population (the postsynaptic model's ``apply`` code and
equations, then the neuron's equations integrated over ``dt`` and its ``sim_code``) is then

    x_t = A x_{t-1} + B u_t + c,

with ``x`` the state variables (the neuron's and its postsynaptic model's), ``u_t`` the input
delivered in step t (``in_syn``: the summed weights of the spikes that arrived) and ``A``, ``B``,
``c`` expressions of the parameters and ``dt``. :func:`derive_linear_step` takes them from the
integrator the simulation uses (:func:`spikeforge.codegen.integrate.integrate`; for linear
systems the exact one, the matrix exponential), so they are the simulation's own update,
differentiated, never a formula written for one model. The spike of the ``threshold`` rule is
``z_t = H(g(x_t))`` with ``g`` the threshold condition's ``lhs - rhs``, which must be affine in
the state.

:func:`check_feed_forward` refuses recurrent projections: the method scans whole sequences
layer after layer, so a layer's input must be known for all steps before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from ..codegen.eprop import _threshold_distance
from ..codegen.integrate import Integration, _linear_parts, integrate
from ..codegen.ir import ArraySpec, KernelSpec, Line
from ..errors import ModelError, NetworkError
from ..models.builtins import VALUE_INPUT
from ..models.expressions import symbol
from ..models.functions import RANDOM_FUNCTIONS
from ..models.neuron import INPUT_NAME, NeuronModel
from ..models.synapse import IN_SYN_NAME, PostsynapticModel
from ..models.variables import Constant

#: The input of one step, ``u_t``: the postsynaptic model's delivered input (``in_syn``), or the
#: neuron's ``i_syn`` when no postsynaptic model is given.
U = symbol(IN_SYN_NAME)


def ps_state(name: str) -> str:
    """The name under which a postsynaptic model's state variable ``name`` is a state of the layer."""
    return f"_ps_{name}"


@dataclass
class LinearStep:
    """One simulation step of a layer as the affine map ``x_t = A x_{t-1} + B u_t + c`` (see the
    module's doc), in the model's parameter names and ``dt``."""

    model: str
    states: list[str]  # x: the neuron's state variables, then the postsynaptic model's (ps_state names)
    A: sympy.Matrix  # dx_t/dx_{t-1}
    B: sympy.Matrix  # dx_t/du_t (a column)
    c: sympy.Matrix  # the constant part (e.g. v_rest (1 - exp(-dt/tau_m)))
    update: dict[str, sympy.Expr]  # x_t of each state as the simulation computes it, from x_{t-1} and u_t
    g: sympy.Expr | None  # threshold distance lhs - rhs in the state: z_t = H(g(x_t)); None: not spiking
    dg_dx: sympy.Matrix | None  # its gradient (constant: g is affine)
    neuron_integration: Integration | None  # the integrators the simulation prints, for the kernels
    ps_integration: Integration | None
    resets: list[str] = field(default_factory=list)  # variables the model's reset writes (not run here)
    refractory: str | None = None  # the model's refractory period (must be 0 where this step is used)

    def numeric(self, values: dict[str, float]) -> tuple:
        """``(A, B, c, dg_dx)`` as lists of float rows for parameter values ``values`` (with ``dt``);
        ``dg_dx`` None for a layer that does not spike."""
        subs = {symbol(k): v for k, v in values.items()}
        out = []
        for m in (self.A, self.B, self.c, self.dg_dx):
            if m is None:
                out.append(None)
                continue
            e = m.xreplace(subs)
            if e.free_symbols:
                raise ModelError(f"no value for {', '.join(sorted(s.name for s in e.free_symbols))}", self.model,
                                 "params")
            out.append([[float(v) for v in row] for row in e.tolist()])
        return tuple(out)


def _nonlinear_reason(odes) -> str | None:
    """Why ``odes`` are not linear with constant coefficients (naming the first such equation), or None."""
    states = [symbol(o.var) for o in odes]
    if not odes or _linear_parts(odes, states) is not None:
        return None
    for o in odes:
        if _linear_parts([o], states) is None:
            return f"'{o.source}' is not linear with constant coefficients in the state"
    return "the equations are not linear with constant coefficients in the state"


def _run_statements(stmts, env: dict):
    """Apply ``stmts`` (``target = value``, in order) to ``env``, a map from symbols to expressions."""
    for st in stmts:
        env[symbol(st.target)] = st.value.xreplace(env)


def derive_linear_step(model: NeuronModel, postsynaptic: PostsynapticModel | None = None,
                       method: str | None = None, spiking: bool = True) -> LinearStep:
    """The affine step map of ``model`` fed through ``postsynaptic`` (None: ``u_t`` is ``i_syn``).
    ``spiking=False`` for a layer that does not spike (a readout): no threshold is derived.

    ``method`` forces the neuron's integrator (default: the model's, as the simulation does).
    Refused, naming the model and the reason: no threshold, dynamics that are not linear with
    constant coefficients, a threshold that is not affine in the state."""
    if spiking and model.threshold is None:
        raise ModelError("the parallel method needs a spiking model (a threshold)", model.name, "threshold")
    reason = _nonlinear_reason(model.odes)
    if reason is not None:
        raise ModelError(f"the parallel method needs linear subthreshold dynamics: {reason}", model.name, "equations")
    if postsynaptic is not None:
        reason = _nonlinear_reason(postsynaptic.odes)
        if reason is not None:
            raise ModelError(f"the parallel method needs linear synaptic dynamics: {reason}", postsynaptic.name,
                             "equations")
    neuron_states = list(model.vars)
    ps_states = list(postsynaptic.vars) if postsynaptic is not None else []
    states = neuron_states + [ps_state(s) for s in ps_states]
    x = [symbol(s) for s in states]

    # one step as the simulation runs it: inputs (postsynaptic apply, then its equations), the
    # neuron's equations, its sim_code
    env: dict = {symbol(s): symbol(s) for s in neuron_states}
    ps_integ = None
    if postsynaptic is None:
        env[symbol(INPUT_NAME)] = U
    else:
        ps_env = {symbol(s): symbol(ps_state(s)) for s in ps_states}
        scope = {**env, **ps_env, symbol(INPUT_NAME): sympy.Integer(0), U: U}
        _run_statements(postsynaptic.parse_apply(neuron_states), scope)
        ps_integ = integrate(postsynaptic.odes, postsynaptic.name)
        ps_new = ps_integ.update_map()
        for s in ps_states:
            scope[symbol(ps_state(s))] = ps_new[s].xreplace(scope) if s in ps_new else scope[symbol(s)]
        env = {**{symbol(s): scope[symbol(s)] for s in neuron_states},
               **{symbol(ps_state(s)): scope[symbol(ps_state(s))] for s in ps_states},
               symbol(INPUT_NAME): scope[symbol(INPUT_NAME)]}
    neuron_integ = None
    if model.odes:
        neuron_integ = integrate(model.odes, model.name, method or model.integrator)
        new = {symbol(v): e.xreplace(env) for v, e in neuron_integ.update_map().items()}
        env.update(new)
    _run_statements(model.sim_code, env)
    # derived parameters (e.g. kappa = exp(-dt / tau_m)) written out: A, B, c in params and dt only
    derived = {symbol(d): e for d, e in model.derived.items()}
    update = {s: env[symbol(s)].xreplace(derived) for s in states}

    new_vec = sympy.Matrix([update[s] for s in states])
    A = new_vec.jacobian(x)
    B = new_vec.jacobian([U])
    if any(sym in A.free_symbols | B.free_symbols for sym in [*x, U]):
        raise ModelError("the parallel method needs linear subthreshold dynamics: the step's update "
                         "(sim_code or input) is not linear in the state and the input", model.name, "sim_code")
    c = sympy.expand(new_vec - A * sympy.Matrix(x) - B * U)
    if not spiking:
        return LinearStep(model.name, states, A, B, c, update, None, None, neuron_integ, ps_integ)
    g = _threshold_distance(model).xreplace(derived)
    dg_dx = sympy.Matrix([g]).jacobian(x)
    if dg_dx.free_symbols & set(x) or g.has(symbol(INPUT_NAME)) or g.has(*RANDOM_FUNCTIONS):
        raise ModelError("the parallel method needs a deterministic threshold affine in the state variables",
                         model.name, "threshold")
    return LinearStep(model.name, states, A, B, c, update, g, dg_dx, neuron_integ, ps_integ,
                      resets=[st.target for st in model.reset], refractory=model.refractory_source)


def check_feed_forward(network, populations) -> list:
    """``populations`` (names) in an order where every projection among them goes forward;
    a projection that closes a cycle (a population onto itself, or back to an earlier one) is
    refused, naming it: the parallel method runs each layer over the whole sequence before the next."""
    pops = [network.populations[p] if isinstance(p, str) else p for p in populations]
    inside = {p.name for p in pops}
    edges = [q for q in network.projections.values() if q.pre.name in inside and q.post.name in inside]
    order: list = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(p, path):
        state[p.name] = 1
        for q in edges:
            if q.pre is not p:
                continue
            if state.get(q.post.name) == 1:
                cycle = " -> ".join([*path[path.index(q.post.name):], q.post.name])
                raise NetworkError(f"projection '{q.name}' from '{q.pre.name}' to '{q.post.name}' is recurrent "
                                   f"(cycle {cycle}): the parallel method trains feed-forward networks only")
            if q.post.name not in state:
                visit(q.post, [*path, q.post.name])
        state[p.name] = 2
        order.append(p)

    for p in pops:
        if p.name not in state:
            visit(p, [p.name])
    return order[::-1]


# -- generated kernels (cpu): the forward pass over the whole sequence --------------------------

def _par_array(name, owner, var, size, comment) -> ArraySpec:
    """A per-instance array of the parallel method: (batch, T * N), zero-initialised."""
    return ArraySpec(name, owner, var, "scalar", size, True, "parallel", Constant(0), comment=comment)


def _weight_array(spec, q) -> str:
    return next(a.name for a in spec.arrays if a.owner == q.name and a.var == "w" and a.role == "state")


class ParallelCompiler:
    """Compiles a feed-forward network for time-parallel training (in progress: the forward pass
    of the hidden layers with the ``threshold`` spike rule).

    >>> compiled = ParallelCompiler().compile(net, inputs="inp", hidden=["h1", "h2"], n_steps=100)
    >>> out = compiled.forward(x)      # x: (steps, batch, inputs); out["h1"]["v"]: (steps, batch, N)

    Per hidden population, two kernels run outside the step loop (``custom_updates``), once per
    batch over all ``n_steps`` steps: the input of every step from the previous layer's spikes
    (``u_t = W s_{t-1}``, the synapses' sum in their order), then the scan of the model's own
    update (the simulation's printed integrator, so float for float the same values) and the
    threshold test."""

    def compile(self, network, inputs, hidden, n_steps, backend: str = "cpu", **backend_options):
        from ..codegen.generate import generate

        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise NetworkError(f"n_steps must be a positive integer, got {n_steps!r}")
        names = [hidden] if isinstance(hidden, str) else list(hidden)
        for name in [inputs, *names]:
            if name not in network.populations:
                raise NetworkError(f"no population '{name}' (populations: {', '.join(network.populations)})")
        inp = network.populations[inputs]
        if inp.model is not VALUE_INPUT:
            raise NetworkError(f"inputs: population '{inp.name}' must use the value_input model, "
                               f"not '{inp.model.name}'")
        order = [p for p in check_feed_forward(network, [inputs, *names]) if p is not inp]
        spec = generate(network)
        T = n_steps
        spec.arrays.append(_par_array(f"par_{inp.name}_x", inp.name, "_par_x", T * inp.size,
                                      "the input values of every step"))
        source = {inp.name: f"par_{inp.name}_x"}
        for h in order:
            q = self._incoming(network, h, source)
            step = derive_linear_step(h.model, q.postsynaptic)
            self._check_layer(h, q, step)
            arrays = {v: f"par_{h.name}_{v}" for v in h.model.vars}
            for v, a in arrays.items():
                spec.arrays.append(_par_array(a, h.name, f"_par_{v}", T * h.size, f"{v} at every step"))
            spec.arrays.append(_par_array(f"par_{h.name}_u", h.name, "_par_u", T * h.size,
                                          "input delivered at every step"))
            spec.arrays.append(_par_array(f"par_{h.name}_z", h.name, "_par_z", T * h.size, "spikes at every step"))
            spec.custom_updates.append(self._input_kernel(spec, q, source[q.pre.name], T))
            spec.custom_updates.append(self._forward_kernel(network, spec, h, q, arrays, T))
            source[h.name] = f"par_{h.name}_z"
        return CompiledParallel(network, spec, inp, order, T, backend, **backend_options)

    @staticmethod
    def _incoming(network, h, source):
        """The one projection into ``h``, from the inputs or an earlier layer."""
        incoming = [q for q in network.projections.values() if q.post is h]
        if len(incoming) != 1 or incoming[0].pre.name not in source:
            raise NetworkError(f"hidden: population '{h.name}' must have one projection into it, from the inputs "
                               f"or an earlier hidden layer (has: {', '.join(q.name for q in incoming) or 'none'})")
        return incoming[0]

    @staticmethod
    def _check_layer(h, q, step: LinearStep):
        if step.resets:
            raise ModelError(f"population '{h.name}': the threshold spike rule runs without a reset, and the model "
                             f"resets {', '.join(step.resets)}", h.model.name, "reset")
        if step.refractory is not None:
            raise ModelError(f"population '{h.name}': the parallel method has no refractory period",
                             h.model.name, "refractory")
        if q.postsynaptic.name != "one_step_curr" or q.weight_update.name not in ("static", "scaled"):
            raise NetworkError(f"projection '{q.name}': the parallel method takes static or scaled weights "
                               f"through one_step_curr (not {q.weight_update.name} / {q.postsynaptic.name})")
        if q.connectivity.kind != "dense" or q.delay_steps != 0:
            raise NetworkError(f"projection '{q.name}': the parallel method takes dense projections without delay")
        if any(not isinstance(v, (int, float)) for v in h.params.values()):
            raise NetworkError(f"population '{h.name}': the parallel method takes one value per parameter")

    @staticmethod
    def _input_kernel(spec, q, pre_array, T) -> KernelSpec:
        n_pre, n = q.pre.size, q.post.size
        w, u = _weight_array(spec, q), f"par_{q.post.name}_u"
        code = [
            Line(f"const uint32_t T = {T}u, N = {n}u, N_pre = {n_pre}u;"),
            Line("for (uint32_t _b = 0; _b < _B; _b++) {"),
            Line("for (uint32_t _t = 0; _t < T; _t++) {"),
            Line(f"scalar* const _u = _{u} + ((size_t)_b * T + _t) * N;", "u_t: the input delivered in step t"),
            Line("for (uint32_t _post = 0; _post < N; _post++) _u[_post] = 0;"),
            Line("if (_t == 0) continue;", "a spike at t reaches its targets at t+1: nothing arrives at 0"),
            Line(f"const scalar* const _s = _{pre_array} + ((size_t)_b * T + _t - 1) * N_pre;"),
            Line("for (uint32_t _pre = 0; _pre < N_pre; _pre++) {", "in the order of the spikes (neuron order)"),
            Line("const scalar _value = _s[_pre];"),
            Line("if (_value == 0) continue;", "a value of 0 sends nothing"),
            Line("for (uint32_t _post = 0; _post < N; _post++) "
                 f"_u[_post] += _{w}[(size_t)_pre * N + _post] * _value;",
                 f"u_t = W s_(t-1): {q.weight_update.name} on_pre (w times the spike's value), summed as in_syn"),
            Line("}"), Line("}"), Line("}"),
        ]
        return KernelSpec(f"parallel_input_{q.post.name}", "parallel_input", q.post.name, "custom_update",
                          f"parallel: the input of '{q.post.name}' through '{q.name}' at every step", [], [], code,
                          {"loop": None, "body": [], "once": []}, reads=(w, pre_array), writes=(u,))

    @staticmethod
    def _forward_kernel(network, spec, h, q, arrays, T) -> KernelSpec:
        from ..codegen.generate import KernelWriter, _emit_odes, _emit_statements

        m, n = h.model, h.size
        w = KernelWriter(network)
        w.add_params(dict(h.params), "", m.name)
        rename: dict = {}
        w.add_derived(m, rename, "")
        update: list[Line] = [Line(f"scalar {INPUT_NAME} = 0;", "summed synaptic input of this step"),
                              Line(f"const scalar {IN_SYN_NAME} = _par_{h.name}_u[_o];", "u_t")]
        _emit_statements(w, q.postsynaptic.parse_apply(list(m.vars), as_written=True), rename, update)
        _emit_odes(w, m.odes, rename, m.name, m.integrator, h.name, update)
        _emit_statements(w, m.sim_code, rename, update)
        state = [symbol(v) for v in m.vars]
        init = {a.var: a.name for a in spec.arrays if a.owner == h.name and a.role == "state" and a.var in m.vars}
        code = [Line(f"const uint32_t T = {T}u, N = {n}u;"),
                Line("for (uint32_t _b = 0; _b < _B; _b++) {"),
                Line("for (uint32_t _i = 0; _i < N; _i++) {")]
        for v in state:
            code.append(Line(f"scalar {v.name} = _{init[v.name]}[(size_t)_b * N + _i];",
                             "the initial value (x_-1)"))
        code += [Line("for (uint32_t _t = 0; _t < T; _t++) {"),
                 Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                 *update,
                 *(Line(f"_{arrays[v.name]}[_o] = {v.name};") for v in state),
                 Line(f"_par_{h.name}_z[_o] = ({w.expr(m.threshold.xreplace(rename))}) ? (scalar)1 : (scalar)0;",
                      f"threshold: {m.threshold_source}"),
                 Line("}"), Line("}"), Line("}")]
        return KernelSpec(f"parallel_forward_{h.name}", "parallel_forward", h.name, "custom_update",
                          f"parallel: the states and threshold spikes of '{h.name}' at every step",
                          w.finish_constants(), [], code, {"loop": None, "body": [], "once": []},
                          reads=(f"par_{h.name}_u", *init.values()),
                          writes=(*arrays.values(), f"par_{h.name}_z"))


class CompiledParallel:
    """A network compiled by :class:`ParallelCompiler`: a simulation whose custom updates run the
    parallel kernels."""

    def __init__(self, network, spec, inputs, layers, n_steps, backend="cpu", **backend_options):
        from ..runtime.simulation import Simulation

        self.network, self.spec, self.inputs, self.layers, self.n_steps = network, spec, inputs, layers, n_steps
        self.simulation = Simulation(network, backend=backend, spec=spec, on_nonfinite="ignore", progress=False,
                                     **backend_options)
        self.backend = self.simulation.backend

    def forward(self, x) -> dict:
        """Inputs ``x`` (steps, batch, inputs) -> per hidden population {variable: (steps, batch, N)}
        with the input ``u`` and the spikes ``z``."""
        T, B = self.n_steps, self.network.batch_size
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (T, B, self.inputs.size):
            raise NetworkError(f"inputs: expected shape {(T, B, self.inputs.size)}, got {x.shape}")
        self.simulation.reset()
        self.backend.push(f"par_{self.inputs.name}_x", x.transpose(1, 0, 2).reshape(B, T * self.inputs.size))
        for index in range(len(self.spec.custom_updates)):
            self.backend.custom_update(index)
        out = {}
        for h in self.layers:
            names = {v: f"par_{h.name}_{v}" for v in (*h.model.vars, "u", "z")}
            out[h.name] = {v: self.backend.pull(a).reshape(B, T, h.size).transpose(1, 0, 2) for v, a in names.items()}
        return out

    def close(self):
        self.simulation.close()
