"""The numpy reference of time-parallel training (tests/parallel_reference.py) checked on its own:
its hand-written adjoint (BPTT) gradients against finite differences of a smooth stand-in of the
spike, against finite differences of the readout weights (where the spikes do not move), and
against PyTorch autograd of the same equations when torch is installed."""

import math

import numpy as np
import pytest

from tests import parallel_reference as ref

T, B, N_IN, N1, N2, K, DT = 30, 3, 4, 5, 6, 3, 1.0


def _stack(surrogate="triangular"):
    """inputs -> LIF fed by an exponential synaptic current (2 states, SPSN's neuron) -> LIF
    (1 state) -> leaky readout: the affine steps in closed form (the derivation's tests check
    spikeforge's own against the matrix exponential)."""
    a1, d1, a2, kappa = math.exp(-DT / 8.0), math.exp(-DT / 3.0), math.exp(-DT / 6.0), math.exp(-DT / 10.0)
    h1 = ref.layer(A=[[a1, 1 - a1], [0.0, d1]], Bv=[1 - a1, d1], dg=[1.0, 0.0], g0=-0.4, scale=0.4,
                   surrogate=surrogate)
    h2 = ref.layer(A=[[a2]], Bv=[1 - a2], c=[0.01], dg=[1.0], g0=-0.3, scale=0.3, surrogate=surrogate)
    out = ref.layer(A=[[kappa]], Bv=[1 - kappa])
    return [h1, h2], out


def _problem(seed, loss):
    rng = np.random.default_rng(seed)
    X = (rng.random((T, B, N_IN)) < 0.3) * rng.uniform(0.5, 1.5, (T, B, N_IN))
    weights = [rng.uniform(-0.5, 2.5, (N1, N_IN)), rng.uniform(-0.5, 2.0, (N2, N1)), rng.normal(0.0, 1.0, (K, N2))]
    b = rng.normal(0.0, 0.3, K)
    mask = np.zeros(T)
    mask[T // 3:] = 1.0
    target = rng.integers(0, K, B) if loss == "xent" else rng.normal(0.0, 0.5, (T, B, K))
    return X, weights, b, mask, target


@pytest.mark.parametrize("surrogate", ["triangular", "fast_sigmoid"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_adjoint_equals_finite_differences_of_the_smooth_stand_in(loss, surrogate):
    hidden, out = _stack(surrogate)
    X, weights, b, mask, target = _problem(3, loss)
    g = ref.gradients(X, target, mask, hidden, out, weights, b, loss, spike="smooth")
    total = lambda: ref.loss(X, target, mask, hidden, out, weights, b, loss, spike="smooth").sum()  # noqa: E731
    rng = np.random.default_rng(0)
    for i, W in enumerate(weights):
        grad = g["W"][i].sum(axis=0)
        assert np.abs(grad).max() > 0
        for _ in range(6):
            idx = tuple(int(rng.integers(0, n)) for n in W.shape)
            fd = ref.central_difference(total, W, idx)
            # 1e-5: both stand-ins are only once differentiable where psi has a kink (g = 0, and
            # |g| = scale for the triangle), so central differences are O(eps) there, not O(eps^2)
            assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-9 * np.abs(grad).max()), (i, idx)
    for k in range(K):
        assert g["b"].sum(axis=0)[k] == pytest.approx(ref.central_difference(total, b, k), rel=1e-5)


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_readout_gradients_with_threshold_spikes_are_exact(loss):
    """With H(g) spikes, the readout's weights and bias do not move any spike: their BPTT
    gradients are the true ones, so finite differences of the spiking network match them; and
    the spikes are those of the threshold rule on the scanned state."""
    hidden, out = _stack()
    X, weights, b, mask, target = _problem(5, loss)
    g = ref.gradients(X, target, mask, hidden, out, weights, b, loss)
    fw = g["forward"]
    assert 0 < fw["z"][0].mean() < 0.9 and 0 < fw["z"][1].mean() < 0.9  # spiking, not saturated
    np.testing.assert_array_equal(fw["z"][1], fw["x"][1][..., 0] > 0.3)
    total = lambda: ref.loss(X, target, mask, hidden, out, weights, b, loss).sum()  # noqa: E731
    for idx in [(0, 0), (1, 3), (2, 5)]:
        assert g["W"][2].sum(axis=0)[idx] == pytest.approx(ref.central_difference(total, weights[2], idx), rel=1e-6)
    # the hidden layers' gradients flow through the surrogate: non-zero
    assert np.abs(g["W"][0]).max() > 0 and np.abs(g["W"][1]).max() > 0


def test_per_instance_gradients_are_independent():
    """Instance b's gradient is the gradient of a batch of that instance alone (up to the
    rounding of numpy's matrix products, which depends on the shapes)."""
    hidden, out = _stack()
    X, weights, b, mask, target = _problem(7, "xent")
    full = ref.gradients(X, target, mask, hidden, out, weights, b, "xent")
    one = ref.gradients(X[:, 1:2], target[1:2], mask, hidden, out, weights, b, "xent")
    for i in range(3):
        np.testing.assert_allclose(full["W"][i][1], one["W"][i][0], rtol=1e-13, atol=1e-15)


def test_against_torch_autograd():
    """The same equations in PyTorch, with the spike's backward the surrogate: autograd's
    gradients equal the reference's adjoint to 1e-10 (double)."""
    torch = pytest.importorskip("torch")
    hidden, out = _stack()
    X, weights, b, mask, target = _problem(9, "xent")
    g = ref.gradients(X, target, mask, hidden, out, weights, b, "xent")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, scale, gamma):
            ctx.save_for_backward(v)
            ctx.scale, ctx.gamma = scale, gamma
            return (v > 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            psi = ctx.gamma / ctx.scale * torch.clamp(1 - v.abs() / ctx.scale, min=0)
            return grad * psi, None, None

    def scan(L, u):
        A, Bv, c = (torch.tensor(L[k]) for k in ("A", "Bv", "c"))
        x = torch.tensor(L["x0"]).expand(u.shape[1], u.shape[2], -1)
        xs = []
        for t in range(u.shape[0]):
            x = x @ A.T + u[t][..., None] * Bv + c
            xs.append(x)
        return torch.stack(xs)

    Ws = [torch.tensor(W, requires_grad=True) for W in weights]
    bt = torch.tensor(b, requires_grad=True)
    s = torch.tensor(X)
    for L, W in zip(hidden, Ws[:-1]):
        u = torch.cat([torch.zeros_like(s[:1]), s[:-1]]) @ W.T
        gl = scan(L, u) @ torch.tensor(L["dg"]) + L["g0"]
        s = Spike.apply(gl, L["scale"], L["gamma"])
    y = scan(out, torch.cat([torch.zeros_like(s[:1]), s[:-1]]) @ Ws[-1].T + bt)[..., 0]
    logp = torch.log_softmax(y, dim=-1)
    onehot = torch.nn.functional.one_hot(torch.tensor(target), K).to(y.dtype)
    (-(torch.tensor(mask)[:, None, None] * onehot[None] * logp).sum()).backward()
    for i, W in enumerate(Ws):
        np.testing.assert_allclose(W.grad.numpy(), g["W"][i].sum(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), g["b"].sum(axis=0), rtol=1e-10, atol=1e-12)
