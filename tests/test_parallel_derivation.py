"""The time-parallel method's per-step linear map (spikeforge.training.parallel) against the
matrix exponential of the continuous system (scipy), and its refusals."""

import math

import numpy as np
import pytest
from scipy.linalg import expm

from spikeforge.errors import ModelError, NetworkError
from spikeforge.models import builtins as b
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.training.parallel import check_feed_forward, derive_linear_step

DT = 0.5


def _exact_affine(M, b_in, c_in, dt):
    """A, B, c of one step of x' = M x + b_in u + c_in with u and c held over the step (the
    augmented matrix exponential, computed by scipy: independent of sympy)."""
    n = M.shape[0]
    aug = np.zeros((n + 2, n + 2))
    aug[:n, :n], aug[:n, n], aug[:n, n + 1] = M, b_in, c_in
    E = expm(aug * dt)
    return E[:n, :n], E[:n, n], E[:n, n + 1]


def test_lif_step_is_the_exponential_filter():
    p = dict(tau_m=7.0, v_rest=-60.0, r_m=2.5, dt=DT, v_th=-50.0)
    A, B, c, dg = derive_linear_step(b.LIF).numeric(p)
    ref_A, ref_B, ref_c = _exact_affine(np.array([[-1 / 7.0]]), [2.5 / 7.0], [-60.0 / 7.0], DT)
    np.testing.assert_allclose(A, ref_A, rtol=1e-14)
    np.testing.assert_allclose(np.ravel(B), ref_B, rtol=1e-14)
    np.testing.assert_allclose(np.ravel(c), ref_c, rtol=1e-14)
    assert dg == [[1.0]]


