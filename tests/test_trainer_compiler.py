"""The Trainer on the training compiler's path.

An EpropConfig is translated into a Network + EpropCompiler; trained by the Trainer it must
give the weights of the same training done in numpy (tests/eprop_reference.py's gradients and
Adam, the trainer's shuffling), resume from checkpoints, load the EpropConfig form of the
training YAML through the translation, and train networks described in the network form."""

import numpy as np
import pytest

from spikeforge.errors import ConfigError, NetworkError
from spikeforge.training.config import load_training
from spikeforge.training.network_runtime import CompiledRuntime
from spikeforge.training.schedules import StepDecay
from spikeforge.training.trainer import Trainer
from tests.eprop_reference import adam_step, eprop_gradients, forward
from tests.test_trainer import _config, _toy

#: tests.test_trainer._config's hidden layer in the reference's terms; its r_m = 10 scales the
#: input current, so the reference runs with r_m W and d/dW = r_m d/d(r_m W).
R_M = 10.0
TOY = dict(dt=1.0, tau_m=10.0, tau_a=100.0, tau_out=10.0, v_th=0.6, beta=0.1, gamma=0.3)


def _same_bits(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert a.tobytes() == b.tobytes(), f"{what}: differs by up to {np.max(np.abs(a - b)):.3g}"


def _reference_run(w):
    return {"W_in": R_M * w["w_in"], "W_rec": R_M * w["w_rec"], "W_out": w["w_out"], "b": w["b_out"]}


def _numpy_training(data, initial, *, epochs, batch_size, seed, lr, reduce="mean", clamp=None):
    """What Trainer.fit does, in numpy: the same shuffling (the trainer's PCG64 stream), the
    reference's gradients, the batch reduced by its mean or sum, eprop_reference.adam_step
    (Adam's default constants), the clamp on the hidden weights. Returns the weights and the
    last epoch's mean loss per step of the readout window."""
    rng = np.random.Generator(np.random.PCG64(seed))
    w = {k: np.array(v, dtype=np.float64) for k, v in initial.items()}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in w.items()}
    keys = {"w_in": "W_in", "w_rec": "W_rec", "w_out": "W_out", "b_out": "b"}
    step = 0
    for epoch in range(epochs):
        order, loss = rng.permutation(len(data)), 0.0
        for start in range(0, len(data), batch_size):
            x, y, mask = data.to_dense([data[int(i)] for i in order[start: start + batch_size]])
            g = eprop_gradients(x, y, mask, TOY, _reference_run(w), loss="xent")
            loss += g["loss"] / mask.sum()
            step += 1
            rate = lr(epoch, step) if callable(lr) else lr
            scale = 1.0 / x.shape[1] if reduce == "mean" else 1.0
            for name, key in keys.items():
                grad = g[key] * (R_M if name in ("w_in", "w_rec") else 1.0) * scale
                w[name], *m_v = adam_step(w[name], grad, *moments[name], step, rate)
                moments[name] = tuple(m_v)
                if clamp is not None and name in ("w_in", "w_rec"):
                    w[name] = np.clip(w[name], *clamp)
    return w, loss / len(data)


@pytest.mark.parametrize("options", [
    {"lr": 0.01},
    {"lr": StepDecay(0.02, every=1, factor=0.5), "reduce": "sum", "clamp": (-0.3, 0.3)},
], ids=["plain", "schedule-sum-clamp"])
def test_trainer_equals_the_same_training_in_numpy(options):
    """36 samples = 4 batches of 8 and one of 4 (the padded last batch counts too), 2 epochs.
    Double precision, to rounding (numpy sums in another order), not bit for bit."""
    data = _toy(n=36)
    trainer = Trainer(_config(precision="double", name="h9_pair"), batch_size=8, seed=5, threads=1, **options)
    assert isinstance(trainer.runtime, CompiledRuntime)
    initial = trainer.weights
    trainer.fit(data, epochs=2, progress=False)
    assert trainer.step == 10
    want, loss = _numpy_training(data, initial, epochs=2, batch_size=8, seed=5, **options)
    for name, w in trainer.weights.items():
        assert np.any(w != initial[name]), f"{name} did not move"
        np.testing.assert_allclose(w, want[name], rtol=1e-10, atol=1e-13, err_msg=name)
    assert trainer.history[-1]["train_loss"] == pytest.approx(loss, rel=1e-10)
    test = _toy(n=8, seed=1)
    x, _, mask = test.to_dense()
    y = forward(x, TOY, _reference_run(want))["y"]
    np.testing.assert_array_equal(trainer.predict(test), y[mask].mean(axis=0).argmax(axis=1))
    if "clamp" in options:
        assert np.abs(trainer.weights["w_in"]).max() == 0.3


def test_the_trainer_runs_on_the_compiler():
    trainer = Trainer(_config(precision="double", name="h9_default"), batch_size=4)
    assert isinstance(trainer.runtime, CompiledRuntime)
    with pytest.raises(TypeError, match="engine"):  # the second pipeline is gone, and its switch
        Trainer(_config(name="h9_default"), engine="kernel")


