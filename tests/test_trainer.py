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
    a = Trainer(_config(), batch_size=8, lr=1e-3, seed=2, reduce="sum")
    b = Trainer(_config(), batch_size=8, lr=1e-3, seed=2, reduce="mean")
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


# -- the loss is a mean per step ----------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 5, 10])
def test_an_untrained_classifier_reports_about_ln_c(classes):
    """Cross-entropy at chance is ln C per step (it was summed over the readout window: 10x
    here); random data, an untrained network, Python's list of (x, y) pairs."""
    rng = np.random.default_rng(classes)
    pairs = [((rng.random((40, 12)) < 0.1).astype(np.float32), int(rng.integers(classes))) for _ in range(24)]
    config = EpropConfig(12, 16, classes, m.ALIF, dict(tau_m=10.0, tau_a=100.0, v_th=0.6, beta=0.1, r_m=10.0),
                         tau_out=10.0, name=f"chance{classes}")
    trainer = Trainer(config, batch_size=8, lr=1e-3, seed=0)
    loss = trainer.evaluate(pairs)["loss"]
    assert abs(loss - np.log(classes)) < 0.15 * np.log(classes), loss
    history = trainer.fit(pairs, epochs=1, progress=False)
    assert abs(history[-1]["train_loss"] - np.log(classes)) < 0.15 * np.log(classes), history


def test_the_regression_loss_is_half_the_squared_error_of_one_step():
    """mse loss per step = 0.5 * sum over the outputs of the squared error, averaged over the
    readout window: with the readout untrained (zero at the start), it is 0.5 * |target|^2."""
    rng = np.random.default_rng(1)
    steps, target = 30, np.full((30, 2), 0.5)
    pairs = [((rng.random((steps, 12)) < 0.05).astype(np.float32), target) for _ in range(8)]
    config = EpropConfig(12, 16, 2, m.ALIF, dict(tau_m=10.0, tau_a=100.0, v_th=5.0, beta=0.1, r_m=10.0),
                         tau_out=10.0, loss="mse", name="toy_mse")
    trainer = Trainer(config, batch_size=8, seed=0)
    logs = trainer.evaluate(pairs)
    assert logs["rate_hz"] == 0  # no hidden spikes: the readout stays 0
    assert logs["loss"] == pytest.approx(0.5 * 2 * 0.25, rel=1e-6)  # 0.25, not 30 steps x 0.25
    assert logs["mse"] == pytest.approx(0.25, rel=1e-6)


# -- plain (x, y) pairs ---------------------------------------------------------------------------


def test_fit_accepts_a_list_of_pairs_and_learns_as_from_the_data_set():
    toy = _toy(n=16)  # the same trials with the readout window of plain pairs: the whole trial
    data = SpikeDataset.from_samples(list(toy), n_inputs=12, n_outputs=2, duration=30.0, dt=1.0)
    x, y, _ = data.to_dense()
    pairs = [(x[:, i, :], int(y[i])) for i in range(len(data))]
    from_pairs = Trainer(_config(), batch_size=8, lr=0.01, seed=5)
    from_pairs.fit(pairs, epochs=2, progress=False, validation=pairs[:4])
    from_set = Trainer(_config(), batch_size=8, lr=0.01, seed=5)
    from_set.fit(data, epochs=2, progress=False, validation=data[:4])
    for name, w in from_set.weights.items():
        np.testing.assert_array_equal(from_pairs.weights[name], w, err_msg=name)
    assert from_pairs.history[-1]["val_loss"] == from_set.history[-1]["val_loss"]
    assert list(from_pairs.predict(pairs)) == list(from_set.predict(data))


