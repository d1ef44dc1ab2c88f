"""e-prop eligibility traces derived from a neuron model's equations (Bellec et al. 2020).

A neuron model is an ODE system, a threshold condition and a reset. One simulation step
integrates, tests the threshold and resets, so the hidden state ``h_t`` (the values right
after integration, before the reset) evolves as

    h_t = Phi(R(h_{t-1}, z_{t-1}), I_t),       z_t = H(g(h_t)),

with ``Phi`` the integrator's discrete update, ``R`` the reset (linear in the spike z),
``g = lhs - rhs`` of the threshold condition and ``I`` the synaptic input ``i_syn``.
With the pseudo-derivative ``psi = dz/dg`` (a surrogate; triangular by default) sympy
gives everything e-prop needs:

* ``D = dh_t/dh_{t-1} = dPhi/dh . dR/dh``. The reset, written ``R = h + z (reset(h) - h)``,
  is differentiated twice over: at a fixed spike, ``I + z (J_reset - I)`` (the identity for
  an additive reset ``v -= v_th``, ``1 - z`` for a reset to a constant ``v = v_reset``:
  a spike forgets the past), and through the spike, ``dR/dz psi dg/dh``, except for the
  variables listed as *detached* (by default the one receiving the input: Bellec's
  "- z v_th" term carries no gradient),
* ``c = dPhi/dI``, the input factor,
* ``dz/dh = psi * dg/dh``.

For a synapse j <- i the eligibility vector obeys ``eps_t = D_{t} eps_{t-1} + c s_{i,t-1}``
and the eligibility trace is ``e_t = dz_t/dh_t . eps_t``. A component of ``eps`` whose
recursion involves only constants (parameters, dt) and other such components is the same
for every postsynaptic neuron: it lives *per presynaptic neuron* (the filtered input of a
LIF neuron with an additive reset); the others live *per synapse* (ALIF's adaptation
component; the membrane component of a neuron that resets to a constant, whose recursion
reads the postsynaptic spike).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ..errors import ModelError
from ..models.expressions import ParseContext, parse_expression, symbol
from ..models.neuron import INPUT_NAME, NeuronModel
from .integrate import integrate

Z = symbol("_z")
PSI = symbol("_psi")
G = symbol("_g")

#: Built-in surrogates, as expressions of the distance to threshold ``_g`` and ``scale``.
SURROGATES = {
    "triangular": "gamma * max(0, 1 - abs(_g) / scale) / scale",
    "fast_sigmoid": "gamma / (1 + abs(_g) / scale)**2 / scale",
    "exponential": "gamma * exp(-abs(_g) / scale) / scale",
}


@dataclass
class EligibilityDerivation:
    """What sympy derived for one neuron model (all expressions use the model's names)."""

    model: str
    states: list[str]  # hidden state variables h (those with an ODE)
    step: dict[str, sympy.Expr]  # Phi: new value of each state from post-reset values and i_syn
    reset: dict[str, sympy.Expr]  # R: post-reset value of each state, linear in _z
    detached: list[str]
    g: sympy.Expr  # threshold distance, z = H(g)
    psi: sympy.Expr  # surrogate dz/dg as a function of _g
    D: sympy.Matrix  # dh_t/dh_{t-1}, in terms of h_{t-1} (pre-reset), _z and _psi (at t-1)
    c: sympy.Matrix  # dPhi/dI
    dz_dh: sympy.Matrix  # dz/dh / psi: the gradient of g
    per_presynaptic: list[str] = field(default_factory=list)  # eps components shared by all post neurons
    per_synapse: list[str] = field(default_factory=list)
    scale: sympy.Expr = sympy.Integer(1)  # the surrogate's width (must be positive)

    def trace_update(self) -> dict[str, sympy.Expr]:
        """``eps_k,t`` from ``eps_*,t-1`` (symbols ``eps_<state>``) and the presynaptic
        spike ``_s``: the per-step recursion of every eligibility component."""
        eps = sympy.Matrix([symbol(f"eps_{s}") for s in self.states])
        new = self.D * eps + self.c * symbol("_s")
        return {s: sympy.simplify(new[k]) for k, s in enumerate(self.states)}

    def trace(self) -> sympy.Expr:
        """The eligibility trace ``e_t = psi_t * dg/dh . eps_t``."""
        eps = sympy.Matrix([symbol(f"eps_{s}") for s in self.states])
        return sympy.expand(PSI * (self.dz_dh.T * eps)[0])


def default_scale(model: NeuronModel) -> str | float:
    """The surrogate's width: the distance from the reset value to the threshold ``v_th - v_reset``
    for a model with both parameters (the built-in LIF), else ``v_th`` (Bellec's LIF and ALIF, at
    rest at 0), else 1."""
    if "v_th" in model.params and "v_reset" in model.params:
        return "v_th - v_reset"
    return "v_th" if "v_th" in model.params else 1.0


def threshold_distance(model: NeuronModel) -> sympy.Expr:
    cond = model.threshold
    if not isinstance(cond, sympy.core.relational.Relational):
        raise ModelError("e-prop needs a threshold of the form 'a > b' (or >=, <, <=)", model.name, "threshold")
    if isinstance(cond, (sympy.StrictGreaterThan, sympy.GreaterThan)):
        return sympy.expand(cond.lhs - cond.rhs)
    return sympy.expand(cond.rhs - cond.lhs)


def derive(model: NeuronModel, params: dict[str, float] | None = None, surrogate: str = "triangular",
           scale: str | float | None = None, gamma: float = 0.3, detached: list[str] | None = None,
           method: str | None = None) -> EligibilityDerivation:
    """Derive the e-prop factors of ``model``.

    ``scale`` normalises the surrogate (default: :func:`default_scale`). ``detached`` lists the
    state variables whose reset carries no gradient (default: those whose ODE reads ``i_syn``).
    """
    if model.threshold is None:
        raise ModelError("e-prop needs a spiking model (a threshold)", model.name, "threshold")
    if not model.odes:
        raise ModelError("e-prop needs a model with differential equations", model.name, "equations")
    states = [o.var for o in model.odes]
    integ = integrate(model.odes, model.name, method or model.integrator)
    phi = integ.update_map()
    I = symbol(INPUT_NAME)
    if detached is None:
        detached = [o.var for o in model.odes if o.rhs.has(I)]
    unknown = set(detached) - set(states)
    if unknown:
        raise ModelError(f"cannot detach the reset of {', '.join(sorted(unknown))}: not a state variable",
                         model.name, "eprop")
    # Reset as a map linear in z: h' = h + z * (reset(h) - h)
    after = {s: symbol(s) for s in states}
    for st in model.reset:
        if st.target not in after:
            continue  # resets of variables without ODEs do not enter the hidden state
        after[st.target] = st.value.xreplace({symbol(k): v for k, v in after.items()})
    reset = {s: symbol(s) + Z * (after[s] - symbol(s)) for s in states}
    g = threshold_distance(model)
    if not g.free_symbols & {symbol(s) for s in states}:
        raise ModelError("the threshold does not depend on any state variable", model.name, "threshold")
    if scale is None:
        scale = default_scale(model)
    ctx = ParseContext(model.name, set(model.params) | set(model.derived) | {"dt", "gamma", "scale", "_g"},
                       random_allowed=False)
    if surrogate in SURROGATES:
        psi_g = parse_expression(SURROGATES[surrogate], ctx, "surrogate")
    else:
        psi_g = parse_expression(surrogate, ctx, "surrogate")
    scale_expr = parse_expression(scale, ctx, "scale") if isinstance(scale, str) else sympy.Float(scale)
    psi_g = psi_g.xreplace({symbol("gamma"): sympy.Float(gamma), symbol("scale"): scale_expr})

    h = sympy.Matrix([symbol(s) for s in states])
    dg_dh = sympy.Matrix([sympy.diff(g, symbol(s)) for s in states])
    # dR/dh = dR/dh|_z + (dR/dz) (dz/dh)^T. The first term is the Jacobian of the reset map at a
    # fixed spike, I + z (J_reset - I): the identity for additive resets (v -= v_th), (1 - z) for a
    # reset to a constant (v = v_reset). The second is the path through the spike, left out for
    # the detached variables.
    reset_vec = sympy.Matrix([reset[s] for s in states])
    dR_dz = sympy.Matrix([0 if s in detached else sympy.diff(reset[s], Z) for s in states])
    dR_dh = reset_vec.jacobian(h) + dR_dz * (PSI * dg_dh).T
    # Jacobians of Phi at the post-reset state. D = dPhi/dh . dR/dh is kept as a sum of
    # products (not expanded): at a spike a factor (1 - z) then gives an exact zero.
    phi_vec = sympy.Matrix([phi[s] for s in states])
    post_reset = {symbol(s): reset[s] for s in states}
    dphi_dh = phi_vec.jacobian(h).applyfunc(sympy.expand).xreplace(post_reset)
    dR_dh = dR_dh.applyfunc(sympy.expand)
    n = len(states)
    D = sympy.Matrix(n, n, lambda a, b: sympy.Add(*[dphi_dh[a, k] * dR_dh[k, b] for k in range(n)]))
    c = phi_vec.diff(I).xreplace(post_reset).applyfunc(sympy.expand)
    deriv = EligibilityDerivation(model.name, states, phi, reset, list(detached), g, psi_g, D, c, dg_dh)
    deriv.scale = scale_expr
    # Which components are the same for every postsynaptic neuron?
    constant = set(model.params) | set(model.derived) | {"dt"}
    shared: set[str] = set()
    changed = True
    while changed:
        changed = False
        for k, s in enumerate(states):
            if s in shared:
                continue
            ok = all(D[k, m] == 0 or ({x.name for x in D[k, m].free_symbols} <= constant and states[m] in shared
                                      or (m == k and {x.name for x in D[k, m].free_symbols} <= constant))
                     for m in range(len(states)))
            ok = ok and {x.name for x in c[k].free_symbols} <= constant
            if ok:
                shared.add(s)
                changed = True
    deriv.per_presynaptic = [s for s in states if s in shared]
    deriv.per_synapse = [s for s in states if s not in shared]
    return deriv
