"""STDP with weights shared across the batch: per-instance changes reduced by sum/mean/max."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.network import Network
from tests.conftest import BACKENDS_SLOW_EMU

PRE = ([2.0, 10.0, 11.0, 30.0, 31.5, 45.0], [0, 1, 3, 2, 4, 0])
POST = ([5.0, 12.0, 29.0, 40.0], [0, 2, 1, 2])
STDP_PARAMS = dict(a_plus=0.01, a_minus=0.012, w_min=-10.0, w_max=10.0)


def _run(reduce, batch_size, pre=PRE, post=POST, batched=False, backend="cpu"):
    net = Network(f"stdp_{reduce}_{batch_size}", dt=0.1, batch_size=batch_size)
    net.add_population("pre", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_population("post", 3, m.SPIKE_SOURCE_ARRAY)
    net.add_projection("syn", "pre", "post", m.stdp(reduce, batched=batched), m.EXP_CURR, "dense",
                       wu_params=STDP_PARAMS, wu_init={"w": 0.5})
    sim = net.build(backend=backend)
    sim.set_spike_times("pre", pre)
    sim.set_spike_times("post", post)
    sim.run(duration=60.0)
    return sim.get("syn", "w")


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_stdp_changes_weights_with_the_right_signs(backend):
    w = _run("mean", 1, backend=backend).reshape(5, 3)
    dw = w - 0.5
    # pre 0 at 2 ms, post 0 at 5 ms: potentiation; post 1 at 29 then pre 2 at 30: depression
    assert dw[0, 0] > 0
    assert dw[2, 1] < 0
    assert np.any(dw != 0)


@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_identical_instances_give_exactly_the_batch_1_result(reduce, backend):
    single = _run(reduce, 1, backend=backend)
    batched = _run(reduce, 4, backend=backend)
    np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_sum_gives_batch_size_times_the_update(backend):
    single = _run("sum", 1, backend=backend) - 0.5
    batched = _run("sum", 4, backend=backend) - 0.5
    np.testing.assert_allclose(batched, 4 * single, rtol=1e-5, atol=1e-6)
    assert np.abs(single).max() > 1e-3


def test_mean_of_different_instances_is_the_mean_of_their_updates():
    inputs = [PRE, ([1.0, 20.0, 28.0], [1, 2, 4]), ([], []), ([4.0, 4.0, 39.0], [0, 1, 2])]
    per_instance = [_run("mean", 1, pre=x) - 0.5 for x in inputs]
    net = Network("stdp_mean_mixed", dt=0.1, batch_size=4)
    net.add_population("pre", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_population("post", 3, m.SPIKE_SOURCE_ARRAY)
    net.add_projection("syn", "pre", "post", m.STDP, m.EXP_CURR, "dense", wu_params=STDP_PARAMS,
                       wu_init={"w": 0.5})
    sim = net.build()
    sim.set_spike_times("pre", inputs)
    sim.set_spike_times("post", POST)
    sim.run(duration=60.0)
    np.testing.assert_allclose(sim.get("syn", "w") - 0.5, np.mean(per_instance, axis=0), rtol=1e-5, atol=1e-6)


def test_batched_weights_learn_independently():
    inputs = [PRE, ([1.0, 20.0], [1, 2])]
    net = Network("stdp_batched", dt=0.1, batch_size=2)
    net.add_population("pre", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_population("post", 3, m.SPIKE_SOURCE_ARRAY)
    net.add_projection("syn", "pre", "post", m.stdp(batched=True), m.EXP_CURR, "dense",
                       wu_params=STDP_PARAMS, wu_init={"w": 0.5})
    sim = net.build()
    sim.set_spike_times("pre", inputs)
    sim.set_spike_times("post", POST)
    sim.run(duration=60.0)
    w = sim.get("syn", "w")
    assert w.shape == (2, 15)
    np.testing.assert_array_equal(w[0], _run("mean", 1, pre=inputs[0]))
    np.testing.assert_allclose(w[1], _run("mean", 1, pre=inputs[1]), rtol=1e-6)


def test_sparse_stdp_matches_dense():
    from spikeforge.network import FromList

    pre_ids, post_ids = np.meshgrid(np.arange(5), np.arange(3), indexing="ij")
    net = Network("stdp_sparse", dt=0.1)
    net.add_population("pre", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_population("post", 3, m.SPIKE_SOURCE_ARRAY)
    net.add_projection("syn", "pre", "post", m.STDP, m.EXP_CURR, FromList(tuple(pre_ids.ravel()),
                       tuple(post_ids.ravel())), wu_params=STDP_PARAMS, wu_init={"w": 0.5})
    sim = net.build()
    sim.set_spike_times("pre", PRE)
    sim.set_spike_times("post", POST)
    sim.run(duration=60.0)
    np.testing.assert_array_equal(sim.get("syn", "w"), _run("mean", 1))


def test_shared_weight_written_without_reduction_is_an_error():
    from spikeforge.errors import ModelError
    from spikeforge.models import Var, WeightUpdateModel

    bad = WeightUpdateModel("bad_rule", vars=[Var("w", batched=False)], on_pre="post_input += w; w += 1")
    net = Network("bad", dt=0.1)
    net.add_population("a", 2, m.SPIKE_SOURCE_ARRAY)
    net.add_population("b", 2, m.LIF)
    net.add_projection("p", "a", "b", bad, m.EXP_CURR)
    with pytest.raises(ModelError, match="reduce"):
        net.build()


def test_recurrent_stdp_projection_builds_and_learns():
    """Pre and post traces of a projection from a population to itself live in one kernel."""
    net = Network("stdp_recurrent", dt=0.1, seed=2)
    net.add_population("a", 20, m.LIF, params=dict(v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=2.0),
                       init={"v": {"uniform": [-60.0, -50.0]}})
    net.add_projection("p", "a", "a", m.STDP, m.EXP_CURR, "dense", wu_init={"w": 0.5})
    sim = net.build()
    sim.run(duration=200.0)
    w = sim.get("p", "w")
    assert np.any(w != 0.5)
