"""The model language: parsing, integrator choice and the errors users see."""

import math

import numpy as np
import pytest
import sympy

from spikeforge import models as m
from spikeforge.codegen.integrate import integrate
from spikeforge.errors import ModelError, NetworkError
from spikeforge.models import NeuronModel
from spikeforge.models.expressions import ParseContext, parse_odes
from spikeforge.network import Network


def _odes(text, known):
    return parse_odes(text, ParseContext("test", set(known), random_allowed=False))


# -- integrators ----------------------------------------------------------------------


def test_linear_model_gets_exact_integration_equal_to_closed_form():
    odes = _odes("dv/dt = (v_rest - v + i_syn) / tau", ["v", "v_rest", "i_syn", "tau", "dt"])
    integ = integrate(odes, "lif")
    assert integ.method == "exact"
    new_v = integ.update_map()["v"]
    v, v_rest, i, tau, dt = sympy.symbols("v v_rest i_syn tau dt", real=True)
    closed = v_rest + i + (v - v_rest - i) * sympy.exp(-dt / tau)
    vals = {v: -70.0, v_rest: -65.0, i: 3.0, tau: 20.0, dt: 0.1}
    assert math.isclose(float(new_v.subs(vals).evalf()), float(closed.subs(vals)), rel_tol=1e-14)


def test_coupled_linear_system_uses_matrix_exponential():
    odes = _odes("dv/dt = (g - v) / tau\ndg/dt = -g / tau_s", ["v", "g", "tau", "tau_s", "dt"])
    integ = integrate(odes, "coupled")
    assert integ.method == "exact"
    upd = integ.update_map()
    v, g, tau, tau_s, dt = sympy.symbols("v g tau tau_s dt", real=True)
    vals = {v: 0.3, g: 1.0, tau: 10.0, tau_s: 5.0, dt: 0.5}
    # closed form of the pair, from the analytic solution
    g_new = math.exp(-0.5 / 5.0)
    a = 1.0 / (1 - 10.0 / 5.0)  # v = A e^{-t/tau_s} + (v0 - A) e^{-t/tau}, A = g0 / (1 - tau / tau_s)
    v_new = a * math.exp(-0.5 / 5.0) + (0.3 - a) * math.exp(-0.5 / 10.0)
    assert math.isclose(float(upd["g"].subs(vals).evalf()), g_new, rel_tol=1e-12)
    assert math.isclose(float(upd["v"].subs(vals).evalf()), v_new, rel_tol=1e-12)


def test_conditionally_linear_model_gets_exponential_euler():
    odes = _odes("dv/dt = -v * g / tau\ndg/dt = -g * g", ["v", "g", "tau", "dt"])
    # dg/dt is not linear in g: exponential Euler does not apply either -> euler
    assert integrate(odes, "x").method == "euler"
    odes = _odes("dv/dt = -v * g / tau\ndg/dt = -g / tau", ["v", "g", "tau", "dt"])
    assert integrate(odes, "x").method == "exponential_euler"


def test_nonlinear_model_falls_back_to_euler_and_rk4_can_be_forced():
    assert integrate(m.IZHIKEVICH.odes, "izh").method == "euler"
    rk4 = integrate(m.IZHIKEVICH.odes, "izh", "rk4")
    assert rk4.method == "rk4"
    # rk4 on dx/dt = -x for one step equals the 4th-order Taylor polynomial
    odes = _odes("dx/dt = -x", ["x", "dt"])
    upd = integrate(odes, "x", "rk4").update_map()["x"]
    x, dt = sympy.symbols("x dt", real=True)
    assert sympy.simplify(upd - x * (1 - dt + dt**2 / 2 - dt**3 / 6 + dt**4 / 24)) == 0


def test_forcing_exact_on_nonlinear_model_is_an_error():
    with pytest.raises(ModelError, match="exact"):
        integrate(m.IZHIKEVICH.odes, "izh", "exact")


def test_integrator_choice_is_recorded_in_spec_and_code():
    net = Network("integrators", dt=0.1)
    net.add_population("lif", 2, m.LIF)
    net.add_population("izh", 2, m.IZHIKEVICH)
    sim = net.build()
    assert sim.spec.integrators == {"lif": "exact", "izh": "euler"}
    assert "integrator for izh: euler" in sim.source
    assert "dv/dt = 0.04 * v**2 + 5 * v + 140 - u + i_syn  [euler]" in sim.source


# -- errors -----------------------------------------------------------------------------


def test_unknown_symbol_is_named_with_model_and_field():
    with pytest.raises(ModelError) as e:
        NeuronModel("mylif", params={"tau": 10.0}, vars={"v": 0.0}, equations="dv/dt = (v_rest - v) / tau")
    msg = str(e.value)
    assert "mylif" in msg and "equations" in msg and "'v_rest'" in msg


