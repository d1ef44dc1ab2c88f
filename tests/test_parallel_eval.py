"""Evaluating a time-parallel network under another spike rule (``Trainer.evaluate(spike=)``),
and the pixel-by-pixel digits (``digits(encoding="pixels")``)."""

import numpy as np
import pytest

from spikeforge.errors import NetworkError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.training.datasets import SpikeDataset
from spikeforge.training.parallel import ParallelCompiler
from spikeforge.training.spike_rules import Threshold
from spikeforge.training.trainer import Trainer

T, B, N_IN, N_HID = 30, 4, 5, 12


def _network(seed=0):
    paralif = NeuronModel("paralif", params={"tau_m": 10.0, "v_th": 0.5}, vars={"v": 0.0},
                          equations="dv/dt = (i_syn - v) / tau_m", threshold="v > v_th")
    rng = np.random.default_rng(seed)
    net = Network("ff", dt=1.0, batch_size=B, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_HID, paralif)
    net.add_population("out", 2, LEAKY_READOUT, dict(tau_m=10.0, bias=np.zeros(2)))
    net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR,
                       wu_init={"w": rng.uniform(0, 1.5, N_IN * N_HID)})
    net.add_projection("hid_out", "hid", "out", STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(0, 1, N_HID * 2)})
    return net


def _data(n=10, seed=1):
    rng = np.random.default_rng(seed)
    pairs = [((rng.random((T, N_IN)) < (0.1 if k % 2 else 0.4)).astype(float), k % 2) for k in range(n)]
    return SpikeDataset.from_pairs(pairs, n_inputs=N_IN, n_outputs=2, dt=1.0, task="classification",
                                   readout_window=(10.0, float(T)))


def _trainer(spike):
    return Trainer(_network(), compiler=ParallelCompiler(spike=spike), inputs="inp", hidden=["hid"], readout="out",
                   trainable=["inp_hid", "hid_out", "out.bias"], batch_size=B, lr=0.02, threads=1)


def _threshold_reference(weights, data):
    """Accuracy, hidden spikes and loss of ``data`` from a network compiled with the Threshold rule
    and given ``weights`` (the trainer's [pre][post] matrices and the readout bias)."""
    net = _network()
    c = ParallelCompiler(spike=Threshold()).compile(net, inputs="inp", hidden=["hid"], readout="out", n_steps=T)
    try:
        c.forward(np.zeros((T, B, N_IN)))  # the initial state first (it reloads the initial weights)
        for name, w in weights.items():
            c.backend.push(name, np.asarray(w, dtype=np.float64).ravel())
        correct, spikes, loss, n = 0, 0.0, 0.0, len(data)
        for start in range(0, n, B):
            samples = [data[i] for i in range(start, min(start + B, n))]
            x, y, mask = data.to_dense(samples)
            m = len(samples)
            xp = np.zeros((T, B, N_IN))
            xp[:, :m] = x
            yp = np.zeros(B, np.int64)
            yp[:m] = y
            out = c.gradients(xp, mask.astype(float), labels=yp, values=True)
            v, z = out["forward"]["out"]["v"], out["forward"]["hid"]["z"]
            pred = v[mask][:, :m].mean(axis=0).argmax(axis=1)
            correct += int((pred == y).sum())
            spikes += float(z[:, :m].sum())
            loss += float(np.asarray(out["loss"])[:m].sum()) / mask.sum()
        return correct / n, spikes, loss / n
    finally:
        c.close()


def test_threshold_evaluation_equals_a_threshold_forward_on_the_same_weights():
    data = _data()
    trainer = _trainer("bernoulli_sigmoid")
    trainer.fit(data, epochs=2, progress=False)
    weights = trainer.weights
    det = trainer.evaluate(data, spike="threshold")
    acc, spikes, loss = _threshold_reference(weights, data)
    assert det["accuracy"] == acc
    assert det["rate_hz"] == pytest.approx(spikes / (len(data) * N_HID * T * 1e-3), rel=1e-12)
    assert det["loss"] == pytest.approx(loss, rel=1e-9)
    # twice the same (no random numbers), and the trained rule, weights and moments are back afterwards
    assert trainer.evaluate(data, spike="threshold") == det
    moments = trainer.runtime.moments()
    stochastic = [trainer.evaluate(data)["rate_hz"] for _ in range(3)]
    assert len(set(stochastic)) > 1  # new draws each pass: the bernoulli rule runs again
    for name, w in trainer.weights.items():
        np.testing.assert_array_equal(w, weights[name])
    for name, m in trainer.runtime.moments().items():
        np.testing.assert_array_equal(m, moments[name])
    trainer.fit(data, epochs=1, progress=False)  # it goes on training with its own rule


def test_threshold_evaluation_of_a_threshold_network_is_its_own_evaluation():
    data = _data()
    trainer = _trainer("threshold")
    trainer.fit(data, epochs=1, progress=False)
    assert trainer.evaluate(data, spike=Threshold()) == trainer.evaluate(data)


def test_evaluate_under_another_rule_is_refused_for_eprop_and_unknown_rules():
    from spikeforge.training.compiler import EpropCompiler

    trainer = Trainer(_network(), compiler=EpropCompiler(), inputs="inp", hidden="hid", readout="out",
                      trainable=["inp_hid", "hid_out"], batch_size=B, threads=1)
    with pytest.raises(NetworkError, match="only a network trained by the time-parallel method"):
        trainer.evaluate(_data(), spike="threshold")
    with pytest.raises(NetworkError, match="spike rule must be one of"):
        _trainer("threshold").evaluate(_data(), spike="nonsense")


# ---- digits shown pixel by pixel ------------------------------------------------------------


@pytest.mark.parametrize("hold,levels", [(1, 1), (3, 1), (2, 4)])
def test_pixel_digits_hold_each_pixel_for_hold_steps(hold, levels):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from spikeforge.training.datasets import digits

    d = digits(encoding="pixels", hold=hold, levels=levels)
    assert (d.n_inputs, d.n_steps, len(d)) == (levels, 64 * hold, 1797)
    x, y, mask = d.to_dense(d[:20])
    assert x.shape == (64 * hold, 20, levels) and mask.all()
    images = load_digits().data[:20]
    np.testing.assert_array_equal(y, load_digits().target[:20])
    cuts = np.maximum(0.0, 16.0 * np.arange(levels) / levels)
    for i in range(64):  # pixel i (row-major) on steps [i hold, (i+1) hold), thermometer-coded
        expected = (images[:, i, None] > cuts).astype(np.float32)
        for k in range(hold):
            np.testing.assert_array_equal(x[i * hold + k], expected)
    with pytest.raises(ValueError, match="shorter than the 64 pixels"):
        digits(encoding="pixels", hold=2, duration=100.0)
    with pytest.raises(ValueError, match="hold must be a positive integer"):
        digits(encoding="pixels", hold=0)


def test_the_pixel_digits_example_loads_as_a_sequence_of_64_steps():
    pytest.importorskip("sklearn")
    from pathlib import Path

    from spikeforge.training.config import load_training

    job = load_training(Path(__file__).resolve().parents[1] / "examples" / "digits_pixels_parallel.yaml")
    assert (job.train.n_inputs, job.train.n_steps, len(job.train) + len(job.test)) == (4, 64, 1797)
    assert isinstance(job.trainer_options["compiler"], ParallelCompiler)
    tau = job.config.populations["h1"].params["tau_m"]
    np.testing.assert_allclose(np.asarray(tau, dtype=float), np.geomspace(2.0, 64.0, 128), rtol=1e-12)
