"""Synapses that read both neurons (v_pre, v_post), per-synapse equations and summed variables.

Every simulation here is checked against an independent numpy simulation of the same
discrete-time model (double precision), on cpu and cuda-emu; cuda-emu must equal cpu
exactly (each postsynaptic neuron sums its incoming synapses in the same fixed order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_file, load_network
from spikeforge.errors import ConfigError, ModelError, NetworkError
from spikeforge.models import builtins as m
from spikeforge.models.neuron import NeuronModel
from spikeforge.models.synapse import WeightUpdateModel
from spikeforge.network import FromList, Network
from tests.conftest import nvcc_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "brian2"
BACKENDS = ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)]

# -- the gap-junction model and its numpy reference ---------------------------------------------

V0, TAU, W, DT = 1.05, 10.0, 0.02, 0.1


def gap_neuron():
    return NeuronModel("gap_neuron", params={"v0": V0, "tau": TAU}, vars={"v": 0.0, "Igap": 0.0},
                       equations="dv/dt = (v0 - v + Igap) / tau", threshold="v > 1", reset="v = 0",
                       integrator="exact")


GAP = WeightUpdateModel("gap_junction", params={"w": W}, summed={"Igap": "w * (v_pre - v_post)"})


def gap_reference(v, steps, weights):
    """v of every step: Igap_j = sum_i W_ij (v_i - v_j) from the state at the start of the step,
    then the exact update of dv/dt = (v0 - v + Igap)/tau, the threshold v > 1 and the reset."""
    v = np.array(v, dtype=np.float64)
    decay = np.exp(-DT / TAU)
    out = np.empty((steps, v.size))
    for n in range(steps):
        igap = weights.T @ v - weights.sum(axis=0) * v
        drive = V0 + igap
        v = drive + (v - drive) * decay
        v[v > 1] = 0.0
        out[n] = v
    return out


def gap_network(n=10, batch_size=1, connectivity="dense"):
    net = Network("gap", dt=DT, batch_size=batch_size, seed=3, precision="double")
    net.add_population("neurons", n, gap_neuron(), init={"v": "i * 1.0 / (N - 1)"})
    net.add_projection("gaps", "neurons", "neurons", GAP, m.delta_curr("v"), connectivity)
    net.record_var("neurons", "v")
    return net


@pytest.mark.parametrize("backend", BACKENDS)
def test_gap_junction_example_matches_the_numpy_reference(backend):
    net, _ = load_file(EXAMPLES / "gap_junctions.yaml")
    sim = net.build(backend=backend)
    sim.run(steps=1000)
    v = sim.recorded("neurons", "v")[:, 0]
    ref = gap_reference(np.arange(10) / 9, 1000, np.full((10, 10), W))
    assert np.abs(v - ref).max() < 1e-12
    assert (ref == 0).sum() >= 10  # the neurons fire and are reset: the comparison covers resets
    uncoupled = gap_reference(np.arange(10) / 9, 1000, np.zeros((10, 10)))
    assert np.abs(v - uncoupled).max() > 0.1  # and the coupling matters


@pytest.mark.slow
def test_gap_junctions_cuda_emu_equals_cpu_bit_for_bit_dense_and_sparse():
    pairs = [(i, j) for i in range(7) for j in range(7) if i != j and (i * 7 + j) % 3]
    conn = FromList(tuple(p for p, _ in pairs), tuple(q for _, q in pairs))
    for connectivity in ("dense", conn):
        runs = []
        for backend in ("cpu", "cuda-emu"):
            sim = gap_network(7, batch_size=2, connectivity=connectivity).build(backend=backend)
            sim.run(steps=300)
            runs.append(sim.recorded("neurons", "v"))
        np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_gap_junctions_match_the_reference_with_their_weights(backend):
    rng = np.random.default_rng(5)
    n = 12
    pre, post = np.nonzero((rng.random((n, n)) < 0.4) & ~np.eye(n, dtype=bool))
    weights = np.zeros((n, n))
    w = rng.uniform(0.0, 0.05, pre.size)
    weights[pre, post] = w
    net = Network("gap", dt=DT, seed=3, precision="double")
    net.add_population("neurons", n, gap_neuron(), init={"v": "i * 1.0 / (N - 1)"})
    net.add_projection("gaps", "neurons", "neurons", GAP, m.delta_curr("v"),
                       FromList(tuple(int(x) for x in pre), tuple(int(x) for x in post)),
                       wu_params={"w": weights[np.nonzero(weights)]})
    net.record_var("neurons", "v")
    sim = net.build(backend=backend)
    sim.run(steps=1000)
    ref = gap_reference(np.arange(n) / (n - 1), 1000, weights)
    assert np.abs(sim.recorded("neurons", "v")[:, 0] - ref).max() < 1e-12


def test_gap_junctions_on_connectivity_from_a_condition():
    """Brian2's example written with S.connect(condition='i != j'): the same as all to all,
    since a neuron's junction with itself adds w * (v - v) = 0."""
    sim = gap_network(10, connectivity={"condition": "i != j"}).build()
    assert sim.spec.kernels[0].info["connectivity"] == "sparse"
    sim.run(steps=1000)
    ref = gap_reference(np.arange(10) / 9, 1000, W * (1 - np.eye(10)))
    assert np.abs(sim.recorded("neurons", "v")[:, 0] - ref).max() < 1e-12


