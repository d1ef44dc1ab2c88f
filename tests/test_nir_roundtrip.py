"""NIR round trip: a spikeforge network exported (``to_nir``, ``nir.write``) and imported back
(``from_nir``) is the same network. The weights come back bit for bit, and both networks,
simulated on the same inputs, give the same spikes and the same membranes step for step,
because the import reads the conventions the export wrote into the graph's metadata (dt, each
node's reset, ``exp_curr`` synapses, the readout's bias from the first step). Also through
``spikeforge export-nir``, ``import-nir`` and ``run``, and for a network trained on digits
(full suite)."""

import numpy as np
import pytest
import yaml

from spikeforge.cli import main
from spikeforge.config import load_network
from spikeforge.models import builtins as b
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network

nir = pytest.importorskip("nir")

from spikeforge.interop.nir import from_nir, to_nir, write_nir  # noqa: E402
from spikeforge.interop.nir_import import nir_plan  # noqa: E402

STEPS = 40
DT = 1.0  # ms
TAU_M = [10.0, 20.0, 15.0, 30.0]
BIAS = [0.3, -0.2]
TAU_SYN = 5.0
# The inputs: each of 3 channels on in about a third of the steps.
X = (np.random.default_rng(1).random((STEPS, 3)) < 0.35).astype(np.float64)


def _weights():
    rng = np.random.default_rng(0)
    rec = rng.normal(0.0, 0.2, (4, 4))
    np.fill_diagonal(rec, 0.0)
    return {"inp_hid": rng.normal(0.35, 0.2, 12), "hid_hid": rec.ravel(), "hid_cub": rng.normal(0.25, 0.1, 12),
            "cub_out": rng.normal(0.5, 0.5, 6)}


def tiny_network():
    """Inputs -> e-prop's LIF (reset by subtraction, recurrent) -> a LIF with exponential
    synaptic currents (a CubaLIF in NIR) -> a leaky readout with a bias (an LI and an Affine)."""
    w = _weights()
    net = Network("tiny", dt=DT)
    net.add_population("inp", 3, b.VALUE_INPUT)
    net.add_population("hid", 4, b.LIF_SUBTRACTIVE, params={"tau_m": TAU_M, "v_th": 0.6, "r_m": 5.0})
    net.add_population("cub", 3, b.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.1, "v_th": 0.3},
                       init={"v": 0.0})
    net.add_population("out", 2, b.LEAKY_READOUT, params={"tau_m": 25.0, "bias": BIAS})
    net.add_projection("inp_hid", "inp", "hid", b.SCALED, b.ONE_STEP_CURR, wu_init={"w": w["inp_hid"]})
    net.add_projection("hid_hid", "hid", "hid", b.STATIC, b.ONE_STEP_CURR, wu_init={"w": w["hid_hid"]})
    net.add_projection("hid_cub", "hid", "cub", b.STATIC, b.EXP_CURR, ps_params={"tau_syn": TAU_SYN},
                       wu_init={"w": w["hid_cub"]})
    net.add_projection("cub_out", "cub", "out", b.STATIC, b.ONE_STEP_CURR, wu_init={"w": w["cub_out"]})
    return net


# spikeforge's projection -> the import's (named after the populations it joins)
IMPORTED = {"inp_hid": "inp_to_hid", "hid_hid": "hid_to_hid", "hid_cub": "hid_to_cub", "cub_out": "cub_to_out"}


def simulate(net, x=X):
    net.add_timed_input("inp", "x", x, dt=net.dt)
    net.record_spikes("hid", "cub")
    for pop in ("hid", "cub", "out"):
        net.record_var(pop, "v")  # once: the import records its Output's v already
    sim = net.build()
    sim.run(steps=x.shape[0])
    return sim


def spike_raster(sim, pop, steps, size, dt=DT):
    raster = np.zeros((sim.batch_size, steps, size), bool)
    for k, (times, ids) in enumerate(sim.spikes(pop)):
        raster[k, np.round(times / dt).astype(int), ids] = True
    return raster


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """The network and its import from a .nir file, both simulated on X."""
    path = write_nir(tiny_network(), tmp_path_factory.mktemp("nir") / "tiny.nir")
    imported = from_nir(path)  # dt, resets and synapses from the graph's metadata
    original = tiny_network()
    return dict(path=path, original=original, imported=imported, sims=(simulate(original), simulate(imported)))


