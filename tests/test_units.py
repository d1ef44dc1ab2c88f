"""Values with units in YAML files (spikeforge.units and the loader's conversion)."""

from pathlib import Path

import numpy as np
import pytest

from spikeforge.config import load_file, load_network
from spikeforge.errors import ConfigError, ModelError
from spikeforge.models.builtins import LIF
from spikeforge.models.neuron import NeuronModel
from spikeforge.training.config import load_training
from spikeforge.units import UnitError, convert, parse_unit

REPO = Path(__file__).resolve().parent.parent
CUBA = REPO / "examples" / "cuba.yaml"


@pytest.mark.parametrize(
    "text, unit, expected",
    [
        ("0.02 s", "ms", 20.0),
        ("20 ms", "ms", 20.0),
        ("1e-3 s", "ms", 1.0),
        ("0.1 ms", "ms", 0.1),  # the very float 0.1, not 0.1 * 1e-3 / 1e-3
        ("10 nS", "nS", 10.0),
        ("0.01 uS", "nS", 10.0),
        ("3 µS", "nS", 3000.0),
        ("200 pF", "pF", 200.0),
        ("0.2 nF", "pF", 200.0),
        ("5 Hz", "Hz", 5.0),
        ("0.005 kHz", "Hz", 5.0),
        ("-50 mV", "mV", -50.0),
        ("-0.05 V", "mV", -50.0),
        ("500 pA", "nA", 0.5),
        ("10 MOhm", "mV/nA", 10.0),
        ("1 uF/cm2", "pF/um^2", 0.01),
        ("20 Hz", "1/ms", 0.02),
        ("2 mV/ms", "V/s", 2.0),
    ],
)
def test_conversions(text, unit, expected):
    assert convert(text, unit, "x") == expected


def test_the_base_units_the_builtins_compute_in():
    assert LIF.units["tau_m"] == "ms" and LIF.units["v_th"] == "mV" and LIF.units["i_syn"] == "nA"
    assert parse_unit("MOhm") == parse_unit("mV/nA")  # r_m * i_syn is a voltage in mV


@pytest.mark.parametrize(
    "text, message",
    [
        ("20 mss", r"unknown unit 'mss'"),
        ("20 m s", r"two units need '\*' or '/'"),
        ("20 ms ms", r"two units need '\*' or '/'"),
        ("20 ms/", r"ends without a unit"),
        ("20 /ms", r"expected a number with a unit"),
        ("20 __import__", r"expected a number with a unit"),
        ("20 ms__import__", r"unknown unit 'ms__import__'"),
        ("5 mV", r"'5 mV' is a voltage, but x is a time \(ms\)"),
        ("1e400 s", r"out of range"),
        ("1e99999999999 s", r"out of range"),  # refused before any exact arithmetic on it
        ("2 ms^99999999", r"powers are -4 to 4"),
        ("1 " + "ms*" * 40 + "ms", r"longer than 64 characters"),
    ],
)
def test_bad_units_in_the_converter(text, message):
    with pytest.raises(UnitError, match=message):
        convert(text, "ms", "x")


def _population(value: str, model: str = "lif", key: str = "tau_m") -> str:
    return f"dt: 0.1\npopulations:\n  exc:\n    size: 4\n    model: {model}\n    params: {{{key}: {value}}}\n"


