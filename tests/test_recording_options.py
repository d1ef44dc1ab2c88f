"""Recording a subset of neurons, every k-th step, and the population rate: each equals the
matching slice of a full recording, on cpu and cuda-emu alike."""

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.networks import cuba_network
from spikeforge.runtime import memory
from tests.conftest import BACKENDS_SLOW_EMU, nvcc_path

N = 120  # cuba_network(n=N): 96 excitatory neurons


def _network(batch_size=2, var_opts=None, spike_neurons=None, rate=False, precision="float"):
    net = cuba_network(n=N, batch_size=batch_size, precision=precision)
    exc = next(iter(net.populations))
    net.record_var(exc, "v", **(var_opts or {}))
    net.record_spikes(exc, neurons=spike_neurons)
    if rate:
        net.record_rate(exc)
    return net, exc


def _run(sim, pieces=(7, 30, 13)):
    for steps in pieces:  # several runs: rows of every-k recordings must line up across them
        sim.run(steps=steps)
    return sim


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_subset_and_every_k_equal_slices_of_the_full_recording(backend):
    net, exc = _network()
    full = _run(net.build(backend=backend))
    net2, _ = _network(var_opts={"neurons": [3, 90, 7], "every": 4})
    part = _run(net2.build(backend=backend))
    v = full.recorded(exc, "v")
    assert v.shape == (50, 2, 96)
    steps = part.recorded_steps(exc, "v")
    assert list(steps) == list(range(0, 50, 4))
    got = part.recorded(exc, "v")
    assert got.shape == (13, 2, 3)
    np.testing.assert_array_equal(got, v[steps][:, :, [3, 90, 7]])
    np.testing.assert_array_equal(part.recorded_indices(exc, "v"), [3, 90, 7])
    np.testing.assert_allclose(part.recorded_times(exc, "v"), (steps + 1) * net.dt)


@pytest.mark.parametrize("selection, expected", [
    ({"start": 10, "stop": 60, "step": 5}, np.arange(10, 60, 5)),
    ({"step": 32}, np.array([0, 32, 64])),
    (slice(90, None), np.arange(90, 96)),
    (range(5, 1, -2), np.array([5, 3])),
])
def test_neuron_slices(selection, expected):
    net, exc = _network(var_opts={"neurons": selection, "every": 3})
    sim = _run(net.build(), (20,))
    full_net, _ = _network()
    full = _run(full_net.build(), (20,))
    np.testing.assert_array_equal(sim.recorded_indices(exc, "v"), expected)
    np.testing.assert_array_equal(sim.recorded(exc, "v"), full.recorded(exc, "v")[::3][:, :, expected])


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_spikes_of_a_subset_and_the_population_rate(backend):
    net, exc = _network(batch_size=3, rate=True)
    full = _run(net.build(backend=backend), (70, 130))
    chosen = np.arange(1, 96, 3)
    net2, _ = _network(batch_size=3, spike_neurons=list(chosen))
    part = _run(net2.build(backend=backend), (70, 130))
    rate = full.population_rate(exc)
    assert rate.shape == (200, 3)
    total = kept = 0
    for b, ((t, ids), (t2, ids2)) in enumerate(zip(full.spikes(exc), part.spikes(exc), strict=True)):
        steps = np.round(t / net.dt).astype(int)
        counts = np.bincount(steps, minlength=200)
        np.testing.assert_allclose(rate[:, b], counts / (96 * net.dt * 1e-3))
        keep = np.isin(ids, chosen)
        np.testing.assert_array_equal(ids2, ids[keep])
        np.testing.assert_array_equal(t2, t[keep])
        total += ids.size
        kept += ids2.size
    assert total > 20 and 0 < kept < total  # there are spikes, and the subset leaves some out
    np.testing.assert_array_equal(part.recorded_indices(exc), chosen)
    binned = full.population_rate(exc, bin_ms=1.0)
    assert binned.shape == (20, 3)
    np.testing.assert_allclose(binned, rate.reshape(20, 10, 3).mean(axis=1))