def test_batch_instances_with_different_initial_v_equal_separate_runs():
    starts = np.random.default_rng(1).uniform(0.0, 1.0, (3, 8))
    batched = gap_network(8, batch_size=3).build()
    batched.set("neurons", "v", starts)
    batched.run(steps=600)
    for b in range(3):
        single = gap_network(8).build()
        single.set("neurons", "v", starts[b:b + 1])
        single.run(steps=600)
        np.testing.assert_array_equal(batched.recorded("neurons", "v")[:, b], single.recorded("neurons", "v")[:, 0])
        assert np.abs(single.recorded("neurons", "v")[:, 0] - gap_reference(starts[b], 600, np.full((8, 8), W))
                      ).max() < 1e-12
    assert not np.array_equal(batched.recorded("neurons", "v")[:, 0], batched.recorded("neurons", "v")[:, 1])


# -- v_pre / v_post in on_pre ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_on_pre_reads_the_pre_and_postsynaptic_variables(backend):
    """A pacemaker (c counts time, v fires every 2 ms) drives 5 decaying neurons; each spike
    delivers c_pre * v_post into acc, which holds what arrived."""
    pacemaker = NeuronModel("pacemaker", vars={"v": 0.0, "c": 0.0}, equations="dv/dt = 0.5\ndc/dt = 1",
                            threshold="v > 0.99", reset="v = 0", integrator="euler")
    target = NeuronModel("target", params={"tau": 5.0}, vars={"u": 1.0, "acc": 0.0}, equations="du/dt = -u / tau",
                         integrator="exact")
    reads = WeightUpdateModel("reads", params={"w": 1.0}, on_pre="post_input += w * c_pre * u_post")
    net = Network("reads", dt=DT, seed=1, precision="double")
    net.add_population("pace", 1, pacemaker)
    net.add_population("tgt", 5, target, init={"u": "1 + i"})
    net.add_projection("p", "pace", "tgt", reads, m.delta_curr("acc"), "dense", wu_params={"w": 0.5})
    net.record_var("tgt", "acc")
    sim = net.build(backend=backend)
    sim.run(steps=100)
    # reference: step n integrates (u decays, pacemaker v += 0.05, c += 0.1), the pacemaker fires,
    # its spike delivers w * c * u (values after step n) into in_syn, added to acc in step n + 1
    u, v, c, acc, in_syn = 1.0 + np.arange(5), 0.0, 0.0, np.zeros(5), np.zeros(5)
    out = []
    for _ in range(100):
        acc = acc + in_syn
        in_syn = np.zeros(5)
        u = u * np.exp(-DT / 5.0)
        v, c = v + 0.5 * DT, c + DT
        if v > 0.99:
            v = 0.0
            in_syn = 0.5 * c * u
        out.append(acc.copy())
    assert np.abs(sim.recorded("tgt", "acc")[:, 0] - np.array(out)).max() < 1e-12
    assert out[-1][0] > 1.0


# -- an NMDA synapse: per-synapse equations, voltage-dependent summed current ---------------------


