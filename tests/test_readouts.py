"""Readouts that aggregate over the window (sum, mean, max, last) and the per-step one: the
compiled gradients against a plain numpy computation (tests/eprop_reference_readouts.py),
finite differences of the readout weights' gradient, the two passes' trajectories, the
errors, the trainer's predictions and a task learned with the mean readout."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import NetworkError
from spikeforge.models.builtins import LEAKY_READOUT, NOISE, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training import objectives
from spikeforge.training.compiler import EpropCompiler
from spikeforge.training.objectives import SGD, MeanReadout, make_readout
from tests.eprop_reference import forward
from tests.eprop_reference_readouts import (
    READOUTS,
    aggregate,
    aggregated_error,
    aggregated_loss,
    eprop_gradients_from_error,
)

N_IN, N_H, K, T = 4, 5, 3, 30
TAU_OUT, DT = 12.0, 1.0
HIDDEN = dict(tau_m=10.0, tau_a=30.0, v_th=0.6, beta=0.4, t_ref=0.0)
REFERENCE = dict(dt=DT, tau_m=10.0, tau_a=30.0, tau_out=TAU_OUT, v_th=0.6, beta=0.4, gamma=0.3)
TRAINABLE = ["inp_hid", "hid_hid", "hid_out", "out.bias"]
NAMES = {"W_in": ("inp_hid_w", N_IN, N_H), "W_rec": ("hid_hid_w", N_H, N_H), "W_out": ("hid_out_w", N_H, K)}


def _problem(seed, batch, loss):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, batch, N_IN)) < 0.4) * rng.uniform(0.3, 1.0, (T, batch, N_IN))
    w = {"W_in": rng.uniform(0.0, 1.5, (N_H, N_IN)), "W_rec": rng.normal(0.0, 0.6, (N_H, N_H)),
         "W_out": rng.normal(0.0, 1.0, (K, N_H)), "b": rng.normal(0.0, 0.3, K)}
    np.fill_diagonal(w["W_rec"], 0.0)
    mask = np.zeros(T)
    mask[T // 3: T - 4] = 1.0  # the window ends before the trial does: "last" is not the last step
    target = rng.integers(0, K, batch) if loss == "xent" else rng.normal(0.0, 0.5, (T, batch, K))
    return x, mask, target, w


def _network(batch, w, name="readouts", noise=False):
    net = Network(f"{name}_{batch}", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, m.ALIF, HIDDEN)
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=list(w["b"])))
    net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR, wu_init={"w": w["W_in"].T.ravel()})
    net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR, wu_init={"w": w["W_rec"].T.ravel()})
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": w["W_out"].T.ravel()})
    if noise:  # random numbers in every step of the trial (Philox, counted by step)
        net.add_current_source("jitter", "hid", NOISE, dict(mean=0.0, sd=0.5))
    return net


def _compile(batch, w, loss, readout, backend="cpu", **kw):
    compiler = EpropCompiler(loss=loss, readout=readout, optimiser=SGD(lr=0.1))
    return compiler.compile(_network(batch, w, **kw), inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE,
                            n_steps=T, backend=backend)


def _run(compiled, x, mask, target, loss, learn=True):
    labels, targets = (target, None) if loss == "xent" else (None, target)
    return compiled.run_batch(x, mask, labels=labels, targets=targets, learn=learn)


def _check_against_reference(out, x, mask, target, w, loss, readout, batch):
    E, err = aggregated_error(out["y"], target, mask, loss, readout)
    np.testing.assert_allclose(out["loss"], E, rtol=1e-12, atol=1e-14)
    ref = eprop_gradients_from_error(x, err, REFERENCE, w)
    for name, (array, n_pre, n_post) in NAMES.items():
        ours = out["grads"][array].reshape(batch, n_pre, n_post).transpose(0, 2, 1)
        assert np.abs(ref[name]).max() > 0, name
        np.testing.assert_allclose(ours, ref[name], rtol=1e-9, atol=1e-12 * np.abs(ref[name]).max(), err_msg=name)
    np.testing.assert_allclose(out["grads"]["out_p_bias"].reshape(batch, K), ref["b"], rtol=1e-9, atol=1e-14)


CASES = [(r, loss, b) for r in READOUTS for loss in ("xent", "mse") for b in (1, 3)]


@pytest.mark.parametrize("readout,loss,batch", CASES, ids=[f"{r}-{loss}-B{b}" for r, loss, b in CASES])
def test_compiled_gradients_equal_numpy(readout, loss, batch):
    x, mask, target, w = _problem(3, batch, loss)
    compiled = _compile(batch, w, loss, readout)
    out = _run(compiled, x, mask, target, loss)
    assert out["hidden_spikes"].sum() > 0
    _check_against_reference(out, x, mask, target, w, loss, readout, batch)
    # the output of each trial: the aggregate (per_step: the mean over the window, for predictions)
    expected = out["y"][mask > 0].mean(axis=0) if readout == "per_step" else aggregate(out["y"], mask, readout)[0]
    np.testing.assert_allclose(out["output"], expected, rtol=1e-13, atol=1e-15)


def test_aggregated_readouts_give_other_errors_than_per_step():
    """Each readout's error table differs from the others' (the test above tells them apart)."""
    x, mask, target, w = _problem(3, 2, "xent")
    y = np.random.default_rng(0).normal(size=(T, 2, K))
    errs = [aggregated_error(y, target, mask, "xent", r)[1] for r in READOUTS]
    for i in range(len(errs)):
        for j in range(i):
            assert not np.allclose(errs[i], errs[j]), (READOUTS[i], READOUTS[j])


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_readout_weight_gradient_equals_finite_differences(loss):
    """The readout weights' and bias's e-prop gradient is exact: central differences of the
    aggregated loss of the numpy forward pass (no spike moves: the readout is downstream)."""
    batch, h = 2, 1e-6
    x, mask, target, w = _problem(5, batch, loss)
    for readout in READOUTS[1:]:
        _, err = aggregated_error(forward(x, REFERENCE, w)["y"], target, mask, loss, readout)
        g = eprop_gradients_from_error(x, err, REFERENCE, w)
        for name in ("W_out", "b"):
            analytic = g[name].sum(axis=0)
            numeric = np.zeros_like(analytic)
            for idx in np.ndindex(*analytic.shape):
                plus, minus = {k: v.copy() for k, v in w.items()}, {k: v.copy() for k, v in w.items()}
                plus[name][idx] += h
                minus[name][idx] -= h
                numeric[idx] = (aggregated_loss(x, target, mask, REFERENCE, plus, loss, readout)
                                - aggregated_loss(x, target, mask, REFERENCE, minus, loss, readout)) / (2 * h)
            assert np.abs(analytic).max() > 0
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7 * np.abs(analytic).max(),
                                       err_msg=f"{readout}: {name}")


def test_the_learning_pass_runs_the_forward_pass_again_bit_for_bit():
    """With noise drawn every step, the forward-only pass and the learning pass (each from a
    reset: the step counter, hence the Philox counters, start again) give the same readout
    and spikes, and run_batch checks it (a RuntimeError otherwise)."""
    batch, loss = 3, "xent"
    x, mask, target, w = _problem(7, batch, loss)
    compiled = _compile(batch, w, loss, "mean", name="noisy", noise=True)
    forward = _run(compiled, x, mask, target, loss, learn=False)
    learned = _run(compiled, x, mask, target, loss)
    assert forward["y"].tobytes() == learned["y"].tobytes()
    assert forward["hidden_spikes"].tobytes() == learned["hidden_spikes"].tobytes()
    assert forward["loss"].tobytes() == learned["loss"].tobytes()
    # the noise matters: without it, the trial is another one
    quiet = _run(_compile(batch, w, loss, "mean"), x, mask, target, loss, learn=False)
    assert not np.array_equal(quiet["y"], forward["y"])


def test_unknown_readouts_and_empty_windows_are_refused():
    assert tuple(objectives.READOUTS) == READOUTS  # the readouts tested are all there are
    with pytest.raises(NetworkError, match="readout must be one of per_step, sum, mean, max, last"):
        EpropCompiler(readout="median")
    with pytest.raises(NetworkError, match="readout must be one of"):
        make_readout(3)
    assert isinstance(make_readout(MeanReadout()), MeanReadout)
    x, mask, target, w = _problem(3, 1, "xent")
    compiled = _compile(1, w, "xent", "last")
    with pytest.raises(NetworkError, match="readout 'last': the mask selects no step"):
        compiled.run_batch(x, np.zeros(T), labels=target)
    with pytest.raises(NetworkError, match="labels must be 1 integers"):
        compiled.run_batch(x, mask, labels=np.array([K]))


def test_cuda_emu_equals_numpy():
    batch, loss, readout = 2, "mse", "max"
    x, mask, target, w = _problem(11, batch, loss)
    out = _run(_compile(batch, w, loss, readout, backend="cuda-emu"), x, mask, target, loss)
    _check_against_reference(out, x, mask, target, w, loss, readout, batch)


def _pairs(rng, n, steps=40):
    """Two classes: class 0 fires inputs 0-3, class 1 inputs 4-7 (rate 0.3 per step)."""
    labels = np.arange(n) % 2
    out = []
    for c in labels:
        channels = (np.arange(8) < 4) if c == 0 else (np.arange(8) >= 4)
        out.append((((rng.random((steps, 8)) < 0.3) * channels).astype(np.uint8), int(c)))
    return out


def _task_network(batch, rng):
    net = Network("mean_task", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", 8, VALUE_INPUT)
    net.add_population("hid", 10, m.LIF_SUBTRACTIVE, dict(tau_m=20.0, v_th=0.6, r_m=1.0))
    net.add_population("out", 2, LEAKY_READOUT, dict(tau_m=20.0, bias=[0.0, 0.0]))
    net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR,
                       wu_init={"w": rng.uniform(0.0, 1.0, 80)})
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(0.0, 0.1, 20)})
    return net


def test_a_trainer_learns_a_two_class_task_with_the_mean_readout():
    """Trainer over a network compiled with readout="mean": accuracy from the mean output,
    loss per trial (ln 2 at chance), predictions that agree with the reported accuracy."""
    from spikeforge.training.trainer import Trainer

    rng = np.random.default_rng(4)
    train, test = _pairs(rng, 32), _pairs(rng, 32)
    trainer = Trainer(_task_network(8, rng), compiler=EpropCompiler(loss="xent", readout="mean"), batch_size=8,
                      lr=0.05, threads=1, inputs="inp", hidden="hid", readout="out",
                      trainable=["inp_hid", "hid_out", "out.bias"])
    before = trainer.evaluate(test)
    assert abs(before["loss"] - np.log(2)) < 0.1  # one loss per trial: near ln 2 with small readout weights
    trainer.fit(train, epochs=6, progress=False)
    after = trainer.evaluate(test)
    assert after["accuracy"] >= 0.9 and after["loss"] < 0.75 * before["loss"], (before, after)
    predicted = trainer.predict(test)
    assert np.mean(predicted == np.array([y for _, y in test])) == after["accuracy"]
    assert trainer.job_description()["network"]["compiler"]["readout"] == "mean"


def test_the_yaml_job_names_the_readout_output(tmp_path):
    from spikeforge.errors import ConfigError
    from spikeforge.training.config import load_training
    from tests.test_trainer_compiler import NEW_JOB

    path = tmp_path / "job.yaml"
    path.write_text(NEW_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  readout_output: last\n"))
    job = load_training(path)
    assert job.trainer_options["compiler"].readout.name == "last"
    assert load_training(tmp_path / "job.yaml").trainer_options["compiler"].loss.name == "mse"
    text = NEW_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  readout_output: median\n")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert "training.readout_output: expected per_step, sum, mean, max, last, got 'median'" in str(err.value)
    assert err.value.line == text.splitlines().index("  readout_output: median") + 1