def test_save_holds_steps_indices_and_rates(tmp_path):
    net, exc = _network(var_opts={"neurons": [1, 2], "every": 5}, spike_neurons={"step": 2}, rate=True)
    sim = _run(net.build(), (23,))
    with np.load(sim.save(tmp_path / "out.npz")) as data:
        np.testing.assert_array_equal(data[f"vars/{exc}/v"], sim.recorded(exc, "v"))
        np.testing.assert_array_equal(data[f"vars/{exc}/v/steps"], [0, 5, 10, 15, 20])
        np.testing.assert_array_equal(data[f"vars/{exc}/v/indices"], [1, 2])
        np.testing.assert_allclose(data[f"vars/{exc}/v/times"], np.array([1, 6, 11, 16, 21]) * net.dt)
        np.testing.assert_array_equal(data[f"rates/{exc}"], sim.population_rate(exc))
        np.testing.assert_array_equal(data[f"spikes/{exc}/indices"], np.arange(0, 96, 2))


def test_memory_check_counts_only_what_is_kept():
    net, _ = _network(batch_size=4, var_opts={"neurons": [0, 1, 2], "every": 10})
    spec = generate(net)
    (r,) = [r for r in spec.recorded_vars if r["kind"] == "var"]
    assert memory.recording_bytes(spec, 4, 1000, r) == 100 * 4 * 3 * 4
    full_net, _ = _network(batch_size=4)
    (f,) = generate(full_net).recorded_vars
    assert memory.recording_bytes(spec, 4, 1000, f) == 1000 * 4 * 96 * 4


def test_bad_recording_options_are_one_line_errors():
    net = cuba_network(n=N)
    exc = next(iter(net.populations))
    for kwargs, message in [
        ({"neurons": [0, 96]}, "neuron index 96 is out of range"),
        ({"neurons": [1, 1]}, "names a neuron twice"),
        ({"neurons": []}, "is empty"),
        ({"neurons": {"step": 0}}, "step must be positive"),
        ({"neurons": {"every": 2}}, "unknown key"),
        ({"every": 0}, "every must be a positive number"),
        ({"every": 1.5}, "every must be a positive number"),
    ]:
        with pytest.raises(NetworkError, match=message):
            net.record_var(exc, "v", **kwargs)
    with pytest.raises(NetworkError, match="is not recorded"):
        net.build().population_rate(exc)


def test_yaml_record_options(tmp_path):
    from spikeforge.config import load_network

    text = """
name: rec
dt: 0.1
populations:
  src:
    size: 40
    model: poisson
    init: {rate: 300.0}
    record: [population_rate, {spikes: {neurons: {start: 0, stop: 40, step: 4}}}, {rate: {every: 5}}]
  out:
    size: 6
    model: lif
    record: {v: {neurons: [5, 0], every: 3}, spikes: true, rate: true}
projections:
  p: {pre: src, post: out, weight_update: {model: static_constant, params: {w: 2.0}}, postsynaptic: delta}
"""
    net, cfg = load_network(text)
    sim = net.build()
    sim.run(steps=20)
    assert sim.recorded("out", "v").shape == (7, 1, 2)
    np.testing.assert_array_equal(sim.recorded_indices("out", "v"), [5, 0])
    assert sim.recorded("src", "rate").shape == (4, 1, 40)  # the Poisson variable named rate
    assert sim.population_rate("src").shape == (20, 1)
    assert sim.population_rate("out").shape == (20, 1)
    assert np.all(sim.spikes("src")[0][1] % 4 == 0)
    assert cfg.record_vars == [("src", "rate"), ("out", "v")]
    bad = text.replace("neurons: [5, 0]", "neurons: [5, 6]")
    with pytest.raises(ConfigError,
                       match=r"<string>:13: populations.out.record.v.neurons: neuron index 6 is out of range \[0, 6\)"):
        load_network(bad)
    bad = text.replace("every: 3}", "every: 3, often: 2}")
    with pytest.raises(ConfigError, match=r":13: .*often"):
        load_network(bad)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_recording_kernels_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net, _ = _network(var_opts={"neurons": [4, 5], "every": 7}, spike_neurons=[1, 2], rate=True)
    result = build_cubin(render_network(generate(net), "cuda"), "sm_80", name="recording_options",
                         describe="recording options")
    assert result.path.read_bytes()[:4] == b"\x7fELF"


def test_cli_rates_count_only_the_recorded_neurons(tmp_path, capsys):
    import json

    from spikeforge.cli import main

    path = tmp_path / "sub.yaml"
    path.write_text("""
name: sub
dt: 0.1
duration: 50
populations:
  src:
    size: 40
    model: poisson
    init: {rate: 100.0}
    record: {spikes: {neurons: {stop: 10}}}
""")
    assert main(["run", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 40 < out["rates_hz"]["src"] < 250  # 100 Hz; over all 40 neurons it would read 25 Hz