def test_the_import_reads_spikeforges_conventions_from_the_metadata(round_trip):
    info = round_trip["imported"].nir_import
    assert info.assumed["conventions"] == "spikeforge" and info.assumed["dt_ms"] == DT
    assert info.populations == {"inp": "inp", "hid": "hid", "cub": "cub", "out": "out"}
    assert info.outputs == {"out_output": ("out", "v")}
    models = {p: q.model.name for p, q in round_trip["imported"].populations.items()}
    # e-prop's reset by subtraction (v -= v_th, exported as v_reset = v_th - v_th) and the lif's
    # reset to a value; the CubaLIF a LIF again behind its exp_curr synapses
    assert models == {"inp": "value_input", "hid": "nir_lif_subtract", "cub": "nir_lif", "out": "nir_li_step"}
    assert round_trip["imported"].populations["hid"].model.reset[0].source == "v -= v_threshold - v_reset"


def test_weights_come_back_bit_for_bit(round_trip):
    original, imported = round_trip["original"], round_trip["imported"]
    for name, again in IMPORTED.items():
        q, r = original.projections[name], imported.projections[again]
        assert (r.pre.name, r.post.name) == (q.pre.name, q.post.name)
        assert r.connectivity.kind == "dense"
        np.testing.assert_array_equal(r.wu_vars["w"].init.values.ravel(), q.wu_vars["w"].init.values.ravel())
        # and as the built networks hold them (float)
        np.testing.assert_array_equal(round_trip["sims"][1].get(again, "w"), round_trip["sims"][0].get(name, "w"))
    # the readout's bias too (worked out from leaky_readout's step, (1 - kappa) bias / (1 - kappa))
    np.testing.assert_array_equal(np.asarray(imported.populations["out"].params["bias"]), BIAS)


def test_an_integrate_and_fire_neuron_round_trips():
    """A model without a leak exports as IF (r per second) and imports as nir_if, r per ms again."""
    model = NeuronModel("if_", params={"c": 2.0}, vars={"v": 0.0}, equations="dv/dt = c * i_syn",
                        threshold="v > 1", reset="v = 0")
    net = Network("if_net", dt=DT)
    net.add_population("inp", 2, b.VALUE_INPUT)
    net.add_population("ifs", 3, model)
    net.add_projection("p", "inp", "ifs", b.SCALED, b.ONE_STEP_CURR, wu_init={"w": np.arange(6.0)})
    graph = to_nir(net)
    assert isinstance(graph.nodes["ifs"], nir.IF)
    plan = nir_plan(graph)
    assert plan.network["populations"]["ifs"]["model"] == "nir_if"
    assert plan.network["populations"]["ifs"]["params"]["r"] == 2.0
    np.testing.assert_array_equal(plan.network["projections"]["inp_to_ifs"]["weight_update"]["init"]["w"],
                                  np.arange(6.0))


def test_spikes_and_membranes_are_the_same_step_for_step(round_trip):
    sims = round_trip["sims"]
    for pop, size in (("hid", 4), ("cub", 3)):
        rasters = [spike_raster(s, pop, STEPS, size) for s in sims]
        assert rasters[0].sum() >= 10, pop  # both layers fire
        np.testing.assert_array_equal(rasters[1], rasters[0])
        np.testing.assert_array_equal(sims[1].recorded(pop, "v"), sims[0].recorded(pop, "v"))


def test_a_readouts_bias_is_there_from_the_first_step(round_trip):
    """The readout's bias, exported as its Affine's bias, is the readout's parameter from step 0
    again (a graph from elsewhere switches it on when the inputs first reach the readout)."""
    original, imported = (s.recorded("out", "v")[:, 0] for s in round_trip["sims"])
    kappa = np.exp(-DT / 25.0)
    # step 0: nothing has arrived yet, v = (1 - kappa) bias
    np.testing.assert_allclose(original[0], (1 - kappa) * np.array(BIAS), rtol=1e-6)
    np.testing.assert_array_equal(imported, original)
    assert "timed_inputs" not in nir_plan(round_trip["path"]).network["populations"]["out"]


