"""Tests of spikeforge.config: YAML files -> Network, with errors that name file and line."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikeforge.config import RunConfig, load_file, load_network
from spikeforge.errors import ConfigError
from spikeforge.models import EXP_CURR, LIF, STATIC_CONSTANT, STDP, Uniform
from spikeforge.network import FixedProbability, Network

REPO = Path(__file__).resolve().parents[1]
CUBA = REPO / "examples" / "cuba.yaml"
STDP_EXAMPLE = REPO / "examples" / "stdp_minibatch.yaml"
HAS_CXX = bool(os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"))


def load(text: str, **kw):
    return load_network(textwrap.dedent(text), filename="net.yaml", **kw)


def config_error(text: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, **kw)
    return info.value


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line of ``text`` (dedented) containing ``fragment``."""
    for i, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if fragment in line:
            return i
    raise AssertionError(f"{fragment!r} not in text")


BASE = textwrap.dedent(
    """\
    name: t
    populations:
      a:
        size: 10
        model: lif
    """
)


def more(text: str) -> str:
    """YAML to append to BASE, written in a function body: drop the body's 4-space indent."""
    return "".join(line[4:] if line.startswith("    ") else line for line in text.splitlines(True))


# -- the examples ------------------------------------------------------------------------


def cuba_python_api() -> Network:
    """examples/CUBA.py of Brian2, written with the Python API (what cuba.yaml must give)."""
    net = Network("cuba", dt=0.1, batch_size=1, seed=1234)
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, r_m=1.0, t_ref=5.0)
    for name, size in (("exc", 3200), ("inh", 800)):
        net.add_population(name, size, LIF, params=lif, init={"v": Uniform(-60.0, -50.0)}, record_spikes=True)
    for pre, w, tau in (("exc", 1.62, 5.0), ("inh", -9.0, 10.0)):
        for post in ("exc", "inh"):
            net.add_projection(
                f"{pre}_{post}",
                pre,
                post,
                STATIC_CONSTANT,
                EXP_CURR,
                FixedProbability(0.02),
                wu_params={"w": w},
                ps_params={"tau_syn": tau},
            )
    return net


def test_cuba_yaml_is_the_python_api_network():
    net, cfg = load_file(CUBA)
    ref = cuba_python_api()
    assert (net.name, net.dt, net.seed, net.batch_size, net.precision) == (
        ref.name,
        ref.dt,
        ref.seed,
        ref.batch_size,
        ref.precision,
    )
    assert list(net.populations) == list(ref.populations) == ["exc", "inh"]
    for name, pop in net.populations.items():
        r = ref.populations[name]
        assert pop.size == r.size
        assert pop.model is LIF
        assert pop.params == r.params
        assert pop.vars == r.vars
        assert pop.record_spikes
    assert list(net.projections) == list(ref.projections)
    for name, proj in net.projections.items():
        r = ref.projections[name]
        assert (proj.pre.name, proj.post.name) == (r.pre.name, r.post.name)
        assert proj.connectivity == r.connectivity == FixedProbability(0.02)
        assert proj.connectivity.kind == "sparse"
        assert proj.delay_steps == r.delay_steps == 0
        assert proj.weight_update is STATIC_CONSTANT and proj.postsynaptic is EXP_CURR
        assert proj.wu_params == r.wu_params and proj.ps_params == r.ps_params
        # same seed and projection order: the very same synapses
        assert np.array_equal(proj.rows.row_start, r.rows.row_start)
        assert np.array_equal(proj.rows.post_ind, r.rows.post_ind)
    assert cfg == RunConfig(duration=1000.0, record_spikes=["exc", "inh"], backend="cpu", filename=str(CUBA))


def test_overrides_and_text_input():
    net, _ = load_file(CUBA, batch_size=3, seed=7)
    assert net.batch_size == 3 and net.seed == 7
    text = CUBA.read_text()
    net2, _ = load_network(text)  # YAML text, not a path
    assert net2.populations["exc"].size == 3200
    with pytest.raises(ConfigError, match=r"^<string>:\d+: "):
        load_network(text.replace("model: lif", "model: nope"))


