"""Timed inputs (Brian2's TimedArray convention): a parameter that follows an array over
time, each row held for the array's dt, the last row after the end."""

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_file, load_network
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.timed import TimedArray
from tests.conftest import nvcc_path

DT, TAU = 0.1, 10.0
DRIVEN = NeuronModel("driven", params={"tau": TAU, "I_ext": 0.0}, vars={"v": 0.0},
                     equations="dv/dt = (I_ext - v) / tau")


def _network(values, array_dt, size=3, batch_size=2, name="timed"):
    net = Network(name, dt=DT, batch_size=batch_size, precision="double")
    net.add_population("p", size, DRIVEN)
    net.add_timed_input("p", "I_ext", values, array_dt)
    net.record_var("p", "v")
    return net


def _expected(values, array_dt, steps, size, batch_size):
    """numpy: v after each step, the input held at row floor(t / array_dt) (the last after the end)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim == 2:
        values = np.broadcast_to(values[:, None, :], (values.shape[0], batch_size, values.shape[1]))
    v = np.zeros((batch_size, size))
    decay = np.exp(-DT / TAU)
    out = []
    for n in range(steps):
        row = min(int(np.floor(n * DT / array_dt + 1e-9)), values.shape[0] - 1)
        drive = np.broadcast_to(values[row], (batch_size, size))
        v = drive + (v - drive) * decay  # exact for an input constant over the step
        out.append(v)
    return np.array(out)


@pytest.mark.parametrize("shape", ["one value", "per neuron", "per instance"])
def test_piecewise_constant_drive_matches_the_exact_solution(backend, shape):
    rng = np.random.default_rng(1)
    values = {"one value": np.array([1.0, 5.0, -2.0, 3.0]),
              "per neuron": rng.normal(size=(4, 3)),
              "per instance": rng.normal(size=(4, 2, 1))}[shape]
    net = _network(values, 0.5, size=3)
    sim = net.build(backend=backend)
    sim.run(steps=17)
    sim.run(steps=13)  # 30 steps = 3 ms, past the array's end at 2 ms
    np.testing.assert_allclose(sim.recorded("p", "v"), _expected(values, 0.5, 30, 3, 2), rtol=1e-12, atol=1e-12)


def test_array_dt_not_a_multiple_of_dt_and_shorter_than_dt():
    for array_dt in (0.25, 0.05):
        values = np.arange(12.0)
        sim = _network(values, array_dt, size=1, batch_size=1).build()
        sim.run(steps=20)
        np.testing.assert_allclose(sim.recorded("p", "v"), _expected(values, array_dt, 20, 1, 1), rtol=1e-12)


def test_a_new_array_of_the_same_layout_does_not_recompile():
    a = _network(np.array([1.0, 2.0]), 0.5, name="same")
    b = _network(np.array([7.0, -1.0, 4.0, 0.5, 2.0]), 0.2, name="same")
    assert a.generated_code() == b.generated_code()
    assert a.generated_code("cuda") == b.generated_code("cuda")
    sim_a = a.build()
    sim_b = b.build()
    assert sim_b.from_cache
    sim_b.run(steps=12)
    np.testing.assert_allclose(sim_b.recorded("p", "v"), _expected(b.timed_inputs[("p", "I_ext")].values, 0.2,
                                                                   12, 3, 2), rtol=1e-12)
    # and between runs of one simulation, also across a reset
    sim_a.set_timed_input("p", "I_ext", np.array([3.0, -3.0, 1.0]), dt=0.3)
    sim_a.reset()
    sim_a.run(steps=12)
    np.testing.assert_allclose(sim_a.recorded("p", "v"), _expected([3.0, -3.0, 1.0], 0.3, 12, 3, 2), rtol=1e-12)
    with pytest.raises(NetworkError, match="width and batch must match"):
        sim_a.set_timed_input("p", "I_ext", np.ones((3, 3)), dt=0.3)


def test_bad_timed_inputs_are_one_line_errors():
    net = Network("bad", dt=DT, batch_size=2)
    net.add_population("p", 3, DRIVEN)
    for args, message in [
        (("I_x", [1.0], 0.5), "model 'driven' has no parameter 'I_x'"),
        (("I_ext", np.ones((4, 2)), 0.5), "the array has 2 columns; expected 1"),
        (("I_ext", np.ones((4, 3, 3)), 0.5), "has 3 batch instances"),
        (("I_ext", [1.0, np.nan], 0.5), "values must be finite"),
        (("I_ext", [1.0], 0.0), "dt must be a positive number"),
        (("I_ext", [], 0.5), "values must have shape"),
    ]:
        with pytest.raises(NetworkError, match=message):
            net.add_timed_input("p", *args)
    derived = NeuronModel("derived", params={"tau": TAU, "I_ext": 0.0}, derived={"half": "I_ext / 2"},
                          vars={"v": 0.0}, equations="dv/dt = (half - v) / tau")
    net.add_population("q", 3, derived)
    with pytest.raises(NetworkError, match="derived parameter 'half'"):
        net.add_timed_input("q", "I_ext", TimedArray([1.0], 0.5))


YAML = """\
name: timed_yaml
dt: 0.1
precision: double
batch_size: 2
models:
  driven:
    kind: neuron
    params: {tau: 10.0, I_ext: 0.0}
    vars: {v: 0.0}
    equations: dv/dt = (I_ext - v) / tau
