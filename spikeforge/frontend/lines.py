"""YAML that remembers its lines: the first half of spikeforge's front end.

:func:`parse` reads YAML text with a safe loader into :class:`LineDict` and :class:`LineList`,
which remember the line of every key, value and item, so that a reader
(:class:`spikeforge.frontend.reader.Reader`) can say where in a file a mistake is. The loader
refuses duplicate keys, keys that are not names and non-finite numbers, and reads every float
spelling (``1e-3``) as a number.
"""

from __future__ import annotations

import math
import re

import yaml

from ..errors import ConfigError

__all__ = ["LineDict", "LineList", "LineLoader", "parse", "plain", "copy_lines", "dotted", "type_name", "show"]


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


class LineLoader(yaml.SafeLoader):
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


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
# YAML 1.1 (PyYAML) reads 1e-3 as a string; read every float spelling as a float.
LineLoader.add_implicit_resolver(
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


def plain(x):
    """LineDict/LineList -> dict/list, recursively (what the model constructors get)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x


def copy_lines(node: LineDict) -> LineDict:
    """A shallow copy of ``node`` that keeps its line numbers."""
    out = LineDict(node)
    out.line, out.owner_line = node.line, node.owner_line
    out.key_lines, out.value_lines = dict(node.key_lines), dict(node.value_lines)
    out.value_styles = dict(node.value_styles)
    return out


# -- showing values in messages --------------------------------------------------------------


def dotted(where: str, key) -> str:
    """The path of ``key`` inside ``where`` as messages write it (``populations.exc`` + ``size``)."""
    return f"{where}.{key}" if where else str(key)


def type_name(x) -> str:
    """What a value read from YAML is, in words (``a number``, ``a mapping``, ``null``...)."""
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


def show(x) -> str:
    """A value read from YAML as a message quotes it (plain Python syntax)."""
    return repr(plain(x))


def _refuse_non_finite(node, filename: str, where: str = "", line: int = 1) -> None:
    """No value anywhere in a file may be NaN or infinite (``.nan``, ``.inf``): none of
    spikeforge's numbers means anything then. Every key is a name (a string)."""
    if isinstance(node, LineDict):
        for k in node:
            if not isinstance(k, str):
                hint = " (YAML reads on/off/yes/no/true/false as booleans: quote the name)" * isinstance(k, bool)
                raise ConfigError(f"{where or 'top level'}: keys must be names, got {type_name(k)} {k!r}{hint}",
                                  filename, node.key_lines.get(k, node.line))
        items = ((dotted(where, k), v, node.value_lines.get(k, node.line)) for k, v in node.items())
    elif isinstance(node, LineList):
        items = ((f"{where}[{i}]", v, ln) for i, (v, ln) in enumerate(zip(node, node.item_lines, strict=True)))
    else:
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{where or 'value'}: expected a finite number, got {node!r}", filename, line)
        return
    for at, value, value_line in items:
        _refuse_non_finite(value, filename, at, value_line)


def parse(text: str, filename: str):
    """YAML ``text`` as :class:`LineDict` / :class:`LineList` trees; every syntax error, duplicate
    key, key that is not a name and non-finite number is a ConfigError naming ``filename`` and
    the line."""
    try:
        tree = yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
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
