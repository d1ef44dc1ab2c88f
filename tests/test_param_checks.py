"""Parameter values that would run but give wrong numbers are refused where they are bound
(spikeforge.models.parameters): time constants <= 0, negative refractory periods, derived
parameters that are inf or NaN, durations that are not a multiple of dt, non-finite numbers
anywhere in a file; a time constant below dt is a warning."""

from __future__ import annotations

import textwrap
import warnings

import pytest

from spikeforge import models as m
from spikeforge.cli import main
from spikeforge.config import load_network
from spikeforge.errors import ConfigError, ModelError, NetworkError
from spikeforge.models.neuron import NeuronModel
from spikeforge.models.parameters import ParameterWarning, time_constants
from spikeforge.network import Network, steps_for_duration
from spikeforge.training.config import load_training


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _load(text: str):
    return load_network(textwrap.dedent(text), filename="net.yaml")


# -- which parameters are time constants -------------------------------------------------------


def test_builtin_time_constants_follow_the_rule():
    assert time_constants(m.LIF) == ("tau_m",)
    assert time_constants(m.ALIF) == ("tau_m", "tau_a")
    assert time_constants(m.EXP_CURR) == ("tau_syn",)
    assert time_constants(m.STDP) == ("tau_plus", "tau_minus")
    assert time_constants(m.IZHIKEVICH) == ()  # `a` multiplies the rate: not a time


def test_user_time_constants_from_the_equations_and_derived_parameters():
    model = NeuronModel(
        "two_tau",
        params={"tau_a": 10.0, "tau_b": 5.0, "k": 2.0, "rate": 0.1, "v_th": 1.0},
        derived={"alpha": "exp(-dt / tau_b)", "tau_eff": "tau_a * k"},
        vars={"v": 0.0, "w": 0.0},
        equations="""
            dv/dt = (k - v) / (2 * tau_a) + w / tau_eff
            dw/dt = rate * (v - w) - w / tau_eff
        """,
        threshold="v > v_th",
    )
    assert set(time_constants(model)) == {"tau_a", "tau_b", "tau_eff"}  # not k, not rate


# -- time constants ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.0", "-20.0"])
def test_non_positive_time_constant_in_yaml_names_file_line_and_field(value):
    text = f"""\
        populations:
          exc:
            size: 10
            model: lif
            params: {{v_th: -50.0,
                     tau_m: {value}}}
        """
    with pytest.raises(ConfigError) as err:
        _load(text)
    assert err.value.filename == "net.yaml" and err.value.line == 6, str(err.value)
    assert "field 'params'" in str(err.value) and "time constant 'tau_m' must be positive" in str(err.value)


def test_non_positive_synaptic_and_stdp_time_constants_are_refused():
    base = """\
        populations:
          a: {size: 2, model: lif}
        projections:
          p:
            pre: a
            post: a
            weight_update: {model: stdp, params: {tau_plus: TP}}
            postsynaptic: {model: exp_curr, params: {tau_syn: TS}}
        """
    with pytest.raises(ConfigError, match=r"^net.yaml:8: .*time constant 'tau_syn' must be positive"):
        _load(base.replace("TP", "20.0").replace("TS", "0"))
    with pytest.raises(ConfigError, match=r"^net.yaml:7: .*time constant 'tau_plus' must be positive"):
        _load(base.replace("TP", "-1.0").replace("TS", "5.0"))


def test_user_model_default_time_constant_points_at_the_model():
    text = """\
        models:
          leak:
            kind: neuron
            params:
              tau: 0.0
            vars: {v: 0.0}
            equations: dv/dt = -v / tau
        populations:
          a: {size: 2, model: leak}
        """
    with pytest.raises(ConfigError, match=r"^net.yaml:5: model 'leak', field 'params': .*'tau' must be positive"):
        _load(text)