def test_values_with_units_reach_the_model_converted():
    net, run = load_network(
        "dt: 100 us\nduration: 0.5 s\npopulations:\n"
        "  exc:\n    size: 4\n    model: lif\n"
        "    params: {tau_m: 0.02 s, v_th: -0.05 V, r_m: 10 MOhm, t_ref: 2000 us}\n"
        "    init: {v: {uniform: [-60 mV, -50 mV]}}\n"
        "  src: {size: 2, model: poisson, init: {rate: 0.005 kHz}}\n"
        "projections:\n"
        "  p: {pre: src, post: exc, weight_update: {model: static_constant, params: {w: 500 pA}},\n"
        "      postsynaptic: {model: exp_curr, params: {tau_syn: 5 ms}}, delay: 0.3 ms}\n"
        "  q: {pre: src, post: exc, weight_update: {model: static_constant, params: {w: 1.5 mV}},\n"
        "      postsynaptic: {model: delta, target: v}}\n"
        "current_sources:\n  drive: {population: exc, model: dc, params: {amp: 100 pA}}\n",
        filename="net.yaml",
    )
    assert net.dt == 0.1 and run.duration == 500.0
    exc = net.populations["exc"]
    assert exc.params == {"tau_m": 20.0, "v_rest": -65.0, "v_reset": -65.0, "v_th": -50.0, "r_m": 10.0, "t_ref": 2.0}
    assert (exc.vars["v"].init.low, exc.vars["v"].init.high) == (-60.0, -50.0)
    assert net.populations["src"].vars["rate"].init.value == 5.0  # the poisson model's rate is in Hz
    p = net.projections["p"]
    assert p.wu_params == {"w": 0.5} and p.ps_params == {"tau_syn": 5.0} and p.delay_steps == 3
    assert net.projections["q"].wu_params == {"w": 1.5}  # delta onto v: a weight in mV
    assert net.current_sources["drive"].params == {"amp": 0.1}


def test_wrong_dimension_names_file_line_and_field():
    with pytest.raises(ConfigError) as err:
        load_network(_population("5 mV"), filename="net.yaml")
    assert str(err.value) == (
        "net.yaml:6: populations.exc.params.tau_m: '5 mV' is a voltage, but parameter 'tau_m' of neuron model "
        "'lif' is a time (ms)"
    )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        (
            "dt: 5 mV\npopulations: {a: {size: 1, model: lif}}\n",
            r"^net.yaml:1: dt: '5 mV' is a voltage, but dt is a time",
        ),
        (
            "populations:\n  a: {size: 1, model: lif}\nprojections:\n"
            "  p: {pre: a, post: a, weight_update: {model: static_constant, params: {w: 1.62 mV}},\n"
            "      postsynaptic: exp_curr}\n",
            r"^net.yaml:4: projections.p.weight_update.params.w: '1.62 mV' is a voltage, but parameter 'w' of "
            r"weight-update model 'static_constant' is a current \(nA\)",
        ),
        (
            "populations:\n  a: {size: 1, model: lif}\nprojections:\n"
            "  p: {pre: a, post: a, weight_update: {model: static_constant, params: {w: 1}}, delay: 2 nS,\n"
            "      postsynaptic: exp_curr}\n",
            r"^net.yaml:4: projections.p.delay: '2 nS' is a conductance, but projections.p.delay is a time",
        ),
        (
            "populations:\n  a:\n    size: 1\n    model: lif\n    init: {v: {uniform: [-60 mV, -50 ms]}}\n",
            r"^net.yaml:5: populations.a.init.v: '-50 ms' is a time, but variable 'v' of neuron model 'lif' is "
            r"a voltage \(mV\)",
        ),
    ],
)
def test_wrong_dimensions_elsewhere(yaml_text, message):
    with pytest.raises(ConfigError, match=message):
        load_network(yaml_text, filename="net.yaml")


@pytest.mark.parametrize(
    "value, message",
    [
        ("20 mss", r"unknown unit 'mss'"),
        ("ms", r"'ms' is a unit without a number"),
        ("20 m s", r"cannot read the unit 'm s'"),
        ("20 ms ms", r"cannot read the unit 'ms ms'"),
        ("20 ms*", r"cannot read the unit 'ms\*'"),
        ("20 ms^", r"cannot read the unit 'ms\^'"),
        ("20 kms", r"unknown unit 'kms'"),
    ],
)
def test_malformed_units_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=r"^net.yaml:6: populations.exc.params.tau_m: .*" + message):
        load_network(_population(value), filename="net.yaml")


