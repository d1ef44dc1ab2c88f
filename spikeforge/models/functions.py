"""The functions of the model language, as sympy objects, with the number of arguments each takes.

Besides sympy's own functions, three remove a cancellation or a removable singularity:

* ``expm1(x) = exp(x) - 1`` and ``log1p(x) = log(1 + x)``, exact for small ``x``
  (printed as C's ``expm1``/``log1p``, ``expm1f``/``log1pf`` in float);
* ``exprel(x) = (exp(x) - 1) / x`` with ``exprel(0) = 1``: rate functions such as
  ``a * x / (exp(x / k) - 1)`` are ``a * k / exprel(x / k)``, finite at ``x = 0`` (printed
  as ``sf_exprel``/``sf_exprelf``, defined in ``templates/common/sf_math.h``).

``exprel_prime`` is exprel's derivative; users do not write it, but sympy produces it when
it differentiates a model (e-prop Jacobians), and it is printed as a guarded helper too.
"""

from __future__ import annotations

import mpmath
import sympy
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.function import ArgumentIndexError


class rand_uniform(sympy.Function):  # noqa: N801  (name as written by users)
    """Uniform random number in (0, 1); the argument is the call-site index."""

    nargs = 1


class rand_normal(sympy.Function):  # noqa: N801
    """Standard normal random number; the argument is the call-site index."""

    nargs = 1


RANDOM_FUNCTIONS = (rand_uniform, rand_normal)


def _mp_exprel(x):
    return mpmath.mpf(1) if x == 0 else mpmath.expm1(x) / x


def _mp_exprel_prime(x):
    if abs(x) < mpmath.mpf("0.5"):  # series: sum over n >= 1 of n x^(n-1) / (n+1)!
        return mpmath.nsum(lambda n: n * x ** (n - 1) / mpmath.factorial(n + 1), [1, mpmath.inf])
    return (x * mpmath.exp(x) - mpmath.expm1(x)) / x**2


class _GuardedFunction(sympy.Function):
    """A real function of one real argument, finite everywhere, evaluated with mpmath."""

    nargs = 1
    _mp = None
    _at_zero = None

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return cls._at_zero
        if x.is_Float:
            with mpmath.workprec(x._prec + 20):
                return sympy.Float(cls._mp(mpmath.mpf(x._mpf_)), precision=x._prec)
        return None

    def _eval_evalf(self, prec):
        x = self.args[0].evalf(prec)
        if not x.is_Float:
            return None
        with mpmath.workprec(prec + 20):
            return sympy.Float(type(self)._mp(mpmath.mpf(x._mpf_)), precision=prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_finite(self):
        return self.args[0].is_finite


class exprel(_GuardedFunction):  # noqa: N801
    """``(exp(x) - 1) / x``, continued by its limit 1 at ``x = 0``."""

    _mp = staticmethod(_mp_exprel)
    _at_zero = sympy.S.One

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return exprel_prime(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return (sympy.exp(x) - 1) / x

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class exprel_prime(_GuardedFunction):  # noqa: N801
    """The derivative of :class:`exprel`: ``(x exp(x) - exp(x) + 1) / x**2``, 1/2 at ``x = 0``."""

    _mp = staticmethod(_mp_exprel_prime)
    _at_zero = sympy.Rational(1, 2)

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        x = self.args[0]  # only used for higher derivatives; singular at exactly x = 0
        return (sympy.exp(x) * (x**2 - 2 * x + 2) - 2) / x**3

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return (x * sympy.exp(x) - sympy.exp(x) + 1) / x**2


def _clip(x, lo, hi):
    return sympy.Min(sympy.Max(x, lo), hi)


def _where(cond, a, b):
    return sympy.Piecewise((a, cond), (b, True))


def _heaviside(x):
    return sympy.Piecewise((1, x > 0), (0, True))


#: Functions usable in equations, by the name users write: (sympy builder, fewest and most
#: arguments; ``None``: any number).  ``where``'s first argument is a condition.
FUNCTIONS = {
    "exp": (sympy.exp, 1, 1),
    "expm1": (expm1, 1, 1),
    "exprel": (exprel, 1, 1),
    "log": (sympy.log, 1, 2),
    "log1p": (log1p, 1, 1),
    "sqrt": (sympy.sqrt, 1, 1),
    "sin": (sympy.sin, 1, 1),
    "cos": (sympy.cos, 1, 1),
    "tan": (sympy.tan, 1, 1),
    "tanh": (sympy.tanh, 1, 1),
    "abs": (sympy.Abs, 1, 1),
    "min": (sympy.Min, 1, None),
    "max": (sympy.Max, 1, None),
    "clip": (_clip, 3, 3),
    "where": (_where, 3, 3),
    "floor": (sympy.floor, 1, 1),
    "ceil": (sympy.ceiling, 1, 1),
    "heaviside": (_heaviside, 1, 1),
    "rand_uniform": (rand_uniform, 0, 0),
    "rand_normal": (rand_normal, 0, 0),
    "rand": (rand_uniform, 0, 0),  # Brian2's spelling of the two
    "randn": (rand_normal, 0, 0),
}

#: Named constants of the model language.
CONSTANTS = {"pi": sympy.pi}
