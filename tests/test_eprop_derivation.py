"""e-prop factors derived by sympy equal Bellec et al.'s formulas for LIF and ALIF."""

import pytest
import sympy

from spikeforge.codegen.eprop import PSI, derive
from spikeforge.errors import ModelError
from spikeforge.models import ALIF, LIF, NeuronModel
from spikeforge.models.expressions import symbol

dt, tau_m, tau_a, beta, r_m = (symbol(n) for n in ("dt", "tau_m", "tau_a", "beta", "r_m"))
alpha = sympy.exp(-dt / tau_m)
rho = sympy.exp(-dt / tau_a)


def _same(a, b):
    return sympy.simplify(sympy.expand((a - b).rewrite(sympy.exp))) == 0


def test_lif_factors_are_bellecs():
    d = derive(LIF)
    assert d.states == ["v"]
    assert _same(d.D[0, 0], alpha)  # d v_t / d v_{t-1}: leak only, the reset is detached
    assert _same(d.c[0], (1 - alpha) * r_m)  # input factor of the exact integrator
    assert d.trace() == PSI * symbol("eps_v")  # e = psi * eps
    assert d.per_presynaptic == ["v"] and d.per_synapse == []  # Bellec's filtered presynaptic trace


def test_alif_factors_are_bellecs():
    """Bellec's ALIF: a_{t+1} = rho a_t + z_t, A_t = v_th + beta a_t:
    eps^v <- alpha eps^v + z_i;  eps^a <- psi eps^v + (rho - psi beta) eps^a;  e = psi (eps^v - beta eps^a).
    Written in our language (reset then decay each step) the jump is 1/rho."""
    bellec = NeuronModel(
        "bellec_alif",
        params={"tau_m": 20.0, "tau_a": 2000.0, "v_th": 0.6, "beta": 0.07, "r_m": 1.0},
        vars={"v": 0.0, "a": 0.0},
        equations="dv/dt = (r_m * i_syn - v) / tau_m\nda/dt = -a / tau_a",
        threshold="v > v_th + beta * a",
        reset="v -= v_th; a += exp(dt / tau_a)",
    )
    d = derive(bellec)
    assert _same(d.D[0, 0], alpha) and d.D[0, 1] == 0
    assert _same(d.D[1, 0], PSI)
    assert _same(d.D[1, 1], rho - PSI * beta)
    upd = d.trace_update()
    eps_v, eps_a, s = symbol("eps_v"), symbol("eps_a"), symbol("_s")
    assert _same(upd["a"], PSI * eps_v + (rho - PSI * beta) * eps_a)
    assert _same(upd["v"], alpha * eps_v + (1 - alpha) * r_m * s)
    assert sympy.expand(d.trace() - PSI * (eps_v - beta * eps_a)) == 0
    assert d.per_presynaptic == ["v"] and d.per_synapse == ["a"]


def test_builtin_alif_has_the_same_structure_with_a_unit_jump():
    d = derive(ALIF)
    assert _same(d.D[1, 0], rho * PSI) and _same(d.D[1, 1], rho * (1 - PSI * beta))
    assert d.per_presynaptic == ["v"] and d.per_synapse == ["a"]


def test_triangular_surrogate_is_bellecs():
    d = derive(LIF)
    g, v_th = symbol("_g"), symbol("v_th")
    expected = sympy.Float(0.3) * sympy.Max(0, 1 - sympy.Abs(g) / v_th) / v_th
    assert sympy.simplify(d.psi - expected) == 0
    assert d.g == symbol("v") - v_th


def test_user_defined_leak_needs_no_hand_written_trace():
    """A LIF variant with a conductance-style leak: the factors are derived all the same."""
    model = NeuronModel(
        "leaky_variant",
        params={"tau_m": 10.0, "g_l": 0.5, "e_l": -0.2, "v_th": 1.0, "c_m": 2.0},
        vars={"v": 0.0},
        equations="dv/dt = (g_l * (e_l - v) + i_syn) / (c_m * tau_m)",
        threshold="v > v_th",
        reset="v = 0",
    )
    d = derive(model)
    k = symbol("g_l") / (symbol("c_m") * symbol("tau_m"))
    assert _same(d.D[0, 0], sympy.exp(-k * dt))
    assert _same(d.c[0], (1 - sympy.exp(-k * dt)) / symbol("g_l"))
    assert d.per_presynaptic == ["v"]


def test_nonlinear_model_traces_are_per_synapse():
    model = NeuronModel("quad", params={"v_th": 1.0}, vars={"v": 0.0}, equations="dv/dt = -v**2 + i_syn",
                        threshold="v > v_th", reset="v = 0")
    d = derive(model)
    assert d.per_synapse == ["v"]  # d v_t / d v_{t-1} depends on v: per synapse


def test_non_spiking_model_is_rejected():
    from spikeforge.models import LEAKY_INTEGRATOR

    with pytest.raises(ModelError, match="threshold"):
        derive(LEAKY_INTEGRATOR)
