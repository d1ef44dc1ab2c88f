"""Self-checks of the plain-numpy e-prop / BPTT reference in tests/eprop_reference.py."""

import numpy as np
import pytest

from tests.eprop_reference import (
    adam_step,
    bptt_gradients,
    eprop_gradients,
    forward,
    loss_and_error,
    rtrl_gradients,
    straight_through_loss,
)

N_IN, N_H, K, T, B = 5, 4, 3, 40, 3
KEYS = ("W_in", "W_rec", "W_out", "b")

LIF = dict(dt=1.0, tau_m=10.0, tau_a=None, tau_out=15.0, v_th=0.6, beta=0.0, gamma=0.3)
ALIF = dict(dt=1.0, tau_m=10.0, tau_a=30.0, tau_out=15.0, v_th=0.6, beta=0.4, gamma=0.3)
# resets to a constant: the built-in LIF's shape (rest and reset at -65, threshold 0.6 above),
# and ALIF with v = 0 instead of v -= v_th
LIF_CONST = dict(LIF, reset="constant", v_rest=-65.0, v_reset=-65.0, v_th=-64.4, scale=-64.4 - -65.0)
ALIF_CONST = dict(ALIF, reset="constant", v_reset=0.0)
ALL = [LIF, ALIF, LIF_CONST, ALIF_CONST]
ALL_IDS = ["LIF", "ALIF", "LIF_const", "ALIF_const"]


