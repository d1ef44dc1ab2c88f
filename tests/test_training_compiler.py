"""The training compiler (e-prop over an ordinary Network) against the independent numpy
reference (tests/eprop_reference.py, which does not import spikeforge).

The same network, weights and inputs must give the reference's readout, losses, spike counts
and per-instance gradients, and its weights after Adam steps (eprop_reference.adam_step), in
double precision to a relative 1e-12 of the largest value: not bit for bit, as the reference
sums in numpy's order (matrix products, pairwise sums) and the generated code in its loops'."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import NetworkError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training.compiler import EpropCompiler
from spikeforge.training.objectives import Adam
from tests.eprop_reference import adam_step, eprop_gradients, forward

N_IN, N_H, K, T = 5, 6, 3, 40
TAU_OUT, DT = 15.0, 1.0
LSNN_BETA = [0.0] * 3 + [0.4] * 3  # half plain LIF, half adaptive (Bellec's LSNN)
HIDDEN = {
    "lif_subtractive": (m.LIF_SUBTRACTIVE, dict(tau_m=10.0, v_th=0.6)),
    "alif": (m.ALIF, dict(tau_m=10.0, tau_a=30.0, v_th=0.6, beta=0.4, t_ref=0.0)),
    "lsnn": (m.ALIF, dict(tau_m=10.0, tau_a=30.0, v_th=0.6, t_ref=0.0)),
}


def _problem(seed, batch, loss, real_valued):
    rng = np.random.default_rng(seed)
    spikes = rng.random((T, batch, N_IN)) < 0.4
    x = spikes * (rng.uniform(0.2, 1.0, spikes.shape) if real_valued else 1.0)  # latency/rate-like values
    weights = {"w_in": rng.uniform(0.0, 1.5, (N_H, N_IN)), "w_rec": rng.normal(0.0, 0.6, (N_H, N_H)),
               "w_out": rng.normal(0.0, 1.0, (K, N_H)), "b_out": rng.normal(0.0, 0.3, K)}
    np.fill_diagonal(weights["w_rec"], 0.0)
    mask = np.zeros(T)
    mask[T // 2:] = 1.0
    target = rng.integers(0, K, batch) if loss == "xent" else rng.normal(0.0, 0.5, (T, batch, K))
    return x, mask, target, weights


#: The hidden models in the reference's terms (its LIF is lif_subtractive, its ALIF alif).
REFERENCE = {
    "lif_subtractive": dict(dt=DT, tau_m=10.0, tau_a=None, tau_out=TAU_OUT, v_th=0.6, beta=0.0, gamma=0.3),
    "alif": dict(dt=DT, tau_m=10.0, tau_a=30.0, tau_out=TAU_OUT, v_th=0.6, beta=0.4, gamma=0.3),
    "lsnn": dict(dt=DT, tau_m=10.0, tau_a=30.0, tau_out=TAU_OUT, v_th=0.6, beta=np.array(LSNN_BETA), gamma=0.3),
}


def _reference(kind, x, mask, target, weights, loss, feedback="symmetric", reg=None, recurrent=True):
    """The reference's run of one batch, in the layout of the compiler's outputs (the
    gradients in an EpropConfig's [batch][post][pre] layout of :func:`_as_config`)."""
    w = {"W_in": weights["w_in"], "W_rec": weights["w_rec"] if recurrent else None, "W_out": weights["w_out"],
         "b": weights["b_out"]}
    params = REFERENCE[kind]
    fw = forward(x, params, w)
    ref = eprop_gradients(x, target, mask, params, w, loss=loss, feedback=feedback, reg=reg)["per_instance"]
    grads = {"w_in": ref["W_in"], "w_out": ref["W_out"], "b_out": ref["b"]}
    if recurrent:
        grads["w_rec"] = ref["W_rec"]
    return {"y": fw["y"], "loss": ref["loss"], "hidden_spikes": fw["z"].sum(axis=0), "grads": grads}


def _close(new, ref, what, rtol=1e-12):
    """Equal to ``rtol`` of the largest value (both computed in double precision)."""
    assert new.shape == ref.shape, what
    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(new, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


def _same_run(out, ref, batch, what, rtol=1e-12):
    np.testing.assert_array_equal(out["hidden_spikes"], ref["hidden_spikes"], err_msg=f"{what}: spike counts")
    _close(out["y"], ref["y"], f"{what}: readout y", rtol)
    _close(out["loss"], ref["loss"], f"{what}: loss", rtol)
    for name, g in _as_config(out["grads"], batch).items():
        if name in ref["grads"]:
            assert np.abs(ref["grads"][name]).max() > 0, name
            _close(g, ref["grads"][name], f"{what}: gradient of {name}", rtol)


def _network(kind, batch, weights, recurrent=True, hidden_params=None, delays=(0, 0), input_synapse=SCALED):
    model, params = HIDDEN[kind]
    params = dict(params, **(hidden_params or {}))
    if kind == "lsnn":
        params = dict(params, beta={"values": [0.0, 0.4], "counts": [3, 3]})
    net = Network(f"oracle_{kind}_{batch}", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, model, params)
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=list(weights["b_out"])))
    # weights of the network's projections are [pre][post]: the transposes of the old path's
    net.add_projection("inp_hid", "inp", "hid", input_synapse, ONE_STEP_CURR,
                       wu_init={"w": weights["w_in"].T.ravel()}, delay=delays[0] * DT)
    if recurrent:
        net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR,
                           wu_init={"w": weights["w_rec"].T.ravel()}, delay=delays[1] * DT)
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["w_out"].T.ravel()})
    return net


