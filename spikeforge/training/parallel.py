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

import sympy

from ..codegen.eprop import _threshold_distance
from ..codegen.integrate import Integration, _linear_parts, integrate
from ..errors import ModelError, NetworkError
from ..models.expressions import symbol
from ..models.functions import RANDOM_FUNCTIONS
from ..models.neuron import INPUT_NAME, NeuronModel
from ..models.synapse import IN_SYN_NAME, PostsynapticModel

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