def nmda_reference(v, spikes, steps, p, n_pre, n_post, neuron):
    """v of every step and x, s at the end; spikes[n] = presynaptic neurons firing in step n."""
    x = np.zeros((n_pre, n_post))
    s = np.zeros((n_pre, n_post))
    v = np.array(v, dtype=np.float64)
    refrac = np.zeros(n_post, dtype=int)
    steps_ref = int(neuron["t_ref"] / DT + 1e-3)
    out = np.empty((steps, n_post))
    for n in range(steps):
        block = 1.0 / (1.0 + p["Mg"] * np.exp(-0.062 * v) / 3.57)
        current = (p["g_nmda"] * s * (p["E_nmda"] - v)[None, :] * block[None, :]).sum(axis=0)
        x_new = x + x * np.expm1(-DT / p["tau_rise"])
        k = p["alpha"] * p["tau_decay"] * x
        s = s + (s - k / (k + 1)) * np.expm1(DT * (-1 / p["tau_decay"] - p["alpha"] * x))
        x = x_new
        refrac = np.maximum(refrac - 1, 0)
        drive = neuron["E_L"] + current / neuron["g_L"]
        v_new = drive + (v - drive) * np.exp(-DT * neuron["g_L"] / neuron["C_m"])
        v = np.where(refrac > 0, v, v_new)
        fired = (refrac == 0) & (v > neuron["V_th"])
        v[fired] = neuron["V_reset"]
        refrac[fired] = steps_ref
        x[spikes[n], :] += 1.0
        out[n] = v
    return out, x, s


@pytest.mark.parametrize("backend", BACKENDS)
def test_nmda_synapse_matches_the_numpy_reference(backend):
    net, _ = load_file(EXAMPLES / "nmda.yaml")
    net.precision = "double"
    net.record_spikes("inputs")
    sim = net.build(backend=backend)
    v_init = sim.get("neurons", "v")[0].copy()
    steps = 3000
    sim.run(steps=steps)
    times, ids = sim.spikes("inputs")[0]  # the Poisson inputs' spikes drive the reference
    assert len(times) > 100
    step_of = np.rint(np.asarray(times) / DT).astype(int)
    spikes = [ids[step_of == n] for n in range(steps)]
    wu = net.projections["nmda"].wu_params
    neuron = net.populations["neurons"].params
    ref, x, s = nmda_reference(v_init, spikes, steps, wu, 100, 20, neuron)
    v = sim.recorded("neurons", "v")[:, 0]
    assert np.abs(v - ref).max() < 1e-9
    assert np.abs(sim.get("nmda", "s")[0].reshape(100, 20) - s).max() < 1e-12
    assert np.abs(sim.get("nmda", "x")[0].reshape(100, 20) - x).max() < 1e-12
    assert (ref == neuron["V_reset"]).any()  # the neurons fire


@pytest.mark.slow
def test_the_mg_block_makes_the_current_depend_on_v_post():
    """Near rest the magnesium block passes about 1/13 of the current: removing it (Mg = 0)
    multiplies the summed current."""
    current = {}
    for mg in (1.0, 0.0):
        net, _ = load_file(EXAMPLES / "nmda.yaml")
        net.projections["nmda"].wu_params["Mg"] = mg
        net.record_var("neurons", "I_nmda")
        sim = net.build()
        sim.run(steps=300)
        current[mg] = sim.recorded("neurons", "I_nmda")[-1].mean()
    assert current[0.0] > 5 * current[1.0] > 0


# -- YAML examples through the CLI ----------------------------------------------------------------


