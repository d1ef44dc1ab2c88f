"""Parsing of the model language: expressions, ODEs and statements into sympy.

The model language is plain mathematics written as text:

* an ODE:          ``dv/dt = (v_rest - v + r_m * i_syn) / tau_m``, optionally followed by
                   the flag ``(unless refractory)``
* a statement:     ``v = v_reset``, ``a += 1``, ``w -= eta * trace`` (also ``*=``, ``/=``)
* a condition:     ``v > v_th``, ``v >= th and not (u > 2)``, ``(v > v_th) & (a < 1)``
* an expression:   numbers, names, arithmetic, powers and the functions of :data:`FUNCTIONS`.

Text is parsed by an allow-listed walk of Python's ``ast`` (:mod:`.syntax`) and is never
evaluated: attributes, subscripts, strings, lambdas and anything else outside the model
language are refused.  Products shaped like ``c * X / (exp(X / k) - 1)`` are rewritten with
``exprel`` (:mod:`.singular`), so they stay finite at ``X = 0``.

Several ODEs or statements go on separate lines (or are separated by ``;``); ``#`` starts
a comment.  Every name must be known to the model: parsing checks each symbol against the
names the caller allows and raises :class:`~spikeforge.errors.ModelError` naming the model,
the field and the offending name.

Random numbers: ``rand_uniform()`` and ``rand_normal()`` are numbered per call site as they
are parsed (``rand_uniform(0)``, ``rand_normal(1)``...), so two draws in one model are two
different random numbers, and each call site owns its own counter-based random stream.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import sympy

from ..errors import ModelError
from .functions import CONSTANTS, FUNCTIONS, RANDOM_FUNCTIONS, exprel, exprel_prime, rand_normal, rand_uniform
from .singular import guard_removable_singularities
from .syntax import Refused, build

_ODE_RE = re.compile(r"^d\s*([A-Za-z_]\w*)\s*/\s*dt\s*=\s*(.+)$")
_STMT_RE = re.compile(r"^([A-Za-z_]\w*)\s*(\+=|-=|\*=|/=|=)\s*(.+)$")
_UNLESS_RE = re.compile(r"\(\s*unless\s+refractory\s*\)\s*$")


@dataclass
class RandomCounter:
    """Numbers random-function call sites within one model (shared by all its fields)."""

    next_index: int = 0

    def next(self) -> int:
        idx = self.next_index
        self.next_index += 1
        return idx


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


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol spikeforge uses for a model name (all names are real)."""
    return sympy.Symbol(name, real=True)


def parse_expression(text: str | float | int, ctx: ParseContext, field_name: str, *, condition=False):
    """Parse one expression (or condition) and check every symbol and function in it.

    The text is parsed by an allow-listed walk of Python's ``ast`` (:mod:`.syntax`), never
    evaluated; anything outside the model language is a :class:`ModelError`.
    """
    if isinstance(text, bool):
        raise ModelError(f"expected an expression, got {text!r}", ctx.model, field_name)
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise ModelError(f"expected a finite number, got {text!r}", ctx.model, field_name)
        return sympy.Float(text) if isinstance(text, float) else sympy.Integer(text)
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"expected an expression, got {text!r}", ctx.model, field_name)
    source = text.strip()

    def symbol_for(name):
        return symbol(name) if name in ctx.known else None

    def random_site():
        if not ctx.random_allowed:
            raise Refused(
                "random numbers are not allowed here (use a current source or a statement for noise; "
                "stochastic ODEs are not supported)")
        return ctx.counter.next()

    try:
        expr, unknown, undefined = build(source, symbol_for, random_site)
    except Refused as exc:
        raise ModelError(f"cannot parse '{source}': {exc}", ctx.model, field_name) from None
    except Exception as exc:  # sympy refusing an operation on what was parsed
        raise ModelError(f"cannot parse '{source}': {exc}", ctx.model, field_name) from None
    if unknown:
        unknown = sorted(set(unknown))
        known = ", ".join(sorted(ctx.known)) or "(none)"
        raise ModelError(
            f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
            f"in '{source}' (known names: {known})",
            ctx.model,
            field_name,
        )
    if undefined:
        raise ModelError(
            f"unknown function {', '.join(repr(u) for u in sorted(set(undefined)))} in '{source}' "
            f"(known functions: {', '.join(sorted(FUNCTIONS))})",
            ctx.model,
            field_name,
        )
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise ModelError(f"'{source}' is infinite or undefined (a division by zero?)", ctx.model, field_name)
    is_condition = isinstance(expr, sympy.logic.boolalg.Boolean) and not isinstance(expr, sympy.Expr)
    if condition and not is_condition:
        raise ModelError(f"'{source}' is not a condition (expected e.g. 'v > v_th')", ctx.model, field_name)
    if not condition and is_condition:
        raise ModelError(f"'{source}' is a condition, expected a value", ctx.model, field_name)
    return guard_removable_singularities(expr)


def parse_odes(text, ctx: ParseContext, field_name: str = "equations", state=None) -> list[ODE]:
    """Parse ``d<x>/dt = ...`` lines; each left side must be a state variable of the model
    (one of ``state`` when given: a parameter or an input is refused)."""
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
        if state is not None and var not in state:
            raise ModelError(
                f"'{line}': '{var}' is not a state variable of the model, so it cannot have a differential "
                f"equation (only variables evolve; parameters and inputs are constant)",
                ctx.model, field_name)
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


__all__ = [
    "CONSTANTS", "FUNCTIONS", "ODE", "RANDOM_FUNCTIONS", "ParseContext", "RandomCounter", "Statement", "exprel",
    "exprel_prime", "parse_expression", "parse_odes", "parse_statements", "rand_normal", "rand_uniform",
    "split_lines", "symbol",
]