def make_problem(seed, recurrent=False, loss="xent", n_batch=B):
    rng = np.random.default_rng(seed)
    X = (rng.random((T, n_batch, N_IN)) < 0.4).astype(np.float64)
    weights = dict(
        W_in=rng.uniform(0.0, 1.5, (N_H, N_IN)),
        W_rec=rng.normal(0.0, 0.6, (N_H, N_H)) if recurrent else None,
        W_out=rng.normal(0.0, 1.0, (K, N_H)),
        b=rng.normal(0.0, 0.3, K),
    )
    mask = np.zeros(T)
    mask[T // 2:] = 1.0
    if loss == "xent":
        targets = rng.integers(0, K, n_batch)
    else:
        targets = rng.normal(0.0, 0.5, (T, n_batch, K))
    return X, targets, mask, weights


def assert_spiking(X, params, weights):
    z = forward(X, params, weights)["z"]
    per_neuron = z.sum(axis=(0, 1))
    assert np.all(per_neuron > 0), per_neuron  # every hidden neuron spikes
    assert z.mean() < 0.5  # ... but is not saturated


def assert_same_direction_and_norm(g, ref, tol=1e-12):
    """cos(g, ref) = 1 and |g| = |ref|, to ``tol``."""
    g, ref = np.ravel(g), np.ravel(ref)
    cos = np.dot(g, ref) / (np.linalg.norm(g) * np.linalg.norm(ref))
    assert abs(1.0 - cos) < tol, f"cosine {cos!r}, norm ratio {np.linalg.norm(g) / np.linalg.norm(ref)!r}"
    assert abs(np.linalg.norm(g) / np.linalg.norm(ref) - 1.0) < tol, np.linalg.norm(g) / np.linalg.norm(ref)


def assert_grads_close(g1, g2, keys=KEYS, atol=1e-10, rtol=1e-10):
    for k in keys:
        np.testing.assert_allclose(g1[k], g2[k], atol=atol, rtol=rtol, err_msg=k)
        np.testing.assert_allclose(g1["per_instance"][k], g2["per_instance"][k], atol=atol, rtol=rtol, err_msg=k)


# ----------------------------------------------------------------------------- forward pass


def test_forward_delays_threshold_and_reset():
    params = dict(ALIF)
    X = np.zeros((6, 1, 1))
    X[0, 0, 0] = 1.0
    weights = dict(W_in=np.array([[100.0]]), W_out=np.array([[2.0]]), b=np.array([0.5]))
    fw = forward(X, params, weights)
    al = np.exp(-1.0 / 10.0)
    rho = np.exp(-1.0 / 30.0)
    ka = np.exp(-1.0 / 15.0)
    # step 0: nothing has arrived yet (one-step delay); readout sees only the bias
    assert fw["I"][0, 0, 0] == 0.0 and fw["z"][0, 0, 0] == 0.0
    assert fw["y"][0, 0, 0] == pytest.approx((1 - ka) * 0.5)
    # step 1: the input spike of step 0 arrives
    v1 = (1 - al) * 100.0
    assert fw["v"][1, 0, 0] == pytest.approx(v1)
    assert fw["z"][1, 0, 0] == 1.0
    assert fw["v_reset"][1, 0, 0] == pytest.approx(v1 - 0.6)
    assert fw["a_reset"][1, 0, 0] == pytest.approx(1.0)
    # step 2: adaptation decays from a' = 1; the readout sees z_1
    assert fw["a"][2, 0, 0] == pytest.approx(rho)
    assert fw["A"][2, 0, 0] == pytest.approx(0.6 + 0.4 * rho)
    assert fw["y"][2, 0, 0] == pytest.approx(ka * fw["y"][1, 0, 0] + (1 - ka) * (2.0 + 0.5))
    # psi: triangular, peak gamma / v_th at v == A
    v, A = fw["v"][2, 0, 0], fw["A"][2, 0, 0]
    assert fw["psi"][2, 0, 0] == pytest.approx(0.3 / 0.6 * max(0.0, 1 - abs(v - A) / 0.6))


def test_forward_strict_threshold():
    params = dict(LIF, tau_m=1e-300)  # alpha = 0: v_t = I_t exactly
    X = np.zeros((3, 1, 1))
    X[0, 0, 0] = 1.0
    fw = forward(X, params, dict(W_in=np.array([[0.6]]), W_out=np.zeros((1, 1))))
    assert fw["v"][1, 0, 0] == 0.6 and fw["z"][1, 0, 0] == 0.0  # v == v_th does not spike
    assert fw["psi"][1, 0, 0] == pytest.approx(0.3 / 0.6)


def test_w_rec_diagonal_forced_zero():
    X, targets, mask, w = make_problem(3, recurrent=True)
    w2 = dict(w, W_rec=w["W_rec"] + 5.0 * np.eye(N_H))
    np.testing.assert_array_equal(forward(X, LIF, w)["z"], forward(X, LIF, w2)["z"])
    g = bptt_gradients(X, targets, mask, LIF, w2)
    assert np.all(np.diag(g["W_rec"]) == 0.0)


# ----------------------------------------------------------------------------- 1. exactness without recurrence


@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("loss", ["xent", "mse"])
@pytest.mark.parametrize("seed", [0, 1])
def test_eprop_equals_bptt_without_recurrence(params, loss, seed):
    X, targets, mask, w = make_problem(seed, recurrent=False, loss=loss)
    assert_spiking(X, params, w)
    ge = eprop_gradients(X, targets, mask, params, w, loss=loss)
    gb = bptt_gradients(X, targets, mask, params, w, loss=loss)
    # at W_rec = 0 the only dropped e-prop terms (paths through W_rec) vanish, so W_rec matches too
    assert_grads_close(ge, gb)
    assert_same_direction_and_norm(ge["W_in"], gb["W_in"])
    assert ge["loss"] == gb["loss"]
    assert np.abs(ge["W_in"]).max() > 1e-3  # non-trivial


@pytest.mark.parametrize("params", [LIF, ALIF], ids=["LIF", "ALIF"])
def test_eprop_equals_bptt_without_recurrence_with_reg(params):
    X, targets, mask, w = make_problem(4, recurrent=False, loss="mse")
    reg = (0.7, 20.0)
    ge = eprop_gradients(X, targets, mask, params, w, loss="mse", reg=reg)
    gb = bptt_gradients(X, targets, mask, params, w, loss="mse", reg=reg)
    assert_grads_close(ge, gb)
    g0 = eprop_gradients(X, targets, mask, params, w, loss="mse")
    assert np.abs(ge["W_in"] - g0["W_in"]).max() > 1e-6  # the regulariser does something
    np.testing.assert_array_equal(ge["W_out"], g0["W_out"])
    assert ge["loss"] == g0["loss"]


def test_alif_adaptation_gradient_is_not_trivial():
    """The eps_a path matters: dropping it (or the rho factor on psi) breaks exactness for ALIF."""
    X, targets, mask, w = make_problem(0, recurrent=False)
    gb = bptt_gradients(X, targets, mask, ALIF, w)
    alt = _eprop_w_in_variant(X, targets, mask, ALIF, w, rho_on_psi=False)
    assert np.abs(alt - gb["W_in"]).max() > 1e-6
    ok = _eprop_w_in_variant(X, targets, mask, ALIF, w, rho_on_psi=True)
    np.testing.assert_allclose(ok, gb["W_in"], atol=1e-10, rtol=1e-10)


def test_bias_gradient_uses_filtered_unit_trace():
    """b enters y_t without delay, so g_b = sum_t err_t (1 - kappa^(t+1)), not sum_t err_t (1 - kappa)."""
    X, targets, mask, w = make_problem(2, loss="mse")
    mask = np.ones(T)  # include the early steps, where the two forms differ most
    fw = forward(X, LIF, w)
    _, err = loss_and_error(fw["y"], targets, mask, "mse")
    ka = np.exp(-1.0 / LIF["tau_out"])
    exact = np.einsum("tbk,t->k", err, 1.0 - ka ** (np.arange(T) + 1.0))
    g = eprop_gradients(X, targets, mask, LIF, w, loss="mse")
    np.testing.assert_allclose(g["b"], exact, rtol=1e-12)
    np.testing.assert_allclose(bptt_gradients(X, targets, mask, LIF, w, loss="mse")["b"], exact, rtol=1e-12)
    assert np.abs(err.sum(axis=(0, 1)) * (1.0 - ka) - exact).max() > 1e-3


def _eprop_w_in_variant(X, targets, mask, params, w, rho_on_psi):
    """Independent re-statement of the W_in e-prop trace, optionally with the Bellec-paper form
    eps_a_t = psi_{t-1} eps_v_{t-1} + (rho - psi_{t-1} beta) eps_a_{t-1} (which belongs to the
    convention a_{t+1} = rho a_t + z_t, not to this module's a_t = rho (a_{t-1} + z_{t-1}))."""
    fw = forward(X, params, w)
    _, err = loss_and_error(fw["y"], targets, mask, "xent")
    al, rho, ka = np.exp(-1 / params["tau_m"]), np.exp(-1 / params["tau_a"]), np.exp(-1 / params["tau_out"])
    beta = params["beta"]
    n_b = X.shape[1]
    eps_v = np.zeros((n_b, 1, N_IN))
    eps_a = np.zeros((n_b, N_H, N_IN))
    ebar = np.zeros((n_b, N_H, N_IN))
    g = np.zeros((N_H, N_IN))
    for t in range(T):
        if t > 0:
            p = fw["psi"][t - 1][:, :, None]
            if rho_on_psi:
                eps_a = rho * p * eps_v + rho * (1 - beta * p) * eps_a
            else:
                eps_a = p * eps_v + (rho - p * beta) * eps_a
            eps_v = al * eps_v + (1 - al) * X[t - 1][:, None, :]
        e = fw["psi"][t][:, :, None] * (eps_v - beta * eps_a)
        L = err[t] @ w["W_out"]
        g += np.einsum("bj,bji->ji", L, (1 - ka) * ebar)
        ebar = ka * ebar + e
    return g


# ----------------------------------------------------------------------------- 2. with recurrence


@pytest.mark.parametrize("params", [LIF, ALIF], ids=["LIF", "ALIF"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_with_recurrence(params, loss):
    X, targets, mask, w = make_problem(5, recurrent=True, loss=loss)
    assert_spiking(X, params, w)
    ge = eprop_gradients(X, targets, mask, params, w, loss=loss)
    gb = bptt_gradients(X, targets, mask, params, w, loss=loss)
    # readout gradients depend only on the (shared) forward pass: exact in e-prop
    assert_grads_close(ge, gb, keys=("W_out", "b"))
    # hidden gradients: e-prop is an approximation (drops paths through W_rec)
    assert np.abs(ge["W_in"] - gb["W_in"]).max() > 1e-6
    assert np.abs(ge["W_rec"] - gb["W_rec"]).max() > 1e-6
    # ... but correlated with the exact gradient
    cos = np.dot(ge["W_in"].ravel(), gb["W_in"].ravel()) / (np.linalg.norm(ge["W_in"]) * np.linalg.norm(gb["W_in"]))
    assert cos > 0.0


@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("reg", [None, (0.5, 10.0)])
def test_bptt_equals_rtrl_with_recurrence(params, reg):
    """Reverse mode and forward mode (two independent derivations) agree on every path."""
    X, targets, mask, w = make_problem(6, recurrent=True, loss="mse")
    assert_spiking(X, params, w)
    gb = bptt_gradients(X, targets, mask, params, w, loss="mse", reg=reg)
    gr = rtrl_gradients(X, targets, mask, params, w, loss="mse", reg=reg)
    assert_grads_close(gb, gr)


def test_feedback_matrix():
    X, targets, mask, w = make_problem(7, recurrent=True)
    g_sym = eprop_gradients(X, targets, mask, ALIF, w, feedback="symmetric")
    g_explicit = eprop_gradients(X, targets, mask, ALIF, w, feedback=w["W_out"].T.copy())
    assert_grads_close(g_sym, g_explicit, atol=0, rtol=0)
    B_rand = np.random.default_rng(0).normal(size=(N_H, K))
    g_rand = eprop_gradients(X, targets, mask, ALIF, w, feedback=B_rand)
    assert_grads_close(g_sym, g_rand, keys=("W_out", "b"), atol=0, rtol=0)
    assert np.abs(g_rand["W_in"] - g_sym["W_in"]).max() > 1e-6


# ----------------------------------------------------------------------------- 3. finite differences


def _total_loss(X, targets, mask, params, w, loss):
    E, _ = loss_and_error(forward(X, params, w)["y"], targets, mask, loss)
    return E.sum()


@pytest.mark.parametrize("loss", ["xent", "mse"])
@pytest.mark.parametrize("params", [LIF, ALIF], ids=["LIF", "ALIF"])
def test_bptt_readout_matches_finite_differences(loss, params):
    X, targets, mask, w = make_problem(8, recurrent=True, loss=loss)
    g = bptt_gradients(X, targets, mask, params, w, loss=loss)
    h = 1e-6
    for key in ("W_out", "b"):
        fd = np.zeros_like(w[key])
        for idx in np.ndindex(w[key].shape):
            wp = {k: (None if v is None else np.array(v, copy=True)) for k, v in w.items()}
            wm = {k: (None if v is None else np.array(v, copy=True)) for k, v in w.items()}
            wp[key][idx] += h
            wm[key][idx] -= h
            fd[idx] = (_total_loss(X, targets, mask, params, wp, loss)
                       - _total_loss(X, targets, mask, params, wm, loss)) / (2 * h)
        np.testing.assert_allclose(g[key], fd, atol=1e-6, rtol=1e-6, err_msg=key)


def _small_problem(seed, n_h, recurrent, loss="mse", n_in=4, k=2, steps=30, n_batch=2):
    """1-3 hidden neurons: few enough weights to take finite differences of all of them."""
    rng = np.random.default_rng(seed)
    X = (rng.random((steps, n_batch, n_in)) < 0.5).astype(np.float64)
    weights = dict(W_in=rng.uniform(0.2, 1.2, (n_h, n_in)),
                   W_rec=rng.normal(0.0, 0.5, (n_h, n_h)) if recurrent else None,
                   W_out=rng.normal(0.0, 1.0, (k, n_h)), b=rng.normal(0.0, 0.3, k))
    mask = np.zeros(steps)
    mask[steps // 3:] = 1.0
    targets = rng.integers(0, k, n_batch) if loss == "xent" else rng.normal(0.0, 0.5, (steps, n_batch, k))
    return X, targets, mask, weights


def surrogate_finite_differences(X, targets, mask, params, w, loss, keys=("W_in", "W_rec"), h=1e-6):
    """Central differences of the straight-through loss (the surrogate gradient, detached reset)."""
    frozen = forward(X, params, w)
    out = {}
    for key in keys:
        fd = np.zeros_like(w[key])
        for idx in np.ndindex(fd.shape):
            if key == "W_rec" and idx[0] == idx[1]:
                continue  # no self-connections
            wp = {k: (None if v is None else np.array(v, copy=True)) for k, v in w.items()}
            wm = {k: (None if v is None else np.array(v, copy=True)) for k, v in w.items()}
            wp[key][idx] += h
            wm[key][idx] -= h
            fd[idx] = (straight_through_loss(X, targets, mask, params, wp, frozen, loss)
                       - straight_through_loss(X, targets, mask, params, wm, frozen, loss)) / (2 * h)
        out[key] = fd
    return out


@pytest.mark.parametrize("params", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("n_h, recurrent", [(1, False), (3, False), (3, True)],
                         ids=["1-feedforward", "3-feedforward", "3-recurrent"])
def test_surrogate_gradient_equals_finite_differences(params, n_h, recurrent):
    """BPTT (and, without recurrence, e-prop) against central differences of a smooth stand-in
    whose derivative is the surrogate gradient with a detached reset, on 1 and 3 hidden neurons.
    The neurons spike, so the reset map (1 or 1 - z) enters every path from the past."""
    X, targets, mask, w = _small_problem(13 + n_h, n_h, recurrent)
    if recurrent:
        w["W_rec"][np.diag_indices(n_h)] = 0.0
    fw = forward(X, params, w)
    assert fw["z"].sum(axis=(0, 1)).min() >= 2 and fw["z"].mean() < 0.5
    E, _ = loss_and_error(fw["y"], targets, mask, "mse")
    assert straight_through_loss(X, targets, mask, params, w, fw, "mse") == pytest.approx(E.sum(), rel=1e-14)
    keys = ("W_in", "W_rec") if recurrent else ("W_in",)
    fd = surrogate_finite_differences(X, targets, mask, params, w, "mse", keys)
    gb = bptt_gradients(X, targets, mask, params, w, loss="mse")
    for key in keys:
        scale = np.abs(fd[key]).max()
        assert scale > 1e-3
        np.testing.assert_allclose(gb[key], fd[key], rtol=1e-6, atol=1e-7 * scale, err_msg=key)
    if not recurrent:
        ge = eprop_gradients(X, targets, mask, params, w, loss="mse")
        np.testing.assert_allclose(ge["W_in"], fd["W_in"], rtol=1e-6, atol=1e-7 * np.abs(fd["W_in"]).max())


def test_integer_labels_equal_onehot():
    X, targets, mask, w = make_problem(9)
    onehot = np.broadcast_to(np.eye(K)[targets][None], (T, B, K))
    g1 = eprop_gradients(X, targets, mask, ALIF, w)
    g2 = eprop_gradients(X, onehot, mask, ALIF, w)
    assert_grads_close(g1, g2, atol=0, rtol=0)
    g3 = eprop_gradients(X, np.broadcast_to(targets[None], (T, B)), mask, ALIF, w)
    assert_grads_close(g1, g3, atol=0, rtol=0)


# ----------------------------------------------------------------------------- 4. batch


@pytest.mark.parametrize("fn", [eprop_gradients, bptt_gradients])
def test_batch_sums_and_copies(fn):
    X, targets, mask, w = make_problem(10, recurrent=True, loss="mse")
    g = fn(X, targets, mask, ALIF, w, loss="mse")
    for k in KEYS:
        np.testing.assert_allclose(g["per_instance"][k].sum(0), g[k], rtol=1e-14, atol=1e-14)
        assert g["per_instance"][k].shape[0] == B
    assert g["loss"] == pytest.approx(g["per_instance"]["loss"].sum())
    # B copies of instance 1 give B times its single-sample gradient
    X1, t1 = X[:, 1:2], targets[:, 1:2]
    g1 = fn(X1, t1, mask, ALIF, w, loss="mse")
    Xc, tc = np.repeat(X1, B, axis=1), np.repeat(t1, B, axis=1)
    gc = fn(Xc, tc, mask, ALIF, w, loss="mse")
    for k in KEYS:
        np.testing.assert_allclose(gc[k], B * g1[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g1[k], g["per_instance"][k][1], rtol=1e-12, atol=1e-14)
    assert gc["loss"] == pytest.approx(B * g1["loss"])


# ----------------------------------------------------------------------------- 5. Adam


def test_adam_step_hand_computed():
    w = np.array([1.0, -2.0])
    g1 = np.array([0.5, -1.0])
    m, v = np.zeros(2), np.zeros(2)
    w1, m1, v1 = adam_step(w, g1, m, v, 1, lr=0.1)
    # t = 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2 -> step = lr * g / (|g| + eps)
    np.testing.assert_allclose(m1, [0.05, -0.1])
    np.testing.assert_allclose(v1, [0.00025, 0.001])
    np.testing.assert_allclose(w1, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8)])
    assert np.all(m == 0) and np.all(v == 0)  # inputs untouched
    # t = 2 with g = [0.1, 0.2]
    g2 = np.array([0.1, 0.2])
    w2, m2, v2 = adam_step(w1, g2, m1, v1, 2, lr=0.1)
    m_ref = np.array([0.9 * 0.05 + 0.1 * 0.1, 0.9 * -0.1 + 0.1 * 0.2])  # [0.055, -0.07]
    v_ref = np.array([0.999 * 0.00025 + 0.001 * 0.01, 0.999 * 0.001 + 0.001 * 0.04])  # [0.00025975, 0.001039]
    np.testing.assert_allclose(m2, [0.055, -0.07])
    np.testing.assert_allclose(v2, [0.00025975, 0.001039])
    m_hat, v_hat = m_ref / (1 - 0.81), v_ref / (1 - 0.998001)
    np.testing.assert_allclose(w2, w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-15)
    # one value written out fully: w2[0]
    expected0 = w1[0] - 0.1 * (0.055 / 0.19) / (np.sqrt(0.00025975 / 0.001999) + 1e-8)
    assert w2[0] == pytest.approx(expected0, rel=1e-12)
