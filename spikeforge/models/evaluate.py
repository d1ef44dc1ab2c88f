"""Per-element values computed before a run: parameters and initial values given as
expressions, arrays or ``{values, counts}``.

An expression (``"-65 + 15*r**2"``, ``"b*v"``, ``"exp(-abs(i - j)/30)"``) is parsed by the
model language's safe parser and evaluated here with numpy, element by element: the
parser's sympy tree is walked node by node (never turned into code and run). Random draws
come from the project's Philox streams (:mod:`spikeforge.rng`), so the values are the same
on every backend and every run with the same seed:

* ``rand()`` / ``randn()`` at call site ``k`` of a population, projection part or current
  source with id ``owner`` draw on the initialisation stream
  ``init_stream_id(owner, base + k)`` (``base`` = 0x8000, 0xC000 for a projection's
  postsynaptic part), counter ``(element, batch, 0, stream)``: ``batch`` is 0 for
  parameters and named draws (shared by the batch) and the global batch instance for
  variables that are per batch instance. Call sites are numbered in the order the
  expressions are given: named draws first, then parameters, then variables.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import sympy
from sympy.codegen.cfunctions import expm1, log1p
from sympy.functions.elementary.piecewise import ExprCondPair

from .. import rng
from ..errors import ModelError
from .expressions import ParseContext, RandomCounter, parse_expression
from .functions import exprel, rand_normal, rand_uniform
from .variables import Constant, Expression, Normal, Uniform, ValueCounts, Values

#: First initialisation-stream index of value expressions (variables use 0, 1, 2...).
STREAM_BASE = 0x8000
#: The same for the postsynaptic part of a projection.
POSTSYNAPTIC_STREAM_BASE = 0xC000
MAX_SITES = 0x4000


@dataclass
class ElementScope:
    """Which elements a value is given for: their number, the index names an expression may
    use (``i``, ``j``) with a function giving their values per element (called only when an
    expression is evaluated), and named counts (``N``...)."""

    size: int
    owner_id: int
    index_names: tuple = ("i",)
    index_values: object = None  # () -> {name: array of size elements}; None: i = 0..size-1
    counts: dict[str, int] = field(default_factory=dict)
    stream_base: int = STREAM_BASE
    counter: RandomCounter = field(default_factory=RandomCounter)

    def names(self) -> set[str]:
        return set(self.index_names) | set(self.counts)

    def env(self, shadowed=()) -> dict[str, object]:
        out: dict[str, object] = {k: float(v) for k, v in self.counts.items() if k not in shadowed}
        if set(self.index_names) - set(shadowed):
            values = self.index_values() if self.index_values is not None else {"i": np.arange(self.size)}
            out.update({k: v.astype(np.float64) for k, v in values.items() if k not in shadowed})
        return out


def parse_value(text: str, scope: ElementScope, known: set[str], model: str, field_name: str) -> sympy.Expr:
    """Parse a value expression; its random draws get this scope's next call sites."""
    ctx = ParseContext(model, set(known) | scope.names() | {"dt"}, True, scope.counter)
    expr = parse_expression(text, ctx, field_name)
    if scope.counter.next_index > MAX_SITES:
        raise ModelError(f"more than {MAX_SITES} random draws in value expressions", model, field_name)
    return expr


def references(expr: sympy.Basic) -> set[str]:
    return {s.name for s in expr.free_symbols}


def dependency_order(exprs: dict[str, sympy.Expr], model: str, field_of) -> list[str]:
    """Names in an order where every expression comes after the ones it uses; a self reference
    or a cycle is a ModelError at the field ``field_of(name)``."""
    for name, e in exprs.items():
        if name in references(e):
            raise ModelError(f"the expression of '{name}' refers to '{name}' itself", model, field_of(name))
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name, path):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ModelError(f"the expressions of {', '.join(repr(n) for n in dict.fromkeys(cycle))} refer to "
                             f"each other in a cycle ({' -> '.join(cycle)})", model, field_of(cycle[0]))
        state[name] = 1
        for dep in sorted(references(exprs[name]) & set(exprs)):
            visit(dep, path + [name])
        state[name] = 2
        order.append(name)

    for name in exprs:
        visit(name, [])
    return order


def evaluate(expr: sympy.Basic, env: dict[str, object], draw) -> np.ndarray | float:
    """``expr`` evaluated with numpy: ``env`` maps names to numbers or arrays (which
    broadcast), ``draw(kind, site)`` gives the random numbers of a call site."""

    def ev(e):
        value = _leaf(e, env, draw)
        return _apply(e, [ev(a) for a in e.args]) if value is _NOT_A_LEAF else value

    with np.errstate(all="ignore"):
        return ev(expr)


_NOT_A_LEAF = object()


def _leaf(e: sympy.Basic, env: dict[str, object], draw):
    """The value of a name, number, truth value or random draw; ``_NOT_A_LEAF`` for anything else."""
    if e.is_Symbol:
        return env[e.name]
    if e.is_Number or e is sympy.pi or e is sympy.E:
        return float(e)
    if e is sympy.true or e is sympy.false:
        return e is sympy.true
    if isinstance(e, rand_uniform):
        return draw("uniform", int(e.args[0]))
    if isinstance(e, rand_normal):
        return draw("normal", int(e.args[0]))
    return _NOT_A_LEAF


