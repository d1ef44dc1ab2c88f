"""Independent plain-numpy reference for e-prop (Bellec et al. 2020) and BPTT.

This module deliberately does not import spikeforge: tests use it to check the generated
code. Everything is float64, batched along a leading axis B (after the time axis for
per-step arrays, i.e. per-step arrays have shape (T, B, ...)).

Dynamics (per batch instance; t = 0..T-1, v'_{-1} = v_init (default v_rest), a'_{-1} = 0,
x_{-1} = z_{-1} = 0; v_rest defaults to 0)::

    alpha = exp(-dt/tau_m), rho = exp(-dt/tau_a), kappa = exp(-dt/tau_out)
    I_t   = W_in x_{t-1} + W_rec z_{t-1}                 (one-step transmission delay)
    v_t   = v_rest + alpha (v'_{t-1} - v_rest) + (1 - alpha) I_t    (pre-reset membrane)
    a_t   = rho a'_{t-1}                                   (pre-reset adaptation)
    A_t   = v_th + beta a_t
    z_t   = [v_t > A_t]                                    (strictly greater)
    psi_t = (gamma / scale) max(0, 1 - |v_t - A_t| / scale)   (dz_t/dv_t; scale defaults to v_th)
    v'_t  = v_t - z_t v_th         (reset="subtract", the default)
    v'_t  = v_reset if z_t else v_t   (reset="constant": v' = v + z (v_reset - v))
    a'_t  = a_t + z_t
    y_t   = kappa y_{t-1} + (1 - kappa) (W_out z_{t-1} + b)   (y_{-1} = 0)

Gradient conventions (shared by e-prop, BPTT and RTRL here): dz_t/dv_t = psi_t,
dz_t/da_t = -beta psi_t, the spike in v's reset is a stop-gradient (detached), the
adaptation increment a' = a + z is differentiated. With z detached, the reset map of v has
the derivative r_t = dv'_t/dv_t = 1 (subtract) or 1 - z_t (constant: a spike forgets v_t).
The diagonal of W_rec is forced to zero in the forward pass and its gradient is zeroed.

Losses (mask_t selects the readout window)::

    mse : E = 0.5 sum_t mask_t sum_k (y_tk - y*_tk)^2,    err_t = mask_t (y_t - y*_t)
    xent: E = -sum_t mask_t sum_k onehot_k log softmax(y_t)_k,  err_t = mask_t (p_t - onehot_t)

``err_t`` is exactly dE/dy_t (partial, i.e. not counting the path y_t -> y_{t+1}).

``beta`` may be a number or an array of shape (N_h,): one value per hidden neuron (beta = 0
makes a neuron a plain LIF neuron, Bellec's LSNN mix).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adam_step",
    "bptt_gradients",
    "eprop_gradients",
    "forward",
    "loss_and_error",
    "rtrl_gradients",
    "straight_through_loss",
]

RESETS = ("subtract", "constant")


# ----------------------------------------------------------------------------- helpers


def _constants(params):
    dt = float(params["dt"])
    beta = np.asarray(params.get("beta", 0.0), dtype=np.float64)  # scalar or per hidden neuron (N_h,)
    tau_a = params.get("tau_a")
    if tau_a is None:
        if np.any(beta != 0.0):
            raise ValueError("ALIF (beta != 0) needs tau_a")
        rho = 0.0
    else:
        rho = float(np.exp(-dt / float(tau_a)))
    reset = params.get("reset", "subtract")
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}")
    return dict(
        dt=dt,
        reset=reset,
        v_reset=float(params.get("v_reset", 0.0)),
        v_rest=float(params.get("v_rest", 0.0)),
        v_init=float(params.get("v_init", params.get("v_rest", 0.0))),
        scale=float(params.get("scale", params["v_th"])),
        alpha=float(np.exp(-dt / float(params["tau_m"]))),
        rho=rho,
        kappa=float(np.exp(-dt / float(params["tau_out"]))),
        v_th=float(params["v_th"]),
        beta=beta,
        gamma=float(params.get("gamma", 0.3)),
    )


def _surrogate(g, c):
    """psi = (gamma / scale) max(0, 1 - |g| / scale), g = v - A."""
    return (c["gamma"] / c["scale"]) * np.maximum(0.0, 1.0 - np.abs(g) / c["scale"])


def _surrogate_antiderivative(g, c):
    """S with S' = psi and S(0) = 0: gamma (u - u |u| / 2) for u = g / scale, clipped to |u| <= 1."""
    u = np.clip(g / c["scale"], -1.0, 1.0)
    return c["gamma"] * (u - 0.5 * u * np.abs(u))


