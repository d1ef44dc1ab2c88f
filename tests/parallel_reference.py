"""Independent plain-numpy reference for time-parallel training of feed-forward spiking stacks
(SPSN/ParaLIF-style: linear subthreshold dynamics, no reset, ``threshold`` spikes).

This module deliberately does not import spikeforge (its losses come from
tests/eprop_reference.py, which does not either). float64; per-step arrays are (T, B, ...).

Each layer's neurons have an n-dimensional state advanced by one affine step (the same for
every neuron of the layer; for a LIF ``A = exp(-dt/tau_m)``, ``Bv = r_m (1 - A)``)::

    u^l_t = W_l s^{l-1}_{t-1}             (s^0 = the inputs x; s_{-1} = 0: a spike at t arrives at t+1)
    x^l_t = A_l x^l_{t-1} + Bv_l u^l_t + c_l           (x^l_{-1} = x0_l)
    g^l_t = dg_l . x^l_t + g0_l,  z^l_t = [g^l_t > 0]   (no reset: z does not act back on x)
    psi^l_t = (gamma / scale) max(0, 1 - |g^l_t| / scale)   (triangular, as the e-prop code's default)

The readout is such a layer without spikes, fed ``u_t = W_out z^L_{t-1} + b`` (the
leaky_readout's ``(1 - kappa) (bias + i_syn)``), and ``y_t = x_t[0]``. Losses and ``err_t = dE/dy_t``
are eprop_reference.loss_and_error's (per-step mse or xent over ``mask``).

:func:`gradients` is BPTT by a reverse (adjoint) scan, with dz/dg = psi: for the readout
``lam_t = A^T lam_{t+1} + e_0 err_t``; for a hidden layer ``lam_t = A^T lam_{t+1} + dg psi_t dE/dz_t``;
in both ``du_t = Bv . lam_t``, ``dW += du_t s_{t-1}^T`` and ``dE/ds_{t-1} = W^T du_t``.

``spike="smooth"`` replaces ``H(g)`` by the surrogate's antiderivative (``S' = psi``): a
differentiable stand-in whose exact gradient is what :func:`gradients` computes, so it can be
checked by finite differences.

Spike rules (a hidden layer's ``rule``; ``u`` the layer's uniform numbers, given by the caller
as ``noise``: (T, B, N, draws) per hidden layer, the same numbers the kernels draw)::

    threshold          z = [g > 0]                                   dz/dg = psi
    first_crossing     z = [g > 0] at the first t where g > 0 only   dz/dg = psi for t <= the first spike, else 0
                       (gradient="surrogate"); gradient="fastsnn": FastSNN's z_t = f(b_t),
                       b_t = sum_{t'<=t} sum_{t''<=t'} H(g_t''), f(b) = relu(b (1 - b) + 1) b, by autograd:
                       dE/dg_t = psi_t sum_{t <= t' < first} (t' - t + 1) dE/dz_t'
    bernoulli_sigmoid  p = sigmoid(g / tau), z = [u0 < p]            dz/dg = p (1 - p) / tau (straight_through),
                                                                             p^2 (1 - p) / tau (spsn)
    gumbel             a = (2 g + G0 - G1) / tau, G = -log(-log(u)), y = sigmoid(a)
                       z = [y > 1/2] (hard) or y                     dz/dg = 2 y (1 - y) / tau

``smooth`` stand-ins (the exact gradient is :func:`gradients`'): first_crossing the surrogate's
antiderivative at the steps up to the first crossing (the crossing step held fixed); with
``fastsnn``, the formulation linearised at the spikes of ``L["g_frozen"]`` (``s = H(g0) + S(g) -
S(g0)``, ``z = f(b0) + f'(b0) (b - b0)``: the values of the spiking network, autograd's gradient);
bernoulli_sigmoid ``p`` (straight_through); gumbel ``y``.

The firing-rate regulariser (``reg = (reg_rate, r_target)``, r_target in spikes per step) adds
``reg_rate / 2 sum_j (r_j - r_target)^2`` per instance to the loss, ``r_j = mean_t z_tj`` over
the hidden neurons of every layer; ``dE/dz_t += reg_rate (r_j - r_target) / T``.
"""

from __future__ import annotations

import numpy as np

from tests.eprop_reference import loss_and_error

__all__ = ["forward", "gradients", "layer", "loss"]

SURROGATES = ("triangular", "fast_sigmoid")


RULES = ("threshold", "first_crossing", "bernoulli_sigmoid", "gumbel")