def test_a_name_without_a_declared_unit():
    # izhikevich's d is in the model's mixed units: no unit is declared, so none is accepted
    with pytest.raises(ConfigError, match=r"^net.yaml:6: .*parameter 'd' of neuron model 'izhikevich' declares no "
                                          r"unit.*give a plain number or declare"):
        load_network(_population("8 mV", "izhikevich", "d"), filename="net.yaml")
    # a plain number keeps its meaning
    net, _ = load_network(_population("8", "izhikevich", "d"), filename="net.yaml")
    assert net.populations["exc"].params["d"] == 8.0
    # a weight onto a user postsynaptic model that declares no unit for in_syn
    text = (
        "models:\n  my_ps: {kind: postsynaptic, apply: i_syn += in_syn}\n"
        "populations: {a: {size: 1, model: lif}}\n"
        "projections:\n  p: {pre: a, post: a, postsynaptic: my_ps,\n"
        "      weight_update: {model: static_constant, params: {w: 1 nA}}}\n"
    )
    with pytest.raises(ConfigError, match=r"^net.yaml:6: .*the unit of the postsynaptic input, but input 'in_syn' "
                                          r"of postsynaptic model 'my_ps' declares no unit"):
        load_network(text, filename="net.yaml")
    net, _ = load_network(text.replace("apply: i_syn += in_syn", "apply: i_syn += in_syn, units: {in_syn: pA}"),
                          filename="net.yaml")
    assert net.projections["p"].wu_params == {"w": 1000.0}


USER_MODEL = """\
models:
  my_lif:
    kind: neuron
    params: {tau: 0.02 s, v_th: -50 mV, g_l: 10 nS, k: null, c: 1}
    vars: {v: {init: -65 mV}}
    units: {k: mV/ms}
    equations: |
      dv/dt = (-65 - v) / tau + k + c * i_syn
    threshold: v > v_th
    reset: v = -65
    refractory: 2 ms
populations:
  a: {size: 2, model: my_lif, params: {k: 0.001 V/s, tau: 10 ms, c: 2}}
"""


def test_user_model_units_declared_and_taken_from_defaults():
    net, _ = load_network(USER_MODEL, filename="net.yaml")
    pop = net.populations["a"]
    assert pop.params == {"tau": 10.0, "v_th": -50.0, "g_l": 10.0, "k": 0.001, "c": 2.0}
    assert pop.model.units == {"k": "mV/ms", "tau": "ms", "v_th": "mV", "g_l": "nS", "v": "mV"}
    assert pop.model.params["tau"] == 20.0 and pop.vars["v"].init.value == -65.0
    assert float(pop.model.refractory) == 2.0


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("k: 0.001 V/s", "k: 1 ms", r"^net.yaml:13: populations.a.params.k: '1 ms' is a time, but parameter 'k' of "
                                    r"neuron model 'my_lif' is a voltage per time \(mV/ms\)"),
        ("units: {k: mV/ms}", "units: {k: mss}", r"^net.yaml:6: model 'my_lif', field 'units.k': unknown unit 'mss'"),
        ("units: {k: mV/ms}", "units: {kk: mV}", r"^net.yaml:6: .*'kk' is not a parameter or variable"),
        ("units: {k: mV/ms}", "units: {}", r"^net.yaml:13: populations.a.params.k: .*declares no unit"),
        ("g_l: 10 nS", "g_l: 10 nS/ms", r"^net.yaml:4: models.my_lif.params.g_l: '10 nS/ms' is a conductance per "
                                        r"time, which has no base unit: declare"),
        ("c: 2}", "c: 2 nA}", r"^net.yaml:13: .*parameter 'c' of neuron model 'my_lif' declares no unit"),
        ("refractory: 2 ms", "refractory: 2 mV", r"^net.yaml:11: models.my_lif.refractory: '2 mV' is a voltage"),
    ],
)
def test_user_model_unit_errors(old, new, message):
    assert old in USER_MODEL
    with pytest.raises(ConfigError, match=message):
        load_network(USER_MODEL.replace(old, new), filename="net.yaml")


def test_time_constants_take_ms_without_a_declaration():
    text = (
        "models:\n  m: {kind: neuron, params: {tau: 10, t_r: 1}, vars: {v: 0},\n"
        "      equations: dv/dt = -v / tau  (unless refractory), threshold: v > 1, refractory: t_r}\n"
        "populations: {a: {size: 1, model: m, params: {tau: 0.03 s, t_r: 500 us}}}\n"
    )
    net, _ = load_network(text, filename="net.yaml")
    assert net.populations["a"].params == {"tau": 30.0, "t_r": 0.5}


