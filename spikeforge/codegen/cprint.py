"""sympy → C printing (float or double) and loop-invariant hoisting."""

from __future__ import annotations

import re

import sympy
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter

from ..models.functions import rand_normal, rand_uniform


class CPrinter(C99CodePrinter):
    """C99 printer with readable powers, one-line conditionals and our random functions.

    ``random_call`` maps (kind, call_site) to the C expression drawing that number; it is
    set by the kernel generator, which knows the element, batch and stream ids.
    """

    def __init__(self, precision: str = "float", random_call=None):
        alias = float32 if precision == "float" else float64
        super().__init__(settings={"type_aliases": {real: alias}})
        self.precision = precision
        self.random_call = random_call

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 1 < int(exp) <= 4:
            b = self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Mul"])
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp == -1:
            one = "1.0f" if self.precision == "float" else "1.0"
            return f"{one}/{self.parenthesize(base, sympy.printing.precedence.PRECEDENCE['Mul'] + 1)}"
        return super()._print_Pow(expr)

    def _print_Piecewise(self, expr):
        parts = []
        for value, cond in expr.args[:-1]:
            parts.append(f"({self._print(cond)}) ? ({self._print(value)}) : ")
        last_value, last_cond = expr.args[-1]
        if last_cond != sympy.true:
            raise ValueError("a conditional expression needs an 'otherwise' value")
        return "(" + "".join(parts) + f"({self._print(last_value)})" + ")"

    def _print_Function(self, expr):
        if isinstance(expr, (rand_uniform, rand_normal)):
            if self.random_call is None:
                raise ValueError("random numbers are not available in this code block")
            kind = "uniform" if isinstance(expr, rand_uniform) else "normal"
            return self.random_call(kind, int(expr.args[0]))
        return super()._print_Function(expr)

    def _print_exprel(self, expr):
        return self._guarded_helper("sf_exprel", expr)

    def _print_exprel_prime(self, expr):
        return self._guarded_helper("sf_exprel_prime", expr)

    def _guarded_helper(self, name, expr):
        """Helpers of ``templates/common/sf_math.h``: ``sf_exprelf`` in float, ``sf_exprel`` in double."""
        suffix = "f" if self.precision == "float" else ""
        return f"{name}{suffix}({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        return super()._print_Max(self._floating_args(expr))

    def _print_Min(self, expr):
        return super()._print_Min(self._floating_args(expr))

    @staticmethod
    def _floating_args(expr):
        """Integer arguments of max/min printed as floating literals: ``fmax(0, x)`` is an
        ambiguous overload for nvcc in double precision; ``fmax(0.0, x)`` is not."""
        if not any(a.is_Integer for a in expr.args):
            return expr
        return expr.func(*[sympy.Float(a) if a.is_Integer else a for a in expr.args], evaluate=False)

    def _print_BooleanTrue(self, expr):
        return "true"

    def _print_BooleanFalse(self, expr):
        return "false"

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def code_names(code: str) -> set[str]:
    """The identifiers that generated C code names (every word that could be a variable)."""
    return set(_IDENTIFIER.findall(code))


def comment_text(text) -> str:
    """User text made safe to follow ``//`` in generated C++/CUDA: it can never change the code.

    One line (line breaks become `` | ``), printable characters only, no trailing backslash
    or whitespace (a ``\\`` at the end of a line would splice the next line of code into the
    comment), no trigraphs (``??/`` is a backslash to older compilers) and no ``*/``.
    """
    lines = [line.strip() for line in str(text).splitlines()]
    one = " | ".join(line for line in lines if line)
    one = "".join(c if c.isprintable() else " " for c in one)
    while "??" in one:
        one = one.replace("??", "? ?")
    one = one.replace("*/", "* /")
    return one.rstrip(" \t\\")


def literal(value: float, precision: str) -> str:
    """A C literal of the network's precision, e.g. ``20.0f`` or ``20.0``."""
    text = repr(float(value))
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text + ("f" if precision == "float" else "")


class Hoister:
    """Moves loop-invariant sub-expressions out of per-element code.

    A sub-expression is invariant when it mentions only names in ``invariant`` (parameters,
    derived parameters, ``dt``...). Each distinct one becomes a named constant ``_h<k>``
    computed once, before the loop.
    """

    def __init__(self, invariant: set[str], prefix: str = "_h"):
        self.invariant = {sympy.Symbol(n, real=True) for n in invariant}
        self.prefix = prefix
        self.hoisted: dict[sympy.Expr, sympy.Symbol] = {}

    def _is_invariant(self, e) -> bool:
        if e.atoms(rand_uniform, rand_normal):
            return False
        return e.free_symbols <= self.invariant

    def __call__(self, expr):
        if expr.is_Atom or not isinstance(expr, sympy.Basic):
            return expr
        if isinstance(expr, sympy.Expr) and self._is_invariant(expr) and expr.free_symbols:
            if not (expr.is_Mul and len(expr.args) == 2 and expr.args[0].is_Number and expr.args[1].is_Symbol):
                if expr not in self.hoisted:
                    self.hoisted[expr] = sympy.Symbol(f"{self.prefix}{len(self.hoisted)}", real=True)
                return self.hoisted[expr]
        if isinstance(expr, (rand_uniform, rand_normal)):
            return expr
        args = [self(a) for a in expr.args]
        return expr.func(*args, evaluate=False) if args != list(expr.args) else expr

    def definitions(self) -> list[tuple[str, sympy.Expr]]:
        return [(s.name, e) for e, s in self.hoisted.items()]
