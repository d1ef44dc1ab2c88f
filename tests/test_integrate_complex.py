"""Exact integration of a coupled linear pair, whatever the sign of its discriminant.

The pair is a LIF membrane with a linear adaptation current,

    dv/dt = (v_rest - v + r i - w) / tau_m,      dw/dt = (a_w (v - v_rest) - w) / tau_w,

whose eigenvalues are complex (a damped oscillation) for a_w above (tau_m - tau_w)^2 / (4 tau_m tau_w)
and real below it. The reference is the matrix exponential of the augmented matrix computed here
in numpy (scaling and squaring of its Taylor series), independent of sympy and of the generated
code; the simulation runs compiled, in double precision.
"""

import logging
import math

import numpy as np
import pytest
import sympy

from spikeforge import models as m
from spikeforge.codegen.integrate import integrate
from spikeforge.models import NeuronModel
from spikeforge.network import Network
from tests.conftest import BACKENDS_SLOW_EMU, nvcc_path

TAU_M, TAU_W, V_REST, R, AMP = 20.0, 30.0, -65.0, 1.0, 12.0
DT = 0.1
A_CRITICAL = (TAU_M - TAU_W) ** 2 / (4 * TAU_M * TAU_W)  # 1/24: the discriminant is zero here


def adaptive_lif(a_w=0.3, tau_w=TAU_W, v_th=1e9, refractory=False):
    return NeuronModel(
        "adaptive_lif",
        params={"tau_m": TAU_M, "tau_w": tau_w, "a_w": a_w, "v_rest": V_REST, "r": R, "v_th": v_th,
                "v_reset": V_REST, **({"t_ref": 2.0} if refractory else {})},
        vars={"v": V_REST, "w": 0.0},
        equations=f"""
            dv/dt = (v_rest - v + r * i_syn - w) / tau_m{'  (unless refractory)' if refractory else ''}
            dw/dt = (a_w * (v - v_rest) - w) / tau_w
        """,
        threshold="v > v_th",
        reset="v = v_reset",
        refractory="t_ref" if refractory else None,
    )


def expm(M: np.ndarray) -> np.ndarray:
    """exp(M) by scaling and squaring of the Taylor series (float64)."""
    k = max(0, int(math.ceil(math.log2(max(np.abs(M).sum(axis=1).max(), 1e-300)))) + 4)
    S = M / 2.0**k
    E, term = np.eye(len(M)), np.eye(len(M))
    for j in range(1, 25):
        term = term @ S / j
        E = E + term
    for _ in range(k):
        E = E @ E
    return E


def reference_trajectory(a_w, tau_w, v0, w0, n_steps, amp=AMP):
    """(v, w) after each step under constant input: powers of the augmented propagator."""
    A = np.array([[-1 / TAU_M, -1 / TAU_M], [a_w / tau_w, -1 / tau_w]])
    b = np.array([(V_REST + R * amp) / TAU_M, -a_w * V_REST / tau_w])
    aug = np.zeros((3, 3))
    aug[:2, :2], aug[:2, 2] = A * DT, b * DT
    E = expm(aug)
    x = np.array([v0, w0, 1.0])
    out = np.empty((n_steps, 2))
    for n in range(n_steps):
        x = E @ x
        out[n] = x[:2]
    return out


def discriminant(a_w, tau_w):
    return ((-1 / TAU_M + 1 / tau_w) / 2) ** 2 - a_w / (TAU_M * tau_w)


# complex eigenvalues (0.3, 2.0), real ones (0.0, -0.02, 0.04), the critical value (zero discriminant,
# to rounding), and equal time constants with a_w = 0 (a double eigenvalue: the discriminant is exactly 0)
CASES = [(0.3, TAU_W), (2.0, TAU_W), (0.0, TAU_W), (-0.02, TAU_W), (0.04, TAU_W), (A_CRITICAL, TAU_W), (0.0, TAU_M)]


def test_cases_cover_both_signs_of_the_discriminant():
    signs = {np.sign(discriminant(a, t)) for a, t in CASES if abs(discriminant(a, t)) > 1e-12}
    assert signs == {-1.0, 1.0}
    assert discriminant(0.0, TAU_M) == 0.0 and abs(discriminant(A_CRITICAL, TAU_W)) < 1e-18


