"""Numpy reference implementation of spikeforge's random number generator.

Everything here mirrors ``spikeforge/templates/common/philox.h``, the header that generated C++
and CUDA code use, and is tested against it:

* :func:`philox4x32_10` is Random123's Philox-4x32 with 10 rounds, bit for bit.
* :func:`uniform` is bit-identical to ``sf_uniform_f`` / ``sf_uniform_d``.
* :func:`normal` matches ``sf_normal_f`` / ``sf_normal_d`` to about one ulp (the last bit of
  log/sqrt/cos depends on the math library).

* :func:`poisson` draws the same Poisson counts as ``sf_poisson`` (inversion below a mean of 10,
  Hormann's transformed rejection "PTRS" from 10 on).

Stream convention (see the header for the full description)::

    key     = (seed & 0xffffffff, seed >> 32)
    counter = (element, batch, step, stream)
    stream  = (population_id << 16) | call_site                  simulation draws
    stream  = 0x80000000 | (population_id << 16) | var_index     initialisation draws, step = 0

All functions are vectorised: the counter arguments may be scalars or arrays, and broadcast
against each other like any numpy operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "INIT_STREAM_BIT",
    "philox4x32_10",
    "philox_draw",
    "u32_to_uniform_float",
    "u32_to_uniform_double",
    "uniform",
    "normal",
    "stream_id",
    "init_stream_id",
    "u64_to_uniform_double",
    "POISSON_INVERSION_MAX",
    "PoissonParams",
    "poisson_setup",
    "log_factorial",
    "poisson",
]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
INIT_STREAM_BIT = 0x80000000

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_MAX_POPULATION_ID = 0x7FFF
_MAX_SUB_ID = 0xFFFF


def _as_u32(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a uint32 array; values must be integers in [0, 2**32)."""
    a = np.asarray(x)
    if a.dtype == np.uint32:
        return a
    if a.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 0xFFFFFFFF):
        raise ValueError(f"{name} must lie in [0, 2**32)")
    return a.astype(np.uint32)


def philox4x32_10(counter: ArrayLike, key: ArrayLike) -> np.ndarray:
    """Philox-4x32-10 of ``counter`` (shape ``(..., 4)``) under ``key`` (shape ``(..., 2)``).

    The leading dimensions of ``counter`` and ``key`` broadcast.  Returns the four output
    words as a uint32 array of shape ``broadcast(...) + (4,)``.  Identical to Random123's
    ``philox4x32_R(10, ctr, key)`` and to ``sf_philox4x32_10`` in philox.h.
    """
    ctr = _as_u32(counter, "counter")
    k = _as_u32(key, "key")
    if ctr.shape[-1:] != (4,):
        raise ValueError(f"counter must have shape (..., 4), got {ctr.shape}")
    if k.shape[-1:] != (2,):
        raise ValueError(f"key must have shape (..., 2), got {k.shape}")
    shape = np.broadcast_shapes(ctr.shape[:-1], k.shape[:-1])

    # Work in uint64 so that one multiply yields both mulhi and mullo; words stay < 2**32.
    x0, x1, x2, x3 = (np.broadcast_to(ctr[..., i], shape).astype(np.uint64) for i in range(4))
    k0 = np.broadcast_to(k[..., 0], shape).astype(np.uint64)
    k1 = np.broadcast_to(k[..., 1], shape).astype(np.uint64)
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    w0, w1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)

    for r in range(10):
        if r:
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        p0 = m0 * x0  # < 2**64: no overflow
        p1 = m1 * x2
        x0, x1, x2, x3 = (
            (p1 >> _SHIFT32) ^ x1 ^ k0,
            p1 & _MASK32,
            (p0 >> _SHIFT32) ^ x3 ^ k1,
            p0 & _MASK32,
        )
    return np.stack([x0, x1, x2, x3], axis=-1).astype(np.uint32)


