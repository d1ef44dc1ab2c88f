"""Networks described in YAML files: ``load_network(path_or_text) -> (Network, RunConfig)``.

The stable entry point of the network schema. The code lives in :mod:`spikeforge.frontend`:
the line-aware YAML reader (``frontend.lines``, ``frontend.reader``) and the network schema
on it (``frontend.network``, ``frontend.projections``, ``frontend.inputs``).

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

from .frontend.inputs import CURRENT_SOURCE_KEYS, POISSON_INPUT_KEYS, SPIKES_KEYS, TIMED_INPUT_KEYS
from .frontend.models import MODEL_KINDS
from .frontend.network import BACKENDS, POPULATION_KEYS, TOP_LEVEL_KEYS, RunConfig, load_file, load_network
from .frontend.projections import POSTSYNAPTIC_KEYS, PROJECTION_KEYS, WEIGHT_UPDATE_KEYS
from .frontend.reader import VALUE_KEYS

__all__ = [
    "RunConfig", "load_network", "load_file", "TOP_LEVEL_KEYS", "MODEL_KINDS", "BACKENDS", "VALUE_KEYS",
    "POPULATION_KEYS", "TIMED_INPUT_KEYS", "PROJECTION_KEYS", "WEIGHT_UPDATE_KEYS", "POSTSYNAPTIC_KEYS",
    "CURRENT_SOURCE_KEYS", "POISSON_INPUT_KEYS", "SPIKES_KEYS",
]