def test_exp_curr_comes_back_as_exp_curr(round_trip):
    """The CubaLIF that an exp_curr LIF exports as imports as that LIF with exp_curr synapses
    of its tau_syn and the same weights (not NIR's CubaLIF ODE, which differs at first order in
    dt / tau_syn): the same current and membrane, bit for bit."""
    q = round_trip["imported"].projections["hid_to_cub"]
    assert q.postsynaptic.name == "exp_curr"
    assert float(np.asarray(q.ps_params["tau_syn"])) == TAU_SYN
    original, imported = (s.recorded("cub", "v")[:, 0] for s in round_trip["sims"])
    assert np.abs(original).max() > 0.2
    np.testing.assert_array_equal(imported, original)


def test_without_the_metadata_it_imports_as_a_graph_from_elsewhere(round_trip):
    graph = nir.read(round_trip["path"])
    with pytest.raises(Exception, match="dt is required"):
        from_nir(graph, spikeforge_metadata=False)
    plan = nir_plan(graph, dt=1e-3, spikeforge_metadata=False)
    pops, models = plan.network["populations"], plan.network["models"]
    assert plan.info.assumed["conventions"] == "nir" and plan.info.assumed["reset"] == "to_value"
    assert pops["cub"]["model"] == "nir_cubalif" and pops["hid"]["model"] == "nir_lif"
    assert models["nir_lif"]["reset"] == "v = v_reset"
    assert plan.network["projections"]["hid_to_cub"]["postsynaptic"] == "one_step_curr"
    # the bias from the step the inputs reach the readout (three projections): snnTorch's timing
    rows = pops["out"]["timed_inputs"]["bias"]["values"]
    assert len(rows) == 4 and not rows[:3].any() and np.allclose(rows[3], BIAS)
    # an explicit reset applies to every node, the metadata's or not
    assert nir_plan(graph, reset="subtract").network["models"]["nir_lif"]["reset"] == "v -= v_threshold"


def test_another_dt_scales_the_exp_curr_weights_by_the_graphs_w_in(round_trip):
    # w_in = 1 / (1 - exp(-1 / 5)) was written for dt = 1 ms; at 0.5 ms a one-step input w raises
    # NIR's I by w_in w (1 - exp(-0.5 / 5)), which becomes exp_curr's jump
    plan = nir_plan(round_trip["path"], dt=0.5e-3)
    w = plan.network["projections"]["hid_to_cub"]["weight_update"]["init"]["w"]
    factor = -np.expm1(-0.5 / TAU_SYN) / -np.expm1(-DT / TAU_SYN)
    np.testing.assert_allclose(w, _weights()["hid_cub"] * factor, rtol=1e-12)
    assert any("exported with 1 ms" in n for n in plan.info.notes)


NO_RESET = NeuronModel("lif_no_reset", params={"tau_m": 20.0, "v_th": 0.6, "r_m": 10.0}, vars={"v": 0.0},
                       equations="dv/dt = (r_m * i_syn - v) / tau_m", threshold="v > v_th")


def no_reset_network():
    """The time-parallel method's neuron: spikes while v > v_th, no reset."""
    net = Network("no_reset", dt=DT)
    net.add_population("inp", 3, b.VALUE_INPUT)
    net.add_population("hid", 4, NO_RESET, params={"v_th": [0.3, 0.4, 0.5, 0.6]})
    net.add_population("out", 2, b.LEAKY_READOUT, params={"tau_m": 20.0, "bias": [0.1, -0.1]})
    rng = np.random.default_rng(2)
    net.add_projection("inp_hid", "inp", "hid", b.SCALED, b.ONE_STEP_CURR, wu_init={"w": rng.normal(0.1, 0.1, 12)})
    net.add_projection("hid_out", "hid", "out", b.STATIC, b.ONE_STEP_CURR, wu_init={"w": rng.normal(0.3, 0.3, 8)})
    return net


def test_a_spiking_model_without_a_reset_comes_back_as_one_population():
    """Exported as an LI and a Threshold; with spikeforge's metadata they import as one
    population again (an LI feeding a Threshold is refused otherwise: an LI does not spike)."""
    graph = to_nir(no_reset_network(), outputs=["hid", "out"])
    assert isinstance(graph.nodes["hid"], nir.LI) and isinstance(graph.nodes["hid_threshold"], nir.Threshold)
    with pytest.raises(Exception, match="'hid' \\(LI\\): it feeds 'hid_threshold', but it does not spike"):
        from_nir(graph, dt=1e-3, spikeforge_metadata=False)
    imported = from_nir(graph)
    info = imported.nir_import
    assert info.populations["hid"] == info.populations["hid_threshold"] == "hid"
    assert info.outputs == {"hid_output": ("hid", "spikes"), "out_output": ("out", "v")}
    assert info.steps_behind == {"hid_output": 1, "out_output": 2}
    hid = imported.populations["hid"]
    assert hid.model.name == "nir_li_threshold" and not hid.model.reset
    assert list(imported.projections) == ["inp_to_hid", "hid_to_out"]
    np.testing.assert_array_equal(np.asarray(hid.params["v_threshold"]), [0.3, 0.4, 0.5, 0.6])


