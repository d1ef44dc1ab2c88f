"""Plain-numpy reference for losses of a readout aggregated over the window (with
tests/eprop_reference.py for the network, its forward pass and its conventions).

Readouts (``m``: the mask, the window is the steps with ``m_t > 0``)::

    per_step: the loss of y_t at every step, weighted by m_t (eprop_reference.loss_and_error)
    sum     : Y = sum_t m_t y_t
    mean    : Y = sum_t m_t y_t / sum_t m_t
    max     : Y_k = max over the window of y_tk (per instance and readout neuron)
    last    : Y = y_t at the last step of the window

and the loss of the output Y (per instance): xent ``-log softmax(Y)[label]``, mse
``|Y - Y*|^2 / 2`` with the target Y* aggregated from the per-step targets as Y is from y.
err_t = dE/dy_t follows by the chain rule through Y. Like eprop_reference, this module does
not import spikeforge.
"""

from __future__ import annotations

import numpy as np

from tests.eprop_reference import _constants, _reg_signal, _reset_slope, _weights, forward, loss_and_error

READOUTS = ("per_step", "sum", "mean", "max", "last")


def aggregate(y, mask, readout):
    """The output Y (B, K) of ``y`` (T, B, K) and dY/dy (T, B, K) (one entry per (b, k) for max/last)."""
    y = np.asarray(y, dtype=np.float64)
    T, B, K = y.shape
    m = np.asarray(mask, dtype=np.float64)
    window = [t for t in range(T) if m[t] > 0]
    dY = np.zeros((T, B, K))
    if readout in ("sum", "mean"):
        weight = m if readout == "sum" else m / m.sum()
        Y = np.zeros((B, K))
        for t in range(T):
            Y += weight[t] * y[t]
            dY[t] = weight[t]
        return Y, dY
    Y = np.zeros((B, K))
    for b in range(B):
        for k in range(K):
            if readout == "last":
                t_star = window[-1]
            elif readout == "max":
                t_star = window[0]
                for t in window:  # the first maximum
                    if y[t, b, k] > y[t_star, b, k]:
                        t_star = t
            else:
                raise ValueError(f"unknown readout {readout!r}")
            Y[b, k] = y[t_star, b, k]
            dY[t_star, b, k] = 1.0
    return Y, dY


def aggregated_error(y, targets, mask, loss, readout):
    """Per-instance loss (B,) and err_t = dE/dy_t (T, B, K). ``targets``: labels (B,) for
    xent, per-step targets (T, B, K) for mse."""
    y = np.asarray(y, dtype=np.float64)
    if readout == "per_step":
        return loss_and_error(y, targets, mask, loss)
    Y, dY = aggregate(y, mask, readout)
    if loss == "xent":
        label = np.asarray(targets)
        s = Y - Y.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        onehot = np.eye(Y.shape[1])[label]
        E = -np.sum(onehot * logp, axis=1)
        dE = np.exp(logp) - onehot
    elif loss == "mse":
        # the target aggregated like y (for max: each target's own maximum over the window)
        Ystar, _ = aggregate(targets, mask, readout)
        E = 0.5 * np.sum((Y - Ystar) ** 2, axis=1)
        dE = Y - Ystar
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return E, dY * dE[None]


def aggregated_loss(X, targets, mask, params, weights, loss, readout):
    """The total loss (summed over the batch) of the network's forward pass: for finite differences."""
    E, _ = aggregated_error(forward(X, params, weights)["y"], targets, mask, loss, readout)
    return float(E.sum())


def eprop_gradients_from_error(X, err, params, weights, feedback="symmetric", reg=None):
    """eprop_reference.eprop_gradients with the readout error of every step given (T, B, K)
    instead of computed from a per-step loss: the same recursions, g = sum_t L_t (1 - kappa)
    ebar_{t-1} with L_t = B err_t (+ R), and the exact readout gradients. Per instance:
    ``{W_in, W_rec, W_out, b}`` with a leading batch axis."""
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    al, rho, ka, beta = c["alpha"], c["rho"], c["kappa"], c["beta"]
    beta_j = beta[..., None]
    fw = forward(X, params, weights)
    z, psi, r = fw["z"], fw["psi"], _reset_slope(fw["z"], c)
    Bfb = W_out.T if isinstance(feedback, str) else np.asarray(feedback, dtype=np.float64)
    R = _reg_signal(z, reg, c["dt"])
    g = {}
    for name, S, n_pre in (("W_in", X, n_in), ("W_rec", z, n_h)):
        eps_v, eps_a, ebar, grad = (np.zeros((B, n_h, n_pre)) for _ in range(4))
        s_prev, psi_prev, r_prev = np.zeros((B, n_pre)), np.zeros((B, n_h)), np.ones((B, n_h))
        for t in range(T):
            eps_a = rho * (psi_prev[:, :, None] * eps_v + (1.0 - beta_j * psi_prev[:, :, None]) * eps_a)
            eps_v = al * r_prev[:, :, None] * eps_v + (1.0 - al) * s_prev[:, None, :]
            e = psi[t][:, :, None] * (eps_v - beta_j * eps_a)
            L = err[t] @ Bfb.T + R
            grad += L[:, :, None] * (1.0 - ka) * ebar
            ebar = ka * ebar + e
            s_prev, psi_prev, r_prev = S[t], psi[t], r[t]
        g[name] = grad
    g["W_rec"] = g["W_rec"] * (1.0 - np.eye(n_h))[None]
    zbar, bbar = np.zeros((B, n_h)), 0.0
    g["W_out"], g["b"] = np.zeros((B, K, n_h)), np.zeros((B, K))
    for t in range(T):
        g["W_out"] += err[t][:, :, None] * (1.0 - ka) * zbar[:, None, :]
        bbar = ka * bbar + 1.0
        g["b"] += err[t] * (1.0 - ka) * bbar
        zbar = ka * zbar + z[t]
    return g
