"""Removing the 0/0 of rate functions such as ``a * x / (exp(x / k) - 1)`` before any code is printed.

Hodgkin-Huxley-type rate functions are usually written ``c * X / (exp(X / k) - 1)``: finite
everywhere, but evaluated as written they give 0/0 (NaN) or x/0 (inf) where ``X`` is exactly
or nearly zero, which happens in float precision. Wherever a product has a factor
``1 / (s * (exp(Y) - 1))`` (``s`` a number, so ``1 - exp(Y)`` too) and the rest of the product
is ``q * Y`` with ``q`` a polynomial, the product is rewritten as ``q / (s * exprel(Y))``; and
``s * (exp(Y) - 1) / (q * Y)`` becomes ``s * exprel(Y) / q``. Both are identities, with the
removable singularity at ``Y = 0`` removed. The match is structural (polynomial division in
the symbols of ``Y``); numeric coefficients may differ by float rounding of the literals only.
"""

from __future__ import annotations

import sympy
from sympy.polys.polyerrors import PolynomialError

from .functions import exprel

#: Relative size of a division remainder's coefficients that still counts as exact (rounding
#: of decimal literals that sympy distributed over a sum).
_ROUNDING = 1e-13


def guard_removable_singularities(expr):
    """``expr`` with every ``q * Y / (exp(Y) - 1)``-shaped product written with ``exprel``."""
    if not isinstance(expr, sympy.Basic) or not expr.has(sympy.exp):
        return expr
    return _visit(expr)


def _visit(e):
    if e.is_Atom or not e.args:
        return e
    args = [_visit(a) for a in e.args]
    if args != list(e.args):
        e = e.func(*args)
    if isinstance(e, sympy.Mul):
        e = _rewrite_product(e)
    return e


def _exp_minus_one(d):
    """``(s, Y)`` if ``d == s * (exp(Y) - 1)`` with a number ``s`` and a non-constant ``Y``."""
    if not isinstance(d, sympy.Add) or len(d.args) != 2:
        return None
    number, term = d.args if d.args[0].is_Number else d.args[::-1]
    if not number.is_Number:
        return None
    scale, rest = term.as_coeff_Mul()
    if not isinstance(rest, sympy.exp) or scale != -number or not rest.args[0].free_symbols:
        return None
    return scale, rest.args[0]


def _multiple_of(n, y):
    """``q`` with ``n == q * y``, ``q`` a polynomial in the symbols ``y`` is a polynomial of
    (other symbols, such as parameters dividing ``y``, are coefficients), or None."""
    gens = sorted((s for s in y.free_symbols if y.is_polynomial(s) and n.is_polynomial(s)), key=lambda s: s.name)
    if not gens:
        return None
    try:
        q, r = sympy.div(n, y, *gens)
    except (PolynomialError, sympy.polys.polyerrors.GeneratorsNeeded, TypeError, ValueError):
        return None
    if q == 0:
        return None
    if r != 0:
        coeffs_r = sympy.Poly(r, *gens).coeffs()
        coeffs_n = sympy.Poly(n, *gens).coeffs()
        if not all(c.is_Number for c in [*coeffs_r, *coeffs_n]):
            return None
        if max(abs(float(c)) for c in coeffs_r) > _ROUNDING * max(abs(float(c)) for c in coeffs_n):
            return None
    return q


def _rewrite_product(m):
    factors = list(m.args)
    for k, f in enumerate(factors):
        others = sympy.Mul(*(factors[:k] + factors[k + 1:]))
        if f.is_Pow and f.exp == -1:
            match = _exp_minus_one(f.base)
            if match is None:
                continue
            scale, y = match
            q = _multiple_of(others, y)
            if q is not None:
                return q / (scale * exprel(y))
        else:
            match = _exp_minus_one(f)
            if match is None:
                continue
            scale, y = match
            num, den = others.as_numer_denom()
            q = _multiple_of(den, y)
            if q is not None:
                return scale * num * exprel(y) / q
    return m
