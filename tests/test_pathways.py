"""Named pathways on one projection (Brian2's ``on_pre={'up': ..., 'down': ...}`` with
``delay={'up': ..., 'down': ...}``): each pathway is its own code with its own delay.

A projection with pathways a (delay d1) and b (delay d2) that write different variables must
give bit for bit what two projections give, one with a alone at d1 and one with b alone at
d2; a pathway reads what an earlier one (in the order written) wrote in the same step.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_network
from spikeforge.errors import ConfigError, ModelError, NetworkError
from spikeforge.models import builtins as m
from spikeforge.models.neuron import NeuronModel
from spikeforge.models.synapse import WeightUpdateModel
from spikeforge.models.variables import Var
from spikeforge.network import FixedProbability, FromList, Network
from tests.conftest import nvcc_path

BACKENDS = ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)]
TRACES = dict(pre_vars={"x_pre": 0.0}, post_vars={"x_post": 0.0},
              pre_equations="dx_pre/dt = -x_pre / tau_plus", post_equations="dx_post/dt = -x_post / tau_minus",
              on_pre_spike="x_pre += 1", on_post_spike="x_post += 1")
LEARN_PARAMS = {"tau_plus": 20.0, "tau_minus": 20.0, "a_plus": 0.01, "a_minus": 0.012}
DEPRESS = "c = c - a_minus * x_post"
POTENTIATE = "c = c + a_plus * x_pre"


def deliver_model(name="deliver_only"):
    return WeightUpdateModel(name, vars={"w": 0.0}, on_pre={"deliver": "post_input += w"})


def learn_model(name="learn_only"):
    """Plasticity of its own variable c (shared across the batch, changes summed)."""
    return WeightUpdateModel(name, params=LEARN_PARAMS, vars=[Var("c", batched=False, reduce="sum")],
                             on_pre={"learn": DEPRESS}, on_post=POTENTIATE, **TRACES)


def split_model():
    """Both in one projection: a delivering pathway and a plasticity pathway."""
    return WeightUpdateModel("split", params=LEARN_PARAMS,
                             vars=[Var("w", batched=False), Var("c", batched=False, reduce="sum")],
                             on_pre={"deliver": "post_input += w", "learn": DEPRESS}, on_post=POTENTIATE, **TRACES)


def _connectivity(kind):
    if kind == "dense":
        return "dense"
    pre, post = np.nonzero(np.random.default_rng(4).random((20, 6)) < 0.5)
    return FromList(tuple(int(i) for i in pre), tuple(int(j) for j in post))


def _network(two_projections, connectivity, d_deliver=1.0, d_learn=2.5):
    net = Network("pathways", dt=0.5, batch_size=2, seed=11, precision="double")
    net.add_population("inp", 20, m.POISSON, init={"rate": 60.0})
    net.add_population("out", 6, m.LIF, params={"tau_m": 10.0})
    conn = _connectivity(connectivity)
    w = {"w": "2.0 + 0.25 * i"}
    if two_projections:
        net.add_projection("p1", "inp", "out", deliver_model(), m.EXP_CURR, conn, wu_init=w,
                           delay={"deliver": d_deliver})
        net.add_projection("p2", "inp", "out", learn_model(), m.delta_curr("v"), conn, wu_params=LEARN_PARAMS,
                           delay={"learn": d_learn})
    else:
        net.add_projection("p", "inp", "out", split_model(), m.EXP_CURR, conn, wu_init=w,
                           delay={"deliver": d_deliver, "learn": d_learn})
    net.record_var("out", "v")
    net.record_spikes("out")
    return net


def _run(net, backend, steps=400):
    sim = net.build(backend=backend)
    sim.run(steps=steps)
    c = sim.get("p2" if "p2" in net.projections else "p", "c")
    return sim.recorded("out", "v"), [s[1] for s in sim.spikes("out")], c


@pytest.mark.slow
@pytest.mark.parametrize("connectivity", ["dense", "sparse"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_pathways_equal_two_projections_bit_for_bit(backend, connectivity):
    v1, spikes1, c1 = _run(_network(False, connectivity), backend)
    v2, spikes2, c2 = _run(_network(True, connectivity), backend)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(c1, c2)
    for a, b in zip(spikes1, spikes2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sum(len(s) for s in spikes1) > 20  # the neurons fire, so the traces and on_post code matter
    assert np.count_nonzero(c1) > 10 and (c1 < 0).any() and (c1 > 0).any()  # both signs of change
    # and the delays matter: the same pathways without their own delays give other results
    v0, _, c0 = _run(_network(False, connectivity, 0.0, 0.0), backend)
    assert not np.array_equal(v0, v1) and not np.array_equal(c0, c1)


@pytest.mark.slow
def test_pathways_cuda_emu_equals_cpu_bit_for_bit():
    cpu = _run(_network(False, "sparse"), "cpu")
    emu = _run(_network(False, "sparse"), "cuda-emu")
    np.testing.assert_array_equal(cpu[0], emu[0])
    np.testing.assert_array_equal(cpu[2], emu[2])


# -- a pathway reads what another wrote -------------------------------------------------------------
ACC = NeuronModel("acc", vars={"v": 0.0})  # sums what it receives: v += in_syn each step
PRE_TIMES = ([2.0, 5.0, 6.0, 6.0, 9.0], [0, 0, 1, 0, 1])


def counting_model(order):
    """Pathway 'count' counts the spikes that reached each synapse (per batch instance);
    pathway 'send' delivers the count it reads."""
    code = {"count": "x = x + 1", "send": "post_input += x"}
    return WeightUpdateModel("counting", vars={"x": {"init": 0.0, "batched": True}},
                             on_pre={name: code[name] for name in order})


def counting_reference(d_count, d_send, count_first, steps):
    """v of the one postsynaptic neuron at every step, in numpy: a spike emitted at step s
    runs 'count' at step s + d_count and 'send' at s + d_send; on a step where both run,
    'send' sees the new count only if 'count' comes first; the neuron adds the input the
    step after it is delivered."""
    times, ids = PRE_TIMES
    emitted = {}
    for t, i in zip(times, ids, strict=True):
        emitted.setdefault(round(t), []).append(i)
    x = np.zeros(2)
    v, delivered, out = 0.0, 0.0, np.empty(steps)
    for n in range(steps):
        v += delivered  # the neuron update of step n takes what was delivered at step n - 1
        out[n] = v
        delivered = 0.0
        counted = emitted.get(n - d_count, [])
        sent = emitted.get(n - d_send, [])
        for phase in (["count", "send"] if count_first else ["send", "count"]):
            for i in counted if phase == "count" else sent:
                if phase == "count":
                    x[i] += 1
                else:
                    delivered += x[i]
    return out


@pytest.mark.parametrize(("order", "d_count", "d_send"), [
    (("count", "send"), 1, 3), (("send", "count"), 1, 3), (("count", "send"), 2, 2), (("send", "count"), 2, 2),
    (("send", "count"), 3, 0)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pathway_reads_what_an_earlier_one_wrote(backend, order, d_count, d_send):
    net = Network("reads", dt=1.0, batch_size=2, precision="double")
    net.add_population("pre", 2, m.SPIKE_SOURCE_ARRAY)
    net.add_population("post", 1, ACC)
    net.add_projection("p", "pre", "post", counting_model(order), m.delta_curr("v"), "dense",
                       delay={"count": float(d_count), "send": float(d_send)})
    net.record_var("post", "v")
    sim = net.build(backend=backend)
    assert [k.name for k in sim.spec.kernels if k.kind == "presynaptic_update"] == \
        [f"presynaptic_update_p_{name}" for name in order]
    sim.set_spike_times("pre", PRE_TIMES)
    sim.run(steps=20)
    v = sim.recorded("post", "v")[:, :, 0]
    ref = counting_reference(d_count, d_send, order[0] == "count", 20)
    if d_count == d_send:  # on a shared step the order written decides what 'send' reads
        assert not np.array_equal(ref, counting_reference(d_count, d_send, order[0] != "count", 20))
    for b in range(2):
        np.testing.assert_array_equal(v[:, b], ref)
    np.testing.assert_array_equal(sim.get("p", "x"), [[3.0, 2.0], [3.0, 2.0]])



# -- learning rules split into pathways -------------------------------------------------------------
def split_stdp(reduce, batched):
    """The built-in STDP's on_pre in two pathways: delivery, then depression."""
    ref = m.stdp(reduce, batched)
    return WeightUpdateModel(
        "stdp_split", params={k: ref.params[k] for k in ref.params},
        vars=[Var("w", batched=batched, reduce=None if batched else reduce)], **{
            **{k: v for k, v in TRACES.items()}},
        on_pre={"deliver": "post_input += w", "depress": "w = clip(w - a_minus * x_post, w_min, w_max)"},
        on_post="w = clip(w + a_plus * x_pre, w_min, w_max)")