def _reset_v(v, z, c):
    """v' from the pre-reset v and the spike z."""
    if c["reset"] == "subtract":
        return v - z * c["v_th"]
    return np.where(z > 0, c["v_reset"], v)


def _reset_slope(z, c):
    """r = dv'/dv with the spike detached: 1 (subtract) or 1 - z (constant)."""
    return np.ones_like(z) if c["reset"] == "subtract" else 1.0 - z


def _weights(weights):
    W_in = np.asarray(weights["W_in"], dtype=np.float64)
    n_h = W_in.shape[0]
    W_rec = weights.get("W_rec")
    W_rec = np.zeros((n_h, n_h)) if W_rec is None else np.array(W_rec, dtype=np.float64)
    np.fill_diagonal(W_rec, 0.0)
    W_out = np.asarray(weights["W_out"], dtype=np.float64)
    b = weights.get("b")
    b = np.zeros(W_out.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    return W_in, W_rec, W_out, b


def _mask(mask, T, B):
    if mask is None:
        return np.ones((T, B))
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim == 1:
        m = np.broadcast_to(m[:, None], (T, B))
    return np.asarray(m, dtype=np.float64)


def _targets(targets, loss, T, B, K):
    tg = np.asarray(targets)
    if loss == "xent" and np.issubdtype(tg.dtype, np.integer):
        if tg.ndim == 1:  # one label per instance, (B,)
            tg = np.broadcast_to(tg[None, :], (T, B))
        return np.eye(K)[tg]  # (T, B, K) one-hot
    return np.broadcast_to(np.asarray(tg, dtype=np.float64), (T, B, K))


# ----------------------------------------------------------------------------- forward


def forward(X, params, weights):
    """Run the network. ``X``: (T, B, N_in) of 0/1.

    Returns a dict of per-step arrays (leading axes (T, B)): ``I``, ``v`` and ``a`` (pre-reset),
    ``A`` (threshold), ``z``, ``psi``, ``v_reset`` and ``a_reset`` (v', a'), ``y``.
    """
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, _ = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    al, rho, ka, v_th, beta = c["alpha"], c["rho"], c["kappa"], c["v_th"], c["beta"]

    out = {k: np.zeros((T, B, n_h)) for k in ("I", "v", "a", "A", "z", "psi", "v_reset", "a_reset")}
    out["y"] = np.zeros((T, B, K))
    x_prev = np.zeros((B, X.shape[2]))
    z_prev = np.zeros((B, n_h))
    vr = np.full((B, n_h), c["v_init"])
    ar = np.zeros((B, n_h))
    y = np.zeros((B, K))
    for t in range(T):
        I = x_prev @ W_in.T + z_prev @ W_rec.T
        v = c["v_rest"] + al * (vr - c["v_rest"]) + (1.0 - al) * I
        a = rho * ar
        A = v_th + beta * a
        z = (v > A).astype(np.float64)
        psi = _surrogate(v - A, c)
        vr = _reset_v(v, z, c)
        ar = a + z
        y = ka * y + (1.0 - ka) * (z_prev @ W_out.T + b)
        for k, val in (("I", I), ("v", v), ("a", a), ("A", A), ("z", z), ("psi", psi), ("v_reset", vr),
                       ("a_reset", ar), ("y", y)):
            out[k][t] = val
        x_prev, z_prev = X[t], z
    return out


def loss_and_error(y, targets, mask, loss="xent"):
    """Per-instance loss (B,) and err_t = dE/dy_t (T, B, K) for readout ``y`` of shape (T, B, K)."""
    T, B, K = y.shape
    m = _mask(mask, T, B)
    tg = _targets(targets, loss, T, B, K)
    if loss == "mse":
        d = y - tg
        E = 0.5 * np.sum(m[..., None] * d * d, axis=(0, 2))
        err = m[..., None] * d
    elif loss == "xent":
        s = y - y.max(axis=-1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
        E = -np.sum(m[..., None] * tg * logp, axis=(0, 2))
        err = m[..., None] * (np.exp(logp) - tg)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return E, err


def _reg_signal(z, reg, dt):
    """R_j = c_reg (mean_t z_tj - f_target dt / 1000), per instance: (B, N_h); 0 when reg is None."""
    if reg is None:
        return np.zeros(z.shape[1:])
    c_reg, f_target_hz = reg
    return c_reg * (z.mean(axis=0) - f_target_hz * dt / 1000.0)


def _package(g_in, g_rec, g_out, g_b, E):
    """Sum per-instance gradients over the batch; zero the W_rec diagonal."""
    n_h = g_rec.shape[1]
    g_rec = g_rec * (1.0 - np.eye(n_h))[None]
    per = dict(W_in=g_in, W_rec=g_rec, W_out=g_out, b=g_b, loss=E)
    return dict(W_in=g_in.sum(0), W_rec=g_rec.sum(0), W_out=g_out.sum(0), b=g_b.sum(0), loss=float(E.sum()),
                per_instance=per)


# ----------------------------------------------------------------------------- e-prop


def eprop_gradients(X, targets, mask, params, weights, loss="xent", feedback="symmetric", reg=None):
    """Online e-prop gradients (the forward pass is run first only because the optional
    firing-rate regulariser uses the whole-sequence mean rate; everything else is causal).

    Recursions, per instance, for synapse j <- i with presynaptic s (s = x for W_in, z for W_rec)::

        eps_v_{ji,t} = alpha r_{j,t-1} eps_v_{ji,t-1} + (1 - alpha) s_{i,t-1}
        eps_a_{ji,t} = rho (psi_{j,t-1} eps_v_{ji,t-1} + (1 - beta psi_{j,t-1}) eps_a_{ji,t-1})
        e_{ji,t}     = psi_{j,t} (eps_v_{ji,t} - beta eps_a_{ji,t})
        ebar_{ji,t}  = kappa ebar_{ji,t-1} + e_{ji,t}
        L_{j,t}      = sum_k B_jk err_{k,t} + R_j,   B = W_out^T or B_rand (N_h, K)
        g_{ji}       = sum_t L_{j,t} (1 - kappa) ebar_{ji,t-1}

    (eps_v = dv_t/dW, eps_a = da_t/dW through the neuron's own state only: dv_t/dv_{t-1} =
    alpha r_{t-1} with r the reset map's slope (1, or 1 - z for a reset to a constant: eps_v then
    depends on j), dv_t/da_{t-1} = 0, da_t/dv_{t-1} = rho psi_{t-1}, da_t/da_{t-1} = rho (1 - beta
    psi_{t-1}); all eligibility quantities start at 0.) Readout, exact::

        zbar_{j,t} = kappa zbar_{j,t-1} + z_{j,t},     g_out_{kj} = sum_t err_{k,t} (1 - kappa) zbar_{j,t-1}
        bbar_t     = kappa bbar_{t-1} + 1 = (1 - kappa^{t+1}) / (1 - kappa),
        g_b_k      = sum_t err_{k,t} (1 - kappa) bbar_t = sum_t err_{k,t} (1 - kappa^{t+1})

    (the bias enters y_t without delay, so its trace includes step t, unlike zbar_{t-1}).

    Regularisation ``reg=(c_reg, f_target_hz)``: R_j = c_reg (mean_t z_{j,t} - f_target_hz dt / 1000)
    (per instance, mean over all T steps) is added to L_{j,t} at every step (not masked). It is a
    gradient-only signal: it does not change the reported loss and does not touch W_out / b.
    """
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    al, rho, ka, beta = c["alpha"], c["rho"], c["kappa"], c["beta"]
    beta_j = beta[..., None]  # broadcasts over (B, N_h, n_pre): beta of the postsynaptic neuron j

    fw = forward(X, params, weights)
    r = _reset_slope(fw["z"], c)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    if isinstance(feedback, str):
        if feedback != "symmetric":
            raise ValueError(f"unknown feedback {feedback!r}")
        Bfb = W_out.T
    else:
        Bfb = np.asarray(feedback, dtype=np.float64)
    R = _reg_signal(fw["z"], reg, c["dt"])
    z, psi = fw["z"], fw["psi"]

    g = {}
    for name, S, n_pre in (("W_in", X, n_in), ("W_rec", z, n_h)):
        eps_v = np.zeros((B, n_h, n_pre))
        eps_a = np.zeros((B, n_h, n_pre))
        ebar = np.zeros((B, n_h, n_pre))
        grad = np.zeros((B, n_h, n_pre))
        s_prev = np.zeros((B, n_pre))
        psi_prev = np.zeros((B, n_h))
        r_prev = np.ones((B, n_h))
        for t in range(T):
            eps_a = rho * (psi_prev[:, :, None] * eps_v + (1.0 - beta_j * psi_prev[:, :, None]) * eps_a)
            eps_v = al * r_prev[:, :, None] * eps_v + (1.0 - al) * s_prev[:, None, :]
            e = psi[t][:, :, None] * (eps_v - beta_j * eps_a)
            L = err[t] @ Bfb.T + R  # (B, N_h)
            grad += L[:, :, None] * (1.0 - ka) * ebar
            ebar = ka * ebar + e
            s_prev, psi_prev, r_prev = S[t], psi[t], r[t]
        g[name] = grad

    zbar = np.zeros((B, n_h))
    bbar = 0.0
    g_out = np.zeros((B, K, n_h))
    g_b = np.zeros((B, K))
    for t in range(T):
        g_out += err[t][:, :, None] * (1.0 - ka) * zbar[:, None, :]
        bbar = ka * bbar + 1.0
        g_b += err[t] * (1.0 - ka) * bbar
        zbar = ka * zbar + z[t]
    return _package(g["W_in"], g["W_rec"], g_out, g_b, E)


# ----------------------------------------------------------------------------- BPTT


def _reg_readout_adjoint(R, T, kappa):
    """ry_t = R + kappa ry_{t+1}, i.e. the reg signal injected at every step, backward-filtered
    exactly like the readout adjoint. Returns (T + 1, B, N_h) with ry_T = 0."""
    ry = np.zeros((T + 1,) + R.shape)
    for t in range(T - 1, -1, -1):
        ry[t] = R + kappa * ry[t + 1]
    return ry


def bptt_gradients(X, targets, mask, params, weights, loss="xent", feedback="symmetric", reg=None):
    """Exact gradient of E (same surrogate conventions) by a plain reverse loop.

    Adjoints (g_q = dE/dq, total), with gv_T = ga_T = 0, dy_T = 0::

        dy_t  = err_t + kappa dy_{t+1}
        gz_t  = (1 - kappa) W_out^T dy_{t+1} + (1 - alpha) W_rec^T gv_{t+1} + rho ga_{t+1}
                + (1 - kappa) ry_{t+1}                      (ry: reg term, see below)
        gv_t  = alpha r_t gv_{t+1} + psi_t gz_t      (r_t = dv'_t/dv_t, 1 or 1 - z_t)
        ga_t  = rho ga_{t+1} - beta psi_t gz_t
        dW_in  = sum_t (1 - alpha) gv_t x_{t-1}^T,   dW_rec = sum_t (1 - alpha) gv_t z_{t-1}^T
        dW_out = sum_t (1 - kappa) dy_t z_{t-1}^T,   db     = sum_t (1 - kappa) dy_t

    ``feedback`` is ignored (BPTT always uses W_out). ``reg`` is handled so that it matches e-prop's
    definition exactly: R_j (held constant, no gradient through the rate) is injected at every step
    as if it were a readout error routed to neuron j with unit weight, i.e. ry_t = R + kappa ry_{t+1}.
    """
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    al, rho, ka, beta = c["alpha"], c["rho"], c["kappa"], c["beta"]

    fw = forward(X, params, weights)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    z, psi = fw["z"], fw["psi"]
    r = _reset_slope(z, c)
    ry = _reg_readout_adjoint(_reg_signal(z, reg, c["dt"]), T, ka)

    g_in = np.zeros((B, n_h, n_in))
    g_rec = np.zeros((B, n_h, n_h))
    g_out = np.zeros((B, K, n_h))
    g_b = np.zeros((B, K))
    dy_next = np.zeros((B, K))
    gv_next = np.zeros((B, n_h))
    ga_next = np.zeros((B, n_h))
    zero_in, zero_h = np.zeros((B, n_in)), np.zeros((B, n_h))
    for t in range(T - 1, -1, -1):
        gz = ((1.0 - ka) * dy_next @ W_out + (1.0 - al) * gv_next @ W_rec + rho * ga_next
              + (1.0 - ka) * ry[t + 1])
        gv = al * r[t] * gv_next + psi[t] * gz
        ga = rho * ga_next - beta * psi[t] * gz
        dy = err[t] + ka * dy_next
        x_prev = X[t - 1] if t > 0 else zero_in
        z_prev = z[t - 1] if t > 0 else zero_h
        g_in += (1.0 - al) * gv[:, :, None] * x_prev[:, None, :]
        g_rec += (1.0 - al) * gv[:, :, None] * z_prev[:, None, :]
        g_out += (1.0 - ka) * dy[:, :, None] * z_prev[:, None, :]
        g_b += (1.0 - ka) * dy
        dy_next, gv_next, ga_next = dy, gv, ga
    return _package(g_in, g_rec, g_out, g_b, E)


# ----------------------------------------------------------------------------- RTRL


def rtrl_gradients(X, targets, mask, params, weights, loss="xent", feedback="symmetric", reg=None):
    """Exact gradient by forward-mode (real-time recurrent learning) with the same conventions;
    a second, independent route to the BPTT answer (including all recurrent paths). Small nets only.

    Sensitivities w.r.t. theta = (W_in, W_rec) (flattened per post-neuron block)::

        Sz_t = psi_t (Sv_t - beta Sa_t)
        Sv_t = alpha r_{t-1} Sv_{t-1} + (1 - alpha) (dI_t/dtheta + W_rec Sz_{t-1})
        Sa_t = rho (Sa_{t-1} + Sz_{t-1})
        Sy_t = kappa Sy_{t-1} + (1 - kappa) (W_out Sz_{t-1} + R-channel)
        g    = sum_t err_t . Sy_t
    """
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    al, rho, ka, beta = c["alpha"], c["rho"], c["kappa"], c["beta"]

    fw = forward(X, params, weights)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    z, psi = fw["z"], fw["psi"]
    r = _reset_slope(z, c)
    R = _reg_signal(z, reg, c["dt"])

    P = n_h * n_in + n_h * n_h  # parameter count
    Sv = np.zeros((B, n_h, P))
    Sa = np.zeros((B, n_h, P))
    Sz = np.zeros((B, n_h, P))
    Sy = np.zeros((B, K, P))
    Sr = np.zeros((B, n_h, P))  # reg channel: filtered Sz, paired with R
    grad = np.zeros((B, P))
    x_prev, z_prev, r_prev = np.zeros((B, n_in)), np.zeros((B, n_h)), np.ones((B, n_h))
    for t in range(T):
        dI = np.zeros((B, n_h, P))
        for j in range(n_h):
            dI[:, j, j * n_in:(j + 1) * n_in] = x_prev
            off = n_h * n_in + j * n_h
            dI[:, j, off:off + n_h] = z_prev
        Sy = ka * Sy + (1.0 - ka) * np.einsum("kj,bjp->bkp", W_out, Sz)
        Sr = ka * Sr + (1.0 - ka) * Sz
        Sv_new = al * r_prev[:, :, None] * Sv + (1.0 - al) * (dI + np.einsum("jl,blp->bjp", W_rec, Sz))
        Sa = rho * (Sa + Sz)
        Sv = Sv_new
        Sz = psi[t][:, :, None] * (Sv - beta[..., None] * Sa)
        grad += np.einsum("bk,bkp->bp", err[t], Sy) + np.einsum("bj,bjp->bp", R, Sr)
        x_prev, z_prev, r_prev = X[t], z[t], r[t]
    g_in = grad[:, :n_h * n_in].reshape(B, n_h, n_in)
    g_rec = grad[:, n_h * n_in:].reshape(B, n_h, n_h)
    # readout gradients are not part of theta here: reuse the exact (BPTT) ones
    ref = bptt_gradients(X, targets, mask, params, weights, loss=loss, reg=reg)["per_instance"]
    return _package(g_in, g_rec, ref["W_out"], ref["b"], E)


# ----------------------------------------------------------------------------- finite differences


def straight_through_loss(X, targets, mask, params, weights, frozen, loss="xent"):
    """Total loss of a smooth stand-in for the network, for finite differences of the surrogate
    gradient. ``frozen = forward(X, params, base_weights)``. Every step, with g_t = v_t - A_t::

        z_t  = z*_t + S(g_t) - S(g*_t)      (S' = psi: the base run's spike, with the surrogate slope)
        v'_t = reset of v_t with the spike held at z*_t   (the detached reset)
        a'_t = a_t + z_t

    and z_t drives the recurrent input, the adaptation and the readout. At the base weights this
    is the network's forward pass exactly, and its derivative is the surrogate gradient with a
    detached reset (what BPTT and RTRL compute), so central differences of this function check
    those gradients without relying on any hand-derived recursion. (S is piecewise quadratic:
    central differences are exact up to rounding unless some g_t lies within the step of a kink.)
    """
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, _ = X.shape
    n_h = W_in.shape[0]
    al, rho, ka, beta = c["alpha"], c["rho"], c["kappa"], c["beta"]
    x_prev, z_prev = np.zeros((B, X.shape[2])), np.zeros((B, n_h))
    vr, ar = np.full((B, n_h), c["v_init"]), np.zeros((B, n_h))
    y = np.zeros((B, W_out.shape[0]))
    ys = np.zeros((T,) + y.shape)
    for t in range(T):
        I = x_prev @ W_in.T + z_prev @ W_rec.T
        v = c["v_rest"] + al * (vr - c["v_rest"]) + (1.0 - al) * I
        a = rho * ar
        A = c["v_th"] + beta * a
        z_held = frozen["z"][t]
        z = z_held + _surrogate_antiderivative(v - A, c) - _surrogate_antiderivative(frozen["v"][t] - frozen["A"][t], c)
        vr = _reset_v(v, z_held, c)
        ar = a + z
        y = ka * y + (1.0 - ka) * (z_prev @ W_out.T + b)
        ys[t] = y
        x_prev, z_prev = X[t], z
    E, _ = loss_and_error(ys, targets, mask, loss)
    return float(E.sum())


# ----------------------------------------------------------------------------- Adam


def adam_step(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One bias-corrected Adam step (t counts from 1). Returns new (w, m, v); inputs are not modified.

        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        w = w - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    m_hat = m / (1.0 - beta1**t)
    v_hat = v / (1.0 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
