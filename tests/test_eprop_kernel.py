"""e-prop of an EpropConfig (translated into a network and compiled by the training compiler)
against the independent numpy reference (tests/eprop_reference.py) and finite differences.

In double precision the gradients agree with the reference to rounding, not bit for bit: the
reference sums in numpy's order (matrix products, pairwise sums), the generated code in its
loops' order."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.models.neuron import NeuronModel
from spikeforge.training.model import EpropConfig
from spikeforge.training.network_runtime import CompiledRuntime, translate
from spikeforge.training.objectives import Adam
from tests.conftest import nvcc_path
from tests.eprop_reference import adam_step, bptt_gradients, eprop_gradients, forward
from tests.test_eprop_reference import (
    ALIF,
    ALIF_CONST,
    ALL,
    ALL_IDS,
    LIF,
    LIF_CONST,
    _small_problem,
    assert_same_direction_and_norm,
    make_problem,
    surrogate_finite_differences,
)

N_IN, N_H, K, T, B = 5, 4, 3, 40, 3
OURS = {"W_in": "w_in", "W_rec": "w_rec", "W_out": "w_out", "b": "b_out"}


# ALIF with a reset to a constant (the reference's ALIF_CONST)
ALIF_RESET_CONST = NeuronModel(
    "alif_reset_const",
    params={"tau_m": 20.0, "tau_a": 2000.0, "v_th": 0.6, "beta": 0.0174, "r_m": 1.0, "v_reset": 0.0},
    vars={"v": 0.0, "a": 0.0},
    equations="dv/dt = (r_m * i_syn - v) / tau_m\nda/dt = -a / tau_a",
    threshold="v > v_th + beta * a",
    reset="v = v_reset; a += 1",
)


def _model(params):
    """The spikeforge model and parameters of one of the reference's settings."""
    if params.get("reset", "subtract") == "constant":
        if params["beta"]:
            return ALIF_RESET_CONST, dict(tau_m=params["tau_m"], tau_a=params["tau_a"], v_th=params["v_th"],
                                          beta=params["beta"], v_reset=params["v_reset"])
        # the built-in LIF (v = v_reset); its default surrogate scale v_th - v_reset is the reference's
        assert params["scale"] == params["v_th"] - params["v_reset"] and params["v_rest"] == -65.0  # = init
        return m.LIF, dict(tau_m=params["tau_m"], v_rest=params["v_rest"], v_reset=params["v_reset"],
                           v_th=params["v_th"], r_m=1.0, t_ref=0.0)
    if params["beta"]:
        return m.ALIF, dict(tau_m=params["tau_m"], tau_a=params["tau_a"], v_th=params["v_th"], beta=params["beta"])
    return m.LIF_SUBTRACTIVE, dict(tau_m=params["tau_m"], v_th=params["v_th"])


def _config(params, recurrent, loss, precision="double", feedback="symmetric", sizes=(N_IN, N_H, K)):
    model, hp = _model(params)
    return EpropConfig(*sizes, model, hp, recurrent=recurrent, tau_out=params["tau_out"], dt=params["dt"],
                       loss=loss, gamma=params["gamma"], precision=precision, feedback=feedback,
                       name=f"eprop_test_{model.name}_{int(recurrent)}_{loss}_{precision}_{feedback}_"
                            + "x".join(map(str, sizes)))


def compiled_runtime(cfg, batch=B, backend="cpu", threads=None, optimiser=None):
    """The trainer's runtime of ``cfg``: its translation into a network of ``batch`` instances,
    compiled by the training compiler on ``backend`` (smaller batches are padded)."""
    job, names, initial, feedback = translate(cfg, batch, 0, 1.0, optimiser or Adam())
    job.backend = backend
    threads = 1 if backend != "cpu" and threads is None else threads
    return CompiledRuntime(job, names, threads=threads, feedback=feedback, initial=initial)