def _stdp_run(model, backend, delay, batch_size=3):
    net = Network("stdp_split", dt=0.5, batch_size=batch_size, seed=5, precision="double")
    net.add_population("inp", 12, m.POISSON, init={"rate": 40.0})
    net.add_population("out", 4, m.LIF, params={"tau_m": 10.0})
    net.add_projection("p", "inp", "out", model, m.EXP_CURR, "dense", wu_init={"w": 8.0},
                       wu_params={"w_max": 16.0, "a_plus": 0.1, "a_minus": 0.12}, delay=delay)
    net.record_var("out", "v")
    sim = net.build(backend=backend)
    sim.run(steps=300)
    return sim.get("p", "w"), sim.recorded("out", "v")


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_stdp_split_into_pathways_equals_the_built_in_rule(backend, reduce):
    """With the same delay, delivery then depression in two pathways is the built-in STDP,
    with the weight shared across a batch of 3 and its changes reduced."""
    w_ref, v_ref = _stdp_run(m.stdp(reduce), backend, 1.0)
    w, v = _stdp_run(split_stdp(reduce, False), backend, {"deliver": 1.0, "depress": 1.0})
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(v, v_ref)
    assert np.unique(w).size > 10 and np.abs(w - 8.0).max() > 0.2  # the rule changed the weights


