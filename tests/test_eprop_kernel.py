"""The generated e-prop kernel against the independent numpy reference (tests/eprop_reference.py)."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.training.model import EpropConfig
from spikeforge.training.runtime import EpropRuntime
from tests.eprop_reference import bptt_gradients, eprop_gradients
from tests.test_eprop_reference import ALIF, LIF, make_problem

N_IN, N_H, K, T, B = 5, 4, 3, 40, 3
OURS = {"W_in": "w_in", "W_rec": "w_rec", "W_out": "w_out", "b": "b_out"}


def _runtime(params, recurrent, loss, precision="double", feedback="symmetric"):
    if params["beta"]:
        model, hp = m.ALIF, dict(tau_m=params["tau_m"], tau_a=params["tau_a"], v_th=params["v_th"],
                                 beta=params["beta"])
    else:
        model, hp = m.LIF_SUBTRACTIVE, dict(tau_m=params["tau_m"], v_th=params["v_th"])
    cfg = EpropConfig(N_IN, N_H, K, model, hp, recurrent=recurrent, tau_out=params["tau_out"], dt=params["dt"],
                      loss=loss, gamma=params["gamma"], precision=precision, feedback=feedback,
                      name=f"eprop_test_{model.name}_{int(recurrent)}_{loss}_{precision}_{feedback}")
    return EpropRuntime(cfg)


def _run(rt, X, targets, mask, weights, loss):
    rt.set_weights({"w_in": weights["W_in"], "w_out": weights["W_out"], "b_out": weights["b"],
                    "w_rec": weights["W_rec"] if weights.get("W_rec") is not None else np.zeros((N_H, N_H))})
    if loss == "xent":
        return rt.run_batch(X, mask, labels=targets)
    return rt.run_batch(X, mask, targets=targets)


@pytest.mark.parametrize("params", [LIF, ALIF], ids=["lif", "alif"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
def test_generated_eprop_equals_numpy_eprop(params, loss, recurrent):
    X, targets, mask, weights = make_problem(1, recurrent=recurrent, loss=loss)
    ref = eprop_gradients(X, targets, mask, params, weights, loss=loss)
    out = _run(_runtime(params, recurrent, loss), X, targets, mask, weights, loss)
    for key, ours in OURS.items():
        if key == "W_rec" and not recurrent:
            continue
        np.testing.assert_allclose(out["grads"][ours], ref["per_instance"][key], rtol=1e-9, atol=1e-11,
                                   err_msg=key)
    np.testing.assert_allclose(out["loss"], ref["per_instance"]["loss"], rtol=1e-10)
    assert out["hidden_spikes"].sum() > 0


@pytest.mark.parametrize("params", [LIF, ALIF], ids=["lif", "alif"])
def test_without_recurrence_generated_eprop_equals_bptt(params):
    X, targets, mask, weights = make_problem(2, recurrent=False, loss="xent")
    ref = bptt_gradients(X, targets, mask, params, weights, loss="xent")
    out = _run(_runtime(params, False, "xent"), X, targets, mask, weights, "xent")
    for key in ("W_in", "W_out", "b"):
        np.testing.assert_allclose(out["grads"][OURS[key]].sum(0), ref[key], rtol=1e-9, atol=1e-11, err_msg=key)


def test_float_kernel_agrees_with_reference_to_float_precision():
    X, targets, mask, weights = make_problem(3, recurrent=True, loss="xent")
    ref = eprop_gradients(X, targets, mask, ALIF, weights, loss="xent")
    out = _run(_runtime(ALIF, True, "xent", precision="float"), X, targets, mask, weights, "xent")
    for key, ours in OURS.items():
        scale = np.abs(ref["per_instance"][key]).max()
        np.testing.assert_allclose(out["grads"][ours], ref["per_instance"][key], atol=2e-4 * scale, err_msg=key)


def test_random_feedback_uses_its_matrix():
    X, targets, mask, weights = make_problem(4, recurrent=True, loss="xent")
    rt = _runtime(LIF, True, "xent", feedback="random")
    ref = eprop_gradients(X, targets, mask, LIF, weights, loss="xent", feedback=rt.feedback.astype(np.float64))
    out = _run(rt, X, targets, mask, weights, "xent")
    np.testing.assert_allclose(out["grads"]["w_in"], ref["per_instance"]["W_in"], rtol=1e-9, atol=1e-11)


def test_batch_of_repeated_sample_gives_b_times_the_gradient():
    X, targets, mask, weights = make_problem(5, recurrent=True, loss="xent", n_batch=1)
    rt = _runtime(ALIF, True, "xent")
    one = _run(rt, X, targets, mask, weights, "xent")["grads"]
    many = _run(rt, np.repeat(X, 4, axis=1), np.repeat(targets, 4), mask, weights, "xent")["grads"]
    for key in one:
        np.testing.assert_allclose(many[key].sum(0), 4 * one[key][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(many[key].mean(0), one[key][0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("params", [LIF, ALIF], ids=["lif", "alif"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_cuda_emu_eprop_equals_numpy_eprop(params, loss):
    """The generated CUDA training kernels, run through cuda-emu, against the numpy reference."""
    from spikeforge.training.device_runtime import DeviceEpropRuntime

    X, targets, mask, weights = make_problem(6, recurrent=True, loss=loss)
    ref = eprop_gradients(X, targets, mask, params, weights, loss=loss)
    cpu = _runtime(params, True, loss)
    rt = DeviceEpropRuntime(cpu.cfg, backend="cuda-emu", threads=1)
    out = _run(rt, X, targets, mask, weights, loss)
    for key, ours in OURS.items():
        np.testing.assert_allclose(out["grads"][ours], ref["per_instance"][key], rtol=1e-9, atol=1e-11,
                                   err_msg=key)
    np.testing.assert_allclose(out["loss"], ref["per_instance"]["loss"], rtol=1e-10)


def test_cuda_emu_training_steps_match_cpu():
    """Same minibatches, same generated Adam: the weights after training agree with the CPU backend."""
    from spikeforge.training.trainer import Trainer
    from tests.test_trainer import _config, _toy

    data = _toy(n=16)
    cpu = Trainer(_config(precision="double", name="toy_cpu"), batch_size=8, lr=0.01, seed=4)
    emu = Trainer(_config(precision="double", name="toy_emu"), batch_size=8, lr=0.01, seed=4, backend="cuda-emu",
                  threads=1)
    cpu.fit(data, epochs=2, progress=False)
    emu.fit(data, epochs=2, progress=False)
    for name, w in cpu.weights.items():
        np.testing.assert_allclose(emu.weights[name], w, rtol=1e-9, atol=1e-12, err_msg=name)


def _both_runtimes(params, loss):
    from spikeforge.training.device_runtime import DeviceEpropRuntime

    cpu = _runtime(params, True, loss)
    return {"cpu": cpu, "cuda-emu": DeviceEpropRuntime(cpu.cfg, backend="cuda-emu", threads=1)}


@pytest.mark.parametrize("backend", ["cpu", "cuda-emu"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_forward_only_pass_gives_the_training_outputs_without_gradients(backend, loss):
    """learn=False (evaluate/predict) skips traces and gradients but computes the same outputs."""
    X, targets, mask, weights = make_problem(5, recurrent=True, loss=loss)
    rt = _both_runtimes(ALIF, loss)[backend]
    train = _run(rt, X, targets, mask, weights, loss)
    kw = {"labels": targets} if loss == "xent" else {"targets": targets}
    fwd = rt.run_batch(X, mask, learn=False, **kw)
    assert "grads" not in fwd
    for key in ("y", "loss", "hidden_spikes"):
        np.testing.assert_array_equal(fwd[key], train[key], err_msg=key)
    assert train["hidden_spikes"].sum() > 0
    # the forward pass left no gradient behind: the batch sums are zero
    for name, g in rt.gradient_sums().items():
        assert not np.any(g), name


@pytest.mark.parametrize("backend", ["cpu", "cuda-emu"])
def test_gradient_sums_and_reduced_adam_step_equal_the_in_kernel_reduction(backend):
    """gradient_sums() (on the device for cuda-emu) equals the sum of the per-instance
    gradients; set_gradient + apply_reduced(scale 1/B) takes the same Adam step as
    apply_gradients reducing the batch by its mean."""
    X, targets, mask, weights = make_problem(4, recurrent=True, loss="xent")
    batch = X.shape[1]
    pair = [_both_runtimes(ALIF, "xent")[backend] for _ in range(2)]
    outs = [_run(rt, X, targets, mask, weights, "xent") for rt in pair]
    sums = pair[0].gradient_sums()
    for name, g in outs[0]["grads"].items():
        assert sums[name].dtype == np.float64
        np.testing.assert_allclose(sums[name], g.sum(axis=0), rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.abs(sums["w_in"]).max() > 0
    for index, name in enumerate(("w_in", "w_rec", "w_out", "b_out")):
        pair[0].apply_gradients(index, batch, True, 0.01, 0.9, 0.999, 1e-8, 1, None)
        pair[1].set_gradient(name, sums[name])
        pair[1].apply_reduced(index, 1.0 / batch, 0.01, 0.9, 0.999, 1e-8, 1, None)
    for name, w in pair[0].get_weights().items():
        np.testing.assert_allclose(pair[1].get_weights()[name], w, rtol=1e-12, atol=1e-15, err_msg=name)
        assert not np.allclose(w, {"w_in": weights["W_in"], "w_rec": weights["W_rec"], "w_out": weights["W_out"],
                                   "b_out": weights["b"]}[name])
