"""Per-synapse (dendritic) delays of a projection.

A projection's ``delay`` is either one number of ms for every synapse (the fast path: the
presynaptic spike queue holds each spike for that many steps) or one value per synapse,
given like any per-synapse value: a list or array, ``{values: [...]}``, ``{values, counts}``,
``{uniform: [lo, hi]}``, ``{normal: [mean, sd]}`` or an expression of ``i``, ``j``, ``N``,
``N_pre``, ``N_post``, ``dt``, ``rand()`` and ``randn()`` (``"1 + 4*rand()"``), all in ms.

Each value is rounded to the nearest whole step, ``d_k = floor(delay_k / dt + 1/2)``
(Brian2's convention for delays; an exact half rounds up). The synapse kernel runs the
``on_pre`` code when the spike reaches the synapses (at once, or after the pathway's
projection-wide delay) and adds what the synapse delivers (``post_input``) to a
dendritic ring buffer ``[slot][batch][post]`` at slot ``(step + d_k) % slots``; the
postsynaptic neuron's update of the next step moves the slot that has come due into the
projection's input and clears it. A synapse of delay ``d`` steps therefore delivers exactly
when a projection-wide delay of ``d`` steps would.

The buffer has ``max_delay / dt + 1`` slots (``max_delay`` in ms; by default the largest
drawn delay). The delays are an array loaded at run time, so new values of the same
largest delay never recompile; they cannot change between runs.

Random draws of a delay expression use the projection's initialisation streams from
:data:`DELAY_STREAM_BASE` (apart from its weight-update and postsynaptic values).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ModelError, NetworkError
from .models.evaluate import ElementScope, parse_value, per_element
from .models.synapse import DELIVER_NAME
from .models.variables import Expression, Normal, Uniform, make_initializer

#: First initialisation-stream index of the draws of per-synapse delay expressions.
DELAY_STREAM_BASE = 0x4000
#: Delay slots are uint32 in the generated code.
MAX_DELAY_STEPS = 2**32 - 2
_DICT_FORMS = ({"values"}, {"values", "counts"}, {"uniform"}, {"normal"}, {"expression"})


def is_per_synapse(delay) -> bool:
    """Whether ``delay`` gives one value per synapse (rather than one number of ms)."""
    if isinstance(delay, (str, list, tuple, np.ndarray)):
        return True
    return isinstance(delay, dict) and set(delay) in _DICT_FORMS


def check_delay_options(per_synapse, max_delay, weight_update, wu_dynamic, where: str) -> None:
    """What a per-synapse delay needs: ``max_delay`` only with per-synapse delays, a weight
    update that delivers input (``post_input``: that is what waits), and no ``dynamic`` delay."""
    dynamic = [wu_dynamic] if isinstance(wu_dynamic, str) else list(wu_dynamic or [])
    if "delay" in dynamic and "delay" not in weight_update.params:
        raise NetworkError(f"{where}: dynamic: the delay cannot be dynamic; per-synapse delays are fixed when the "
                           "network is built (build a new network to change them)")
    if per_synapse is None:
        if max_delay is not None:
            raise NetworkError(f"{where}: max_delay sets the buffer of per-synapse delays, but delay is one number "
                               "for the whole projection; give delay per synapse or leave max_delay out")
        return
    if not any(st.target == DELIVER_NAME for st in weight_update.on_pre):
        raise NetworkError(f"{where}: delay: per-synapse delays hold back the input a synapse delivers "
                           f"('{DELIVER_NAME} += ...'), and the on_pre code of '{weight_update.name}' delivers "
                           "none; give one delay in ms for the projection")


def delay_steps_of(values_ms: np.ndarray, dt: float) -> np.ndarray:
    """Delays in ms -> whole steps, rounded to the nearest step (an exact half up)."""
    return np.floor(np.asarray(values_ms, dtype=np.float64) / dt + 0.5)


def synapse_delays(value, max_delay, *, where: str, n_synapses: int, scope_of, dt: float, seed: int,
                   procedural: bool) -> tuple[np.ndarray, int]:
    """The delay of every synapse in whole steps and the number of slots of the dendritic
    buffer (the largest allowed delay + 1). ``scope_of(base)`` makes the synapses'
    :class:`ElementScope` with its random draws from stream ``base``."""
    fld = "delay"
    if procedural:
        raise NetworkError(f"{where}: delay: per-synapse delays need stored connectivity; procedural connectivity "
                           "keeps nothing per synapse (give one delay in ms for the projection)")
    if isinstance(value, dict) and set(value) == {"values"}:
        value = value["values"]
    try:
        init = make_initializer(value, where, fld)
        if isinstance(init, (Uniform, Normal)):
            init = Expression(f"{init.low!r} + {init.high - init.low!r}*rand()" if isinstance(init, Uniform)
                              else f"{init.mean!r} + {init.sd!r}*randn()")
        scope: ElementScope = scope_of(DELAY_STREAM_BASE)
        expr = None
        if isinstance(init, Expression):
            try:
                expr = parse_value(init.source, scope, set(), where, fld)
            except ModelError as err:
                raise NetworkError(f"{where}: delay: expected a number of ms or one value per synapse (an "
                                   f"expression of i, j, N, rand()...); {_message(err)}") from None
        env = scope.env()
        env["dt"] = float(dt)
        ms = per_element(init, scope, env, seed, where, fld, expr, label="")
    except ModelError as err:
        raise NetworkError(f"{where}: delay: {_message(err)}") from None
    ms = np.broadcast_to(ms, (n_synapses,))
    if ms.size and ms.min() < 0:
        k = int(np.argmin(ms))
        raise NetworkError(f"{where}: delay: {ms[k]:g} ms of synapse {k} is negative; delays must be >= 0 ms")
    steps = delay_steps_of(ms, dt)
    if max_delay is None:
        limit = int(steps.max()) if steps.size else 0
        if limit > MAX_DELAY_STEPS:
            raise NetworkError(f"{where}: delay: {ms.max():g} ms is {limit} steps, more than the {MAX_DELAY_STEPS} "
                               "a dendritic delay buffer can hold")
    else:
        if isinstance(max_delay, bool) or not isinstance(max_delay, (int, float, np.integer, np.floating)) \
                or not math.isfinite(max_delay) or max_delay < 0:
            raise NetworkError(f"{where}: max_delay must be a number of ms >= 0, got {max_delay!r}")
        limit = int(delay_steps_of(max_delay, dt))
        if limit > MAX_DELAY_STEPS:
            raise NetworkError(f"{where}: max_delay {max_delay:g} ms is {limit} steps, more than the "
                               f"{MAX_DELAY_STEPS} a dendritic delay buffer can hold")
        over = np.flatnonzero(steps > limit)
        if over.size:
            k = int(over[np.argmax(steps[over])])
            raise NetworkError(
                f"{where}: delay: {ms[k]:g} ms ({int(steps[k])} steps) of synapse {k} is above max_delay = "
                f"{max_delay:g} ms ({limit} steps), the limit of the dendritic delay buffer ({over.size} of "
                f"{n_synapses} synapses are above it); raise max_delay or shorten the delays")
    dtype = np.uint8 if limit < 2**8 else np.uint32
    return steps.astype(dtype), limit + 1


def _message(err: ModelError) -> str:
    """A model error's text without its "model ..., field ...: " prefix (the caller names them)."""
    text = str(err)
    if err.model is not None:
        prefix = f"model '{err.model}'" + (f", field '{err.field}'" if err.field is not None else "") + ": "
        text = text.removeprefix(prefix)
    return text


__all__ = ["DELAY_STREAM_BASE", "MAX_DELAY_STEPS", "check_delay_options", "delay_steps_of", "is_per_synapse",
           "synapse_delays"]
