"""Independent plain-numpy reference for e-prop and BPTT on the Izhikevich neuron.

Like ``tests/eprop_reference.py`` (whose loss, weight and packaging helpers it reuses), this
module does not import spikeforge: the forward step, the state Jacobian, the eligibility
recursion and the backward pass are written out by hand. Float64 throughout; per-step arrays
have shape (T, B, ...).

Dynamics (per batch instance; t = 0..T-1; h'_{-1} = (v_init, u_init) = (-65, -13) is the
post-reset state before the first step, x_{-1} = z_{-1} = 0). One step is forward Euler of
``dv/dt = 0.04 v^2 + 5 v + 140 - u + I``, ``du/dt = a (b v - u)`` from the post-reset state
(a simultaneous update), the threshold ``v >= v_peak`` (30) and the reset ``v = c; u += d``::

    I_t   = W_in x_{t-1} + W_rec z_{t-1}                        (one-step transmission delay)
    v_t   = v'_{t-1} + dt (0.04 v'_{t-1}^2 + 5 v'_{t-1} + 140 - u'_{t-1} + I_t)   (pre-reset)
    u_t   = u'_{t-1} + dt a (b v'_{t-1} - u'_{t-1})
    z_t   = [v_t >= v_peak],   g_t = v_t - v_peak
    psi_t = (gamma / scale) max(0, 1 - |g_t| / scale)      (surrogate="triangular")
          = (gamma / scale) exp(-|g_t| / scale)            (surrogate="exponential")
    v'_t  = c if z_t else v_t,    u'_t = u_t + d z_t
    y_t   = kappa y_{t-1} + (1 - kappa) (W_out z_{t-1} + b),   kappa = exp(-dt / tau_out)

``a``, ``b``, ``c``, ``d`` may be numbers or arrays of shape (N_h,) (one value per neuron).

Gradient conventions (e-prop and BPTT alike): dz_t/dv_t = psi_t (dz/du = 0: the threshold
reads v only); the spike in v's reset is a stop-gradient, so dv'_t/dv_t = 1 - z_t (a spike
forgets v) and dv'/dz = 0; u's reset is differentiated through the spike: du'_t/du_t = 1,
du'_t/dz_t = d, hence du'_t/dv_t = d psi_t. The hand-derived one-step Jacobians are

    J_t = d(v_{t+1}, u_{t+1}) / d(v'_t, u'_t) = [[1 + dt (0.08 v'_t + 5), -dt], [dt a b, 1 - dt a]]
    Q_t = d(v'_t, u'_t) / d(v_t, u_t)         = [[1 - z_t, 0], [d psi_t, 1]]
    D_t = dh_t / dh_{t-1} = J_{t-1} Q_{t-1},   c = dh_t / dI_t = (dt, 0)

The diagonal of W_rec is forced to zero and its gradient is zeroed. Losses and ``err_t =
dE/dy_t`` are those of ``eprop_reference.loss_and_error``.
"""

from __future__ import annotations

import numpy as np

from tests.eprop_reference import _package, _weights, loss_and_error

__all__ = ["IZHIKEVICH", "bptt_gradients", "compose", "eligibility_gradients", "eprop_gradients", "forward",
           "jacobians", "straight_through_loss"]

#: Izhikevich's regular-spiking neuron, the defaults of spikeforge's built-in ``izhikevich``
#: model (restated here, not imported), with the readout and surrogate used by the tests.
IZHIKEVICH = dict(dt=0.5, a=0.02, b=0.2, c=-65.0, d=8.0, v_init=-65.0, u_init=-13.0, v_peak=30.0,
                  tau_out=15.0, gamma=0.3, surrogate="exponential", scale=30.0)

SURROGATES = ("triangular", "exponential")


def _constants(params):
    p = dict(IZHIKEVICH, **params)
    if p["surrogate"] not in SURROGATES:
        raise ValueError(f"unknown surrogate {p['surrogate']!r}")
    out = {k: np.asarray(p[k], dtype=np.float64) for k in ("a", "b", "c", "d")}  # scalar or (N_h,)
    out.update({k: float(p[k]) for k in ("dt", "v_init", "u_init", "v_peak", "gamma", "scale")})
    out["kappa"] = float(np.exp(-p["dt"] / float(p["tau_out"])))
    out["surrogate"] = p["surrogate"]
    return out


