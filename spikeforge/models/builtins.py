"""The built-in model library. Units: ms, mV, nA-like currents (whatever ``i_syn`` is in).

Each model declares the units it computes in (``units=``), so YAML values with units are
converted and checked (``tau_m: 0.02 s``); a weight's unit is the unit of the postsynaptic
input (``post_input``), which ``exp_curr`` takes from the target's ``i_syn`` (nA for ``lif``)
and ``delta`` from its target variable (mV for ``lif``'s ``v``)."""

from __future__ import annotations

from ..errors import ModelError
from .neuron import NeuronModel, SpikeSourceArrayModel
from .synapse import CurrentSourceModel, PostsynapticModel, WeightUpdateModel
from .variables import Var

# -- neurons ----------------------------------------------------------------------------

LIF = NeuronModel.deferred(
    "lif",
    params={"tau_m": 20.0, "v_rest": -65.0, "v_reset": -65.0, "v_th": -50.0, "r_m": 1.0, "t_ref": 0.0},
    vars={"v": -65.0},
    equations="dv/dt = (v_rest - v + r_m * i_syn) / tau_m  (unless refractory)",
    threshold="v > v_th",
    reset="v = v_reset",
    refractory="t_ref",
    units={"tau_m": "ms", "v_rest": "mV", "v_reset": "mV", "v_th": "mV", "r_m": "MOhm", "t_ref": "ms", "v": "mV",
           "i_syn": "nA"},
)

ALIF = NeuronModel.deferred(
    "alif",
    params={"tau_m": 20.0, "tau_a": 2000.0, "v_th": 0.6, "beta": 0.0174, "r_m": 1.0, "t_ref": 0.0},
    vars={"v": 0.0, "a": 0.0},
    equations="""
        dv/dt = (r_m * i_syn - v) / tau_m  (unless refractory)
        da/dt = -a / tau_a
    """,
    threshold="v > v_th + beta * a",
    reset="v -= v_th; a += 1",
    refractory="t_ref",
    units={"tau_m": "ms", "tau_a": "ms", "t_ref": "ms"},  # voltages in the units of v_th (e-prop: v_th = 0.6)
)

LIF_SUBTRACTIVE = NeuronModel.deferred(
    "lif_subtractive",
    params={"tau_m": 20.0, "v_th": 0.6, "r_m": 1.0},
    vars={"v": 0.0},
    equations="dv/dt = (r_m * i_syn - v) / tau_m",
    threshold="v > v_th",
    reset="v -= v_th",
    units={"tau_m": "ms"},
)
"""LIF with reset by subtraction and no refractoriness: the hidden neuron of e-prop's LSNNs."""

QIF = NeuronModel.deferred(
    "qif",
    params={"tau_m": 10.0, "v_th": 100.0, "v_reset": -100.0, "r_m": 1.0},
    vars={"v": 0.0},
    equations="dv/dt = (v**2 + r_m * i_syn) / tau_m",
    threshold="v > v_th",
    reset="v = v_reset",
    units={"tau_m": "ms"},  # v and i_syn dimensionless (the normal form)
)
"""The quadratic integrate-and-fire neuron in its normal form; with v_th = -v_reset large it
approaches the theta neuron (the event backend solves it in that phase form)."""

IZHIKEVICH = NeuronModel.deferred(
    "izhikevich",
    params={"a": 0.02, "b": 0.2, "c": -65.0, "d": 8.0},
    vars={"v": -65.0, "u": -13.0},
    equations="""
        dv/dt = 0.04 * v**2 + 5 * v + 140 - u + i_syn
        du/dt = a * (b * v - u)
    """,
    threshold="v >= 30",
    reset="v = c; u += d",
    units={"a": "1/ms", "c": "mV", "v": "mV"},  # u, b, d and i_syn in Izhikevich's mixed units: plain numbers
)

LEAKY_INTEGRATOR = NeuronModel.deferred(
    "leaky_integrator",
    params={"tau_m": 20.0, "bias": 0.0},
    vars={"v": 0.0},
    equations="dv/dt = (bias - v + i_syn) / tau_m",
    units={"tau_m": "ms"},
)

LEAKY_READOUT = NeuronModel.deferred(
    "leaky_readout",
    params={"tau_m": 20.0, "bias": 0.0},
    vars={"v": 0.0},
    derived={"kappa": "exp(-dt / tau_m)"},
    sim_code="v = kappa * v + (1 - kappa) * (bias + i_syn)",
    units={"tau_m": "ms"},
)
"""A leaky integrator written as its exact one-step update, ``v_t = kappa v_{t-1} + (1 - kappa)
(bias + i_syn)`` with ``kappa = exp(-dt / tau_m)``: the readout of e-prop networks (its
arithmetic is the one the training kernels' gradients assume)."""

