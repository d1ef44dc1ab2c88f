"""The time-parallel method's spike rules (spikeforge/training/spike_rules.py) and its firing-rate
regulariser: the numpy reference (tests/parallel_reference.py) checked on its own by finite
differences, the generated cpu kernels against it in double (spikes bit for bit, the draws being
the Philox numbers of spikeforge.rng; gradients to 1e-6), and ``first_crossing`` spikes against the
cpu simulation of the same neurons with a refractory period longer than the sequence, in float."""

import numpy as np
import pytest

from spikeforge import rng
from spikeforge.errors import NetworkError
from spikeforge.models import builtins as b
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.runtime.simulation import Simulation
from spikeforge.training.parallel import ParallelCompiler
from spikeforge.training.spike_rules import DRAW_SITE, BernoulliSigmoid, FirstCrossing, Gumbel
from tests import parallel_reference as ref
from tests.test_parallel_kernels import (
    BIAS,
    COUPLED,
    DT,
    N1,
    N2,
    N_IN,
    PARALIF,
    TAU_SYN,
    B,
    K,
    T,
    _network,
    _problem,
    _reference_stack,
    _rel_close,
)

#: (compiler's rule, the reference layer's settings)
RULES = {
    "threshold": ("threshold", {}),
    "first_crossing": ("first_crossing", {"rule": "first_crossing"}),
    "first_crossing_fastsnn": (FirstCrossing(gradient="fastsnn"), {"rule": "first_crossing", "gradient": "fastsnn"}),
    "bernoulli_st": (BernoulliSigmoid(temperature=0.25),
                     {"rule": "bernoulli_sigmoid", "temperature": 0.25}),
    "bernoulli_spsn": (BernoulliSigmoid(temperature=0.5, gradient="spsn"),
                       {"rule": "bernoulli_sigmoid", "temperature": 0.5, "gradient": "spsn"}),
    "gumbel_hard": (Gumbel(temperature=0.5), {"rule": "gumbel", "temperature": 0.5}),
    "gumbel_soft": (Gumbel(temperature=0.5, hard=False), {"rule": "gumbel", "temperature": 0.5, "hard": False}),
}
DRAWS = {"threshold": 0, "first_crossing": 0, "bernoulli_sigmoid": 1, "gumbel": 2}


# -- the reference on its own ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["first_crossing", "first_crossing_fastsnn", "bernoulli_st", "gumbel_soft"])
@pytest.mark.parametrize("reg", [None, (0.7, 0.1)])
def test_reference_gradients_equal_finite_differences_of_the_smooth_stand_ins(name, reg):
    """The smooth stand-in of each rule (see the reference's doc) has the rule's dz/dg as its
    exact derivative, so its adjoint gradients are finite differences of its loss; with the rate
    regulariser added."""
    hidden, out = _reference_stack()
    for h in hidden:
        h.update(RULES[name][1])
    x, weights = _problem(11)
    weights = [np.array(w) for w in weights]
    if name.startswith("first_crossing"):  # fewer input spikes: h2 needs stronger weights to fire
        weights[1] *= 2.0
    rs = np.random.default_rng(3)
    mask, labels = np.ones(T), rs.integers(0, K, B)
    noise = [rs.random((T, B, n, 2)) for n in (N1, N2)]
    spiking = ref.forward(x, hidden, out, weights, BIAS, noise=noise)
    for k, h in enumerate(hidden):  # fastsnn's stand-in: linearised at these spikes
        h["g_frozen"] = spiking["g"][k]
    g = ref.gradients(x, labels, mask, hidden, out, weights, BIAS, "xent", spike="smooth", noise=noise, reg=reg)
    total = lambda: ref.loss(x, labels, mask, hidden, out, weights, BIAS, "xent", spike="smooth",  # noqa: E731
                             noise=noise, reg=reg).sum()
    for i, W in enumerate(weights):
        grad = g["W"][i].sum(axis=0)
        assert np.abs(grad).max() > 0
        for _ in range(5):
            idx = tuple(int(rs.integers(0, n)) for n in W.shape)
            # abs: the differences' rounding (|E| 1e-16 / eps ~ 1e-8), and kinks of the stand-ins of
            # threshold spikes (g = 0 at the first crossing), where central differences are O(eps)
            fd = ref.central_difference(total, W, idx)
            assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=max(1e-6 * np.abs(grad).max(), 1e-7)), (i, idx)
    if reg is not None:  # the regulariser's term is in the loss
        plain = ref.loss(x, labels, mask, hidden, out, weights, BIAS, "xent", spike="smooth", noise=noise)
        assert np.all(g["loss"] > plain)