@pytest.mark.parametrize("backend", BACKENDS)
def test_stdp_with_a_later_plasticity_pathway(backend):
    """Depression 4 ms after delivery: other weights than at the same delay, the same
    weights on cpu and cuda-emu, and batched weights equal to single runs of each seed's
    instance where instances are independent."""
    w_same, _ = _stdp_run(split_stdp("mean", False), backend, {"deliver": 1.0, "depress": 1.0})
    w_late, v_late = _stdp_run(split_stdp("mean", False), backend, {"deliver": 1.0, "depress": 5.0})
    assert not np.array_equal(w_same, w_late)
    if backend != "cpu":
        w_cpu, v_cpu = _stdp_run(split_stdp("mean", False), "cpu", {"deliver": 1.0, "depress": 5.0})
        np.testing.assert_array_equal(w_late, w_cpu)
        np.testing.assert_array_equal(v_late, v_cpu)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_pathways_on_procedural_connectivity_equal_the_stored_projection(backend):
    """Each pathway's kernel draws the rows again: the same synapses as the stored projection."""
    model = WeightUpdateModel("two", params={"w": 0.5}, on_pre={"a": "post_input += w", "b": "post_input += 2*w"})
    runs = []
    for procedural in (False, True):
        net = Network("procedural_pathways", dt=0.5, precision="double", batch_size=2)
        net.add_population("inp", 50, m.POISSON, init={"rate": 50.0})
        net.add_population("out", 20, m.LIF)
        net.add_projection("p", "inp", "out", model, m.EXP_CURR, FixedProbability(0.2, procedural=procedural),
                           delay={"a": 0.5, "b": 2.0})
        net.record_var("out", "v")
        sim = net.build(backend=backend)
        sim.run(steps=200)
        runs.append(sim.recorded("out", "v"))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.ptp(runs[0]) > 1.0  # the input moves the neurons


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_synapse_delays_hold_for_every_pathway(backend):
    """Per-synapse delays with pathways: each pathway runs when the spike arrives and its input
    waits its synapse's delay (synapse 0: 1 step, synapse 1: 3 steps), as one plain on_pre would."""
    runs = []
    for on_pre in ({"a": "post_input += w", "b": "post_input += 10 * w"}, "post_input += w\npost_input += 10 * w"):
        net = Network("dendritic_pathways", dt=1.0, precision="double", batch_size=2)
        net.add_population("pre", 2, m.SPIKE_SOURCE_ARRAY)
        net.add_population("post", 1, ACC)
        net.add_projection("p", "pre", "post", WeightUpdateModel("two", vars={"w": 1.0}, on_pre=on_pre),
                           m.delta_curr("v"), "dense", delay=[1.0, 3.0])
        net.record_var("post", "v")
        sim = net.build(backend=backend)
        sim.set_spike_times("pre", ([2.0, 2.0], [0, 1]))
        sim.run(steps=10)
        runs.append(sim.recorded("post", "v")[:, :, 0])
    for b in range(2):
        np.testing.assert_array_equal(runs[0][:, b], [0, 0, 0, 0, 11, 11, 22, 22, 22, 22])
    np.testing.assert_array_equal(runs[0], runs[1])