def test_python_api_names_model_and_field():
    net = Network("n", dt=0.1)
    with pytest.raises(ModelError) as err:
        net.add_population("exc", 10, m.LIF, params={"tau_m": 0.0})
    assert err.value.model == "lif" and err.value.field == "params"
    assert "population 'exc': time constant 'tau_m' must be positive" in str(err.value)
    net.add_population("src", 2, m.LIF)
    with pytest.raises(ModelError) as err:
        net.add_projection("p", "src", "src", m.STATIC_CONSTANT, m.EXP_CURR, wu_params={"w": 1.0},
                           ps_params={"tau_syn": -5.0})
    assert err.value.model == "exp_curr" and "'tau_syn'" in str(err.value)


def test_time_constant_below_dt_warns_with_the_line():
    text = """\
        dt: 1.0
        populations:
          exc:
            size: 10
            model: lif
            params:
              tau_m: 0.02
        """
    with pytest.warns(ParameterWarning, match=r"^net.yaml:7: .*'tau_m' = 0.02 ms is below dt = 1 ms"):
        _load(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(text.replace("0.02", "2.0"))  # at or above dt: no warning


def test_time_constant_below_dt_is_one_line_on_the_cli(tmp_path, capsys):
    path = tmp_path / "fast.yaml"
    path.write_text("dt: 1.0\npopulations: {a: {size: 1, model: lif, params: {tau_m: 0.001}}}\n")
    assert main(["show-code", str(path), "--list"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"spikeforge: warning: {path}:2: ") and "below dt" in err[0]


def test_hidden_layer_time_constant_of_a_training_job(tmp_path):
    text = (tmp_path / "x").parent.joinpath("job.yaml")
    body = """\
        dt: 1.0
        data: {kind: pattern_generation, n_samples: 2, test_fraction: 0.5, options: {duration: 20.0}}
        network:
          hidden:
            model: lif_subtractive
            size: 8
            params: {tau_m: 0.0}
        """
    text.write_text(textwrap.dedent(body))
    with pytest.raises(ConfigError, match=r"job.yaml:7: .*time constant 'tau_m' must be positive"):
        load_training(text)


# -- refractory period -----------------------------------------------------------------------


def test_negative_refractory_period_is_refused():
    text = """\
        populations:
          exc:
            size: 10
            model: lif
            params: {t_ref: -2.0}
        """
    with pytest.raises(ConfigError, match=r"^net.yaml:5: .*refractory period 't_ref' must not be negative"):
        _load(text)
    _load(text.replace("-2.0", "0.0"))
    net = Network("n")
    with pytest.raises(ModelError, match="refractory period 't_ref' must not be negative") as err:
        net.add_population("exc", 1, m.LIF, params={"t_ref": -0.1})
    assert err.value.field == "params"


def test_negative_refractory_expression_is_refused():
    model = NeuronModel("r", params={"a": 1.0, "b": 3.0}, vars={"v": 0.0}, equations="dv/dt = -v / a",
                        threshold="v > 1", reset="v = 0", refractory="a - b")
    with pytest.raises(ModelError, match=r"refractory period 'a - b' must not be negative, got -2") as err:
        Network("n").add_population("p", 1, model)
    assert err.value.field == "refractory"


# -- derived parameters ---------------------------------------------------------------------


DERIVED = """\
    models:
      two:
        kind: neuron
        params: {tau_m: 10.0, tau_syn: 5.0}
        derived:
          k: "1/(tau_m - tau_syn)"
        vars: {v: 0.0}
        equations: dv/dt = -v / tau_m + k
    populations:
      a:
        size: 2
        model: two
        params: {tau_syn: SYN}
    """


def test_derived_parameter_that_is_infinite_points_at_the_value_given():
    with pytest.raises(ConfigError) as err:
        _load(DERIVED.replace("SYN", "10.0"))
    assert err.value.line == 13, str(err.value)
    assert "field 'derived.k'" in str(err.value)
    assert "derived parameter 'k' = 1/(tau_m - tau_syn) is infinite with 'tau_m' = 10, 'tau_syn' = 10" in str(
        err.value)
    _load(DERIVED.replace("SYN", "4.0"))


def test_derived_parameter_that_is_nan_or_complex_is_refused():
    model = NeuronModel("d", params={"x": -1.0}, derived={"lx": "log(x)", "r": "sqrt(x)"}, vars={"v": 0.0},
                        equations="dv/dt = -v + lx + r")
    with pytest.raises(ModelError, match=r"derived parameter 'lx' = log\(x\) is not a real number") as err:
        Network("n").add_population("p", 1, model)
    assert err.value.field == "derived.lx"
    Network("n").add_population("p", 1, model, params={"x": 2.0})
    zero = NeuronModel("z", params={"x": 0.0, "y": 0.0}, derived={"q": "x / y"}, vars={"v": 0.0},
                       equations="dv/dt = q")
    with pytest.raises(ModelError, match=r"'q' = x / y is NaN with 'x' = 0, 'y' = 0"):
        Network("n").add_population("p", 1, zero)


# -- duration -----------------------------------------------------------------------------------


def test_steps_for_duration():
    assert steps_for_duration(1000, 0.1) == 10000
    assert steps_for_duration(0.3, 0.1) == 3
    assert steps_for_duration(0, 0.1) == 0
    with pytest.raises(NetworkError, match=r"duration 0.05 ms is not a multiple of dt = 0.1 ms \(nearest: 0.1 ms"):
        steps_for_duration(0.05, 0.1)
    with pytest.raises(NetworkError, match=r"nearest: 100 ms \(1000 steps\) or 100.1 ms \(1001 steps\)"):
        steps_for_duration(100.05, 0.1)


def test_yaml_duration_not_a_multiple_of_dt():
    text = "dt: 0.1\nduration: 0.05\npopulations: {a: {size: 1, model: lif}}\n"
    with pytest.raises(ConfigError, match=r"^net.yaml:2: duration 0.05 ms is not a multiple of dt = 0.1 ms"):
        load_network(text, filename="net.yaml")


def test_cli_duration_not_a_multiple_of_dt(tmp_path, capsys):
    path = tmp_path / "n.yaml"
    path.write_text("dt: 0.1\npopulations: {a: {size: 1, model: lif}}\n")
    assert main(["run", str(path), "--duration", "0.05"]) == 2
    err = capsys.readouterr().err
    assert err == ("spikeforge: error: --duration: duration 0.05 ms is not a multiple of dt = 0.1 ms "
                   "(nearest: 0.1 ms (1 step))\n")


def test_simulation_run_duration_not_a_multiple_of_dt():
    net = Network("dur", dt=0.1)
    net.add_population("a", 1, m.LEAKY_INTEGRATOR)
    sim = net.build(threads=1)
    try:
        with pytest.raises(NetworkError, match="not a multiple of dt"):
            sim.run(duration=0.05)
        assert sim.step == 0
        sim.run(duration=0.3)
        assert sim.step == 3
    finally:
        sim.close()


# -- non-finite numbers anywhere ------------------------------------------------------------------


@pytest.mark.parametrize("text, line, where", [
    ("populations:\n  a:\n    size: 1\n    model: lif\n    params: {v_th: .nan}\n", 5, "populations.a.params.v_th"),
    ("dt: .inf\npopulations: {a: {size: 1, model: lif}}\n", 1, "dt"),
    ("populations:\n  a: {size: 1, model: lif}\nprojections:\n  p: {pre: a, post: a, delay: -.inf,\n"
     "      weight_update: {model: static_constant, params: {w: 1.0}}, postsynaptic: delta}\n", 4,
     "projections.p.delay"),
    ("populations:\n  a:\n    size: 2\n    model: spike_source_array\n    spikes: {times: [1.0,\n"
     "        .NaN], ids: [0, 1]}\n", 6, "populations.a.spikes.times[1]"),
])
def test_non_finite_numbers_anywhere_in_a_file(text, line, where):
    with pytest.raises(ConfigError) as err:
        load_network(text, filename="net.yaml")
    assert err.value.line == line and str(err.value).startswith(f"net.yaml:{line}: {where}: expected a finite number")


def test_non_finite_numbers_in_a_training_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("data: {kind: digits}\nnetwork: {hidden: {model: lif, size: 4}}\n"
                    "training:\n  clamp: [-.inf, 1.0]\n")
    with pytest.raises(ConfigError, match=r"job.yaml:4: training.clamp\[0\]: expected a finite number, got -inf"):
        load_training(path)
