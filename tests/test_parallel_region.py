"""A run of a network whose batch instances share a learned weight (STDP with a batch
reduction) is one thread team: each thread keeps its instances for every step, the team meets
at the reduction and shares it out. Spikes, recordings and learned weights equal those of the
one-thread run (the per-step path) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.network import Network


def _stdp(batch: int, threads: int, reduce: str = "mean"):
    net = Network(f"stdp_region_{reduce}", dt=1.0, batch_size=batch, seed=5)
    net.add_population("inp", 600, m.POISSON, init={"rate": 20.0})
    net.add_population("out", 40, m.LIF, params=dict(tau_m=20.0, v_rest=-65.0, v_reset=-65.0, v_th=-52.0, t_ref=2.0),
                       init={"v": {"uniform": [-65.0, -55.0]}})
    net.add_projection("io", "inp", "out", m.stdp(reduce=reduce), m.EXP_CURR, "dense",
                       wu_params=dict(a_plus=0.01, a_minus=0.012, w_max=1.0), wu_init={"w": 0.3})
    net.record_spikes("out")
    net.record_var("out", "v", neurons=[0, 7], every=3)
    sim = net.build(threads=threads)
    sim.run(150.0)
    sim.run(50.0)  # a second run goes on where the first stopped
    return sim


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_one_team_gives_the_results_of_the_per_step_path(reduce):
    alone, team = _stdp(8, 1, reduce), _stdp(8, 2, reduce)
    assert sum(len(t) for t, _ in alone.spikes("out")) > 100
    for (t1, i1), (t2, i2) in zip(alone.spikes("out"), team.spikes("out")):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(alone.recorded("out", "v"), team.recorded("out", "v"))
    w1, w2 = np.asarray(alone.get("io", "w")), np.asarray(team.get("io", "w"))
    assert not np.all(w1 == 0.3)  # learning moved the shared weights
    np.testing.assert_array_equal(w1, w2)
    assert team.step == alone.step == 200


def test_the_run_loop_is_one_parallel_region_meeting_at_the_reduction():
    source = _stdp(2, 2).source
    run = source[source.index("void sf_run("):source.index("int sf_custom_update(")]
    assert run.count("#pragma omp parallel") == 1
    region = run[run.index("#pragma omp parallel"):]
    # per instance up to the reduction (a static split: a thread keeps its instances), then the reduction
    assert region.index("#pragma omp for schedule(static)") < region.index("presynaptic_update_io_instance(")
    assert region.index("presynaptic_update_io_instance(") < region.index("batch_reduce_io_w_delta_part(ctx, _step)")
    # the reduction's loop is shared out by the team that calls it
    part = source[source.index("void batch_reduce_io_w_delta_part(sf_context"):]
    assert "#pragma omp for schedule(static)" in part[:part.index("\n}\n")]
