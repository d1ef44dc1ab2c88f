"""Memory flat in the trial's length: an e-prop minibatch reads the caller's input array in
place and hands it to the kernels in parts of a fixed number of steps, so what a training run
allocates beside that array (numpy's allocations, traced) does not grow with the number of
steps, apart from its per-step outputs (the readout values, a few numbers per step)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from spikeforge import models as m
from spikeforge.models.builtins import LEAKY_READOUT, LIF_SUBTRACTIVE, ONE_STEP_CURR, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training.compiler import EpropCompiler

N_IN, N_H, K, B = 100, 8, 2, 4


def _compiled(steps: int):
    net = Network(f"eprop_memory_{steps}", dt=1.0, batch_size=B, precision="float", seed=3)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, LIF_SUBTRACTIVE, dict(tau_m=20.0, v_th=0.6))
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=20.0))
    rng = np.random.default_rng(0)
    net.add_projection("inp_hid", "inp", "hid", m.STATIC, ONE_STEP_CURR,
                       wu_init={"w": rng.normal(1.0, 0.5, N_IN * N_H)})
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(0, 0.3, N_H * K)})
    return EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out",
                                              trainable=["inp_hid", "hid_out"], n_steps=steps)


def _traced_peak(steps: int) -> tuple[int, dict]:
    compiled = _compiled(steps)
    x = (np.random.default_rng(1).random((steps, B, N_IN)) < 0.2).astype(np.float64)
    mask = np.zeros(steps)
    mask[-steps // 10:] = 1.0
    labels = np.arange(B) % K
    compiled.run_batch(x, mask, labels=labels)  # once before tracing: lazily made arrays
    tracemalloc.start()
    try:
        out = compiled.run_batch(x, mask, labels=labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out


def test_a_minibatch_allocates_no_copy_of_its_input():
    short, long_ = 300, 3000
    peaks = {}
    for steps in (short, long_):
        peaks[steps], out = _traced_peak(steps)
        assert out["hidden_spikes"].sum() > 0
    # the input grows by (3000 - 300) x 4 x 100 float64 = 8.6 MB; one float32 copy of it would
    # add 4.3 MB. What may grow: the per-step outputs (readout values, errors: a few K x B numbers
    # per step, ~0.2 MB here) and the mask
    growth = peaks[long_] - peaks[short]
    per_step_outputs = (long_ - short) * (B * K * 3 * 8 + 8)
    assert growth < per_step_outputs + 256 * 1024, (peaks, growth)
