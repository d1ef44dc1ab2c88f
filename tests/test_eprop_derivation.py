"""e-prop factors derived by sympy equal Bellec et al.'s formulas for LIF and ALIF."""

import numpy as np
import pytest
import sympy

from spikeforge.codegen.eprop import PSI, Z, derive
from spikeforge.errors import ModelError
from spikeforge.models import ALIF, IZHIKEVICH, LIF, LIF_SUBTRACTIVE, NeuronModel
from spikeforge.models.expressions import symbol

dt, tau_m, tau_a, beta, r_m = (symbol(n) for n in ("dt", "tau_m", "tau_a", "beta", "r_m"))
alpha = sympy.exp(-dt / tau_m)
rho = sympy.exp(-dt / tau_a)


def _same(a, b):
    return sympy.simplify(sympy.expand((a - b).rewrite(sympy.exp))) == 0


def test_lif_factors_are_bellecs():
    """Bellec's LIF resets by subtraction (v -= v_th): the reset map's Jacobian is 1."""
    d = derive(LIF_SUBTRACTIVE)
    assert d.states == ["v"]
    assert _same(d.D[0, 0], alpha)  # d v_t / d v_{t-1}: leak only, the reset is detached
    assert _same(d.c[0], (1 - alpha) * r_m)  # input factor of the exact integrator
    assert d.trace() == PSI * symbol("eps_v")  # e = psi * eps
    assert d.per_presynaptic == ["v"] and d.per_synapse == []  # Bellec's filtered presynaptic trace


def test_reset_to_a_constant_forgets_the_past_at_a_spike():
    """The built-in LIF resets to a constant (v = v_reset): the reset map v' = v + z (v_reset - v),
    z detached, has the Jacobian 1 - z, so d v_t / d v_{t-1} = alpha (1 - z_{t-1}). The trace then
    depends on the postsynaptic spikes: it lives per synapse."""
    d = derive(LIF)
    assert _same(d.D[0, 0], alpha * (1 - Z))
    assert d.D[0, 0].xreplace({Z: 1}) == 0  # exactly zero after a spike, also in floating point
    assert _same(d.c[0], (1 - alpha) * r_m)
    assert d.per_presynaptic == [] and d.per_synapse == ["v"]


def test_izhikevich_reset_jacobian():
    """v = c (detached, Jacobian 1 - z) and u += d (Jacobian 1, the spike path d psi dg/dv kept),
    through forward Euler."""
    d = derive(IZHIKEVICH)
    a, b, c, dd, v = (symbol(n) for n in ("a", "b", "c", "d", "v"))
    v_post = v + Z * (c - v)
    dphi = sympy.Matrix([[1 + dt * (sympy.Float(0.08) * v_post + 5), -dt], [a * b * dt, 1 - a * dt]])
    dR = sympy.Matrix([[1 - Z, 0], [dd * PSI, 1]])
    for (i, j), expected in zip([(0, 0), (0, 1), (1, 0), (1, 1)], dphi * dR):
        assert _same(d.D[i, j], expected), (i, j)
    assert d.detached == ["v"] and d.per_synapse == ["v", "u"]


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
    d = derive(LIF_SUBTRACTIVE)
    g, v_th = symbol("_g"), symbol("v_th")
    expected = sympy.Float(0.3) * sympy.Max(0, 1 - sympy.Abs(g) / v_th) / v_th
    assert sympy.simplify(d.psi - expected) == 0
    assert d.g == symbol("v") - v_th


def test_surrogate_scale_of_a_model_with_a_reset_value_is_the_reset_to_threshold_distance():
    """The built-in lif (v_th = -50 mV, v_reset = -65 mV): scale v_th - v_reset = 15 mV, not v_th."""
    d = derive(LIF)
    g, scale = symbol("_g"), symbol("v_th") - symbol("v_reset")
    assert d.scale == scale
    assert sympy.simplify(d.psi - sympy.Float(0.3) * sympy.Max(0, 1 - sympy.Abs(g) / scale) / scale) == 0


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
    assert _same(d.D[0, 0], sympy.exp(-k * dt) * (1 - Z))  # leak, and the reset to 0 forgets
    assert _same(d.c[0], (1 - sympy.exp(-k * dt)) / symbol("g_l"))
    assert d.per_synapse == ["v"]


