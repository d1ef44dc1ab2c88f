"""Parsing of the model language: expressions, ODEs and statements into sympy.

The model language is plain mathematics written as text:

* an ODE:          ``dv/dt = (v_rest - v + r_m * i_syn) / tau_m``, optionally followed by
                   the flag ``(unless refractory)``
* a statement:     ``v = v_reset``, ``a += 1``, ``w -= eta * trace`` (also ``*=``, ``/=``)
* a condition:     ``v > v_th``, ``(v > v_th) & (a < 1)`` (``and``/``or``/``not`` work too)
* an expression:   anything sympy parses, with the functions of :data:`FUNCTIONS`.

Several ODEs or statements go on separate lines (or are separated by ``;``); ``#`` starts
a comment.  Every name must be known to the model: parsing checks each symbol against the
names the caller allows and raises :class:`~spikeforge.errors.ModelError` naming the model,
the field and the offending name.

Random numbers: ``rand_uniform()`` and ``rand_normal()`` are numbered per call site as they
are parsed (``rand_uniform(0)``, ``rand_normal(1)``...), so two draws in one model are two
different random numbers, and each call site owns its own counter-based random stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy
from sympy.parsing.sympy_parser import (
    auto_number,
    auto_symbol,
    convert_xor,
    parse_expr,
)

from ..errors import ModelError


class rand_uniform(sympy.Function):  # noqa: N801  (name as written by users)
    """Uniform random number in (0, 1); the argument is the call-site index."""

    nargs = 1


class rand_normal(sympy.Function):  # noqa: N801
    """Standard normal random number; the argument is the call-site index."""

    nargs = 1


def _clip(x, lo, hi):
    return sympy.Min(sympy.Max(x, lo), hi)


def _where(cond, a, b):
    return sympy.Piecewise((a, cond), (b, True))


#: Functions usable in equations, by the name users write.
FUNCTIONS = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "tanh": sympy.tanh,
    "abs": sympy.Abs,
    "min": sympy.Min,
    "max": sympy.Max,
    "clip": _clip,
    "where": _where,
    "floor": sympy.floor,
    "ceil": sympy.ceiling,
    "heaviside": lambda x: sympy.Piecewise((1, x > 0), (0, True)),
    "rand_uniform": rand_uniform,
    "rand_normal": rand_normal,
    "pi": sympy.pi,
}

RANDOM_FUNCTIONS = (rand_uniform, rand_normal)

_ODE_RE = re.compile(r"^d\s*([A-Za-z_]\w*)\s*/\s*dt\s*=\s*(.+)$")
_STMT_RE = re.compile(r"^([A-Za-z_]\w*)\s*(\+=|-=|\*=|/=|=)\s*(.+)$")
_UNLESS_RE = re.compile(r"\(\s*unless\s+refractory\s*\)\s*$")
_RAND_RE = re.compile(r"\b(rand_uniform|rand_normal)\s*\(\s*\)")


@dataclass
class RandomCounter:
    """Numbers random-function call sites within one model (shared by all its fields)."""

    next_index: int = 0

    def number(self, text: str) -> str:
        def repl(m):
            idx = self.next_index
            self.next_index += 1
            return f"{m.group(1)}({idx})"

        return _RAND_RE.sub(repl, text)


@dataclass(frozen=True)
class ODE:
    """``d<var>/dt = rhs``; ``source`` is the text the user wrote."""

    var: str
    rhs: sympy.Expr
    source: str
    unless_refractory: bool = False


@dataclass(frozen=True)
class Statement:
    """``target op= expr`` normalised to ``target = value``; ``source`` keeps the text."""

    target: str
    value: sympy.Expr
    source: str
    op: str = "="


@dataclass
class ParseContext:
    """What a field may mention: the model, the field, the known names."""

    model: str
    known: set[str]
    random_allowed: bool = True
    counter: RandomCounter = field(default_factory=RandomCounter)


def split_lines(text: str | list[str] | None) -> list[str]:
    """Split a multi-line field into statements, dropping comments and blank lines."""
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        parts: list[str] = []
        for item in text:
            parts.extend(split_lines(item))
        return parts
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        for piece in line.split(";"):
            piece = piece.strip()
            if piece:
                out.append(piece)
    return out


def _symbol_table(names) -> dict:
    table = {name: sympy.Symbol(name, real=True) for name in names}
    return table


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol spikeforge uses for a model name (all names are real)."""
    return sympy.Symbol(name, real=True)


def _logic_words(text: str) -> str:
    text = re.sub(r"\band\b", "&", text)
    text = re.sub(r"\bor\b", "|", text)
    text = re.sub(r"\bnot\b", "~", text)
    return text


