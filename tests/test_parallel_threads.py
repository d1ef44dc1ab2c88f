"""The time-parallel method's kernels on several OpenMP threads: the same values, bit for bit, as
on one thread (each batch instance is computed whole by one thread), and a forward pass still
bit-identical to the cpu simulation stepping one step at a time, at sizes where the kernels hand
their instances to a thread team."""

import numpy as np
import pytest

from spikeforge.models import builtins as b
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.runtime.simulation import Simulation
from spikeforge.training.parallel import ParallelCompiler

# B * T * N well above the size at which a kernel takes a thread team; B odd: uneven shares
T, B, N_IN, N_H, K, DT = 300, 5, 20, 60, 3, 1.0
PARALIF = NeuronModel("paralif", params={"tau_m": 8.0, "v_rest": 0.0, "r_m": 1.0, "v_th": 0.5},
                      vars={"v": 0.0}, equations="dv/dt = (v_rest - v + r_m * i_syn) / tau_m", threshold="v > v_th")


def _network(precision, w_in, w_out, record=False):
    net = Network("threads", dt=DT, batch_size=B, precision=precision)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", N_H, PARALIF, record_spikes=record)
    net.add_projection("inp_h", "inp", "h", SCALED, b.EXP_CURR, wu_init={"w": w_in.T.ravel()},
                       ps_params={"tau_syn": 3.0})
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=10.0, bias=[0.1, -0.2, 0.0]))
    net.add_projection("h_out", "h", "out", STATIC, ONE_STEP_CURR, wu_init={"w": w_out.T.ravel()})
    return net


def _problem():
    rng = np.random.default_rng(7)
    x = (rng.random((T, B, N_IN)) < 0.2) * rng.uniform(0.3, 1.7, (T, B, N_IN))  # real values: rounding shows
    return x, rng.uniform(-0.25, 0.3, (N_H, N_IN)), rng.normal(0.0, 1.0, (K, N_H))  # weights [post][pre]


def _batch(threads, precision="float"):
    x, w_in, w_out = _problem()
    mask = np.zeros(T)
    mask[T // 2:] = 1.0
    labels = np.arange(B) % K
    compiled = ParallelCompiler(loss="xent").compile(_network(precision, w_in, w_out), inputs="inp", hidden=["h"],
                                                     readout="out", n_steps=T, threads=threads)
    try:
        assert any("omp parallel for" in line.code for k in compiled.spec.custom_updates for line in k.code)
        res = compiled.gradients(x, mask, labels=labels, values=True)
        compiled.apply_gradients()
        res["weights"] = {a: compiled.backend.pull(a).copy() for a in compiled.weight_arrays}
        return res
    finally:
        compiled.close()


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_values_of_one_thread_bit_for_bit(threads):
    one, many = _batch(1), _batch(threads)
    assert 0 < one["forward"]["h"]["z"].mean() < 0.8  # spiking, not saturated
    for pop, values in one["forward"].items():
        for v, a in values.items():
            np.testing.assert_array_equal(many["forward"][pop][v], a, err_msg=f"{pop}.{v}")
    np.testing.assert_array_equal(many["loss"], one["loss"])
    for name, g in one["grads"].items():
        assert np.abs(g).max() > 0, name
        np.testing.assert_array_equal(many["grads"][name], g, err_msg=name)
    for name, w in one["weights"].items():  # after one Adam step
        np.testing.assert_array_equal(many["weights"][name], w, err_msg=name)


def test_forward_on_threads_is_bit_identical_to_the_step_by_step_simulation():
    par = _batch(2)["forward"]
    x, w_in, w_out = _problem()
    net = _network("float", w_in, w_out, record=True)
    net.add_timed_input("inp", "x", np.zeros((T, B, N_IN)), dt=DT)
    sim = Simulation(net, backend="cpu", progress=False, threads=1)
    sim.set_timed_input("inp", "x", x, dt=DT)
    v_h, v_out = [], []
    for _ in range(T):
        sim.run(steps=1)
        v_h.append(sim.backend.pull("h_v").reshape(B, -1).copy())
        v_out.append(sim.backend.pull("out_v").reshape(B, -1).copy())
    z = np.zeros((T, B, N_H))
    for bi, (times, ids) in enumerate(sim.spikes("h")):
        z[np.round(times / DT).astype(int), bi, ids] = 1.0
    sim.close()
    np.testing.assert_array_equal(par["h"]["v"], np.stack(v_h))
    np.testing.assert_array_equal(par["h"]["z"], z)
    np.testing.assert_array_equal(par["out"]["v"], np.stack(v_out))


def test_a_later_batch_gives_the_values_of_a_first_batch():
    """Nothing of one batch is left over into the next (the kernels write every value they keep
    before reading it, and the initial state stays the network's): the batch after another equals
    the same batch on a fresh network, bit for bit."""
    x, w_in, w_out = _problem()
    other = np.random.default_rng(3).random((T, B, N_IN)) < 0.3
    mask = np.ones(T)
    runs = []
    for first in (None, other):
        compiled = ParallelCompiler(loss="xent").compile(_network("float", w_in, w_out), inputs="inp", hidden=["h"],
                                                         readout="out", n_steps=T, threads=2)
        try:
            if first is not None:
                compiled.gradients(first, mask, labels=np.zeros(B, dtype=int))
            runs.append(compiled.gradients(x, mask, labels=np.arange(B) % K, values=True))
        finally:
            compiled.close()
    fresh, later = runs
    for pop, values in fresh["forward"].items():
        for v, a in values.items():
            np.testing.assert_array_equal(later["forward"][pop][v], a, err_msg=f"{pop}.{v}")
    for name, g in fresh["grads"].items():
        np.testing.assert_array_equal(later["grads"][name], g, err_msg=name)
    np.testing.assert_array_equal(later["loss"], fresh["loss"])
