"""Subexpressions: named expressions inside a model, such as a Hodgkin-Huxley rate function.

    subexpressions={"alpha_m": "0.32 * 4 / exprel((13 - v + VT) / 4)", ...}

A subexpression may read the model's parameters, derived parameters, variables, inputs and
other subexpressions; it is evaluated per element and per step (a ``derived`` parameter, by
contrast, is one constant per model). Other fields of the model use it by name.

Two forms of every field are kept:

* the *expanded* form, every subexpression substituted (recursively): what the model's
  ``odes``, ``threshold``, ``reset``, ``on_pre``... hold, so that integration (linearity
  for the exact integrator), e-prop's derivatives and everything else see the whole
  equations, exactly as if the user had written them inline;
* the form *as written* (``model.as_written[field]``), which the code generator prints:
  each subexpression a statement reads becomes one ``const scalar alpha_m = ...;`` line per
  element, in dependency order, before its first use.

Refused: a name that is not a valid, unreserved identifier or that a parameter, variable or
input already uses; an unknown name; a cycle (``a = b + 1``, ``b = a``); random numbers (a
subexpression is a value of the state, not a draw: draw in the statement that uses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy

from ..errors import ModelError
from .expressions import ODE, ParseContext, Statement, parse_expression, symbol

FIELD = "subexpressions"


@dataclass
class Subexpressions:
    """A model's subexpressions, in dependency order (each after those it reads)."""

    model: str
    as_written: dict[str, sympy.Expr] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    expanded: dict[str, sympy.Expr] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.as_written)

    def __contains__(self, name) -> bool:
        return name in self.as_written

    def __iter__(self):
        return iter(self.as_written)

    # -- substitution --------------------------------------------------------------------
    def expand(self, e):
        """``e`` with every subexpression replaced by its definition, recursively."""
        if not self or not isinstance(e, sympy.Basic):
            return e
        return e.xreplace({symbol(n): x for n, x in self.expanded.items()})

    def expand_odes(self, odes: list[ODE]) -> list[ODE]:
        return [replace(o, rhs=self.expand(o.rhs)) for o in odes]

    def expand_statements(self, stmts: list[Statement]) -> list[Statement]:
        return [replace(s, value=self.expand(s.value)) for s in stmts]

    def inline(self, e, names):
        """``e`` with the subexpressions in ``names`` replaced by their definitions as written
        (which may name other subexpressions; those in ``names`` are replaced in turn)."""
        subs = {symbol(n): self.as_written[n] for n in names if n in self.as_written}
        for _ in range(len(self.as_written) + 1):
            if not subs or not (e.free_symbols & set(subs)):
                break
            e = e.xreplace(subs)
        return e

    # -- dependencies ----------------------------------------------------------------------
    def reads(self, name: str) -> set[str]:
        """The model names (variables, parameters, inputs) the subexpression reads, through
        the subexpressions it names."""
        return {s.name for s in self.expanded[name].free_symbols}

    def needed(self, exprs) -> list[str]:
        """The subexpressions ``exprs`` name, with those they name in turn, in dependency order."""
        wanted: set[str] = set()
        todo = [s.name for e in exprs if isinstance(e, sympy.Basic) for s in e.free_symbols]
        while todo:
            n = todo.pop()
            if n in self.as_written and n not in wanted:
                wanted.add(n)
                todo.extend(s.name for s in self.as_written[n].free_symbols)
        return [n for n in self.as_written if n in wanted]

    def named_in(self, exprs) -> list[str]:
        """The subexpressions ``exprs`` name directly, in dependency order."""
        names = {s.name for e in exprs if isinstance(e, sympy.Basic) for s in e.free_symbols}
        return [n for n in self.as_written if n in names]


def parse_subexpressions(spec, model: str, known: set[str], taken: dict[str, str], check_name) -> Subexpressions:
    """Parse ``spec`` (a mapping name -> expression).

    ``known``: the names a subexpression may read besides the other subexpressions;
    ``taken``: names it may not use, with what already uses them (``{"v": "a variable"}``);
    ``check_name(name)``: refuses invalid or reserved names.
    """
    out = Subexpressions(model)
    if spec is None:
        return out
    if not isinstance(spec, dict):
        raise ModelError(f"expected a mapping name -> expression, got {type(spec).__name__}", model, FIELD)
    for name in spec:
        check_name(name)
        if name in taken:
            raise ModelError(f"subexpression '{name}' has the name of {taken[name]} of the model", model,
                             f"{FIELD}.{name}")
    ctx = ParseContext(model, set(known) | set(spec), random_allowed=False)
    parsed: dict[str, sympy.Expr] = {}
    for name, text in spec.items():
        where = f"{FIELD}.{name}"
        parsed[name] = parse_expression(text, ctx, where)
        out.source[name] = str(text).strip()
    # dependency order (stable: the user's order where nothing forces another)
    deps = {n: {s.name for s in e.free_symbols} & set(parsed) for n, e in parsed.items()}
    for n in parsed:
        if n in deps[n]:
            raise ModelError(f"subexpression '{n}' refers to itself: '{out.source[n]}'", model, f"{FIELD}.{n}")
    done: list[str] = []
    while len(done) < len(parsed):
        ready = [n for n in parsed if n not in done and deps[n] <= set(done)]
        if not ready:
            left = [n for n in parsed if n not in done]
            cycle = _cycle(left, deps)
            raise ModelError(f"subexpressions refer to each other in a cycle: {' -> '.join(cycle)}", model,
                             f"{FIELD}.{cycle[0]}")
        done.append(ready[0])
    for n in done:
        out.as_written[n] = parsed[n]
        out.expanded[n] = parsed[n].xreplace({symbol(k): out.expanded[k] for k in deps[n]})
    return out


def _cycle(left: list[str], deps: dict[str, set[str]]) -> list[str]:
    """One cycle among ``left`` (each of which depends, directly or not, on a cycle)."""
    path = [left[0]]
    while True:
        nxt = next(d for d in sorted(deps[path[-1]], key=left.index) if d in left)
        if nxt in path:
            return [*path[path.index(nxt):], nxt]
        path.append(nxt)


__all__ = ["FIELD", "Subexpressions", "parse_subexpressions"]