@pytest.mark.slow  # builds two more networks; the import's population and threshold are checked in the quick loop
def test_a_spiking_model_without_a_reset_gives_the_same_spikes_after_the_round_trip():
    x = (np.random.default_rng(3).random((STEPS, 3)) < 0.4).astype(np.float64)
    sims = [simulate_layers(net, x) for net in (no_reset_network(), from_nir(to_nir(no_reset_network())))]
    rasters = [spike_raster(sim, "hid", STEPS, 4) for sim in sims]
    assert rasters[0].sum() >= 10
    np.testing.assert_array_equal(rasters[1], rasters[0])
    np.testing.assert_array_equal(sims[1].recorded("out", "v"), sims[0].recorded("out", "v"))


def simulate_layers(net, x):
    net.add_timed_input("inp", "x", x, dt=net.dt)
    net.record_spikes("hid")
    net.record_var("out", "v")
    sim = net.build()
    sim.run(steps=x.shape[0])
    return sim


NETWORK_YAML = """\
dt: 1.0
duration: 40.0
populations:
  inp: {size: 3, model: value_input, timed_inputs: {x: {values: X, dt: 1.0}}}
  hid: {size: 4, model: lif_subtractive, params: {tau_m: [10.0, 20.0, 15.0, 30.0], v_th: 0.6, r_m: 5.0},
        record: [spikes, v]}
  cub: {size: 3, model: lif, params: {tau_m: 20.0, v_rest: 0.0, v_reset: 0.1, v_th: 0.3}, init: {v: 0.0},
        record: [spikes, v]}
  out: {size: 2, model: leaky_readout, params: {tau_m: 25.0, bias: [0.3, -0.2]}, record: [v]}
projections:
  inp_hid: {pre: inp, post: hid, weight_update: {model: scaled, init: {w: W_inp_hid}}, postsynaptic: one_step_curr}
  hid_hid: {pre: hid, post: hid, weight_update: {model: static, init: {w: W_hid_hid}}, postsynaptic: one_step_curr}
  hid_cub: {pre: hid, post: cub, weight_update: {model: static, init: {w: W_hid_cub}},
            postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}}
  cub_out: {pre: cub, post: out, weight_update: {model: static, init: {w: W_cub_out}}, postsynaptic: one_step_curr}
"""


@pytest.mark.slow  # the three commands over the round trip the quick loop checks in Python; compiles two programs
def test_export_import_and_run_from_the_command_line(tmp_path, capsys):
    text = NETWORK_YAML.replace("X", str(X.tolist()))
    for name, w in _weights().items():
        text = text.replace(f"W_{name}", str([float(v) for v in w]))
    original = tmp_path / "tiny.yaml"
    original.write_text(text)
    graph, back = tmp_path / "tiny.nir", tmp_path / "back.yaml"
    assert main(["export-nir", str(original), "--out", str(graph)]) == 0
    assert main(["import-nir", str(graph), "--out", str(back)]) == 0  # dt from the graph's metadata
    out = capsys.readouterr().out
    assert "dt = 0.001 s" in out and "spikeforge's conventions" in out
    # the imported network's input population takes the same values; record what the original does
    spec = yaml.safe_load(back.read_text())
    spec["duration"] = 40.0
    spec["populations"]["inp"]["timed_inputs"] = {"x": {"values": X.tolist(), "dt": 1.0}}
    for pop in ("hid", "cub"):
        spec["populations"][pop]["record"] = ["spikes", "v"]
    back.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert load_network(back)[0].populations["cub"].model.name == "nir_lif"
    saved = []
    for net in (original, back):
        saved.append(tmp_path / f"{net.stem}.npz")
        assert main(["run", str(net), "--save", str(saved[-1])]) == 0
    a, c = (np.load(p) for p in saved)
    assert a["spikes/hid/times"].size >= 10 and a["spikes/cub/times"].size >= 10
    for key in ("spikes/hid/times", "spikes/hid/ids", "spikes/cub/times", "spikes/cub/ids", "vars/hid/v",
                "vars/cub/v", "vars/out/v"):
        np.testing.assert_array_equal(c[key], a[key], err_msg=key)


