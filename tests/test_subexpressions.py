"""Subexpressions: named expressions of the state inside a model, printed once per element."""

import re

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_file
from spikeforge.errors import ConfigError, ModelError
from spikeforge.models import CurrentSourceModel, NeuronModel, PostsynapticModel, WeightUpdateModel
from spikeforge.network import FixedProbability, Network
from tests.conftest import nvcc_path

# Brian2's COBAHH (units ms, mV, nS, pF), its rate functions as Brian2 writes them (with exprel)
RATES = {
    "alpha_m": "0.32*4/exprel((13 - v + VT)/4)",
    "beta_m": "0.28*5/exprel((v - VT - 40)/5)",
    "alpha_h": "0.128*exp((17 - v + VT)/18)",
    "beta_h": "4/(1 + exp((40 - v + VT)/5))",
    "alpha_n": "0.032*5/exprel((15 - v + VT)/5)",
    "beta_n": "0.5*exp((10 - v + VT)/40)",
}
HH_PARAMS = {"Cm": 200.0, "gl": 10.0, "El": -60.0, "EK": -90.0, "ENa": 50.0, "g_na": 20000.0, "g_kd": 6000.0,
             "VT": -63.0, "taue": 5.0, "taui": 10.0, "Ee": 0.0, "Ei": -80.0}
HH_EQUATIONS = """
    dv/dt = (gl*(El - v) + ge*(Ee - v) + gi*(Ei - v) - g_na*m*m*m*h*(v - ENa) - g_kd*n*n*n*n*(v - EK))/Cm
    dm/dt = alpha_m*(1 - m) - beta_m*m
    dn/dt = alpha_n*(1 - n) - beta_n*n
    dh/dt = alpha_h*(1 - h) - beta_h*h
    dge/dt = -ge/taue
    dgi/dt = -gi/taui
"""


def _inline(text, definitions):
    """``text`` with each subexpression's name replaced by its definition in parentheses."""
    for name, definition in definitions.items():
        text = re.sub(rf"\b{name}\b", f"({definition})", text)
    return text


def _hh(subexpressions: bool):
    kw = dict(params=HH_PARAMS, vars={"v": -60.0, "m": 0.0, "n": 0.0, "h": 0.0, "ge": 0.0, "gi": 0.0},
              threshold="v > -20", refractory=3.0)
    if subexpressions:
        return NeuronModel("hh_named", equations=HH_EQUATIONS, subexpressions=RATES, **kw)
    return NeuronModel("hh_inline", equations=_inline(HH_EQUATIONS, RATES), **kw)


def _cobahh(subexpressions: bool, n=40):
    hh = _hh(subexpressions)
    net = Network(f"cobahh_{hh.name}", dt=0.1, precision="double", seed=5)
    init = {"v": {"normal": [-65.0, 5.0]}, "ge": {"normal": [40.0, 15.0]}, "gi": {"normal": [200.0, 120.0]}}
    n_e = n * 4 // 5
    net.add_population("e", n_e, hh, init=init, record_spikes=True)
    net.add_population("i", n - n_e, hh, init=init, record_spikes=True)
    for name, pre, post, w, target in [("ee", "e", "e", 6.0, "ge"), ("ei", "e", "i", 6.0, "ge"),
                                       ("ie", "i", "e", 67.0, "gi"), ("ii", "i", "i", 67.0, "gi")]:
        net.add_projection(name, pre, post, m.STATIC_CONSTANT, m.delta_curr(target),
                           connectivity=FixedProbability(0.2), wu_params={"w": w})
    net.record_var("e", "v")
    net.record_var("i", "m")
    return net


def _neuron_code(net, population, backend="cpu"):
    kernel = next(k for k in generate(net).kernels if k.name == f"neuron_update_{population}")
    return kernel, render_network(generate(net), backend)


def _assert_same_run(a, b, populations, recorded):
    for pop, var in recorded:
        np.testing.assert_array_equal(a.recorded(pop, var), b.recorded(pop, var), err_msg=f"{pop}.{var}")
    for pop in populations:
        for (ta, ia), (tb, ib) in zip(a.spikes(pop), b.spikes(pop)):
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_array_equal(ia, ib)


