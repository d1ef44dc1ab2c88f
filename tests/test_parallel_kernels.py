"""The time-parallel method's generated cpu kernels against the cpu simulation backend running
the same network one step at a time (forward: V and spikes bit for bit in float32), and against
the numpy reference (tests/parallel_reference.py, BPTT by a hand-written adjoint scan) in double:
forward values, losses and per-instance gradients."""

import math

import numpy as np
import pytest

from spikeforge.errors import MemoryLimitError, ModelError, NetworkError
from spikeforge.models import builtins as b
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.runtime import memory
from spikeforge.runtime.simulation import Simulation
from spikeforge.training.objectives import SGD
from spikeforge.training.parallel import ParallelCompiler
from tests import parallel_reference as ref

T, B, N_IN, N1, N2, K, DT = 40, 2, 5, 6, 4, 3, 1.0
TAU_OUT, TAU_SYN = 10.0, 3.0
BIAS = np.array([0.2, -0.1, 0.05])  # one value per readout neuron: read at run time, trained

#: ParaLIF's neuron: a LIF without reset (a linear filter of its input) and a threshold
PARALIF = NeuronModel("paralif", params={"tau_m": 8.0, "v_rest": 0.1, "r_m": 1.0, "v_th": 0.5},
                      vars={"v": 0.0}, equations="dv/dt = (v_rest - v + r_m * i_syn) / tau_m", threshold="v > v_th")
#: a coupled linear pair (the membrane and a slow current driven by it): the exact pair integrator
COUPLED = NeuronModel("coupled", params={"tau_m": 5.0, "tau_a": 20.0, "k": 0.5, "v_th": 0.4},
                      vars={"v": 0.0, "a": 0.0},
                      equations="""
                          dv/dt = (i_syn - a - v) / tau_m
                          da/dt = (k * v - a) / tau_a
                      """, threshold="v > v_th")


def _network(precision, weights, record=False, bias=BIAS):
    net = Network("stack", dt=DT, batch_size=B, precision=precision)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", N1, PARALIF, record_spikes=record)
    net.add_population("h2", N2, COUPLED, record_spikes=record)
    # SPSN's neuron: the LIF fed by an exponentially decaying synaptic current
    net.add_projection("inp_h1", "inp", "h1", SCALED, b.EXP_CURR, wu_init={"w": weights[0].T.ravel()},
                       ps_params={"tau_syn": TAU_SYN})
    net.add_projection("h1_h2", "h1", "h2", STATIC, ONE_STEP_CURR, wu_init={"w": weights[1].T.ravel()})
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=bias if np.isscalar(bias) else list(bias)))
    net.add_projection("h2_out", "h2", "out", STATIC, ONE_STEP_CURR, wu_init={"w": weights[2].T.ravel()})
    return net


def _problem(seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, N_IN)) < 0.4) * rng.uniform(0.3, 1.7, (T, B, N_IN))  # real values: rounding shows
    weights = [rng.uniform(-0.2, 0.45, (N1, N_IN)), rng.uniform(-0.2, 1.5, (N2, N1)),
               rng.normal(0.0, 1.0, (K, N2))]  # [post][pre]
    return x, weights


def _step_by_step(precision, x, weights):
    """V (and a) and spikes of the cpu simulation backend, pulled after every single step."""
    net = _network(precision, weights, record=True)
    net.add_timed_input("inp", "x", np.zeros((T, B, N_IN)), dt=DT)
    sim = Simulation(net, backend="cpu", progress=False)
    sim.set_timed_input("inp", "x", x, dt=DT)
    out = {"h1": {"v": [], "_ps_x": []}, "h2": {"v": [], "a": []}, "out": {"v": []}}
    for _ in range(T):
        sim.run(steps=1)
        for pop, vs in out.items():
            for v in vs:
                array = "inp_h1_x" if v == "_ps_x" else f"{pop}_{v}"  # exp_curr's current lives with the projection
                vs[v].append(sim.backend.pull(array).reshape(B, -1).copy())
    res = {pop: {v: np.stack(a) for v, a in vs.items()} for pop, vs in out.items()}
    for pop, n in (("h1", N1), ("h2", N2)):
        z = np.zeros((T, B, n))
        for bi, (times, ids) in enumerate(sim.spikes(pop)):
            z[np.round(times / DT).astype(int), bi, ids] = 1.0
        res[pop]["z"] = z
    sim.close()
    return res


def _compile(precision, weights, loss="xent"):
    return ParallelCompiler(loss=loss).compile(_network(precision, weights), inputs="inp", hidden=["h1", "h2"],
                                      readout="out", n_steps=T)


def _parallel(precision, x, weights):
    compiled = _compile(precision, weights)
    try:
        return compiled.forward(x)
    finally:
        compiled.close()