def test_unknown_function_is_an_error():
    with pytest.raises(ModelError, match="unknown function 'foo'"):
        NeuronModel("f", vars={"v": 0.0}, equations="dv/dt = foo(v)")


def test_equation_that_is_not_an_ode_is_an_error():
    with pytest.raises(ModelError, match="not a differential equation"):
        NeuronModel("bad", vars={"v": 0.0}, equations="v = 3")
    with pytest.raises(ModelError, match="not a statement"):
        NeuronModel("bad", vars={"v": 0.0}, equations="dv/dt = -v", threshold="v > 1", reset="v > 0")
    with pytest.raises(ModelError, match="not a condition"):
        NeuronModel("bad", vars={"v": 0.0}, equations="dv/dt = -v", threshold="v + 1")


def test_assigning_a_parameter_is_an_error():
    with pytest.raises(ModelError, match="cannot be written"):
        NeuronModel("bad", params={"th": 1.0}, vars={"v": 0.0}, equations="dv/dt = -v", threshold="v > th",
                    reset="th = 2")


def test_random_numbers_in_odes_are_rejected():
    with pytest.raises(ModelError, match="random"):
        NeuronModel("noisy", vars={"v": 0.0}, equations="dv/dt = -v + rand_normal()")


def test_each_random_call_is_a_distinct_draw():
    model = NeuronModel("two_draws", vars={"x": 0.0}, sim_code="x = rand_uniform() - rand_uniform()")
    assert model.sim_code[0].value != 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", None])
def test_missing_or_non_finite_parameter(value):
    net = Network("params", dt=0.1)
    with pytest.raises(ModelError) as e:
        net.add_population("p", 3, m.LIF, params={"tau_m": value})
    assert "tau_m" in str(e.value) and "lif" in str(e.value)


def test_parameter_without_default_must_be_given():
    net = Network("params", dt=0.1)
    net.add_population("p", 3, m.LIF)
    with pytest.raises(ModelError, match="parameter 'amp' has no value"):
        net.add_current_source("c", "p", m.DC)


def test_unknown_parameter_and_variable_are_errors():
    net = Network("params", dt=0.1)
    with pytest.raises(ModelError, match="unknown parameter"):
        net.add_population("p", 3, m.LIF, params={"tau": 1.0})
    with pytest.raises(ModelError, match="unknown variable"):
        net.add_population("q", 3, m.LIF, init={"u": 1.0})


def test_projection_between_unknown_populations():
    net = Network("proj", dt=0.1)
    net.add_population("a", 3, m.LIF)
    with pytest.raises(NetworkError, match="unknown population 'b'"):
        net.add_projection("p", "a", "b", m.STATIC, m.EXP_CURR)


def test_negative_or_fractional_delay():
    net = Network("proj", dt=0.1)
    net.add_population("a", 3, m.LIF)
    with pytest.raises(NetworkError, match="must not be negative"):
        net.add_projection("p", "a", "a", m.STATIC, m.EXP_CURR, delay=-1.0)
    with pytest.raises(NetworkError, match="multiple of dt"):
        net.add_projection("p", "a", "a", m.STATIC, m.EXP_CURR, delay=0.15)


def test_bad_sizes_names_and_network_settings():
    with pytest.raises(NetworkError):
        Network("n", dt=0.0)
    with pytest.raises(NetworkError):
        Network("n", batch_size=0)
    with pytest.raises(NetworkError):
        Network("n", precision="half")
    net = Network("n")
    with pytest.raises(NetworkError, match="size"):
        net.add_population("p", 0, m.LIF)
    with pytest.raises(NetworkError, match="identifier"):
        net.add_population("my pop", 3, m.LIF)
    with pytest.raises(NetworkError, match="one_to_one"):
        net.add_population("a", 3, m.LIF)
        net.add_population("b", 4, m.LIF)
        net.add_projection("p", "a", "b", m.STATIC, m.EXP_CURR, "one_to_one")


def test_wrong_array_shapes_are_errors():
    net = Network("shapes", dt=0.1, batch_size=2)
    net.add_population("p", 3, m.LIF)
    sim = net.build()
    sim.set("p", "v", np.zeros(3))  # broadcasts over the batch
    sim.set("p", "v", np.zeros((2, 3)))
    with pytest.raises(NetworkError, match="shape"):
        sim.set("p", "v", np.zeros(4))
    with pytest.raises(NetworkError, match="finite"):
        sim.set("p", "v", [np.nan, 0, 0])
    with pytest.raises(NetworkError, match="no variable 'u'"):
        sim.get("p", "u")


def test_postsynaptic_apply_must_name_neuron_variables():
    net = Network("ps", dt=0.1)
    net.add_population("a", 3, m.LIF)
    net.add_population("b", 3, m.IZHIKEVICH)
    with pytest.raises(ModelError, match="'w'"):
        net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("w"))