def _surrogate(g, c):
    x = np.abs(g) / c["scale"]
    if c["surrogate"] == "triangular":
        return (c["gamma"] / c["scale"]) * np.maximum(0.0, 1.0 - x)
    return (c["gamma"] / c["scale"]) * np.exp(-x)


def _surrogate_antiderivative(g, c):
    """S with S' = psi and S(0) = 0."""
    if c["surrogate"] == "triangular":
        w = np.clip(g / c["scale"], -1.0, 1.0)
        return c["gamma"] * (w - 0.5 * w * np.abs(w))
    return c["gamma"] * np.sign(g) * (1.0 - np.exp(-np.abs(g) / c["scale"]))


def _euler(vr, ur, I, c):
    """One forward-Euler step from the post-reset state (simultaneous update)."""
    v = vr + c["dt"] * (0.04 * vr * vr + 5.0 * vr + 140.0 - ur + I)
    u = ur + c["dt"] * c["a"] * (c["b"] * vr - ur)
    return v, u


def forward(X, params, weights):
    """Run the network. ``X``: (T, B, N_in). Returns per-step arrays (T, B, ...): ``I``, ``v`` and
    ``u`` (pre-reset), ``z``, ``psi``, ``v_reset`` and ``u_reset`` (v', u'), ``y``."""
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    out = {k: np.zeros((T, B, n_h)) for k in ("I", "v", "u", "z", "psi", "v_reset", "u_reset")}
    out["y"] = np.zeros((T, B, K))
    x_prev, z_prev = np.zeros((B, n_in)), np.zeros((B, n_h))
    vr, ur = np.full((B, n_h), c["v_init"]), np.full((B, n_h), c["u_init"])
    y = np.zeros((B, K))
    for t in range(T):
        I = x_prev @ W_in.T + z_prev @ W_rec.T
        v, u = _euler(vr, ur, I, c)
        z = (v >= c["v_peak"]).astype(np.float64)
        psi = _surrogate(v - c["v_peak"], c)
        vr = np.where(z > 0, np.broadcast_to(c["c"], v.shape), v)
        ur = u + c["d"] * z
        y = c["kappa"] * y + (1.0 - c["kappa"]) * (z_prev @ W_out.T + b)
        for k, val in (("I", I), ("v", v), ("u", u), ("z", z), ("psi", psi), ("v_reset", vr), ("u_reset", ur),
                       ("y", y)):
            out[k][t] = val
        x_prev, z_prev = X[t], z
    return out


def jacobians(fw, params, forget=True, through_spike=True):
    """Per step t (arrays (T, B, N_h)): the entries of J_t (at the post-reset state v'_t) and of
    Q_t, and D_{t+1} = J_t Q_t, as dicts ``J``, ``Q``, ``D`` keyed "vv", "vu", "uv", "uu"
    (row: the derivative of; column: with respect to).

    ``forget=False`` (Q_vv = 1 instead of 1 - z) and ``through_spike=False`` (Q_uv = 0 instead of
    d psi) are wrong conventions, there so that tests can show a comparison would notice them."""
    c = _constants(params)
    dt, a, b, d = c["dt"], c["a"], c["b"], c["d"]
    vr, z, psi = fw["v_reset"], fw["z"], fw["psi"]
    one = np.ones_like(vr)
    J = dict(vv=1.0 + dt * (0.08 * vr + 5.0), vu=-dt * one, uv=dt * a * b * one, uu=(1.0 - dt * a) * one)
    Q = dict(vv=(1.0 - z) if forget else one, vu=0.0 * one, uv=(d * psi) if through_spike else 0.0 * one, uu=one)
    return dict(J=J, Q=Q, D=compose(J, Q))


def compose(J, Q):
    """The 2 x 2 product J Q, entry by entry."""
    return dict(vv=J["vv"] * Q["vv"] + J["vu"] * Q["uv"], vu=J["vv"] * Q["vu"] + J["vu"] * Q["uu"],
                uv=J["uv"] * Q["vv"] + J["uu"] * Q["uv"], uu=J["uv"] * Q["vu"] + J["uu"] * Q["uu"])


def _feedback(feedback, W_out):
    if isinstance(feedback, str):
        if feedback != "symmetric":
            raise ValueError(f"unknown feedback {feedback!r}")
        return W_out.T
    return np.asarray(feedback, dtype=np.float64)