def _as_seed(seed: ArrayLike) -> np.ndarray:
    """``seed`` as a uint64 array; values must be integers in [0, 2**64)."""
    a = np.asarray(seed)
    if a.dtype == np.uint64:
        return a
    if a.dtype.kind in "Of" and not isinstance(seed, np.ndarray):
        # Python ints that numpy could not fit in one integer dtype (e.g. [1, 2**64 - 1]).
        flat = np.asarray(seed, dtype=object).ravel().tolist()
        if not all(isinstance(v, (int, np.integer)) for v in flat):
            raise TypeError("seed must be an integer or an array of integers")
        if not all(0 <= int(v) < 2**64 for v in flat):
            raise ValueError("seed must lie in [0, 2**64)")
        return np.array([int(v) for v in flat], dtype=np.uint64).reshape(a.shape)
    if a.dtype.kind not in "iub":
        raise TypeError(f"seed must be an integer, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError("seed must lie in [0, 2**64)")
    return a.astype(np.uint64)


def philox_draw(
    seed: ArrayLike, element: ArrayLike, batch: ArrayLike, step: ArrayLike, stream: ArrayLike
) -> np.ndarray:
    """The four Philox words behind a draw (``sf_philox_draw``): shape ``broadcast + (4,)``.

    ``seed`` (an integer in [0, 2**64), or an array of them) broadcasts with the counters.
    """
    s = _as_seed(seed)
    key = np.stack([(s & _MASK32).astype(np.uint32), (s >> _SHIFT32).astype(np.uint32)], axis=-1)
    parts = np.broadcast_arrays(
        _as_u32(element, "element"),
        _as_u32(batch, "batch"),
        _as_u32(step, "step"),
        _as_u32(stream, "stream"),
    )
    counter = np.stack(parts, axis=-1)
    return philox4x32_10(counter, key)


def u32_to_uniform_float(x: ArrayLike) -> np.ndarray:
    """``sf_u32_to_uniform_float``: ``((x >> 9) + 0.5) * 2**-23`` as float32, in (0, 1)."""
    x = _as_u32(x, "x")
    return ((x >> np.uint32(9)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-23)


def u32_to_uniform_double(x: ArrayLike) -> np.ndarray:
    """``sf_u32_to_uniform_double``: ``(x + 0.5) * 2**-32`` as float64, in (0, 1)."""
    x = _as_u32(x, "x")
    return (x.astype(np.float64) + 0.5) * 2.0**-32


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def uniform(
    seed: ArrayLike,
    element: ArrayLike,
    batch: ArrayLike,
    step: ArrayLike,
    stream: ArrayLike,
    dtype=np.float32,
) -> np.ndarray:
    """Uniform numbers in (0, 1), bit-identical to ``sf_uniform_f`` (float32) / ``sf_uniform_d``."""
    dt = _check_dtype(dtype)
    w = philox_draw(seed, element, batch, step, stream)[..., 0]
    return u32_to_uniform_float(w) if dt == np.float32 else u32_to_uniform_double(w)


def normal(
    seed: ArrayLike,
    element: ArrayLike,
    batch: ArrayLike,
    step: ArrayLike,
    stream: ArrayLike,
    dtype=np.float32,
) -> np.ndarray:
    """Standard normal numbers matching ``sf_normal_f`` (float32) / ``sf_normal_d`` (float64).

    Box-Muller on words 0 and 1: ``sqrt(-2 ln u0) * cos(2 pi u1)``, computed in ``dtype``.
    Agrees with the compiled header to about one ulp (libm's last bit may differ).
    """
    dt = _check_dtype(dtype)
    w = philox_draw(seed, element, batch, step, stream)
    if dt == np.float32:
        u0 = u32_to_uniform_float(w[..., 0])
        u1 = u32_to_uniform_float(w[..., 1])
        two_pi = np.float32(2.0 * np.pi)
        return np.sqrt(np.float32(-2.0) * np.log(u0)) * np.cos(two_pi * u1)
    u0 = u32_to_uniform_double(w[..., 0])
    u1 = u32_to_uniform_double(w[..., 1])
    return np.sqrt(-2.0 * np.log(u0)) * np.cos(2.0 * np.pi * u1)


def _check_ids(population_id: ArrayLike, sub: ArrayLike, sub_name: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(population_id)
    s = np.asarray(sub)
    for a, name, hi in ((p, "population_id", _MAX_POPULATION_ID), (s, sub_name, _MAX_SUB_ID)):
        if a.dtype.kind not in "iub":
            raise TypeError(f"{name} must be an integer, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > hi):
            raise ValueError(f"{name} must lie in [0, {hi}], got {a.min()}..{a.max()}")
    return p.astype(np.uint32), s.astype(np.uint32)


def stream_id(population_id: ArrayLike, call_site: ArrayLike):
    """Stream word of a simulation draw: ``(population_id << 16) | call_site``.

    ``population_id`` in [0, 0x7fff], ``call_site`` in [0, 0xffff].  Returns an ``int`` for
    scalar arguments, a uint32 array otherwise.
    """
    p, c = _check_ids(population_id, call_site, "call_site")
    out = (p << np.uint32(16)) | c
    return int(out) if out.ndim == 0 else out


def init_stream_id(population_id: ArrayLike, var_index: ArrayLike):
    """Stream word of an initialisation draw: ``0x80000000 | (population_id << 16) | var_index``.

    Initialisation draws use ``step = 0``.  Same ranges and return type as :func:`stream_id`.
    """
    p, v = _check_ids(population_id, var_index, "var_index")
    out = np.uint32(INIT_STREAM_BIT) | (p << np.uint32(16)) | v
    return int(out) if out.ndim == 0 else out


# -- Poisson counts (sf_poisson) ------------------------------------------------------------

#: Below this mean ``sf_poisson`` inverts the distribution function; from it on, PTRS.
POISSON_INVERSION_MAX = 10.0
#: Entries of the inversion's table of thresholds (``SF_POISSON_TABLE``; at most 47 are used).
POISSON_TABLE = 48
#: The threshold of the table's unused entries (``SF_POISSON_NEVER``): above every 52-bit integer.
POISSON_NEVER = 2**52

# log(k!) for k < 16, the same decimal literals as the table in philox.h.
_LOG_FACTORIAL_TABLE = np.array([float(x) for x in (
    "0.0", "0.0", "0.693147180559945309417", "1.79175946922805500081",
    "3.17805383034794561965", "4.78749174278204599425", "6.57925121201010099506",
    "8.52516136106541430017", "10.6046029027452502284", "12.8018274800814696112",
    "15.1044125730755152952", "17.5023078458738858393", "19.9872144956618861495",
    "22.5521638531234228856", "25.1912211827386815001", "27.8992713838408915661")])
_HALF_LOG_2PI = float("0.91893853320467274178")
_TWO_M52 = 2.0**-52


def u64_to_uniform_double(hi: ArrayLike, lo: ArrayLike) -> np.ndarray:
    """``sf_u64_to_uniform_double``: ``(m + 0.5) * 2**-52``, ``m`` the top 52 bits of ``hi:lo``."""
    h = _as_u32(hi, "hi").astype(np.uint64)
    lo64 = _as_u32(lo, "lo").astype(np.uint64)
    m = (h << np.uint64(20)) | (lo64 >> np.uint64(12))
    return (m.astype(np.float64) + 0.5) * _TWO_M52


@dataclass(frozen=True)
class PoissonParams:
    """The constants of one mean (``sf_poisson_params``), computed as ``sf_poisson_setup`` does,
    and ``cdf``: the distribution function the inversion's thresholds come from."""

    lam: float
    exp_minus_lambda: float
    log_lambda: float
    b: float
    a: float
    inv_alpha: float
    v_r: float
    cdf: tuple[float, ...]  # F_0, F_1, ... until F stops growing (empty from POISSON_INVERSION_MAX on)
    threshold: tuple[int, ...]  # POISSON_TABLE values: poisson_threshold(F_k), then POISSON_NEVER

    def c_initializer(self) -> str:
        """The struct's value as a C initialiser of exact (round-trip) double and integer literals."""
        values = (self.lam, self.exp_minus_lambda, self.log_lambda, self.b, self.a, self.inv_alpha, self.v_r)
        return ("{" + ", ".join(repr(float(v)) for v in values) + ", {"
                + ", ".join(f"{t}ull" for t in self.threshold) + "}}")


def poisson_threshold(F: float) -> int:
    """``sf_poisson_threshold``: the smallest integer ``m`` with ``(m + 0.5) * 2**-52 > F``."""
    x = F * 2.0**52  # exact, and so is x - floor(x)
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def poisson_setup(lam: float) -> PoissonParams:
    """The constants ``sf_poisson`` needs for mean ``lam`` (a finite number >= 0)."""
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"a Poisson mean must be a finite number >= 0, got {lam!r}")
    b = 0.931 + 2.53 * math.sqrt(lam)
    a = -0.059 + 0.02483 * b
    cdf: list[float] = []
    if lam < POISSON_INVERSION_MAX:
        pk = math.exp(-lam)
        cdf.append(pk)
        for k in range(1, POISSON_TABLE):
            pk = pk * lam / float(k)
            nxt = cdf[-1] + pk
            if nxt == cdf[-1]:  # F stopped growing: the tail is below double resolution
                break
            cdf.append(nxt)
        else:  # pragma: no cover - cannot happen below a mean of 10 (at most 47 terms)
            raise AssertionError(f"the inversion table is too short for the mean {lam!r}")
    threshold = [poisson_threshold(F) for F in cdf] + [POISSON_NEVER] * (POISSON_TABLE - len(cdf))
    return PoissonParams(lam, math.exp(-lam), math.log(lam) if lam > 0.0 else 0.0, b, a,
                         1.1239 + 1.1328 / (b - 3.4), 0.9277 - 3.6224 / (b - 2.0), tuple(cdf), tuple(threshold))


def log_factorial(k: ArrayLike) -> np.ndarray:
    """``sf_log_factorial``: log(k!) of whole numbers ``k >= 0`` given as float64."""
    k = np.asarray(k, dtype=np.float64)
    small = k < 16.0
    x = np.where(small, 17.0, k + 1.0)
    r = 1.0 / x
    r2 = r * r
    series = r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 -
                  r2 * (1.0 / 1188.0 - r2 * (691.0 / 360360.0))))))
    big = (x - 0.5) * np.log(x) - x + _HALF_LOG_2PI + series
    return np.where(small, _LOG_FACTORIAL_TABLE[np.where(small, k, 0).astype(np.int64)], big)