# -- the generated code ---------------------------------------------------------------------------
def test_kernels_are_named_and_commented_by_pathway_and_delay():
    spec = generate(_network(False, "sparse"))
    syn = [k for k in spec.kernels if k.kind == "presynaptic_update"]
    assert [k.name for k in syn] == ["presynaptic_update_p_deliver", "presynaptic_update_p_learn"]
    assert [k.info["delay_steps"] for k in syn] == [2, 5]
    assert "pathway 'learn' (2 of 2: deliver, learn;" in syn[1].description
    assert "delay 5 steps" in syn[1].description and DEPRESS in syn[1].description
    inp = next(p for p in spec.populations if p["name"] == "inp")
    assert inp["slots"] == 6  # the spike queue holds the longest pathway delay
    text = render_network(spec, "cpu")
    assert "// presynaptic_update_p_learn: presynaptic spikes of projection 'p', pathway 'learn'" in text
    assert "(uint32_t)((_step + 6u - 5u) % 6u)" in text and "(uint32_t)((_step + 6u - 2u) % 6u)" in text
    assert render_network(generate(_network(False, "sparse")), "cpu") == text  # stable


def test_one_pathway_gives_the_code_of_plain_on_pre():
    plain = WeightUpdateModel("m", vars={"w": 0.0}, on_pre="post_input += w")
    named = WeightUpdateModel("m", vars={"w": 0.0}, on_pre={"only": "post_input += w"})
    kernels = []
    for model, delay in ((plain, 1.5), (named, {"only": 1.5})):
        net = Network("one", dt=0.5)
        net.add_population("a", 3, m.POISSON)
        net.add_population("b", 2, m.LIF)
        net.add_projection("p", "a", "b", model, m.EXP_CURR, delay=delay)
        kernels.append(next(k for k in generate(net).kernels if k.kind == "presynaptic_update"))
    assert kernels[0].name == "presynaptic_update_p" and kernels[1].name == "presynaptic_update_p_only"
    assert kernels[0].code == kernels[1].code and kernels[0].loads == kernels[1].loads
    assert kernels[0].info == kernels[1].info
    assert "pathway" not in kernels[0].description


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_pathway_kernels_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    for connectivity in ("dense", "sparse"):
        net = _network(False, connectivity)
        spec = generate(net)
        data = build_cubin(render_network(spec, "cuda"), "sm_80", name=f"pathways_{connectivity}",
                           describe="pathways").path.read_bytes()
        assert data[:4] == b"\x7fELF"
        for name in ("presynaptic_update_p_deliver", "presynaptic_update_p_learn", "postsynaptic_learning_p"):
            assert name.encode() in data


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("on_pre", "message", "field"), [
    ({"1up": "post_input += w"}, "'1up' is not a valid name", "on_pre"),
    ({"int": "post_input += w"}, "'int' cannot name a pathway: it is a C++", "on_pre"),
    ({"up": "post_input += w", "down": "  # nothing"}, "pathway 'down' has no code", "on_pre.down"),
    ({"up": ""}, "pathway 'up' has no code", "on_pre.up"),
    ({"up": 3}, "pathway 'up': expected statements (text), got int", "on_pre.up"),
    ({}, "no pathways", "on_pre"),
    ({"up": "post_input = w"}, "input is delivered with 'post_input += ...'", "on_pre.up"),
    ({"up": "post_input += w", "down": "q = 1"}, "assigns unknown variable 'q'", "on_pre.down"),
])
def test_bad_pathways_are_refused(on_pre, message, field):
    with pytest.raises(ModelError, match=re.escape(message)) as err:
        WeightUpdateModel("paths", vars={"w": 0.0}, on_pre=on_pre)
    assert err.value.field == field and err.value.model == "paths"