def test_reference_first_crossing_fires_once_at_the_threshold_spikes_first_step():
    hidden, out = _reference_stack()
    x, weights = _problem(12)
    plain = ref.forward(x, hidden, out, weights, BIAS)
    for h in hidden:
        h["rule"] = "first_crossing"
    once = ref.forward(x, hidden, out, weights, BIAS)
    z0, z1 = plain["z"][0], once["z"][0]  # the first layer's input does not depend on the rule
    assert z1.sum(axis=0).max() == 1 and (z0.sum(axis=0) > 1).any()
    fired = z0.any(axis=0)
    np.testing.assert_array_equal(z1.any(axis=0), fired)
    np.testing.assert_array_equal(z1.argmax(axis=0)[fired], z0.argmax(axis=0)[fired])
    # FastSNN's forward: z = f(b), b the double cumulative sum of the threshold spikes
    b = np.cumsum(np.cumsum(z0, axis=0), axis=0)
    np.testing.assert_array_equal(z1, np.maximum(b * (1 - b) + 1, 0) * b)


# -- the kernels against the reference ---------------------------------------------------------

def _noise(net, pop, n, draws, draw, dtype=np.float64):
    """The uniform numbers the kernels draw for population ``pop`` in pass ``draw``: (T, B, n, draws)."""
    if draws == 0:
        return np.zeros((T, B, n, 0))
    t, bi, i = np.meshgrid(np.arange(T), np.arange(B), np.arange(n), indexing="ij")
    pid = net.populations[pop].id
    return np.stack([rng.uniform(net.seed, i, bi, draw * T + t, rng.stream_id(pid, DRAW_SITE + j), dtype)
                     for j in range(draws)], axis=-1)


