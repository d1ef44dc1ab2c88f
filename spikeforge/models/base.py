"""What every model has: a name, parameters, derived parameters and state variables."""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .reserved import reserved_reason
from .variables import Var, make_vars

if TYPE_CHECKING:  # the parser loads sympy: only when a model's equations are first used
    from .expressions import ParseContext

#: Names every model may read: the time of the current step and the time step (ms).
BUILTIN_NAMES = ("t", "dt")


def _check_name(name, model, field, what="parameter"):
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelError(f"'{name}' is not a valid name", model, field)
    reason = reserved_reason(name)
    if reason:
        raise ModelError(f"'{name}' cannot name a {what}: {reason}", model, field)


@functools.lru_cache(maxsize=None)
def _signature(cls) -> inspect.Signature:
    return inspect.signature(cls._parse)


class Model:
    """Base of neuron, weight-update, postsynaptic and current-source models.

    ``params`` maps a parameter name to its default value (``None``: the user must give it).
    ``derived`` maps a name to an expression of parameters and ``dt``, computed once per
    kernel launch, e.g. ``{"alpha": "exp(-dt / tau_m)"}``.

    A model keeps its arguments as given (:attr:`description`, a canonical JSON-able value
    for hashing) and parses its equations with sympy when it is made, so that a mistake is
    reported at once, naming the model and the field. A model whose description was parsed
    without error before (by the same spikeforge, sympy and numpy; see
    :mod:`spikeforge.warm`), and every built-in model, parses on first use of a parsed
    attribute instead: a warm start never loads sympy.
    """

    kind = "model"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._defer(args, kwargs)
        from .. import warm  # the known-good marks of the warm-start cache

        key = warm.check_key("model", self.description)
        if key is not None and warm.checked(key):
            return  # parsed without error before: parse on first use
        with warm.reemitted() as caught:
            self._force()
        if key is not None and not caught:
            warm.mark_checked(key)

    @classmethod
    def deferred(cls, *args: Any, **kwargs: Any):
        """The model of these arguments, parsed on first use (the built-in models)."""
        model = cls.__new__(cls)
        model._defer(args, kwargs)
        return model

    def _defer(self, args: tuple, kwargs: dict) -> None:
        bound = _signature(type(self)).bind(None, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        name = arguments.get("name")
        if not isinstance(name, str) or not name:
            raise ModelError("a model needs a name")
        d = self.__dict__
        d["_args"], d["_arguments"], d["_pending"] = (args, kwargs), arguments, True
        d["name"] = name

    def _force(self) -> None:
        """Parse now (once): what a first use of a parsed attribute does."""
        d = self.__dict__
        if not d.get("_pending"):
            return
        d["_pending"] = False
        args, kwargs = d["_args"]
        try:
            type(self)._parse(self, *args, **kwargs)
        except BaseException:
            d["_pending"] = True  # the next use reports it again
            raise

    def __getattr__(self, attr: str):
        # only attributes not set yet come here: the parsed ones of a model not parsed yet
        if attr.startswith("__") or not self.__dict__.get("_pending"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        self._force()
        return getattr(self, attr)

    @property
    def description(self):
        """The model as given, canonical and JSON-able (see :func:`spikeforge.warm.normalise`):
        the class and every argument; None when an argument cannot be written down (a
        callable, an object of the user's own class) or the class is not spikeforge's."""
        d = self.__dict__
        if "_description" not in d:
            from .. import warm

            cls = type(self)
            d["_description"] = None if not cls.__module__.startswith("spikeforge.") else warm.normalise(
                [f"{cls.__module__}.{cls.__qualname__}", d["_arguments"]])
        return d["_description"]

    def _parse(self, name: str, params=None, derived=None, vars=None, var_defaults=None):
        from .expressions import ParseContext, RandomCounter, parse_expression
        from .subexpressions import Subexpressions

        if not isinstance(name, str) or not name:
            raise ModelError("a model needs a name")
        self.name = name
        self.params: dict[str, float | None] = {}
        for p, default in (params or {}).items() if isinstance(params, dict) else (
            (p, None) for p in (params or [])
        ):
            _check_name(p, name, "params")
            if default is not None:
                default = _finite_param(default, name, p)
            self.params[p] = default
        self.vars: dict[str, Var] = make_vars(vars, name, "vars", **(var_defaults or {}))
        #: name -> declared unit (see :meth:`declare_units`)
        self.units: dict[str, str] = {}
        self.counter = RandomCounter()
        clash = set(self.params) & set(self.vars)
        if clash:
            raise ModelError(f"{', '.join(sorted(clash))} is both a parameter and a variable", name, "vars")
        ctx = ParseContext(name, set(self.params) | {"dt"}, random_allowed=False)
        self.derived: dict[str, Any] = {}  # name -> sympy expression
        self.derived_source: dict[str, str] = {}
        for d, text in (derived or {}).items():
            _check_name(d, name, "derived", "derived parameter")
            if d in self.params or d in self.vars:
                raise ModelError(f"derived parameter '{d}' clashes with a parameter or variable", name, "derived")
            self.derived[d] = parse_expression(text, ctx, f"derived.{d}")
            self.derived_source[d] = str(text)
            ctx.known.add(d)
        self.subexpressions = Subexpressions(name)
        #: fields parsed with subexpressions named (for printing); the attributes hold them expanded
        self.as_written: dict[str, object] = {}

    # -- names -------------------------------------------------------------------------
    def constant_names(self) -> set[str]:
        return set(self.params) | set(self.derived) | set(BUILTIN_NAMES)

    def context(self, extra=(), random_allowed=True) -> ParseContext:
        from .expressions import ParseContext

        known = self.constant_names() | set(self.vars) | set(extra) | set(self.subexpressions)
        return ParseContext(self.name, known, random_allowed, self.counter)

    def add_subexpressions(self, spec, extra=(), taken=None):
        """Parse the model's subexpressions (see :mod:`.subexpressions`); ``extra``: inputs they
        may read, ``taken``: further names they may not use (name -> what uses it)."""
        taken = {**{p: "a parameter" for p in self.params}, **{d: "a derived parameter" for d in self.derived},
                 **{v: "a variable" for v in self.vars}, **{x: "an input" for x in extra}, **(taken or {})}
        known = self.constant_names() | set(self.vars) | set(extra) | (set(taken) - set(BUILTIN_NAMES))
        from .subexpressions import parse_subexpressions

        self.subexpressions = parse_subexpressions(
            spec, self.name, known, taken,
            lambda n: _check_name(n, self.name, f"subexpressions.{n}" if isinstance(n, str) else "subexpressions",
                                  "subexpression"))

    def expanded(self, field_name: str, parsed):
        """``parsed`` (an expression, ODEs or statements of ``field_name``) with subexpressions
        substituted; the form as written is kept in :attr:`as_written` for the code generator."""
        if not self.subexpressions or parsed is None:
            return parsed
        self.as_written[field_name] = parsed
        sub = self.subexpressions
        if isinstance(parsed, list):
            return [sub.expand_odes([x])[0] if hasattr(x, "rhs") else sub.expand_statements([x])[0] for x in parsed]
        return sub.expand(parsed)

    # -- units -------------------------------------------------------------------------
    #: Names besides parameters and variables whose unit a model of this kind may declare.
    unit_inputs: tuple[str, ...] = ()

    def declare_units(self, units) -> None:
        """Declare the unit in which the model computes each of its parameters and variables,
        e.g. ``{"tau_m": "ms", "g_l": "nS"}``: a YAML value with a unit given to that name is
        converted to it (see :mod:`spikeforge.units`)."""
        from ..units import UnitError, check_declaration

        if units is None:
            return
        if not isinstance(units, dict):
            raise ModelError(f"units: expected a mapping name -> unit, got {units!r}", self.name, "units")
        names = [*self.params, *self.vars, *getattr(self, "pre_vars", ()), *getattr(self, "post_vars", ()),
                 *self.unit_inputs]
        for n, text in units.items():
            if n not in names:
                raise ModelError(f"units: '{n}' is not a parameter or variable of the model "
                                 f"(names: {', '.join(names) or 'none'})", self.name, f"units.{n}")
            try:
                check_declaration(self.kind, text)
            except UnitError as err:
                raise ModelError(str(err), self.name, f"units.{n}") from None
            self.units[n] = text.strip()

    # -- parameters --------------------------------------------------------------------
    def bind_params(self, values: dict | None, where: str) -> dict[str, float]:
        """Merge user values with defaults; every parameter must end up a finite number."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise ModelError(
                f"{where}: unknown parameter(s) {', '.join(unknown)} "
                f"(parameters: {', '.join(sorted(self.params)) or 'none'})",
                self.name,
                "params",
            )
        out = {}
        for p, default in self.params.items():
            v = values.get(p, default)
            if v is None:
                raise ModelError(f"{where}: parameter '{p}' has no value", self.name, "params")
            out[p] = _finite_param(v, self.name, p, where)
        return out

    def bind_vars(self, init: dict | None, where: str, **overrides) -> dict[str, Var]:
        """The model's variables with per-use initialisers (``init``) applied."""
        from .variables import make_initializer

        init = dict(init or {})
        unknown = sorted(set(init) - set(self.vars))
        if unknown:
            raise ModelError(
                f"{where}: cannot initialise unknown variable(s) {', '.join(unknown)} "
                f"(variables: {', '.join(sorted(self.vars)) or 'none'})",
                self.name,
                "init",
            )
        out = {}
        for name, var in self.vars.items():
            if name in init:
                var = var.with_init(make_initializer(init[name], self.name, f"init.{name}"))
            out[name] = var
        return out

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


def _finite_param(v, model, p, where=None) -> float:
    prefix = f"{where}: " if where else ""
    if isinstance(v, bool):
        raise ModelError(f"{prefix}parameter '{p}' must be a number, got {v!r}", model, "params")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ModelError(f"{prefix}parameter '{p}' must be a number, got {v!r}", model, "params") from None
    if not math.isfinite(f):
        raise ModelError(f"{prefix}parameter '{p}' must be finite, got {f!r}", model, "params")
    return f


__all__ = ["Model", "Var", "BUILTIN_NAMES"]