# -- COBAHH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_cobahh_with_named_rate_functions_is_bit_identical_to_the_inlined_model(backend):
    named = _cobahh(True).build(backend=backend, threads=1)
    inline = _cobahh(False).build(backend=backend, threads=1)
    for sim in (named, inline):
        sim.run(duration=40.0)
    assert named.spec.integrators["e"] == inline.spec.integrators["e"] == "exponential_euler"
    assert sum(ids.size for _, ids in named.spikes("e")) > 0  # active: the threshold is crossed
    _assert_same_run(named, inline, ["e", "i"], [("e", "v"), ("i", "m")])


def test_the_integrator_sees_the_expanded_equations():
    named, inline = _hh(True), _hh(False)
    assert [o.rhs for o in named.odes] == [o.rhs for o in inline.odes]
    assert named.odes[1].source == "dm/dt = alpha_m*(1 - m) - beta_m*m"  # the comment keeps the names
    # linear with constant coefficients only once expanded: exact integration applies
    lin = NeuronModel("lin", params={"tau": 10.0, "e_l": -65.0}, vars={"v": -65.0},
                      subexpressions={"leak": "(e_l - v)/tau"}, equations="dv/dt = leak + i_syn")
    net = Network("lin_net", dt=0.1)
    net.add_population("p", 2, lin)
    assert generate(net).integrators["p"] == "exact"


def test_generated_code_shows_each_rate_function_once_per_neuron_with_its_source():
    kernel, source = _neuron_code(_cobahh(True), "e")
    text = "\n".join(f"{line.code}  // {line.comment}" for line in kernel.code + kernel.info["dynamics"])
    for name, definition in RATES.items():
        assert text.count(f"subexpression {name} = {definition}") == 1, name
    # used only by the ODEs: the integrator's update has them expanded (no dead computation)
    assert "const scalar alpha_m" not in source
    assert "dm/dt = alpha_m*(1 - m) - beta_m*m" in text


# -- threshold, reset, statements -------------------------------------------------------------------

SOFT = dict(
    params={"tau": 10.0, "theta": -50.0, "v_reset": -70.0, "drive": 30.0},
    vars={"v": -65.0, "c": 0.0},
)
SOFT_SUBEXPRESSIONS = {"over": "excess / 2", "excess": "v - theta", "target": "theta + drive"}


def _soft(named: bool):
    fields = dict(equations="dv/dt = (target - v)/tau", threshold="excess > 0",
                  reset="c += over\nv = v_reset - over\nc += excess")
    if named:
        return NeuronModel("soft_named", subexpressions=SOFT_SUBEXPRESSIONS, **fields, **SOFT)
    inline = {k: _inline(v, {"over": "excess / 2"}) for k, v in SOFT_SUBEXPRESSIONS.items()}
    return NeuronModel("soft_inline", **{k: _inline(v, inline) for k, v in fields.items()}, **SOFT)


def _soft_net(named):
    net = Network(f"soft_{int(named)}", dt=0.1, precision="double")
    net.add_population("p", 3, _soft(named), init={"v": {"uniform": [-70.0, -50.0]}}, record_spikes=True)
    net.record_var("p", "v")
    net.record_var("p", "c")
    return net


