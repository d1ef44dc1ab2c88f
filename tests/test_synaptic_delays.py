"""Per-synapse (dendritic) delays: one delay per synapse, set like any per-synapse value.

A synapse of delay d steps must deliver exactly as a projection-wide delay of d steps: the
same spikes and state bit for bit, on cpu and cuda-emu, batched. Mixed delays are checked
against an independent numpy count of every spike's arrival and against one projection per
delay value (an accumulating neuron with integer weights keeps every sum exact, so the
order in which inputs are added cannot hide a wrong step).
"""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_network
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.models import builtins as m
from spikeforge.models.neuron import NeuronModel
from spikeforge.models.synapse import WeightUpdateModel
from spikeforge.network import FixedProbability, FromList, Network
from spikeforge.runtime.memory import state_needs
from tests.conftest import nvcc_path

DT = 0.1
LIF = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)


def cuba(delay, n=200, batch_size=2, **kw):
    """A small CUBA-like network (LIF, exponential synapses, sparse random connectivity)."""
    net = Network("cuba_delays", dt=DT, batch_size=batch_size, seed=3)
    n_exc = n * 4 // 5
    for pop, size in (("exc", n_exc), ("inh", n - n_exc)):
        net.add_population(pop, size, m.LIF, params=LIF, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    for pre, w, tau in (("exc", 6.5, 5.0), ("inh", -36.0, 10.0)):
        for post in ("exc", "inh"):
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.1),
                               wu_params={"w": w}, ps_params={"tau_syn": tau}, delay=delay, **kw)
    return net


def run_cuba(net, backend, steps=300):
    sim = net.build(backend)
    sim.run(steps=steps)
    return {pop: sim.spikes(pop) for pop in ("exc", "inh")}, sim.get("exc", "v"), sim.get("inh", "v")


