"""Text → sympy through an allow-listed walk of Python's ``ast``: user text is never evaluated.

The grammar is Python's expression grammar, cut down to the model language:

* numbers (``3`` is exact like sympy's ``Integer``, ``0.5`` and ``1e9`` are ``Float``), names,
  ``+ - * / // % **`` and ``^`` (a power, as in mathematics), unary ``-`` and ``+``;
* comparisons ``< <= > >= == !=``, chained ones (``0 < x < 1``) included;
* conditions joined by ``and``, ``or``, ``not`` (with Python's precedence: comparisons bind
  tighter) or by ``&``, ``|``, ``~`` (which bind tighter than comparisons, as in Python:
  write ``(v > a) & (u < b)``);
* calls of the functions of :data:`~spikeforge.models.functions.FUNCTIONS` by name, with
  positional arguments only and the right number of them.

Everything else (attributes, subscripts, strings, lambdas, comprehensions, keyword or starred
arguments, ``if``-expressions, ``:=``, names beginning with ``__``...) is refused with a
:class:`Refused` error that says what was found; the caller turns it into a ``ModelError``
naming the model and the field.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import sympy
from sympy.logic.boolalg import Boolean

from .functions import CONSTANTS, FUNCTIONS, RANDOM_FUNCTIONS

#: Largest integer exponent of a number raised to a number that is worked out while parsing.
MAX_NUMERIC_EXPONENT = 1024


class Refused(Exception):
    """The text is not in the model language; the message says why, in the user's terms."""


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: sympy.floor(a / b),
    ast.Mod: lambda a, b: sympy.Mod(a, b),
    ast.Pow: lambda a, b: a**b,
}
_COMPARE = {
    ast.Lt: sympy.StrictLessThan,
    ast.LtE: sympy.LessThan,
    ast.Gt: sympy.StrictGreaterThan,
    ast.GtE: sympy.GreaterThan,
    ast.Eq: sympy.Eq,
    ast.NotEq: sympy.Ne,
}
_LOGIC = {ast.BitAnd: ("&", sympy.And), ast.BitOr: ("|", sympy.Or)}
_BOOL = {ast.And: ("and", sympy.And), ast.Or: ("or", sympy.Or)}

#: What a refused construct is called in messages.
_NAMES = {
    ast.Attribute: "attribute access ('.') is",
    ast.Subscript: "subscripts ('[...]') are",
    ast.Lambda: "lambda is",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.List: "lists are",
    ast.Tuple: "tuples are",
    ast.Set: "sets are",
    ast.Dict: "dicts are",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.NamedExpr: "':=' is",
    ast.IfExp: "'... if ... else ...' is",
    ast.Starred: "starred arguments are",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
    ast.Slice: "slices are",
}
_OPERATOR_NAMES = {
    ast.MatMult: "'@'", ast.LShift: "'<<'", ast.RShift: "'>>'", ast.BitXor: "'^'",
    ast.Is: "'is'", ast.IsNot: "'is not'", ast.In: "'in'", ast.NotIn: "'not in'",
}


def _is_condition(e) -> bool:
    return isinstance(e, Boolean) and not isinstance(e, sympy.Expr)