def test_stdp_example_defines_its_own_model():
    net, cfg = load_file(STDP_EXAMPLE)
    assert net.batch_size == 8
    proj = net.projections["input_output"]
    assert proj.weight_update is STDP
    assert proj.wu_vars["w"].init == Uniform(0.3, 0.7)
    assert proj.wu_vars["w"].reduce == "mean" and not proj.wu_vars["w"].batched
    assert proj.connectivity.kind == "dense"
    assert net.populations["input"].vars["rate"].init.value == 20.0
    assert cfg.record_spikes == ["input", "output"]
    # the user-defined variant with a summed batch reduction loads and can be swapped in
    text = STDP_EXAMPLE.read_text().replace("model: stdp  ", "model: stdp_sum  ")
    net2, _ = load_network(text, filename=str(STDP_EXAMPLE))
    wu = net2.projections["input_output"].weight_update
    assert wu.name == "stdp_sum" and wu.vars["w"].reduce == "sum"


def test_user_models_of_every_kind():
    net, cfg = load(
        """\
        dt: 1e-1
        duration: 50
        models:
          my_lif:
            kind: neuron
            params: {tau_m: 20.0, v_th: null}
            derived: {alpha: "exp(-dt / tau_m)"}
            vars: {v: -65.0, a: {init: 0.0, batched: true}}
            equations: |
              dv/dt = (-65 - v + i_syn) / tau_m  (unless refractory)
              da/dt = -a / tau_m
            threshold: v > v_th
            reset: v = -65
            refractory: 2.0
            integrator: exact
          my_syn:
            kind: postsynaptic
            params: {tau: 3.0}
            vars: {g: 0.0}
            equations: dg/dt = -g / tau
            apply: |
              g += in_syn
              i_syn += g
          my_wu:
            kind: weight_update
            vars: {w: {init: 0.5}}
            on_pre: post_input += w
          my_cs:
            kind: current_source
            params: {amp: 1.0}
            current: amp
        populations:
          n:
            size: 5
            model: my_lif
            params: {v_th: -50.0}
            record: [spikes, v]
        projections:
          nn:
            pre: n
            post: n
            connectivity: one_to_one
            weight_update: my_wu
            postsynaptic: {model: my_syn, params: {tau: 2.0}}
            delay: 0.5
        current_sources:
          drive: {population: n, model: my_cs, params: {amp: 20.0}}
        """
    )
    assert net.dt == pytest.approx(0.1)
    pop = net.populations["n"]
    assert pop.model.name == "my_lif" and pop.params == {"tau_m": 20.0, "v_th": -50.0}
    proj = net.projections["nn"]
    assert proj.postsynaptic.name == "my_syn" and proj.ps_params == {"tau": 2.0}
    assert proj.connectivity.kind == "one_to_one" and proj.delay_steps == 5
    assert net.current_sources["drive"].params == {"amp": 20.0}
    assert net.recorded_vars == [("n", "v")]
    assert cfg.duration == 50.0 and cfg.record_spikes == ["n"] and cfg.record_vars == [("n", "v")]


# -- errors: file and line ---------------------------------------------------------------------


def test_malformed_yaml_bad_indentation():
    text = BASE.replace("    model: lif", "   model: lif")
    err = config_error(text)
    assert err.filename == "net.yaml"
    assert err.line == line_of(text, "model: lif")
    assert str(err).startswith(f"net.yaml:{err.line}: invalid YAML")


def test_malformed_yaml_unclosed_bracket_points_at_the_bracket():
    text = BASE + more(
        """\
        params: {tau_m: 10.0, v_th: -50.0
        init: {v: 0.0}
    projections: {}
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "params: {")
    assert "invalid YAML" in str(err) and "unclosed" in str(err)


def test_unknown_model_lists_known_models():
    text = BASE.replace("model: lif", "model: lfi")
    err = config_error(text)
    assert err.line == line_of(text, "model: lfi")
    msg = str(err)
    assert "unknown neuron model 'lfi'" in msg
    for known in ("lif", "alif", "izhikevich", "poisson", "spike_source_array"):
        assert known in msg
    assert "did you mean 'lif'" in msg


def test_model_of_the_wrong_kind():
    text = BASE + more(
        """\
    projections:
      p: {pre: a, post: a, weight_update: exp_curr, postsynaptic: exp_curr}
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "p: {pre")
    assert "unknown weight_update model 'exp_curr'" in str(err)
    assert "built-in postsynaptic model" in str(err)


def test_missing_size():
    text = BASE.replace("    size: 10\n", "")
    err = config_error(text)
    assert err.line == line_of(text, "a:")
    assert "missing required key 'size'" in str(err)