def test_on_post_pathways_are_refused_with_a_reason():
    with pytest.raises(ModelError, match="named pathways are for on_pre only") as err:
        WeightUpdateModel("paths", vars={"w": 0.0}, on_pre="post_input += w", on_post={"a": "w = 0"})
    assert err.value.field == "on_post"


@pytest.mark.parametrize(("delay", "message"), [
    ({"deliver": 1.0, "learn": 1.0, "late": 2.0}, r"delay.late: 'late' is not a pathway of 'split' "
                                                  r"\(pathways: deliver, learn\)"),
    ({"deliver": 1.0}, "delay.learn: pathway 'learn' of 'split' has no delay"),
    ({"deliver": 1.0, "learn": -1.0}, "delay.learn must not be negative"),
    ({"deliver": 1.0, "learn": 0.3}, "delay.learn 0.3 ms is not a multiple of dt"),
    ({"deliver": 1.0, "learn": "soon"}, "delay.learn must be a number of ms"),
])
def test_bad_pathway_delays_are_refused(delay, message):
    net = Network("bad", dt=0.5)
    net.add_population("a", 3, m.POISSON)
    net.add_population("b", 2, m.LIF)
    with pytest.raises(NetworkError, match=f"projection 'p': {message}"):
        net.add_projection("p", "a", "b", split_model(), m.EXP_CURR, wu_params=LEARN_PARAMS, delay=delay)


def test_a_delay_mapping_needs_named_pathways():
    net = Network("bad", dt=0.5)
    net.add_population("a", 3, m.POISSON)
    net.add_population("b", 2, m.LIF)
    with pytest.raises(NetworkError, match="the on_pre code of 'static' has no named pathways"):
        net.add_projection("p", "a", "b", m.STATIC, m.EXP_CURR, delay={"up": 1.0})


def test_kernel_names_of_pathways_and_projections_may_not_collide():
    net = Network("clash", dt=0.5)
    net.add_population("a", 3, m.POISSON)
    net.add_population("b", 2, m.LIF)
    net.add_projection("p", "a", "b", deliver_model(), m.EXP_CURR)
    net.add_projection("p_deliver", "a", "b", m.STATIC, m.EXP_CURR)
    with pytest.raises(NetworkError, match="both be named 'presynaptic_update_p_deliver'"):
        generate(net)


# -- YAML ---------------------------------------------------------------------------------------------
YAML = """\
dt: 0.5
precision: double
models:
  split:
    kind: weight_update
    params: {tau_plus: 20, tau_minus: 20, a_plus: 0.01, a_minus: 0.012}
    vars: {w: 0, c: {reduce: sum, batched: false}}
    pre_vars: {x_pre: 0}
    post_vars: {x_post: 0}
    pre_equations: dx_pre/dt = -x_pre / tau_plus
    post_equations: dx_post/dt = -x_post / tau_minus
    on_pre_spike: x_pre += 1
    on_post_spike: x_post += 1
    on_pre:
      deliver: post_input += w
      learn: c = c - a_minus * x_post
    on_post: c = c + a_plus * x_pre
populations:
  inp: {size: 20, model: poisson, init: {rate: 60}}
  out: {size: 6, model: lif, params: {tau_m: 10}}
projections:
  p:
    pre: inp
    post: out
    weight_update: {model: split, init: {w: "2.0 + 0.25 * i"}}
    postsynaptic: exp_curr
    delay:
      deliver: 1 ms
      learn: 2.5 ms
"""