def test_the_update_is_real_and_matches_the_matrix_exponential_for_both_signs():
    """Symbolically: one update map, evaluated in plain floats for each parameter set."""
    integ = integrate(adaptive_lif().odes, "adaptive_lif")
    assert integ.method == "exact"
    upd = integ.update_map()
    names = ["v", "w", "i_syn", "tau_m", "tau_w", "a_w", "v_rest", "r", "dt"]
    f = sympy.lambdify([sympy.Symbol(n, real=True) for n in names], [upd["v"], upd["w"]], modules="math")
    for a_w, tau_w in CASES:
        got = f(-60.0, 0.5, AMP, TAU_M, tau_w, a_w, V_REST, R, DT)
        ref = reference_trajectory(a_w, tau_w, -60.0, 0.5, 1)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13, err_msg=f"a_w = {a_w}, tau_w = {tau_w}")


def _pair_network(precision="double"):
    net = Network("adaptive_pair", dt=DT, precision=precision)
    for k, (a_w, tau_w) in enumerate(CASES):
        net.add_population(f"n{k}", 1, adaptive_lif(a_w, tau_w), init={"v": -70.0, "w": 0.5})
        net.add_current_source(f"drive{k}", f"n{k}", m.DC, params={"amp": AMP})
        net.record_var(f"n{k}", "v")
        net.record_var(f"n{k}", "w")
    return net


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_compiled_simulation_matches_the_matrix_exponential_for_both_signs(backend):
    sim = _pair_network().build(backend=backend)
    assert set(sim.spec.integrators.values()) == {"exact"}
    n_steps = 3000  # 300 ms: several periods of the oscillation
    sim.run(steps=n_steps)
    for k, (a_w, tau_w) in enumerate(CASES):
        v = sim.recorded(f"n{k}", "v")[:, 0, 0]
        w = sim.recorded(f"n{k}", "w")[:, 0, 0]
        ref = reference_trajectory(a_w, tau_w, -70.0, 0.5, n_steps)
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(w))
        np.testing.assert_allclose(v, ref[:, 0], rtol=0, atol=1e-9, err_msg=f"v, a_w = {a_w}, tau_w = {tau_w}")
        np.testing.assert_allclose(w, ref[:, 1], rtol=0, atol=1e-9, err_msg=f"w, a_w = {a_w}, tau_w = {tau_w}")
    # the complex case oscillates: v overshoots its fixed point and comes back
    v0 = sim.recorded("n1", "v")[:, 0, 0]
    v_inf = V_REST + R * AMP / (1 + 2.0)
    assert v0.max() > v_inf + 0.1 and np.any(np.diff(np.sign(np.diff(v0))) != 0)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.parametrize("precision", ["float", "double"])
def test_the_cuda_kernels_compile_with_nvcc(precision):
    from spikeforge.codegen.generate import generate
    from spikeforge.codegen.render import render_network
    from spikeforge.runtime.nvcc import build_cubin

    source = render_network(generate(_pair_network(precision)), "cuda")
    assert "_v_k11" in source
    result = build_cubin(source, "sm_80", name=f"adaptive_pair_{precision}", describe="adaptive pair")
    assert result.path.read_bytes()[:4] == b"\x7fELF"


def test_the_generated_code_names_the_complex_case_and_computes_the_propagator_once(caplog):
    net = Network("adaptive_code", dt=DT, precision="float")
    net.add_population("n", 4, adaptive_lif(0.3))
    with caplog.at_level(logging.INFO, logger="spikeforge.codegen"):
        sim = net.build()
    assert "integrating v, w with the 'exact' method" in caplog.text
    src = sim.source
    assert "complex for q < 0" in src and "sinf(" in src and "sinhf(" in src
    # the propagator is a constant of the step, before the neuron loop; the loop only applies it
    loop = src[src.index("for (uint32_t _i = 0"):]
    assert "sinhf(" not in loop and "_v_k11*" in loop