populations:
  p:
    size: 3
    model: driven
    record: [v]
    timed_inputs:
      I_ext: {file: drive.npz, key: I, dt: 0.5}
"""


def test_yaml_loads_the_array_from_an_npz_next_to_the_file(tmp_path):
    values = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0], [2.0, 2.0, 2.0]])
    np.savez(tmp_path / "drive.npz", I=values)
    (tmp_path / "net.yaml").write_text(YAML)
    net, _ = load_file(tmp_path / "net.yaml")
    sim = net.build()
    sim.run(steps=20)
    np.testing.assert_allclose(sim.recorded("p", "v"), _expected(values, 0.5, 20, 3, 2), rtol=1e-12)
    inline = YAML.replace("{file: drive.npz, key: I, dt: 0.5}", "{values: [1.0, 2.0], dt: 0.5}")
    net, _ = load_network(inline)
    sim = net.build()
    sim.run(steps=10)
    np.testing.assert_allclose(sim.recorded("p", "v"), _expected([1.0, 2.0], 0.5, 10, 3, 2), rtol=1e-12)


@pytest.mark.parametrize("edit, message", [
    (("drive.npz", "missing.npz"), r"net.yaml:17: populations.p.timed_inputs.I_ext.file: no such file"),
    (("key: I,", "key: J,"),
     r"net.yaml:17: populations.p.timed_inputs.I_ext.key: .* has no array 'J' \(arrays: I, W\)"),
    (("key: I,", "key: W,"), r"net.yaml:17: .*timed input 'I_ext': the array has 2 columns; expected 1 .* or 3"),
    (("I_ext: {", "I_x: {"), r"net.yaml:17: .*model 'driven' has no parameter 'I_x'"),
    (("dt: 0.5}", "dt: -1}"), r"net.yaml:17: populations.p.timed_inputs.I_ext.dt: must be positive"),
    (("key: I, ", ""), r"net.yaml:17: populations.p.timed_inputs.I_ext: file needs key"),
])
def test_yaml_errors_name_file_line_and_field(tmp_path, edit, message):
    np.savez(tmp_path / "drive.npz", I=np.ones(4), W=np.ones((4, 2)))
    (tmp_path / "net.yaml").write_text(YAML.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        load_file(tmp_path / "net.yaml")


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_timed_input_kernels_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net = _network(np.ones((5, 2, 3)), 0.5)
    result = build_cubin(render_network(generate(net), "cuda"), "sm_80", name="timed_array", describe="timed array")
    assert result.path.read_bytes()[:4] == b"\x7fELF"