def layer(A, Bv, c=None, dg=None, g0=0.0, x0=None, scale=1.0, gamma=0.3, surrogate="triangular",
          rule="threshold", temperature=1.0, gradient="straight_through", hard=True):
    """One layer's step (``dg`` None: a readout) as the dict the functions here take."""
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    n = A.shape[0]
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}")
    return dict(A=A, Bv=np.asarray(Bv, dtype=np.float64).reshape(n),
                c=np.zeros(n) if c is None else np.asarray(c, dtype=np.float64).reshape(n),
                dg=None if dg is None else np.asarray(dg, dtype=np.float64).reshape(n), g0=float(g0),
                x0=np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64).reshape(n),
                scale=float(scale), gamma=float(gamma), surrogate=surrogate, rule=rule,
                temperature=float(temperature), gradient=gradient, hard=bool(hard))


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _gumbel_y(g, u, L):
    G0, G1 = -np.log(-np.log(u[..., 0])), -np.log(-np.log(u[..., 1]))
    return _sigmoid((2.0 * g + G0 - G1) / L["temperature"])


def _first(g):
    """The step of each neuron's first threshold crossing (T where none): (B, N)."""
    s = g > 0
    return np.where(s.any(axis=0), s.argmax(axis=0), g.shape[0])


def _spikes(g, L, u, spike):
    """z of a hidden layer from its threshold distance g (T, B, N)."""
    rule, smooth = L["rule"], spike == "smooth"
    if rule == "threshold":
        return _smooth_spike(g, L) if smooth else (g > 0).astype(np.float64)
    if rule == "first_crossing" and L["gradient"] == "fastsnn" and smooth:
        g0 = L["g_frozen"]
        s = (g0 > 0) + _smooth_spike(g, L) - _smooth_spike(g0, L)
        b, b0 = np.cumsum(np.cumsum(s, axis=0), axis=0), np.cumsum(np.cumsum(g0 > 0, axis=0), axis=0)
        return (b0 == 1) + (b0 == 0) * (b - b0)
    if rule == "first_crossing":
        before = np.arange(g.shape[0])[:, None, None] <= _first(g)
        return (_smooth_spike(g, L) if smooth else (g > 0).astype(np.float64)) * before
    if rule == "bernoulli_sigmoid":
        p = _sigmoid(g / L["temperature"])
        return p if smooth else (u[..., 0] < p).astype(np.float64)
    y = _gumbel_y(g, u, L)
    return y if smooth or not L["hard"] else (y > 0.5).astype(np.float64)


def _dz_dg(g, L, u):
    """The rule's dz/dg (T, B, N)."""
    rule = L["rule"]
    if rule == "threshold":
        return _psi(g, L)
    if rule == "first_crossing":
        return _psi(g, L) * (np.arange(g.shape[0])[:, None, None] <= _first(g))
    if rule == "bernoulli_sigmoid":
        p = _sigmoid(g / L["temperature"])
        return p * (1.0 - p) / L["temperature"] * (p if L["gradient"] == "spsn" else 1.0)
    y = _gumbel_y(g, u, L)
    return 2.0 * y * (1.0 - y) / L["temperature"]


def _psi(g, L):
    u = np.abs(g) / L["scale"]
    if L["surrogate"] == "triangular":
        return (L["gamma"] / L["scale"]) * np.maximum(0.0, 1.0 - u)
    return (L["gamma"] / L["scale"]) / (1.0 + u) ** 2


def _smooth_spike(g, L):
    """S with S' = psi and S(0) = 0."""
    u = g / L["scale"]
    if L["surrogate"] == "triangular":
        u = np.clip(u, -1.0, 1.0)
        return L["gamma"] * (u - 0.5 * u * np.abs(u))
    return L["gamma"] * u / (1.0 + np.abs(u))


def _delayed(s):
    """s_{t-1} at t (zero at t = 0)."""
    out = np.zeros_like(s)
    out[1:] = s[:-1]
    return out


def _scan(L, u):
    """States (T, B, N, n) of a layer driven by inputs u (T, B, N), stepping through time."""
    T, B, N = u.shape
    x = np.empty((T, B, N, L["A"].shape[0]))
    prev = np.broadcast_to(L["x0"], (B, N, L["A"].shape[0]))
    for t in range(T):
        prev = prev @ L["A"].T + u[t][..., None] * L["Bv"] + L["c"]
        x[t] = prev
    return x