VALUE_INPUT = NeuronModel.deferred(
    "value_input",
    params={"x": 0.0},
    vars={"value": 0.0},
    sim_code="value = x",
    threshold="value != 0",
)
"""An input whose value each step is the parameter ``x`` (give it a timed input): a neuron with
a value other than 0 sends it (``value_pre`` in the synapse code; see ``SCALED``), 0 sends
nothing. Spike trains are values 0 and 1; latency or rate encodings any real numbers."""

POISSON = NeuronModel.deferred(
    "poisson",
    params={},
    vars={"rate": 10.0},  # Hz, per neuron and batch instance
    threshold="rand_uniform() < rate * dt / 1000",
    units={"rate": "Hz"},
)

SPIKE_SOURCE_ARRAY = SpikeSourceArrayModel.deferred()

# -- postsynaptic -----------------------------------------------------------------------

EXP_CURR = PostsynapticModel.deferred(
    "exp_curr",
    params={"tau_syn": 5.0},
    vars={"x": 0.0},
    equations="dx/dt = -x / tau_syn",
    apply="x += in_syn; i_syn += x",
    units={"tau_syn": "ms", "x": "target.i_syn", "in_syn": "target.i_syn"},
)


def delta_curr(target: str = "v") -> PostsynapticModel:
    """Each delivered input jumps the neuron variable ``target`` (default ``v``) at once."""
    if not isinstance(target, str) or not target.isidentifier():
        raise ModelError(f"target must be a variable name, got {target!r}", "delta", "target")
    return PostsynapticModel.deferred("delta", apply=f"{target} += in_syn", units={"in_syn": f"target.{target}"})


DELTA_CURR = delta_curr()

ONE_STEP_CURR = PostsynapticModel.deferred("one_step_curr", apply="i_syn += in_syn", units={"in_syn": "target.i_syn"})
"""The input delivered in a step is the target's ``i_syn`` for the next step only (the sum of the
weights of the spikes that arrived): the synaptic input of e-prop networks."""

# -- weight update ----------------------------------------------------------------------

STATIC = WeightUpdateModel.deferred("static", vars={"w": 0.0}, on_pre="post_input += w", units={"w": "post_input"})

SCALED = WeightUpdateModel.deferred("scaled", vars={"w": 0.0}, on_pre="post_input += w * value_pre")
"""A weight times the presynaptic ``value`` (of a ``value_input`` population): real-valued inputs."""

STATIC_CONSTANT = WeightUpdateModel.deferred("static_constant", params={"w": None}, on_pre="post_input += w",
                                    units={"w": "post_input"})

def stdp(reduce: str = "mean", batched: bool = False) -> WeightUpdateModel:
    """Pair-based additive STDP with exponential pre/post traces.

    The weight ``w`` is shared across the batch by default and each step the changes
    made by the batch instances are combined by ``reduce`` (``sum``, ``mean``, ``max``);
    ``batched=True`` gives every instance its own weights instead.
    """
    name = "stdp" if (reduce, batched) == ("mean", False) else ("stdp_batched" if batched else f"stdp_{reduce}")
    return WeightUpdateModel.deferred(
        name,
        params={
            "tau_plus": 20.0,
            "tau_minus": 20.0,
            "a_plus": 0.01,
            "a_minus": 0.012,
            "w_min": 0.0,
            "w_max": 1.0,
        },
        vars=[Var("w", batched=batched, reduce=None if batched else reduce)],
        pre_vars={"x_pre": 0.0},
        post_vars={"x_post": 0.0},
        pre_equations="dx_pre/dt = -x_pre / tau_plus",
        post_equations="dx_post/dt = -x_post / tau_minus",
        on_pre_spike="x_pre += 1",
        on_post_spike="x_post += 1",
        on_pre="""
            post_input += w
            w = clip(w - a_minus * x_post, w_min, w_max)   # depression
        """,
        on_post="w = clip(w + a_plus * x_pre, w_min, w_max)   # potentiation",
        units={"tau_plus": "ms", "tau_minus": "ms", **dict.fromkeys(("w", "w_min", "w_max", "a_plus", "a_minus"),
                                                                     "post_input")},
    )


STDP = stdp()

# -- current sources --------------------------------------------------------------------

DC = CurrentSourceModel.deferred("dc", params={"amp": None}, current="amp", units={"amp": "target.i_syn"})
NOISE = CurrentSourceModel.deferred("noise", params={"mean": 0.0, "sd": 1.0}, current="mean + sd * rand_normal()",
                           units={"mean": "target.i_syn", "sd": "target.i_syn"})

NEURONS = {m.name: m for m in (LIF, LIF_SUBTRACTIVE, QIF, ALIF, IZHIKEVICH, LEAKY_INTEGRATOR, POISSON,
                               SPIKE_SOURCE_ARRAY, VALUE_INPUT, LEAKY_READOUT)}
POSTSYNAPTIC = {"exp_curr": EXP_CURR, "delta": DELTA_CURR, "one_step_curr": ONE_STEP_CURR}
WEIGHT_UPDATES = {m.name: m for m in (STATIC, STATIC_CONSTANT, STDP, SCALED)}
CURRENT_SOURCES = {m.name: m for m in (DC, NOISE)}