def test_forward_is_bit_identical_to_the_step_by_step_simulation_in_float():
    x, weights = _problem(1)
    par = _parallel("float", x, weights)
    seq = _step_by_step("float", x, weights)
    for pop in ("h1", "h2", "out"):
        if pop != "out":
            assert 0 < seq[pop]["z"].mean() < 0.8, pop  # spiking, not saturated
        for v in seq[pop]:
            assert par[pop][v].dtype == np.float32
            np.testing.assert_array_equal(par[pop][v], seq[pop][v], err_msg=f"{pop}.{v}")


def test_forward_scan_lists_the_senders_of_every_step_in_neuron_order():
    """The list the next layer's input and gradient read instead of testing every spike value."""
    x, weights = _problem(1)
    compiled = _compile("float", weights)
    try:
        par = compiled.forward(x)
        for pop, n in (("h1", N1), ("h2", N2)):
            senders = compiled.backend.pull(f"par_{pop}_senders").reshape(B, T * n)
            ends = compiled.backend.pull(f"par_{pop}_n_senders").reshape(B, T).astype(np.int64)
            z = par[pop]["z"]  # (steps, batch, N)
            assert 0 < z.mean() < 0.8, pop
            for b in range(B):
                for t in range(T):
                    expected = np.flatnonzero(z[t, b])
                    start = ends[b, t - 1] if t else 0
                    assert ends[b, t] - start == len(expected), (pop, b, t)
                    np.testing.assert_array_equal(senders[b, start:ends[b, t]], expected, err_msg=f"{pop} {b} {t}")
    finally:
        compiled.close()


def _reference_stack():
    """The compiled network's layers in the reference's terms (the affine steps from closed forms
    and scipy's matrix exponential, not from spikeforge)."""
    from scipy.linalg import expm
    a, d = math.exp(-DT / 8.0), math.exp(-DT / TAU_SYN)
    # (v, x): x_t = d (x_{t-1} + u_t), v driven by x_{t-1} + u_t (the current before it decays)
    h1 = ref.layer(A=[[a, 1 - a], [0.0, d]], Bv=[1 - a, d], c=[0.1 * (1 - a), 0.0], dg=[1.0, 0.0], g0=-0.5,
                   scale=0.5)
    M = np.array([[-1 / 5.0, -1 / 5.0, 1 / 5.0], [0.5 / 20.0, -1 / 20.0, 0.0], [0.0, 0.0, 0.0]])
    E = expm(M * DT)
    h2 = ref.layer(A=E[:2, :2], Bv=E[:2, 2], dg=[1.0, 0.0], g0=-0.4, scale=0.4)
    kappa = math.exp(-DT / TAU_OUT)
    return [h1, h2], ref.layer(A=[[kappa]], Bv=[1 - kappa])


