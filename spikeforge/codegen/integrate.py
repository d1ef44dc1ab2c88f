"""Integration of ODEs over one time step, done symbolically with sympy.

Methods, tried in this order unless the model forces one (as Brian2 does):

``exact``
    for linear systems with constant coefficients ``x' = A x + b`` (inputs such as
    ``i_syn`` are held constant over the step). The variables split into groups that do
    not influence each other. A single variable gets the closed form
    ``x + (x + b/a) * expm1(a dt)``. A coupled pair gets ``x + K (A x + b)`` with
    ``K = (exp(A dt) - I) A^-1``, where ``exp(A dt)`` is written in real arithmetic for
    either sign of the discriminant of ``A``: with eigenvalues ``mu +- sqrt(q)``, hyperbolic
    functions of ``sqrt(q) dt`` when ``q > 0`` (real eigenvalues), trigonometric functions of
    ``sqrt(-q) dt`` when ``q < 0`` (complex ones: damped oscillation, as in an adaptation
    current coupled to the membrane), the limit when ``q = 0``. ``q`` is a function of the
    parameters, so the choice is made in the generated code (once per step, among the
    loop-invariant constants). A coupled group of three gets sympy's matrix exponential of
    the augmented matrix ``[[A, b], [0, 0]] * dt`` when that is real for all parameter
    values; where it may be complex, ``exact`` does not apply and the next method is used
    (the log says so).
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
    notes: dict[str, str] = field(default_factory=dict)  # temporary -> comment for the generated line

    def update_map(self) -> dict[str, sympy.Expr]:
        """New value of each variable as one expression of the old values (temporaries
        substituted), e.g. for deriving e-prop eligibility traces."""
        env: dict[sympy.Symbol, sympy.Expr] = {}
        for name, expr in self.assignments:
            env[symbol(name)] = expr.xreplace(env)
        return {var: env[symbol(tmp)] for var, tmp in self.new.items()}


def linear_parts(odes: list[ODE], states: list[sympy.Symbol]):
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


def _coupled_groups(A: sympy.Matrix) -> list[list[int]]:
    """Indices of the variables in groups that do not influence each other (connected through
    non-zero off-diagonal entries of ``A``), each sorted, in order of their first variable."""
    n = A.shape[0]
    group = list(range(n))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(n):
        for j in range(n):
            if i != j and A[i, j] != 0:
                group[root(i)] = root(j)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(root(i), []).append(i)
    return sorted(out.values())


def _may_be_complex(e: sympy.Expr) -> bool:
    """Whether ``e`` may be complex (or undefined) for real parameter values: it contains ``I``,
    or a root (a power with a non-integer exponent) of something not known to be non-negative."""
    if e.has(sympy.I, sympy.nan, sympy.zoo, sympy.oo):
        return True
    return any(not p.exp.is_integer and not p.base.is_nonnegative for p in e.atoms(sympy.Pow))


def _pair(A, rhs, states, assignments, notes):
    """New values of a coupled pair ``x' = A x + b = rhs``: ``x + K rhs``, ``K = (exp(A dt) - I) A^-1``,
    in real arithmetic whatever the sign of the discriminant. None if ``A`` is singular for all
    parameter values (the caller then tries the matrix exponential)."""
    det = sympy.simplify(A.det())
    if det == 0:
        return None
    (a11, a12), (a21, a22) = A.tolist()
    x0 = states[0].name
    mu = (a11 + a22) / 2
    half_diff = (a11 - a22) / 2
    h = _DT
    t = {k: symbol(f"_{x0}_{k}") for k in ("q", "em1", "s", "cm1", "pd", "ps", "k11", "k12", "k21", "k22")}
    q = t["q"]
    real, imag = sympy.sqrt(q), sympy.sqrt(-q)
    names = f"({', '.join(x.name for x in states)})"
    # exp(A h) - I = pd I + ps (A - mu I) with pd = e^(mu h) cosh(sqrt(q) h) - 1 and
    # ps = e^(mu h) sinh(sqrt(q) h) / sqrt(q), written without cancellation; their forms for q < 0 are
    # cos and sin of sqrt(-q) h, and the limit for q = 0 (a double eigenvalue) is cm1 = 0, s = h
    defs = [
        ("q", half_diff**2 + a12 * a21, f"exact {names}: the eigenvalues of A are mu +- sqrt(q); "
                                        "complex for q < 0"),
        ("em1", expm1(mu * h), "expm1(mu dt), mu the mean of the eigenvalues"),
        ("s", sympy.Piecewise((sympy.sinh(real * h) / real, q > 0), (sympy.sin(imag * h) / imag, q < 0), (h, True)),
         "sinh(sqrt(q) dt) / sqrt(q); sin(sqrt(-q) dt) / sqrt(-q) for q < 0"),
        ("cm1", sympy.Piecewise((2 * sympy.sinh(real * h / 2) ** 2, q >= 0), (-2 * sympy.sin(imag * h / 2) ** 2, True)),
         "cosh(sqrt(q) dt) - 1; cos(sqrt(-q) dt) - 1 for q < 0"),
        ("pd", t["em1"] + t["cm1"] + t["em1"] * t["cm1"], "exp(A dt) - I = pd I + ps (A - mu I)"),
        ("ps", (1 + t["em1"]) * t["s"], ""),
    ]
    # K = (exp(A h) - I) adj(A) / det(A)
    P = sympy.Matrix([[t["pd"] + t["ps"] * half_diff, t["ps"] * a12], [t["ps"] * a21, t["pd"] - t["ps"] * half_diff]])
    K = P * sympy.Matrix([[a22, -a12], [-a21, a11]]) / det
    for (i, j), key in zip(((0, 0), (0, 1), (1, 0), (1, 1)), ("k11", "k12", "k21", "k22")):
        defs.append((key, K[i, j], "K = (exp(A dt) - I) A^-1" if key == "k11" else ""))
    for key, expr, note in defs:
        assignments.append((t[key].name, expr))
        if note:
            notes[t[key].name] = note
    return [states[i] + t[f"k{i + 1}1"] * rhs[0] + t[f"k{i + 1}2"] * rhs[1] for i in range(2)]


def _matrix_exponential(A, b, states):
    """New values from sympy's exponential of the augmented matrix; None where sympy cannot
    exponentiate it or the result may be complex for some parameter values."""
    n = len(states)
    aug = sympy.zeros(n + 1, n + 1)
    aug[:n, :n] = A * _DT
    aug[:n, n] = b * _DT
    try:
        E = sympy.simplify(aug.exp())
    except Exception:  # sympy cannot always exponentiate symbolic matrices
        return None
    x = sympy.Matrix([*states, 1])
    new = E * x
    new = [new[i] for i in range(n)]
    if any(_may_be_complex(e) for e in new):
        return None
    return new


def _exact(odes, states, assignments, notes, why: list[str]):
    parts = linear_parts(odes, states)
    if parts is None:
        why.append("not linear with constant coefficients")
        return None
    A, b = parts
    n = len(states)
    new: list = [None] * n
    for group in _coupled_groups(A):
        if len(group) == 1:
            i = group[0]
            new[i] = _closed_form(states[i], A[i, i], b[i])
            continue
        if len(group) > 3:
            why.append(f"more than 3 coupled variables ({', '.join(states[i].name for i in group)})")
            return None
        sub_A = A.extract(group, group)
        sub_b = b.extract(group, [0])
        sub_states = [states[i] for i in group]
        sub_rhs = [odes[i].rhs for i in group]  # = sub_A x + sub_b, as written
        values = _pair(sub_A, sub_rhs, sub_states, assignments, notes) if len(group) == 2 else None
        if values is None:
            values = _matrix_exponential(sub_A, sub_b, sub_states)
        if values is None:
            why.append(f"the matrix exponential of {', '.join(x.name for x in sub_states)} may be complex "
                       "for some parameter values")
            return None
        for i, value in zip(group, values):
            new[i] = value
    return new


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
    why_not_exact: list[str] = []
    for m in candidates:
        if m not in METHODS:
            raise ModelError(f"unknown integrator {m!r} (choose from {', '.join(METHODS)})", model, "integrator")
        assignments: list[tuple[str, sympy.Expr]] = []
        notes: dict[str, str] = {}
        if m == "exact":
            new = _exact(odes, states, assignments, notes, why_not_exact)
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
                    f"({why_not_exact[0] if m == 'exact' else 'not linear in each variable'})",
                    model,
                    "integrator",
                )
            continue
        linear_but_not_exact = bool(why_not_exact) and why_not_exact[0] != "not linear with constant coefficients"
        if m != "exact" and linear_but_not_exact:
            log.warning("model '%s': the equations are linear but exact integration does not apply (%s); "
                        "using the '%s' method", model, why_not_exact[0], m)
        result = Integration(m, assignments, sources=[o.source for o in odes], notes=notes)
        for o, expr in zip(odes, new):
            tmp = f"_{o.var}_new"
            result.assignments.append((tmp, expr))
            result.new[o.var] = tmp
        if m != "exact" and linear_but_not_exact:
            result.notes[result.new[odes[0].var]] = f"{m}: exact integration does not apply ({why_not_exact[0]})"
        log.info("model '%s': integrating %s with the '%s' method", model, ", ".join(o.var for o in odes), m)
        return result
    raise AssertionError("euler always applies")