def test_python_models_declare_units():
    m = NeuronModel("m", params={"g": 1.0}, vars={"v": 0.0}, equations="dv/dt = -g * v", units={"g": "1/ms"})
    assert m.units == {"g": "1/ms"}
    with pytest.raises(ModelError, match=r"field 'units.g'.*unknown unit 'mss'"):
        NeuronModel("m", params={"g": 1.0}, vars={"v": 0.0}, equations="dv/dt = -g * v", units={"g": "mss"})
    with pytest.raises(ModelError, match=r"'post_input' is only a reference|unknown unit 'post_input'"):
        NeuronModel("m", params={"g": 1.0}, vars={"v": 0.0}, equations="dv/dt = -g * v", units={"g": "post_input"})


def _cuba_with_units() -> str:
    text = CUBA.read_text()
    replacements = [
        ("dt: 0.1 ", "dt: 100 us "),
        ("duration: 1000 ", "duration: 1 s "),
        (
            "params: {tau_m: 20.0, v_rest: -49.0, v_reset: -60.0, v_th: -50.0, r_m: 1.0, t_ref: 5.0}",
            "params: {tau_m: 0.02 s, v_rest: -49 mV, v_reset: -60 mV, v_th: -0.05 V, r_m: 1 MOhm, t_ref: 5 ms}",
        ),
        ("v: {uniform: [-60.0, -50.0]}", "v: {uniform: [-60 mV, -50 mV]}"),
        ("params: {w: 1.62}", "params: {w: 1.62 nA}"),
        ("params: {w: -9.0}", "params: {w: -9000 pA}"),
        ("params: {tau_syn: 5.0}", "params: {tau_syn: 5 ms}"),
        ("params: {tau_syn: 10.0}", "params: {tau_syn: 0.01 s}"),
    ]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_cuba_with_units_gives_the_same_spikes(tmp_path):
    with_units = tmp_path / "cuba_units.yaml"
    with_units.write_text(_cuba_with_units())
    spikes = []
    for path in (CUBA, with_units):
        net, run = load_file(path)
        assert run.duration == 1000.0 and net.dt == 0.1
        sim = net.build(backend="cpu")
        sim.run(duration=100.0)
        spikes.append([sim.spikes(pop)[0] for pop in ("exc", "inh")])
    (plain_exc, plain_inh), (units_exc, units_inh) = spikes
    assert plain_exc[1].size > 100  # the network is active
    for a, b in ((plain_exc, units_exc), (plain_inh, units_inh)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_training_file_values_with_units(tmp_path):
    text = (REPO / "examples" / "digits.yaml").read_text()
    for old, new in (("dt: 1.0", "dt: 1 ms"), ("tau_out: 30.0", "tau_out: 0.03 s"), ("tau_m: 20.0", "tau_m: 20 ms")):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "digits.yaml"
    path.write_text(text)
    job = load_training(path)
    assert job.config.dt == 1.0 and job.config.tau_out == 30.0 and job.config.hidden_params["tau_m"] == 20.0
    path.write_text(text.replace("tau_out: 0.03 s", "tau_out: 30 mV"))
    with pytest.raises(ConfigError, match=r"network.tau_out: '30 mV' is a voltage, but network.tau_out is a time"):
        load_training(path)


def test_spike_times_with_units():
    text = (
        "populations:\n  s:\n    size: 2\n    model: spike_source_array\n"
        "    spikes:\n      times: [1 ms, 0.002 s, 3]\n      ids: [0, 1, 0]\n"
    )
    _, run = load_network(text, filename="net.yaml")
    times, ids = run.spike_inputs["s"]
    assert times.tolist() == [1.0, 2.0, 3.0] and ids.tolist() == [0, 1, 0]
    with pytest.raises(ConfigError, match=r"^net.yaml:6: populations.s.spikes.times: '2 mV' is a voltage"):
        load_network(text.replace("0.002 s", "2 mV"), filename="net.yaml")
