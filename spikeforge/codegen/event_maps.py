"""The maps an exact event-driven simulation needs, derived by sympy from a neuron model.

Between two inputs a neuron of the event backend follows its *free flow*: one ODE
``dv/dt = f(v)`` whose right-hand side holds the model's parameters and a drive ``i_syn``
that is constant in time (zero, or a per-neuron constant from ``dc`` current sources).
sympy classifies ``f`` as a polynomial in ``v`` and writes the flow's closed form:

=============  ======================  ===============================================
class          f(v)                    state after time s, V(s; v)
=============  ======================  ===============================================
integrator     a                       v + a s
linear (LIF)   a + b v                 v + f(v)/b * expm1(b s)
quadratic      alpha v^2 + beta v + c  -beta/(2 alpha) + sqrt(D) tan(phi(v) + omega s)
(QIF/theta)                            phi(v) = atan(u/sqrt(D)), u = v + beta/(2 alpha),
                                       D = c/alpha - beta^2/(4 alpha^2), omega = alpha sqrt(D)
=============  ======================  ===============================================

and from it the time to threshold ``T(v)`` (``+inf`` when the flow never reaches the
threshold), the jump map of a delta synapse, the reset, and the derivatives a spike-time
gradient needs: ``dT/dv = -1/f(v)``, ``dV/ds = f(V)``, ``dV/dv = f(V)/f(v)``. Every
closed form is checked against the ODE by sympy (``dV/ds = f(V)``, ``V(0) = v``,
``T(v_th) = 0``, ``dT/dv = -1/f``) before it is printed, and printed in numerically careful
forms: ``log1p`` and ``expm1`` where a difference of logarithms or exponentials would
cancel near the threshold, ``atan2`` for a difference of phases (the theta form of the QIF:
no blow-up of ``v`` is ever evaluated).

Models outside the class are refused with :class:`~spikeforge.errors.ModelError`, naming the
model and the reason (more than one ODE, time-dependent input, random draws, no closed
form). A numeric root finder for other flows is the next step; it is not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from sympy.codegen.cfunctions import expm1, log1p

from ..errors import ModelError
from ..models.functions import rand_normal, rand_uniform
from .cprint import CPrinter

#: The symbol of the time since the neuron's last update in ``V(s; v)``.
S = sympy.Symbol("s", real=True)
#: The name of the constant drive in the equations.
DRIVE = "i_syn"
#: The symbol of a delta synapse's weight in the jump map.
W = sympy.Symbol("w", real=True)


@dataclass
class EventMaps:
    """A model's derived maps (sympy expressions of ``v``, ``s``, ``w``, the parameters and
    ``i_syn``) and their C text (``c``: name -> expression, double precision)."""

    model: str
    var: str
    kind: str  # integrator, linear, quadratic
    flow: sympy.Expr
    threshold: sympy.Expr  # the value of var at which the neuron spikes (crossed upwards)
    reset: sympy.Expr  # the value of var after a spike
    time_to_threshold: sympy.Expr
    state_after: sympy.Expr
    jump: sympy.Expr
    dT_dv: sympy.Expr
    dV_ds: sympy.Expr
    dV_dv: sympy.Expr
    #: conditions (sympy expressions of parameters and drive, each with its reason) every
    #: neuron's values must meet (the quadratic class needs alpha > 0 and D > 0)
    requires: list = field(default_factory=list)
    c: dict = field(default_factory=dict)
    equation: str = ""

    @property
    def symbols(self) -> list[str]:
        """Parameter names the maps use (besides the variable, ``s``, ``w`` and ``i_syn``)."""
        names = set()
        for e in (self.flow, self.threshold, self.reset, self.time_to_threshold, self.state_after):
            names |= {x.name for x in e.free_symbols}
        return sorted(names - {self.var, "s", "w", DRIVE})

    def text(self) -> str:
        """The maps as readable text (what ``sim.spec.event_maps`` shows)."""
        v = self.var
        lines = [f"model '{self.model}': {self.equation}  [{self.kind} flow, constant drive {DRIVE}]",
                 f"  flow        d{v}/dt = f({v}) = {self.flow}",
                 f"  threshold   {v} = {self.threshold} (crossed upwards); reset {v} = {self.reset}",
                 f"  T({v})        = {self.c['T']}",
                 f"  V(s; {v})     = {self.c['V']}",
                 f"  jump        {v} -> {self.c['jump']}",
                 f"  dT/d{v}       = {self.c['dT_dv']}",
                 f"  dV/ds       = {self.c['dV_ds']}",
                 f"  dV/d{v}       = {self.c['dV_dv']}"]
        lines += [f"  requires    {self.c['requires'][k]}  ({why})" for k, (_, why) in enumerate(self.requires)]
        return "\n".join(lines)


def _refuse(model, why: str):
    raise ModelError(f"the event backend cannot simulate model '{model.name}': {why}", model.name, "equations")


def _has_random(expr) -> bool:
    return bool(expr.atoms(rand_uniform, rand_normal))


def _check_model(model):
    """The one ODE of ``model``, or a refusal naming why it is outside the class."""
    if getattr(model, "sim_code", None):
        _refuse(model, "it updates its state with sim_code; the event backend needs an ODE it can solve "
                       "in closed form")
    odes = list(model.odes)
    if len(odes) != 1:
        names = ", ".join(o.var for o in odes) or "none"
        _refuse(model, f"it has {len(odes)} ODEs ({names}); the event backend solves one-variable flows only")
    ode = odes[0]
    if _has_random(ode.rhs):
        _refuse(model, f"d{ode.var}/dt draws random numbers; its flow has no closed form")
    if any(sym.name == "t" for sym in ode.rhs.free_symbols):
        _refuse(model, f"d{ode.var}/dt depends on the time t (a time-dependent input)")
    if model.threshold is None or model.threshold is True:
        _refuse(model, "it has no threshold")
    return ode


def _threshold_value(model, thr, v: sympy.Symbol) -> sympy.Expr:
    if _has_random(thr):
        _refuse(model, "its threshold draws random numbers")
    if isinstance(thr, (sympy.StrictGreaterThan, sympy.GreaterThan)) and thr.lhs == v and v not in thr.rhs.free_symbols:
        return thr.rhs
    if isinstance(thr, (sympy.StrictLessThan, sympy.LessThan)) and thr.rhs == v and v not in thr.lhs.free_symbols:
        return thr.lhs
    _refuse(model, f"its threshold '{model.threshold_source}' is not '{v} > expression' (an upward crossing of "
                   "a level the flow can be solved for)")


def _reset_value(model, statements, v: sympy.Symbol, v_th: sympy.Expr) -> sympy.Expr:
    value = v_th  # no reset: the state stays at the threshold (then it would spike again at once)
    for st in statements:
        if st.target != v.name:
            _refuse(model, f"its reset writes '{st.target}'; only '{v.name}' may change")
        if _has_random(st.value):
            _refuse(model, "its reset draws random numbers")
        rhs = st.value.subs(v, value)  # st.value has real symbols already
        value = {"=": rhs, "+=": value + rhs, "-=": value - rhs}.get(st.op)
        if value is None:
            _refuse(model, f"its reset '{st.source}' uses '{st.op}'; '=', '+=' and '-=' are solved")
    return sympy.simplify(value)


def _closed_forms(model, f, v, v_th):
    """(kind, T(v), V(s; v), requirements) of the flow ``dv/dt = f``."""
    try:
        poly = sympy.Poly(sympy.expand(f), v)
    except sympy.PolynomialError:
        poly = None
    if poly is None or poly.degree() > 2:
        _refuse(model, f"its flow d{v}/dt = {f} is not a polynomial of degree <= 2 in {v}, so sympy has no "
                       "closed-form time to threshold (a numeric root finder is the documented next step)")
    coeffs = [sympy.simplify(poly.coeff_monomial(v**k)) for k in range(3)]
    if any(_has_random(c) for c in coeffs):
        _refuse(model, "its flow draws random numbers")
    c0, c1, c2 = coeffs
    fv, fth = f, f.subs(v, v_th)
    if c2 == 0 and c1 == 0:
        # dv/dt = a: a straight line, reached only when a > 0
        T = sympy.Piecewise(((v_th - v) / c0, c0 > 0), (sympy.oo, True))
        return "integrator", T, v + c0 * S, []
    if c2 == 0:
        # dv/dt = a + b v: v(s) = v_inf + (v - v_inf) e^(b s), v_inf = -a/b
        # written as v + f(v)/b * expm1(b s) (no cancellation for small s);
        # T(v) = log(f(v_th)/f(v)) / b = log1p(b (v_th - v)/f(v)) / b, finite when the flow is
        # upward on the whole way (f(v) > 0 and f(v_th) > 0: f is monotone in v)
        V = v + fv / c1 * expm1(c1 * S)
        T = sympy.Piecewise((log1p(c1 * (v_th - v) / fv) / c1, sympy.And(fv > 0, fth > 0)), (sympy.oo, True))
        return "linear", T, V, []
    # dv/dt = alpha v^2 + beta v + c = alpha (u^2 + D), u = v + beta/(2 alpha): with D > 0 the
    # phase phi = atan(u / sqrt(D)) moves at the constant speed omega = alpha sqrt(D) (the theta form)
    alpha, beta = c2, c1
    D = sympy.simplify(c0 / alpha - beta**2 / (4 * alpha**2))
    sq = sympy.sqrt(D)
    u, u_th = v + beta / (2 * alpha), v_th + beta / (2 * alpha)
    omega = alpha * sq
    V = -beta / (2 * alpha) + sq * sympy.tan(sympy.atan(u / sq) + omega * S)
    # atan(x) - atan(y) = atan2(x - y, 1 + x y), times D > 0 on both arguments
    T = sympy.atan2(sq * (u_th - u), D + u * u_th) / omega
    requires = [(alpha > 0, "the v^2 coefficient must be positive"),
                (D > 0, "no fixed point below threshold: the drive must exceed the QIF's rheobase")]
    return "quadratic", T, V, requires


def _finite_branch(T):
    return T.args[0][0] if isinstance(T, sympy.Piecewise) else T


def _verify(model, kind, f, v, v_th, T, V):
    """sympy checks the closed forms against the ODE; a failure is a bug here, not the user's."""
    checks = {
        "dV/ds = f(V)": sympy.diff(V, S) - f.subs(v, V),
        "V(0) = v": V.subs(S, 0) - v,
        "T(v_th) = 0": _finite_branch(T).subs(v, v_th),
        "dT/dv = -1/f(v)": sympy.diff(_finite_branch(T), v) + 1 / f,
    }
    free = sorted((set().union(*(e.free_symbols for e in checks.values())) - {v, S}), key=str)
    # a numeric check at points where the flow is upward and the phase formula holds
    points = [dict(zip(free, vals)) for vals in ([0.7 + 0.3 * k for k in range(len(free))],
                                                 [1.3 + 0.2 * k for k in range(len(free))])]
    for name, expr in checks.items():
        if sympy.simplify(expr) == 0:
            continue
        for pt in points:
            vals = {**pt, v: -0.05, S: 0.01}
            value = complex(expr.subs(vals).evalf())
            if abs(value) > 1e-9:
                raise AssertionError(f"event maps of model '{model.name}' ({kind}): {name} fails ({value})")