def test_checkpoints_resume_on_the_compiler_path(tmp_path):
    data = _toy(n=16)

    def trainer():
        return Trainer(_config(precision="double", name="h9_ckpt"), batch_size=8, lr=0.01, seed=2, threads=1)

    straight = trainer()
    straight.fit(data, epochs=4, progress=False)
    path = tmp_path / "ckpt.npz"
    a = trainer()
    a.fit(data, epochs=2, progress=False, checkpoint=path)
    b = trainer()
    b.fit(data, epochs=4, progress=False, checkpoint=path, resume=True)
    assert b.step == straight.step == 8
    for name, w in straight.weights.items():
        _same_bits(b.weights[name], w, f"{name} (resumed)")


OLD_JOB = """\
name: h9_old_job
dt: 1.0
data:
  kind: pattern_generation
  options: {n_outputs: 2, duration: 30.0, n_inputs: 8}
  n_samples: 6
  test_fraction: 0.0
network:
  hidden:
    model: alif
    size: 10
    params: {tau_m: 20.0, tau_a: 50.0, v_th: 0.6, beta: {values: [0.0, 0.2], counts: [5, 5]}, r_m: 20.0}
  recurrent: true
  tau_out: 20.0
  precision: double
  regularisation: {rate: 0.3, target_hz: 10.0}
training:
  epochs: 2
  batch_size: 4
  lr: 0.01
"""


def test_the_old_yaml_trains_through_the_translation(tmp_path):
    """The EpropConfig form of the YAML (per-neuron beta, rate regularisation, mse) trains on
    the compiled network; test_the_new_yaml_form_equals_the_old_form_of_the_same_network
    checks its training against the network form of the same job."""
    path = tmp_path / "old.yaml"
    path.write_text(OLD_JOB)
    job = load_training(path)
    trainer = Trainer(job.config, threads=1, **job.trainer_options)
    assert isinstance(trainer.runtime, CompiledRuntime)
    initial = trainer.weights
    trainer.fit(job.train, epochs=job.epochs, progress=False)
    assert trainer.step == 4 and np.isfinite(trainer.history[-1]["train_mse"])
    for name, w in trainer.weights.items():
        assert np.any(w != initial[name]), f"{name} did not move"


NEW_JOB = """\
name: h9_new_job
dt: 1.0
data:
  kind: pattern_generation
  options: {n_outputs: 2, duration: 30.0, n_inputs: 8}
  n_samples: 6
  test_fraction: 0.0
network:
  precision: double
  populations:
    inp: {size: 8, model: value_input}
    hid:
      size: 10
      model: alif
      params: {tau_m: 20.0, tau_a: 50.0, v_th: 0.6, beta: {values: [0.0, 0.2], counts: [5, 5]}, r_m: 20.0}
    out: {size: 2, model: leaky_readout, params: {tau_m: 20.0, bias: {values: [0.0], counts: [2]}}}
  projections:
    inp_hid: {pre: inp, post: hid, weight_update: scaled, postsynaptic: one_step_curr}
    hid_hid: {pre: hid, post: hid, weight_update: static, postsynaptic: one_step_curr}
    hid_out: {pre: hid, post: out, weight_update: static, postsynaptic: one_step_curr}
training:
  inputs: inp
  hidden: hid
  readout: out
  trainable: [inp_hid, hid_hid, hid_out, out.bias]
  regularisation: {rate: 0.3, target_hz: 10.0}
  epochs: 2
  batch_size: 4
  lr: 0.01
"""


@pytest.mark.slow
def test_the_new_yaml_form_equals_the_old_form_of_the_same_network(tmp_path):
    """The same network written both ways, started from the same weights: the same training."""
    (tmp_path / "old.yaml").write_text(OLD_JOB)
    (tmp_path / "new.yaml").write_text(NEW_JOB)
    old_job, new_job = load_training(tmp_path / "old.yaml"), load_training(tmp_path / "new.yaml")
    old = Trainer(old_job.config, threads=1, **old_job.trainer_options)
    new = Trainer(new_job.config, threads=1, **new_job.trainer_options)
    w = old.weights
    new.runtime.set_weights({"inp_hid_w": w["w_in"].T, "hid_hid_w": w["w_rec"].T, "hid_out_w": w["w_out"].T,
                             "out_p_bias": w["b_out"]})
    for t in (old, new):
        t.fit(old_job.train, epochs=2, progress=False)
    got = new.weights
    for name, mine in (("w_in", "inp_hid_w"), ("w_rec", "hid_hid_w"), ("w_out", "hid_out_w")):
        assert np.any(got[mine] != w[name].T), name
        _same_bits(np.ascontiguousarray(got[mine].T), old.weights[name], name)
    _same_bits(got["out_p_bias"], old.weights["b_out"], "bias")


