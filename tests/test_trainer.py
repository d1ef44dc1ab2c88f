"""Trainer: learning happens, batch reduction, checkpoints resume to the same result, bad input."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import NetworkError
from spikeforge.training.datasets import SpikeDataset, SpikeSample
from spikeforge.training.model import EpropConfig
from spikeforge.training.trainer import CheckpointError, Trainer


def _toy(n=48, seed=0):
    """Two classes: channel group 0-3 or 4-7 fires; noise on the rest."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = i % 2
        times, ids = [], []
        for ch in range(12):
            rate = 0.3 if (ch // 4) == label else 0.03
            t = np.nonzero(rng.random(30) < rate)[0]
            times.extend(t.astype(float))
            ids.extend([ch] * t.size)
        samples.append(SpikeSample(np.array(times), np.array(ids), label=label))
    return SpikeDataset.from_samples(samples, n_inputs=12, n_outputs=2, duration=30.0, dt=1.0,
                                     task="classification", readout_window=(20.0, 30.0))


def _config(**kw):
    args = dict(recurrent=True, tau_out=10.0, dt=1.0, name="toy")
    args.update(kw)
    return EpropConfig(12, 16, 2, m.ALIF, dict(tau_m=10.0, tau_a=100.0, v_th=0.6, beta=0.1, r_m=10.0), **args)


def test_training_reduces_the_loss_and_learns_the_toy_task():
    data = _toy()
    trainer = Trainer(_config(), batch_size=8, lr=0.02, seed=3)
    before = trainer.evaluate(data)
    trainer.fit(data, epochs=12, progress=False)
    after = trainer.evaluate(data)
    assert after["loss"] < 0.7 * before["loss"]
    assert after["accuracy"] >= 0.9
    assert trainer.history[-1]["epoch"] == 12 and "train_accuracy" in trainer.history[-1]
    assert trainer.predict(data).shape == (len(data),)


def test_checkpoint_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    data = _toy()
    straight = Trainer(_config(), batch_size=8, lr=0.01, seed=5)
    straight.fit(data, epochs=3, progress=False)
    ckpt = tmp_path / "run.ckpt.npz"
    first = Trainer(_config(), batch_size=8, lr=0.01, seed=5)
    first.fit(data, epochs=1, progress=False, checkpoint=ckpt)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp"))
    resumed = Trainer(_config(), batch_size=8, lr=0.01, seed=5)
    resumed.fit(data, epochs=3, progress=False, checkpoint=ckpt, resume=True)
    for name, w in straight.weights.items():
        np.testing.assert_array_equal(resumed.weights[name], w, err_msg=name)
    assert resumed.epoch == 3 and len(resumed.history) == 3


def test_checkpoint_of_another_network_or_garbage_is_refused(tmp_path):
    data = _toy()
    t = Trainer(_config(), batch_size=8, seed=1)
    t.fit(data, epochs=1, progress=False, checkpoint=tmp_path / "a.npz")
    other = Trainer(_config(recurrent=False, name="toy_ff"), batch_size=8, seed=1)
    with pytest.raises(CheckpointError, match="another network"):
        other.load_checkpoint(tmp_path / "a.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not readable"):
        t.load_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        t.load_checkpoint(tmp_path / "missing.npz")


def test_sum_reduction_steps_like_mean_with_batch_times_the_gradient():
    """Adam is invariant to a constant gradient scale only approximately (eps): check the
    reduction itself through one step of plain arithmetic on the moments."""
    data = _toy(n=8)
    a = Trainer(_config(), batch_size=8, lr=0.0, seed=2, reduce="sum")
    b = Trainer(_config(), batch_size=8, lr=0.0, seed=2, reduce="mean")
    a.fit(data, epochs=1, progress=False)
    b.fit(data, epochs=1, progress=False)
    np.testing.assert_allclose(a._moments["m_w_in"], 8 * b._moments["m_w_in"], rtol=1e-5, atol=1e-9)


def test_mismatched_data_and_bad_settings_are_errors():
    data = _toy()
    with pytest.raises(NetworkError, match="input channels"):
        Trainer(EpropConfig(5, 4, 2, m.ALIF), batch_size=4).fit(data, progress=False)
    with pytest.raises(NetworkError, match="reduce"):
        Trainer(_config(), reduce="max")
    with pytest.raises(NetworkError, match="learning rate"):
        Trainer(_config(), lr=float("nan"), batch_size=8).fit(data, epochs=1, progress=False)
    with pytest.raises(NetworkError, match="refractory"):
        EpropConfig(3, 3, 2, m.LIF, dict(t_ref=2.0))
