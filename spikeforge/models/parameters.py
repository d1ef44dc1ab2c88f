"""Checks of parameter values once they are bound to a population, projection or source.

A model can only be judged with its values and the time step: this module finds which
parameters are time constants, evaluates derived parameters and the refractory period,
and refuses values that would run but give wrong numbers.

**Which parameters are time constants.** A constant ``p`` (parameter or derived
parameter) is a time constant of a model when

* some ODE ``dx/dt = f`` has ``c/p`` (``c`` a number, usually -1) among the terms of
  its rate ``df/dx``: ``x`` relaxes (or grows) on the time scale ``p``
  (``dv/dt = (v_rest - v)/tau_m``, ``dx/dt = -x/(2*tau)``); by dimensions ``p`` is a time, or
* a derived parameter contains ``c*dt/p`` (``exp(-dt/tau_m)``, ``dt/tau``): ``p`` is
  compared with the time step.

The rule needs no declaration, so it covers the built-in models (``tau_m``, ``tau_a``,
``tau_syn``, ``tau_plus``, ``tau_minus``) and user models alike. A constant that only
multiplies a rate (Izhikevich's ``a`` in ``du/dt = a*(b*v - u)``) is not a time constant.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import sympy

from ..errors import ModelError
from .expressions import symbol


class ParameterWarning(UserWarning):
    """A parameter value that is allowed but probably a mistake (a time constant below dt).

    ``model`` and ``field`` name where it is, as in :class:`~spikeforge.errors.ModelError`."""

    def __init__(self, message: str, model: str | None = None, field: str | None = None):
        super().__init__(message)
        self.model = model
        self.field = field


def _odes(model) -> list:
    return [*getattr(model, "odes", []), *getattr(model, "pre_odes", []), *getattr(model, "post_odes", [])]


def _reciprocal_of(term, constants: dict) -> str | None:
    """``p`` when ``term`` is a number times ``1/p`` for a constant ``p``."""
    _, rest = term.as_coeff_Mul()
    if rest.is_Pow and rest.exp == -1 and rest.base in constants:
        return constants[rest.base]
    return None


def time_constants(model) -> tuple[str, ...]:
    """The names of ``model``'s time constants (see the module's docstring for the rule)."""
    cached = model.__dict__.get("_time_constants")
    if cached is not None:
        return cached
    constants = {symbol(n): n for n in (*model.params, *model.derived)}
    found: dict[str, None] = {}
    for ode in _odes(model):
        rate = sympy.expand(sympy.diff(ode.rhs, symbol(ode.var)))
        for term in sympy.Add.make_args(rate):
            name = _reciprocal_of(term, constants)
            if name is not None:
                found[name] = None
    dt = symbol("dt")
    for expr in model.derived.values():
        for node in sympy.preorder_traversal(expr):
            if node.is_Mul and dt in node.args:
                name = _reciprocal_of(node.func(*(a for a in node.args if a != dt)), constants)
                if name is not None:
                    found[name] = None
    result = tuple(found)
    model.__dict__["_time_constants"] = result
    return result


def _evaluate(expr, values: dict):
    """``expr`` with ``values`` (symbol -> float) substituted: a complex number, or None
    where it cannot be evaluated here (a name without a scalar value)."""
    if not expr.free_symbols <= set(values):
        return None
    value = sympy.N(expr.xreplace({s: sympy.Float(v) for s, v in values.items()}))
    if value.has(sympy.nan):
        return complex(math.nan)
    if value.has(sympy.zoo, sympy.oo, -sympy.oo):
        return complex(math.inf)
    try:
        return complex(value)
    except TypeError:
        return None


def _show(values) -> str:
    return ", ".join(f"'{n}' = {v:g}" for n, v in values)


def check_parameter_values(model, params: dict, dt: float, where: str) -> dict[str, float]:
    """Refuse bound ``params`` that give wrong numbers; warn about suspicious ones.

    * a derived parameter that evaluates to inf or NaN (or a complex number);
    * a time constant (see :func:`time_constants`) that is not positive;
    * a negative refractory period.

    A time constant below ``dt`` gives a :class:`ParameterWarning`: it is usually seconds
    written where milliseconds are meant. ``params`` values may be per-neuron arrays; they
    are checked element by element, and derived parameters using them are left out.
    Returns the values of the derived parameters that could be evaluated.
    """
    scalars = {symbol(n): float(v) for n, v in params.items() if np.ndim(v) == 0}
    scalars[symbol("dt")] = float(dt)
    derived: dict[str, float] = {}
    for name, expr in model.derived.items():
        value = _evaluate(expr, scalars)
        if value is None:
            continue
        if value.imag != 0 or not math.isfinite(value.real):
            what = "NaN" if math.isnan(value.real) else ("infinite" if value.imag == 0 else "not a real number")
            used = sorted(s.name for s in expr.free_symbols if s.name != "dt" and s in scalars)
            given = _show((n, scalars[symbol(n)]) for n in used)
            raise ModelError(
                f"{where}: derived parameter '{name}' = {model.derived_source.get(name, expr)} is {what}"
                + (f" with {given}" if given else "")
                + f" (dt = {dt:g} ms)",
                model.name,
                f"derived.{name}",
            )
        derived[name] = value.real
        scalars[symbol(name)] = value.real
    for name in time_constants(model):
        value = params[name] if name in params else derived.get(name)
        if value is None:
            continue
        lowest = float(np.min(value))
        field = "params" if name in params else f"derived.{name}"
        if lowest <= 0:
            raise ModelError(
                f"{where}: time constant '{name}' must be positive (ms), got {lowest:g}", model.name, field
            )
        if lowest < dt:
            warnings.warn(
                ParameterWarning(
                    f"{where}: time constant '{name}' = {lowest:g} ms is below dt = {dt:g} ms "
                    "(seconds written where ms are meant?)",
                    model.name,
                    field,
                ),
                stacklevel=3,
            )
    refractory = getattr(model, "refractory", None)
    if refractory is not None:
        field = "params" if refractory.is_Symbol and refractory.name in params else "refractory"
        if refractory.is_Symbol and refractory.name in params:
            value, shown = float(np.min(params[refractory.name])), f"'{refractory.name}'"
        else:
            evaluated = _evaluate(refractory, scalars)
            value = None if evaluated is None else evaluated.real
            shown = f"'{model.refractory_source}'"
        if value is not None and (math.isnan(value) or value < 0):
            raise ModelError(
                f"{where}: the refractory period {shown} must not be negative, got {value:g} ms", model.name, field
            )
    return derived


__all__ = ["ParameterWarning", "check_parameter_values", "time_constants"]
