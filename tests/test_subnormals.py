"""Subnormal numbers are flushed to zero while the generated CPU code runs.

A trial whose early inputs fall silent leaves eligibility traces that decay for hundreds of
steps, through the subnormal range (below 1.2e-38 in float) on their way to zero: there every
operation on them is slow on x86 CPUs. The generated code sets FTZ/DAZ on the threads that run
kernels, so those values become zeros. Built with SPIKEFORGE_KEEP_SUBNORMALS=1 (IEEE gradual
underflow), the same trial leaves subnormal values in the traces and the gradients, which shows
that the data reaches that range. Either way the gradients and the readout equal the double
precision numpy reference (tests/eprop_reference.py) to float rounding.
"""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training.compiler import EpropCompiler
from tests.eprop_reference import eprop_gradients, forward

N_IN, N_H, K, B, T = 5, 4, 2, 2, 570
TAU_M, TAU_OUT, V_TH, DT = 5.0, 5.0, 0.6, 1.0
TINY = np.finfo(np.float32).tiny  # the smallest normal float


def _problem():
    """Channels 0-2 spike in the first steps only, channels 3-4 in the last 100 (the readout
    window): the traces of the early channels decay for ~465 steps (alpha = exp(-1/5) per
    step: to about 1e-40, subnormal) by the time the window opens."""
    rng = np.random.default_rng(3)
    x = np.zeros((T, B, N_IN))
    x[:8, :, :3] = rng.random((8, B, 3)) < 0.6
    x[T - 100:, :, 3:] = rng.random((100, B, 2)) < 0.3
    weights = {"W_in": rng.uniform(0.6, 1.4, (N_H, N_IN)), "W_rec": None,
               "W_out": rng.normal(0.0, 1.0, (K, N_H)), "b": np.zeros(K)}
    mask = np.zeros(T)
    mask[T - 100:] = 1.0
    labels = rng.integers(0, K, B)
    return x, mask, labels, weights


def _compiled(weights):
    net = Network("subnormal_traces", dt=DT, batch_size=B, precision="float")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, m.LIF_SUBTRACTIVE, dict(tau_m=TAU_M, v_th=V_TH))
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=[0.0] * K))
    net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR, wu_init={"w": weights["W_in"].T.ravel()})
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["W_out"].T.ravel()})
    return EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out",
                                              trainable=["inp_hid", "hid_out", "out.bias"], n_steps=T)


def _subnormals(a) -> int:
    a = np.asarray(a)
    return int(np.count_nonzero((a != 0) & (np.abs(a) < TINY)))


def _run(monkeypatch, keep: bool) -> dict:
    x, mask, labels, weights = _problem()
    if keep:
        monkeypatch.setenv("SPIKEFORGE_KEEP_SUBNORMALS", "1")
    else:
        monkeypatch.delenv("SPIKEFORGE_KEEP_SUBNORMALS", raising=False)
    compiled = _compiled(weights)
    try:
        out = compiled.run_batch(x, mask, labels=labels)
        be = compiled.backend
        traces = [be.pull(a) for a in ("inp_hid_eprop_eps_v", "inp_hid_eprop_ebar")]
    finally:
        compiled.close()
    g = out["grads"]["inp_hid_w"].reshape(B, N_IN, N_H)
    out["subnormal_traces"] = sum(_subnormals(t) for t in traces)
    out["subnormal_grads"] = _subnormals(g)
    out["w_in_grad"] = g.transpose(0, 2, 1)  # [batch][post][pre], the reference's layout
    return out


def _reference():
    x, mask, labels, weights = _problem()
    params = dict(dt=DT, tau_m=TAU_M, tau_a=None, tau_out=TAU_OUT, v_th=V_TH, beta=0.0, gamma=0.3)
    ref = eprop_gradients(x, labels, mask, params, weights, loss="xent")["per_instance"]
    return forward(x, params, weights), ref


def _close_to_reference(out):
    fw, ref = _reference()
    np.testing.assert_array_equal(out["hidden_spikes"], fw["z"].sum(axis=0))
    for new, old, what in ((out["y"], fw["y"], "readout y"), (out["w_in_grad"], ref["W_in"], "gradient of inp_hid")):
        scale = np.max(np.abs(old))
        assert scale > 0, what
        np.testing.assert_allclose(new, old, rtol=2e-4, atol=2e-4 * scale, err_msg=what)
    # the early channels' gradients are below float's normal range in the reference: there the
    # flushed code has zeros, and the reference's values are far inside the tolerance
    early = np.abs(ref["W_in"][:, :, :3])
    assert 0 < early.max() < 1e-30


@pytest.mark.slow  # two builds of the same network (about 3 s each)
def test_the_data_reaches_subnormals_without_flushing(monkeypatch):
    out = _run(monkeypatch, keep=True)
    assert out["subnormal_traces"] > 0 and out["subnormal_grads"] > 0, out
    _close_to_reference(out)


def test_subnormals_are_flushed_and_results_equal_the_reference(monkeypatch):
    out = _run(monkeypatch, keep=False)
    assert out["subnormal_traces"] == 0, out["subnormal_traces"]
    assert out["subnormal_grads"] == 0, out["subnormal_grads"]
    _close_to_reference(out)