def parse_expression(text: str | float | int, ctx: ParseContext, field_name: str, *, condition=False):
    """Parse one expression (or condition) and check every symbol and function in it."""
    if isinstance(text, bool):
        raise ModelError(f"expected an expression, got {text!r}", ctx.model, field_name)
    if isinstance(text, (int, float)):
        return sympy.Float(text) if isinstance(text, float) else sympy.Integer(text)
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"expected an expression, got {text!r}", ctx.model, field_name)
    source = text.strip()
    numbered = ctx.counter.number(_logic_words(source))
    local = _symbol_table(ctx.known)
    global_dict = {
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "Symbol": sympy.Symbol,
        "Function": sympy.Function,
    }
    global_dict.update(FUNCTIONS)
    try:
        expr = parse_expr(
            numbered,
            local_dict=local,
            global_dict=global_dict,
            transformations=(auto_symbol, auto_number, convert_xor),
            evaluate=True,
        )
    except Exception as exc:  # sympy raises many kinds on malformed text
        raise ModelError(f"cannot parse '{source}': {exc}", ctx.model, field_name) from None
    if not isinstance(expr, sympy.Basic):
        raise ModelError(f"'{source}' is not an expression", ctx.model, field_name)
    unknown = sorted(s.name for s in expr.free_symbols if s.name not in ctx.known)
    if unknown:
        known = ", ".join(sorted(ctx.known)) or "(none)"
        raise ModelError(
            f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
            f"in '{source}' (known names: {known})",
            ctx.model,
            field_name,
        )
    undefined = sorted(
        {str(f.func) for f in expr.atoms(sympy.core.function.AppliedUndef)}
        - {"rand_uniform", "rand_normal"}
    )
    if undefined:
        raise ModelError(
            f"unknown function {', '.join(repr(u) for u in undefined)} in '{source}' "
            f"(known functions: {', '.join(sorted(k for k in FUNCTIONS if k != 'pi'))})",
            ctx.model,
            field_name,
        )
    if not ctx.random_allowed and expr.atoms(*RANDOM_FUNCTIONS):
        raise ModelError(
            f"random numbers are not allowed in '{source}' (use a current source or a "
            "statement for noise; stochastic ODEs are not supported)",
            ctx.model,
            field_name,
        )
    is_condition = isinstance(expr, sympy.logic.boolalg.Boolean) and not isinstance(expr, sympy.Expr)
    if condition and not is_condition:
        raise ModelError(f"'{source}' is not a condition (expected e.g. 'v > v_th')", ctx.model, field_name)
    if not condition and is_condition:
        raise ModelError(f"'{source}' is a condition, expected a value", ctx.model, field_name)
    return expr


def parse_odes(text, ctx: ParseContext, field_name: str = "equations") -> list[ODE]:
    """Parse ``d<x>/dt = ...`` lines; each left side must be a state variable of the model."""
    odes = []
    seen = set()
    for line in split_lines(text):
        unless = False
        m_unless = _UNLESS_RE.search(line)
        if m_unless:
            unless = True
            line_body = line[: m_unless.start()].strip()
        else:
            line_body = line
        m = _ODE_RE.match(line_body)
        if not m:
            raise ModelError(
                f"'{line}' is not a differential equation (expected 'dX/dt = expression')",
                ctx.model,
                field_name,
            )
        var, rhs_text = m.group(1), m.group(2)
        if var not in ctx.known:
            raise ModelError(f"'{line}' differentiates unknown variable '{var}'", ctx.model, field_name)
        if var in seen:
            raise ModelError(f"variable '{var}' has two differential equations", ctx.model, field_name)
        seen.add(var)
        rhs = parse_expression(rhs_text, ctx, field_name)
        odes.append(ODE(var, rhs, line, unless))
    return odes


def parse_statements(
    text, ctx: ParseContext, field_name: str, assignable: set[str]
) -> list[Statement]:
    """Parse assignment statements; only names in ``assignable`` may be assigned."""
    stmts = []
    for line in split_lines(text):
        m = _STMT_RE.match(line)
        if not m or _ODE_RE.match(line):
            raise ModelError(
                f"'{line}' is not a statement (expected 'name = expression' or 'name += expression')",
                ctx.model,
                field_name,
            )
        target, op, rhs_text = m.group(1), m.group(2), m.group(3)
        if target not in assignable:
            if target in ctx.known:
                raise ModelError(
                    f"'{line}' assigns '{target}', which cannot be written here "
                    f"(writable: {', '.join(sorted(assignable)) or 'none'})",
                    ctx.model,
                    field_name,
                )
            raise ModelError(f"'{line}' assigns unknown variable '{target}'", ctx.model, field_name)
        rhs = parse_expression(rhs_text, ctx, field_name)
        t = symbol(target)
        value = {"=": rhs, "+=": t + rhs, "-=": t - rhs, "*=": t * rhs, "/=": t / rhs}[op]
        stmts.append(Statement(target, value, line, op))
    return stmts