def test_nonlinear_model_traces_are_per_synapse():
    model = NeuronModel("quad", params={"v_th": 1.0}, vars={"v": 0.0}, equations="dv/dt = -v**2 + i_syn",
                        threshold="v > v_th", reset="v = 0")
    d = derive(model)
    assert d.per_synapse == ["v"]  # d v_t / d v_{t-1} depends on v: per synapse


def test_non_spiking_model_is_rejected():
    from spikeforge.models import LEAKY_INTEGRATOR

    with pytest.raises(ModelError, match="threshold"):
        derive(LEAKY_INTEGRATOR)


# ----------------------------------------------------------------------------- D against finite differences

SCALED_RESET = NeuronModel(
    "scaled_reset",
    params={"tau_m": 10.0, "tau_w": 50.0, "k": 0.2, "v_th": 1.0},
    vars={"v": 0.0, "w": 0.0},
    equations="dv/dt = (i_syn - v - w) / tau_m\ndw/dt = (k * v - w) / tau_w",
    threshold="v > v_th",
    reset="v = 0.5 * v - 0.1 * w; w += 0.3 * v",  # w's reset reads the new v
    integrator="euler",
)


def _value(expr, env):
    return float(sympy.sympify(expr).xreplace({symbol(k): sympy.Float(x, 30) for k, x in env.items()}).evalf(30))


def _step_map(model, d, consts, base, z, psi, i_syn):
    """h_{t-1} -> h_t, one step of the model written out independently of the derivation's
    Jacobians: the reset statements run in order, the spike is held at ``z`` in the reset of
    the detached variables and linearised around ``base`` (slope ``psi``) in the others',
    then the integrator's update (``d.step``)."""
    g_base = _value(d.g, {**consts, **base})

    def f(h):
        env = {**consts, **h}
        z_live = z + psi * (_value(d.g, env) - g_base)
        after = dict(h)
        for st in model.reset:
            after[st.target] = _value(st.value, {**consts, **after})
        post = {s: h[s] + (z if s in d.detached else z_live) * (after[s] - h[s]) for s in d.states}
        return np.array([_value(d.step[s], {**consts, **post, "i_syn": i_syn}) for s in d.states])

    return f


@pytest.mark.parametrize("model", [LIF, LIF_SUBTRACTIVE, ALIF, IZHIKEVICH, SCALED_RESET], ids=lambda m: m.name)
@pytest.mark.parametrize("z", [0.0, 1.0])
def test_transition_jacobian_equals_finite_differences_of_the_step_map(model, z):
    """D = dh_t/dh_{t-1} (evaluated at the pre-reset state, the spike and psi of step t-1)
    equals central finite differences of one simulation step, with and without a spike."""
    d = derive(model)
    consts = {p: float(v) for p, v in model.params.items()} | {"dt": 0.5}
    consts |= {k: _value(e, consts) for k, e in model.derived.items()}
    base = {s: 0.3 + 0.1 * k for k, s in enumerate(d.states)}  # arbitrary (the map is smooth)
    psi = 0.37
    f = _step_map(model, d, consts, base, z, psi, i_syn=0.8)
    n, h = len(d.states), 1e-6
    fd = np.zeros((n, n))
    for b, s in enumerate(d.states):
        up, down = dict(base), dict(base)
        up[s] += h
        down[s] -= h
        fd[:, b] = (f(up) - f(down)) / (2 * h)
    D = np.array([[_value(d.D[a, b], {**consts, **base, "_z": z, "_psi": psi}) for b in range(n)] for a in range(n)])
    np.testing.assert_allclose(D, fd, rtol=1e-8, atol=1e-9)
    if model is LIF and z == 1.0:
        assert D[0, 0] == 0.0  # a reset to a constant forgets v_{t-1}
