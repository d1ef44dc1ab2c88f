"""Networks described in YAML files: ``load_network(path_or_text) -> (Network, RunConfig)``.

Every mistake in a file is reported as a :class:`~spikeforge.errors.ConfigError` that names
the file and the line of the offending key or value, says what is wrong and what is
allowed. Errors raised while building models and the network (``ModelError``,
``NetworkError``) are re-raised as ``ConfigError`` with their message kept and the line of
the YAML node being built.

Schema (all times in ms; see ``docs/yaml.md`` for the long version)::

    name: cuba            # network name, an identifier (default: the file's stem, else "network")
    dt: 0.1               # ms (default 0.1)
    seed: 1234            # default 0
    batch_size: 1         # default 1
    precision: float      # float (default) or double
    duration: 1000        # ms, run length used by `spikeforge run` (optional)
    backend: cpu          # optional default backend (default cpu)
    save: out.npz         # optional: where `spikeforge run` saves recordings (relative to this file)
    models:               # optional user-defined models, by name
      my_lif:
        kind: neuron      # neuron | weight_update | postsynaptic | current_source
        params: {tau_m: 20.0, v_th: null}     # null: the population must give a value
        derived: {alpha: "exp(-dt / tau_m)"}
        subexpressions: {drive: "i_syn - (v + 65)"}   # named expressions of the state, per neuron and step
        vars: {v: -65.0, a: {init: 0.0, batched: true}}
        equations: |
          dv/dt = (-v + i_syn) / tau_m  (unless refractory)
        threshold: v > v_th
        reset: v = -65
        refractory: 2.0
        integrator: exact # optional: exact | exponential_euler | euler | rk4
        # neuron:         params, derived, subexpressions, vars, equations, threshold, reset, refractory,
        #                 integrator, sim_code
        # weight_update:  params, derived, subexpressions, vars, pre_vars, post_vars, pre_equations,
        #                 post_equations, on_pre_spike, on_post_spike, on_pre, on_post,
        #                 equations (per synapse, every step), summed ({Igap: "w*(v_pre - v_post)"})
        # postsynaptic:   params, derived, subexpressions, vars, equations, apply
        # current_source: params, derived, subexpressions, vars, equations, current
    populations:          # required
      exc:
        size: 3200        # required
        model: lif        # required: a built-in neuron model or a neuron model from `models:`
        params: {v_th: -50.0}
        init: {v: {uniform: [-60.0, -50.0]}}   # a number, {uniform: [lo, hi]}, {normal: [mean, sd]}
        record: [spikes, v]                    # optional: `spikes` and/or variable names
        spikes:                                # only for spike_source_array populations
          times: [1.0, 2.0]                    # ms
          ids: [0, 1]
          batch: [0, 0]                        # optional: batch instance of each spike (else all)
          # or: file: input.npz  (arrays times, ids and optional batch; relative to this file)
    projections:
      ee:
        pre: exc          # required
        post: exc         # required
        connectivity: {fixed_probability: 0.02}  # dense (default) | one_to_one |
                          # {fixed_probability: p} | {fixed_probability: {p: 0.1, allow_autapses: false}} |
                          # {from_list: {pre: [...], post: [...]}}
        weight_update: {model: static_constant, params: {w: 1.62}, init: {}}   # or just a model name
        postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}   # or {model: delta, target: v}
        delay: 0.0        # ms, a multiple of dt (default 0)
    current_sources:
      drive: {population: exc, model: dc, params: {amp: 1.0}}
    poisson_inputs:       # external Poisson drive (Brian2's PoissonInput)
      ext: {population: exc, target: v, n: 1000, rate: 10.0, weight: 0.1}   # rate in Hz (or "10 Hz")

Model code (equations, statements) is passed to the model constructors unchanged; use a
literal block (``|``) for several lines. Numbers such as ``1e-3`` are read as numbers
(plain YAML 1.1 would read them as strings).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from . import units as _units
from .delays import is_per_synapse
from .errors import ConfigError, ModelError, NetworkError, ResourceError, SpikeforgeError
from .models import builtins as _builtins
from .models.neuron import NeuronModel, SpikeSourceArrayModel
from .models.parameters import ParameterWarning
from .models.synapse import CurrentSourceModel, PostsynapticModel, WeightUpdateModel
from .network import Network, steps_for_duration
from .runtime.backends import backend_names

__all__ = ["RunConfig", "load_network", "load_file", "TOP_LEVEL_KEYS", "MODEL_KINDS"]


# -- YAML with line numbers ----------------------------------------------------------------


class LineDict(dict):
    """A mapping from YAML that remembers where its keys and values are (1-based lines)."""

    line: int = 1  # the mapping's own first line
    owner_line: int | None = None  # the line of the key this mapping is the value of
    key_lines: dict
    value_lines: dict
    value_styles: dict  # scalar style of each value ('|', '>', '"', "'", None)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.key_lines = {}
        self.value_lines = {}
        self.value_styles = {}


class LineList(list):
    """A sequence from YAML that remembers the line of each item."""

    line: int = 1
    item_lines: list

    def __init__(self, *args):
        super().__init__(*args)
        self.item_lines = []


class _LineLoader(yaml.SafeLoader):
    """A safe loader that builds :class:`LineDict` / :class:`LineList` and rejects duplicate keys."""


def _construct_mapping(loader, node):
    seen: dict = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first given at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            ) from None
        value = out[key] = loader.construct_object(value_node, deep=True)
        if isinstance(value, LineDict) and value.owner_line is None:
            value.owner_line = key_node.start_mark.line + 1
        out.key_lines[key] = key_node.start_mark.line + 1
        out.value_lines[key] = value_node.start_mark.line + 1
        out.value_styles[key] = getattr(value_node, "style", None)
    return out


def _construct_sequence(loader, node):
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
# YAML 1.1 (PyYAML) reads 1e-3 as a string; read every float spelling as a float.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _plain(x):
    """LineDict/LineList -> dict/list, recursively (what the model constructors get)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _copy_lines(node: LineDict) -> LineDict:
    """A shallow copy of ``node`` that keeps its line numbers."""
    out = LineDict(node)
    out.line, out.owner_line = node.line, node.owner_line
    out.key_lines, out.value_lines = dict(node.key_lines), dict(node.value_lines)
    out.value_styles = dict(node.value_styles)
    return out


# -- what is allowed ------------------------------------------------------------------------

TOP_LEVEL_KEYS = (
    "name",
    "dt",
    "seed",
    "batch_size",
    "precision",
    "duration",
    "backend",
    "save",
    "models",
    "populations",
    "projections",
    "current_sources",
    "poisson_inputs",
)
BACKENDS = backend_names()  # the registered backends (spikeforge.runtime.backends)
#: How parameters are given besides their values (spikeforge.values): names of dynamic
#: parameters, one value per batch instance, named per-element draws.
VALUE_KEYS = ("dynamic", "batch_values", "draws")
POPULATION_KEYS = ("size", "model", "params", "init", "record", "spikes", "timed_inputs", *VALUE_KEYS)
TIMED_INPUT_KEYS = ("file", "key", "values", "dt")
PROJECTION_KEYS = ("pre", "post", "connectivity", "weight_update", "postsynaptic", "delay", "max_delay")
WEIGHT_UPDATE_KEYS = ("model", "params", "init", *VALUE_KEYS)
POSTSYNAPTIC_KEYS = ("model", "params", "init", "target", *VALUE_KEYS)
CURRENT_SOURCE_KEYS = ("population", "model", "params", "init", *VALUE_KEYS)
POISSON_INPUT_KEYS = ("population", "target", "n", "rate", "weight")
SPIKES_KEYS = ("times", "ids", "batch", "file")