@pytest.mark.parametrize("data,needle", [
    ([(np.zeros((30, 12)), 0), (np.zeros((30, 5)), 1)], "pair 1: x must have shape (n_steps, n_inputs=12)"),
    ([(np.zeros((30, 12)), 0), (np.zeros((20, 12)), 1)], "pair 1: x has 20 steps, pair 0 has 30"),
    ([(np.full((30, 12), 0.5), 0)], "pair 0: x must hold spikes, 0 or 1"),
    ([(np.zeros((30, 12)), 2)], "pair 0: y must be a class, an integer in [0, 2), got 2"),
    ([(np.zeros((30, 12)), 0.5)], "y must be a class"),
    ([(np.zeros((30, 12)), 0, 1)], "item 0 is not an (x, y) pair"),
    ([], "no (x, y) pairs"),
    ({"x": 1}, "must be a SpikeDataset or a list of (x, y) pairs, got dict"),
    ("data.npz", "got str"),
])
def test_bad_pairs_are_clear_errors(data, needle):
    trainer = Trainer(_config(), batch_size=8, seed=5)
    with pytest.raises(NetworkError) as err:
        trainer.fit(data, epochs=1, progress=False)
    assert needle in str(err.value) and "training data" in str(err.value), str(err.value)


def test_empty_data_is_refused_not_scored_zero():
    trainer = Trainer(_config(), batch_size=8, seed=5)
    with pytest.raises(NetworkError, match="the training data has no samples"):
        trainer.fit(_toy(n=4)[:0], epochs=1, progress=False)
    with pytest.raises(NetworkError, match="the evaluation data has no samples"):
        trainer.evaluate(_toy(n=4)[:0])


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("options,needle", [
    (dict(lr=0.0), "lr (the learning rate) must be positive"),
    (dict(lr=-1e-3), "must be positive"),
    (dict(lr=float("inf")), "must be a finite number"),
    (dict(lr="0.01"), "must be a finite number"),
    (dict(init_scale=0.0), "init_scale must be positive"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(threads=0), "threads must be a positive integer"),
    (dict(clamp=(1.0, -1.0)), "low < high"),
    (dict(clamp=(float("nan"), 1.0)), "clamp's low must be a finite number"),
])
def test_bad_trainer_settings_are_refused(options, needle):
    with pytest.raises(NetworkError) as err:
        Trainer(_config(), batch_size=8, **options)
    assert needle in str(err.value), str(err.value)


def test_bad_adam_constants_and_epochs_are_refused():
    from spikeforge.training.trainer import Adam

    with pytest.raises(NetworkError, match=r"beta1 must be in \[0, 1\)"):
        Trainer(_config(), optimizer=Adam(beta1=1.0))
    with pytest.raises(NetworkError, match="eps must be positive"):
        Trainer(_config(), optimizer=Adam(eps=0.0))
    with pytest.raises(NetworkError, match="epochs must be a positive integer"):
        Trainer(_config(), batch_size=8).fit(_toy(n=8), epochs=0, progress=False)


# -- divergence -----------------------------------------------------------------------------------


def test_a_diverging_run_stops_with_the_epoch_step_and_weight_named():
    trainer = Trainer(_config(), batch_size=8, lr=1e38, seed=0)  # float32 weights overflow within a few steps
    from spikeforge.training.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged) as err:
        trainer.fit(_toy(), epochs=5, progress=False)
    message = str(err.value)
    assert message.startswith(f"training diverged in epoch 1 at optimiser step {trainer.step}: ")
    assert "weight 'w_in' has" in message and "non-finite values" in message and "1e+38" in message, message
    assert trainer.history == []  # the epoch never completed: nothing reported as if it had


def test_a_recurrent_diagonal_set_on_an_epropconfig_stays_zero():
    """An EpropConfig has no self-connections: weights set with a diagonal in w_rec (e.g. from
    another tool) train as if it were zero, and the trainer reports it as zero."""
    data = _toy(16)
    trainers = [Trainer(_config(), batch_size=8, lr=0.01, seed=2) for _ in range(2)]
    w = {k: v.copy() for k, v in trainers[0].weights.items()}
    with_diagonal = w["w_rec"] + np.diag(np.full(16, 0.5, dtype=w["w_rec"].dtype))
    trainers[0].runtime.set_weights({"w_rec": w["w_rec"]})
    trainers[1].runtime.set_weights({"w_rec": with_diagonal})
    assert not np.diag(trainers[1].weights["w_rec"]).any()
    for t in trainers:
        t.fit(data, epochs=1, progress=False)
    for name in w:
        np.testing.assert_array_equal(trainers[1].weights[name], trainers[0].weights[name], err_msg=name)
