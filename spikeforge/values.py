"""How the parameters and initial values of one model in one place are given.

A parameter is, by how it is given:

* ``constant``: one number, compiled into the generated code (the fast path, and the only
  kind before heterogeneous parameters existed);
* ``element``: one value per element (neuron, synapse, postsynaptic neuron), given as an
  array, ``{values, counts}``, ``{uniform: ...}``/``{normal: ...}`` or an expression of
  ``i`` (``j``), ``N``, ``rand()``, ``randn()``, named draws and other parameters; an array
  loaded at run time;
* ``dynamic``: one number read from an array at the start of every kernel launch, so
  ``Simulation.set_param`` changes it between runs without recompiling;
* ``batch``: one number per batch instance (``batch_values``), so a batch is a sweep.

Variables may be initialised by expressions of parameters, named draws and other
variables (``u: "b*v"``), by arrays and by ``{values, counts}``: the runtime computes them
(see :mod:`spikeforge.models.evaluate`) and loads them after the generated initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from .errors import ModelError, NetworkError
from .models.evaluate import ElementScope, dependency_order, evaluate, parse_value, per_element, references
from .models.expressions import symbol
from .models.reserved import reserved_reason
from .models.variables import Expression, Normal, Uniform, ValueCounts, Values, is_generated, make_initializer

PARAM_KINDS = ("constant", "element", "dynamic", "batch")


@dataclass
class ValueSpecs:
    """How each parameter of one model in one place is given (see the module docstring).

    ``kinds`` names the parameters that are not compiled-in constants; ``batch`` holds the
    values per batch instance; ``draws`` the named per-element draws; ``var_exprs`` the parsed
    expressions of variables initialised by one, in the order they are computed."""

    scope: ElementScope | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    batch: dict[str, np.ndarray] = field(default_factory=dict)
    draws: dict[str, np.ndarray] = field(default_factory=dict)
    var_exprs: dict[str, sympy.Expr] = field(default_factory=dict)

    def kind(self, name: str) -> str:
        return self.kinds.get(name, "constant")


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _names(value, what: str, model: str, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise ModelError(f"{what}: expected a list of parameter names, got {value!r}", model, field_name)
    return list(value)


def bind_values(model, params, where: str, scope: ElementScope, *, dt: float, batch_size: int, seed: int,
                dynamic=None, batch_values=None, draws=None) -> tuple[dict, ValueSpecs]:
    """Bind ``params`` (numbers, or per-element values of any form) to ``model``: returns the
    bound parameters (a float, or an array of ``scope.size`` values for a per-element one)
    and the :class:`ValueSpecs` saying how each is given."""
    from .models.parameters import check_parameter_values

    if params is not None and not isinstance(params, dict):
        raise ModelError(f"{where}: params must be a mapping name -> value, got {type(params).__name__}",
                         model.name, "params")
    params = dict(params or {})
    scalars = {n: v for n, v in params.items() if is_number(v) or isinstance(v, bool) or v is None}
    given = {n: v for n, v in params.items() if n not in scalars}
    # bind_params reports unknown names and missing values; per-element ones hold a place
    bound = model.bind_params({**scalars, **{n: 0.0 for n in given if n in model.params}, **{
        n: v for n, v in given.items() if n not in model.params}}, where)
    specs = ValueSpecs(scope)
    draws = _checked_draws(model, draws, where)
    _bind_per_element(model, given, draws, bound, specs, where, dt=dt, seed=seed)
    for name in _names(dynamic, "dynamic", model.name, "dynamic"):
        if name not in model.params:
            raise ModelError(f"{where}: dynamic: unknown parameter '{name}' "
                             f"(parameters: {', '.join(model.params) or 'none'})", model.name, "dynamic")
        if specs.kind(name) == "constant":
            specs.kinds[name] = "dynamic"
    per_batch = _bind_batch_values(model, batch_values, specs, where, batch_size)
    check_parameter_values(model, {**bound, **per_batch}, dt, where)
    for name, arr in per_batch.items():
        bound[name] = float(arr[0])
    return bound, specs


def _checked_draws(model, draws, where: str) -> dict:
    """The named draws (name -> initialiser), each checked to be a free, valid name."""
    draws = dict(draws or {}) if draws is None or isinstance(draws, dict) else None
    if draws is None:
        raise ModelError(f"{where}: draws must be a mapping name -> initialiser", model.name, "draws")
    taken = set(model.params) | set(model.vars) | set(model.derived)
    for name in draws:
        reason = reserved_reason(name) if isinstance(name, str) and name.isidentifier() else "not a valid name"
        if reason:
            raise ModelError(f"{where}: '{name}' cannot name a draw: {reason}", model.name, f"draws.{name}")
        if name in taken:
            raise ModelError(f"{where}: draw '{name}' has the name of a parameter or variable of the model",
                             model.name, f"draws.{name}")
    return draws


def _bind_per_element(model, given: dict, draws: dict, bound: dict, specs: ValueSpecs, where: str, *,
                      dt: float, seed: int):
    """Evaluate the named draws and the parameters ``given`` per element (in dependency order):
    the parameters go into ``bound`` (kind ``element``), the draws into ``specs.draws``."""
    scope = specs.scope
    # parse (numbering random call sites in the order given: draws, then parameters)
    known = set(model.params) | set(draws)
    inits, exprs = {}, {}
    for group, items in (("draws", draws), ("params", given)):
        for name, value in items.items():
            fld = f"{group}.{name}"
            init = make_initializer(value, model.name, fld)
            if isinstance(init, Uniform):
                init = Expression(f"{init.low!r} + {init.high - init.low!r}*rand()")
            elif isinstance(init, Normal):
                init = Expression(f"{init.mean!r} + {init.sd!r}*randn()")
            inits[name] = (init, fld)
            if isinstance(init, Expression):
                exprs[name] = parse_value(init.source, scope, known, model.name, fld)
    order = dependency_order(exprs, model.name, lambda n: inits[n][1])
    # the element indices (i, j) are made only when an expression reads them: a large
    # population of uniform parameters allocates nothing here
    reads_index = any(references(e) & set(scope.index_names) for e in exprs.values())
    env = scope.env(shadowed=known if reads_index else known | set(scope.index_names))
    env["dt"] = float(dt)
    env.update({n: float(v) for n, v in bound.items() if n not in given})
    draw_values = {}
    for name in [n for n in inits if n not in exprs] + order:
        init, fld = inits[name]
        what = "draw" if name in draws else "parameter"
        values = per_element(init, scope, env, seed, model.name, fld, exprs.get(name),
                             label=f"{where}: {what} '{name}': ")
        if values.shape != (scope.size,):
            raise ModelError(f"'{name}' must have one value per element, got shape {values.shape}", model.name, fld)
        env[name] = values
        if name in draws:
            draw_values[name] = values
        else:
            bound[name] = values
            specs.kinds[name] = "element"
    specs.draws = draw_values


def _bind_batch_values(model, batch_values, specs: ValueSpecs, where: str, batch_size: int) -> dict:
    """The parameters given one value per batch instance (name -> array), marked ``batch`` in ``specs``."""
    if batch_values is not None and not isinstance(batch_values, dict):
        raise ModelError(f"{where}: batch_values must be a mapping name -> list of values", model.name,
                         "batch_values")
    per_batch = {}
    for name, values in (batch_values or {}).items():
        fld = f"batch_values.{name}"
        if name not in model.params:
            raise ModelError(f"{where}: batch_values: unknown parameter '{name}' "
                             f"(parameters: {', '.join(model.params) or 'none'})", model.name, fld)
        if specs.kind(name) == "element":
            raise ModelError(f"{where}: parameter '{name}' is given per element; it cannot also take one value "
                             "per batch instance", model.name, fld)
        arr = batch_array(values, batch_size, f"{where}: batch_values of '{name}'", model.name, fld)
        specs.kinds[name] = "batch"
        specs.batch[name] = arr
        per_batch[name] = arr
    return per_batch


def batch_array(values, batch_size: int, what: str, model=None, fld=None) -> np.ndarray:
    """``values`` as one finite number per batch instance."""
    try:
        if any(isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(values, dtype=object))):
            raise TypeError
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{what}: expected a list of numbers", model, fld) from None
    if arr.ndim != 1 or arr.size != batch_size:
        raise ModelError(f"{what}: expected one value per batch instance (batch_size = {batch_size}), got "
                         f"{arr.size if arr.ndim == 1 else f'shape {arr.shape}'}", model, fld)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{what}: values must be finite", model, fld)
    return arr


def bind_var_inits(model, vars_: dict, specs: ValueSpecs, where: str, traces=False) -> None:
    """Check the variables initialised at run time (expressions, arrays, ``{values, counts}``):
    parse the expressions (names: parameters, derived parameters, draws, variables, the
    scope's indices and counts) and order them; a self reference or a cycle is an error."""
    scope = specs.scope
    known = set(model.params) | set(model.derived) | set(specs.draws) | set(vars_)
    for name, var in vars_.items():
        init = var.init
        if is_generated(init):
            continue
        fld = f"init.{name}"
        if traces:
            raise ModelError(f"{where}: '{name}' is a pre- or postsynaptic variable: initialise it with a number, "
                             "{uniform: ...} or {normal: ...}", model.name, fld)
        if not var.per_element:
            raise ModelError(f"{where}: '{name}' has one value for the whole {'population' if scope else 'model'}; "
                             "give it a number", model.name, fld)
        if isinstance(init, Values) and init.values.shape != (scope.size,):
            raise ModelError(f"{where}: '{name}': expected {scope.size} values (one per element), got "
                             f"{init.values.size}", model.name, fld)
        if isinstance(init, ValueCounts) and sum(init.counts) != scope.size:
            raise ModelError(f"{where}: '{name}': the counts of {{values, counts}} must sum to the {scope.size} "
                             f"elements, got {sum(init.counts)}", model.name, fld)
        if isinstance(init, Expression):
            specs.var_exprs[name] = parse_value(init.source, scope, known, model.name, fld)
    order = dependency_order(specs.var_exprs, model.name, lambda n: f"init.{n}")
    specs.var_exprs = {n: specs.var_exprs[n] for n in order}


def host_initial_values(model, vars_: dict, specs: ValueSpecs, params: dict, *, dt: float, seed: int,
                        batch_size: int, batch_offset: int, read_var, where: str) -> dict[str, np.ndarray]:
    """Values of the variables initialised at run time, by name, each of the array's shape
    ((batch, n) for a batched variable, else (n,)). ``params`` maps every parameter to its
    current value (a float, per element (n,), or per batch instance (batch, 1));
    ``read_var(name)`` reads a variable the generated code initialised."""
    scope = specs.scope
    env = scope.env(shadowed=set(model.params) | set(vars_) | set(specs.draws))
    env["dt"] = float(dt)
    env.update(params)
    env.update(specs.draws)
    for name, expr in model.derived.items():
        env[name] = evaluate(expr, env, None)
    used = set()
    for e in specs.var_exprs.values():
        used |= {s.name for s in e.free_symbols}
    for name in used & set(vars_):
        if is_generated(vars_[name].init):
            env[name] = read_var(name)
    batch = (np.arange(batch_size, dtype=np.int64) + batch_offset).reshape(-1, 1)
    out = {}
    pending = [n for n, v in vars_.items() if not is_generated(v.init) and n not in specs.var_exprs]
    for name in pending + list(specs.var_exprs):
        var = vars_[name]
        fld = f"init.{name}"
        values = per_element(var.init, scope, env, seed, model.name, fld, specs.var_exprs.get(name),
                             batch if var.batched else 0, label=f"{where}: variable '{name}': ")
        shape = (batch_size, scope.size) if var.batched else (scope.size,)
        try:
            values = np.broadcast_to(values, shape)
        except ValueError:
            raise NetworkError(f"{where}: the initial values of '{name}' have shape {values.shape}, expected "
                               f"{shape}: a variable shared by the batch cannot depend on values per batch "
                               "instance") from None
        out[name] = values
        env[name] = values
    return out


__all__ = ["PARAM_KINDS", "ValueSpecs", "batch_array", "bind_values", "bind_var_inits", "host_initial_values",
           "is_number", "symbol"]