def _readout_gradients(err, z, kappa):
    """Exact readout gradients (as in eprop_reference): g_out from the filtered z_{t-1}, g_b from
    the filtered unit trace (the bias enters y_t without delay)."""
    T, B, K = err.shape
    zbar = np.zeros(z.shape[1:])
    bbar = 0.0
    g_out = np.zeros((B, K, z.shape[2]))
    g_b = np.zeros((B, K))
    for t in range(T):
        g_out += err[t][:, :, None] * (1.0 - kappa) * zbar[:, None, :]
        bbar = kappa * bbar + 1.0
        g_b += err[t] * (1.0 - kappa) * bbar
        zbar = kappa * zbar + z[t]
    return g_out, g_b


def eprop_gradients(X, targets, mask, params, weights, loss="xent", feedback="symmetric", variant=None):
    """Online e-prop gradients. For synapse j <- i with presynaptic signal s (x for W_in, z for
    W_rec), eligibility vectors (dv_t/dW, du_t/dW through neuron j's own state) start at 0 and::

        eps_v_t = D_vv eps_v_{t-1} + D_vu eps_u_{t-1} + dt s_{i,t-1}
        eps_u_t = D_uv eps_v_{t-1} + D_uu eps_u_{t-1}            (D = D_t of neuron j)
        e_t     = psi_{j,t} eps_v_t                              (dz/dh = psi (1, 0))
        ebar_t  = kappa ebar_{t-1} + e_t,   L_{j,t} = sum_k B_jk err_{k,t}
        g_ji    = sum_t L_{j,t} (1 - kappa) ebar_{t-1}

    with D_vv = (1 + dt (0.08 v'_{t-1} + 5)) (1 - z_{t-1}) - dt d psi_{t-1}, D_vu = -dt,
    D_uv = dt a b (1 - z_{t-1}) + (1 - dt a) d psi_{t-1}, D_uu = 1 - dt a. Readout: exact.
    ``variant``: keyword arguments for :func:`jacobians` (wrong conventions, for tests)."""
    c = _constants(params)
    W_out = _weights(weights)[2]
    X = np.asarray(X, dtype=np.float64)
    ka, dt = c["kappa"], c["dt"]
    fw = forward(X, params, weights)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    Bfb = _feedback(feedback, W_out)
    D = jacobians(fw, params, **(variant or {}))["D"]
    z = fw["z"]
    g = {name: eligibility_gradients(S, fw["psi"], err @ Bfb.T, D, dt, ka) for name, S in (("W_in", X), ("W_rec", z))}
    g_out, g_b = _readout_gradients(err, z, ka)
    return _package(g["W_in"], g["W_rec"], g_out, g_b, E)


def eligibility_gradients(S, psi, L, D, dt, kappa):
    """Per-instance gradients (B, N_h, N_pre) of the weights carrying presynaptic signals ``S``
    (T, B, N_pre) from the learning signals ``L`` (T, B, N_h) and the Jacobians ``D`` of
    :func:`jacobians` (entry t is D_{t+1})."""
    T, B, n_pre = S.shape
    n_h = psi.shape[2]
    eps_v = np.zeros((B, n_h, n_pre))
    eps_u = np.zeros((B, n_h, n_pre))
    ebar = np.zeros((B, n_h, n_pre))
    grad = np.zeros((B, n_h, n_pre))
    for t in range(T):
        if t > 0:
            Dt = {k: val[t - 1][:, :, None] for k, val in D.items()}
            eps_v, eps_u = (Dt["vv"] * eps_v + Dt["vu"] * eps_u + dt * S[t - 1][:, None, :],
                            Dt["uv"] * eps_v + Dt["uu"] * eps_u)
        grad += L[t][:, :, None] * (1.0 - kappa) * ebar
        ebar = kappa * ebar + psi[t][:, :, None] * eps_v  # e_t = psi_t eps_v_t
    return grad