#: For each model kind: the class and the keys a user-defined model of that kind may have.
MODEL_KINDS = {
    "neuron": (
        NeuronModel,
        (
            "params",
            "derived",
            "vars",
            "equations",
            "threshold",
            "reset",
            "refractory",
            "integrator",
            "sim_code",
            "subexpressions",
        ),
    ),
    "weight_update": (
        WeightUpdateModel,
        (
            "params",
            "derived",
            "vars",
            "pre_vars",
            "post_vars",
            "pre_equations",
            "post_equations",
            "on_pre_spike",
            "on_post_spike",
            "on_pre",
            "on_post",
            "subexpressions",
            "equations",
            "summed",
        ),
    ),
    "postsynaptic": (PostsynapticModel, ("params", "derived", "vars", "equations", "apply", "subexpressions")),
    "current_source": (CurrentSourceModel, ("params", "derived", "vars", "equations", "current", "subexpressions")),
}
# Every kind of model may declare the units it computes its names in (spikeforge.units).
MODEL_KINDS = {kind: (cls, (*keys, "units")) for kind, (cls, keys) in MODEL_KINDS.items()}
#: Model fields holding code or an expression (a string, or a number for expressions).
_CODE_FIELDS = {
    "equations",
    "threshold",
    "reset",
    "refractory",
    "sim_code",
    "pre_equations",
    "post_equations",
    "on_pre_spike",
    "on_post_spike",
    "on_pre",
    "on_post",
    "apply",
    "current",
}
_EXPRESSION_FIELDS = {"threshold", "refractory", "current"}  # may also be a number


def _builtin_registry(kind: str) -> dict:
    return {
        "neuron": _builtins.NEURONS,
        "weight_update": _builtins.WEIGHT_UPDATES,
        "postsynaptic": _builtins.POSTSYNAPTIC,
        "current_source": _builtins.CURRENT_SOURCES,
    }[kind]


@dataclass
class RunConfig:
    """How to run a network loaded from YAML (what ``spikeforge run`` does with it)."""

    duration: float | None = None  # ms; None when the file gives none
    record_spikes: list[str] = field(default_factory=list)
    record_vars: list[tuple[str, str]] = field(default_factory=list)
    #: population -> spikes for Simulation.set_spike_times: (times, ids) for every batch
    #: instance alike, or a list of batch_size (times, ids) pairs
    spike_inputs: dict[str, object] = field(default_factory=dict)
    backend: str = "cpu"
    save: Path | None = None
    filename: str | None = None

    def apply_inputs(self, sim) -> None:
        """Give a built simulation the spike inputs of the file's spike-source arrays."""
        for pop, spikes in self.spike_inputs.items():
            sim.set_spike_times(pop, spikes)


# -- helpers ----------------------------------------------------------------------------------


def _at(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _type_name(x) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, dict):
        return "a mapping"
    if isinstance(x, list):
        return "a list"
    return type(x).__name__


def _show(x) -> str:
    return repr(_plain(x))


def _quoted_names(message: str) -> list[str]:
    names = re.findall(r"'([A-Za-z_]\w*)'", message)
    for m in re.finditer(r"unknown (?:[\w-]+ )?(?:parameter|variable)\(s\) ([\w, ]+)", message):
        names.extend(n.strip() for n in m.group(1).split(","))
    return names


def _caller_level() -> int:
    """The ``stacklevel`` of a warning issued here that points at the first caller outside
    spikeforge (and contextlib)."""
    package = str(Path(__file__).parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename.endswith("contextlib.py")):
        frame, level = frame.f_back, level + 1
    return level


def _is_path_like(x) -> bool:
    if isinstance(x, os.PathLike):
        return True
    if isinstance(x, str) and "\n" not in x and x.strip():
        return x.endswith((".yaml", ".yml")) or os.path.isfile(x)
    return False


