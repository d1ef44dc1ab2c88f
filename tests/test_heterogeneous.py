"""Heterogeneous parameters (per element: arrays, {values, counts}, initialisers, expressions),
variables initialised by expressions, dynamic parameters (set between runs without
recompiling) and per-batch-instance values (a batch is a parameter sweep)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge import rng
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_file
from spikeforge.errors import ConfigError, ModelError, NetworkError
from spikeforge.network import FixedProbability, Network
from spikeforge.runtime.simulation import Simulation
from tests.conftest import BACKENDS_SLOW_EMU, nvcc_path

N_EXC, N_INH = 40, 10


def _reference_network(ref_sim, batch_size=1):
    """The same network with every per-element value given as an array."""
    net = Network("izh", dt=0.5, seed=5, batch_size=batch_size, precision="double")
    for name, size in (("exc", N_EXC), ("inh", N_INH)):
        params = {k: ref_sim.get_param(name, k) for k in "abcd"}
        u0 = ref_sim.get(name, "u")[0]
        net.add_population(name, size, m.IZHIKEVICH, params=params, init={"v": -65.0, "u": list(u0)},
                           record_spikes=True)
    for q in ("e", "i"):
        pre = "exc" if q == "e" else "inh"
        net.add_projection(q, pre, "exc", m.STATIC_CONSTANT, m.DELTA_CURR, FixedProbability(0.3),
                           wu_params={"w": ref_sim.get_param(q, "w")})
    for name in ("exc", "inh"):
        amp = ref_sim.get_param("drive_exc", "amp") if name == "exc" else 2.0
        net.add_current_source(f"drive_{name}", name, m.DC, params={"amp": amp})
    net.record_var("exc", "v")
    return net


def izhikevich_expressions(batch_size=1):
    net = Network("izh", dt=0.5, seed=5, batch_size=batch_size, precision="double")
    exc = dict(params={"a": 0.02, "b": 0.2, "c": "-65 + 15*r**2", "d": "8 - 6*r**2"}, draws={"r": "rand()"})
    inh = dict(params={"a": "0.02 + 0.08*r", "b": "0.25 - 0.05*r", "c": -65.0, "d": 2.0}, draws={"r": "rand()"})
    for name, size, kw in (("exc", N_EXC, exc), ("inh", N_INH, inh)):
        net.add_population(name, size, m.IZHIKEVICH, init={"v": -65.0, "u": "b*v"}, record_spikes=True, **kw)
    net.add_projection("e", "exc", "exc", m.STATIC_CONSTANT, m.DELTA_CURR, FixedProbability(0.3),
                       wu_params={"w": "0.5*rand()"})
    net.add_projection("i", "inh", "exc", m.STATIC_CONSTANT, m.DELTA_CURR, FixedProbability(0.3),
                       wu_params={"w": "-rand()*(1 + j/N_post)"})
    for name in ("exc", "inh"):
        net.add_current_source(f"drive_{name}", name, m.DC, params={"amp": "6 + 5*randn()" if name == "exc" else 2.0})
    net.record_var("exc", "v")
    return net


def test_izhikevich_values_match_numpy_with_the_same_draws():
    net = izhikevich_expressions()
    sim = net.build()
    exc, inh = net.populations["exc"], net.populations["inh"]
    r_exc = rng.uniform(net.seed, np.arange(N_EXC), 0, 0, rng.init_stream_id(exc.id, 0x8000), dtype=np.float64)
    r_inh = rng.uniform(net.seed, np.arange(N_INH), 0, 0, rng.init_stream_id(inh.id, 0x8000), dtype=np.float64)
    np.testing.assert_array_equal(sim.get_param("exc", "c"), -65 + 15 * r_exc**2)
    np.testing.assert_array_equal(sim.get_param("exc", "d"), 8 - 6 * r_exc**2)
    assert sim.get_param("exc", "a") == 0.02 and sim.get_param("inh", "c") == -65.0
    np.testing.assert_array_equal(sim.get_param("inh", "a"), 0.02 + 0.08 * r_inh)
    np.testing.assert_array_equal(sim.get_param("inh", "b"), 0.25 - 0.05 * r_inh)
    np.testing.assert_array_equal(sim.get("exc", "u"), np.full((1, N_EXC), 0.2 * -65.0))
    np.testing.assert_array_equal(sim.get("inh", "u")[0], (0.25 - 0.05 * r_inh) * -65.0)
    cs = net.current_sources["drive_exc"]
    z = rng.normal(net.seed, np.arange(N_EXC), 0, 0, rng.init_stream_id(cs.id, 0x8000), dtype=np.float64)
    np.testing.assert_allclose(sim.get_param("drive_exc", "amp"), 6 + 5 * z, rtol=0, atol=1e-12)
    for name in ("e", "i"):
        q = net.projections[name]
        u = rng.uniform(net.seed, np.arange(q.n_synapses), 0, 0, rng.init_stream_id(q.id, 0x8000), dtype=np.float64)
        expected = 0.5 * u if name == "e" else -u * (1 + q.rows.post_ind / N_EXC)
        np.testing.assert_allclose(sim.get_param(name, "w"), expected, rtol=1e-15, atol=0)  # sympy's order


def test_izhikevich_run_equals_the_same_values_given_as_arrays(backend):
    sim = izhikevich_expressions().build(backend=backend)
    ref = _reference_network(sim).build(backend=backend)
    assert "p_c[_i]" in sim.source and "p_w[_k]" in sim.source  # read per neuron and per synapse
    sim.run(steps=400)
    ref.run(steps=400)
    spikes, ref_spikes = sim.spikes("exc")[0], ref.spikes("exc")[0]
    assert spikes[1].size > 20  # the network is active
    np.testing.assert_array_equal(spikes[0], ref_spikes[0])
    np.testing.assert_array_equal(spikes[1], ref_spikes[1])
    np.testing.assert_array_equal(sim.recorded("exc", "v"), ref.recorded("exc", "v"))


IZH_YAML = """\
name: izh
dt: 0.5
seed: 5
precision: double
populations:
  exc:
    size: 40
    model: izhikevich
    draws: {r: "rand()"}
    params: {a: 0.02, b: 0.2, c: "-65 + 15*r**2", d: "8 - 6*r**2"}
    init: {v: -65.0, u: "b*v"}
    record: [spikes]
  inh:
    size: 10
    model: izhikevich
    draws: {r: "rand()"}
    params: {a: "0.02 + 0.08*r", b: "0.25 - 0.05*r", c: -65.0, d: 2.0}
    init: {v: -65.0, u: "b*v"}
    record: [spikes]
