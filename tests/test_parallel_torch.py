"""The time-parallel method's generated cpu kernels against PyTorch autograd (skipped without
torch): one batch of SPSN's equations (linear filters computed as causal convolutions over the
whole sequence, Bernoulli-sigmoid or threshold spikes) and FastSNN's single-spike formulation
(Taylor et al.: the spikes of a neuron without reset, then the double cumulative sum and
``f(b) = relu(b (1 - b) + 1) b``), written here in torch as those papers write them, with
autograd's gradients compared with the kernels' per-instance gradients summed over the batch.

The stochastic rules draw the kernels' Philox numbers (``spikeforge.rng.uniform``, the same
counters), so both sides see the same uniforms. ``python -m pytest tests/test_parallel_torch.py``
in an environment with torch (e.g. benchmarks/.env-torch, ``PYTHONPATH`` the checkout)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from spikeforge import rng  # noqa: E402
from spikeforge.models import builtins as b  # noqa: E402
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT  # noqa: E402
from spikeforge.models.neuron import NeuronModel  # noqa: E402
from spikeforge.network import Network  # noqa: E402
from spikeforge.training.parallel import ParallelCompiler  # noqa: E402
from spikeforge.training.spike_rules import DRAW_SITE, BernoulliSigmoid, FirstCrossing  # noqa: E402

DT = 1.0


def _filter(u, decay):
    """``x_t = decay x_{t-1} + u_t`` (x_{-1} = 0) for u (T, B, N), computed as SPSN and FastSNN
    compute a layer without reset: one causal convolution with the kernel ``decay^k`` over the
    whole sequence (no loop over time)."""
    T, B, N = u.shape
    kernel = (decay ** torch.arange(T - 1, -1, -1, dtype=u.dtype)).view(1, 1, T)
    seq = F.pad(u.permute(1, 2, 0).reshape(B * N, 1, T), (T - 1, 0))
    return F.conv1d(seq, kernel).reshape(B, N, T).permute(2, 0, 1)


def _delayed(s):
    """A spike at t arrives at t + 1 (spikeforge's one-step synapses)."""
    return torch.cat([torch.zeros_like(s[:1]), s[:-1]])


def _xent(y, labels, mask):
    """Cross-entropy of every step in the window, summed over the steps and the batch."""
    logp = torch.log_softmax(y, dim=-1)
    onehot = F.one_hot(torch.as_tensor(labels), y.shape[-1]).to(y.dtype)
    return -(torch.as_tensor(mask, dtype=y.dtype)[:, None, None] * onehot[None] * logp).sum()


def _uniforms(net, pop, T, B, n, draw, dtype):
    """The uniform numbers the kernels draw for population ``pop`` in pass ``draw`` (T, B, n)."""
    t, bi, i = np.meshgrid(np.arange(T), np.arange(B), np.arange(n), indexing="ij")
    return rng.uniform(net.seed, i, bi, draw * T + t, rng.stream_id(net.populations[pop].id, DRAW_SITE), dtype)


def _compare(kernel, want, what, rtol):
    """Equal to ``rtol`` of the largest value; returns the largest difference over the largest value."""
    assert np.abs(want).max() > 0, what
    np.testing.assert_allclose(kernel, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=what)
    return float(np.abs(kernel - want).max() / np.abs(want).max())


# -- SPSN: one batch, threshold and Bernoulli-sigmoid spikes -----------------------------------

T1, B1, N_IN, N1, N2, K1 = 40, 3, 6, 12, 8, 3
TAU_M1, TAU_SYN, V_REST, R_M, V_TH1 = 8.0, 3.0, 0.1, 1.0, 0.5
TAU_M2, V_TH2, TAU_OUT = 6.0, 0.4, 10.0
GAMMA = 0.3
#: SPSN's neuron: a LIF without reset fed by an exponentially decaying synaptic current
SPSN_LIF = NeuronModel("spsn_lif", params={"tau_m": TAU_M1, "v_rest": V_REST, "r_m": R_M, "v_th": V_TH1},
                       vars={"v": 0.0}, equations="dv/dt = (v_rest - v + r_m * i_syn) / tau_m",
                       threshold="v > v_th")
LIF2 = NeuronModel("lif2", params={"tau_m": TAU_M2, "v_th": V_TH2}, vars={"v": 0.0},
                   equations="dv/dt = (i_syn - v) / tau_m", threshold="v > v_th")


W0, W1 = 0.25, 0.5


def _spsn_problem(seed):
    r = np.random.default_rng(seed)
    x = (r.random((T1, B1, N_IN)) < 0.4) * r.uniform(0.3, 1.7, (T1, B1, N_IN))
    weights = [r.uniform(-W0, W0 + 0.1, (N1, N_IN)), r.uniform(-W1, W1, (N2, N1)), r.normal(0.0, 1.0, (K1, N2))]
    bias = r.normal(0.0, 0.2, K1)
    mask = np.zeros(T1)
    mask[T1 // 4:] = 1.0
    return x, weights, bias, mask, r.integers(0, K1, B1)


def _spsn_network(precision, weights, bias):
    net = Network("spsn", dt=DT, batch_size=B1, precision=precision, seed=5)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", N1, SPSN_LIF)
    net.add_population("h2", N2, LIF2)
    net.add_projection("inp_h1", "inp", "h1", SCALED, b.EXP_CURR, wu_init={"w": weights[0].T.ravel()},
                       ps_params={"tau_syn": TAU_SYN})
    net.add_projection("h1_h2", "h1", "h2", STATIC, ONE_STEP_CURR, wu_init={"w": weights[1].T.ravel()})
    net.add_population("out", K1, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=list(bias)))
    net.add_projection("h2_out", "h2", "out", STATIC, ONE_STEP_CURR, wu_init={"w": weights[2].T.ravel()})
    return net


class _Threshold(torch.autograd.Function):
    """H(g), its backward the triangular surrogate of width ``scale`` (the threshold)."""

    @staticmethod
    def forward(ctx, g, scale):
        ctx.save_for_backward(g)
        ctx.scale = scale
        return (g > 0).to(g.dtype)

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return grad * GAMMA / ctx.scale * torch.clamp(1 - g.abs() / ctx.scale, min=0), None


class _BernoulliSPSN(torch.autograd.Function):
    """SPSN-SB's sample z = [u < p] with SPSN's dz/dp = p."""

    @staticmethod
    def forward(ctx, p, u):
        ctx.save_for_backward(p)
        return (u < p).to(p.dtype)

    @staticmethod
    def backward(ctx, grad):
        (p,) = ctx.saved_tensors
        return grad * p, None


def _spike(g, scale, rule, u):
    if rule == "threshold":
        return _Threshold.apply(g, scale)
    p = torch.sigmoid(g / 0.25)
    if rule == "bernoulli_st":  # straight through: dz/dp = 1
        return p + ((u < p).to(p.dtype) - p).detach()
    return _BernoulliSPSN.apply(p, u)


def _spsn_torch(x, weights, bias, mask, labels, rule, noise):
    """SPSN's equations, layer after layer over the whole sequence: the synaptic current
    ``I = filter(W s_{t-1}, exp(-dt/tau_syn))``, the membrane ``v = filter((1 - a) (v_rest + r_m I),
    a)`` (no reset), the spikes from ``g = v - v_th``; the readout ``y = filter((1 - kappa) (b +
    W z_{t-1}), kappa)``; per-step cross-entropy over the window."""
    Ws = [torch.tensor(w, requires_grad=True) for w in weights]
    bt = torch.tensor(bias, requires_grad=True)
    s = torch.tensor(x)
    a1, d, a2, kappa = (math.exp(-DT / tau) for tau in (TAU_M1, TAU_SYN, TAU_M2, TAU_OUT))
    current = _filter(_delayed(s) @ Ws[0].T, d)
    v1 = _filter((1 - a1) * (V_REST + R_M * current), a1)
    g1 = v1 - V_TH1
    z1 = _spike(g1, V_TH1, rule, noise[0])
    v2 = _filter((1 - a2) * (_delayed(z1) @ Ws[1].T), a2)
    g2 = v2 - V_TH2
    z2 = _spike(g2, V_TH2, rule, noise[1])
    y = _filter((1 - kappa) * (bt + _delayed(z2) @ Ws[2].T), kappa)
    _xent(y, labels, mask).backward()
    return {"z": [z1.detach().numpy(), z2.detach().numpy()], "g": [g1.detach().numpy(), g2.detach().numpy()],
            "W": [w.grad.numpy() for w in Ws], "b": bt.grad.numpy()}


SPSN_RULES = {"threshold": "threshold",
              "bernoulli_st": BernoulliSigmoid(temperature=0.25),
              "bernoulli_spsn": BernoulliSigmoid(temperature=0.25, gradient="spsn")}


@pytest.mark.parametrize("precision, rtol", [("double", 1e-9), ("float", 1e-4)])
@pytest.mark.parametrize("rule", list(SPSN_RULES))
def test_one_batch_of_spsn_matches_torch_autograd(rule, precision, rtol):
    """In double to 1e-9, and in float (the kernels' float32 against autograd in double on the same
    float32 weights and uniforms) to 1e-4, on a batch where no threshold test or draw lies within
    1e-4 of flipping (checked), so both sides have the same spikes."""
    x, weights, bias, mask, labels = _spsn_problem(3)
    dtype = np.float64 if precision == "double" else np.float32
    weights, bias = [w.astype(dtype).astype(np.float64) for w in weights], bias.astype(dtype).astype(np.float64)
    net = _spsn_network(precision, weights, bias)
    compiled = ParallelCompiler(spike=SPSN_RULES[rule], gamma=GAMMA).compile(
        net, inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T1)
    try:
        par = compiled.gradients(x, mask, labels=labels, values=True, draw=0)
    finally:
        compiled.close()
    noise = [torch.tensor(_uniforms(net, pop, T1, B1, n, 0, dtype).astype(np.float64))
             for pop, n in (("h1", N1), ("h2", N2))]
    want = _spsn_torch(x.astype(dtype).astype(np.float64), weights, bias, mask, labels, rule, noise)
    for k, pop in enumerate(("h1", "h2")):
        z, g = want["z"][k], want["g"][k]
        assert 0.02 < z.mean() < 0.8, pop  # spiking, not saturated
        margin = np.abs(g) if rule == "threshold" else np.abs(noise[k].numpy() - 1 / (1 + np.exp(-g / 0.25)))
        assert margin.min() > 1e-4, (pop, margin.min())
        np.testing.assert_array_equal(par["forward"][pop]["z"], z, err_msg=pop)
    errors = {name: _compare(par["grads"][name].sum(axis=0), gw.T, name, rtol)
              for name, gw in zip(("inp_h1", "h1_h2", "h2_out"), want["W"])}
    errors["out.bias"] = _compare(par["grads"]["out.bias"].sum(axis=0), want["b"], "out.bias", rtol)
    print(f"SPSN {rule} {precision}: max relative error", {k: f"{v:.1e}" for k, v in errors.items()})


# -- FastSNN's single-spike formulation -------------------------------------------------------

T2, B2, N_IN2, N_HID, K2 = 50, 4, 20, 30, 5
TAU_F, TAU_OUT2, GAMMA_F = 10.0, 15.0, 1.0
BETA = math.exp(-DT / TAU_F)
#: FastSNN's LIF: mem_t = beta mem_{t-1} + I_t (r_m = 1 / (1 - beta)), a spike where mem > 1
FAST_LIF = NeuronModel("fast_lif", params={"tau_m": TAU_F, "r_m": 1.0 / (1.0 - BETA), "v_th": 1.0},
                       vars={"v": 0.0}, equations="dv/dt = (r_m * i_syn - v) / tau_m", threshold="v > v_th")


class _FastSigmoid(torch.autograd.Function):
    """FastSNN's spike: H(mem - 1), backward the fast sigmoid ``1 / (scale |x| + 1)^2`` (scale 1
    here: spikeforge's ``fast_sigmoid`` surrogate of width v_th = 1, with gamma = 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (x.abs() + 1.0) ** 2


def _fastsnn_torch(x, weights, bias, mask, labels):
    """FastSNN's single-spike layer: membrane without reset by one convolution, s = H(mem - 1),
    b = two cumulative sums of s over time (convolutions with a kernel of ones in FastSNN), z =
    relu(b (1 - b) + 1) b (1 at the first crossing only), autograd through all of it."""
    W1, W2 = (torch.tensor(w, requires_grad=True) for w in weights)
    bt = torch.tensor(bias, requires_grad=True)
    mem = _filter(_delayed(torch.tensor(x)) @ W1.T, BETA)
    s = _FastSigmoid.apply(mem - 1.0)
    ones = torch.ones(1, 1, T2, dtype=s.dtype)
    total = s.permute(1, 2, 0).reshape(B2 * N_HID, 1, T2)
    for _ in range(2):
        total = F.conv1d(F.pad(total, (T2 - 1, 0)), ones)
    bsum = total.reshape(B2, N_HID, T2).permute(2, 0, 1)
    z = F.relu(bsum * (1 - bsum) + 1) * bsum
    kappa = math.exp(-DT / TAU_OUT2)
    y = _filter((1 - kappa) * (bt + _delayed(z) @ W2.T), kappa)
    _xent(y, labels, mask).backward()
    return {"z": z.detach().numpy(), "g": (mem - 1.0).detach().numpy(), "W": [W1.grad.numpy(), W2.grad.numpy()],
            "b": bt.grad.numpy()}


def test_first_crossing_fastsnn_gradients_match_torch_autograd_of_fastsnn():
    """B = 4, T = 50, 20 inputs -> 30 single-spike neurons -> 5 readouts, double: the kernels'
    ``first_crossing`` spikes equal FastSNN's ``f(b)`` and their ``gradient="fastsnn"`` gradients
    equal autograd's to relative 1e-5 (of the largest)."""
    r = np.random.default_rng(7)
    x = (r.random((T2, B2, N_IN2)) < 0.25).astype(np.float64)
    weights = [r.uniform(-0.04, 0.09, (N_HID, N_IN2)), r.normal(0.0, 1.0, (K2, N_HID))]
    bias = r.normal(0.0, 0.2, K2)
    mask = np.zeros(T2)
    mask[10:] = 1.0
    labels = r.integers(0, K2, B2)
    net = Network("fastsnn", dt=DT, batch_size=B2, precision="double")
    net.add_population("inp", N_IN2, VALUE_INPUT)
    net.add_population("hid", N_HID, FAST_LIF)
    net.add_population("out", K2, LEAKY_READOUT, dict(tau_m=TAU_OUT2, bias=list(bias)))
    net.add_projection("inp_hid", "inp", "hid", STATIC, ONE_STEP_CURR, wu_init={"w": weights[0].T.ravel()})
    net.add_projection("hid_out", "hid", "out", STATIC, ONE_STEP_CURR, wu_init={"w": weights[1].T.ravel()})
    compiler = ParallelCompiler(spike=FirstCrossing(gradient="fastsnn"), surrogate="fast_sigmoid", gamma=GAMMA_F)
    compiled = compiler.compile(net, inputs="inp", hidden=["hid"], readout="out", n_steps=T2)
    try:
        par = compiled.gradients(x, mask, labels=labels, values=True)
    finally:
        compiled.close()
    want = _fastsnn_torch(x, weights, bias, mask, labels)
    z = want["z"]
    fired = z.sum(axis=0)
    assert fired.max() == 1 and 0.3 < fired.mean() < 0.95, fired.mean()  # once at most; some never
    first = z.argmax(axis=0)[fired > 0]
    assert first.min() > 0 and np.ptp(first) > 10  # crossings spread over the sequence
    assert np.abs(want["g"]).min() > 1e-9  # no threshold test on the edge
    np.testing.assert_array_equal(par["forward"]["hid"]["z"], z)
    errors = {name: _compare(par["grads"][name].sum(axis=0), gw.T, name, 1e-5)
              for name, gw in zip(("inp_hid", "hid_out"), want["W"])}
    errors["out.bias"] = _compare(par["grads"]["out.bias"].sum(axis=0), want["b"], "out.bias", 1e-5)
    print("FastSNN first_crossing: max relative error", {k: f"{v:.1e}" for k, v in errors.items()})