def same_run(a, b):
    spikes_a, *state_a = a
    spikes_b, *state_b = b
    for pop in spikes_a:
        for (ta, ia), (tb, ib) in zip(spikes_a[pop], spikes_b[pop], strict=True):
            if not (np.array_equal(ta, tb) and np.array_equal(ia, ib)):
                return False
    return all(np.array_equal(x, y) for x, y in zip(state_a, state_b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_equal_per_synapse_delays_equal_the_projection_wide_delay_bit_for_bit(backend):
    wide = run_cuba(cuba(0.3), backend)
    assert sum(len(t) for t, _ in wide[0]["exc"]) > 100  # the network is active
    assert same_run(run_cuba(cuba("0.3"), backend), wide)  # an expression: every synapse 3 steps
    assert same_run(run_cuba(cuba("3*dt", max_delay=0.7), backend), wide)  # a larger buffer changes nothing
    assert not same_run(run_cuba(cuba("0.2"), backend), wide)  # one step less is seen


@pytest.mark.slow
def test_drawn_delays_cuda_emu_equals_cpu():
    runs = [run_cuba(cuba("0.1 + 0.5*rand()"), backend, steps=200) for backend in ("cpu", "cuda-emu")]
    assert same_run(*runs)


# -- mixed delays: an accumulating neuron and integer weights keep every sum exact -------------------

ACC = NeuronModel("accumulator", vars={"v": 0.0})
N_PRE, N_POST, STEPS = 12, 7, 120


def mixed_synapses(connectivity):
    """Pre/post indices of every synapse (in synapse order), integer weights and delays in steps."""
    rng = np.random.default_rng(5)
    if connectivity == "dense":
        pre, post = np.divmod(np.arange(N_PRE * N_POST), N_POST)
    else:
        mask = rng.random((N_PRE, N_POST)) < 0.5
        pre, post = np.nonzero(mask)
    weights = rng.integers(1, 9, pre.size).astype(float)
    delays = rng.integers(0, 6, pre.size)
    return pre, post, weights, delays


def accumulator_net(batch_size=2):
    net = Network("mixed_delays", dt=DT, batch_size=batch_size, seed=11)
    net.add_population("pre", N_PRE, m.POISSON, init={"rate": 400.0}, record_spikes=True)
    net.add_population("post", N_POST, ACC)
    net.record_var("post", "v")
    return net


def run_acc(net, backend):
    sim = net.build(backend)
    sim.run(steps=STEPS)
    return sim.spikes("pre"), sim.recorded("post", "v")


def reference(spikes, pre, post, weights, delays, n_post=N_POST):
    """v after each step: a spike of step s reaches v at the end of step s + d + 1."""
    out = []
    for times, ids in spikes:
        v = np.zeros((STEPS, n_post))
        for t, i in zip(times, ids, strict=True):
            s = round(t / DT)
            for k in np.flatnonzero(pre == i):
                if s + delays[k] + 1 < STEPS:
                    v[s + delays[k] + 1:, post[k]] += weights[k]
        out.append(v)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("connectivity", ["dense", "sparse"])
@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_mixed_delays_match_the_reference_and_one_projection_per_delay(backend, connectivity):
    pre, post, weights, delays = mixed_synapses(connectivity)
    conn = "dense" if connectivity == "dense" else FromList(pre, post)
    net = accumulator_net()
    net.add_projection("syn", "pre", "post", m.STATIC, m.delta_curr("v"), conn, wu_init={"w": weights},
                       delay=delays * DT)
    spikes, v = run_acc(net, backend)
    assert sum(len(t) for t, _ in spikes) > 50
    np.testing.assert_array_equal(v, reference(spikes, pre, post, weights, delays))
    split = accumulator_net()  # one projection per delay value, each with its projection-wide delay
    for d in np.unique(delays):
        keep = delays == d
        split.add_projection(f"d{d}", "pre", "post", m.STATIC, m.delta_curr("v"), FromList(pre[keep], post[keep]),
                             wu_init={"w": weights[keep]}, delay=float(d) * DT)
    spikes_split, v_split = run_acc(split, backend)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(spikes, spikes_split, strict=True))
    np.testing.assert_array_equal(v, v_split)


@pytest.mark.slow
def test_one_to_one_delays_match_the_reference_on_cpu_and_cuda_emu():
    delays = np.arange(N_PRE) % 4
    idx = np.arange(N_PRE)
    for backend in ("cpu", "cuda-emu"):
        net = accumulator_net()
        net.add_population("twin", N_PRE, ACC)
        net.record_var("twin", "v")
        net.add_projection("o", "pre", "twin", m.STATIC, m.delta_curr("v"), "one_to_one",
                           wu_init={"w": idx + 1.0}, delay=list(delays * DT))
        sim = net.build(backend)
        sim.run(steps=STEPS)
        expected = reference(sim.spikes("pre"), idx, idx, idx + 1.0, delays, n_post=N_PRE)
        np.testing.assert_array_equal(sim.recorded("twin", "v"), expected)


# -- how delays are given ------------------------------------------------------------------------


def two_pops(dt=DT, seed=1):
    net = Network("delays", dt=dt, seed=seed)
    net.add_population("a", 20, m.POISSON)
    net.add_population("b", 10, ACC)
    return net


def test_delays_round_to_the_nearest_step():
    net = two_pops(dt=0.5)
    pre, post = [0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 3]
    q = net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("v"), FromList(pre, post),
                           delay=[0.2, 0.25, 0.74, 0.75, 1.0, 0.0])
    assert q.synapse_delay_steps.tolist() == [0, 1, 1, 2, 2, 0]
    assert q.dendritic_slots == 3 and q.delay_steps == 0


def test_drawn_delays_are_reproducible_and_apart_from_the_weight_draws():
    def delays(seed, w="0.5"):
        net = two_pops(seed=seed)
        return net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("v"), FixedProbability(0.5),
                                  wu_init={"w": w}, delay="1 + 4*rand()").synapse_delay_steps

    d = delays(1)
    assert d.min() >= 10 and d.max() <= 50 and len(np.unique(d)) > 20
    np.testing.assert_array_equal(d, delays(1))
    np.testing.assert_array_equal(d, delays(1, w="rand()"))  # a weight draw does not shift the delays
    assert not np.array_equal(d[:50], delays(2)[:50])  # another seed, other delays