def bptt_gradients(X, targets, mask, params, weights, loss="xent"):
    """Exact gradient of E (same conventions) by a plain reverse loop over the adjoints
    gv_t = dE/dv_t, gu_t = dE/du_t (pre-reset; gv_T = gu_T = 0, dy_T = 0)::

        dy_t  = err_t + kappa dy_{t+1}
        gv'_t = J_vv,t gv_{t+1} + J_uv gu_{t+1}        (adjoints of the post-reset state)
        gu'_t = J_vu gv_{t+1} + J_uu gu_{t+1}
        gz_t  = (1 - kappa) W_out^T dy_{t+1} + dt W_rec^T gv_{t+1} + d gu'_t
        gv_t  = (1 - z_t) gv'_t + psi_t gz_t,     gu_t = gu'_t
        dW_in  = sum_t dt gv_t x_{t-1}^T,   dW_rec = sum_t dt gv_t z_{t-1}^T
        dW_out = sum_t (1 - kappa) dy_t z_{t-1}^T,   db = sum_t (1 - kappa) dy_t
    """
    c = _constants(params)
    W_in, W_rec, W_out, _ = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h, K = W_in.shape[0], W_out.shape[0]
    ka, dt, d = c["kappa"], c["dt"], c["d"]
    fw = forward(X, params, weights)
    E, err = loss_and_error(fw["y"], targets, mask, loss)
    J = jacobians(fw, params)["J"]
    z, psi = fw["z"], fw["psi"]
    g_in, g_rec = np.zeros((B, n_h, n_in)), np.zeros((B, n_h, n_h))
    g_out, g_b = np.zeros((B, K, n_h)), np.zeros((B, K))
    dy_next, gv_next, gu_next = np.zeros((B, K)), np.zeros((B, n_h)), np.zeros((B, n_h))
    for t in range(T - 1, -1, -1):
        gvr = J["vv"][t] * gv_next + J["uv"][t] * gu_next
        gur = J["vu"][t] * gv_next + J["uu"][t] * gu_next
        gz = (1.0 - ka) * dy_next @ W_out + dt * gv_next @ W_rec + d * gur
        gv = (1.0 - z[t]) * gvr + psi[t] * gz
        gu = gur
        dy = err[t] + ka * dy_next
        x_prev = X[t - 1] if t > 0 else np.zeros((B, n_in))
        z_prev = z[t - 1] if t > 0 else np.zeros((B, n_h))
        g_in += dt * gv[:, :, None] * x_prev[:, None, :]
        g_rec += dt * gv[:, :, None] * z_prev[:, None, :]
        g_out += (1.0 - ka) * dy[:, :, None] * z_prev[:, None, :]
        g_b += (1.0 - ka) * dy
        dy_next, gv_next, gu_next = dy, gv, gu
    return _package(g_in, g_rec, g_out, g_b, E)


def straight_through_loss(X, targets, mask, params, weights, frozen, loss="xent"):
    """Total loss of a smooth stand-in for the network (``frozen = forward(X, params, base
    weights)``): every step the spike is z_t = z*_t + S(g_t) - S(g*_t) (S' = psi), v's reset
    holds the spike at z*_t (v' = c where z*_t, else v_t: the detached reset) and u' = u + d z_t
    (through the spike); z_t drives the recurrent input and the readout. At the base weights this
    is the network exactly, and its derivative is the surrogate gradient BPTT computes, so
    central differences of it check BPTT without any hand-derived Jacobian."""
    c = _constants(params)
    W_in, W_rec, W_out, b = _weights(weights)
    X = np.asarray(X, dtype=np.float64)
    T, B, n_in = X.shape
    n_h = W_in.shape[0]
    x_prev, z_prev = np.zeros((B, n_in)), np.zeros((B, n_h))
    vr, ur = np.full((B, n_h), c["v_init"]), np.full((B, n_h), c["u_init"])
    y = np.zeros((B, W_out.shape[0]))
    ys = np.zeros((T,) + y.shape)
    for t in range(T):
        v, u = _euler(vr, ur, x_prev @ W_in.T + z_prev @ W_rec.T, c)
        held = frozen["z"][t]
        z = held + _surrogate_antiderivative(v - c["v_peak"], c) - _surrogate_antiderivative(
            frozen["v"][t] - c["v_peak"], c)
        vr = np.where(held > 0, np.broadcast_to(c["c"], v.shape), v)
        ur = u + c["d"] * z
        y = c["kappa"] * y + (1.0 - c["kappa"]) * (z_prev @ W_out.T + b)
        ys[t] = y
        x_prev, z_prev = X[t], z
    E, _ = loss_and_error(ys, targets, mask, loss)
    return float(E.sum())