def _compiled(kind, loss, feedback, batch, weights, feedback_matrix=None, optimiser=None, reg_rate=0.0):
    compiler = EpropCompiler(loss=loss, optimiser=optimiser or Adam(lr=0.01), feedback=feedback, reg_rate=reg_rate,
                             reg_target_hz=20.0)
    compiled = compiler.compile(
        _network(kind, batch, weights), inputs="inp", hidden="hid", readout="out",
        trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"], n_steps=T)
    if feedback_matrix is not None:
        compiled.backend.push("hid_eprop_feedback", feedback_matrix.ravel())
    return compiled


def _as_config(grads, batch):
    """The compiler's gradients in an EpropConfig's layout: [batch][post][pre]."""
    layouts = {"inp_hid_w": ("w_in", (N_IN, N_H)), "hid_hid_w": ("w_rec", (N_H, N_H)),
               "hid_out_w": ("w_out", (N_H, K))}
    out = {name: grads[array].reshape(batch, *shape).transpose(0, 2, 1)
           for array, (name, shape) in layouts.items() if array in grads}
    if "out_p_bias" in grads:
        out["b_out"] = grads["out_p_bias"].reshape(batch, K)
    return out


def _same_bits(new, old, what):
    assert new.shape == old.shape and new.dtype == old.dtype, what
    bits = f"i{new.dtype.itemsize}"
    diff = np.flatnonzero(np.ascontiguousarray(new).view(bits) != np.ascontiguousarray(old).view(bits))
    assert diff.size == 0, (f"{what}: {diff.size} of {new.size} values differ, the largest by "
                            f"{np.max(np.abs(new - old)):.3g} (max |value| {np.max(np.abs(old)):.3g})")


CASES = [(kind, loss, batch) for kind in HIDDEN for loss in ("xent", "mse") for batch in (1, 8)]


@pytest.mark.parametrize("kind,loss,batch", CASES, ids=[f"{k}-{loss}-B{b}" for k, loss, b in CASES])
def test_compiled_gradients_equal_numpy_eprop(kind, loss, batch):
    x, mask, target, weights = _problem(1, batch, loss, real_valued=(kind == "alif"))
    labels, targets = (target, None) if loss == "xent" else (None, target)
    ref = _reference(kind, x, mask, target, weights, loss)
    assert ref["hidden_spikes"].sum() > 0
    out = _compiled(kind, loss, "symmetric", batch, weights).run_batch(x, mask, labels=labels, targets=targets)
    _same_run(out, ref, batch, f"{kind} {loss} B{batch}")


@pytest.mark.parametrize("n_hidden", [N_H, 37])
def test_blocks_of_steps_equal_numpy_eprop(n_hidden, monkeypatch):
    """The cpu's eligibility kernels in blocks of 7 steps: 40 steps end in a block of 5, and the
    readout window opens inside a block (steps 0-19 have no learning signal). Rows of 37
    synapses: two full vectors of 16, the rest in shorter ones."""
    import tests.test_training_compiler as here

    monkeypatch.setattr(here, "N_H", n_hidden)
    x, mask, target, weights = _problem(4, 3, "xent", real_valued=False)
    ref = _reference("lif_subtractive", x, mask, target, weights, "xent")
    compiler = EpropCompiler(loss="xent", block_steps=7)
    compiled = compiler.compile(_network("lif_subtractive", 3, weights), inputs="inp", hidden="hid", readout="out",
                                trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"], n_steps=T)
    assert all(k.info["block"]["steps"] == 7 for k in compiled.spec.kernels if k.kind == "eprop_eligibility")
    _same_run(compiled.run_batch(x, mask, labels=target), ref, 3, "blocks of 7 steps")
    for bad in (0, 65, 2.0, True):
        with pytest.raises(NetworkError, match="block_steps"):
            EpropCompiler(block_steps=bad)


@pytest.mark.parametrize("kind", ["alif", "lsnn"])
def test_register_blocks_equal_step_by_step_bit_for_bit(kind):
    """Components kept per synapse (ALIF's adaptation): the cpu runs each synapse's steps of a
    block at once, its state in registers. In blocks of 7 steps (40 steps end in a block of 5,
    the readout window opens inside a block) the results are those of the step-by-step kernel
    bit for bit, and equal the numpy reference."""
    x, mask, target, weights = _problem(6, 3, "xent", real_valued=True)
    ref = _reference(kind, x, mask, target, weights, "xent")
    runs = {}
    for block_steps in (7, 1):
        compiled = EpropCompiler(loss="xent", block_steps=block_steps).compile(
            _network(kind, 3, weights), inputs="inp", hidden="hid", readout="out",
            trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"], n_steps=T)
        blocks = [k.info["register_block"] for k in compiled.spec.kernels if k.kind == "eprop_eligibility"]
        assert len(blocks) == 2 and all((b is not None) == (block_steps > 1) for b in blocks)
        if block_steps > 1:
            assert all(b["steps"] == 7 and b["tail"] == 5 for b in blocks)
        runs[block_steps] = compiled.run_batch(x, mask, labels=target)
    _same_run(runs[7], ref, 3, f"{kind}: blocks of 7 steps")
    for name, g in runs[1]["grads"].items():
        _same_bits(runs[7]["grads"][name], g, f"{kind}: gradient {name}, blocks of 7 against step by step")
    _same_bits(runs[7]["y"], runs[1]["y"], f"{kind}: readout")


def test_input_fed_in_parts_equals_numpy_eprop(monkeypatch):
    """A trial longer than the input the kernels hold is fed in parts: with parts of 7 steps
    the 40 steps run as 6 parts (the last of 5), the caller's float32 array read in place,
    and the gradients equal the reference, as in one part."""
    from spikeforge.training import compiler as compiler_module

    monkeypatch.setattr(compiler_module, "INPUT_CHUNK_STEPS", 7)
    x, mask, target, weights = _problem(5, 3, "xent", real_valued=False)
    ref = _reference("lif_subtractive", x, mask, target, weights, "xent")
    compiled = EpropCompiler(loss="xent").compile(
        _network("lif_subtractive", 3, weights), inputs="inp", hidden="hid", readout="out",
        trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"], n_steps=T)
    assert compiled.spec.array("inp_x_timed").data.shape[0] == 7  # the kernels hold 7 steps of input
    _same_run(compiled.run_batch(x.astype(np.float32), mask, labels=target), ref, 3, "input in parts of 7")


@pytest.mark.slow
def test_feedforward_and_float_equal_numpy_eprop():
    """Without a recurrent projection (an EpropConfig's recurrent=False), and in single
    precision (to float rounding, accumulated over the trial)."""
    for recurrent, precision in ((False, "double"), (True, "float")):
        x, mask, target, weights = _problem(6, 3, "xent", real_valued=True)
        ref = _reference("alif", x, mask, target, weights, "xent", recurrent=recurrent)
        net = _network("alif", 3, weights, recurrent=recurrent)
        net.precision = precision
        trainable = ["inp_hid", "hid_out", "out.bias"] + (["hid_hid"] if recurrent else [])
        out = EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out", trainable=trainable,
                                                 n_steps=T).run_batch(x, mask, labels=target)
        assert ref["hidden_spikes"].sum() > 0
        assert "hid_hid_w" in out["grads"] or not recurrent
        _same_run(out, ref, 3, f"{precision}, recurrent={recurrent}", 1e-12 if precision == "double" else 2e-4)


def _running_rate_eprop(kind, x, mask, target, weights, reg_rate, target_hz):
    """The reference's e-prop recursions (tests/eprop_reference.py: its forward pass, errors
    and eligibility traces of a subtractive reset) with the compiler's regulariser in the
    learning signal: ``reg_rate (n_j,t / (t + 1) - target_hz dt / 1000)``, n_j,t the spikes
    of neuron j up to step t (the running rate). The reference's own ``reg`` uses the whole
    trial's mean rate instead. The input and recurrent weights' gradients, [batch][post][pre]."""
    from tests.eprop_reference import _constants, loss_and_error

    params = REFERENCE[kind]
    w = {"W_in": weights["w_in"], "W_rec": weights["w_rec"], "W_out": weights["w_out"], "b": weights["b_out"]}
    c = _constants(params)
    fw = forward(x, params, w)
    z, psi, beta = fw["z"], fw["psi"], c["beta"][..., None]
    _, err = loss_and_error(fw["y"], target, mask, "mse")
    rate = np.cumsum(z, axis=0) / np.arange(1, T + 1)[:, None, None]
    signal = err @ weights["w_out"] + reg_rate * (rate - target_hz * DT / 1000.0)  # (T, B, N_H)
    grads = {}
    for name, S in (("w_in", x), ("w_rec", z)):
        shape = (x.shape[1], N_H, S.shape[2])
        eps_v, eps_a, ebar, grad = (np.zeros(shape) for _ in range(4))
        s_prev, psi_prev = np.zeros((x.shape[1], S.shape[2])), np.zeros((x.shape[1], N_H))
        for t in range(T):
            eps_a = c["rho"] * (psi_prev[:, :, None] * eps_v + (1.0 - beta * psi_prev[:, :, None]) * eps_a)
            eps_v = c["alpha"] * eps_v + (1.0 - c["alpha"]) * s_prev[:, None, :]
            grad += signal[t][:, :, None] * (1.0 - c["kappa"]) * ebar
            ebar = c["kappa"] * ebar + psi[t][:, :, None] * (eps_v - beta * eps_a)
            s_prev, psi_prev = S[t], psi[t]
        grads[name] = grad
    grads["w_rec"] *= 1.0 - np.eye(N_H)
    return grads


@pytest.mark.slow
def test_rate_regularisation_equals_numpy_eprop():
    x, mask, target, weights = _problem(4, 2, "mse", real_valued=True)
    out = _compiled("lsnn", "mse", "symmetric", 2, weights, reg_rate=0.5).run_batch(x, mask, targets=target)
    plain = _compiled("lsnn", "mse", "symmetric", 2, weights).run_batch(x, mask, targets=target)
    assert not np.array_equal(out["grads"]["inp_hid_w"], plain["grads"]["inp_hid_w"])  # it does something
    # without the regulariser the recursions give the reference's gradients (they are its own)
    _same_run(plain, _reference("lsnn", x, mask, target, weights, "mse"), 2, "no regularisation")
    want = _running_rate_eprop("lsnn", x, mask, target, weights, 0.0, 20.0)
    for name, g in want.items():
        _close(g, _reference("lsnn", x, mask, target, weights, "mse")["grads"][name], f"recursions: {name}")
    want = _running_rate_eprop("lsnn", x, mask, target, weights, 0.5, 20.0)
    got = _as_config(out["grads"], 2)
    for name, g in want.items():
        _close(got[name], g, f"rate regularisation: gradient of {name}")


def test_sgd_step_is_minus_lr_times_the_summed_gradient():
    from spikeforge.training.objectives import SGD

    x, mask, target, weights = _problem(5, 3, "xent", real_valued=False)
    compiled = _compiled("alif", "xent", "symmetric", 3, weights, optimiser=SGD(lr=0.05))
    before = compiled.weights()
    grads = compiled.run_batch(x, mask, labels=target)["grads"]
    compiled.apply_gradients()
    after = compiled.weights()
    for name, g in grads.items():
        assert np.abs(g).max() > 0, name
        np.testing.assert_array_equal(after[name], before[name].ravel() - 0.05 * g.sum(axis=0), err_msg=name)


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_two_adam_steps_equal_numpy(feedback):
    """Two batches, two steps of the generated Adam (the batch's summed gradient): the
    reference's gradients and eprop_reference.adam_step give the same weights; the moments
    carry over."""
    batch, kind, loss, lr = 4, "alif", "xent", 0.01
    x, mask, target, weights = _problem(2, batch, loss, real_valued=True)
    compiled = _compiled(kind, loss, feedback, batch, weights)
    matrix = compiled.backend.pull("hid_eprop_feedback").reshape(N_H, K) if feedback == "random" else "symmetric"
    w = {name: np.array(v) for name, v in weights.items()}
    moments = {name: (np.zeros_like(v), np.zeros_like(v)) for name, v in w.items()}
    for step in (1, 2):
        ref = _reference(kind, x, mask, target, w, loss, feedback=matrix)
        out = compiled.run_batch(x, mask, labels=target)
        _same_run(out, ref, batch, f"batch {step}")
        compiled.apply_gradients()
        for name, g in ref["grads"].items():
            w[name], *m_v = adam_step(w[name], g.sum(axis=0), *moments[name], step, lr)
            moments[name] = tuple(m_v)
    new = compiled.weights()
    got = {"w_in": new["inp_hid_w"].reshape(N_IN, N_H).T, "w_rec": new["hid_hid_w"].reshape(N_H, N_H).T,
           "w_out": new["hid_out_w"].reshape(N_H, K).T, "b_out": new["out_p_bias"]}
    for name, value in got.items():
        assert not np.array_equal(value, weights[name]), f"{name} did not move"
        np.testing.assert_allclose(value, w[name], rtol=1e-12, atol=1e-14, err_msg=f"{name} after two Adam steps")


def test_evaluation_runs_the_forward_pass_only():
    x, mask, target, weights = _problem(3, 2, "xent", real_valued=False)
    compiled = _compiled("lif_subtractive", "xent", "symmetric", 2, weights)
    learned = compiled.run_batch(x, mask, labels=target)
    evaluated = compiled.run_batch(x, mask, labels=target, learn=False)
    assert "grads" not in evaluated
    np.testing.assert_array_equal(evaluated["y"], learned["y"])
    assert not compiled.backend.peek("hid_hid_eprop_grad").any()  # the trial's reset zeroed, nothing added
    with pytest.raises(NetworkError, match=r"inputs must have shape \(40, 2, 5\), got \(40, 2, 4\)"):
        compiled.run_batch(x[:, :, :4], mask, labels=target)
    with pytest.raises(NetworkError, match="inputs and mask must be finite"):
        compiled.run_batch(np.where(x > 0, np.nan, 0.0), mask, labels=target)
    with pytest.raises(NetworkError, match=r"labels must be 2 integers in \[0, 3\)"):
        compiled.run_batch(x, mask, labels=[0, 3])


def test_compile_errors_name_the_population_or_projection():
    _, _, _, weights = _problem(0, 1, "xent", real_valued=False)
    net = _network("alif", 1, weights)
    compiler = EpropCompiler()
    with pytest.raises(NetworkError, match="no projection 'nope'"):
        compiler.compile(net, inputs="inp", hidden="hid", readout="out", trainable=["nope", "hid_out"], n_steps=5)
    with pytest.raises(NetworkError, match="readout: population 'hid' must use the leaky_readout model"):
        compiler.compile(net, inputs="inp", hidden="hid", readout="hid", trainable=["hid_out"], n_steps=5)
    with pytest.raises(NetworkError, match=r"name a projection from a hidden population \('hid'\) to the readout"):
        compiler.compile(net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid"], n_steps=5)
    refractory = _network("alif", 1, weights, hidden_params={"t_ref": [0.0] * (N_H - 1) + [2.0]})
    with pytest.raises(NetworkError, match=r"hidden population 'hid' \(alif\): e-prop does not model "
                                           r"refractoriness, but the refractory period 't_ref' is 2 ms"):
        compiler.compile(refractory, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_out"],
                         n_steps=5)
    flipped = _network("alif", 1, weights, hidden_params={"v_th": -0.5})
    with pytest.raises(NetworkError, match="the surrogate's scale 'v_th' must be positive, got -0.5"):
        compiler.compile(flipped, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_out"],
                         n_steps=5)


def test_compiled_network_learns_a_two_class_task():
    """Class 0 drives inputs 0-1, class 1 inputs 2-4: 40 Adam steps take the loss to a fraction."""
    rng = np.random.default_rng(7)
    batch = 8
    _, mask, _, weights = _problem(7, batch, "xent", real_valued=False)
    weights["w_out"] *= 0.1
    compiled = EpropCompiler(loss="xent", optimiser=Adam(lr=0.05)).compile(
        _network("lif_subtractive", batch, weights), inputs="inp", hidden="hid", readout="out",
        trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"], n_steps=T)
    labels = np.arange(batch) % 2
    channels = np.where(labels[:, None] == 0, np.arange(N_IN) < 2, np.arange(N_IN) >= 2)
    losses = []
    for _ in range(40):
        x = (rng.random((T, batch, N_IN)) < 0.3) * channels[None]
        losses.append(compiled.run_batch(x, mask, labels=labels)["loss"].mean())
        compiled.apply_gradients(mean=True)
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses


def test_register_blocks_of_wide_rows_equal_step_by_step_bit_for_bit(monkeypatch):
    """Rows of 37 synapses: two vectors of 16, then the rest (5) in shorter vectors; in blocks
    of 7 steps the step-by-step results bit for bit, in single precision too."""
    import tests.test_training_compiler as here

    monkeypatch.setattr(here, "N_H", 37)
    x, mask, target, weights = _problem(10, 2, "xent", real_valued=True)
    for precision in ("double", "float"):
        runs = {}
        for block_steps in (7, 1):
            net = _network("alif", 2, weights, hidden_params={"beta": {"values": [0.0, 0.4], "counts": [17, 20]}})
            net.precision = precision
            compiled = EpropCompiler(loss="xent", block_steps=block_steps).compile(
                net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out"],
                n_steps=T)
            runs[block_steps] = compiled.run_batch(x, mask, labels=target)
        assert runs[1]["hidden_spikes"].sum() > 0
        for name, g in runs[1]["grads"].items():
            assert np.abs(g).max() > 0, name
            _same_bits(runs[7]["grads"][name], g, f"{precision}: gradient {name}, blocks of 7 against step by step")


def _sparse_network(kind, batch, keep, weights):
    """The network of ``kind`` with stored (sparse) input and recurrent projections: the
    synapses where ``keep`` ([post][pre]) is true, with the weights of ``weights``."""
    from spikeforge.network import FromList

    model, params = HIDDEN[kind]
    net = Network(f"oracle_sparse_{kind}", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, model, params)
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=list(weights["b_out"])))
    pairs = {}
    for name, proj, pre in (("w_in", "inp_hid", "inp"), ("w_rec", "hid_hid", "hid")):
        post_ids, pre_ids = np.nonzero(keep[name])  # [post][pre] in the old layout
        order = np.lexsort((post_ids, pre_ids))  # synapse order: by pre, then post
        pairs[name] = (pre_ids[order], post_ids[order])
        net.add_projection(proj, pre, "hid", SCALED if pre == "inp" else m.STATIC, ONE_STEP_CURR,
                           FromList(tuple(int(i) for i in pre_ids[order]), tuple(int(j) for j in post_ids[order])),
                           wu_init={"w": weights[name][post_ids[order], pre_ids[order]]})
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["w_out"].T.ravel()})
    return net, pairs


@pytest.mark.parametrize("kind", ["lif_subtractive", "alif"])
def test_sparse_register_blocks_equal_step_by_step_bit_for_bit(kind):
    """Sparse rows in blocks of 7 steps (each row's synapses vectorised, their neurons' values
    gathered; an autapse in the recurrent rows): the step-by-step results bit for bit."""
    batch = 2
    x, mask, target, weights = _problem(9, batch, "xent", real_valued=True)
    rng = np.random.default_rng(9)
    keep = {"w_in": rng.random((N_H, N_IN)) < 0.6, "w_rec": rng.random((N_H, N_H)) < 0.6}
    keep["w_rec"][2, 2] = True
    runs = {}
    for block_steps in (7, 1):
        net, pairs = _sparse_network(kind, batch, keep, weights)
        compiled = EpropCompiler(loss="xent", block_steps=block_steps).compile(
            net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out"], n_steps=T)
        sparse_kernels = [k for k in compiled.spec.kernels if k.kind == "eprop_eligibility"]
        assert all((k.info["register_block"] is not None) == (block_steps > 1) for k in sparse_kernels)
        runs[block_steps] = compiled.run_batch(x, mask, labels=target)
    assert runs[1]["hidden_spikes"].sum() > 0
    for name, g in runs[1]["grads"].items():
        assert np.abs(g).max() > 0, name
        _same_bits(runs[7]["grads"][name], g, f"{kind}: sparse gradient {name}, blocks of 7 against step by step")
    autapse = np.flatnonzero((pairs["w_rec"][0] == 2) & (pairs["w_rec"][1] == 2))
    assert autapse.size == 1 and not runs[7]["grads"]["hid_hid_w"][:, autapse].any()


def test_sparse_trainable_projections_equal_dense_ones_with_zeros():
    """Sparse (stored) input and recurrent projections give the dense network's gradients on
    their synapses when the dense weights of the missing synapses are 0, bit for bit."""
    batch = 2
    x, mask, target, weights = _problem(8, batch, "mse", real_valued=True)
    rng = np.random.default_rng(8)
    keep = {"w_in": rng.random((N_H, N_IN)) < 0.5, "w_rec": rng.random((N_H, N_H)) < 0.5}
    keep["w_rec"][1, 1] = True  # an autapse: it never learns, as the dense diagonal
    dense_weights = {k: np.where(keep[k], v, 0.0) if k in keep else v for k, v in weights.items()}
    dense_weights["w_rec"][1, 1] = 0.0
    dense = _compiled("alif", "mse", "symmetric", batch, dense_weights).run_batch(x, mask, targets=target)

    net, pairs = _sparse_network("alif", batch, keep, dense_weights)
    sparse = EpropCompiler(loss="mse").compile(
        net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out"], n_steps=T,
    ).run_batch(x, mask, targets=target)
    _same_bits(sparse["loss"], dense["loss"], "loss")
    for name, proj, n_pre in (("w_in", "inp_hid", N_IN), ("w_rec", "hid_hid", N_H)):
        pre_ids, post_ids = pairs[name]
        on_synapses = dense["grads"][f"{proj}_w"].reshape(batch, n_pre, N_H)[:, pre_ids, post_ids]
        assert np.abs(on_synapses).max() > 0
        _same_bits(sparse["grads"][f"{proj}_w"], np.ascontiguousarray(on_synapses), f"sparse gradient of {name}")
    autapse = np.flatnonzero((pairs["w_rec"][0] == 1) & (pairs["w_rec"][1] == 1))
    assert autapse.size == 1 and not sparse["grads"]["hid_hid_w"][:, autapse].any()


def test_an_input_delay_equals_inputs_shifted_by_it():
    """A delay of d steps on the input projection (step t's spikes reach the hidden layer at
    t + 1 + d) gives the gradients of the undelayed network fed the inputs d steps later."""
    batch, d = 2, 3
    x, mask, target, weights = _problem(9, batch, "xent", real_valued=False)
    shifted = np.concatenate([np.zeros((d, batch, N_IN)), x[:-d]])
    runs = []
    for delay, inputs in ((0, shifted), (d, x)):
        net = _network("lsnn", batch, weights, delays=(delay, 0), input_synapse=m.STATIC)
        compiled = EpropCompiler(loss="xent").compile(
            net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"],
            n_steps=T)
        assert compiled.spec.array("inp_eprop_s_hist").slots == delay + 2
        runs.append(compiled.run_batch(inputs, mask, labels=target))
    plain, delayed = runs
    assert plain["hidden_spikes"].sum() > 0
    _same_bits(delayed["loss"], plain["loss"], "loss")
    for name in ("inp_hid_w", "hid_hid_w", "hid_out_w", "out_p_bias"):
        _same_bits(delayed["grads"][name], plain["grads"][name], f"gradient of {name}")
    with pytest.raises(NetworkError, match="'inp_hid' has a delay, but its input reads presynaptic variables "
                                           r"\(value_pre\) when the spike is delivered"):
        EpropCompiler().compile(_network("lsnn", batch, weights, delays=(d, 0)), inputs="inp", hidden="hid",
                                readout="out", trainable=["inp_hid", "hid_out"], n_steps=T)


def test_a_recurrent_delay_changes_the_gradients_and_keeps_the_dense_shape():
    batch, d = 2, 2
    x, mask, target, weights = _problem(10, batch, "xent", real_valued=False)
    plain = _compiled("alif", "xent", "symmetric", batch, weights).run_batch(x, mask, labels=target)
    net = _network("alif", batch, weights, delays=(0, d))
    delayed = EpropCompiler(loss="xent").compile(
        net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out"], n_steps=T,
    ).run_batch(x, mask, labels=target)
    g = delayed["grads"]["hid_hid_w"].reshape(batch, N_H, N_H)
    assert np.abs(g).max() > 0 and not np.diagonal(g, axis1=1, axis2=2).any()
    assert not np.array_equal(g, plain["grads"]["hid_hid_w"].reshape(batch, N_H, N_H))


# ----------------------------------------------------------------------------- two hidden layers

def _two_layers(batch, rng, record=False):
    """inp -> h1 (lif_subtractive, recurrent) -> h2 (alif, recurrent) -> out, all trainable."""
    w = {"inp_h1": rng.uniform(0.0, 1.5, (N_IN, N_H)), "h1_h1": rng.normal(0.0, 0.4, (N_H, N_H)),
         "h1_h2": rng.uniform(0.0, 1.2, (N_H, N_H)), "h2_h2": rng.normal(0.0, 0.4, (N_H, N_H)),
         "h2_out": rng.normal(0.0, 1.0, (N_H, K))}  # [pre][post]
    for name in ("h1_h1", "h2_h2"):
        np.fill_diagonal(w[name], 0.0)
    net = Network("two_layers", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", N_H, *HIDDEN["lif_subtractive"], record_spikes=record)
    net.add_population("h2", N_H, *HIDDEN["alif"])
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=[0.1, -0.2, 0.0]))
    for name, pre, post, syn in (("inp_h1", "inp", "h1", SCALED), ("h1_h1", "h1", "h1", m.STATIC),
                                 ("h1_h2", "h1", "h2", m.STATIC), ("h2_h2", "h2", "h2", m.STATIC),
                                 ("h2_out", "h2", "out", m.STATIC)):
        net.add_projection(name, pre, post, syn, ONE_STEP_CURR, wu_init={"w": w[name].ravel()})
    return net, w


@pytest.mark.slow
def test_two_layers_second_layer_equals_one_layer_fed_the_first_layers_spikes():
    """The second layer's gradients (and the readout's) equal those of a one-layer network whose
    inputs are the first layer's spikes, bit for bit; the first layer learns through its own
    random feedback matrix."""
    batch = 3
    rng = np.random.default_rng(11)
    net, w = _two_layers(batch, rng, record=True)
    x = (rng.random((T, batch, N_IN)) < 0.4).astype(float)
    target, mask = rng.normal(0.0, 0.5, (T, batch, K)), np.ones(T)
    compiled = EpropCompiler(loss="mse", feedback={"h1": "random", "h2": "symmetric"}).compile(
        net, inputs="inp", hidden=["h1", "h2"], readout="out",
        trainable=["inp_h1", "h1_h1", "h1_h2", "h2_h2", "h2_out", "out.bias"], n_steps=T)
    two = compiled.run_batch(x, mask, targets=target)
    spikes = np.zeros((T, batch, N_H))
    for b, (times, ids) in enumerate(compiled.simulation.spikes("h1")):
        spikes[np.round(times / DT).astype(int), b, ids] = 1.0
    assert spikes.sum() > 0 and two["hidden_spikes"][:, N_H:].sum() > 0
    np.testing.assert_array_equal(two["hidden_spikes"][:, :N_H], spikes.sum(axis=0))

    one = Network("one_layer", dt=DT, batch_size=batch, precision="double")
    one.add_population("inp", N_H, VALUE_INPUT)
    one.add_population("h2", N_H, *HIDDEN["alif"])
    one.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=[0.1, -0.2, 0.0]))
    one.add_projection("h1_h2", "inp", "h2", SCALED, ONE_STEP_CURR, wu_init={"w": w["h1_h2"].ravel()})
    one.add_projection("h2_h2", "h2", "h2", m.STATIC, ONE_STEP_CURR, wu_init={"w": w["h2_h2"].ravel()})
    one.add_projection("h2_out", "h2", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": w["h2_out"].ravel()})
    ref = EpropCompiler(loss="mse").compile(one, inputs="inp", hidden="h2", readout="out",
                                            trainable=["h1_h2", "h2_h2", "h2_out", "out.bias"], n_steps=T,
                                            ).run_batch(spikes, mask, targets=target)
    _same_bits(two["y"], ref["y"], "readout y")
    for name in ("h1_h2_w", "h2_h2_w", "h2_out_w", "out_p_bias"):
        assert np.abs(ref["grads"][name]).max() > 0
        _same_bits(two["grads"][name], ref["grads"][name], f"gradient of {name}")


def test_two_layers_first_layer_equals_numpy_eprop_with_its_feedback():
    """The first layer's gradients against a plain numpy e-prop (tests/eprop_reference.py's
    forward pass and recursions) with L = B1 err, err from the readout the network computed."""
    from tests.eprop_reference import _constants, forward

    batch = 2
    rng = np.random.default_rng(12)
    net, w = _two_layers(batch, rng)
    x = (rng.random((T, batch, N_IN)) < 0.4).astype(float)
    target, mask = rng.normal(0.0, 0.5, (T, batch, K)), np.r_[np.zeros(T // 4), np.ones(T - T // 4)]
    compiled = EpropCompiler(loss="mse", feedback="random").compile(
        net, inputs="inp", hidden=["h1", "h2"], readout="out",
        trainable=["inp_h1", "h1_h1", "h1_h2", "h2_h2", "h2_out"], n_steps=T)
    out = compiled.run_batch(x, mask, targets=target)
    B1 = compiled.backend.pull("h1_eprop_feedback").reshape(N_H, K)
    assert not np.array_equal(B1, compiled.backend.pull("h2_eprop_feedback").reshape(N_H, K))
    err = mask[:, None, None] * (out["y"] - target)  # dE/dy of the mse loss, per step

    params = dict(dt=DT, tau_m=10.0, tau_a=None, tau_out=TAU_OUT, v_th=0.6, beta=0.0, gamma=0.3)
    fw = forward(x, params, {"W_in": w["inp_h1"].T, "W_rec": w["h1_h1"].T, "W_out": np.zeros((K, N_H)),
                             "b": np.zeros(K)})
    c = _constants(params)
    al, ka = c["alpha"], c["kappa"]
    for name, S, n_pre in (("inp_h1", x, N_IN), ("h1_h1", fw["z"], N_H)):
        eps, ebar, grad = (np.zeros((batch, N_H, n_pre)) for _ in range(3))
        s_prev = np.zeros((batch, n_pre))
        for t in range(T):
            eps = al * eps + (1.0 - al) * s_prev[:, None, :]
            grad += (err[t] @ B1.T)[:, :, None] * (1.0 - ka) * ebar
            ebar = ka * ebar + fw["psi"][t][:, :, None] * eps
            s_prev = S[t]
        if name == "h1_h1":
            for b in range(batch):
                np.fill_diagonal(grad[b], 0.0)
        ours = out["grads"][f"{name}_w"].reshape(batch, n_pre, N_H).transpose(0, 2, 1)
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose(ours, grad, rtol=1e-9, atol=1e-12 * np.abs(grad).max(), err_msg=name)


def test_symmetric_feedback_needs_a_projection_to_the_readout():
    net, _ = _two_layers(1, np.random.default_rng(0))
    with pytest.raises(NetworkError, match="hidden population 'h1': symmetric feedback sends the error back "
                                           "through its projection to the readout, and it has none"):
        EpropCompiler(feedback="symmetric").compile(net, inputs="inp", hidden=["h1", "h2"], readout="out",
                                                    trainable=["inp_h1", "h2_out"], n_steps=5)


def test_threads_give_the_same_gradients():
    """Kernels with enough work per step run on a thread team: instances split across threads,
    each instance's arithmetic unchanged."""
    n_h, batch = 64, 4
    rng = np.random.default_rng(13)
    x = (rng.random((T, batch, N_IN)) < 0.4).astype(float)
    weights = {"w_in": rng.uniform(0.0, 1.0, (n_h, N_IN)), "w_rec": rng.normal(0.0, 0.2, (n_h, n_h)),
               "w_out": rng.normal(0.0, 1.0, (K, n_h)), "b_out": np.zeros(K)}
    np.fill_diagonal(weights["w_rec"], 0.0)
    labels, mask = rng.integers(0, K, batch), np.ones(T)
    runs = []
    for threads in (1, 2):
        net = Network("threads", dt=DT, batch_size=batch, precision="double")
        net.add_population("inp", N_IN, VALUE_INPUT)
        net.add_population("hid", n_h, *HIDDEN["alif"])
        net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=[0.0] * K))
        net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR, wu_init={"w": weights["w_in"].T.ravel()})
        net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["w_rec"].T.ravel()})
        net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["w_out"].T.ravel()})
        compiled = EpropCompiler().compile(net, inputs="inp", hidden="hid", readout="out",
                                           trainable=["inp_hid", "hid_hid", "hid_out"], n_steps=T, threads=threads)
        runs.append(compiled.run_batch(x, mask, labels=labels))
    assert runs[0]["hidden_spikes"].sum() > 0
    for name, g in runs[0]["grads"].items():
        _same_bits(runs[1]["grads"][name], g, f"gradient of {name}, 2 threads")