def test_unknown_parameter_names_its_line():
    text = BASE + more(
        """\
        params:
          tau_m: 10.0
          tau_x: 3.0
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "tau_x")
    assert "unknown parameter(s) tau_x" in str(err)
    assert "model 'lif'" in str(err)  # the ModelError's own message is kept


def test_unknown_symbol_in_a_user_model_equation():
    text = BASE.replace("model: lif", "model: mine") + more(
        """\
    models:
      mine:
        kind: neuron
        params: {tau: 10.0}
        vars: {v: 0.0, u: 0.0}
        equations: |
          dv/dt = -v / tau
          du/dt = (v - u) / tau_u
        threshold: v > 1
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "du/dt")
    msg = str(err)
    assert "'tau_u'" in msg and "model 'mine'" in msg and "equations" in msg
    assert msg.startswith(f"net.yaml:{err.line}: ")


def test_projection_to_an_unknown_population():
    text = BASE + more(
        """\
    projections:
      p:
        pre: a
        post: b
        weight_update: static
        postsynaptic: exp_curr
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "post: b")
    assert "unknown population 'b'" in str(err) and "populations: a" in str(err)


def test_negative_delay():
    text = BASE + more(
        """\
    projections:
      p:
        pre: a
        post: a
        weight_update: static
        postsynaptic: exp_curr
        delay: -1.0
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "delay:")
    assert "delay must not be negative" in str(err)


@pytest.mark.parametrize(
    "extra, fragment, message",
    [
        ("colour: red\n", "colour", "unknown key 'colour'"),
        ("dt: fast\n", "dt: fast", "expected a number"),
        ("batch_size: 1.5\n", "batch_size", "expected an integer"),
        ("precision: half\n", "precision", "precision must be 'float' or 'double'"),
        ("populations: {}\n", None, "duplicate key 'populations'"),
    ],
)
def test_top_level_errors(extra, fragment, message):
    text = BASE + extra
    err = config_error(text)
    assert message in str(err)
    assert err.line == (line_of(text, fragment) if fragment else len(text.splitlines()))


@pytest.mark.parametrize(
    "extra, fragment, message",
    [
        ("    size: ten\n", None, "duplicate key 'size'"),
        ("    colour: red\n", "colour", "unknown key 'colour'"),
        ("    params: [1, 2]\n", "params", "expected a mapping"),
        ("    init:\n      v: {uniform: [1.0]}\n", "uniform", "uniform initialiser takes two numbers"),
        ("    record: [spikes, w]\n", "record", "has no variable 'w'"),
        ("    spikes: {times: [1.0], ids: [0]}\n", "spikes", "only be given to a spike_source_array"),
    ],
)
def test_population_errors(extra, fragment, message):
    text = BASE + extra
    err = config_error(text)
    assert message in str(err)
    assert err.line == (line_of(text, fragment) if fragment else len(text.splitlines()))


@pytest.mark.parametrize(
    "projection, fragment, message",
    [
        ("connectivity: {fixed_probability: 1.5}", "connectivity", "probability must be in [0, 1]"),
        ("connectivity: sometimes", "connectivity", "unknown connectivity 'sometimes'"),
        ("weight_update: {model: static_constant}", "weight_update", "parameter 'w' has no value"),
        (
            "weight_update: {model: static, init: {q: 1.0}}",
            "weight_update",
            "unknown weight-update variable(s) q",
        ),
        ("postsynaptic: {model: delta, target: u}", "postsynaptic", "assigns unknown variable 'u'"),
        ("postsynaptic: {model: exp_curr, target: v}", "postsynaptic", "only the built-in 'delta'"),
        ("delay: 0.15", "delay", "not a multiple of dt"),
        ("delay: soon", "delay", "expected a number of ms"),
    ],
)
def test_projection_errors(projection, fragment, message):
    fields = {"pre": "a", "post": "a", "weight_update": "static", "postsynaptic": "exp_curr"}
    key, value = projection.split(": ", 1)
    fields[key] = value
    body = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    text = BASE + "projections:\n  p:\n" + body
    err = config_error(text)
    assert message in str(err)
    assert err.line == line_of(text, f"{fragment}:")