def poisson(
    seed: ArrayLike, element: ArrayLike, batch: ArrayLike, step: ArrayLike, owner_id: int, lam: float
) -> np.ndarray:
    """Poisson(``lam``) counts identical to ``sf_poisson`` (int64 array, broadcast shape).

    Draw ``(element, batch, step)`` uses the Philox calls with stream ``stream_id(owner_id, j)``,
    attempt ``j = 0, 1, ...``; see philox.h for the layout and the two methods.
    """
    p = poisson_setup(lam)
    e, b, s = np.broadcast_arrays(np.asarray(element), np.asarray(batch), np.asarray(step))
    shape = e.shape
    e, b, s = e.ravel(), b.ravel(), s.ravel()
    out = np.zeros(e.size, dtype=np.int64)
    if p.lam < POISSON_INVERSION_MAX:
        # the smallest k with u <= F_k, or len(cdf) where u is above every F (the search in
        # doubles; the header compares integers against thresholds, which is the same)
        w = philox_draw(seed, e, b, s, stream_id(owner_id, 0))
        u = u64_to_uniform_double(w[:, 0], w[:, 1])
        out[:] = np.searchsorted(np.array(p.cdf), u, side="left")
        return out.reshape(shape)
    todo = np.arange(e.size)
    for j in range(0x10000):
        if not todo.size:
            break
        w = philox_draw(seed, e[todo], b[todo], s[todo], stream_id(owner_id, j))
        U = u64_to_uniform_double(w[:, 0], w[:, 1]) - 0.5
        V = u64_to_uniform_double(w[:, 2], w[:, 3])
        us = 0.5 - np.abs(U)
        k = np.floor((2.0 * p.a / us + p.b) * U + p.lam + 0.43)
        accept = (us >= 0.07) & (V <= p.v_r)
        rest = ~accept & ~((k < 0.0) | ((us < 0.013) & (V > us)))
        with np.errstate(divide="ignore", invalid="ignore"):
            kk = np.where(rest, k, 0.0)
            lhs = np.log(V * p.inv_alpha / (p.a / (us * us) + p.b))
            rhs = -p.lam + kk * p.log_lambda - log_factorial(kk)
        accept |= rest & (lhs <= rhs)
        out[todo[accept]] = k[accept].astype(np.int64)
        todo = todo[~accept]
    out[todo] = math.floor(p.lam)
    return out.reshape(shape)