@pytest.mark.parametrize("reg", [None, (0.5, 20.0)])
@pytest.mark.parametrize("name", list(RULES))
def test_kernels_match_the_reference_in_double(name, reg):
    rule, settings = RULES[name]
    x, weights = _problem(2)
    rs = np.random.default_rng(4)
    mask = np.zeros(T)
    mask[T // 4:] = 1.0
    labels = rs.integers(0, K, B)
    net = _network("double", weights)
    kwargs = {} if reg is None else {"reg_rate": reg[0], "reg_target_hz": reg[1]}
    compiled = ParallelCompiler(spike=rule, **kwargs).compile(net, inputs="inp", hidden=["h1", "h2"],
                                                               readout="out", n_steps=T)
    try:
        compiled.gradients(x, mask, labels=labels)  # pass 0
        par = compiled.gradients(x, mask, labels=labels, values=True)  # pass 1: other numbers
    finally:
        compiled.close()
    hidden, out = _reference_stack()
    draws = DRAWS[settings.get("rule", "threshold")]
    noise = [_noise(net, pop, n, draws, 1) for pop, n in (("h1", N1), ("h2", N2))]
    for h in hidden:
        h.update(settings)
    ref_reg = None if reg is None else (reg[0], reg[1] * DT / 1000.0)
    g = ref.gradients(x, labels, mask, hidden, out, weights, BIAS, "xent", noise=noise, reg=ref_reg)
    fw = g["forward"]
    for k, pop in enumerate(("h1", "h2")):
        z = fw["z"][k]
        assert 0 < z.mean() < 0.9, pop
        if settings.get("hard", True):
            np.testing.assert_array_equal(par["forward"][pop]["z"], z, err_msg=pop)
        else:
            _rel_close(par["forward"][pop]["z"], z, f"{pop}.z", 1e-12)
    _rel_close(par["y"], fw["y"], "y", 1e-12)
    _rel_close(par["loss"], g["loss"], "loss", 1e-12)
    for wname, gw in zip(("inp_h1", "h1_h2", "h2_out"), g["W"]):
        _rel_close(par["grads"][wname], gw.transpose(0, 2, 1), f"gradient of {wname}")


def test_stochastic_draws_reproduce_and_differ_between_passes():
    x, weights = _problem(2)
    compiled = ParallelCompiler(spike="bernoulli_sigmoid").compile(
        _network("float", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T)
    try:
        z = [compiled.forward(x)["h1"]["z"] for _ in range(2)]
        again = compiled.forward(x, draw=0)["h1"]["z"]
    finally:
        compiled.close()
    assert not np.array_equal(z[0], z[1])
    np.testing.assert_array_equal(again, z[0])


def test_float_kernels_draw_the_philox_numbers():
    """In float, the Bernoulli spikes of the first layer are [u < sigmoid(g)] for spikeforge.rng's
    float uniforms (up to the last bit of expf: a handful of flips at most)."""
    x, weights = _problem(2)
    net = _network("float", weights)
    compiled = ParallelCompiler(spike="bernoulli_sigmoid").compile(net, inputs="inp", hidden=["h1", "h2"],
                                                                   readout="out", n_steps=T)
    try:
        fw = compiled.forward(x)
    finally:
        compiled.close()
    g = fw["h1"]["v"] - np.float32(0.5)
    p = np.float32(1) / (np.float32(1) + np.exp(-g))
    u = _noise(net, "h1", N1, 1, 0, np.float32)[..., 0]
    assert np.count_nonzero(fw["h1"]["z"] != (u < p)) <= 2


# -- first_crossing against the simulation (infinite refractory period) -----------------------

def _refractory(model: NeuronModel, flagged: bool) -> NeuronModel:
    """``model`` with a reset to 0 and a refractory period ``t_ref`` (its ``v`` flagged ``unless
    refractory`` when ``flagged``): a neuron that, given a period longer than the run, fires once."""
    src = {"paralif": "dv/dt = (v_rest - v + r_m * i_syn) / tau_m",
           "coupled": "dv/dt = (i_syn - a - v) / tau_m\nda/dt = (k * v - a) / tau_a"}[model.name]
    if flagged:
        src = src.replace("/ tau_m", "/ tau_m  (unless refractory)", 1)
    return NeuronModel(model.name + "_ref", params={**model.params, "t_ref": 1e6}, vars=dict(model.vars),
                       equations=src, threshold=model.threshold_source, reset="v = 0", refractory="t_ref")


def test_first_crossing_spikes_are_the_simulation_with_an_infinite_refractory_period_in_float():
    x, weights = _problem(1)
    compiled = ParallelCompiler(spike=FirstCrossing()).compile(
        _network("float", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T)
    try:
        par = compiled.forward(x)
    finally:
        compiled.close()
    net = Network("stack_ref", dt=DT, batch_size=B, precision="float")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", N1, _refractory(PARALIF, True), record_spikes=True)
    net.add_population("h2", N2, _refractory(COUPLED, False), record_spikes=True)
    net.add_projection("inp_h1", "inp", "h1", SCALED, b.EXP_CURR, wu_init={"w": weights[0].T.ravel()},
                       ps_params={"tau_syn": TAU_SYN})
    net.add_projection("h1_h2", "h1", "h2", STATIC, ONE_STEP_CURR, wu_init={"w": weights[1].T.ravel()})
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=10.0, bias=list(BIAS)))
    net.add_projection("h2_out", "h2", "out", STATIC, ONE_STEP_CURR, wu_init={"w": weights[2].T.ravel()})
    net.add_timed_input("inp", "x", np.zeros((T, B, N_IN)), dt=DT)
    sim = Simulation(net, backend="cpu", progress=False)
    try:
        sim.set_timed_input("inp", "x", x, dt=DT)
        sim.run(steps=T)
        for pop, n in (("h1", N1), ("h2", N2)):
            z = np.zeros((T, B, n), dtype=np.float32)
            for bi, (times, ids) in enumerate(sim.spikes(pop)):
                z[np.round(times / DT).astype(int), bi, ids] = 1.0
            assert z.sum() > 0 and z.sum(axis=0).max() == 1, pop
            np.testing.assert_array_equal(par[pop]["z"], z, err_msg=pop)
    finally:
        sim.close()


def test_rule_settings_are_checked():
    for make, match in ((lambda: BernoulliSigmoid(temperature=0), "temperature must be a positive"),
                        (lambda: BernoulliSigmoid(gradient="exact"), "gradient must be one of"),
                        (lambda: Gumbel(temperature=float("nan")), "temperature must be a positive"),
                        (lambda: ParallelCompiler(spike="poisson"), "spike rule must be one of"),
                        (lambda: ParallelCompiler(reg_rate=-1.0), "reg_rate must be a finite number")):
        with pytest.raises(NetworkError, match=match):
            make()