DIGITS_JOB = """\
name: digits_nir
dt: 1.0
data:
  kind: digits
  options: {encoding: latency, t_max: 20.0, duration: 40.0}
  test_fraction: 0.2
  seed: 0
network:
  hidden: {model: lif_subtractive, size: 32, params: {tau_m: 20.0, v_th: 0.6, r_m: 10.0}}
  recurrent: true
  tau_out: 30.0
  regularisation: {rate: 1.0, target_hz: 30.0}
training:
  epochs: 2
  batch_size: 32
  lr: 0.005
  seed: 1
  checkpoint: run.npz
"""


@pytest.mark.slow  # trains on digits (two e-prop epochs); the round trip itself is checked in the quick loop
def test_a_network_trained_on_digits_round_trips_with_the_same_spikes(tmp_path, capsys):
    """Train (e-prop, a recurrent LIF layer) -> ``spikeforge export-nir`` -> ``from_nir``: the
    trained weights bit for bit, and on 16 held-out digits the same hidden spikes and readout
    as the trained network itself, simulated by spikeforge."""
    from spikeforge.interop.nir_export import trainer_of_job
    from spikeforge.training.config import load_training
    from spikeforge.training.network_runtime import translate

    job_file = tmp_path / "job.yaml"
    job_file.write_text(DIGITS_JOB)
    assert main(["train", str(job_file), "--json", "--no-progress"]) == 0
    graph_file = tmp_path / "digits.nir"
    assert main(["export-nir", str(job_file), "--out", str(graph_file)]) == 0  # the job's checkpoint
    capsys.readouterr()
    trainer = trainer_of_job(job_file, tmp_path / "run.npz")
    trained = trainer.weights
    assert trainer.epoch == 2
    assert not np.array_equal(trained["w_in"], trainer_of_job(job_file).weights["w_in"])  # it learnt

    job = load_training(job_file)
    samples = list(job.test)[:16]
    x = job.test.to_dense(samples).x.astype(np.float64)  # (steps, 16, 64) spikes
    batch, steps = x.shape[1], x.shape[0]
    # the trained network, as spikeforge simulates it: the trainer's network with its weights
    original = translate(job.config, batch, 0, 1.0, trainer.optimizer)[0].network
    imported = from_nir(graph_file, batch_size=batch)
    assert imported.nir_import.assumed["conventions"] == "spikeforge"
    assert {p.model.name for p in imported.populations.values()} == {"value_input", "nir_lif_subtract", "nir_li_step"}
    sims = []
    for net in (original, imported):
        net.add_timed_input("inp", "x", x, dt=net.dt)
        net.record_spikes("hid")
        net.record_var("out", "v")
        sims.append(net.build())
    for name, wt in trainer.runtime.names.items():
        value = wt.to_compiled(trained[name])
        if wt.array == "out_p_bias":
            sims[0].set_param("out", "bias", value)
        elif wt.array[:-2] in original.projections:
            sims[0].set(wt.array[:-2], "w", value)
    pairs = {"inp_hid": "inp_to_hid", "hid_hid": "hid_to_hid", "hid_out": "hid_to_out"}
    for name, again in pairs.items():
        np.testing.assert_array_equal(sims[1].get(again, "w"), sims[0].get(name, "w"), err_msg=name)
        w = imported.projections[again].wu_vars["w"].init.values.ravel()  # float64, as the graph holds it
        np.testing.assert_array_equal(w.astype(np.float32), sims[0].get(name, "w").ravel())
    np.testing.assert_array_equal(sims[1].get_param("out", "bias"), sims[0].get_param("out", "bias"))
    for sim in sims:
        sim.run(steps=steps)
    rasters = [spike_raster(sim, "hid", steps, 32) for sim in sims]
    assert rasters[0].sum() > 100  # the hidden layer fires
    np.testing.assert_array_equal(rasters[1], rasters[0])
    readouts = [sim.recorded("out", "v") for sim in sims]
    np.testing.assert_array_equal(readouts[1], readouts[0])
    # and the imported network classifies as the trainer does: the mean readout over the window
    predicted = readouts[1][job.test.readout_mask].mean(axis=0).argmax(axis=-1)
    np.testing.assert_array_equal(predicted, trainer.predict(job.test)[:batch])