def test_threshold_and_reset_use_the_named_subexpression_in_dependency_order():
    kernel, _ = _neuron_code(_soft_net(True), "p")
    code = [line.code for line in kernel.code + kernel.info["dynamics"]]
    reset = [line.code for line in kernel.info["reset"]]
    # the threshold reads 'excess', computed once after the update; 'target' is expanded into it
    assert code.count("const scalar excess = -theta + v;") == 1
    assert kernel.info["threshold"]["condition"] == "excess > 0"  # the test follows the model's code
    assert not any("const scalar target" in c for c in code)
    # the reset (a pass of its own on the CPU) computes what it reads, 'excess' before 'over'
    assert reset[:2] == ["const scalar excess = -theta + v;", "const scalar over = (1.0/2.0)*excess;"]
    assert reset[2:4] == ["c += over;", "v = -over + v_reset;"]
    # after 'v = ...', the old values of 'over' and 'excess' no longer hold: the definition is used
    assert reset[4] == "c += -theta + v;"
    comments = [line.comment for line in kernel.info["reset"]]
    assert comments[:2] == ["subexpression excess = v - theta", "subexpression over = excess / 2"]


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_threshold_and_reset_with_subexpressions_equal_the_inlined_model(backend):
    named, inline = (_soft_net(flag).build(backend=backend) for flag in (True, False))
    for sim in (named, inline):
        sim.run(duration=30.0)
    assert sum(ids.size for _, ids in named.spikes("p")) >= 3
    _assert_same_run(named, inline, ["p"], [("p", "v"), ("p", "c")])
    # each spike adds over (before v is reset) + excess (after: v_reset - over - theta) = v_reset - theta
    counts = np.bincount(named.spikes("p")[0][1], minlength=3)
    np.testing.assert_allclose(named.recorded("p", "c")[-1, 0], -20.0 * counts, rtol=0, atol=1e-9)


def test_subexpressions_of_synapse_postsynaptic_and_current_source_models():
    wu = WeightUpdateModel("scaled", params={"scale": 0.5}, vars={"w": 1.0}, subexpressions={"g": "w * scale"},
                           on_pre="post_input += g")
    ps = PostsynapticModel("exp_named", params={"tau": 5.0}, vars={"x": 0.0},
                           subexpressions={"decay": "-x / tau"}, equations="dx/dt = decay",
                           apply="x += in_syn\ni_syn += x")
    cs = CurrentSourceModel("ramp", params={"a": 0.1}, subexpressions={"amp": "a * t"}, current="amp")
    assert [o.rhs for o in ps.odes] == [o.rhs for o in PostsynapticModel(
        "e", params={"tau": 5.0}, vars={"x": 0.0}, equations="dx/dt = -x / tau").odes]
    net = Network("synapse_subexpressions", dt=0.1)
    net.add_population("src", 4, m.POISSON, init={"rate": 200.0})
    net.add_population("dst", 3, m.LIF)
    net.add_projection("pq", "src", "dst", wu, ps, "dense")
    net.add_current_source("ramp", "dst", cs)
    spec = generate(net)
    syn = next(k for k in spec.kernels if k.name == "presynaptic_update_pq")
    assert [(line.code, line.comment) for line in syn.code][1:] == [
        ("const scalar g = scale*w;", "subexpression g = w * scale"), ("post_input += g;", "post_input += g")]
    neuron = next(k for k in spec.kernels if k.name == "neuron_update_dst")
    codes = [line.code for line in neuron.code]
    assert "const scalar ramp_amp = ramp_a*t;" in codes and "i_syn += ramp_amp;" in codes
    comments = [line.comment for line in neuron.code]
    assert "subexpression decay = -x / tau (expanded into the integrator's update below)" in comments


def test_a_statement_writing_what_a_subexpression_reads_makes_later_uses_inline():
    model = NeuronModel("stale", params={"k": 2.0}, vars={"v": 0.0, "a": 0.0, "b": 0.0},
                        subexpressions={"twice": "k * v"}, equations="dv/dt = -v",
                        sim_code="a = twice\nv = v + 1\nb = twice")
    net = Network("stale_net", dt=0.1)
    net.add_population("p", 2, model)
    kernel, _ = _neuron_code(net, "p")
    code = [line.code for line in kernel.info["dynamics"]]
    i = code.index("const scalar twice = k*v;")
    assert code[i + 1:i + 4] == ["a = twice;", "v = v + 1;", "b = k*v;"]


# -- e-prop -----------------------------------------------------------------------------------------