def test_values_counts_and_index_expressions():
    net = two_pops()
    q = net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("v"), FromList([0, 1, 2, 3], [0, 1, 2, 3]),
                           delay={"values": [0.1, 0.4], "counts": [3, 1]})
    assert q.synapse_delay_steps.tolist() == [1, 1, 1, 4]
    q = net.add_projection("q", "a", "b", m.STATIC, m.delta_curr("v"), "dense", delay="0.1*j + 0.2*(i % 2)")
    i, j = np.divmod(np.arange(200), 10)
    np.testing.assert_array_equal(q.synapse_delay_steps, j + 2 * (i % 2))


def test_new_delays_of_the_same_largest_delay_give_the_same_code():
    texts = []
    for seed in (1, 2):
        net = two_pops(seed=seed)
        net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("v"), FixedProbability(0.5), delay="4*rand()",
                           max_delay=4.0)
        texts.append(render_network(generate(net), "cpu"))
    assert texts[0] == texts[1]
    assert "% 41u" in texts[0] and "_p_den" in texts[0]  # 41 slots: delays of 0..40 steps


def test_the_dendritic_buffer_is_counted_by_the_memory_check():
    net = cuba("1 + 4*rand()", n=100, batch_size=3, max_delay=5.0)
    needs = {n.what: n.nbytes for n in state_needs(generate(net), 3)}
    key = "projection 'exc_inh' dendritic delay buffer (51 steps)"
    assert needs[key] == 51 * 3 * 20 * 4  # slots x batch x postsynaptic neurons x float


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"delay": [0.1, 0.9], "max_delay": 0.5},
     "projection 'p': delay: 0.9 ms (9 steps) of synapse 1 is above max_delay = 0.5 ms (5 steps)"),
    ({"delay": [0.1, -0.2]}, "projection 'p': delay: -0.2 ms of synapse 1 is negative"),
    ({"delay": "1/(i - i)"}, "projection 'p': delay: "),
    ({"delay": [0.1, 0.2, 0.3]}, "projection 'p': delay: expected 2 values (one per element), got 3"),
    ({"delay": "2 + k"}, "projection 'p': delay: "),
    ({"delay": [0.1, 0.2], "max_delay": float("inf")}, "projection 'p': max_delay must be a number of ms >= 0"),
    ({"delay": [0.1, 0.2], "max_delay": 1e12}, "projection 'p': max_delay 1e+12 ms is 10000000000000 steps, more"),
    ({"delay": 0.2, "max_delay": 1.0}, "projection 'p': max_delay sets the buffer of per-synapse delays"),
    ({"delay": "0.1", "wu_dynamic": ["delay"]}, "projection 'p': dynamic: the delay cannot be dynamic"),
])
def test_bad_delays_give_one_line_errors(kwargs, message):
    net = two_pops()
    with pytest.raises(NetworkError) as err:
        net.add_projection("p", "a", "b", m.STATIC, m.delta_curr("v"), FromList([0, 1], [0, 1]), **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_procedural_connectivity_and_silent_synapses_refuse_per_synapse_delays():
    net = two_pops()
    with pytest.raises(NetworkError, match=r"^projection 'p': delay: per-synapse delays need stored connectivity"):
        net.add_projection("p", "a", "b", m.STATIC_CONSTANT, m.delta_curr("v"), FixedProbability(0.1, procedural=True),
                           wu_params={"w": 1.0}, delay="rand()")
    silent = WeightUpdateModel("counts_only", vars={"n": 0.0}, on_pre="n += 1")
    with pytest.raises(NetworkError, match=r"^projection 'q': delay: per-synapse delays hold back the input"):
        net.add_projection("q", "a", "b", silent, m.delta_curr("v"), "dense", delay="rand()")


YAML = """\
name: yaml_delays
dt: 0.1 ms
seed: 4
populations:
  a: {{size: 20, model: poisson}}
  b: {{size: 10, model: lif}}
projections:
  p:
    pre: a
    post: b
    connectivity: {{fixed_probability: 0.5}}
    weight_update: {{model: static_constant, params: {{w: 1.0}}}}
    postsynaptic: delta
    delay: {delay}
{extra}"""


def test_yaml_delays_with_units_equal_the_python_network():
    net = load_network(YAML.format(delay='"1 + 4*rand()"', extra="    max_delay: 0.006 s\n"), filename="net.yaml")[0]
    q = net.projections["p"]
    ref = Network("ref", dt=0.1, seed=4)
    ref.add_population("a", 20, m.POISSON)
    ref.add_population("b", 10, m.LIF)
    r = ref.add_projection("p", "a", "b", m.STATIC_CONSTANT, m.DELTA_CURR, FixedProbability(0.5),
                           wu_params={"w": 1.0}, delay="1 + 4*rand()", max_delay=6.0)
    np.testing.assert_array_equal(q.synapse_delay_steps, r.synapse_delay_steps)
    assert q.dendritic_slots == 61
    n = q.n_synapses
    q2 = load_network(YAML.format(delay=f"{{values: [0.5 ms, 300 us], counts: [{n - 1}, 1]}}", extra=""),
                      filename="net.yaml")[0].projections["p"]
    assert q2.synapse_delay_steps.tolist() == [5] * (n - 1) + [3]


@pytest.mark.parametrize("delay, extra, line, message", [
    ('"1 + 4*rand()"', "    max_delay: 2 ms\n", 14, "projection 'p': delay: "),
    ('"rand()"', "    max_delay: 2 mV\n", 15, "max_delay"),
    ("[1 ms, 2 ms]", "", 14, "projection 'p': delay: expected"),
    ("0.5 ms", "    max_delay: 3 ms\n", 15, "projection 'p': max_delay sets the buffer"),
    ("soon", "", 14, "delay: expected a number of ms or one value per synapse"),
])
def test_yaml_delay_errors_name_file_line_and_field(delay, extra, line, message):
    with pytest.raises(ConfigError) as err:
        load_network(YAML.format(delay=delay, extra=extra), filename="net.yaml")
    text = str(err.value)
    assert text.startswith(f"net.yaml:{line}: ") and message in text and "\n" not in text
    if "max_delay: 2 ms" in extra:
        assert "above max_delay = 2 ms (20 steps)" in text


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_per_synapse_delay_kernels_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net = accumulator_net()
    pre, post, weights, delays = mixed_synapses("sparse")
    net.add_projection("sparse", "pre", "post", m.STATIC, m.delta_curr("v"), FromList(pre, post),
                       wu_init={"w": weights}, delay=delays * DT)
    net.add_projection("dense", "pre", "post", m.STATIC_CONSTANT, m.delta_curr("v"), "dense",
                       wu_params={"w": 1.0}, delay="30*rand()")  # 301 slots: uint32 delays
    net.add_population("twin", N_PRE, ACC)
    net.add_projection("o", "pre", "twin", m.STATIC, m.delta_curr("v"), "one_to_one", delay="0.1*i")
    net.add_projection("stdp", "pre", "post", m.STDP, m.EXP_CURR, "dense", delay="rand()")
    for precision, arch in (("float", "sm_80"), ("double", "sm_90")):
        net.precision = precision
        text = render_network(generate(net), "cuda")
        assert "atomicAdd(&_sparse_den[" in text and "_dense_den[((size_t)_dslot" in text
        result = build_cubin(text, arch, name=net.name, describe=net.name)
        assert result.path.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.slow
def test_the_benchmark_script_runs_and_finds_the_same_spikes():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "synaptic_delays.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "give the projection-wide delay's spike count: yes" in out.stdout


def test_yaml_a_dynamic_delay_is_refused_at_the_line_of_dynamic():
    text = YAML.format(delay='"rand()"', extra="").replace(
        "weight_update: {model: static_constant, params: {w: 1.0}}",
        "weight_update:\n      model: static_constant\n      params: {w: 1.0}\n      dynamic: [delay]")
    with pytest.raises(ConfigError) as err:
        load_network(text, filename="net.yaml")
    assert str(err.value).startswith("net.yaml:15: projection 'p': dynamic: the delay cannot be dynamic")