def forward(X, hidden, readout, weights, b=None, spike="heaviside", noise=None):
    """Forward pass. ``X``: inputs (T, B, N_0); ``hidden``: list of :func:`layer` dicts;
    ``weights``: [W_1, ..., W_L, W_out], each [post][pre]; ``b``: readout bias (K,); ``noise``:
    per hidden layer its uniform numbers (T, B, N, draws), or None for the deterministic rules.

    Returns dict(u=[...], x=[...], g=[...], z=[...] per hidden layer, u_out, x_out, y)."""
    s = np.asarray(X, dtype=np.float64)
    out = dict(u=[], x=[], g=[], z=[])
    for k, (L, W) in enumerate(zip(hidden, weights[:-1])):
        u = _delayed(s) @ np.asarray(W).T
        x = _scan(L, u)
        g = x @ L["dg"] + L["g0"]
        s = _spikes(g, L, None if noise is None else noise[k], spike)
        for key, val in (("u", u), ("x", x), ("g", g), ("z", s)):
            out[key].append(val)
    u = _delayed(s) @ np.asarray(weights[-1]).T
    if b is not None:
        u = u + np.asarray(b, dtype=np.float64)
    out["u_out"], out["x_out"] = u, _scan(readout, u)
    out["y"] = out["x_out"][..., 0]
    return out


def _rate_term(z, reg):
    """The regulariser's loss (B,) and dE/dz (T, B, N) of one hidden layer's spikes."""
    if reg is None:
        return 0.0, 0.0
    reg_rate, target = reg
    d = z.mean(axis=0) - target
    return 0.5 * reg_rate * (d * d).sum(axis=-1), np.broadcast_to(reg_rate * d / z.shape[0], z.shape)


def loss(X, targets, mask, hidden, readout, weights, b=None, loss="xent", spike="heaviside", noise=None,
         reg=None):
    """Per-instance loss (B,)."""
    fw = forward(X, hidden, readout, weights, b, spike, noise)
    E = loss_and_error(fw["y"], targets, mask, loss)[0]
    return E + sum((_rate_term(z, reg)[0] for z in fw["z"]), 0.0)


def _adjoint(L, drive):
    """lam_t = A^T lam_{t+1} + drive_t (lam_T = 0), drive (T, B, N, n); returns du_t = Bv . lam_t."""
    lam = np.zeros(drive.shape[1:])
    du = np.empty(drive.shape[:-1])
    for t in range(drive.shape[0] - 1, -1, -1):
        lam = lam @ L["A"] + drive[t]  # (A^T lam) per neuron, as a row: lam A
        du[t] = lam @ L["Bv"]
    return du


def gradients(X, targets, mask, hidden, readout, weights, b=None, loss="xent", spike="heaviside", noise=None,
              reg=None):
    """Per-instance BPTT gradients: dict(W=[(B, post, pre) per weight matrix], b=(B, K), loss=(B,),
    and the forward pass); ``reg`` = (reg_rate, target spikes per step): the rate regulariser."""
    fw = forward(X, hidden, readout, weights, b, spike, noise)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    T = err.shape[0]
    E = E + sum((_rate_term(z, reg)[0] for z in fw["z"]), 0.0)
    n_out = readout["A"].shape[0]
    drive = np.zeros(err.shape + (n_out,))
    drive[..., 0] = err
    du = _adjoint(readout, drive)
    grads_W = [None] * len(weights)
    grad_b = du.sum(axis=0)
    inputs = [np.asarray(X, dtype=np.float64), *fw["z"]]
    for i in range(len(weights) - 1, -1, -1):
        pre = _delayed(inputs[i])
        grads_W[i] = np.einsum("tbj,tbk->bjk", du, pre)
        if i == 0:
            break
        dE_ds = np.zeros_like(inputs[i])
        dE_ds[:-1] = (du @ np.asarray(weights[i]))[1:]  # s_{t-1} drove u_t
        dE_ds = dE_ds + _rate_term(inputs[i], reg)[1]
        L = hidden[i - 1]
        if L["rule"] == "first_crossing" and L["gradient"] == "fastsnn":
            before = np.arange(T)[:, None, None] < _first(fw["g"][i - 1])  # f'(b_t) = [b_t == 0]
            S = np.cumsum((dE_ds * before)[::-1], axis=0)  # S_t = sum_{t' >= t} f'(b_t') dE/dz_t'
            dE_ds = np.cumsum(S, axis=0)[::-1]  # C_t = sum_{t' >= t} S_t' = sum (t' - t + 1) f'(b_t') dE/dz_t'
            dE_dg = dE_ds * _psi(fw["g"][i - 1], L)
        else:
            dE_dg = dE_ds * _dz_dg(fw["g"][i - 1], L, None if noise is None else noise[i - 1])
        du = _adjoint(L, dE_dg[..., None] * L["dg"])
    return dict(W=grads_W, b=grad_b, loss=E, forward=fw)


def central_difference(f, arr, idx, eps=1e-6):
    """(f() with arr[idx] + eps - f() with arr[idx] - eps) / 2 eps; arr[idx] is restored."""
    old = arr[idx]
    arr[idx] = old + eps
    up = f()
    arr[idx] = old - eps
    down = f()
    arr[idx] = old
    return (up - down) / (2 * eps)