def test_eprop_through_a_model_with_subexpressions_gives_the_inlined_gradients():
    from spikeforge.training.model import EpropConfig
    from tests.test_eprop_kernel import compiled_runtime
    from tests.test_eprop_reference import make_problem

    common = dict(params={"tau_m": 20.0, "tau_a": 200.0, "v_th": 0.6, "beta": 0.07, "r_m": 1.0, "v_reset": 0.0},
                  vars={"v": 0.0, "a": 0.0})
    named = NeuronModel("alif_named", **common, subexpressions={"leak": "-v / tau_m", "theta": "v_th + beta * a"},
                        equations="dv/dt = r_m * i_syn / tau_m + leak\nda/dt = -a / tau_a",
                        threshold="v > theta", reset="v = v_reset; a += 1")
    inline = NeuronModel("alif_inline", **common, equations="dv/dt = r_m * i_syn / tau_m - v / tau_m\n"
                                                          "da/dt = -a / tau_a",
                         threshold="v > v_th + beta * a", reset="v = v_reset; a += 1")
    X, targets, mask, weights = make_problem(1, recurrent=True, loss="xent")
    grads = []
    for model in (named, inline):
        rt = compiled_runtime(EpropConfig(X.shape[2], weights["W_in"].shape[0], weights["W_out"].shape[0], model,
                                          {}, recurrent=True, tau_out=20.0, dt=1.0, loss="xent", precision="double",
                                          name=f"eprop_{model.name}"), X.shape[1])
        rt.set_weights({"w_in": weights["W_in"], "w_out": weights["W_out"], "b_out": weights["b"],
                        "w_rec": weights["W_rec"]})
        grads.append(rt.run_batch(X, mask, labels=targets)["grads"])
    assert set(grads[0]) == set(grads[1])
    assert any(np.abs(g).max() > 0 for g in grads[0].values())
    for name in grads[0]:
        np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)


# -- errors -----------------------------------------------------------------------------------------

BAD = [
    ({"a": "b + 1", "b": "c * 2", "c": "a"}, "subexpressions.a", "cycle: a -> b -> c -> a"),
    ({"a": "a + v"}, "subexpressions.a", "'a' refers to itself"),
    ({"a": "v + zeta"}, "subexpressions.a", "unknown symbol 'zeta'"),
    ({"v": "2"}, "subexpressions.v", "has the name of a variable"),
    ({"tau": "2"}, "subexpressions.tau", "has the name of a parameter"),
    ({"exp": "2"}, "subexpressions.exp", "cannot name a subexpression: it is a function"),
    ({"i_syn": "2"}, "subexpressions.i_syn", "cannot name a subexpression"),
    ({"_tmp": "2"}, "subexpressions._tmp", "reserved for generated code"),
    ({"noise": "rand_normal()"}, "subexpressions.noise", "random numbers are not allowed"),
]


@pytest.mark.parametrize("subexpressions, field, message", BAD, ids=[b[2].split()[0] for b in BAD])
def test_bad_subexpressions_are_refused_naming_model_and_field(subexpressions, field, message):
    with pytest.raises(ModelError) as err:
        NeuronModel("bad", params={"tau": 10.0}, vars={"v": 0.0}, subexpressions=subexpressions,
                    equations="dv/dt = -v / tau")
    assert message in str(err.value)
    assert err.value.model == "bad" and err.value.field == field
    assert "\n" not in str(err.value)


def test_a_field_using_an_unknown_name_lists_the_subexpressions_as_known():
    with pytest.raises(ModelError, match=r"unknown symbol 'alpha_x'.*alpha_m") as err:
        NeuronModel("bad", vars={"v": 0.0, "m": 0.0}, subexpressions={"alpha_m": "v + 1"},
                    equations="dm/dt = alpha_x * (1 - m)")
    assert err.value.field == "equations"
    with pytest.raises(ModelError, match="'alpha_m', which cannot be written here"):
        NeuronModel("bad", vars={"v": 0.0}, subexpressions={"alpha_m": "v + 1"}, threshold="v > 1",
                    reset="alpha_m = 0")


