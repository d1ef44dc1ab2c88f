"""The time-parallel method's generated cpu kernels (forward pass) against the cpu simulation
backend running the same network one step at a time: V and spikes bit for bit in float32; and
against the numpy reference (tests/parallel_reference.py) in double."""

import math

import numpy as np
import pytest

from spikeforge.errors import ModelError, NetworkError
from spikeforge.models import builtins as b
from spikeforge.models.builtins import ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.runtime.simulation import Simulation
from spikeforge.training.parallel import ParallelCompiler
from tests import parallel_reference as ref

T, B, N_IN, N1, N2, DT = 40, 2, 5, 6, 4, 1.0

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


def _network(precision, weights, record=False):
    net = Network("stack", dt=DT, batch_size=B, precision=precision)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", N1, PARALIF, record_spikes=record)
    net.add_population("h2", N2, COUPLED, record_spikes=record)
    net.add_projection("inp_h1", "inp", "h1", SCALED, ONE_STEP_CURR, wu_init={"w": weights[0].T.ravel()})
    net.add_projection("h1_h2", "h1", "h2", STATIC, ONE_STEP_CURR, wu_init={"w": weights[1].T.ravel()})
    return net


def _problem(seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, N_IN)) < 0.4) * rng.uniform(0.3, 1.7, (T, B, N_IN))  # real values: rounding shows
    weights = [rng.uniform(-0.3, 1.2, (N1, N_IN)), rng.uniform(-0.2, 1.5, (N2, N1))]  # [post][pre]
    return x, weights


def _step_by_step(precision, x, weights):
    """V (and a) and spikes of the cpu simulation backend, pulled after every single step."""
    net = _network(precision, weights, record=True)
    net.add_timed_input("inp", "x", np.zeros((T, B, N_IN)), dt=DT)
    sim = Simulation(net, backend="cpu", progress=False)
    sim.set_timed_input("inp", "x", x, dt=DT)
    out = {"h1": {"v": []}, "h2": {"v": [], "a": []}}
    for _ in range(T):
        sim.run(steps=1)
        for pop, vs in out.items():
            for v in vs:
                vs[v].append(sim.backend.pull(f"{pop}_v" if v == "v" else f"{pop}_{v}").reshape(B, -1).copy())
    res = {pop: {v: np.stack(a) for v, a in vs.items()} for pop, vs in out.items()}
    for pop, n in (("h1", N1), ("h2", N2)):
        z = np.zeros((T, B, n))
        for bi, (times, ids) in enumerate(sim.spikes(pop)):
            z[np.round(times / DT).astype(int), bi, ids] = 1.0
        res[pop]["z"] = z
    sim.close()
    return res


def _parallel(precision, x, weights):
    compiled = ParallelCompiler().compile(_network(precision, weights), inputs="inp", hidden=["h1", "h2"],
                                          n_steps=T)
    try:
        return compiled.forward(x)
    finally:
        compiled.close()


def test_forward_is_bit_identical_to_the_step_by_step_simulation_in_float():
    x, weights = _problem(1)
    par = _parallel("float", x, weights)
    seq = _step_by_step("float", x, weights)
    for pop in ("h1", "h2"):
        assert 0 < seq[pop]["z"].mean() < 0.8, pop  # spiking, not saturated
        for v in seq[pop]:
            assert par[pop][v].dtype == np.float32
            np.testing.assert_array_equal(par[pop][v], seq[pop][v], err_msg=f"{pop}.{v}")


def test_forward_matches_the_numpy_reference_in_double():
    x, weights = _problem(2)
    par = _parallel("double", x, weights)
    a = math.exp(-DT / 8.0)
    h1 = ref.layer(A=[[a]], Bv=[1 - a], c=[0.1 * (1 - a)], dg=[1.0], g0=-0.5)
    # the coupled pair from scipy's matrix exponential of its continuous system
    from scipy.linalg import expm
    M = np.array([[-1 / 5.0, -1 / 5.0, 1 / 5.0], [0.5 / 20.0, -1 / 20.0, 0.0], [0.0, 0.0, 0.0]])
    E = expm(M * DT)
    h2 = ref.layer(A=E[:2, :2], Bv=E[:2, 2], dg=[1.0, 0.0], g0=-0.4)
    out = ref.layer(A=[[1.0]], Bv=[0.0])  # no readout in the compiled network yet
    fw = ref.forward(x, [h1, h2], out, [*weights, np.zeros((1, N2))])
    for k, pop in enumerate(("h1", "h2")):
        np.testing.assert_allclose(par[pop]["u"], fw["u"][k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(par[pop]["v"], fw["x"][k][..., 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(par[pop]["z"], fw["z"][k])
    np.testing.assert_allclose(par["h2"]["a"], fw["x"][1][..., 1], rtol=1e-12, atol=1e-14)


def test_refusals():
    x, weights = _problem(3)
    net = _network("float", weights)
    net.add_projection("h2_h1", "h2", "h1", STATIC, ONE_STEP_CURR)
    with pytest.raises(NetworkError, match="'h2_h1'.*recurrent"):
        ParallelCompiler().compile(net, inputs="inp", hidden=["h1", "h2"], n_steps=T)
    net = Network("lif", dt=DT, batch_size=B)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", N1, b.LIF_SUBTRACTIVE)
    net.add_projection("inp_h", "inp", "h", SCALED, ONE_STEP_CURR)
    with pytest.raises(ModelError, match="without a reset") as info:
        ParallelCompiler().compile(net, inputs="inp", hidden="h", n_steps=T)
    assert info.value.model == "lif_subtractive"