def test_the_new_yaml_form_checkpoints_and_resumes(tmp_path):
    (tmp_path / "new.yaml").write_text(NEW_JOB)
    job = load_training(tmp_path / "new.yaml")
    straight = Trainer(job.config, threads=1, **job.trainer_options)
    straight.fit(job.train, epochs=3, progress=False)
    first = Trainer(job.config, threads=1, **job.trainer_options)
    first.fit(job.train, epochs=1, progress=False, checkpoint=tmp_path / "ck.npz")
    resumed = Trainer(job.config, threads=1, **job.trainer_options)
    resumed.fit(job.train, epochs=3, progress=False, checkpoint=tmp_path / "ck.npz", resume=True)
    for name, w in straight.weights.items():
        _same_bits(resumed.weights[name], w, name)
    other = load_training(tmp_path / "new.yaml")
    other.config.populations["hid"].params["tau_m"] = 25.0
    from spikeforge.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="tau_m"):
        Trainer(other.config, threads=1, **other.trainer_options).load_checkpoint(tmp_path / "ck.npz")


@pytest.mark.parametrize("old, new, line, message", [
    ("  hidden: hid\n", "  hidden: [hid, hidd]\n", "  hidden: [hid, hidd]",
     "training.hidden: no population 'hidd' in network.populations (inp, hid, out)"),
    ("trainable: [inp_hid, hid_hid, hid_out, out.bias]", "trainable: [inp_hid, hid_hidd]",
     "  trainable: [inp_hid, hid_hidd]", "training.trainable: no projection 'hid_hidd'"),
    ("    inp: {size: 8,", "    inp: {size: 9,", "  inputs: inp",
     "training.inputs: population 'inp' has 9 neurons, the data 8 input channels"),
    ("  lr: 0.01\n", "  lr: 0.01\n  init_scale: 2.0\n", "  init_scale: 2.0", "unknown key 'init_scale'"),
    ("  precision: double\n", "  precision: double\n  dt: 0.5\n", "  dt: 0.5", "network.dt: must equal the job's dt"),
    ("  lr: 0.01\n", "  lr: 0.01\n  loss: xent\n", "  loss: xent", "the data is a regression task"),
    ("  lr: 0.01\n", "  lr: 0.01\n  optimiser: {kind: rmsprop}\n", "  optimiser: {kind: rmsprop}",
     "training.optimiser.kind: expected adam or sgd"),
])
def test_new_yaml_form_errors_name_the_line(tmp_path, old, new, line, message):
    text = NEW_JOB.replace(old, new)
    assert text != NEW_JOB
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert message in str(err.value)
    assert err.value.line == text.splitlines().index(line) + 1, str(err.value)


def test_spikeforge_train_runs_the_new_yaml_form(tmp_path, capsys):
    import json

    from spikeforge.cli import main

    path = tmp_path / "new.yaml"
    path.write_text(NEW_JOB.replace("test_fraction: 0.0", "test_fraction: 0.5"))
    assert main(["train", str(path), "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["train_samples"] == 3 and out["test_samples"] == 3
    assert "train_nmse" in out and "test_nmse" in out and out["test_mse"] > 0


@pytest.mark.slow
def test_a_network_trained_with_sgd_checkpoints_and_steps_by_minus_lr_times_the_mean_gradient(tmp_path):
    """The compiler's optimiser takes the steps; the trainer's lr replaces its learning rate."""
    from spikeforge.training.objectives import SGD

    text = NEW_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  optimiser: {kind: sgd}\n")
    for name, init in (("scaled", "randn()"), ("static", "randn() / 3")):  # random weights: the layer spikes
        text = text.replace(f"weight_update: {name},", f"weight_update: {{model: {name}, init: {{w: '{init}'}}}},")
    (tmp_path / "new.yaml").write_text(text)
    job = load_training(tmp_path / "new.yaml")
    assert isinstance(job.trainer_options["compiler"].optimiser, SGD)
    trainer = Trainer(job.config, threads=1, **dict(job.trainer_options, batch_size=6, lr=0.05))
    before = trainer.weights
    x, y, mask = job.train.to_dense([job.train[i] for i in range(6)])
    grads = trainer.runtime.run_batch(x, mask, targets=y)["grads"]
    trainer._apply(6, 0)
    for name, w in trainer.weights.items():
        assert np.abs(grads[name]).max() > 0, name
        expected = (before[name].astype(np.float64) - 0.05 * grads[name].sum(axis=0) / 6).astype(w.dtype)
        np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-15, err_msg=name)
    trainer.save_checkpoint(tmp_path / "sgd.npz")
    again = Trainer(job.config, threads=1, **dict(job.trainer_options, batch_size=6, lr=0.05))
    again.load_checkpoint(tmp_path / "sgd.npz")
    for name, w in trainer.weights.items():
        _same_bits(again.weights[name], w, name)


def test_a_network_job_refuses_what_belongs_to_an_eprop_config(tmp_path):
    (tmp_path / "new.yaml").write_text(NEW_JOB)
    job = load_training(tmp_path / "new.yaml")
    with pytest.raises(NetworkError, match="init_scale applies to an EpropConfig only"):
        Trainer(job.config, init_scale=2.0, **job.trainer_options)
    with pytest.raises(NetworkError, match="the optimiser is the compiler's"):
        from spikeforge.training.trainer import Adam

        Trainer(job.config, optimizer=Adam(), **job.trainer_options)
    with pytest.raises(NetworkError, match="needs compiler=EpropCompiler"):
        Trainer(job.config)