class _Loader:
    def __init__(self, filename: str, base_dir: Path, default_name: str):
        self.filename = filename
        self.base_dir = base_dir
        self.default_name = default_name
        self.user_models: dict[str, tuple[str, object, LineDict]] = {}  # name -> (kind, model, node)

    # -- errors --------------------------------------------------------------------------
    def fail(self, message: str, line: int | None):
        raise ConfigError(message, self.filename, line)

    @staticmethod
    def kline(node, key) -> int:
        if isinstance(node, LineDict):
            return node.key_lines.get(key, node.line)
        return getattr(node, "line", 1)

    @staticmethod
    def vline(node, key) -> int:
        if isinstance(node, LineDict):
            return node.value_lines.get(key, node.line)
        return getattr(node, "line", 1)

    @contextmanager
    def building(self, line: int, locate=None):
        """Re-raise spikeforge errors from constructors as ConfigError at ``line`` (or where
        ``locate(err)`` says)."""
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield
            except ConfigError:
                raise
            except ResourceError as err:  # the machine's limit, not the file's mistake: keep the kind
                raise type(err)(f"{self.filename}:{(locate(err) if locate else None) or line}: {err}") from err
            except SpikeforgeError as err:
                better = locate(err) if locate is not None else None
                raise ConfigError(str(err), self.filename, better or line) from err
        for w in caught:  # a parameter warning names the file and line, like an error
            if isinstance(w.message, ParameterWarning):
                where = ModelError(str(w.message), w.message.model, w.message.field)
                at = (locate(where) if locate is not None else None) or line
                warnings.warn(
                    ParameterWarning(f"{self.filename}:{at}: {where}", w.message.model, w.message.field),
                    stacklevel=_caller_level(),
                )
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    def line_in(self, node, path: list[str], message: str) -> int | None:
        """The line of ``node[path[0]][path[1]]...`` as deep as it exists; inside a mapping of
        names (params, init, vars) the line of a name the message quotes; inside a literal
        block the line quoted by the message."""
        if not isinstance(node, LineDict) or not path or path[0] not in node:
            return None
        key = path[0]
        line = self.vline(node, key)
        child = node[key]
        if isinstance(child, LineDict):
            deeper = self.line_in(child, path[1:], message)
            if deeper is not None:
                return deeper
            for name in _quoted_names(message):
                if name in child:
                    return self.vline(child, name)
            return line
        if isinstance(child, str):
            return self._line_in_text(child, node.value_styles.get(key), line, message)
        return line

    def use_line(self, node, err) -> int | None:
        """The line of an error about the values a population, projection part or current
        source (``node``) gives a model: the value it gives, else (a default) the model's
        definition in ``models:``."""
        msg, parts = str(err), (err.field or "").split(".")
        if parts[0] in ("params", "derived"):
            params = node.get("params") if isinstance(node, LineDict) else None
            if isinstance(params, LineDict) and len(parts) > 1 and parts[1] in params:  # params.<name>
                return self.line_in(node, parts, msg)
            if isinstance(params, LineDict):
                for name in _quoted_names(msg):
                    if name in params:
                        return self.vline(params, name)
            in_def = self.user_model_line(err.model, err.field, msg)
            if in_def is not None:
                return in_def
        return self.line_in(node, parts, msg)

    @staticmethod
    def _line_in_text(text: str, style, line: int, message: str) -> int:
        """For a literal block (``|``), the line of the text a message quotes."""
        if style != "|":
            return line
        quoted = [q.strip() for q in re.findall(r"'([^']+)'", message)]
        lines = text.split("\n")
        for q in sorted(quoted, key=len, reverse=True):
            for i, text_line in enumerate(lines):
                if q and q in text_line:
                    return line + 1 + i
        return line

    def hint_line(self, message: str, node, hints) -> int | None:
        """The line of the first key in ``hints`` ((regex, key) pairs) the message matches."""
        for pattern, key in hints:
            if re.search(pattern, message) and isinstance(node, LineDict) and key in node:
                return self.vline(node, key)
        return None

    # -- typed access ----------------------------------------------------------------------
    def check_mapping(self, value, where: str, line: int, what: str = "a mapping") -> LineDict:
        if value is None:
            value = LineDict()
            value.line = line
        if not isinstance(value, LineDict):
            self.fail(f"{where}: expected {what}, got {_type_name(value)} {_show(value)}", line)
        for k in value:
            if not isinstance(k, str):
                self.fail(f"{where}: keys must be names, got {_type_name(k)} {k!r}", self.kline(value, k))
        return value

    def check_keys(self, node: LineDict, allowed, where: str, required=()):
        for k in node:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.fail(
                    f"{where}: unknown key '{k}' (allowed: {', '.join(allowed)}){hint}", self.kline(node, k)
                )
        for k in required:
            if k not in node or node[k] is None:
                line = self.kline(node, k) if k in node else (node.owner_line or node.line)
                self.fail(f"{where}: missing required key '{k}' (required: {', '.join(required)})", line)

    def get_str(self, node, key, where, default=None, identifier=False):
        if key not in node:
            return default
        v = node[key]
        if not isinstance(v, str) or not v.strip():
            self.fail(
                f"{_at(where, key)}: expected a name, got {_type_name(v)} {_show(v)}", self.vline(node, key)
            )
        if identifier and not v.isidentifier():
            self.fail(
                f"{_at(where, key)}: {v!r} is not a valid name "
                "(letters, digits and '_', not starting with a digit)",
                self.vline(node, key),
            )
        return v

    def get_number(self, node, key, where, default=None, positive=False, unit=None):
        """``node[key]``, a number; with ``unit`` (e.g. ``"ms"``) it may also be a value with a
        unit of the same dimension (``"0.02 s"``), converted to ``unit``."""
        if key not in node:
            return default
        v = node[key] if unit is None else self.unit_value(node, key, where, unit)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(
                f"{_at(where, key)}: expected a number, got {_type_name(v)} {_show(v)}", self.vline(node, key)
            )
        if not np.isfinite(float(v) if isinstance(v, float) or abs(v) < 2**1000 else math.inf):  # huge ints too
            self.fail(f"{_at(where, key)}: expected a finite number, got {v!r}", self.vline(node, key))
        if positive and v <= 0:
            self.fail(f"{_at(where, key)}: must be positive, got {v!r}", self.vline(node, key))
        return v

    def get_int(self, node, key, where, default=None):
        if key not in node:
            return default
        v = node[key]
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(
                f"{_at(where, key)}: expected an integer, got {_type_name(v)} {_show(v)}",
                self.vline(node, key),
            )
        return v

    def get_mapping(self, node, key, where) -> LineDict:
        return self.check_mapping(node.get(key), _at(where, key), self.vline(node, key))

    # -- values with units (spikeforge.units) -------------------------------------------------
    def unit_value(self, node, key, where, unit: str):
        """``node[key]`` in ``unit`` when it is a value with a unit (``"0.02 s"`` -> 20.0 for
        ``ms``); any other value unchanged."""
        value = node[key]
        line = self.vline(node, key)

        def convert(text, at_line):
            try:
                return _units.convert(text, unit, _at(where, key))
            except _units.UnitError as err:
                self.fail(f"{_at(where, key)}: {err}", at_line)

        return self.map_quantities(value, _at(where, key), line, convert)

    def with_units(self, node, where: str, model, **links):
        """A copy of ``node`` (the params or init a population, projection part or current
        source gives ``model``) with every value that has a unit converted to the unit the
        model computes that name in; ``links``: ``target`` (neuron model) and ``postsynaptic``
        for units declared as references (see :func:`spikeforge.units.unit_of`)."""
        if not isinstance(node, LineDict):
            return node
        known = {*model.params, *model.vars}
        out = _copy_lines(node)
        for name, value in node.items():

            def convert(text, at_line, name=name):
                if name not in known:  # the model's own error names the unknown parameter or variable
                    return text
                try:
                    return _units.convert_for(text, model, name, **links)
                except _units.UnitError as err:
                    self.fail(f"{where}.{name}: {err}", at_line)

            out[name] = self.map_quantities(value, f"{where}.{name}", self.vline(node, name), convert)
        return out

    def definition_with_units(self, node: LineDict, where: str, model_name: str, kind: str) -> LineDict:
        """A model definition (in ``models:``) with its values with units converted.

        ``units:`` maps names to units. A default with a unit (in params, vars, pre_vars,
        post_vars) is converted to the declared unit; a name without a declaration takes the
        base unit of its default's dimension (``tau: 20 ms`` declares ms, ``g: 10 nS`` nS), and
        a dimension without a base unit must be declared. ``refractory: 2 ms`` is in ms."""
        out = _copy_lines(node)
        units = self.check_mapping(node.get("units"), f"{where}.units", self.vline(node, "units"),
                                   "a mapping name -> unit")
        units = _copy_lines(units)
        for n, text in units.items():
            if text == 1 and not isinstance(text, bool):
                units[n] = "1"  # dimensionless
            elif not isinstance(text, str):
                self.fail(f"{where}.units.{n}: expected a unit such as ms, mV, nA, nS, pF, Hz, got "
                          f"{_type_name(text)} {_show(text)}", self.vline(units, n))
        for key in ("params", "vars", "pre_vars", "post_vars"):
            group = node.get(key)
            if not isinstance(group, LineDict):
                continue
            role = "parameter" if key == "params" else "variable"
            converted = _copy_lines(group)
            for name, value in group.items():

                def convert(text, at_line, name=name, role=role, key=key):
                    at = f"{where}.{key}.{name}"
                    try:
                        unit = units.get(name)
                        if unit is None:
                            unit = _units.base_unit(_units.split_quantity(text)[1])
                            if unit is None:
                                dimension = _units.describe(_units.parse_unit(_units.split_quantity(text)[1]))
                                self.fail(f"{at}: {text!r} is {dimension}, which has no base unit: declare the unit "
                                          f"the model computes '{name}' in (units: {{{name}: ...}})", at_line)
                            units[name] = unit
                            units.value_lines[name] = units.key_lines[name] = at_line
                        elif _units.unit_reference(kind, unit) is not None:
                            self.fail(f"{at}: the unit of '{name}' is {unit!r}, known only where the model is used: "
                                      "give the default as a plain number", at_line)
                        return _units.convert(text, unit, f"{role} '{name}' of model '{model_name}'")
                    except _units.UnitError as err:
                        self.fail(f"{at}: {err}", at_line)

                converted[name] = self.map_quantities(value, f"{where}.{key}.{name}", self.vline(group, name), convert)
            out[key] = converted
        if "refractory" in node:
            out["refractory"] = self.unit_value(node, "refractory", where, "ms")
        out["units"] = units
        out.key_lines.setdefault("units", node.line)
        out.value_lines.setdefault("units", node.line)
        return out

    def map_quantities(self, value, where: str, line: int, convert):
        """``value`` with every string that is a number with a unit replaced by ``convert(text,
        line)``, through mappings and lists (``{uniform: [-60 mV, -50 mV]}``); a unit without a
        number is refused."""
        if isinstance(value, LineDict):
            out = _copy_lines(value)
            for k, v in value.items():
                out[k] = self.map_quantities(v, f"{where}.{k}", value.value_lines.get(k, line), convert)
            return out
        if isinstance(value, LineList):
            out = LineList(
                self.map_quantities(v, f"{where}[{i}]", ln, convert)
                for i, (v, ln) in enumerate(zip(value, value.item_lines, strict=True))
            )
            out.line, out.item_lines = value.line, list(value.item_lines)
            return out
        if _units.split_quantity(value) is not None:
            return convert(value, line)
        if _units.is_bare_unit(value) and len(value.strip()) > 1:  # one letter (m, s, V) may name a variable
            self.fail(f"{where}: {value!r} is a unit without a number (write e.g. '20 {value.strip()}')", line)
        return value

    # -- models -----------------------------------------------------------------------------
    def resolve_model(self, name, kind: str, where: str, line: int):
        if not isinstance(name, str):
            self.fail(f"{where}: expected a model name, got {_type_name(name)} {_show(name)}", line)
        if name in self.user_models:
            ukind, model, _ = self.user_models[name]
            if ukind != kind:
                self.fail(f"{where}: model '{name}' is a {ukind} model, expected a {kind} model", line)
            return model
        registry = _builtin_registry(kind)
        if name in registry:
            return registry[name]
        known = sorted(registry) + sorted(n for n, (k, _, _) in self.user_models.items() if k == kind)
        other = [k for k in MODEL_KINDS if k != kind and name in _builtin_registry(k)]
        extra = f"; '{name}' is a built-in {other[0]} model" if other else ""
        close = difflib.get_close_matches(name, known, n=1)
        extra += f"; did you mean '{close[0]}'?" if close and not other else ""
        self.fail(
            f"{where}: unknown {kind} model '{name}' (known {kind} models: {', '.join(known)}){extra}", line
        )

    def user_model_line(self, model_name: str | None, field_name: str | None, message: str) -> int | None:
        """The line, in ``models:``, of the field of a user-defined model an error is about."""
        if model_name not in self.user_models:
            return None
        _, _, node = self.user_models[model_name]
        if field_name:
            line = self.line_in(node, field_name.split("."), message)
            if line is not None:
                return line
        return node.line

    def check_var_options(self, vars_, where: str):
        """Flags of variables given as option mappings must be booleans (YAML true/false)."""
        if not isinstance(vars_, LineDict):
            return
        for var, opts in vars_.items():
            if not isinstance(opts, LineDict):
                continue
            for flag in ("batched", "per_element"):
                if flag in opts and not isinstance(opts[flag], bool):
                    self.fail(
                        f"{where}.{var}.{flag}: expected true or false, got {_show(opts[flag])}",
                        self.vline(opts, flag),
                    )

    def load_models(self, top: LineDict):
        models = self.get_mapping(top, "models", "")
        for name, node in models.items():
            where = f"models.{name}"
            line = self.kline(models, name)
            if not name.isidentifier():
                self.fail(f"{where}: {name!r} is not a valid model name (letters, digits and '_')", line)
            clash = [k for k in MODEL_KINDS if name in _builtin_registry(k)]
            if clash:
                self.fail(
                    f"{where}: '{name}' is the name of a built-in {clash[0]} model; choose another", line
                )
            node = self.check_mapping(
                node, where, self.vline(models, name), "a mapping with kind and model fields"
            )
            if "kind" not in node:
                self.fail(f"{where}: missing required key 'kind' ({' | '.join(MODEL_KINDS)})", line)
            kind = node["kind"]
            if not isinstance(kind, str) or kind not in MODEL_KINDS:
                self.fail(
                    f"{where}.kind: unknown model kind {_show(kind)} (allowed: {', '.join(MODEL_KINDS)})",
                    self.vline(node, "kind"),
                )
            cls, allowed = MODEL_KINDS[kind]
            self.check_keys(node, ("kind", *allowed), f"{where} ({kind} model)")
            node = self.definition_with_units(node, where, name, kind)
            kwargs = {}
            for key in allowed:
                if key not in node or node[key] is None:
                    continue
                value = node[key]
                if key in ("on_pre", "on_post") and isinstance(value, LineDict):  # pathways (on_post: refused)
                    for path, text in value.items():
                        if not isinstance(text, str):
                            self.fail(f"{where}.{key}.{path}: expected text (the pathway's statements), got "
                                      f"{_type_name(text)} {_show(text)}", self.vline(value, path))
                elif key in _CODE_FIELDS:
                    ok = isinstance(value, str) or (
                        key in _EXPRESSION_FIELDS
                        and isinstance(value, (int, float))
                        and not isinstance(value, bool)
                    )
                    if not ok:
                        what = "an expression (text or a number)" if key in _EXPRESSION_FIELDS else "text"
                        self.fail(
                            f"{_at(where, key)}: expected {what}, got {_type_name(value)} {_show(value)}",
                            self.vline(node, key),
                        )
                elif key == "integrator":
                    if not isinstance(value, str):
                        self.fail(
                            f"{_at(where, key)}: expected a name, got {_type_name(value)} {_show(value)}",
                            self.vline(node, key),
                        )
                elif key == "params":
                    if not isinstance(value, (dict, list)):
                        self.fail(
                            f"{where}.params: expected a mapping name -> default value (null: required), "
                            f"got {_type_name(value)} {_show(value)}",
                            self.vline(node, key),
                        )
                    if isinstance(value, dict):
                        self.check_mapping(value, f"{where}.params", self.vline(node, key))
                elif key in ("derived", "subexpressions", "summed"):
                    value = self.check_mapping(
                        value, f"{where}.{key}", self.vline(node, key), "a mapping name -> expression"
                    )
                    for d, expr in value.items():
                        if isinstance(expr, bool) or not isinstance(expr, (str, int, float)):
                            self.fail(
                                f"{where}.{key}.{d}: expected an expression, got {_type_name(expr)}",
                                self.vline(value, d),
                            )
                elif key in ("vars", "pre_vars", "post_vars"):
                    if not isinstance(value, (dict, list)):
                        self.fail(
                            f"{_at(where, key)}: expected a mapping name -> initial value or options, "
                            f"got {_type_name(value)} {_show(value)}",
                            self.vline(node, key),
                        )
                    self.check_var_options(value, f"{where}.{key}")
                kwargs[key] = _plain(value)

            def locate(err, node=node):
                if isinstance(err, ModelError):
                    return self.line_in(node, (err.field or "").split("."), str(err))
                return None

            with self.building(line, locate):
                model = cls(name, **kwargs)
            self.user_models[name] = (kind, model, node)

    # -- the network ------------------------------------------------------------------------------
    def load(self, top, batch_size=None, seed=None) -> tuple[Network, RunConfig]:
        if top is None:
            self.fail("the file is empty; expected a mapping with at least 'populations'", 1)
        top = self.check_mapping(top, "top level", 1, "a mapping with keys such as name, dt, populations")
        self.check_keys(top, TOP_LEVEL_KEYS, "top level", required=("populations",))
        name = self.get_str(top, "name", "", default=self.default_name, identifier=True)
        dt = self.get_number(top, "dt", "", default=0.1, positive=True, unit="ms")
        file_seed = self.get_int(top, "seed", "", default=0)
        file_batch = self.get_int(top, "batch_size", "", default=1)
        precision = self.get_str(top, "precision", "", default="float")
        duration = self.get_number(top, "duration", "", default=None, positive=True, unit="ms")
        if duration is not None:
            with self.building(self.vline(top, "duration")):
                steps_for_duration(duration, dt)
        backend = self.get_str(top, "backend", "", default="cpu")
        if backend not in BACKENDS:
            self.fail(
                f"backend: unknown backend '{backend}' (allowed: {', '.join(BACKENDS)})", self.vline(top, "backend")
            )
        save = self.get_str(top, "save", "", default=None)
        if batch_size is not None:
            Network._check_batch(batch_size)
        hints = [
            (r"\bdt\b", "dt"),
            (r"batch_size", "batch_size"),
            (r"\bseed\b", "seed"),
            (r"precision", "precision"),
            (r"network name", "name"),
        ]
        with self.building(1, lambda err: self.hint_line(str(err), top, hints)):
            net = Network(
                name,
                dt=dt,
                batch_size=int(batch_size) if batch_size is not None else file_batch,
                seed=int(seed) if seed is not None else file_seed,
                precision=precision,
            )
        cfg = RunConfig(
            duration=None if duration is None else float(duration),
            backend=backend,
            save=None if save is None else self.base_dir / save,
            filename=self.filename,
        )
        self.load_models(top)
        self.load_populations(top, net, cfg)
        self.load_projections(top, net)
        self.load_current_sources(top, net)
        self.load_poisson_inputs(top, net)
        return net, cfg

    def load_populations(self, top, net: Network, cfg: RunConfig):
        pops = self.get_mapping(top, "populations", "")
        if not pops:
            self.fail("populations: a network needs at least one population", self.vline(top, "populations"))
        for name, node in pops.items():
            where = f"populations.{name}"
            line = self.kline(pops, name)
            node = self.check_mapping(node, where, self.vline(pops, name), "a mapping with size and model")
            self.check_keys(node, POPULATION_KEYS, where, required=("size", "model"))
            model = self.resolve_model(node["model"], "neuron", f"{where}.model", self.vline(node, "model"))
            params = self.with_units(self.get_mapping(node, "params", where), f"{where}.params", model)
            init = self.with_units(self.get_mapping(node, "init", where), f"{where}.init", model)
            record, record_lines, record_opts = self.record_list(node, where)
            if "rate" in record and "rate" not in model.vars:  # a variable named rate keeps its meaning
                record = ["population_rate" if r == "rate" else r for r in record]
                record_lines["population_rate"] = record_lines.pop("rate")
                record_opts["population_rate"] = record_opts.pop("rate")
            is_ssa = isinstance(model, SpikeSourceArrayModel)
            if "spikes" in node and not is_ssa:
                self.fail(
                    f"{where}.spikes: spike times can only be given to a spike_source_array population "
                    f"(model here: '{model.name}')",
                    self.kline(node, "spikes"),
                )
            for what in ("spikes", "population_rate"):
                if what in record and not model.spiking:
                    self.fail(
                        f"{where}.record: population '{name}' does not spike (model '{model.name}' has no "
                        f"threshold); record its variables instead",
                        record_lines[what],
                    )

            def locate(err, node=node):
                if isinstance(err, ModelError):
                    return self.use_line(node, err)
                return self.hint_line(str(err), node, [(r"\bsize\b", "size"), (r"\bmodel\b", "model")])

            with self.building(line, locate):
                net.add_population(
                    name,
                    node["size"],
                    model,
                    params=_plain(params),
                    init=_plain(init),
                    record_spikes="spikes" in record,
                    **self.value_options(node, where),
                )
            for what in record:
                self.record_options(net, name, what, record_opts[what], where, record_lines[what])
                if what == "spikes":
                    cfg.record_spikes.append(name)
                elif what != "population_rate":
                    cfg.record_vars.append((name, what))
            if "timed_inputs" in node:
                self.timed_inputs(node, where, net, name)
            if "spikes" in node:
                cfg.spike_inputs[name] = self.spike_input(
                    node, where, net.populations[name].size, net.batch_size
                )

    def value_options(self, node, where: str) -> dict:
        """``dynamic`` (a list of parameter names), ``batch_values`` (parameter -> one number
        per batch instance) and ``draws`` (name -> initialiser) of a population, projection
        part or current source, checked for their shape here (for their meaning by the network)."""
        out = {}
        if node.get("dynamic") is not None:
            value = node["dynamic"]
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self.fail(f"{where}.dynamic: expected a list of parameter names, got {_show(value)}",
                          self.vline(node, "dynamic"))
            out["dynamic"] = list(names)
        for key in ("batch_values", "draws"):
            if node.get(key) is not None:
                value = self.check_mapping(node[key], f"{where}.{key}", self.vline(node, key))
                if key == "batch_values":
                    for name, values in value.items():
                        if not isinstance(values, list) or any(
                                isinstance(x, bool) or not isinstance(x, (int, float)) for x in values):
                            self.fail(f"{where}.batch_values.{name}: expected a list of numbers (one per batch "
                                      f"instance), got {_show(values)}", self.vline(value, name))
                out[key] = _plain(value)
        return out

    def record_list(self, node, where):
        """``record:`` as (names, line of each, options of each): a list of names (``spikes``,
        ``rate``, variables), a mapping name -> options (``{neurons: ..., every: k}``, or
        true/null for everything), or a list mixing names and one-key such mappings."""
        if "record" not in node or node["record"] is None:
            return [], {}, {}
        value = node["record"]
        line = self.vline(node, "record")
        expected = "a list of 'spikes', 'rate' and/or variable names, or a mapping of them to options"
        if isinstance(value, str):
            items = [(value, line, None)]
        elif isinstance(value, LineDict):
            items = [(k, self.kline(value, k), value[k]) for k in value]
        elif isinstance(value, LineList):
            items = []
            for item, item_line in zip(value, value.item_lines, strict=True):
                if isinstance(item, LineDict) and len(item) == 1:
                    (k, v), = item.items()
                    items.append((k, self.kline(item, k), v))
                else:
                    items.append((item, item_line, None))
        else:
            self.fail(f"{where}.record: expected {expected}, got {_type_name(value)} {_show(value)}", line)
        out, out_lines, options = [], {}, {}
        for item, item_line, opts in items:
            if not isinstance(item, str) or not item.isidentifier():
                self.fail(
                    f"{where}.record: expected 'spikes', 'rate' or a variable name, got {_type_name(item)} "
                    f"{_show(item)}",
                    item_line,
                )
            if opts is True:
                opts = None
            if opts is False:
                continue
            if opts is not None:
                opts = self.check_mapping(opts, f"{where}.record.{item}", item_line,
                                          "a mapping with neurons and/or every (or true)")
                self.check_keys(opts, () if item == "population_rate" else ("neurons",) if item == "spikes"
                                else ("neurons", "every"), f"{where}.record.{item}")
            if item not in out_lines:
                out.append(item)
                out_lines[item] = item_line
                options[item] = opts
        return out, out_lines, options

    def record_options(self, net: Network, name: str, what: str, opts, where: str, line: int):
        """Apply one ``record:`` entry of population ``name`` (``what``: spikes, a variable or
        the population rate) with its options; errors carry the line of the option at fault."""
        opts = opts or {}
        if what == "population_rate" and opts:
            key = next(iter(opts))
            self.fail(f"{where}.record.rate: the population rate counts every neuron at every step; "
                      f"it takes no {key}", self.kline(opts, key))
        kwargs = {}
        for key in ("neurons", "every"):
            if key in opts:
                kwargs[key] = _plain(opts[key])
        try:
            if what == "spikes":
                net.record_spikes(name, **kwargs)
            elif what == "population_rate":
                net.record_rate(name)
            else:
                net.record_var(name, what, **kwargs)
        except NetworkError as err:  # "<what the network calls it>: <problem>" -> the file's field and line
            problem = str(err).split(": ", 1)[-1]
            key = "every" if "every" in problem and "every" in opts else "neurons" if "neurons" in opts else None
            self.fail(f"{where}.record.{what}{'.' + key if key else ''}: {problem}",
                      self.vline(opts, key) if key else line)

    def timed_inputs(self, node, where, net: Network, pop: str):
        """``timed_inputs: {param: {file: x.npz, key: name, dt: ms}}`` (or ``{values: [...], dt: ms}``):
        parameters that follow an array over time (see spikeforge.timed)."""
        where = f"{where}.timed_inputs"
        inputs = self.check_mapping(node["timed_inputs"], where, self.vline(node, "timed_inputs"),
                                    "a mapping of parameter names to {file, key, dt}")
        for param, spec in inputs.items():
            at = f"{where}.{param}"
            spec = self.check_mapping(spec, at, self.vline(inputs, param), "a mapping with file, key and dt")
            self.check_keys(spec, TIMED_INPUT_KEYS, at, required=("dt",))
            dt = self.get_number(spec, "dt", at, positive=True, unit="ms")
            if ("file" in spec) == ("values" in spec):
                self.fail(f"{at}: give either file (with key) or values", self.kline(inputs, param))
            if "values" in spec:
                if "key" in spec:
                    self.fail(f"{at}.key: key goes with file, not with values", self.kline(spec, "key"))
                values_line = self.vline(spec, "values")
                try:
                    values = np.asarray(_plain(spec["values"]), dtype=np.float64)
                except (TypeError, ValueError):
                    self.fail(f"{at}.values: expected a list (or nested lists) of numbers", values_line)
            else:
                if "key" not in spec:
                    self.fail(f"{at}: file needs key, the name of the array in the .npz", self.kline(inputs, param))
                rel = self.get_str(spec, "file", at)
                key = self.get_str(spec, "key", at)
                path = self.base_dir / rel
                values_line = self.vline(spec, "key")
                try:
                    with np.load(path, allow_pickle=False) as data:
                        names = list(data.files)
                        values = np.asarray(data[key]) if key in names else None
                except FileNotFoundError:
                    self.fail(f"{at}.file: no such file {str(path)!r} (relative paths are relative to the YAML "
                              "file)", self.vline(spec, "file"))
                except (OSError, ValueError) as exc:
                    self.fail(f"{at}.file: cannot read {str(path)!r} as .npz: {exc}", self.vline(spec, "file"))
                if values is None:
                    self.fail(f"{at}.key: {str(path)!r} has no array {key!r} (arrays: "
                              f"{', '.join(sorted(names)) or 'none'})", values_line)
                if values.dtype.kind not in "iuf":
                    self.fail(f"{at}.key: array {key!r} holds {values.dtype}, not numbers", values_line)
            with self.building(values_line):
                net.add_timed_input(pop, param, values, dt)

    def spike_input(self, node, where, size: int, batch_size: int):
        where = f"{where}.spikes"
        spikes = self.check_mapping(
            node["spikes"], where, self.vline(node, "spikes"), "a mapping with times and ids, or with file"
        )
        self.check_keys(spikes, SPIKES_KEYS, where)
        if "file" in spikes:
            extra = [k for k in spikes if k != "file"]
            if extra:
                self.fail(
                    f"{where}: give either file or times/ids/batch, not both", self.kline(spikes, extra[0])
                )
            rel = self.get_str(spikes, "file", where)
            path = self.base_dir / rel
            line = self.vline(spikes, "file")
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: np.asarray(data[k]) for k in data.files}
            except FileNotFoundError:
                self.fail(
                    f"{where}.file: no such file {str(path)!r} "
                    "(relative paths are relative to the YAML file)",
                    line,
                )
            except (OSError, ValueError) as exc:
                self.fail(f"{where}.file: cannot read {str(path)!r} as .npz: {exc}", line)
            missing = [k for k in ("times", "ids") if k not in arrays]
            if missing:
                self.fail(
                    f"{where}.file: {str(path)!r} has no array(s) {', '.join(missing)} "
                    f"(arrays: {', '.join(sorted(arrays)) or 'none'}; "
                    "expected times, ids and optional batch)",
                    line,
                )
            times, ids, batch = arrays["times"], arrays["ids"], arrays.get("batch")
            lines = {"times": line, "ids": line, "batch": line}
        else:
            self.check_keys(spikes, SPIKES_KEYS, where, required=("times", "ids"))
            lines = {k: self.vline(spikes, k) for k in ("times", "ids", "batch")}
            for k in ("times", "ids", "batch"):
                if k in spikes and not isinstance(spikes[k], list):
                    self.fail(
                        f"{where}.{k}: expected a list, got {_type_name(spikes[k])} {_show(spikes[k])}",
                        lines[k],
                    )
            times = _plain(self.unit_value(spikes, "times", where, "ms"))  # values with units: to ms
            try:
                times = np.asarray(times, dtype=float)
            except (TypeError, ValueError):
                self.fail(f"{where}.times: expected a list of numbers (ms)", lines["times"])
            ids = np.asarray(_plain(spikes["ids"]))
            batch = np.asarray(_plain(spikes["batch"])) if "batch" in spikes else None
        times = np.asarray(times)
        if times.dtype.kind not in "iuf" or times.ndim != 1 or not np.all(np.isfinite(times)):
            self.fail(f"{where}.times: expected a 1-d list of finite numbers (ms)", lines["times"])
        if times.size and times.min() < 0:
            self.fail(f"{where}.times: spike times must not be negative, got {times.min()}", lines["times"])
        for key, arr, hi in (("ids", ids, size), ("batch", batch, batch_size)):
            if arr is None:
                continue
            if arr.ndim != 1 or arr.shape != times.shape:
                self.fail(
                    f"{_at(where, key)}: expected {times.size} entries (one per spike time), got {arr.size}",
                    lines[key],
                )
            if arr.size and (
                arr.dtype.kind not in "iuf"
                or not np.all(arr == np.round(arr))
                or arr.min() < 0
                or arr.max() >= hi
            ):
                what = "neuron ids" if key == "ids" else "batch instances"
                self.fail(f"{where}.{key}: {what} must be integers in [0, {hi})", lines[key])
        times = times.astype(np.float64)
        ids = ids.astype(np.int64)
        if batch is None:
            return (times, ids)
        batch = batch.astype(np.int64)
        return [(times[batch == b], ids[batch == b]) for b in range(batch_size)]

    def synapse_part(self, node, key, kind, allowed, where):
        """A projection's weight_update / postsynaptic entry: a model name or a mapping."""
        value = node[key]
        line = self.vline(node, key)
        if isinstance(value, str):
            sub = LineDict(model=value)
            sub.line = line
            sub.key_lines["model"] = sub.value_lines["model"] = line
        else:
            sub = self.check_mapping(value, f"{where}.{key}", line, "a model name or a mapping with model")
        self.check_keys(sub, allowed, f"{where}.{key}", required=("model",))
        mline = self.vline(sub, "model")
        if kind == "postsynaptic" and sub["model"] == "delta" and "delta" not in self.user_models:
            target = self.get_str(sub, "target", f"{where}.{key}", default="v", identifier=True)
            with self.building(self.vline(sub, "target") if "target" in sub else mline):
                model = _builtins.delta_curr(target)
        else:
            if "target" in sub:
                self.fail(
                    f"{where}.{key}.target: only the built-in 'delta' model takes a target",
                    self.kline(sub, "target"),
                )
            model = self.resolve_model(sub["model"], kind, f"{where}.{key}.model", mline)
        params = self.get_mapping(sub, "params", f"{where}.{key}")
        init = self.get_mapping(sub, "init", f"{where}.{key}")
        return sub, model, _plain(params), _plain(init)

    def synapse_units(self, where, wu_node, wu, ps_node, ps, post_model):
        """The params and init of a projection's weight_update and postsynaptic parts with
        values with units converted: a weight takes the unit of the postsynaptic input, which
        the postsynaptic model may take from the target neuron (``exp_curr``: its ``i_syn``)."""
        out = []
        for part, part_node, model, links in (
            ("weight_update", wu_node, wu, {"postsynaptic": ps, "target": post_model}),
            ("postsynaptic", ps_node, ps, {"target": post_model}),
        ):
            for key in ("params", "init"):
                mapping = self.get_mapping(part_node, key, f"{where}.{part}")
                out.append(_plain(self.with_units(mapping, f"{where}.{part}.{key}", model, **links)))
        return out

    def connectivity(self, node, where):
        if "connectivity" not in node or node["connectivity"] is None:
            return "dense"
        value = node["connectivity"]
        line = self.vline(node, "connectivity")
        allowed = (
            "dense, one_to_one, {fixed_probability: p}, {fixed_probability: {p: .., allow_autapses: .., "
            "procedural: ..}}, "
            "{from_list: {pre: [...], post: [...]}}, {condition: .., probability: .., params: {..}}, "
            "{fixed_in_degree: k}, {fixed_out_degree: k}, {fixed_total: n}"
        )
        if isinstance(value, str):
            if value not in ("dense", "all_to_all", "one_to_one"):
                self.fail(f"{where}.connectivity: unknown connectivity {value!r} (allowed: {allowed})", line)
            return value
        if isinstance(value, LineDict) and set(value) & {"condition", "probability"}:
            return self.expression_connectivity(value, where)
        if not isinstance(value, LineDict) or len(value) != 1:
            self.fail(f"{where}.connectivity: expected one of {allowed}, got {_show(value)}", line)
        ((kind, arg),) = value.items()
        aline = self.vline(value, kind)
        if kind == "fixed_probability":
            if isinstance(arg, LineDict):
                self.check_keys(
                    arg, ("p", "allow_autapses", "procedural"), f"{where}.connectivity.fixed_probability",
                    required=("p",)
                )
                p = self.get_number(arg, "p", f"{where}.connectivity.fixed_probability")
                aa = arg.get("allow_autapses", True)
                if not isinstance(aa, bool):
                    self.fail(
                        f"{where}.connectivity.fixed_probability.allow_autapses: expected true or false, "
                        f"got {_show(aa)}",
                        self.vline(arg, "allow_autapses"),
                    )
                procedural = arg.get("procedural", False)
                if not isinstance(procedural, bool):
                    self.fail(f"{where}.connectivity.fixed_probability.procedural: expected true or false, got "
                              f"{_show(procedural)}", self.vline(arg, "procedural"))
                spec = {"fixed_probability": {"p": p, "allow_autapses": aa, "procedural": procedural}}
                aline = self.vline(arg, "p")
            else:
                if isinstance(arg, bool) or not isinstance(arg, (int, float)):
                    self.fail(
                        f"{where}.connectivity.fixed_probability: expected a probability in [0, 1], "
                        f"got {_type_name(arg)} {_show(arg)}",
                        aline,
                    )
                spec = {"fixed_probability": arg}
        elif kind == "from_list":
            arg = self.check_mapping(
                arg, f"{where}.connectivity.from_list", aline, "a mapping with pre and post lists"
            )
            self.check_keys(arg, ("pre", "post"), f"{where}.connectivity.from_list", required=("pre", "post"))
            for side in ("pre", "post"):
                ids = arg[side]
                if not isinstance(ids, list) or any(
                    isinstance(i, bool) or not isinstance(i, int) for i in ids
                ):
                    self.fail(
                        f"{where}.connectivity.from_list.{side}: expected a list of neuron ids (integers)",
                        self.vline(arg, side),
                    )
            spec = {"from_list": {"pre": list(arg["pre"]), "post": list(arg["post"])}}
        elif kind in ("fixed_in_degree", "fixed_out_degree", "fixed_total"):
            count = "n" if kind == "fixed_total" else "k"
            if isinstance(arg, LineDict):
                self.check_keys(arg, (count, "allow_autapses"), f"{where}.connectivity.{kind}", required=(count,))
                aline = self.vline(arg, count)
                spec = {kind: {count: arg[count], "allow_autapses": arg.get("allow_autapses", True)}}
                if not isinstance(spec[kind]["allow_autapses"], bool):
                    self.fail(f"{where}.connectivity.{kind}.allow_autapses: expected true or false, got "
                              f"{_show(spec[kind]['allow_autapses'])}", self.vline(arg, "allow_autapses"))
                number = arg[count]
            else:
                spec, number = {kind: arg}, arg
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                self.fail(f"{where}.connectivity.{kind}: expected a whole number of synapses, got "
                          f"{_type_name(number)} {_show(number)}", aline)
        else:
            self.fail(
                f"{where}.connectivity: unknown connectivity '{kind}' (allowed: {allowed})",
                self.kline(value, kind),
            )
        from .network import make_connectivity

        try:
            return make_connectivity(spec)
        except SpikeforgeError as err:
            self.fail(f"{where}.connectivity: {err}", aline)

    def expression_connectivity(self, value, where):
        """``{condition: .., probability: .., params: {..}, allow_autapses: ..}``; each error
        at the line of its key."""
        from .connectivity import FromExpressions

        where = f"{where}.connectivity"
        self.check_keys(value, ("condition", "probability", "params", "allow_autapses"), where)
        for key in ("condition", "probability"):
            text = value.get(key)
            if key in value and (isinstance(text, bool) or not isinstance(text, (str, int, float))):
                self.fail(f"{where}.{key}: expected an expression, got {_type_name(text)} {_show(text)}",
                          self.vline(value, key))
        params = {}
        if "params" in value:
            node = self.check_mapping(value["params"], f"{where}.params", self.vline(value, "params"))
            params = {k: self.get_number(node, k, f"{where}.params") for k in node}
        autapses = value.get("allow_autapses", True)
        if not isinstance(autapses, bool):
            self.fail(f"{where}.allow_autapses: expected true or false, got {_show(autapses)}",
                      self.vline(value, "allow_autapses"))
        try:
            return FromExpressions(value.get("condition"), value.get("probability"), params, autapses)
        except SpikeforgeError as err:
            match = re.match(r"connectivity\.(\w+)", str(err))
            key = match.group(1) if match and match.group(1) in value else None
            self.fail(f"{where.rsplit('.connectivity', 1)[0]}.{err}", self.vline(value, key) if key
                      else self.vline(value, next(iter(value))))

    def load_projections(self, top, net: Network):
        projs = self.get_mapping(top, "projections", "")
        for name, node in projs.items():
            where = f"projections.{name}"
            line = self.kline(projs, name)
            node = self.check_mapping(
                node,
                where,
                self.vline(projs, name),
                "a mapping with pre, post, weight_update and postsynaptic",
            )
            self.check_keys(
                node, PROJECTION_KEYS, where, required=("pre", "post", "weight_update", "postsynaptic")
            )
            for side in ("pre", "post"):
                pop = self.get_str(node, side, where)
                if pop not in net.populations:
                    self.fail(
                        f"{where}.{side}: unknown population '{pop}' "
                        f"(populations: {', '.join(net.populations)})",
                        self.vline(node, side),
                    )
            conn = self.connectivity(node, where)
            wu_node, wu, wu_params, wu_init = self.synapse_part(
                node, "weight_update", "weight_update", WEIGHT_UPDATE_KEYS, where
            )
            ps_node, ps, ps_params, ps_init = self.synapse_part(
                node, "postsynaptic", "postsynaptic", POSTSYNAPTIC_KEYS, where
            )
            wu_params, wu_init, ps_params, ps_init = self.synapse_units(
                where, wu_node, wu, ps_node, ps, net.populations[node["post"]].model
            )
            delay = self.unit_value(node, "delay", where, "ms") if "delay" in node else 0.0
            if self.is_pathway_delays(delay, wu):
                delay = self.pathway_delays(delay, wu, f"{where}.delay", self.kline(node, "delay"))
            elif is_per_synapse(delay):  # one delay per synapse, in ms (spikeforge.delays)
                delay = _plain(delay)
            elif delay is None or isinstance(delay, bool) or not isinstance(delay, (int, float)):
                self.fail(
                    f"{where}.delay: expected a number of ms, got {_type_name(delay)} {_show(delay)}",
                    self.vline(node, "delay"),
                )

            def locate(err, node=node, wu_node=wu_node, ps_node=ps_node, wu=wu, ps=ps):
                msg = str(err)
                if isinstance(err, ModelError):
                    for part, part_node in ((ps, ps_node), (wu, wu_node)):
                        if err.model == part.name and (err.field or "").split(".")[0] in ("params", "derived"):
                            return self.use_line(part_node, err) or part_node.line
                    if err.model == ps.name:
                        in_def = self.user_model_line(ps.name, err.field, msg)
                        if in_def is not None and (err.field or "").split(".")[0] not in ("params", "init"):
                            return in_def
                        return self.line_in(ps_node, (err.field or "").split("."), msg) or (
                            self.vline(ps_node, "target") if "target" in ps_node else ps_node.line
                        )
                    if err.model == wu.name:
                        in_def = self.user_model_line(wu.name, err.field, msg)  # v_pre, v_post, summed
                        if in_def is not None and (err.field or "").split(".")[0] in ("on_pre", "on_post",
                                                                                       "equations", "summed"):
                            return in_def
                        return self.line_in(wu_node, (err.field or "").split("."), msg) or wu_node.line
                    return None
                if "dynamic: the delay cannot be dynamic" in msg and isinstance(wu_node, LineDict) \
                        and "dynamic" in wu_node:
                    return self.vline(wu_node, "dynamic")
                if re.search(r"weight-update variable", msg):
                    return self.line_in(wu_node, ["init"], msg) or wu_node.line
                path = re.search(r"\bdelay\.(\w+)", msg)  # the delay of a named pathway: the line of its entry
                if path and isinstance(node.get("delay"), LineDict) and path.group(1) in node["delay"]:
                    return self.vline(node["delay"], path.group(1))
                field = re.search(r"connectivity\.(\w+)", msg)  # drawn connectivity: the line of its key
                conn_node = node.get("connectivity")
                if field and isinstance(conn_node, LineDict):
                    for sub in [conn_node] + [v for v in conn_node.values() if isinstance(v, LineDict)]:
                        if field.group(1) in sub:
                            return self.vline(sub, field.group(1))
                return self.hint_line(
                    msg,
                    node,
                    [
                        (r"^[^:]*: max_delay", "max_delay"),
                        (r"\bdelay\b", "delay"),
                        (r"one_to_one|probability|from_list|connectivity", "connectivity"),
                        (r"postsynaptic", "postsynaptic"),
                        (r"presynaptic|, pre\b", "pre"),
                        (r", post\b", "post"),
                    ],
                )

            with self.building(line, locate):
                net.add_projection(
                    name,
                    node["pre"],
                    node["post"],
                    wu,
                    ps,
                    conn,
                    wu_params=wu_params,
                    wu_init=wu_init,
                    ps_params=ps_params,
                    ps_init=ps_init,
                    delay=delay if not isinstance(delay, (int, float)) else float(delay),
                    max_delay=self.delay_limit(node, where),
                    **{f"wu_{k}": v for k, v in self.value_options(wu_node, f"{where}.weight_update").items()},
                    **{f"ps_{k}": v for k, v in self.value_options(ps_node, f"{where}.postsynaptic").items()},
                )

    def delay_limit(self, node, where: str):
        """``max_delay`` (ms) of a projection: the largest per-synapse delay its buffer holds."""
        if node.get("max_delay") is None:
            return None
        value = self.unit_value(node, "max_delay", where, "ms")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{where}.max_delay: expected a number of ms, got {_type_name(value)} {_show(value)}",
                      self.vline(node, "max_delay"))
        return float(value)

    @staticmethod
    def is_pathway_delays(delay, wu) -> bool:
        """Whether a projection's ``delay`` maps the named pathways of ``wu`` to their delays
        (``{up: 1 ms, down: 3 ms}``) rather than giving values per synapse (``{uniform: ...}``)."""
        if not isinstance(delay, LineDict) or not wu.pathways:
            return False
        return set(delay) <= set(wu.pathways) or not set(delay) & {"values", "counts", "uniform", "normal",
                                                                     "expression"}

    def pathway_delays(self, delay: LineDict, wu, where: str, line: int) -> dict:
        """One delay in ms per named pathway (each checked here, with the line of its entry)."""
        for path, value in delay.items():
            if path not in wu.pathways:
                self.fail(f"{where}.{path}: '{path}' is not a pathway of '{wu.name}' (pathways: "
                          f"{', '.join(wu.pathways)})", self.kline(delay, path))
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(f"{where}.{path}: expected a number of ms, got {_type_name(value)} {_show(value)}",
                          self.vline(delay, path))
        missing = [p for p in wu.pathways if p not in delay]
        if missing:
            self.fail(f"{where}: pathway '{missing[0]}' of '{wu.name}' has no delay; give every pathway one "
                      f"(e.g. '{missing[0]}: 0 ms')", line)
        return {p: float(delay[p]) for p in wu.pathways}

    def get_population(self, node, where: str, net: Network) -> str:
        """The ``population`` key of ``node``: the name of a population of ``net``."""
        pop = self.get_str(node, "population", where)
        if pop not in net.populations:
            self.fail(
                f"{where}.population: unknown population '{pop}' (populations: {', '.join(net.populations)})",
                self.vline(node, "population"),
            )
        return pop

    def load_current_sources(self, top, net: Network):
        sources = self.get_mapping(top, "current_sources", "")
        for name, node in sources.items():
            where = f"current_sources.{name}"
            line = self.kline(sources, name)
            node = self.check_mapping(
                node, where, self.vline(sources, name), "a mapping with population and model"
            )
            self.check_keys(node, CURRENT_SOURCE_KEYS, where, required=("population", "model"))
            pop = self.get_population(node, where, net)
            model = self.resolve_model(
                node["model"], "current_source", f"{where}.model", self.vline(node, "model")
            )
            target = net.populations[pop].model
            params = self.with_units(self.get_mapping(node, "params", where), f"{where}.params", model, target=target)
            init = self.with_units(self.get_mapping(node, "init", where), f"{where}.init", model, target=target)

            def locate(err, node=node):
                if isinstance(err, ModelError):
                    return self.use_line(node, err)
                return None

            with self.building(line, locate):
                net.add_current_source(name, pop, model, params=_plain(params), init=_plain(init),
                                       **self.value_options(node, where))

    def load_poisson_inputs(self, top, net: Network):
        inputs = self.get_mapping(top, "poisson_inputs", "")
        for name, node in inputs.items():
            where = f"poisson_inputs.{name}"
            line = self.kline(inputs, name)
            node = self.check_mapping(
                node, where, self.vline(inputs, name), "a mapping with population, target, n, rate and weight"
            )
            required = ("population", "target", "n", "rate", "weight")
            self.check_keys(node, POISSON_INPUT_KEYS, where, required=required)
            pop = self.get_population(node, where, net)
            target = self.get_str(node, "target", where)
            node = _copy_lines(node)  # values with units: rate in Hz, weight in the unit of the target
            node["rate"] = self.unit_value(node, "rate", where, "Hz")
            model = net.populations[pop].model
            if target not in model.vars:
                self.fail(f"{where}.target: population '{pop}' (model '{model.name}') has no variable "
                          f"'{target}' (variables: {', '.join(model.vars) or 'none'})", self.vline(node, "target"))

            def weight_in_target_unit(text, at_line, model=model, target=target, where=where):
                try:
                    return _units.convert_for(text, model, target)
                except _units.UnitError as err:
                    self.fail(f"{where}.weight: {err}", at_line)

            node["weight"] = self.map_quantities(node["weight"], f"{where}.weight", self.vline(node, "weight"),
                                                 weight_in_target_unit)
            n = self.get_int(node, "n", where)
            if n < 1:
                self.fail(f"{where}.n: the number of sources must be a positive integer, got {n!r}",
                          self.vline(node, "n"))
            rate = self.get_number(node, "rate", where)
            if rate < 0:
                self.fail(f"{where}.rate: must not be negative, got {rate!r} Hz", self.vline(node, "rate"))
            weight = self.get_number(node, "weight", where)

            try:
                net.add_poisson_input(name, pop, target, n, rate, weight)
            except NetworkError as err:  # name the field it is about, at its line
                message = str(err).removeprefix(f"poisson input '{name}': ")
                key = "target" if "target" in message or "variable" in message else \
                    "rate" if "n * rate" in message else "n" if message.startswith("n (") else None
                if key is None:
                    self.fail(f"{where}: {message}", line)
                self.fail(f"{where}.{key}: {message}", self.vline(node, key))