def test_a_reset_reading_the_input_through_a_subexpression_is_refused():
    """The reset runs apart from the update (on the CPU, a second pass without i_syn): before this
    check, 'v = i_syn' in a reset was a C++ compile error of the CPU backend."""
    for fields in ({"subexpressions": {"drive": "2 * i_syn"}, "reset": "v = drive"}, {"reset": "v = i_syn"}):
        with pytest.raises(ModelError, match=r"the reset cannot read 'i_syn'") as err:
            NeuronModel("in_reset", vars={"v": 0.0}, equations="dv/dt = -v + i_syn", threshold="v > 1", **fields)
        assert err.value.field == "reset"


YAML = """\
dt: 0.1
models:
  hh:
    kind: neuron
    params: {VT: -63.0}
    vars: {v: -65.0, m: 0.0}
    subexpressions:
      alpha_m: "0.32*4/exprel((13 - v + VT)/4)"
      beta_m: "BETA_M"
      gamma_m: "2 * alpha_m"
    equations: |
      dm/dt = alpha_m*(1 - m) - beta_m*m
      dv/dt = -v + i_syn
    threshold: v > gamma_m
populations:
  p: {size: 2, model: hh}
"""


@pytest.mark.parametrize("beta_m, message", [
    ("delta_m + 1", "unknown symbol 'delta_m'"),
    ("beta_m * 2", "'beta_m' refers to itself"),
])
def test_yaml_errors_name_file_line_model_and_field(tmp_path, beta_m, message):
    path = tmp_path / "hh.yaml"
    path.write_text(YAML.replace("BETA_M", beta_m))
    with pytest.raises(ConfigError) as err:
        load_file(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}:9: ") and "model 'hh'" in text and "subexpressions.beta_m" in text
    assert message in text and "\n" not in text


def test_yaml_cycle_and_collision(tmp_path):
    path = tmp_path / "hh.yaml"
    path.write_text(YAML.replace("BETA_M", "gamma_m").replace('gamma_m: "2 * alpha_m"', 'gamma_m: "2 * beta_m"'))
    with pytest.raises(ConfigError, match=r":9: .*cycle: beta_m -> gamma_m -> beta_m"):
        load_file(str(path))
    path.write_text(YAML.replace("BETA_M", "1").replace("gamma_m: ", "m: ").replace("v > gamma_m", "v > 1"))
    with pytest.raises(ConfigError, match=r":10: .*subexpressions.m.*has the name of a variable"):
        load_file(str(path))
    path.write_text(re.sub(r"subexpressions:\n(      .*\n)+", "subexpressions: [alpha_m]\n", YAML))
    with pytest.raises(ConfigError, match=r":7: models.hh.subexpressions: expected a mapping name -> expression"):
        load_file(str(path))


def test_yaml_subexpressions_load_into_the_same_model(tmp_path):
    path = tmp_path / "hh.yaml"
    path.write_text(YAML.replace("BETA_M", "0.28*5/exprel((v - VT - 40)/5)"))
    net, _ = load_file(str(path))
    model = net.populations["p"].model
    assert list(model.subexpressions) == ["alpha_m", "beta_m", "gamma_m"]
    inline = NeuronModel("inline", params={"VT": -63.0}, vars={"v": -65.0},
                         threshold="v > 2 * (0.32*4/exprel((13 - v + VT)/4))")
    assert model.threshold == inline.threshold
    kernel, _ = _neuron_code(net, "p")
    code = [line.code for line in kernel.info["dynamics"]]
    assert code.index(next(c for c in code if c.startswith("const scalar alpha_m"))) < code.index(
        next(c for c in code if c.startswith("const scalar gamma_m")))


# -- nvcc -------------------------------------------------------------------------------------------


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_kernels_with_subexpressions_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net = _soft_net(True)
    wu = WeightUpdateModel("scaled", params={"scale": 0.5}, vars={"w": 1.0}, subexpressions={"g": "w * scale"},
                           on_pre="post_input += g")
    net.add_population("hh", 4, _hh(True))
    net.add_projection("ph", "p", "hh", wu, m.delta_curr("ge"), "dense")
    result = build_cubin(render_network(generate(net), "cuda"), "sm_80", name=net.name, describe=net.name)
    assert result.path.read_bytes()[:4] == b"\x7fELF"
