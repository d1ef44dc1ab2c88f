"""Refractoriness follows Brian2's convention, to the step.

A neuron that spiked at step k is refractory at step j while j - k < R, where R, the period
in steps, is t_ref / dt rounded down (a period within dt/1000 below a multiple of dt counts
as that multiple). While refractory, ODEs flagged ``(unless refractory)`` are not integrated
and the threshold is not tested; the step of the spike is the first step of the period.

The expected spike steps are computed here from that rule written directly (steps since the
last spike, not a counter) and the closed-form LIF solution on the dt grid: an independent
statement of the convention, exact to the step.
"""

import math

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.network import Network

DT = 0.1
TAU, V_TH, AMP = 10.0, 1.0, 2.0  # v_rest = v_reset = 0, r_m = 1: v_inf = 2, threshold at v > 1

# 2.0 - 1e-5 is within dt/1000 of 20 steps; 2.05 and 0.25 fall between steps (rounded down);
# 0.15 and 0.1 are one step: the spike's own, so the membrane is never held.
T_REFS = [0.0, 0.1, 0.15, 0.25, 1.0, 1.9, 2.0 - 1e-5, 2.0, 2.05, 5.0]


def refractory_steps(t_ref: float, dt: float = DT) -> int:
    return int(t_ref / dt + 1e-3)


def brian2_convention_spike_steps(t_ref: float, n_steps: int) -> list[int]:
    """Spike steps of the driven LIF under Brian2's rule, written as Brian2 states it."""
    decay = math.exp(-DT / TAU)
    v_inf = AMP
    v, last_spike, spikes = 0.0, None, []
    for step in range(n_steps):
        not_refractory = last_spike is None or step - last_spike >= refractory_steps(t_ref)
        if not_refractory:
            v = v_inf + (v - v_inf) * decay
        if not_refractory and v > V_TH:
            spikes.append(step)
            last_spike = step
            v = 0.0
    return spikes


def _network(precision="double"):
    net = Network("refractory_grid", dt=DT, precision=precision)
    for k, t_ref in enumerate(T_REFS):
        params = dict(tau_m=TAU, v_rest=0.0, v_reset=0.0, v_th=V_TH, r_m=1.0, t_ref=t_ref)
        net.add_population(f"n{k}", 1, m.LIF, params=params, init={"v": 0.0}, record_spikes=True)
        net.add_current_source(f"drive{k}", f"n{k}", m.DC, params={"amp": AMP})
    net.record_var("n7", "v")
    return net


def test_the_reference_gives_brian2s_interval_for_2ms():
    # 70 integrated steps reach threshold from 0 (2 (1 - e^-0.7) > 1 > 2 (1 - e^-0.69)); with
    # t_ref = 2 ms the membrane is held for 19 steps after the spike's: an ISI of 89 steps
    assert refractory_steps(2.0) == 20 and refractory_steps(2.05) == 20 and refractory_steps(2.0 - 1e-5) == 20
    assert refractory_steps(1.9) == 19 and refractory_steps(0.15) == 1 and refractory_steps(0.0) == 0
    spikes = brian2_convention_spike_steps(2.0, 1000)
    assert spikes[0] == 69 and set(np.diff(spikes)) == {89}
    assert set(np.diff(brian2_convention_spike_steps(0.0, 1000))) == {70}


@pytest.mark.parametrize("precision", ["double", "float"])
def test_spike_steps_follow_brian2s_convention_exactly(precision):
    n_steps = 1000
    sim = _network(precision).build()
    sim.run(steps=n_steps)
    for k, t_ref in enumerate(T_REFS):
        times, _ = sim.spikes(f"n{k}")[0]
        steps = np.rint(np.asarray(times) / DT).astype(int)
        expected = brian2_convention_spike_steps(t_ref, n_steps)
        assert len(expected) >= 8
        # exact step counts: one step more or less (0.1 ms) in any interval fails
        assert steps.tolist() == expected, f"t_ref = {t_ref}"
    # the membrane sits at v_reset for the spike's step and the 19 steps after it, then integrates
    times, _ = sim.spikes("n7")[0]
    v = sim.recorded("n7", "v")[:, 0, 0]
    k = int(np.rint(times[0] / DT))
    assert np.all(v[k: k + 20] == 0.0) and v[k + 20] > 0.0


@pytest.mark.slow  # 400 steps on cuda-emu
def test_refractory_period_on_the_cuda_kernels():
    """The CUDA template uses the same generated lines: run them through cuda-emu."""
    n_steps = 400
    sim = _network().build(backend="cuda-emu")
    sim.run(steps=n_steps)
    for k, t_ref in enumerate(T_REFS):
        times, _ = sim.spikes(f"n{k}")[0]
        steps = np.rint(np.asarray(times) / DT).astype(int)
        assert steps.tolist() == brian2_convention_spike_steps(t_ref, n_steps), f"t_ref = {t_ref}"