def test_user_model_errors():
    text = BASE + more(
        """\
    models:
      syn:
        kind: synapse
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "kind: synapse")
    assert "neuron, weight_update, postsynaptic, current_source" in str(err)

    text = BASE + more(
        """\
    models:
      lif: {kind: neuron}
    """
    )
    assert "built-in neuron model" in str(config_error(text))

    text = BASE + more(
        """\
    models:
      m:
        kind: neuron
        vars: {v: 0.0}
        threshold: v > 1
        reset: v = 0
        on_pre: v += 1
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "on_pre")
    assert "unknown key 'on_pre'" in str(err) and "threshold" in str(err)

    text = BASE + more(
        """\
    models:
      m:
        kind: current_source
        params: {amp: 1.0}
        derived:
          half: amp / 2
          third: amp / three
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "third:")
    assert "'three'" in str(err) and "model 'm'" in str(err)


def test_postsynaptic_apply_error_points_into_the_user_model():
    text = BASE + more(
        """\
    models:
      my_ps:
        kind: postsynaptic
        apply: |
          i_syn += in_syn
          w += in_syn
    projections:
      p: {pre: a, post: a, weight_update: static, postsynaptic: my_ps}
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "w += in_syn")
    assert "model 'my_ps'" in str(err)


def test_current_source_errors():
    text = BASE + more(
        """\
    current_sources:
      drive:
        population: b
        model: dc
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "population: b")
    text = BASE + more(
        """\
    current_sources:
      drive:
        population: a
        model: dc
    """
    )
    err = config_error(text)
    assert err.line == line_of(text, "drive:") and "parameter 'amp' has no value" in str(err)


def test_empty_and_non_mapping_files(tmp_path):
    assert "empty" in str(config_error(""))
    assert "expected a mapping" in str(config_error("- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_file(tmp_path / "missing.yaml")


# -- spike inputs ------------------------------------------------------------------------------------

SSA = """\
    name: ssa
    dt: 0.5
    populations:
      stim:
        size: 3
        model: spike_source_array
        record: [spikes]
        spikes: {spikes}
    """


def test_inline_spikes_per_batch_instance():
    text = SSA.replace("{spikes}", "{times: [1.0, 2.0, 3.0], ids: [0, 2, 1], batch: [0, 1, 1]}")
    net, cfg = load(text, batch_size=2)
    per_batch = cfg.spike_inputs["stim"]
    assert len(per_batch) == 2
    assert per_batch[0][0].tolist() == [1.0] and per_batch[0][1].tolist() == [0]
    assert per_batch[1][0].tolist() == [2.0, 3.0] and per_batch[1][1].tolist() == [2, 1]

    err = config_error(SSA.replace("{spikes}", "{times: [1.0, 2.0], ids: [0, 3]}"))
    assert err.line == line_of(SSA, "spikes: {spikes}")
    assert "neuron ids must be integers in [0, 3)" in str(err)
    err = config_error(SSA.replace("{spikes}", "{times: [1.0], ids: [0], batch: [1]}"))
    assert "batch instances must be integers in [0, 1)" in str(err)


def test_spike_file_is_relative_to_the_yaml_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "input.npz", times=np.array([0.5, 1.0, 2.0, 2.5]), ids=np.array([0, 1, 2, 0]))
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(SSA.replace("{spikes}", "{file: data/input.npz}")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    net, cfg = load_file(path)
    times, ids = cfg.spike_inputs["stim"]
    assert times.tolist() == [0.5, 1.0, 2.0, 2.5] and ids.tolist() == [0, 1, 2, 0]

    path.write_text(textwrap.dedent(SSA.replace("{spikes}", "{file: data/nothere.npz}")))
    with pytest.raises(ConfigError, match="no such file") as info:
        load_file(path)
    assert info.value.line == line_of(SSA, "spikes: {spikes}") and info.value.filename == str(path)

    np.savez(data / "bad.npz", t=np.zeros(2))
    path.write_text(textwrap.dedent(SSA.replace("{spikes}", "{file: data/bad.npz}")))
    with pytest.raises(ConfigError, match="has no array"):
        load_file(path)


@pytest.mark.skipif(not HAS_CXX, reason="needs a C++ compiler")
def test_spike_inputs_reach_the_simulation(tmp_path):
    np.savez(
        tmp_path / "in.npz",
        times=np.array([1.0, 2.0, 4.0, 5.0]),
        ids=np.array([0, 1, 2, 2]),
        batch=np.array([0, 0, 1, 1]),
    )
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(SSA.replace("{spikes}", "{file: in.npz}")))
    net, cfg = load_file(path, batch_size=2)
    sim = net.build()
    try:
        cfg.apply_inputs(sim)
        sim.run(duration=10.0)
        (t0, i0), (t1, i1) = sim.spikes("stim")
        assert sorted(i0.tolist()) == [0, 1] and sorted(i1.tolist()) == [2, 2]
    finally:
        sim.close()