class _Builder:
    """Builds sympy from one parsed expression; the callbacks decide what names mean."""

    def __init__(self, symbol_for: Callable[[str], sympy.Symbol | None], random_site: Callable[[], int],
                 source: str):
        self.symbol_for = symbol_for
        self.random_site = random_site
        self.source = source
        self.unknown_names: list[str] = []
        self.unknown_functions: list[str] = []

    def build(self, node):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            what = _NAMES.get(type(node), f"'{type(node).__name__}' expressions are")
            hint = " (use where(condition, a, b))" if isinstance(node, ast.IfExp) else ""
            raise Refused(f"{what} not allowed in the model language{hint}")
        return method(node)

    # -- leaves ----------------------------------------------------------------------------
    def _Constant(self, node):  # noqa: N802
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise Refused(f"'{value}' is not allowed in the model language (write a number or a condition)")
        if isinstance(value, (str, bytes)):
            raise Refused("strings are not allowed in the model language")
        if isinstance(value, complex):
            raise Refused("complex numbers are not allowed in the model language")
        if isinstance(value, int):
            return sympy.Integer(value)
        if not math.isfinite(value):
            raise Refused(f"the number {ast.get_source_segment(self.source, node) or value} is too large")
        text = (ast.get_source_segment(self.source, node) or repr(value)).replace("_", "")
        try:
            return sympy.Float(text)
        except ValueError:
            return sympy.Float(value)

    def _Name(self, node):  # noqa: N802
        name = node.id
        if name.startswith("__"):
            raise Refused(f"names beginning with '__' ('{name}') are not allowed in the model language")
        sym = self.symbol_for(name)
        if sym is not None:
            return sym
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTIONS:
            raise Refused(f"function '{name}' must be called, e.g. {name}(x)")
        self.unknown_names.append(name)
        return sympy.Symbol(name, real=True)

    # -- arithmetic -------------------------------------------------------------------------
    def _UnaryOp(self, node):  # noqa: N802
        x = self.build(node.operand)
        if isinstance(node.op, (ast.Not, ast.Invert)):
            word = "not" if isinstance(node.op, ast.Not) else "~"
            self._need_condition(x, f"'{word}'")
            return sympy.Not(x)
        self._need_value(x, "'-'" if isinstance(node.op, ast.USub) else "'+'")
        return -x if isinstance(node.op, ast.USub) else x

    def _BinOp(self, node):  # noqa: N802
        a, b = self.build(node.left), self.build(node.right)
        op = type(node.op)
        if op in _LOGIC:
            symbol, func = _LOGIC[op]
            self._need_condition(a, f"'{symbol}'")
            self._need_condition(b, f"'{symbol}'")
            return func(a, b)
        if op not in _BINARY:
            raise Refused(f"the operator {_OPERATOR_NAMES.get(op, op.__name__)} is not allowed in the model language")
        self._need_value(a, "arithmetic")
        self._need_value(b, "arithmetic")
        if op is ast.Pow and a.is_Number and b.is_Integer and abs(int(b)) > MAX_NUMERIC_EXPONENT:
            raise Refused(f"the power {a}**{b} is too large")
        return _BINARY[op](a, b)

    def _BoolOp(self, node):  # noqa: N802
        word, func = _BOOL[type(node.op)]
        values = [self.build(v) for v in node.values]
        for v in values:
            self._need_condition(v, f"'{word}'")
        return func(*values)

    def _Compare(self, node):  # noqa: N802
        terms = [self.build(node.left)] + [self.build(c) for c in node.comparators]
        parts = []
        for op, a, b in zip(node.ops, terms, terms[1:]):
            if type(op) not in _COMPARE:
                raise Refused(f"the operator {_OPERATOR_NAMES.get(type(op), type(op).__name__)} "
                              "is not allowed in the model language")
            self._need_value(a, "a comparison")
            self._need_value(b, "a comparison")
            parts.append(_COMPARE[type(op)](a, b))
        return parts[0] if len(parts) == 1 else sympy.And(*parts)

    # -- calls ------------------------------------------------------------------------------
    def _Call(self, node):  # noqa: N802
        if not isinstance(node.func, ast.Name):
            self.build(node.func)  # refuses lambdas, attributes, subscripts... by name
            raise Refused("only the model language's functions can be called, by name (e.g. exp(x))")
        name = node.func.id
        if name.startswith("__"):
            raise Refused(f"names beginning with '__' ('{name}') are not allowed in the model language")
        if node.keywords:
            raise Refused(f"keyword arguments are not allowed (in the call of '{name}')")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise Refused(f"starred arguments are not allowed (in the call of '{name}')")
        if name not in FUNCTIONS:
            if self.symbol_for(name) is not None or name in CONSTANTS:
                raise Refused(f"'{name}' is not a function")
            self.unknown_functions.append(name)
            for a in node.args:  # report unknown names inside too
                self.build(a)
            return sympy.Integer(0)
        func, fewest, most = FUNCTIONS[name]
        n = len(node.args)
        if n < fewest or (most is not None and n > most):
            expected = str(fewest) if fewest == most else f"at least {fewest}" if most is None else \
                f"{fewest} to {most}"
            raise Refused(f"{name}() takes {expected} argument{'' if expected == '1' else 's'}, got {n}")
        if func in RANDOM_FUNCTIONS:
            return func(self.random_site())
        args = [self.build(a) for a in node.args]
        for k, a in enumerate(args):
            if name == "where" and k == 0:
                self._need_condition(a, "where()'s first argument")
            else:
                self._need_value(a, f"{name}()")
        return func(*args)

    # -- checks -----------------------------------------------------------------------------
    @staticmethod
    def _need_condition(x, where):
        if not _is_condition(x):
            raise Refused(f"{where} needs a condition (such as 'v > v_th'), got '{x}'")

    @staticmethod
    def _need_value(x, where):
        if _is_condition(x):
            raise Refused(f"{where} needs a value, got the condition '{x}'")


def build(text: str, symbol_for, random_site) -> tuple[sympy.Basic, list[str], list[str]]:
    """Parse ``text`` into sympy; returns (expression, unknown names, unknown function names).

    ``symbol_for(name)`` gives the symbol of a name the model knows (or None); ``random_site()``
    numbers the next ``rand_uniform()``/``rand_normal()`` call site. Raises :class:`Refused`.
    """
    text = text.replace("^", "**")  # '^' is a power, as sympy's convert_xor made it
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        detail = "" if exc.msg == "invalid syntax" else f" ({exc.msg})"
        raise Refused(f"invalid syntax{detail}") from None
    except (RecursionError, MemoryError, ValueError):
        raise Refused("the expression is too deeply nested or malformed") from None
    builder = _Builder(symbol_for, random_site, text.strip())
    try:
        expr = builder.build(tree.body)
    except RecursionError:
        raise Refused("the expression is too deeply nested") from None
    return expr, builder.unknown_names, builder.unknown_functions
