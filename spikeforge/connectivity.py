"""Sparse connectivity drawn in generated C++.

Every sparse kind except ``from_list`` is drawn by a small C++ builder rendered from
``templates/cpu/connectivity.cpp.j2``, compiled and cached like a model
(:func:`spikeforge.runtime.build.build_and_load`) and called through ctypes. It returns the
ragged rows (``row_start``, post indices; uint32) the backends use.

Kinds (docs/models.md, "Connectivity"):

* ``fixed_probability`` -- each pair with probability p; the gaps between a row's synapses
  are Geometric(p), so the work is proportional to the synapses, not to N_pre * N_post.
* ``condition`` / ``probability`` -- expressions of ``i`` (pre), ``j`` (post), ``N_pre``,
  ``N_post`` and the spec's own ``params``; the condition selects pairs, the probability
  (in [0, 1]) draws each selected pair. Evaluated for every pair.
* ``fixed_in_degree`` / ``fixed_out_degree`` -- exactly K distinct partners for each post /
  pre neuron (Floyd's sampling without replacement).
* ``fixed_total`` -- exactly n distinct pairs, uniform over all sets of n pairs (row counts
  hypergeometric, then each row as a fixed out-degree).

Random numbers: Philox with key = the network's seed and counter = (element, 0, draw,
stream), stream = ``init_stream_id(projection id, CONNECTIVITY_STREAM_INDEX)``; element is
the row (the column for fixed in-degree; a fixed total's row counts use batch word 1). Rows never share a counter, so
the result does not depend on the thread count.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import __version__, rng
from .errors import ModelError, NetworkError

#: The initialisation-stream index of connectivity draws (variables use 0, 1, 2...,
#: value expressions 0x8000 and up).
CONNECTIVITY_STREAM_INDEX = 0x7FFF
#: Names an expression may use besides its params.
INDEX_NAMES = ("i", "j", "N_pre", "N_post")

KIND_FIXED_PROBABILITY, KIND_EXPRESSION, KIND_FIXED_OUT_DEGREE, KIND_FIXED_IN_DEGREE, KIND_FIXED_TOTAL = range(5)

_MAX_INDEX = 2**32 - 1


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= _MAX_INDEX:
        raise NetworkError(f"{what} must be a whole number in [0, {_MAX_INDEX}], got {value!r}")
    return int(value)


def _autapses(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise NetworkError(f"{what}.allow_autapses: expected true or false, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class FixedInDegree:
    """Each postsynaptic neuron gets exactly ``k`` distinct presynaptic partners.

    Examples:
        >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, FixedInDegree, Network
        >>> net = Network("demo", dt=0.1)
        >>> exc = net.add_population("exc", 100, LIF)
        >>> ee = net.add_projection("ee", "exc", "exc", STATIC_CONSTANT, DELTA_CURR,
        ...                         FixedInDegree(10, allow_autapses=False), wu_params={"w": 0.1})
        >>> ee.connectivity.k
        10
    """

    k: int
    allow_autapses: bool = True
    kind = "sparse"
    key = "fixed_in_degree"

    def __post_init__(self):
        object.__setattr__(self, "k", _count(self.k, "connectivity.fixed_in_degree"))
        _autapses(self.allow_autapses, "connectivity.fixed_in_degree")


@dataclass(frozen=True)
class FixedOutDegree:
    """Each presynaptic neuron gets exactly ``k`` distinct postsynaptic partners.

    Examples:
        >>> from spikeforge import FixedOutDegree
        >>> FixedOutDegree(10).k
        10
    """

    k: int
    allow_autapses: bool = True
    kind = "sparse"
    key = "fixed_out_degree"

    def __post_init__(self):
        object.__setattr__(self, "k", _count(self.k, "connectivity.fixed_out_degree"))
        _autapses(self.allow_autapses, "connectivity.fixed_out_degree")


@dataclass(frozen=True)
class FixedTotal:
    """Exactly ``n`` distinct synapses, every set of n pairs equally likely.

    Examples:
        >>> from spikeforge import FixedTotal
        >>> FixedTotal(500).n
        500
    """

    n: int
    allow_autapses: bool = True
    kind = "sparse"
    key = "fixed_total"

    def __post_init__(self):
        object.__setattr__(self, "n", _count(self.n, "connectivity.fixed_total"))
        _autapses(self.allow_autapses, "connectivity.fixed_total")


@dataclass(frozen=True)
class FromExpressions:
    """A synapse i -> j where ``condition`` holds, drawn with probability ``probability``
    (either may be left out, not both). ``params``: named numbers the expressions use."""

    condition: str | None = None
    probability: str | float | None = None
    params: tuple = ()  # ((name, value), ...), as given
    allow_autapses: bool = True
    kind = "sparse"
    _parsed: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        params = dict(self.params.items() if isinstance(self.params, dict) else self.params)
        object.__setattr__(self, "params", tuple(params.items()))
        _autapses(self.allow_autapses, "connectivity")
        if self.condition is None and self.probability is None:
            raise NetworkError("connectivity: give a condition, a probability or both")
        for name, value in params.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or name in INDEX_NAMES:
                raise NetworkError(f"connectivity.params: {name!r} cannot name a parameter (identifiers other "
                                   f"than {', '.join(INDEX_NAMES)})")
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise NetworkError(f"connectivity.params.{name}: expected a finite number, got {value!r}")
        object.__setattr__(self, "_parsed", (self._parse("condition", True), self._parse("probability", False)))

    def _parse(self, field_name: str, condition: bool):
        from .models.expressions import ParseContext, parse_expression

        text = getattr(self, field_name)
        if text is None:
            return None
        known = set(INDEX_NAMES) | {n for n, _ in self.params}
        try:
            return parse_expression(text, ParseContext("connectivity", known, random_allowed=False), field_name,
                                    condition=condition)
        except ModelError as exc:
            msg = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
            raise NetworkError(f"connectivity.{field_name}: {msg}") from None

    def source(self) -> str:
        """The C++ builder of these expressions (stable text: same spec, same source)."""
        from .codegen.cprint import CPrinter

        printer = CPrinter("double")
        cond, prob = self._parsed
        return render_builder(
            condition=printer.doprint(cond) if cond is not None else "",
            condition_source=str(self.condition or ""),
            probability=printer.doprint(prob) if prob is not None else "",
            probability_source=str(self.probability if self.probability is not None else ""),
            param_names=[n for n, _ in self.params],
        )


def render_builder(condition="", condition_source="", probability="", probability_source="", param_names=()):
    from .codegen.render import environment, philox_header

    template = environment().get_template("cpu/connectivity.cpp.j2")
    return template.render(version=__version__, philox=philox_header(), condition=condition,
                           condition_source=condition_source, probability=probability,
                           probability_source=probability_source, param_names=list(param_names))


@lru_cache(maxsize=32)
def _builder(source: str):
    """The compiled builder of ``source`` (compiled once, then from the cache)."""
    from .runtime.build import build_and_load

    lib, _ = build_and_load(source, name="connectivity", describe="connectivity builder")
    lib.sf_conn_draw.restype = ctypes.c_void_p
    lib.sf_conn_draw.argtypes = [
        ctypes.c_int, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_double,
        ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_double),
    ]
    lib.sf_conn_copy.restype = None
    lib.sf_conn_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.sf_conn_free.restype = None
    lib.sf_conn_free.argtypes = [ctypes.c_void_p]
    return lib


def expected_synapses(conn, n_pre: int, n_post: int) -> float | None:
    """The synapse count known before drawing (None: only a counting pass can tell)."""
    from .network import FixedProbability

    if isinstance(conn, FixedProbability):
        return float(conn.p) * n_pre * n_post
    if isinstance(conn, FixedOutDegree):
        return float(conn.k) * n_pre
    if isinstance(conn, FixedInDegree):
        return float(conn.k) * n_post
    if isinstance(conn, FixedTotal):
        return float(conn.n)
    return None


def check_sizes(conn, n_pre: int, n_post: int, where: str):
    """Degrees and totals that cannot be drawn without repeating a pair."""
    def allowed(n):  # partners per neuron, less itself without autapses
        return max(0, n - (0 if conn.allow_autapses else 1))

    if isinstance(conn, FixedInDegree) and conn.k > allowed(n_pre):
        raise NetworkError(f"{where}: connectivity.fixed_in_degree {conn.k} is more than the {allowed(n_pre)} "
                           "distinct presynaptic neurons each postsynaptic neuron can have (no pair is drawn twice)")
    if isinstance(conn, FixedOutDegree) and conn.k > allowed(n_post):
        raise NetworkError(f"{where}: connectivity.fixed_out_degree {conn.k} is more than the {allowed(n_post)} "
                           "distinct postsynaptic neurons each presynaptic neuron can have (no pair is drawn twice)")
    if isinstance(conn, FixedTotal):
        pairs = n_pre * n_post - (0 if conn.allow_autapses else min(n_pre, n_post))
        if conn.n > pairs:
            raise NetworkError(f"{where}: connectivity.fixed_total {conn.n} is more than the {pairs} distinct "
                               "pairs there are")


def draw_rows(conn, n_pre: int, n_post: int, seed: int, projection_id: int, where: str, *,
              threads: int | None = None, check_memory=None) -> tuple[np.ndarray, np.ndarray]:
    """The synapses of ``conn`` as (row_start (n_pre + 1,), post (S,)), both uint32.

    ``check_memory(n_synapses)`` is called with the expected (or, for expressions, the
    counted) synapse count before anything of that size is allocated."""
    from .network import FixedProbability

    check_sizes(conn, n_pre, n_post, where)
    params = np.zeros(1, dtype=np.float64)
    p, count, source = 0.0, 0, None
    if isinstance(conn, FixedProbability):
        kind, p = KIND_FIXED_PROBABILITY, float(conn.p)
    elif isinstance(conn, FromExpressions):
        kind, source = KIND_EXPRESSION, conn.source()
        if conn.params:
            params = np.array([float(v) for _, v in conn.params], dtype=np.float64)
    elif isinstance(conn, FixedOutDegree):
        kind, count = KIND_FIXED_OUT_DEGREE, conn.k
    elif isinstance(conn, FixedInDegree):
        kind, count = KIND_FIXED_IN_DEGREE, conn.k
    elif isinstance(conn, FixedTotal):
        kind, count = KIND_FIXED_TOTAL, conn.n
    else:
        raise TypeError(f"not a drawn connectivity: {conn!r}")
    lib = _builder(source if source is not None else render_builder())
    stream = int(rng.init_stream_id(projection_id, CONNECTIVITY_STREAM_INDEX))
    args = (kind, n_pre, n_post, int(seed), stream, p, count, int(conn.allow_autapses),
            params.ctypes.data, int(threads or 0))

    def call(count_only: bool):
        total, bad, bad_value = ctypes.c_int64(), (ctypes.c_uint32 * 2)(), ctypes.c_double()
        handle = lib.sf_conn_draw(*args, int(count_only), ctypes.byref(total), bad, ctypes.byref(bad_value))
        if not handle:
            raise MemoryError(f"{where}: out of memory while drawing the connectivity")
        if total.value < 0:
            lib.sf_conn_free(handle)
            raise NetworkError(f"{where}: connectivity.probability '{conn.probability}' is {bad_value.value:g} "
                               f"for i = {bad[0]}, j = {bad[1]}; a probability must be in [0, 1]")
        return handle, total.value

    expected = expected_synapses(conn, n_pre, n_post)
    if expected is None:  # expressions: a counting pass first
        handle, expected = call(True)
        lib.sf_conn_free(handle)
    if check_memory is not None:
        check_memory(float(expected))
    handle, total = call(False)
    if total > _MAX_INDEX:
        lib.sf_conn_free(handle)
        raise NetworkError(f"{where}: {total} synapses, more than the {_MAX_INDEX} a projection can index")
    row_start = np.empty(n_pre + 1, dtype=np.uint32)
    post = np.empty(total, dtype=np.uint32)
    lib.sf_conn_copy(handle, row_start.ctypes.data, post.ctypes.data)
    return row_start, post


def procedural_info(projection, seed: int) -> dict:
    """What a synapse kernel needs to draw a procedural row again (templates/common/procedural_row.j2):
    the same seed, stream and gap formula as the builder's fixed_probability."""
    p = float(projection.connectivity.p)
    return {"conn_seed": int(seed), "conn_p": p,
            "conn_stream": int(rng.init_stream_id(projection.id, CONNECTIVITY_STREAM_INDEX)),
            "conn_inv_log_q": repr(1.0 / math.log1p(-p)) if p < 1.0 else "0.0",
            "conn_autapses": bool(projection.connectivity.allow_autapses)}


__all__ = ["FixedInDegree", "FixedOutDegree", "FixedTotal", "FromExpressions", "draw_rows", "check_sizes",
           "expected_synapses", "procedural_info", "CONNECTIVITY_STREAM_INDEX"]