def derive_event_maps(model, target: str | None = None) -> EventMaps:
    """The event maps of ``model`` (a :class:`~spikeforge.models.neuron.NeuronModel`), or a
    ModelError naming the model and why it is outside the class. ``target``: the variable
    delta synapses jump (default: the ODE's variable)."""
    ode = _check_model(model)
    v = sympy.Symbol(ode.var, real=True)
    plain = sympy.Symbol(ode.var)
    subs = {s: sympy.Symbol(s.name, real=True) for s in ode.rhs.free_symbols}
    f = ode.rhs.subs(subs)
    if target is not None and target != ode.var:
        _refuse(model, f"delta synapses jump '{target}', which has no ODE; they must jump '{ode.var}'")
    real = {**{sympy.Symbol(x.name): x for x in subs.values()}, plain: v}
    v_th = _threshold_value(model, model.threshold.xreplace(real), v)
    statements = [type(st)(st.target, sympy.sympify(st.value).xreplace(real), st.source, st.op) for st in model.reset]
    reset = _reset_value(model, statements, v, v_th)
    if v in v_th.free_symbols:
        _refuse(model, "its threshold depends on its own state")
    kind, T, V, requires = _closed_forms(model, f, v, v_th)
    _verify(model, kind, f, v, v_th, T, V)
    Vs = sympy.Symbol("V_s", real=True)  # V(s) in the derivative formulas
    maps = EventMaps(
        model=model.name, var=ode.var, kind=kind, flow=f, threshold=v_th, reset=reset,
        time_to_threshold=T, state_after=V, jump=v + W,
        dT_dv=-1 / f,  # where T is finite
        dV_ds=f.subs(v, Vs), dV_dv=f.subs(v, Vs) / f, requires=requires,
        equation=ode.source.split("(unless")[0].strip(),
    )
    printer = CPrinter("double")
    maps.c = {
        "flow": printer.doprint(f),
        "T": printer.doprint(T),
        "V": printer.doprint(V),
        "jump": printer.doprint(maps.jump),
        "threshold": printer.doprint(v_th),
        "reset": printer.doprint(reset),
        "dT_dv": printer.doprint(maps.dT_dv),
        "dV_ds": printer.doprint(maps.dV_ds),
        "dV_dv": printer.doprint(maps.dV_dv),
        "requires": [printer.doprint(c) for c, _ in requires],
    }
    return maps


__all__ = ["EventMaps", "derive_event_maps", "DRIVE", "S", "W"]
