"""The time-parallel method's spike rule (``training.spike``) and firing-rate regulariser
(``training.regularisation``) in a job file: ``spikeforge train`` of such a job equals the same
training built in Python with ``ParallelCompiler(spike=..., reg_rate=..., reg_target_hz=...)``,
bit for bit; each mistake is a ConfigError at its line."""

import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training.config import load_training
from spikeforge.training.objectives import Adam
from spikeforge.training.parallel import ParallelCompiler
from spikeforge.training.spike_rules import BernoulliSigmoid, FirstCrossing, Gumbel, Threshold
from spikeforge.training.trainer import Trainer
from tests.test_parallel_trainer import PAR_JOB, PARALIF

W_IN, W_OUT = 0.45, 0.2
#: PAR_JOB with constant initial weights (the Python network below gives the same), a stochastic
#: spike rule and the rate regulariser
JOB = (PAR_JOB
       .replace("inp_hid: {pre: inp, post: hid, weight_update: static,",
                f"inp_hid: {{pre: inp, post: hid, weight_update: {{model: static, init: {{w: {W_IN}}}}},")
       .replace("hid_out: {pre: hid, post: out, weight_update: static,",
                f"hid_out: {{pre: hid, post: out, weight_update: {{model: static, init: {{w: {W_OUT}}}}},")
       .replace("  lr: 0.01\n", "  lr: 0.01\n  spike: bernoulli_sigmoid\n"
                "  regularisation: {rate: 0.5, target_hz: 100.0}\n"))


def _python_trainer(job, spike="bernoulli_sigmoid", reg_rate=0.5, reg_target_hz=100.0):
    """The job of JOB written in Python: the same network, roles and settings."""
    net = Network("par_job", dt=1.0, batch_size=2, precision="double")
    net.add_population("inp", 8, VALUE_INPUT)
    net.add_population("hid", 10, PARALIF)
    net.add_population("out", 2, LEAKY_READOUT, dict(tau_m=10.0, bias=[0.0, 0.0]))
    net.add_projection("inp_hid", "inp", "hid", STATIC, ONE_STEP_CURR, wu_init={"w": np.full(80, W_IN)})
    net.add_projection("hid_out", "hid", "out", STATIC, ONE_STEP_CURR, wu_init={"w": np.full(20, W_OUT)})
    compiler = ParallelCompiler(loss="mse", optimiser=Adam(), spike=spike, reg_rate=reg_rate,
                                reg_target_hz=reg_target_hz)
    return Trainer(net, compiler=compiler, inputs="inp", hidden="hid", readout="out",
                   trainable=["inp_hid", "hid_out", "out.bias"], batch_size=2, lr=0.01, seed=0)