def _apply(e: sympy.Basic, args: list):
    """The operation or function of node ``e`` applied to the values of its arguments."""
    if e.is_Add:
        return _reduce(operator.add, args)
    if e.is_Mul:
        return _reduce(operator.mul, args)
    if e.is_Pow:
        return np.power(np.asarray(args[0], dtype=np.float64), args[1])
    if isinstance(e, ExprCondPair):  # one (value, condition) of a Piecewise (``where``)
        return tuple(args)
    if isinstance(e, sympy.Piecewise):
        values = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v, _ in args),
                                     *(np.asarray(c, dtype=bool) for _, c in args))
        n = len(args)
        return np.select(values[n:], values[:n], default=np.nan)
    if isinstance(e, sympy.Min):
        return _reduce(np.minimum, args)
    if isinstance(e, sympy.Max):
        return _reduce(np.maximum, args)
    func = _FUNCS.get(type(e))
    if func is not None:
        return func(*args)
    for kind, f in _RELATIONAL.items():
        if isinstance(e, kind):
            return f(*args)
    raise ModelError(f"cannot evaluate '{e}' before the run")


def _reduce(f, args):
    out = args[0]
    for a in args[1:]:
        out = f(out, a)
    return out


def _exprel(x):
    x = np.asarray(x, dtype=np.float64)
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, np.expm1(safe) / safe)


_FUNCS = {
    sympy.exp: np.exp, sympy.log: np.log, sympy.sin: np.sin, sympy.cos: np.cos, sympy.tan: np.tan,
    sympy.tanh: np.tanh, sympy.Abs: np.abs, sympy.floor: np.floor, sympy.ceiling: np.ceil,
    sympy.Mod: np.mod, expm1: np.expm1, log1p: np.log1p, exprel: _exprel,
    sympy.And: np.logical_and, sympy.Or: np.logical_or, sympy.Not: np.logical_not,
}
_RELATIONAL = {
    sympy.StrictLessThan: np.less, sympy.LessThan: np.less_equal, sympy.StrictGreaterThan: np.greater,
    sympy.GreaterThan: np.greater_equal, sympy.Equality: np.equal, sympy.Unequality: np.not_equal,
}


def drawer(seed: int, scope: ElementScope, batch: np.ndarray | int = 0):
    """``draw(kind, site)`` for :func:`evaluate`: one number per element (and batch instance,
    when ``batch`` is an array of shape (B, 1) of global instance indices)."""
    element = np.arange(scope.size, dtype=np.uint32)

    def draw(kind, site):
        stream = rng.init_stream_id(scope.owner_id, scope.stream_base + site)
        f = rng.uniform if kind == "uniform" else rng.normal
        return f(seed, element, batch, 0, stream, dtype=np.float64)

    return draw


def per_element(init, scope: ElementScope, env: dict, seed: int, model: str, field_name: str,
                expr: sympy.Expr | None = None, batch=0, label: str = "") -> np.ndarray:
    """The values of an initialiser for every element of ``scope`` (shape (size,), or
    (B, size) when something per batch instance enters), checked to be finite."""
    n = scope.size
    if isinstance(init, Values):
        values = np.asarray(init.values, dtype=np.float64)
        if values.shape != (n,):
            raise ModelError(f"{label}expected {n} values (one per element), got {values.size}", model, field_name)
        return values
    if isinstance(init, ValueCounts):
        total = sum(init.counts)
        if total != n:
            raise ModelError(f"{label}{{values, counts}}: the counts must sum to the {n} elements, got {total}",
                             model, field_name)
        return np.repeat(np.asarray(init.values, dtype=np.float64), init.counts)
    if isinstance(init, Constant):
        return np.full(n, float(init.value))
    draw = drawer(seed, scope, batch)
    if isinstance(init, (Uniform, Normal)):  # a named draw given as a distribution
        site = scope.counter.next()
        if isinstance(init, Uniform):
            return init.low + (init.high - init.low) * draw("uniform", site)
        return init.mean + init.sd * draw("normal", site)
    if not isinstance(init, Expression) or expr is None:
        raise ModelError(f"{label}cannot compute {init!r} per element", model, field_name)
    values = np.asarray(evaluate(expr, env, draw), dtype=np.float64)
    shape = np.broadcast_shapes(values.shape, (n,))
    values = np.broadcast_to(values, shape).copy()
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ModelError(f"{label}'{init.source}' is not finite for {bad} of {values.size} elements", model, field_name)
    return values


def check_finite(values: np.ndarray, model: str, field_name: str) -> None:
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ModelError(f"values must be finite ({bad} of {values.size} are not)", model, field_name)


__all__ = ["ElementScope", "dependency_order", "evaluate", "parse_value", "per_element", "references",
           "STREAM_BASE", "POSTSYNAPTIC_STREAM_BASE"]
