"""The CPU engine's memory layout: state arrays in a coloured arena, and delivered input folded
into the postsynaptic variable where the postsynaptic model allows it."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.models.synapse import PostsynapticModel
from spikeforge.network import FixedProbability, Network
from spikeforge.networks import cuba_network
from spikeforge.runtime.cpu import LINE, PAGE, StateArena

# exp_curr written so that the input is not added by "x += in_syn": never folded
EXP_CURR_UNFOLDED = PostsynapticModel("exp_curr_unfolded", params={"tau_syn": 5.0}, vars={"x": 0.0},
                                      equations="dx/dt = -x / tau_syn", apply="x = x + in_syn; i_syn += x")


def test_the_arena_gives_each_array_its_own_cache_colour_and_no_overlap():
    sizes = [12800] * 20 + [0, 7, 4096 * 3 + 5]
    arena = StateArena(sizes)
    arrays = [arena.array(k, (n,), np.uint8) for k, n in enumerate(sizes)]
    colours = [(a.ctypes.data % PAGE) // LINE for a, n in zip(arrays, sizes) if n]
    assert len(set(colours)) == len(colours)  # 22 arrays, 22 different lines within a page
    assert all(a.ctypes.data % LINE == 0 for a in arrays)
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays if a.nbytes)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    assert all(not a.any() for a in arrays)


def test_a_batch_state_lies_in_the_arena_with_distinct_colours():
    """Batch 32 of CUBA: per-array state of 400 KB, which numpy alone would start on page
    boundaries (all in one L1 set)."""
    sim = cuba_network(n=1000, batch_size=32, seed=3).build(threads=1)
    state = [a for a in sim.spec.arrays if a.data is None and a.batched and a.size >= 200]
    starts = [sim.backend.peek(a.name).ctypes.data for a in state]
    assert len(state) >= 6
    assert len({(s % PAGE) // LINE for s in starts}) == len(starts)
    sim.set("exc", "v", np.full((32, 800), -55.0, dtype=np.float32))
    assert (sim.get("exc", "v") == -55.0).all()
    sim.run(60.0)  # from -55 mV towards v_rest = -49 mV: the first spikes after 36 ms
    assert sum(len(t) for t, _ in sim.spikes("exc")) > 0


def _pair(precision="double", postsynaptic=m.EXP_CURR, connectivity=None, seed=7, delay=0.0):
    net = Network("fold", dt=0.1, precision=precision, seed=seed)
    net.add_population("src", 40, m.POISSON, init={"rate": 80.0})
    net.add_population("p", 40, m.LIF, params={"v_rest": -49.0, "v_reset": -60.0, "t_ref": 2.0},
                       init={"v": -55.0}, record_spikes=True)
    net.add_projection("sp", "src", "p", m.STATIC_CONSTANT, postsynaptic, connectivity or FixedProbability(0.3),
                       wu_params={"w": 0.7}, ps_params={"tau_syn": 5.0}, delay=delay)
    net.record_var("p", "v")
    return net


def test_exp_curr_input_is_folded_into_x_and_gives_the_same_trajectories():
    folded, unfolded = _pair(), _pair(postsynaptic=EXP_CURR_UNFOLDED)
    spec = generate(folded)
    names = {a.name for a in spec.arrays}
    assert "sp_in_syn" not in names and "sp_x" in names
    assert "sp_in_syn" in {a.name for a in generate(unfolded).arrays}
    syn = next(k for k in spec.kernels if k.name == "presynaptic_update_sp")
    assert list(syn.writes) == ["sp_x"]
    a, b = folded.build(), unfolded.build()
    assert "done by the synapse kernels, which add to sp_x directly" in a.source
    a.run(200.0)
    b.run(200.0)
    # the same sums rounded in another order: equal to double precision, the same spikes
    np.testing.assert_allclose(a.recorded("p", "v"), b.recorded("p", "v"), rtol=0, atol=1e-9)
    (ta, ia), (tb, ib) = a.spikes("p")[0], b.spikes("p")[0]
    assert np.array_equal(ta, tb) and np.array_equal(ia, ib) and len(ta) > 20


@pytest.mark.parametrize("case", ["dense", "delays"])
def test_input_is_not_folded_where_the_order_or_the_buffer_matters(case):
    """Dense: the GPU kernel sums a neuron's input first. Per-synapse delays: the input waits
    in the dendritic buffer, which the neuron update reads instead of in_syn."""
    if case == "dense":
        net = _pair(connectivity="dense")
        assert "sp_in_syn" in {a.name for a in generate(net).arrays}
    else:
        net = _pair(connectivity="one_to_one", delay=[0.1 * (1 + i % 3) for i in range(40)])
        spec = generate(net)
        assert "sp_den" in {a.name for a in spec.arrays}
        assert "done by the synapse kernels" not in "\n".join(line.comment or "" for k in spec.kernels
                                                                for line in k.code)


def test_neuron_indices_are_16_bit_where_the_population_fits():
    """Rows of a 40-neuron target: uint16 indices, the same targets; a 70,000-neuron target keeps
    32 bits."""
    net = _pair()
    spec = generate(net)
    post = next(a for a in spec.arrays if a.name == "sp_post_ind")
    assert post.dtype == "uint16" and post.data.dtype == np.uint16
    np.testing.assert_array_equal(post.data, net.projections["sp"].rows.post_ind)
    sim = net.build()
    assert "uint16_t* __restrict__ const _sp_post_ind" in sim.source
    big = Network("wide", dt=0.1)
    big.add_population("src", 10, m.POISSON, init={"rate": 10.0})
    big.add_population("p", 70_000, m.LIF)
    big.add_projection("sp", "src", "p", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.001),
                       wu_params={"w": 0.1})
    assert next(a for a in generate(big).arrays if a.name == "sp_post_ind").dtype == "uint32"


def _wide_network():
    net = Network("wide", dt=0.1, seed=5)
    net.add_population("src", 300, m.POISSON, init={"rate": 300.0})
    net.add_population("p", 70_000, m.LIF, params={"v_rest": -49.0, "v_reset": -60.0}, init={"v": -55.0},
                       record_spikes=True)
    net.add_projection("sp", "src", "p", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.01),
                       wu_params={"w": 0.37}, ps_params={"tau_syn": 3.0})
    return net


def test_only_wide_targets_get_blocked_delivery():
    from spikeforge.codegen.render import render_network

    text = render_network(generate(_wide_network()), "cpu")
    assert text.count("Delivery in blocks of 32768 targets") == 1
    assert "Delivery in blocks" not in render_network(generate(_pair()), "cpu")


def _wide(backend):
    sim = _wide_network().build(backend=backend)
    sim.run(steps=60)
    return sim


@pytest.mark.slow  # two builds of a 70,000-neuron network, one of them on cuda-emu (15 s)
def test_blocked_delivery_to_a_wide_population_equals_row_by_row_delivery():
    """70,000 targets: the cpu kernel delivers all spikes into one block of 32,768 targets at a
    time. cuda-emu delivers row by row (each spike's row in order): the same sums, bit for bit."""
    cpu, emu = _wide("cpu"), _wide("cuda-emu")
    assert "Delivery in blocks of 32768 targets" in cpu.source
    x = cpu.get("sp", "x")
    assert np.count_nonzero(x) > 10_000
    np.testing.assert_array_equal(x, emu.get("sp", "x"))
    np.testing.assert_array_equal(cpu.get("p", "v"), emu.get("p", "v"))