def _runtime(params, recurrent, loss, precision="double", feedback="symmetric", sizes=(N_IN, N_H, K), batch=B,
             backend="cpu"):
    return compiled_runtime(_config(params, recurrent, loss, precision, feedback, sizes), batch, backend)


def _run(rt, X, targets, mask, weights, loss):
    """Set the reference's weights (an EpropConfig has no self-connections: W_rec's diagonal
    is zero, as in the reference) and run one batch."""
    n_h = weights["W_in"].shape[0]
    w_rec = np.array(weights["W_rec"]) if weights.get("W_rec") is not None else np.zeros((n_h, n_h))
    np.fill_diagonal(w_rec, 0.0)
    rt.set_weights({"w_in": weights["W_in"], "w_out": weights["W_out"], "b_out": weights["b"], "w_rec": w_rec})
    if loss == "xent":
        return rt.run_batch(X, mask, labels=targets)
    return rt.run_batch(X, mask, targets=targets)


@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
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


@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
def test_without_recurrence_generated_eprop_equals_bptt(params):
    """Without recurrence e-prop is BPTT with a detached reset: for a reset to a constant that
    needs the reset map's Jacobian (1 - z) in the eligibility trace (left out, the cosine was
    0.94 and the norm 3.5 times too large)."""
    X, targets, mask, weights = make_problem(2, recurrent=False, loss="xent")
    assert forward(X, params, weights)["z"].sum(axis=(0, 1)).min() > 0
    ref = bptt_gradients(X, targets, mask, params, weights, loss="xent")
    out = _run(_runtime(params, False, "xent"), X, targets, mask, weights, "xent")
    for key in ("W_in", "W_out", "b"):
        np.testing.assert_allclose(out["grads"][OURS[key]].sum(0), ref[key], rtol=1e-9, atol=1e-11, err_msg=key)
    assert_same_direction_and_norm(out["grads"]["w_in"].sum(0), ref["W_in"], tol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
def test_generated_gradient_equals_finite_differences_on_three_neurons(backend, params):
    """End to end on 3 hidden neurons without recurrence: the generated code's input-weight
    gradient against central differences of the reference's smooth stand-in (surrogate slope,
    detached reset), which uses no hand-derived recursion."""
    X, targets, mask, weights = _small_problem(31, 3, recurrent=False, n_in=4, k=2)
    assert forward(X, params, weights)["z"].sum(axis=(0, 1)).min() >= 2
    fd = surrogate_finite_differences(X, targets, mask, params, weights, "mse", ("W_in",))["W_in"]
    cfg = _config(params, False, "mse", sizes=(4, 3, 2))
    out = _run(compiled_runtime(cfg, X.shape[1], backend), X, targets, mask, weights, "mse")
    np.testing.assert_allclose(out["grads"]["w_in"].sum(0), fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("params", [ALIF, ALIF_CONST], ids=["ALIF", "ALIF_const"])
def test_float_agrees_with_reference_to_float_precision(params):
    X, targets, mask, weights = make_problem(3, recurrent=True, loss="xent")
    ref = eprop_gradients(X, targets, mask, params, weights, loss="xent")
    out = _run(_runtime(params, True, "xent", precision="float"), X, targets, mask, weights, "xent")
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
    """A batch of one (padded to the compiled four) and the same sample four times."""
    X, targets, mask, weights = make_problem(5, recurrent=True, loss="xent", n_batch=1)
    rt = _runtime(ALIF, True, "xent", batch=4)
    one = _run(rt, X, targets, mask, weights, "xent")["grads"]
    many = _run(rt, np.repeat(X, 4, axis=1), np.repeat(targets, 4), mask, weights, "xent")["grads"]
    for key in one:
        np.testing.assert_allclose(many[key].sum(0), 4 * one[key][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(many[key].mean(0), one[key][0], rtol=1e-12, atol=1e-14)


@pytest.mark.slow  # eight cuda-emu trainings; the quick loop keeps cuda-emu e-prop in test_training_compiler_cuda.py
@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_cuda_emu_eprop_equals_numpy_eprop(params, loss):
    """The generated CUDA training kernels, run through cuda-emu, against the numpy reference."""
    X, targets, mask, weights = make_problem(6, recurrent=True, loss=loss)
    ref = eprop_gradients(X, targets, mask, params, weights, loss=loss)
    out = _run(_runtime(params, True, loss, backend="cuda-emu"), X, targets, mask, weights, loss)
    for key, ours in OURS.items():
        np.testing.assert_allclose(out["grads"][ours], ref["per_instance"][key], rtol=1e-9, atol=1e-11,
                                   err_msg=key)
    np.testing.assert_allclose(out["loss"], ref["per_instance"]["loss"], rtol=1e-10)


@pytest.mark.slow
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


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_forward_only_pass_gives_the_training_outputs_without_gradients(backend, loss):
    """learn=False (evaluate/predict) skips traces and gradients but computes the same outputs."""
    X, targets, mask, weights = make_problem(5, recurrent=True, loss=loss)
    rt = _runtime(ALIF, True, loss, backend=backend)
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


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_gradient_sums_and_adam_steps_equal_numpy(backend):
    """gradient_sums() equals the reference's batch sums; two Adam steps (the generated
    optimiser reducing the batch by its mean, with a clamp of the input weights) and one from
    a reduced gradient set from the host (set_gradient, as after an all-reduce) give the
    reference's Adam (eprop_reference.adam_step) on the reference's gradients."""
    X, targets, mask, weights = make_problem(4, recurrent=True, loss="xent")
    batch, lr, clamp = X.shape[1], 0.01, (-0.5, 0.5)
    rt = _runtime(ALIF, True, "xent", backend=backend)
    ref_w = {key: np.array(weights[key], dtype=np.float64) for key in OURS}
    np.fill_diagonal(ref_w["W_rec"], 0.0)  # as _run sets it
    moments = {key: (np.zeros_like(w), np.zeros_like(w)) for key, w in ref_w.items()}
    _run(rt, X, targets, mask, weights, "xent")
    for step in (1, 2, 3):
        ref = eprop_gradients(X, targets, mask, ALIF, ref_w, loss="xent")
        sums = rt.gradient_sums()
        for key, ours in OURS.items():
            assert sums[ours].dtype == np.float64
            np.testing.assert_allclose(sums[ours], ref[key], rtol=1e-12, atol=1e-12 * np.abs(ref[key]).max(),
                                       err_msg=f"{ours}, step {step}")
            w, m_, v_ = adam_step(ref_w[key], ref[key] / batch, *moments[key], step, lr)
            ref_w[key], moments[key] = (np.clip(w, *clamp) if key == "W_in" else w), (m_, v_)
        if step < 3:
            rt.step(batch=batch, mean=True, lr=lr, step=step, clamp={"w_in": clamp})
        else:
            for ours in OURS.values():
                rt.set_gradient(ours, sums[ours], 1.0 / batch)
            rt.step(batch=1, mean=False, lr=lr, step=step, clamp={"w_in": clamp})
        got = rt.get_weights()
        for key, ours in OURS.items():
            np.testing.assert_allclose(got[ours], ref_w[key], rtol=1e-10, atol=1e-13, err_msg=f"{ours}, step {step}")
        assert np.abs(got["w_in"]).max() == 0.5  # the clamp bit
        if step < 3:
            rt.run_batch(X, mask, labels=targets)
    for key, ours in OURS.items():
        assert not np.allclose(got[ours], weights[key]), ours


# ----------------------------------------------------------------------------- resets, in general

IZH_SURROGATE = "gamma * exp(-abs(_g) / 30) / 30"  # wide enough for Izhikevich's fast upswing


def _izhikevich_config(backend_name, precision="double", sizes=(4, 3, 2)):
    return EpropConfig(*sizes, m.IZHIKEVICH, {}, recurrent=False, tau_out=15.0, dt=0.5, loss="mse",
                       surrogate=IZH_SURROGATE, precision=precision, name=f"eprop_izh_{backend_name}_{precision}")


def _izhikevich_straight_through_loss(X, targets, mask, w, frozen, gamma=0.3, dt=0.5, tau_out=15.0):
    """Izhikevich's network (forward Euler, v = c detached, u += d through the spike) as a smooth
    stand-in: each spike is the frozen one plus S(g) - S(g*) with S' = the surrogate. Returns the
    loss and the spikes and g of every step (for ``frozen``)."""
    a, b, c, d = 0.02, 0.2, -65.0, 8.0
    steps, n_b, _ = X.shape
    n_h = w["W_in"].shape[0]
    ka = np.exp(-dt / tau_out)

    def S(g):
        return gamma * np.sign(g) * (1.0 - np.exp(-np.abs(g) / 30.0))

    v, u = np.full((n_b, n_h), -65.0), np.full((n_b, n_h), -13.0)
    x_prev, z_prev = np.zeros((n_b, X.shape[2])), np.zeros((n_b, n_h))
    y = np.zeros((n_b, w["W_out"].shape[0]))
    E, zs, gs = 0.0, [], []
    for t in range(steps):
        i_syn = x_prev @ w["W_in"].T
        v, u = v + dt * (0.04 * v**2 + 5 * v + 140 - u + i_syn), u + a * dt * (b * v - u)
        g = v - 30.0
        z_held = (g >= 0).astype(float) if frozen is None else frozen[0][t]
        z = z_held if frozen is None else z_held + S(g) - S(frozen[1][t])
        zs.append(z_held)
        gs.append(g)
        v = np.where(z_held > 0, c, v)
        u = u + d * z
        y = ka * y + (1 - ka) * (z_prev @ w["W_out"].T + w["b"])
        E += 0.5 * np.sum(mask[t] * (y - targets[t]) ** 2)
        x_prev, z_prev = X[t], z
    return E, (zs, gs)


@pytest.mark.slow
def test_izhikevich_gradient_equals_finite_differences_on_cpu_and_cuda_emu():
    """A nonlinear model with both kinds of reset (v = c detached: 1 - z; u += d through the
    spike), every eligibility component per synapse: the generated kernels' input-weight gradient
    against central differences of a hand-written smooth stand-in, on 3 neurons."""
    rng = np.random.default_rng(3)
    steps = 60
    X = (rng.random((steps, 2, 4)) < 0.4).astype(np.float64)
    w = dict(W_in=rng.uniform(10.0, 30.0, (3, 4)), W_out=rng.normal(0.0, 1.0, (2, 3)), b=rng.normal(0.0, 0.3, 2))
    targets = rng.normal(0.0, 0.5, (steps, 2, 2))
    mask = np.ones(steps)
    E, frozen = _izhikevich_straight_through_loss(X, targets, mask, w, None)
    assert np.sum(frozen[0], axis=(0, 1)).min() >= 2  # every neuron spikes (and resets)
    h = 1e-6
    fd = np.zeros_like(w["W_in"])
    for idx in np.ndindex(fd.shape):
        wp, wm = dict(w, W_in=w["W_in"].copy()), dict(w, W_in=w["W_in"].copy())
        wp["W_in"][idx] += h
        wm["W_in"][idx] -= h
        fd[idx] = (_izhikevich_straight_through_loss(X, targets, mask, wp, frozen)[0]
                   - _izhikevich_straight_through_loss(X, targets, mask, wm, frozen)[0]) / (2 * h)
    assert np.abs(fd).max() > 1e-3
    cpu = compiled_runtime(_izhikevich_config("cpu"), 2)
    emu = compiled_runtime(_izhikevich_config("emu"), 2, "cuda-emu")
    for rt in (cpu, emu):
        out = _run(rt, X, targets, mask, w, "mse")
        np.testing.assert_allclose(out["loss"].sum(), E, rtol=1e-10)
        np.testing.assert_allclose(out["grads"]["w_in"].sum(0), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_a_refractory_period_is_refused_whatever_its_name():
    """The training kernels have no refractory state, so any non-zero period is refused (before,
    only a parameter named t_ref was checked: another name trained without it, silently)."""
    from spikeforge.errors import NetworkError

    hold = NeuronModel("lif_hold", params={"tau_m": 10.0, "v_th": 1.0, "hold": 1.5}, vars={"v": 0.0},
                       equations="dv/dt = (i_syn - v) / tau_m  (unless refractory)", threshold="v > v_th",
                       reset="v = 0", refractory="hold")
    with pytest.raises(NetworkError, match=r"lif_hold.*refractor.*'hold' is 1.5 ms"):
        EpropConfig(3, 3, 2, hold)
    with pytest.raises(NetworkError, match=r"refractor.*'2 \* dt' is 2 ms"):
        EpropConfig(3, 3, 2, NeuronModel("lif_steps", params={"tau_m": 10.0, "v_th": 1.0}, vars={"v": 0.0},
                                         equations="dv/dt = (i_syn - v) / tau_m  (unless refractory)",
                                         threshold="v > v_th", reset="v = 0", refractory="2 * dt"))
    with pytest.raises(NetworkError, match="refractor"):
        EpropConfig(3, 3, 2, m.LIF, dict(t_ref=[0.0, 0.0, 1.0]))
    EpropConfig(3, 3, 2, hold, dict(hold=0.0))  # a period of 0 is what the kernels do


def test_a_surrogate_scale_that_is_not_positive_is_refused():
    """lif's default scale is v_th - v_reset (15 mV at its defaults; v_th = -50 mV itself would
    flip every hidden gradient's sign); a reset above the threshold makes it negative."""
    from spikeforge.errors import NetworkError

    compiled_runtime(EpropConfig(3, 3, 2, m.LIF, name="eprop_scale_ok"), 1).check()
    with pytest.raises(NetworkError, match=r"hidden population 'hid' \(lif\): the surrogate's scale "
                                           r"'-v_reset \+ v_th' must be positive, got -5"):
        compiled_runtime(EpropConfig(3, 3, 2, m.LIF, dict(v_reset=-45.0), name="eprop_scale_bad"), 1).check()


def compiled_spec(cfg, batch=2, n_steps=10):
    """The network specification the training compiler makes of ``cfg``."""
    job = compiled_runtime(cfg, batch).job
    return job.compiler.compile(job.network, inputs=job.inputs, hidden=job.hidden, readout=job.readout,
                                trainable=job.trainable, n_steps=n_steps).spec


@pytest.mark.slow
@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.parametrize("precision", ["float", "double"])
def test_reset_to_a_constant_kernels_compile_with_nvcc(precision):
    """Training kernels whose eligibility components all live per synapse (lif, izhikevich)."""
    from spikeforge.codegen.eprop import derive
    from spikeforge.codegen.launch import plan
    from spikeforge.codegen.render import render_network
    from spikeforge.runtime.nvcc import build_cubin

    for cfg in (_config(LIF_CONST, True, "xent", precision=precision), _izhikevich_config("nvcc", precision)):
        assert derive(cfg.hidden_model, cfg.params, surrogate=cfg.surrogate).per_presynaptic == []
        spec = compiled_spec(cfg)
        data = build_cubin(render_network(spec, "cuda"), "sm_80", name=spec.name, describe=spec.name).path.read_bytes()
        names = [launch.name for launch in plan(spec)]
        assert "eprop_eligibility_inp_hid" in names and any(n.startswith("optimiser_") for n in names)
        for name in names:
            assert name.encode() in data, name
