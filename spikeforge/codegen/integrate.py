"""Integration of ODEs over one time step, done symbolically with sympy.

Methods, tried in this order unless the model forces one (as Brian2 does):

``exact``
    for linear systems with constant coefficients ``x' = A x + b`` (inputs such as
    ``i_syn`` are held constant over the step). A diagonal system gets the closed form
    ``x + (x + b/a) * expm1(a dt)``; a coupled one gets the matrix exponential of the
    augmented matrix ``[[A, b], [0, 0]] * dt``.
``exponential_euler``
    every variable's derivative is linear in that variable (``x' = A(y) x + B(y)``).
``euler``
    forward Euler: always applies.
``rk4``
    classical Runge–Kutta, only when asked for.

The result is a list of assignments computing the new values from the old ones; the
new values are written back together (a simultaneous update).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sympy
from sympy.codegen.cfunctions import expm1

from ..errors import ModelError
from ..models.expressions import ODE, symbol

log = logging.getLogger("spikeforge.codegen")

METHODS = ("exact", "exponential_euler", "euler", "rk4")
_DT = symbol("dt")
_T = symbol("t")


@dataclass
class Integration:
    """How a set of ODEs advances one step: ``assignments`` compute temporaries and the new
    value of each state variable (``new[var]`` names the temporary holding it)."""

    method: str
    assignments: list[tuple[str, sympy.Expr]] = field(default_factory=list)
    new: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def update_map(self) -> dict[str, sympy.Expr]:
        """New value of each variable as one expression of the old values (temporaries
        substituted), e.g. for deriving e-prop eligibility traces."""
        env: dict[sympy.Symbol, sympy.Expr] = {}
        for name, expr in self.assignments:
            env[symbol(name)] = expr.xreplace(env)
        return {var: env[symbol(tmp)] for var, tmp in self.new.items()}


def _linear_parts(odes: list[ODE], states: list[sympy.Symbol]):
    """(A, b) with rhs = A x + b if the system is linear with coefficients free of the
    state and of t; else None."""
    rhs = sympy.Matrix([o.rhs for o in odes])
    A = rhs.jacobian(states)
    if any(sym in states or sym == _T for sym in A.free_symbols):
        return None
    b = sympy.expand(rhs - A * sympy.Matrix(states))
    if any(sym in states for sym in b.free_symbols):
        return None
    if b.has(_T):
        return None
    return A, b


def _closed_form(x, a, b):
    """New value of x for x' = a x + b over one step (a, b constant)."""
    if a == 0:
        return x + b * _DT
    return x + (x + sympy.cancel(b / a)) * expm1(a * _DT)


def _exact(odes, states):
    parts = _linear_parts(odes, states)
    if parts is None:
        return None
    A, b = parts
    n = len(states)
    if A.is_diagonal():
        return [_closed_form(states[i], A[i, i], b[i]) for i in range(n)]
    if n > 3:
        return None
    aug = sympy.zeros(n + 1, n + 1)
    aug[:n, :n] = A * _DT
    aug[:n, n] = b * _DT
    try:
        E = sympy.simplify(aug.exp())
    except Exception:  # sympy cannot always exponentiate symbolic matrices
        return None
    if E.has(sympy.I) or E.has(sympy.nan) or E.has(sympy.zoo):
        return None
    x = sympy.Matrix([*states, 1])
    new = E * x
    return [new[i] for i in range(n)]


def _exponential_euler(odes, states):
    out = []
    for o, x in zip(odes, states):
        a = sympy.diff(o.rhs, x)
        if a.has(x):
            return None
        b = sympy.expand(o.rhs - a * x)
        if b.has(x):
            return None
        out.append(_closed_form(x, a, b))
    return out


def _euler(odes, states):
    return [x + _DT * o.rhs for o, x in zip(odes, states)]


def _rk4(odes, states, assignments):
    """Classical RK4 with named stage temporaries (readable generated code)."""
    f = [o.rhs for o in odes]
    names = [s.name for s in states]

    def stage(k, scale):
        sub = {x: x + scale * _DT * symbol(f"_k{k}_{n}") for x, n in zip(states, names)}
        return [fi.xreplace(sub) for fi in f]

    for i, n in enumerate(names):
        assignments.append((f"_k1_{n}", f[i]))
    for k, (prev, scale) in enumerate(((1, sympy.Rational(1, 2)), (2, sympy.Rational(1, 2)), (3, 1)), start=2):
        vals = stage(prev, scale)
        for i, n in enumerate(names):
            assignments.append((f"_k{k}_{n}", vals[i]))
    return [
        x + _DT / 6 * (symbol(f"_k1_{n}") + 2 * symbol(f"_k2_{n}") + 2 * symbol(f"_k3_{n}") + symbol(f"_k4_{n}"))
        for x, n in zip(states, names)
    ]


def integrate(odes: list[ODE], model: str, method: str | None = None) -> Integration:
    """Integrate ``odes`` over one step ``dt`` with ``method`` or the first that applies."""
    if not odes:
        return Integration(method or "none")
    states = [symbol(o.var) for o in odes]
    candidates = [method] if method else ["exact", "exponential_euler", "euler"]
    for m in candidates:
        if m not in METHODS:
            raise ModelError(f"unknown integrator {m!r} (choose from {', '.join(METHODS)})", model, "integrator")
        assignments: list[tuple[str, sympy.Expr]] = []
        if m == "exact":
            new = _exact(odes, states)
        elif m == "exponential_euler":
            new = _exponential_euler(odes, states)
        elif m == "euler":
            new = _euler(odes, states)
        else:
            new = _rk4(odes, states, assignments)
        if new is None:
            if method:
                raise ModelError(
                    f"the '{m}' integrator does not apply to these equations "
                    f"({'not linear with constant coefficients' if m == 'exact' else 'not linear in each variable'})",
                    model,
                    "integrator",
                )
            continue
        result = Integration(m, assignments, sources=[o.source for o in odes])
        for o, expr in zip(odes, new):
            tmp = f"_{o.var}_new"
            result.assignments.append((tmp, expr))
            result.new[o.var] = tmp
        log.info("model '%s': integrating %s with the '%s' method", model, ", ".join(o.var for o in odes), m)
        return result
    raise AssertionError("euler always applies")