def _refuse_non_finite(node, filename: str, where: str = "", line: int = 1) -> None:
    """No value anywhere in a file may be NaN or infinite (``.nan``, ``.inf``): none of
    spikeforge's numbers means anything then. Every key is a name (a string)."""
    if isinstance(node, LineDict):
        for k in node:
            if not isinstance(k, str):
                hint = " (YAML reads on/off/yes/no/true/false as booleans: quote the name)" * isinstance(k, bool)
                raise ConfigError(f"{where or 'top level'}: keys must be names, got {_type_name(k)} {k!r}{hint}",
                                  filename, node.key_lines.get(k, node.line))
        items = ((_at(where, k), v, node.value_lines.get(k, node.line)) for k, v in node.items())
    elif isinstance(node, LineList):
        items = ((f"{where}[{i}]", v, ln) for i, (v, ln) in enumerate(zip(node, node.item_lines, strict=True)))
    else:
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{where or 'value'}: expected a finite number, got {node!r}", filename, line)
        return
    for at, value, value_line in items:
        _refuse_non_finite(value, filename, at, value_line)


def _parse(text: str, filename: str):
    try:
        tree = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
        _refuse_non_finite(tree, filename)
        return tree
    except yaml.MarkedYAMLError as exc:
        problem_mark, context_mark = exc.problem_mark, exc.context_mark
        ctx = exc.context or ""
        # An unclosed bracket is only noticed later; point at the bracket.
        if context_mark is not None and "flow" in ctx:
            line = context_mark.line + 1
            detail = (
                f"{exc.problem} at line {problem_mark.line + 1}, column {problem_mark.column + 1} "
                f"({ctx} opened here; is a bracket unclosed?)"
            )
        else:
            mark = problem_mark or context_mark
            line = mark.line + 1 if mark is not None else None
            detail = exc.problem or ctx or "syntax error"
            if mark is not None:
                detail += f" (column {mark.column + 1})"
            if ctx and context_mark is not None and exc.problem:
                detail += f", {ctx} started at line {context_mark.line + 1}"
        detail = " ".join(str(detail).split())
        raise ConfigError(f"invalid YAML: {detail}", filename, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}", filename, None) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", filename, None) from None