current_sources:
  drive_exc: {population: exc, model: dc, params: {amp: "6 + 5*randn()"}}
  drive_inh: {population: inh, model: dc, params: {amp: 2.0}}
projections:
  e:
    pre: exc
    post: exc
    connectivity: {fixed_probability: 0.3}
    weight_update: {model: static_constant, params: {w: "0.5*rand()"}}
    postsynaptic: delta
  i:
    pre: inh
    post: exc
    connectivity: {fixed_probability: 0.3}
    weight_update: {model: static_constant, params: {w: "-rand()*(1 + j/N_post)"}}
    postsynaptic: delta
"""


def test_izhikevich_in_yaml_equals_the_python_api(tmp_path):
    path = tmp_path / "izh.yaml"
    path.write_text(IZH_YAML)
    net, _ = load_file(path)
    net.record_var("exc", "v")
    sim, api = net.build(), izhikevich_expressions().build()
    assert sim.source == api.source
    for owner, name in (("exc", "c"), ("exc", "d"), ("inh", "a"), ("e", "w"), ("i", "w"), ("drive_exc", "amp")):
        np.testing.assert_array_equal(sim.get_param(owner, name), api.get_param(owner, name))
    sim.run(steps=200)
    api.run(steps=200)
    np.testing.assert_array_equal(sim.spikes("exc")[0][1], api.spikes("exc")[0][1])


def _lif_drive(tau_m, t_ref, amp, n, batch_size=1, precision="double", dynamic=None):
    net = Network("lifs", dt=0.1, seed=1, batch_size=batch_size, precision=precision)
    net.add_population("p", n, m.LIF, params={"tau_m": tau_m, "t_ref": t_ref, "v_th": -55.0},
                       init={"v": {"uniform": [-65.0, -60.0]}}, dynamic=dynamic)
    net.add_current_source("dc", "p", m.DC, params={"amp": amp})
    net.record_var("p", "v")
    return net


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_per_neuron_tau_gives_the_trajectories_of_separate_single_neuron_runs(backend):
    """The exact integrator's propagator and the refractory period per neuron: each neuron as
    if it ran alone with its values compiled in."""
    tau, t_ref, amp = [5.0, 10.0, 20.0, 40.0], [0.0, 1.0, 2.5, 4.0], [12.0, 14.0, 20.0, 30.0]
    sim = _lif_drive(tau, t_ref, amp, 4).build(backend=backend)
    assert "expm1(-dt/tau_m)" in sim.source  # the propagator, per neuron
    assert "const scalar tau_m = _p_p_tau_m[_i];" in sim.source
    sim.run(steps=600)
    v = sim.recorded("p", "v")[:, 0, :]
    v_init = _lif_drive(tau, t_ref, amp, 4).build().get("p", "v")[0]  # each single run starts there
    for k in range(4):
        net = Network("lif1", dt=0.1, seed=1, precision="double")
        net.add_population("p", 1, m.LIF, params={"tau_m": tau[k], "t_ref": t_ref[k], "v_th": -55.0},
                           init={"v": float(v_init[k])})
        net.add_current_source("dc", "p", m.DC, params={"amp": amp[k]})
        net.record_var("p", "v")
        one = net.build(backend=backend)
        assert "p_tau_m" not in one.source  # compiled in
        one.run(steps=600)
        np.testing.assert_allclose(v[:, k], one.recorded("p", "v")[:, 0, 0], rtol=0, atol=1e-12)
    reset = v == -65.0
    assert reset.any(axis=0).all() and np.unique(np.argmax(reset, axis=0)).size == 4  # all spike, at own times


def _cache_entries(path: Path) -> int:
    return sum(1 for _ in path.iterdir()) if path.exists() else 0


def test_new_values_never_recompile(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path / "cache"))
    a = _lif_drive([5.0, 10.0, 20.0], 0.0, [20.0, 21.0, 22.0], 3).build()
    entries = _cache_entries(tmp_path / "cache")
    assert not a.from_cache and entries >= 1
    b = _lif_drive([7.0, 9.0, 30.0], 0.0, "15 + rand()", 3).build()
    # the generated code holds no value: the same source, so the second build is a cache hit
    assert a.source == b.source
    assert b.from_cache and _cache_entries(tmp_path / "cache") == entries
    assert "30.0" not in b.source and "21.0" not in b.source
    np.testing.assert_array_equal(b.get_param("p", "tau_m"), [7.0, 9.0, 30.0])


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_set_param_changes_a_dynamic_parameter_without_recompiling(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path / "cache"))
    sim = _lif_drive(20.0, 2.0, 14.0, 3, dynamic=["tau_m"]).build(backend=backend)
    entries = _cache_entries(tmp_path / "cache")
    lib = sim.backend.lib if hasattr(sim.backend, "lib") else None
    sim.run(steps=300)
    sim.set_param("p", "tau_m", 10.0)
    sim.run(steps=300)
    v = sim.recorded("p", "v")
    assert _cache_entries(tmp_path / "cache") == entries  # nothing was compiled
    if lib is not None:
        assert sim.backend.lib is lib
    assert sim.get_param("p", "tau_m") == 10.0
    # reference: tau_m compiled in, 20 ms for 300 steps, then 10 ms (state carried over)
    ref = _lif_drive(20.0, 2.0, 14.0, 3).build(backend=backend)
    ref.run(steps=300)
    state = ref.get("p", "v"), ref.backend.pull("p_refrac")
    ref10 = _lif_drive(10.0, 2.0, 14.0, 3).build(backend=backend)
    ref10.set("p", "v", state[0])
    ref10.backend.push("p_refrac", state[1])
    ref10.backend.step = 300
    ref10.run(steps=300)
    np.testing.assert_allclose(v[:300], ref.recorded("p", "v"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(v[300:], ref10.recorded("p", "v"), rtol=0, atol=1e-12)
    assert not np.allclose(v[300:], _continue(ref, 300))  # tau_m did change the trajectory
    with pytest.raises(NetworkError, match=r"compiled into the generated code; declare it dynamic"):
        sim.set_param("p", "v_th", -50.0)
    with pytest.raises(NetworkError, match=r"one number"):
        sim.set_param("p", "tau_m", [1.0, 2.0])
    with pytest.raises(ModelError, match=r"time constant 'tau_m' must be positive"):
        sim.set_param("p", "tau_m", -1.0)
    with pytest.raises(NetworkError, match=r"finite"):
        sim.set_param("p", "tau_m", float("nan"))


def _continue(sim, steps):
    sim.run(steps=steps)
    return sim.recorded("p", "v")[-steps:]


def cuba_sweep(g_values, batch_size, precision="double", n=200, seed=3):
    """A small CUBA network whose inhibitory weight takes one value per batch instance
    (``g_values`` a list) or is compiled in (a number)."""
    net = Network("cuba_sweep", dt=0.1, seed=seed, batch_size=batch_size, precision=precision)
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)
    n_exc = n * 4 // 5
    for pop, size in (("exc", n_exc), ("inh", n - n_exc)):
        net.add_population(pop, size, m.LIF, params=lif, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    p = 0.1
    for pre, tau in (("exc", 5.0), ("inh", 10.0)):
        for post in ("exc", "inh"):
            sweep = pre == "inh" and isinstance(g_values, list)
            w = 1.62 * 3 if pre == "exc" else (g_values[0] if sweep else g_values)
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(p),
                               wu_params={"w": w}, ps_params={"tau_syn": tau},
                               wu_batch_values={"w": g_values} if sweep else None)
    return net


@pytest.mark.slow  # nine CUBA runs per backend: 10 s of CPU on cpu, 30 s on cuda-emu
@pytest.mark.parametrize("emu_backend", ["cpu", "cuda-emu"])
def test_batch_sweep_equals_separate_runs_bit_for_bit(emu_backend):
    g = [-0.0, -2.0, -4.5, -9.0, -13.0, -18.0, -27.0, -40.0]
    sweep = cuba_sweep(g, batch_size=8).build(backend=emu_backend)
    assert "p_w[_b]" in sweep.source
    sweep.run(steps=300)
    rates = []
    for k, gk in enumerate(g):
        one = cuba_sweep(gk, batch_size=1).build(backend=emu_backend, batch_offset=k)
        assert "p_w" not in one.source  # the weight is compiled in
        one.run(steps=300)
        for pop in ("exc", "inh"):
            t, ids = sweep.spikes(pop)[k]
            t1, ids1 = one.spikes(pop)[0]
            np.testing.assert_array_equal(t, t1)
            np.testing.assert_array_equal(ids, ids1)
        rates.append(sweep.spikes("exc")[k][1].size)
    assert rates[0] > rates[-1]  # inhibition lowers the rate: the sweep did sweep


def test_batch_values_and_set_param_per_instance():
    sim = cuba_sweep([-1.0, -5.0], batch_size=2).build()
    np.testing.assert_array_equal(sim.get_param("inh_exc", "w"), [-1.0, -5.0])
    sim.set_param("inh_exc", "w", [-3.0, -4.0])
    np.testing.assert_array_equal(sim.get_param("inh_exc", "w"), [-3.0, -4.0])
    sim.set_param("inh_exc", "w", -2.0)  # one number for every instance
    np.testing.assert_array_equal(sim.get_param("inh_exc", "w"), [-2.0, -2.0])
    with pytest.raises(NetworkError, match=r"one per batch instance"):
        sim.set_param("inh_exc", "w", [1.0, 2.0, 3.0])
    with pytest.raises(ModelError, match=r"expected one value per batch instance \(batch_size = 2\), got 3"):
        cuba_sweep([-1.0, -2.0, -3.0], batch_size=2)
    net = cuba_sweep([-1.0, -2.0], batch_size=2)
    net.batch_size = 3
    with pytest.raises(NetworkError, match=r"batch_values of 'w' has 2 values but the batch size is 3"):
        net.build()


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.slow
def test_generated_cuda_with_every_kind_of_parameter_compiles_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    net = izhikevich_expressions(batch_size=2)
    net.add_population("lif", 8, m.LIF, params={"tau_m": "10 + i", "t_ref": [0, 1, 2, 3, 0, 1, 2, 3]},
                       batch_values={"v_th": [-50.0, -52.0]}, dynamic=["v_rest"])
    net.add_projection("to_lif", "exc", "lif", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.2),
                       wu_params={"w": "rand()"}, ps_params={"tau_syn": "2 + i/N"}, ps_dynamic=[])
    for precision in ("float", "double"):
        net.precision = precision
        source = render_network(generate(net), "cuda")
        assert "to_lif_ps_p_tau_syn" in source and "lif_p_v_rest[0]" in source
        result = build_cubin(source, "sm_80", name=f"hetero_{precision}", describe="heterogeneous parameters")
        assert result.path.read_bytes()[:4] == b"\x7fELF"


# -- bad input --------------------------------------------------------------------------------------------


def test_bad_values_are_one_line_errors_naming_the_field():
    def pop(**kw):
        Network("bad", batch_size=2).add_population("p", 5, m.IZHIKEVICH, **kw)

    cases = [
        (dict(init={"u": "b*w"}), r"field 'init.u': unknown symbol 'w' in 'b\*w'"),
        (dict(init={"u": "u + 1"}), r"field 'init.u': the expression of 'u' refers to 'u' itself"),
        (dict(init={"u": "v", "v": "u"}), r"refer to each other in a cycle"),
        (dict(params={"c": "c*2"}), r"field 'params.c': the expression of 'c' refers to 'c' itself"),
        (dict(params={"c": [1.0, 2.0]}), r"field 'params.c': population 'p': parameter 'c': expected 5 values"),
        (dict(params={"c": [1.0, 2.0, float("nan"), 4.0, 5.0]}), r"field 'params.c': per-element values must be "
                                                                   r"finite"),
        (dict(params={"c": "log(i - 2)"}), r"'log\(i - 2\)' is not finite for 3 of 5 elements"),
        (dict(params={"c": {"values": [1.0, 2.0], "counts": [2, 2]}}), r"the counts must sum to the 5 elements, "
                                                                          r"got 4"),
        (dict(init={"v": {"values": [1.0, 2.0], "counts": [2, 2]}}), r"field 'init.v'.*must sum to the 5"),
        (dict(init={"v": [1.0] * 4}), r"field 'init.v'.*expected 5 values"),
        (dict(batch_values={"c": [1.0]}), r"field 'batch_values.c'.*batch_size = 2\), got 1"),
        (dict(dynamic=["zz"]), r"dynamic: unknown parameter 'zz'"),
        (dict(draws={"a": "rand()"}), r"draw 'a' has the name of a parameter"),
        (dict(params={"a": "0.1*q"}), r"unknown symbol 'q'"),
    ]
    for kw, pattern in cases:
        with pytest.raises(ModelError, match=pattern) as info:
            pop(**kw)
        assert "\n" not in str(info.value)


def test_a_per_synapse_parameter_cannot_reach_trace_code():
    net = Network("stdp", seed=1)
    net.add_population("a", 4, m.LIF)
    net.add_population("b", 4, m.LIF)
    net.add_projection("ab", "a", "b", m.STDP, m.EXP_CURR, wu_params={"tau_plus": "10 + j"})
    with pytest.raises(NetworkError, match=r"parameter 'tau_plus' is given per synapse, but the pre- or "
                                           r"postsynaptic trace code"):
        generate(net)


YAML_ERRORS = [
    ("init: {v: -65.0, u: \"b*w\"}", 9, r"unknown symbol 'w'"),
    ("init: {v: -65.0, u: \"u*2\"}", 9, r"refers to 'u' itself"),
    ("params: {c: [1.0, 2.0]}", 9, r"expected 5 values"),
    ("params: {c: [1.0, 2.0, .nan, 4.0, 5.0]}", 9, r"finite"),
    ("params: {c: {values: [1.0, 2.0], counts: [1, 1]}}", 9, r"counts must sum to the 5"),
    ("batch_values: {d: [1.0]}", 9, r"one value per batch instance \(batch_size = 2\)"),
    ("draws: {r: \"rand(\"}", 9, r"cannot parse"),
]


@pytest.mark.parametrize("line,at,pattern", YAML_ERRORS)
def test_yaml_errors_name_file_line_and_field(tmp_path, line, at, pattern):
    text = textwrap.dedent("""\
        name: bad
        batch_size: 2
        populations:
          p:
            size: 5
            model: izhikevich
            draws: {r: "rand()"}
            params: {c: "-65 + 15*r**2"}
            LINE
        """).replace("LINE", line)
    if line.startswith("params"):
        text = text.replace('    params: {c: "-65 + 15*r**2"}\n', "    record: [spikes]\n")
    if line.startswith("draws"):
        text = text.replace('    draws: {r: "rand()"}\n', "    record: [spikes]\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}:{at}: ")
    assert "\n" not in str(info.value)


def test_where_in_a_weight_expression_is_evaluated_per_synapse():
    """``where(cond, a, b)`` (a Piecewise) in an initial value: per synapse, with draws only
    where chosen; before, the evaluator could not walk the Piecewise's (value, condition)
    pairs and refused the expression."""
    net = Network("where_init", dt=0.1)
    net.add_population("a", 5, m.LIF)
    net.add_projection("aa", "a", "a", m.STATIC, m.DELTA_CURR, wu_init={"w": "where(i < j, 1.0, 2.0 + j)"})
    net.add_projection("bb", "a", "a", m.STATIC, m.DELTA_CURR, wu_init={"w": "where(i == j, 0, 1 + rand())"})
    sim = Simulation(net)
    i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")  # pre, post
    np.testing.assert_array_equal(sim.get("aa", "w").reshape(5, 5), np.where(i < j, 1.0, 2.0 + j))
    w = sim.get("bb", "w").reshape(5, 5)
    assert not np.diag(w).any() and np.all((w[i != j] >= 1) & (w[i != j] < 2))