@pytest.mark.parametrize("example", ["gap_junctions.yaml", "nmda.yaml"])
def test_examples_run_with_the_cli_and_report_rates(example, capsys):
    import json

    from spikeforge.cli import main

    assert main(["run", str(EXAMPLES / example), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rates_hz"]["neurons"] > 0


# -- generated code -------------------------------------------------------------------------------


def test_generated_kernel_walks_incoming_synapses_and_names_the_equations():
    spec = generate(gap_network())
    assert [k.kind for k in spec.kernels][:2] == ["synapse_dynamics", "neuron_update"]
    text = render_network(spec, "cpu")
    assert "_sum_Igap += w*(-v_post + v_pre);  // summed: neurons.Igap = sum over incoming synapses of " \
           "w * (v_pre - v_post)" in text
    assert render_network(generate(gap_network()), "cpu") == text  # stable


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_synapse_dynamics_kernels_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net = load_file(EXAMPLES / "nmda.yaml")[0]
    pairs = ((0, 1, 2, 3), (1, 2, 3, 0))
    net.add_population("g", 4, gap_neuron())
    net.add_projection("gs", "g", "g", GAP, m.delta_curr("v"), FromList(*pairs))
    net.add_population("h", 4, gap_neuron())
    reads = WeightUpdateModel("reads", vars={"w": {"init": 1.0, "batched": True}},
                              on_pre="post_input += w * v_pre * v_post", on_post="w += 0.001 * v_pre")
    net.add_projection("r", "g", "h", reads, m.delta_curr("v"), FromList(*pairs))
    net.add_projection("o", "g", "h", GAP, m.delta_curr("v"), "one_to_one")
    for precision, arch in (("float", "sm_80"), ("double", "sm_90")):
        net.precision = precision
        result = build_cubin(render_network(generate(net), "cuda"), arch, name=net.name, describe=net.name)
        assert result.path.read_bytes()[:4] == b"\x7fELF"


# -- errors ---------------------------------------------------------------------------------------


def test_summed_variable_errors_name_model_and_field():
    net = Network("bad", dt=DT)
    net.add_population("n", 3, gap_neuron())
    missing = WeightUpdateModel("gap_missing", params={"w": W}, summed={"Ig": "w * (v_pre - v_post)"})
    with pytest.raises(ModelError, match=r"model 'gap_missing', field 'summed.Ig': .*no variable 'Ig'"):
        net.add_projection("a", "n", "n", missing, m.delta_curr("v"))
    state = WeightUpdateModel("gap_state", params={"w": W}, summed={"v": "w * v_pre"})
    with pytest.raises(ModelError, match=r"field 'summed.v': summed variable 'v' is computed by the neuron"):
        net.add_projection("a", "n", "n", state, m.delta_curr("v"))
    unknown = WeightUpdateModel("reads", params={"w": 1.0}, on_pre="post_input += w * u_post")
    with pytest.raises(ModelError, match=r"field 'on_pre': 'u_post': the postsynaptic neuron model 'gap_neuron'.* "
                                         r"no variable 'u'"):
        net.add_projection("a", "n", "n", unknown, m.delta_curr("v"))
    net.add_projection("a", "n", "n", GAP, m.delta_curr("v"))
    with pytest.raises(NetworkError, match=r"projection 'a' already sums into 'n.Igap'"):
        net.add_projection("b", "n", "n", GAP, m.delta_curr("v"))
    with pytest.raises(ModelError, match=r"field 'summed.Igap_post': name the postsynaptic neuron's variable "
                                         r"without '_post' \('Igap', not 'Igap_post'\)"):
        WeightUpdateModel("g2", params={"w": W}, summed={"Igap_post": "w"})
    with pytest.raises(ModelError, match=r"per synapse and per batch instance"):
        WeightUpdateModel("shared", vars={"s": {"init": 0.0, "per_element": False}}, equations="ds/dt = -s")


YAML = """\
name: bad
models:
  n:
    kind: neuron
    params: {v0: 1.05, tau: 10.0}
    vars: {v: 0.0, Igap: 0.0}
    equations: dv/dt = (v0 - v + Igap) / tau
    threshold: v > 1
    reset: v = 0
  gap:
    kind: weight_update
    params: {w: 0.02}
    on_pre: post_input += ON_PRE
    summed:
      TARGET: w * (v_pre - v_post)
populations:
  p: {size: 3, model: n}
projections:
  gaps: {pre: p, post: p, weight_update: gap, postsynaptic: delta}
"""


@pytest.mark.parametrize("target, on_pre, line, message", [
    ("Ig", "0", 15, "field 'summed.Ig': summed variable 'Ig': the postsynaptic neuron model 'n'"),
    ("v", "0", 15, "summed variable 'v' is computed by the neuron model 'n' itself"),
    ("Igap", "x_pre", 13, "field 'on_pre': 'x_pre': the presynaptic neuron model 'n' of projection 'gaps' has "
                          "no variable 'x'"),
])
def test_yaml_errors_give_file_line_and_field(target, on_pre, line, message):
    with pytest.raises(ConfigError) as err:
        load_network(YAML.replace("TARGET", target).replace("ON_PRE", on_pre), filename="bad.yaml")
    text = str(err.value)
    assert text.startswith(f"bad.yaml:{line}: ") and message in text and "\n" not in text


def test_yaml_two_projections_summing_into_one_variable_are_refused():
    text = YAML.replace("TARGET", "Igap").replace("ON_PRE", "0") + \
        "  more: {pre: p, post: p, weight_update: gap, postsynaptic: delta}\n"
    with pytest.raises(ConfigError, match=r"^bad.yaml:20: .*projection 'gaps' already sums into 'p.Igap'"):
        load_network(text, filename="bad.yaml")