def test_a_coupled_pair_in_a_postsynaptic_model_of_two_projections():
    """Two projections with the same coupled synapse model: their temporaries do not collide."""
    dual = m.PostsynapticModel("dual_exp", params={"tau_r": 1.0, "tau_d": 5.0}, vars={"g": 0.0, "h": 0.0},
                               equations="dg/dt = (h - g) / tau_d\ndh/dt = -h / tau_r",
                               apply="h += in_syn; i_syn += g")
    net = Network("dual_exp_net", dt=DT, precision="double")
    net.add_population("src", 1, m.SPIKE_SOURCE_ARRAY)
    net.add_population("dst", 1, m.LEAKY_INTEGRATOR, params={"tau_m": 1e9})
    for name in ("a", "b"):
        net.add_projection(name, "src", "dst", m.STATIC_CONSTANT, dual, "one_to_one", wu_params={"w": 1.0})
    net.record_var("dst", "v")
    sim = net.build()
    assert "_a_g_k11" in sim.source and "_b_g_k11" in sim.source
    sim.set_spike_times("src", ([1.0], [0]))
    sim.run(duration=50.0)
    v = sim.recorded("dst", "v")[:, 0, 0]
    assert np.all(np.isfinite(v)) and v[-1] > 0.0


def test_equal_time_constants_of_a_triangular_pair_are_not_a_singularity():
    """dv/dt = (g - v)/tau, dg/dt = -g/tau_s at tau = tau_s: the closed form has no 0/0."""
    model = NeuronModel("alpha_input", params={"tau": 5.0, "tau_s": 5.0}, vars={"v": 0.0, "g": 1.0},
                        equations="dv/dt = (g - v) / tau\ndg/dt = -g / tau_s")
    net = Network("alpha_input", dt=DT, precision="double")
    net.add_population("n", 1, model)
    net.record_var("n", "v")
    sim = net.build()
    sim.run(steps=100)
    v = sim.recorded("n", "v")[:, 0, 0]
    t = DT * np.arange(1, 101)
    np.testing.assert_allclose(v, t / 5.0 * np.exp(-t / 5.0), rtol=1e-12, atol=0)  # the alpha function


def test_training_a_layer_of_such_neurons_gives_finite_losses_and_weights():
    """e-prop derives its eligibility traces from the same update: nothing becomes NaN."""
    from spikeforge.training.model import EpropConfig
    from spikeforge.training.trainer import Trainer
    from tests.test_trainer import _toy

    model = NeuronModel(
        "adaptive_hidden",
        params={"tau_m": 10.0, "tau_w": 15.0, "a_w": 0.5, "v_th": 0.6},
        vars={"v": 0.0, "w": 0.0},
        equations="dv/dt = (10 * i_syn - v - w) / tau_m\ndw/dt = (a_w * v - w) / tau_w",
        threshold="v > v_th",
        reset="v -= v_th",
    )
    assert ((-1 / 10 + 1 / 15) / 2) ** 2 - 0.5 / 150 < 0  # complex eigenvalues
    cfg = EpropConfig(12, 16, 2, model, {}, recurrent=True, tau_out=10.0, dt=1.0, name="adaptive_toy")
    data = _toy(16)
    trainer = Trainer(cfg, batch_size=8, lr=0.02, seed=3)
    trainer.fit(data, epochs=2, progress=False)
    assert all(np.isfinite(h["train_loss"]) for h in trainer.history)
    for name, w in trainer.weights.items():
        assert np.all(np.isfinite(w)), name
    assert trainer.evaluate(data)["loss"] > 0


@pytest.mark.parametrize("a_w", [0.3, 0.0])
def test_refractory_hold_of_a_coupled_pair(a_w):
    """While v is held, w follows its own equation with v fixed (the pair is not integrated as if v moved)."""
    model = adaptive_lif(a_w, v_th=-60.0, refractory=True)
    net = Network("adaptive_refrac", dt=DT, precision="double")
    net.add_population("n", 1, model, init={"v": -65.0, "w": 0.0}, record_spikes=True)
    net.add_current_source("drive", "n", m.DC, params={"amp": AMP})
    net.record_var("n", "v")
    net.record_var("n", "w")
    sim = net.build()
    sim.run(steps=600)
    times, _ = sim.spikes("n")[0]
    assert len(times) >= 2
    k = int(np.rint(times[0] / DT))
    v = sim.recorded("n", "v")[:, 0, 0]
    w = sim.recorded("n", "w")[:, 0, 0]
    # held: the spike's step and 19 more (t_ref = 2 ms); w decays towards a_w (v_reset - v_rest) = 0
    assert np.all(v[k: k + 20] == V_REST)
    decay = math.exp(-DT / TAU_W)
    np.testing.assert_allclose(w[k + 1: k + 20], w[k] * decay ** np.arange(1, 20), rtol=1e-12)