def test_current_based_lif_through_exp_curr():
    """SPSN's neuron: a LIF fed by an exponential synaptic current. The simulation's order within a
    step: ``x += in_syn; i_syn += x`` (the current before its decay drives v), then x decays, then
    v is integrated with i_syn held: so v_t = a v + (1 - a) (v_rest + r_m (x_{t-1} + u_t))."""
    tau_m, tau_s, r_m, v_rest = 8.0, 3.0, 1.5, -1.0
    step = derive_linear_step(b.LIF, b.EXP_CURR)
    assert step.states == ["v", "_ps_x"]
    A, B, c, dg = (np.array(m) for m in step.numeric(dict(tau_m=tau_m, tau_syn=tau_s, r_m=r_m, v_rest=v_rest,
                                                            v_th=0.0, dt=DT)))
    a, d = math.exp(-DT / tau_m), math.exp(-DT / tau_s)
    np.testing.assert_allclose(A, [[a, (1 - a) * r_m], [0.0, d]], rtol=1e-14)
    np.testing.assert_allclose(B.ravel(), [(1 - a) * r_m, d], rtol=1e-14)
    np.testing.assert_allclose(c.ravel(), [(1 - a) * v_rest, 0.0], rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(dg, [[1.0, 0.0]])


def test_coupled_pair_is_the_matrix_exponential():
    """A neuron whose own state couples (v driven by an adaptation-like current w): the exact
    integrator's closed form for a pair equals the matrix exponential, both for real and for
    complex eigenvalues of the system."""
    model = NeuronModel("coupled", params={"tau": 10.0, "k": 0.3, "tau_w": 20.0, "v_th": 1.0},
                        vars={"v": 0.0, "w": 0.0},
                        equations="""
                            dv/dt = (i_syn - v - w) / tau
                            dw/dt = (k * v - w) / tau_w
                        """, threshold="v > v_th")
    step = derive_linear_step(model)
    for k in (0.3, 40.0):  # real, then complex eigenvalues
        p = dict(tau=10.0, k=k, tau_w=20.0, v_th=1.0, dt=DT)
        A, B, c, _ = (np.array(m) for m in step.numeric(p))
        M = np.array([[-1 / 10.0, -1 / 10.0], [k / 20.0, -1 / 20.0]])
        ref_A, ref_B, ref_c = _exact_affine(M, [1 / 10.0, 0.0], [0.0, 0.0], DT)
        np.testing.assert_allclose(A, ref_A, rtol=1e-12)
        np.testing.assert_allclose(B.ravel(), ref_B, rtol=1e-12)
        np.testing.assert_allclose(c.ravel(), ref_c, atol=1e-15)


def test_alif_threshold_gradient_and_reset_reported():
    step = derive_linear_step(b.ALIF, ONE_STEP_CURR)
    *_, dg = step.numeric(dict(tau_m=10.0, tau_a=100.0, r_m=1.0, v_th=0.6, beta=0.2, dt=DT))
    np.testing.assert_allclose(dg, [[1.0, -0.2]])
    assert step.resets == ["v", "a"] and step.refractory == "t_ref"


def test_readout_without_threshold():
    A, B, c, dg = derive_linear_step(LEAKY_READOUT, ONE_STEP_CURR, spiking=False).numeric(
        dict(tau_m=4.0, bias=0.5, dt=DT))
    kappa = math.exp(-DT / 4.0)
    np.testing.assert_allclose([A[0][0], B[0][0], c[0][0]], [kappa, 1 - kappa, (1 - kappa) * 0.5], rtol=1e-14)
    assert dg is None


@pytest.mark.parametrize("model, field, words", [
    (b.IZHIKEVICH, "equations", r"0.04 \* v\*\*2"),
    (b.POISSON, "threshold", "deterministic"),
    (LEAKY_READOUT, "threshold", "spiking"),
    (NeuronModel("tdep", params={"tau": 5.0}, vars={"v": 0.0}, equations="dv/dt = (i_syn - v * t) / tau",
                 threshold="v > 1"), "equations", "not linear"),
    (NeuronModel("rectified", params={"tau": 5.0}, vars={"v": 0.0}, sim_code="v = max(v, 0) + i_syn",
                 threshold="v > 1"), "sim_code", "not linear"),
])
def test_refused_models_name_model_and_reason(model, field, words):
    with pytest.raises(ModelError, match=words) as info:
        derive_linear_step(model)
    assert info.value.model == model.name and info.value.field == field


def _stack(recurrent=None):
    net = Network("ff", dt=DT, batch_size=1)
    net.add_population("inp", 3, VALUE_INPUT)
    net.add_population("h1", 4, b.LIF_SUBTRACTIVE)
    net.add_population("h2", 4, b.LIF_SUBTRACTIVE)
    net.add_population("out", 2, LEAKY_READOUT)
    projections = [("inp_h1", "inp", "h1", SCALED), ("h1_h2", "h1", "h2", STATIC), ("h2_out", "h2", "out", STATIC)]
    if recurrent:
        projections.append(recurrent)
    for name, pre, post, syn in projections:
        net.add_projection(name, pre, post, syn, ONE_STEP_CURR)
    return net


def test_feed_forward_order():
    net = _stack()
    assert [p.name for p in check_feed_forward(net, ["out", "h2", "inp", "h1"])] == ["inp", "h1", "h2", "out"]


@pytest.mark.parametrize("proj, cycle", [
    (("h1_h1", "h1", "h1", STATIC), "h1 -> h1"),
    (("h2_h1", "h2", "h1", STATIC), "h1 -> h2 -> h1"),
])
def test_recurrent_projection_refused(proj, cycle):
    with pytest.raises(NetworkError, match=f"projection '{proj[0]}'.*recurrent.*{cycle}"):
        check_feed_forward(_stack(proj), ["inp", "h1", "h2", "out"])


def test_postsynaptic_state_named_as_a_neuron_variable_refused():
    model = NeuronModel("x_named", params={"tau": 5.0}, vars={"x": 0.0}, equations="dx/dt = (i_syn - x) / tau",
                        threshold="x > 1")
    with pytest.raises(ModelError, match="'exp_curr' and the neuron model both name x") as info:
        derive_linear_step(model, b.EXP_CURR)
    assert info.value.model == "x_named"
