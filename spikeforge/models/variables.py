"""State variables, their dimensions and their initialisers.

Every variable says where it lives (GeNN's idea of variable *dimensions*):

* ``per_element``: one value per neuron (or per synapse), else one value shared by the
  whole population (or projection);
* ``batched``: one value per batch instance, else shared by all instances of the batch;
* ``reduce``: for a variable shared across the batch but written by per-instance code
  (e.g. STDP weights shared by the batch), how the per-instance changes are combined each
  step: ``sum``, ``mean`` or ``max`` (BindsNET showed that the choice changes what STDP
  learns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import ModelError
from .reserved import reserved_reason

REDUCTIONS = ("sum", "mean", "max")


@dataclass(frozen=True)
class Constant:
    value: float

    def describe(self) -> str:
        return f"{self.value!r}"


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def describe(self) -> str:
        return f"uniform({self.low!r}, {self.high!r})"


@dataclass(frozen=True)
class Normal:
    mean: float
    sd: float

    def describe(self) -> str:
        return f"normal({self.mean!r}, {self.sd!r})"


@dataclass(frozen=True, eq=False)
class Values:
    """One value per element, given as an array (kept as float64; shape checked where it is used)."""

    values: object  # numpy array

    def describe(self) -> str:
        return "values given per element (loaded at run time)"


@dataclass(frozen=True, eq=False)
class ValueCounts:
    """Piecewise-constant values: the first ``counts[0]`` elements take ``values[0]``, and so on."""

    values: tuple
    counts: tuple

    def describe(self) -> str:
        return "values given per element as {values, counts} (loaded at run time)"


@dataclass(frozen=True)
class Expression:
    """An expression of other parameters and variables, the element index ``i`` (and ``j``),
    ``N`` and random draws (``rand()``, ``randn()``), evaluated for every element before the run."""

    source: str

    def describe(self) -> str:
        return f"expression '{self.source}' (evaluated at run time)"


Initializer = Union[Constant, Uniform, Normal, Values, ValueCounts, Expression]
#: Initialisers the generated code computes itself (on the Philox initialisation streams); the
#: others are computed by the runtime and loaded into the arrays.
GENERATED_INITIALIZERS = (Constant, Uniform, Normal)


def is_generated(init) -> bool:
    """Whether the generated code computes this initialiser (else the runtime loads the values)."""
    return isinstance(init, GENERATED_INITIALIZERS)


def _finite(x, model, field) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ModelError(f"expected a number, got {x!r}", model, field) from None
    if not math.isfinite(v):
        raise ModelError(f"value must be finite, got {v!r}", model, field)
    return v


def _per_element_values(spec, model, field) -> Values:
    try:
        if any(isinstance(x, (bool, np.bool_)) for x in np.ravel(np.asarray(spec, dtype=object))):
            raise TypeError("booleans")
        arr = np.array(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError("per-element values must be numbers", model, field) from None
    if arr.ndim != 1 or arr.size == 0:
        raise ModelError(f"per-element values must be a non-empty 1-d sequence, got shape {arr.shape}",
                         model, field)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"per-element values must be finite ({int(np.sum(~np.isfinite(arr)))} are not)",
                         model, field)
    arr.setflags(write=False)
    return Values(arr)


def _value_counts(spec: dict, model, field) -> ValueCounts:
    values, counts = spec["values"], spec["counts"]
    vals = _per_element_values(values, model, f"{field}.values").values
    if not isinstance(counts, (list, tuple, np.ndarray)) or any(
            isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 0 for c in counts):
        raise ModelError(f"counts must be a list of non-negative integers, got {counts!r}", model, f"{field}.counts")
    if len(counts) != vals.size:
        raise ModelError(f"{{values, counts}} needs one count per value, got {vals.size} values and "
                         f"{len(counts)} counts", model, f"{field}.counts")
    return ValueCounts(tuple(float(v) for v in vals), tuple(int(c) for c in counts))


def make_initializer(spec, model: str = "?", field: str = "init") -> Initializer:
    """Turn a number, an initialiser or a dict (``{uniform: [lo, hi]}``,
    ``{normal: [mean, sd]}``, ``{constant: x}``) into an initialiser, checking values.

    Computed by the runtime instead: a string (an expression, e.g. ``"b*v"`` or
    ``"-65 + 15*rand()**2"``), a list or array (one value per element), ``{values, counts}``
    (piecewise constant) and ``{expression: text}``."""
    if isinstance(spec, (Values, ValueCounts, Expression)):
        return spec
    if isinstance(spec, str):
        if not spec.strip():
            raise ModelError("expected a number or an expression, got an empty string", model, field)
        return Expression(spec.strip())
    if isinstance(spec, (list, tuple, np.ndarray)):
        return _per_element_values(spec, model, field)
    if isinstance(spec, dict) and set(spec) == {"values", "counts"}:
        return _value_counts(spec, model, field)
    if isinstance(spec, dict) and set(spec) == {"expression"}:
        return make_initializer(str(spec["expression"]), model, field)
    if isinstance(spec, (np.floating, np.integer)) and not isinstance(spec, np.bool_):
        spec = float(spec)
    if isinstance(spec, (Constant, Uniform, Normal)):
        spec = {
            Constant: lambda s: {"constant": s.value},
            Uniform: lambda s: {"uniform": [s.low, s.high]},
            Normal: lambda s: {"normal": [s.mean, s.sd]},
        }[type(spec)](spec)
    if isinstance(spec, bool):
        raise ModelError(f"expected a number or an initialiser, got {spec!r}", model, field)
    if isinstance(spec, (int, float)):
        return Constant(_finite(spec, model, field))
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("constant", "uniform", "normal"):
        (kind, args), = spec.items()
        return _distribution(kind, args, model, field)
    raise ModelError(
        f"unknown initialiser {spec!r} (use a number, {{uniform: [low, high]}}, "
        "{normal: [mean, sd]}, {constant: x}, an expression, a list of values or {values, counts})",
        model,
        field,
    )


def _distribution(kind: str, args, model: str, field: str) -> Initializer:
    """``{constant: x}``, ``{uniform: [low, high]}`` or ``{normal: [mean, sd]}`` (the two numbers
    may also be given by name: ``{uniform: {low: .., high: ..}}``)."""
    if kind == "constant":
        return Constant(_finite(args, model, field))
    if isinstance(args, dict):
        keys = ("low", "high") if kind == "uniform" else ("mean", "sd")
        missing = [k for k in keys if k not in args]
        if missing:
            raise ModelError(f"{kind} initialiser needs {', '.join(keys)}", model, field)
        args = [args[k] for k in keys]
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise ModelError(f"{kind} initialiser takes two numbers, got {args!r}", model, field)
    a, b = (_finite(x, model, field) for x in args)
    if kind == "uniform":
        if b < a:
            raise ModelError(f"uniform initialiser has high < low ({a}, {b})", model, field)
        return Uniform(a, b)
    if b < 0:
        raise ModelError(f"normal initialiser has negative sd {b}", model, field)
    return Normal(a, b)


@dataclass(frozen=True)
class Var:
    """A state variable of a model."""

    name: str
    init: Initializer = Constant(0.0)
    per_element: bool = True
    batched: bool = True
    reduce: str | None = None
    dtype: str = "scalar"  # "scalar" (float or double, as the network says) or "int"

    def __post_init__(self):
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise ModelError(f"'{self.name}' is not a valid variable name", field="vars")
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise ModelError(
                f"variable '{self.name}': reduce must be one of {', '.join(REDUCTIONS)}, got {self.reduce!r}",
                field="vars",
            )
        if self.reduce is not None and self.batched:
            raise ModelError(
                f"variable '{self.name}': a batch reduction only makes sense for a variable "
                "shared across the batch (batched: false)",
                field="vars",
            )
        if self.dtype not in ("scalar", "int"):
            raise ModelError(f"variable '{self.name}': dtype must be scalar or int", field="vars")

    def with_init(self, init) -> Var:
        return Var(self.name, init, self.per_element, self.batched, self.reduce, self.dtype)


def make_vars(spec, model: str, field: str = "vars", **defaults) -> dict[str, Var]:
    """Variables from a list of :class:`Var`, a list of names, or a dict name → init/options."""
    out: dict[str, Var] = {}
    if spec is None:
        return out
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, (list, tuple)):
        items = [(v.name, v) if isinstance(v, Var) else (v, {}) for v in spec]
    else:
        raise ModelError(f"expected a mapping of variables, got {type(spec).__name__}", model, field)
    for name, opts in items:
        if isinstance(opts, Var):
            var = opts
        else:
            initialiser_keys = {"uniform", "normal", "constant", "values", "counts", "expression"}
            if not isinstance(opts, dict) or not (set(opts) - initialiser_keys) and opts:
                opts = {"init": opts}
            unknown = set(opts) - {"init", "per_element", "batched", "reduce", "dtype"}
            if unknown:
                raise ModelError(
                    f"variable '{name}': unknown option(s) {', '.join(sorted(unknown))}", model, field
                )
            kw = dict(defaults)
            kw.update({k: v for k, v in opts.items() if k != "init"})
            for flag in ("per_element", "batched"):
                if not isinstance(kw.get(flag, True), bool):
                    raise ModelError(f"variable '{name}': {flag} must be true or false, got {kw[flag]!r}",
                                     model, field)
            init = make_initializer(opts.get("init", 0.0), model, f"{field}.{name}")
            try:
                var = Var(str(name), init, **kw)
            except ModelError as e:
                raise ModelError(str(e), model, field) from None
        reason = reserved_reason(var.name)
        if reason:
            raise ModelError(f"'{var.name}' cannot name a variable: {reason}", model, field)
        if var.name in out:
            raise ModelError(f"variable '{var.name}' defined twice", model, field)
        out[var.name] = var
    return out
