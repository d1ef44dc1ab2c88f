"""Values with units: ``"20 ms"``, ``"0.02 s"``, ``"10 nS"``, ``"5 Hz"``, ``"1 uF/cm2"``.

A unit is parsed by an allow-list (SI prefixes on a few base symbols, joined by ``*`` and
``/`` with integer powers), never evaluated. A value with a unit is converted to the unit
its model declares for the name it is given to, after checking that both have the same
dimension; the conversion is exact in decimal (``0.1 ms`` gives the same float as ``0.1``).

Where a model declares no unit for a name, spikeforge's base units apply only to what is a
time by the time-constant rule (:mod:`spikeforge.models.parameters`): such a name takes ms.
Any other name without a declared unit refuses a value with a unit: which unit the model
computes in cannot be guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "BASE_UNITS",
    "Unit",
    "UnitError",
    "convert",
    "convert_for",
    "unit_of",
    "describe",
    "parse_unit",
    "split_quantity",
    "unit_reference",
]


class UnitError(ValueError):
    """A unit that cannot be read, or a value of the wrong dimension (one line, no location:
    the caller adds the file, line and field)."""


# Dimensions are exponents of (metre, kilogram, second, ampere).
_DIMS = ("m", "kg", "s", "A")


@dataclass(frozen=True)
class Unit:
    """A unit: its size in SI units (exact) and its dimension."""

    scale: Fraction
    dims: tuple[int, int, int, int]

    def __mul__(self, other: Unit) -> Unit:
        return Unit(self.scale * other.scale, tuple(a + b for a, b in zip(self.dims, other.dims, strict=True)))

    def __truediv__(self, other: Unit) -> Unit:
        return Unit(self.scale / other.scale, tuple(a - b for a, b in zip(self.dims, other.dims, strict=True)))

    def __pow__(self, n: int) -> Unit:
        return Unit(self.scale**n, tuple(a * n for a in self.dims))


_ONE = Unit(Fraction(1), (0, 0, 0, 0))
_SYMBOLS = {
    "s": Unit(Fraction(1), (0, 0, 1, 0)),  # second
    "Hz": Unit(Fraction(1), (0, 0, -1, 0)),  # hertz
    "V": Unit(Fraction(1), (2, 1, -3, -1)),  # volt
    "A": Unit(Fraction(1), (0, 0, 0, 1)),  # ampere
    "S": Unit(Fraction(1), (-2, -1, 3, 2)),  # siemens
    "F": Unit(Fraction(1), (-2, -1, 4, 2)),  # farad
    "Ohm": Unit(Fraction(1), (2, 1, -3, -2)),  # ohm
    "ohm": Unit(Fraction(1), (2, 1, -3, -2)),
    "Ω": Unit(Fraction(1), (2, 1, -3, -2)),
    "m": Unit(Fraction(1), (1, 0, 0, 0)),  # metre (for areas: uF/cm2, mS/cm2)
}
_PREFIXES = {"f": -15, "p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "k": 3, "M": 6, "G": 9}


def _unit_table() -> dict[str, Unit]:
    table = dict(_SYMBOLS)
    for prefix, power in _PREFIXES.items():
        for symbol, unit in _SYMBOLS.items():
            name = prefix + symbol
            assert name not in table, name  # every spelling means one unit
            table[name] = Unit(unit.scale * Fraction(10) ** power, unit.dims)
    table["cm"] = Unit(Fraction(1, 100), (1, 0, 0, 0))  # centi: for the centimetre only
    return table


#: Every unit name that is understood, e.g. ``ms``, ``mV``, ``nA``, ``uS``, ``pF``, ``MOhm``, ``kHz``.
KNOWN_UNITS = _unit_table()

#: Named dimensions: (what it is called, spikeforge's base unit for it or None).
_NAMED = {
    (0, 0, 1, 0): ("a time", "ms"),
    (2, 1, -3, -1): ("a voltage", "mV"),
    (0, 0, 0, 1): ("a current", "nA"),
    (-2, -1, 3, 2): ("a conductance", "nS"),
    (-2, -1, 4, 2): ("a capacitance", "pF"),
    (2, 1, -3, -2): ("a resistance", "MOhm"),
    (0, 0, -1, 0): ("a frequency", "Hz"),
    (0, 0, 0, 0): ("dimensionless", None),
    (1, 0, 0, 0): ("a length", None),
    (2, 0, 0, 0): ("an area", None),
}
#: spikeforge's base unit of each dimension that has one (the unit a built-in model uses).
BASE_UNITS = {name: base for name, base in _NAMED.values() if base is not None}

_TOKEN = re.compile(
    r"\s*(?:(?P<op>[*/·])|(?P<one>1)(?![\d.])|(?P<name>[A-Za-zµμΩ_]+)(?:(?:\^|\*\*)?(?P<exp>[-+]?\d+))?)"
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"\s*(?P<number>{_NUMBER})\s*(?P<unit>[A-Za-zµμΩ][A-Za-zµμΩ_0-9^*/·\s-]*?)\s*")


def parse_unit(text: str) -> Unit:
    """The unit ``text`` names, e.g. ``ms``, ``mV/ms``, ``uF/cm2``, ``1/ms``, ``nS*mV``;
    ``1`` alone means dimensionless. Raises :class:`UnitError`."""
    if not isinstance(text, str) or not text.strip():
        raise UnitError(f"expected a unit such as ms, mV, nA, nS, pF, Hz, got {text!r}")
    pos, unit, op, expect_term = 0, None, "*", True
    text = text.rstrip()
    if len(text) > 64:
        raise UnitError(f"cannot read the unit {text[:20]!r}...: longer than 64 characters")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnitError(f"cannot read the unit {text!r} at {text[pos:].strip()!r}")
        pos = m.end()
        if m.group("op"):
            if expect_term:
                raise UnitError(f"cannot read the unit {text!r}: '{m.group('op')}' without a unit before it")
            op, expect_term = "/" if m.group("op") == "/" else "*", True
            continue
        if not expect_term:
            raise UnitError(
                f"cannot read the unit {text!r}: two units need '*' or '/' between them (e.g. 'mV/ms', 'nS*mV')"
            )
        if m.group("one"):
            if unit is not None:
                raise UnitError(f"cannot read the unit {text!r}: '1' may only start a unit, as in '1/ms'")
            term = _ONE
        else:
            name = m.group("name")
            if name not in KNOWN_UNITS:
                inside = f" in {text.strip()!r}" if text.strip() != name else ""
                raise UnitError(f"unknown unit {name!r}{inside} ({_known_hint()})")
            power = int(m.group("exp") or 1)
            if not 0 < abs(power) <= 4:
                raise UnitError(f"cannot read the unit {text!r}: powers are -4 to 4 and not 0, got {power}")
            term = KNOWN_UNITS[name] ** power
        unit = term if unit is None else (unit * term if op == "*" else unit / term)
        expect_term = False
    if unit is None or expect_term:
        raise UnitError(f"cannot read the unit {text!r}: it ends without a unit")
    return unit


def _known_hint() -> str:
    return "units: s, V, A, S, F, Ohm, Hz, m with prefixes f p n u m k M G, e.g. ms, mV, nA, nS, pF, MOhm, Hz"


def split_quantity(text) -> tuple[str, str] | None:
    """``(number, unit)`` when ``text`` is a number followed by a unit (``"20 ms"``,
    ``"-50mV"``, ``"1e-3 s"``); None for anything else (numbers, expressions, names)."""
    if not isinstance(text, str):
        return None
    m = _QUANTITY.fullmatch(text)
    if m is None:
        return None
    return m.group("number"), m.group("unit")


def is_bare_unit(text) -> bool:
    """True when ``text`` is a unit with no number (``"ms"``): a value that lost its number."""
    if not isinstance(text, str) or not text.strip() or text.strip()[0].isdigit():
        return False
    try:
        parse_unit(text)
    except UnitError:
        return False
    return True


def describe(unit: Unit) -> str:
    """What a dimension is called: ``a time``, ``a voltage``, ... or its SI composition."""
    named = _NAMED.get(unit.dims)
    if named is not None:
        return named[0]
    for num, (num_name, _) in _NAMED.items():  # a quotient of two named dimensions: "a voltage per time"
        for den, (den_name, _) in _NAMED.items():
            if any(den) and den != (0, 0, -1, 0) and tuple(a - b for a, b in zip(num, den, strict=True)) == unit.dims:
                return f"{num_name} per {den_name.split(' ', 1)[1]}"
    parts = [f"{d}^{e}" if e != 1 else d for d, e in zip(_DIMS, unit.dims, strict=True) if e]
    return "of dimension " + " ".join(parts)


def convert(text: str, target: str, what: str) -> float:
    """The value of the quantity ``text`` (e.g. ``"0.02 s"``) in the unit ``target`` (e.g.
    ``"ms"``): 20.0. ``what`` names the target in errors (``parameter 'tau_m' of model 'lif'``).

    Raises :class:`UnitError` for an unreadable unit or another dimension."""
    split = split_quantity(text)
    if split is None:
        raise UnitError(f"expected a number with a unit such as '20 ms', got {text!r}")
    number, unit_text = split
    given = parse_unit(unit_text)
    expected = parse_unit(target)
    if given.dims != expected.dims:
        raise UnitError(
            f"{text.strip()!r} is {describe(given)}, but {what} is {describe(expected)} ({target})"
        )
    exponent = re.search(r"[eE]([-+]?\d+)$", number)
    if exponent is not None and abs(int(exponent.group(1))) > 400:  # beyond any float: no huge exact numbers
        raise UnitError(f"{text.strip()!r} is out of range")
    try:
        return float(Fraction(number) * given.scale / expected.scale)
    except OverflowError:
        raise UnitError(f"{text.strip()!r} is out of range in {target}") from None


# -- declared units of a model ----------------------------------------------------------------

#: A weight-update model's reference to the unit of its projection's postsynaptic input.
POST_INPUT_REFERENCE = "post_input"
#: Prefix of a postsynaptic or current-source model's reference to a target neuron name's unit.
TARGET_PREFIX = "target."


def unit_reference(kind: str, text: str) -> str | None:
    """The name a declared unit refers to (``post_input``, ``target.i_syn``), or None when
    ``text`` is a unit. A reference is allowed in weight-update models (``post_input``: the
    unit of what the postsynaptic model receives) and in postsynaptic and current-source
    models (``target.NAME``: the unit of the target neuron's ``NAME``, e.g. ``i_syn``)."""
    text = text.strip()
    if kind == "weight_update" and text == POST_INPUT_REFERENCE:
        return text
    if kind in ("postsynaptic", "current_source") and text.startswith(TARGET_PREFIX):
        name = text[len(TARGET_PREFIX):]
        if name.isidentifier():
            return text
    return None


def check_declaration(kind: str, text) -> None:
    """Raise :class:`UnitError` unless ``text`` is a unit or a reference ``kind`` allows."""
    if not isinstance(text, str):
        raise UnitError(f"expected a unit such as ms, mV, nA, nS, pF, Hz, got {text!r}")
    if unit_reference(kind, text) is not None:
        return
    try:
        parse_unit(text)
    except UnitError as err:
        refs = {
            "weight_update": f"; or '{POST_INPUT_REFERENCE}' for the unit of the postsynaptic input",
            "postsynaptic": "; or 'target.NAME' for the unit of the target neuron's NAME (e.g. target.i_syn)",
            "current_source": "; or 'target.NAME' for the unit of the target neuron's NAME (e.g. target.i_syn)",
        }.get(kind, "")
        raise UnitError(f"{err}{refs}") from None


def base_unit(unit_text: str) -> str | None:
    """spikeforge's base unit for the dimension of ``unit_text`` (``"0.02 s"``'s unit ``s`` ->
    ``ms``), or None for a dimension without one."""
    named = _NAMED.get(parse_unit(unit_text).dims)
    return None if named is None else named[1]


def _role(model, name: str) -> str:
    if name in model.params:
        what = "parameter"
    elif name in getattr(model, "unit_inputs", ()):
        what = "input"
    else:
        what = "variable"
    return f"{what} '{name}' of {model.kind.replace('_', '-')} model '{model.name}'"


def unit_of(model, name: str, *, target=None, postsynaptic=None) -> str:
    """The unit in which ``model`` computes ``name``: its declaration (``model.units``), with
    ``post_input`` resolved through ``postsynaptic`` (the projection's postsynaptic model) and
    ``target.NAME`` through ``target`` (the neuron model receiving the input); else ``ms`` for
    a time by the time-constant rule or the refractory period. Raises :class:`UnitError`
    saying why there is none."""
    from .models.parameters import time_constants

    declared = model.units.get(name)
    what = _role(model, name)
    if declared is None:
        refractory = getattr(model, "refractory", None)
        if name in model.params and (
            name in time_constants(model) or (getattr(refractory, "is_Symbol", False) and refractory.name == name)
        ):
            return "ms"
        raise UnitError(
            f"{what} declares no unit, so a value with a unit cannot be converted: give a plain number "
            f"or declare the unit in the model (units: {{{name}: ...}})"
        )
    if declared == POST_INPUT_REFERENCE:
        if postsynaptic is None:
            raise UnitError(f"{what} has the unit of the postsynaptic input, and there is no postsynaptic model here")
        try:
            return unit_of(postsynaptic, "in_syn", target=target)
        except UnitError as err:
            raise UnitError(f"{what} has the unit of the postsynaptic input, but {err}") from None
    if declared.startswith(TARGET_PREFIX):
        ref = declared[len(TARGET_PREFIX):]
        if target is None:
            raise UnitError(f"{what} has the unit of the target neuron's '{ref}', and there is no target neuron here")
        try:
            return unit_of(target, ref)
        except UnitError as err:
            raise UnitError(f"{what} has the unit of the target neuron's '{ref}', but {err}") from None
    return declared


def convert_for(text: str, model, name: str, *, target=None, postsynaptic=None) -> float:
    """The quantity ``text`` given to ``model``'s ``name``, in the unit the model computes it in."""
    unit = unit_of(model, name, target=target, postsynaptic=postsynaptic)
    return convert(text, unit, _role(model, name))