def test_spike_rule_and_regulariser_of_a_job_equal_the_python_job(tmp_path, capsys):
    from spikeforge.cli import main

    path = tmp_path / "par.yaml"
    path.write_text(JOB)
    job = load_training(path)
    compiler = job.trainer_options["compiler"]
    assert isinstance(compiler.spike, BernoulliSigmoid) and compiler.spike.describe() == \
        BernoulliSigmoid().describe()
    assert (compiler.reg_rate, compiler.reg_target_hz) == (0.5, 100.0)

    ck = tmp_path / "ck.npz"
    assert main(["train", str(path), "--epochs", "1", "--checkpoint", str(ck), "--no-progress", "--json"]) == 0
    capsys.readouterr()
    python = _python_trainer(job)
    python.fit(job.train, epochs=1, progress=False)
    resumed = _python_trainer(job)  # the checkpoint of `spikeforge train`: its weights, checked on loading
    resumed.load_checkpoint(ck)
    got, want = resumed.weights, python.weights
    assert set(got) == set(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name

    # the rule and the regulariser take part: the defaults (threshold, no regulariser) train otherwise
    plain = _python_trainer(job, spike="threshold", reg_rate=0.0)
    plain.fit(job.train, epochs=1, progress=False)
    assert any(not np.array_equal(plain.weights[n], want[n]) for n in want)
    noreg = _python_trainer(job, reg_rate=0.0)
    noreg.fit(job.train, epochs=1, progress=False)
    assert not np.array_equal(noreg.weights["inp_hid_w"], want["inp_hid_w"])


@pytest.mark.parametrize("spike, rule, settings", [
    ("threshold", Threshold, {}),
    ("{rule: first_crossing, gradient: fastsnn}", FirstCrossing, {"gradient_kind": "fastsnn"}),
    ("{rule: bernoulli_sigmoid, temperature: 0.25, gradient: spsn}", BernoulliSigmoid,
     {"temperature": 0.25, "gradient_kind": "spsn"}),
    ("{rule: gumbel, temperature: 2.0, hard: false}", Gumbel, {"temperature": 2.0, "hard": False}),
])
def test_each_rule_and_its_options(tmp_path, spike, rule, settings):
    path = tmp_path / "rule.yaml"
    path.write_text(JOB.replace("  spike: bernoulli_sigmoid\n", f"  spike: {spike}\n"))
    got = load_training(path).trainer_options["compiler"].spike
    assert type(got) is rule
    for key, value in settings.items():
        assert getattr(got, key) == value, key


@pytest.mark.parametrize("old, new, line, message", [
    ("  spike: bernoulli_sigmoid\n", "  spike: poisson\n", "  spike: poisson",
     "training.spike: unknown spike rule 'poisson' (known: threshold, first_crossing, bernoulli_sigmoid, gumbel)"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: nope\n", "    rule: nope", "unknown spike rule 'nope'"),
    ("  spike: bernoulli_sigmoid\n", "  spike: {temperature: 0.5}\n", "  spike: {temperature: 0.5}",
     "training.spike: missing required key 'rule'"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: bernoulli_sigmoid\n    temperature: -1.0\n",
     "    temperature: -1.0", "training.spike.temperature: spike rule: temperature must be a positive number"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: bernoulli_sigmoid\n    temperature: warm\n",
     "    temperature: warm", "training.spike.temperature"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: bernoulli_sigmoid\n    gradient: exact\n",
     "    gradient: exact",
     "training.spike.gradient: bernoulli_sigmoid: gradient must be one of straight_through, spsn"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: first_crossing\n    gradient: spsn\n",
     "    gradient: spsn", "training.spike.gradient: first_crossing: gradient must be one of surrogate, fastsnn"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: gumbel\n    hard: maybe\n", "    hard: maybe",
     "training.spike.hard: expected true or false"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: threshold\n    temperature: 2.0\n", "    temperature: 2.0",
     "training.spike.temperature: the threshold rule takes no temperature (its options: none)"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: gumbel\n    gradient: spsn\n", "    gradient: spsn",
     "the gumbel rule takes no gradient (its options: temperature, hard)"),
    ("  spike: bernoulli_sigmoid\n", "  spike:\n    rule: gumbel\n    hot: 1\n", "    hot: 1",
     "training.spike: unknown key 'hot'"),
    ("  method: parallel\n", "  method: eprop\n", "  spike: bernoulli_sigmoid",
     "training.spike: the parallel method's setting"),
    ("  regularisation: {rate: 0.5, target_hz: 100.0}\n", "  regularisation:\n    rate: -0.5\n", "    rate: -0.5",
     "training.regularisation.rate: must be a finite number >= 0"),
    ("  regularisation: {rate: 0.5, target_hz: 100.0}\n", "  regularisation:\n    rat: 0.5\n", "    rat: 0.5",
     "training.regularisation: unknown key 'rat'"),
])
def test_errors_name_the_line(tmp_path, old, new, line, message):
    text = JOB.replace(old, new)
    assert text != JOB
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert err.value.line == text.splitlines().index(line) + 1, str(err.value)
