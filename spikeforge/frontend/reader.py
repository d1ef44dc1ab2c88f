"""The public YAML reader and validator of spikeforge's front end.

:class:`Reader` reads the trees :func:`spikeforge.frontend.lines.parse` builds and turns every
mistake into a one-line :class:`~spikeforge.errors.ConfigError` naming the file, the field and
the line. A loader for one kind of file (networks: :mod:`spikeforge.frontend.network`;
training jobs: :mod:`spikeforge.training.config`) subclasses it and uses:

* errors and lines: :meth:`Reader.fail`, :meth:`Reader.kline` / :meth:`Reader.vline` (the line of
  a key / of its value), :meth:`Reader.building` (errors of constructors, re-raised at a line);
* typed access: :meth:`Reader.check_mapping`, :meth:`Reader.check_keys`, :meth:`Reader.get_str`,
  :meth:`Reader.get_number`, :meth:`Reader.get_int`, :meth:`Reader.get_mapping`;
* values with units: :meth:`Reader.unit_value`, :meth:`Reader.with_units`;
* models: :meth:`Reader.load_models` (the ``models:`` section), :meth:`Reader.resolve_model`.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import units as _units
from ..errors import ConfigError, ModelError, ResourceError, SpikeforgeError
from ..models.parameters import ParameterWarning
from .lines import LineDict, LineList, copy_lines, dotted, plain, show, type_name
from .models import CODE_FIELDS, EXPRESSION_FIELDS, MODEL_KINDS, builtin_registry

__all__ = ["Reader", "VALUE_KEYS"]

#: How parameters are given besides their values (spikeforge.values): names of dynamic
#: parameters, one value per batch instance, named per-element draws.
VALUE_KEYS = ("dynamic", "batch_values", "draws")


def _quoted_names(message: str) -> list[str]:
    names = re.findall(r"'([A-Za-z_]\w*)'", message)
    for m in re.finditer(r"unknown (?:[\w-]+ )?(?:parameter|variable)\(s\) ([\w, ]+)", message):
        names.extend(n.strip() for n in m.group(1).split(","))
    return names


def _caller_level() -> int:
    """The ``stacklevel`` of a warning issued here that points at the first caller outside
    spikeforge (and contextlib)."""
    package = str(Path(__file__).parent.parent)  # spikeforge/
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename.endswith("contextlib.py")):
        frame, level = frame.f_back, level + 1
    return level


class Reader:
    """Reads one YAML file: ``filename`` names it in messages, ``base_dir`` is where relative
    paths in it are looked up, ``default_name`` names what it describes when it gives no name.
    Models defined in its ``models:`` section (:meth:`load_models`) are kept in ``user_models``."""

    def __init__(self, filename: str, base_dir: Path, default_name: str):
        self.filename = filename
        self.base_dir = base_dir
        self.default_name = default_name
        self.user_models: dict[str, tuple[str, object, LineDict]] = {}  # name -> (kind, model, node)

    # -- errors --------------------------------------------------------------------------
    def fail(self, message: str, line: int | None):
        """Raise the ConfigError ``message`` at ``line`` of the file."""
        raise ConfigError(message, self.filename, line)

    @staticmethod
    def kline(node, key) -> int:
        """The line of ``key`` in ``node`` (else of ``node`` itself)."""
        if isinstance(node, LineDict):
            return node.key_lines.get(key, node.line)
        return getattr(node, "line", 1)

    @staticmethod
    def vline(node, key) -> int:
        """The line of the value of ``key`` in ``node`` (else of ``node`` itself)."""
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
        """``value`` if it is a mapping whose keys are names (null: an empty mapping); else an
        error saying ``where`` expected ``what``."""
        if value is None:
            value = LineDict()
            value.line = line
        if not isinstance(value, LineDict):
            self.fail(f"{where}: expected {what}, got {type_name(value)} {show(value)}", line)
        for k in value:
            if not isinstance(k, str):
                self.fail(f"{where}: keys must be names, got {type_name(k)} {k!r}", self.kline(value, k))
        return value

    def check_keys(self, node: LineDict, allowed, where: str, required=()):
        """Every key of ``node`` is in ``allowed`` (else the closest allowed key is suggested) and
        every key in ``required`` is given, not null."""
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
        """``node[key]``, a non-empty string (with ``identifier``: a valid name); ``default`` when
        the key is absent."""
        if key not in node:
            return default
        v = node[key]
        if not isinstance(v, str) or not v.strip():
            self.fail(
                f"{dotted(where, key)}: expected a name, got {type_name(v)} {show(v)}", self.vline(node, key)
            )
        if identifier and not v.isidentifier():
            self.fail(
                f"{dotted(where, key)}: {v!r} is not a valid name "
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
                f"{dotted(where, key)}: expected a number, got {type_name(v)} {show(v)}", self.vline(node, key)
            )
        if not np.isfinite(float(v) if isinstance(v, float) or abs(v) < 2**1000 else math.inf):  # huge ints too
            self.fail(f"{dotted(where, key)}: expected a finite number, got {v!r}", self.vline(node, key))
        if positive and v <= 0:
            self.fail(f"{dotted(where, key)}: must be positive, got {v!r}", self.vline(node, key))
        return v

    def get_int(self, node, key, where, default=None):
        """``node[key]``, an integer (not a boolean); ``default`` when the key is absent."""
        if key not in node:
            return default
        v = node[key]
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(
                f"{dotted(where, key)}: expected an integer, got {type_name(v)} {show(v)}",
                self.vline(node, key),
            )
        return v

    def get_mapping(self, node, key, where) -> LineDict:
        """``node[key]``, a mapping (see :meth:`check_mapping`); empty when the key is absent."""
        return self.check_mapping(node.get(key), dotted(where, key), self.vline(node, key))

    # -- values with units (spikeforge.units) -------------------------------------------------
    def unit_value(self, node, key, where, unit: str):
        """``node[key]`` in ``unit`` when it is a value with a unit (``"0.02 s"`` -> 20.0 for
        ``ms``); any other value unchanged."""
        value = node[key]
        line = self.vline(node, key)

        def convert(text, at_line):
            try:
                return _units.convert(text, unit, dotted(where, key))
            except _units.UnitError as err:
                self.fail(f"{dotted(where, key)}: {err}", at_line)

        return self.map_quantities(value, dotted(where, key), line, convert)

    def with_units(self, node, where: str, model, **links):
        """A copy of ``node`` (the params or init a population, projection part or current
        source gives ``model``) with every value that has a unit converted to the unit the
        model computes that name in; ``links``: ``target`` (neuron model) and ``postsynaptic``
        for units declared as references (see :func:`spikeforge.units.unit_of`)."""
        if not isinstance(node, LineDict):
            return node
        known = {*model.params, *model.vars}
        out = copy_lines(node)
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
        out = copy_lines(node)
        units = self.check_mapping(node.get("units"), f"{where}.units", self.vline(node, "units"),
                                   "a mapping name -> unit")
        units = copy_lines(units)
        for n, text in units.items():
            if text == 1 and not isinstance(text, bool):
                units[n] = "1"  # dimensionless
            elif not isinstance(text, str):
                self.fail(f"{where}.units.{n}: expected a unit such as ms, mV, nA, nS, pF, Hz, got "
                          f"{type_name(text)} {show(text)}", self.vline(units, n))
        for key in ("params", "vars", "pre_vars", "post_vars"):
            group = node.get(key)
            if not isinstance(group, LineDict):
                continue
            role = "parameter" if key == "params" else "variable"
            converted = copy_lines(group)
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
            out = copy_lines(value)
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

    # -- how values are given besides their numbers (spikeforge.values) ---------------------------
    def value_options(self, node, where: str) -> dict:
        """``dynamic`` (a list of parameter names), ``batch_values`` (parameter -> one number
        per batch instance) and ``draws`` (name -> initialiser) of a population, projection
        part or current source, checked for their shape here (for their meaning by the network)."""
        out = {}
        if node.get("dynamic") is not None:
            value = node["dynamic"]
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self.fail(f"{where}.dynamic: expected a list of parameter names, got {show(value)}",
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
                                      f"instance), got {show(values)}", self.vline(value, name))
                out[key] = plain(value)
        return out

    # -- models -----------------------------------------------------------------------------
    def resolve_model(self, name, kind: str, where: str, line: int):
        """The model of ``kind`` called ``name``: one defined in ``models:``, else a built-in one;
        an unknown name lists the known ones."""
        if not isinstance(name, str):
            self.fail(f"{where}: expected a model name, got {type_name(name)} {show(name)}", line)
        if name in self.user_models:
            ukind, model, _ = self.user_models[name]
            if ukind != kind:
                self.fail(f"{where}: model '{name}' is a {ukind} model, expected a {kind} model", line)
            return model
        registry = builtin_registry(kind)
        if name in registry:
            return registry[name]
        known = sorted(registry) + sorted(n for n, (k, _, _) in self.user_models.items() if k == kind)
        other = [k for k in MODEL_KINDS if k != kind and name in builtin_registry(k)]
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
                        f"{where}.{var}.{flag}: expected true or false, got {show(opts[flag])}",
                        self.vline(opts, flag),
                    )

    def load_models(self, top: LineDict):
        """Define the models of the ``models:`` section of ``top``, by name, in ``user_models``
        (the kind, the model and its node, whose lines later errors about the model point into)."""
        models = self.get_mapping(top, "models", "")
        for name, node in models.items():
            self.load_model(models, name, node)

    def load_model(self, models: LineDict, name: str, node):
        """Define the model ``name`` of the ``models:`` mapping ``models``."""
        where = f"models.{name}"
        line = self.kline(models, name)
        if not name.isidentifier():
            self.fail(f"{where}: {name!r} is not a valid model name (letters, digits and '_')", line)
        clash = [k for k in MODEL_KINDS if name in builtin_registry(k)]
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
                f"{where}.kind: unknown model kind {show(kind)} (allowed: {', '.join(MODEL_KINDS)})",
                self.vline(node, "kind"),
            )
        cls, allowed = MODEL_KINDS[kind]
        self.check_keys(node, ("kind", *allowed), f"{where} ({kind} model)")
        node = self.definition_with_units(node, where, name, kind)
        kwargs = {}
        for key in allowed:
            if key not in node or node[key] is None:
                continue
            kwargs[key] = plain(self.model_field(node, key, where))

        def locate(err, node=node):
            if isinstance(err, ModelError):
                return self.line_in(node, (err.field or "").split("."), str(err))
            return None

        with self.building(line, locate):
            model = cls(name, **kwargs)
        self.user_models[name] = (kind, model, node)

    def model_field(self, node: LineDict, key: str, where: str):
        """The value of field ``key`` of the model definition ``node``, checked for its shape
        (code is text, parameters and variables are mappings or lists...)."""
        value = node[key]
        if key in ("on_pre", "on_post") and isinstance(value, LineDict):  # pathways (on_post: refused)
            for path, text in value.items():
                if not isinstance(text, str):
                    self.fail(f"{where}.{key}.{path}: expected text (the pathway's statements), got "
                              f"{type_name(text)} {show(text)}", self.vline(value, path))
        elif key in CODE_FIELDS:
            self.check_code_field(node, key, where)
        elif key == "integrator":
            if not isinstance(value, str):
                self.fail(
                    f"{dotted(where, key)}: expected a name, got {type_name(value)} {show(value)}",
                    self.vline(node, key),
                )
        elif key == "params":
            if not isinstance(value, (dict, list)):
                self.fail(
                    f"{where}.params: expected a mapping name -> default value (null: required), "
                    f"got {type_name(value)} {show(value)}",
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
                        f"{where}.{key}.{d}: expected an expression, got {type_name(expr)}",
                        self.vline(value, d),
                    )
        elif key in ("vars", "pre_vars", "post_vars"):
            if not isinstance(value, (dict, list)):
                self.fail(
                    f"{dotted(where, key)}: expected a mapping name -> initial value or options, "
                    f"got {type_name(value)} {show(value)}",
                    self.vline(node, key),
                )
            self.check_var_options(value, f"{where}.{key}")
        return value

    def check_code_field(self, node: LineDict, key: str, where: str):
        """A field holding code is text; one holding an expression may also be a number."""
        value = node[key]
        ok = isinstance(value, str) or (
            key in EXPRESSION_FIELDS
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        )
        if not ok:
            what = "an expression (text or a number)" if key in EXPRESSION_FIELDS else "text"
            self.fail(
                f"{dotted(where, key)}: expected {what}, got {type_name(value)} {show(value)}",
                self.vline(node, key),
            )