def _rel_close(new, old, what, rtol=1e-6):
    """Equal to ``rtol`` of the largest value (different summation orders)."""
    assert np.abs(old).max() > 0, what
    np.testing.assert_allclose(new, old, rtol=rtol, atol=rtol * np.abs(old).max(), err_msg=what)


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_forward_and_gradients_match_the_numpy_reference_in_double(loss):
    x, weights = _problem(2)
    rng = np.random.default_rng(4)
    mask = np.zeros(T)
    mask[T // 4:] = 1.0
    labels = rng.integers(0, K, B)
    targets = rng.normal(0.0, 0.5, (T, B, K))
    compiled = _compile("double", weights, loss)
    try:
        par = compiled.gradients(x, mask, labels=labels, targets=targets, values=True)
    finally:
        compiled.close()
    hidden, out = _reference_stack()
    g = ref.gradients(x, labels if loss == "xent" else targets, mask, hidden, out, weights,
                      BIAS, loss)
    fw = g["forward"]
    for k, pop in enumerate(("h1", "h2")):
        _rel_close(par["forward"][pop]["u"], fw["u"][k], f"{pop}.u", 1e-12)
        _rel_close(par["forward"][pop]["v"], fw["x"][k][..., 0], f"{pop}.v", 1e-12)
        np.testing.assert_array_equal(par["forward"][pop]["z"], fw["z"][k])
    _rel_close(par["forward"]["h2"]["a"], fw["x"][1][..., 1], "h2.a", 1e-12)
    _rel_close(par["forward"]["h1"]["_ps_x"], fw["x"][0][..., 1], "h1's synaptic current", 1e-12)
    _rel_close(par["y"], fw["y"], "y", 1e-12)
    _rel_close(par["loss"], g["loss"], "loss", 1e-12)
    for name, gw in zip(("inp_h1", "h1_h2", "h2_out"), g["W"]):
        _rel_close(par["grads"][name], gw.transpose(0, 2, 1), f"gradient of {name}")  # [pre][post]
    _rel_close(par["grads"]["out.bias"], g["b"], "gradient of out.bias")


def test_refusals():
    x, weights = _problem(3)
    net = _network("float", weights)
    net.add_projection("h2_h1", "h2", "h1", STATIC, ONE_STEP_CURR)
    with pytest.raises(NetworkError, match="'h2_h1'.*recurrent"):
        ParallelCompiler().compile(net, inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T)
    net = Network("lif", dt=DT, batch_size=B)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", N1, b.LIF_SUBTRACTIVE)
    net.add_projection("inp_h", "inp", "h", SCALED, ONE_STEP_CURR)
    net.add_population("out", K, LEAKY_READOUT)
    net.add_projection("h_out", "h", "out", STATIC, ONE_STEP_CURR)
    with pytest.raises(ModelError, match="without a reset") as info:
        ParallelCompiler().compile(net, inputs="inp", hidden="h", readout="out", n_steps=T)
    assert info.value.model == "lif_subtractive"


def test_optimiser_step_and_the_next_batch_uses_the_new_weights():
    """SGD over the per-instance gradients summed over the batch (the optimiser objects' code), and
    the next batch's forward pass runs with the stepped weights (not the network's initial ones)."""
    x, weights = _problem(5)
    mask, labels = np.ones(T), np.array([1, 2])
    compiled = ParallelCompiler(optimiser=SGD(lr=0.05)).compile(
        _network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T)
    try:
        first = compiled.gradients(x, mask, labels=labels)
        compiled.apply_gradients()
        stepped = [w - 0.05 * first["grads"][name].sum(axis=0).T
                   for w, name in zip(weights, ("inp_h1", "h1_h2", "h2_out"))]
        for w, name in zip(stepped, ("inp_h1", "h1_h2", "h2_out")):
            np.testing.assert_allclose(compiled.backend.pull(f"{name}_w").reshape(w.T.shape), w.T, rtol=1e-14)
        bias = BIAS - 0.05 * first["grads"]["out.bias"].sum(axis=0)
        np.testing.assert_allclose(compiled.backend.pull("out_p_bias").ravel(), bias, rtol=1e-14)
        second = compiled.gradients(x, mask, labels=labels)
    finally:
        compiled.close()
    hidden, out = _reference_stack()
    g = ref.gradients(x, labels, mask, hidden, out, stepped, bias, "xent")
    assert second["loss"].sum() < first["loss"].sum()
    _rel_close(second["y"], g["forward"]["y"], "y after the step", 1e-12)
    for name, gw in zip(("inp_h1", "h1_h2", "h2_out"), g["W"]):
        _rel_close(second["grads"][name], gw.transpose(0, 2, 1), f"gradient of {name} after the step")


def test_memory_is_visible_and_checked_before_allocating(monkeypatch):
    """Per layer, every state and the input of every step, and dE/du of every step where another
    kernel reads it (not the first layer's: its gradient is summed in its reverse scan): (T B N)
    values each (and the per-instance gradients, (B, pre, post) per projection); per hidden layer,
    the list of its senders (room for T B N indices, uint32, and T B ends of the steps' lists),
    which is how a binary rule's spikes are kept (no array of them), and the inputs' list as
    well (the input kernel lists them once for the gradient)."""
    x, weights = _problem(6)
    compiled = _compile("double", weights)
    try:
        mem = compiled.memory()
    finally:
        compiled.close()
    per_step = 8 * T * B
    # h1: v, x, u; h2: v, a, u, du; out: v, u, du, err (and the bias's gradient, the loss);
    # and the reverse scan's adjoint of one step, per state; the senders' lists
    lists = 4 * T * B
    assert mem["h1"] == 3 * per_step * N1 + 2 * 8 * B * N1 + lists * (N1 + 1)
    assert mem["h2"] == 4 * per_step * N2 + 2 * 8 * B * N2 + lists * (N2 + 1)
    assert mem["out"] == 4 * per_step * K + 2 * 8 * B * K + 8 * B
    assert mem["inp"] == per_step * N_IN + lists * (N_IN + 1)
    assert mem["h1_h2"] == 8 * B * N1 * N2
    monkeypatch.setenv(memory.ENV_LIMIT, "1MiB")
    with pytest.raises(MemoryLimitError, match="population 'h1' time-parallel training values"):
        ParallelCompiler().compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out",
                                   n_steps=20_000)


def test_trainable_selects_what_the_optimiser_steps():
    x, weights = _problem(7)
    compiled = ParallelCompiler(optimiser=SGD(lr=0.1)).compile(
        _network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T,
        trainable=["h1_h2", "out.bias"])
    try:
        before = {name: compiled.backend.pull(name).copy() for name in ("inp_h1_w", "h1_h2_w", "h2_out_w",
                                                                          "out_p_bias")}
        compiled.gradients(x, np.ones(T), labels=np.array([0, 1]))
        compiled.apply_gradients()
        changed = {name for name, v in before.items() if not np.array_equal(compiled.backend.pull(name), v)}
    finally:
        compiled.close()
    assert changed == {"h1_h2_w", "out_p_bias"}
    for trainable, match in ((["h2_h1"], "'h2_h1' is not a projection of the stack"),
                             (["out.bias"], "give 'bias' one value per neuron")):
        net = _network("double", weights, bias=0.1 if trainable == ["out.bias"] else BIAS)  # one bias for all
        with pytest.raises(NetworkError, match=match):
            ParallelCompiler().compile(net, inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T,
                                       trainable=trainable)