def test_yaml_pathways_build_what_python_builds():
    net, _ = load_network(YAML, batch_size=2, seed=11)
    spec = generate(net)
    syn = [k for k in spec.kernels if k.kind == "presynaptic_update"]
    assert [(k.name, k.info["delay_steps"]) for k in syn] == [("presynaptic_update_p_deliver", 2),
                                                              ("presynaptic_update_p_learn", 5)]
    python = generate(_network(False, "dense"))
    py_syn = [k for k in python.kernels if k.kind == "presynaptic_update"]
    assert [k.code for k in syn] == [k.code for k in py_syn]


def test_show_code_lists_the_kernels_of_each_pathway(tmp_path, capsys):
    from spikeforge.cli import main

    path = tmp_path / "pathways.yaml"
    path.write_text(YAML)
    assert main(["show-code", str(path), "--list", "--json", "--population", "p"]) == 0
    listed = json.loads(capsys.readouterr().out)["kernels"]
    assert [k["name"] for k in listed] == ["presynaptic_update_p_deliver", "presynaptic_update_p_learn",
                                           "postsynaptic_learning_p", "batch_reduce_p_c_delta"]
    assert "pathway 'deliver' (1 of 2: deliver, learn; inp -> out, dense, split, delay 2 steps)" in \
        listed[0]["description"]
    assert main(["show-code", str(path), "--kernel", "presynaptic_update_p_learn"]) == 0
    assert "c = c - a_minus * x_post" in capsys.readouterr().out


def _yaml_error(text):
    with pytest.raises(ConfigError) as err:
        load_network(text)
    return str(err.value), err.value.line


@pytest.mark.parametrize(("old", "new", "message", "line"), [
    ("      learn: 2.5 ms\n", "      learn: 2.5 ms\n      late: 1 ms\n",
     r"projections.p.delay.late: 'late' is not a pathway of 'split' \(pathways: deliver, learn\)", 30),
    ("      learn: 2.5 ms\n", "", "projections.p.delay: pathway 'learn' of 'split' has no delay", 27),
    ("      learn: 2.5 ms\n", "      learn: soon\n", "projections.p.delay.learn: expected a number of ms", 29),
    ("      learn: 2.5 ms\n", "      learn: 0.3 ms\n", "delay.learn 0.3 ms is not a multiple of dt", 29),
    ("      learn: c = c", "      2learn: c = c", "'2learn' is not a valid name", 15),
    ("      learn: c = c - a_minus * x_post\n", "      learn: ''\n", "pathway 'learn' has no code", 16),
    ("      learn: c = c - a_minus * x_post\n", "      learn: [1, 2]\n",
     "models.split.on_pre.learn: expected text", 16),
    ("      learn: c = c - a_minus * x_post\n", "      learn: c = c - a_minus * y_post\n", "y_post", 16),
    ("    on_post: c = c + a_plus * x_pre\n", "    on_post: {a: c = 0}\n", "named pathways are for on_pre only",
     17),
])
def test_yaml_pathway_errors_name_the_field_and_line(old, new, message, line):
    assert old in YAML
    msg, at = _yaml_error(YAML.replace(old, new))
    assert "\n" not in msg
    assert re.search(message, msg), msg
    assert at == line, msg


def test_yaml_a_pathway_named_like_a_per_synapse_form_takes_its_delay():
    text = YAML.replace("deliver", "values").replace("learn", "uniform")
    net, _ = load_network(text)
    syn = [k for k in generate(net).kernels if k.kind == "presynaptic_update"]
    assert [(k.name, k.info["delay_steps"]) for k in syn] == [("presynaptic_update_p_values", 2),
                                                              ("presynaptic_update_p_uniform", 5)]