def load_network(
    path_or_text, *, batch_size: int | None = None, filename: str | None = None, seed: int | None = None
) -> tuple[Network, RunConfig]:
    """Build the network a YAML file (a path) or YAML text describes.

    ``path_or_text`` is a path (``os.PathLike``, or a one-line string ending in ``.yaml`` /
    ``.yml`` or naming an existing file) or YAML text. ``filename`` names text in error
    messages (and its folder is where relative ``file:`` paths are looked up; default the
    current directory). ``batch_size`` and ``seed`` override the file's values.
    Returns the network and a :class:`RunConfig`.
    """
    if _is_path_like(path_or_text):
        path = Path(path_or_text)
        shown = filename or str(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("no such file", shown) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the file: {exc}", shown) from None
        base_dir = path.resolve().parent
        stem = path.stem
    elif isinstance(path_or_text, str):
        text = path_or_text
        shown = filename or "<string>"
        base_dir = Path(filename).resolve().parent if filename else Path.cwd()
        stem = Path(filename).stem if filename else ""
    else:
        raise TypeError(f"expected a path or YAML text, got {type(path_or_text).__name__}")
    default_name = stem if stem.isidentifier() and not stem.startswith("_") else "network"
    loader = _Loader(shown, base_dir, default_name)
    return loader.load(_parse(text, shown), batch_size=batch_size, seed=seed)


def load_file(path, *, batch_size: int | None = None, seed: int | None = None) -> tuple[Network, RunConfig]:
    """Build the network of the YAML file at ``path``; see :func:`load_network`."""
    return load_network(Path(path), batch_size=batch_size, seed=seed, filename=str(path))
