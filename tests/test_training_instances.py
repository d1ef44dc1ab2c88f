"""The training compiler with hidden-neuron parameters given per batch instance (``batch_values``)
or dynamic (set between batches without recompiling).

Instance b of a batch whose hidden populations take per-instance values must train exactly as
a network of batch size 1 with instance b's values compiled in: the eligibility kernel loads
the instance's values where the instance is known and computes from them, once per instance,
the invariants the constant network computes once per launch, in the same arithmetic. So the
gradients, losses and readout values are compared bit for bit in double precision."""

from pathlib import Path

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import ModelError, NetworkError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import Network
from spikeforge.training.compiler import EpropCompiler
from tests.conftest import nvcc_path
from tests.test_training_compiler import _same_bits

N_IN, N_H, K, T, DT = 5, 6, 3, 40, 1.0
TRAINABLE = ["inp_hid", "hid_hid", "hid_out", "out.bias"]
LIF = dict(tau_m=10.0, v_th=0.6)
ALIF = dict(tau_m=10.0, tau_a=30.0, v_th=0.6, beta={"values": [0.0, 0.4], "counts": [3, 3]}, t_ref=0.0)  # LSNN


def _problem(seed, batch):
    rng = np.random.default_rng(seed)
    w = {"inp_hid": rng.uniform(0.0, 1.5, (N_IN, N_H)), "hid_hid": rng.normal(0.0, 0.6, (N_H, N_H)),
         "hid_out": rng.normal(0.0, 1.0, (N_H, K))}  # [pre][post]
    np.fill_diagonal(w["hid_hid"], 0.0)
    x = (rng.random((T, batch, N_IN)) < 0.4) * rng.uniform(0.2, 1.0, (T, batch, N_IN))
    mask = np.r_[np.zeros(T // 4), np.ones(T - T // 4)]
    return x, mask, rng.integers(0, K, batch), w


def _network(name, batch, model, params, w, batch_values=None, dynamic=None, readout=None, readout_batch=None):
    net = Network(name.replace("-", "_"), dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, model, params, batch_values=batch_values, dynamic=dynamic)
    net.add_population("out", K, LEAKY_READOUT, readout or dict(tau_m=15.0, bias=[0.1, -0.2, 0.0]),
                       **(readout_batch or {}))
    for proj, pre, post, syn in (("inp_hid", "inp", "hid", SCALED), ("hid_hid", "hid", "hid", m.STATIC),
                                 ("hid_out", "hid", "out", m.STATIC)):
        net.add_projection(proj, pre, post, syn, ONE_STEP_CURR, wu_init={"w": w[proj].ravel()})
    return net


def _compile(net, backend="cpu"):
    return EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE,
                                              n_steps=T, backend=backend)


def _same_instance(run, b, ref, what, exact=True):
    """Instance ``b`` of ``run`` equals the single instance of ``ref``: the forward pass and the
    readout's gradients bit for bit; the hidden projections' gradients too when ``exact``,
    else to 1e-13 of their largest value (see CASES)."""
    _same_bits(run["y"][:, b:b + 1], ref["y"], f"readout y, {what}")
    _same_bits(run["loss"][b:b + 1], ref["loss"], f"loss, {what}")
    _same_bits(run["hidden_spikes"][b:b + 1], ref["hidden_spikes"], f"hidden spikes, {what}")
    for name, g in ref["grads"].items():
        assert np.abs(g).max() > 0, f"{name}, {what}"
        got = np.ascontiguousarray(run["grads"][name][b:b + 1])
        if exact or name in ("hid_out_w", "out_p_bias"):
            _same_bits(got, g, f"gradient of {name}, {what}")
        else:
            np.testing.assert_allclose(got, g, rtol=1e-13, atol=1e-13 * np.abs(g).max(), err_msg=f"{name}, {what}")


# (model, parameters, values per instance, whether the hidden gradients are equal bit for bit).
# A threshold per instance is not: the neuron update (the simulation's code, which the
# compiler's hook joins) computes the pseudo-derivative gamma max(0, 1 - |g| / v_th) / v_th
# with the instance's v_th loaded per neuron, dividing, where with v_th compiled in it hoists
# 1 / v_th and multiplies: psi may differ in the last bit. The forward pass cannot (psi does
# not enter it) and the eligibility kernel computes as with the value compiled in.
CASES = {
    # LIF's membrane component is kept per presynaptic neuron: it reads tau_m per instance
    "lif-tau_m": (m.LIF_SUBTRACTIVE, LIF, {"tau_m": [8.0, 13.0, 21.0]}, True),
    # ALIF's threshold (the surrogate's width, the neuron update) per instance; LSNN beta per neuron
    "alif-v_th": (m.ALIF, ALIF, {"v_th": [0.45, 0.8]}, False),
    # and the adaptation's time constant: the per-synapse component reads it per instance
    "alif-tau_a": (m.ALIF, ALIF, {"tau_a": [20.0, 60.0], "tau_m": [8.0, 13.0]}, True),
}


# the first case in the quick loop, the others in the full suite
@pytest.mark.parametrize("case", [pytest.param(c, marks=() if k == 0 else pytest.mark.slow)
                                  for k, c in enumerate(CASES)])
def test_each_instance_trains_as_a_network_with_its_values_compiled_in(case):
    model, params, values, exact = CASES[case]
    batch = len(next(iter(values.values())))
    x, mask, labels, w = _problem(1, batch)
    compiled = _compile(_network(f"instances_{case}", batch, model, params, w, batch_values=values))
    run = compiled.run_batch(x, mask, labels=labels)
    assert run["hidden_spikes"].sum(axis=1).min() > 0
    for b in range(batch):
        single = dict(params, **{k: v[b] for k, v in values.items()})
        ref = _compile(_network(f"instance_{case}_{b}", 1, model, single, w)).run_batch(
            x[:, b:b + 1], mask, labels=labels[b:b + 1])
        _same_instance(run, b, ref, f"instance {b} of {case}", exact)
    for b in range(1, batch):  # the values do differ per instance
        assert not np.array_equal(run["grads"]["inp_hid_w"][b], run["grads"]["inp_hid_w"][0])
    # new per-instance values between batches, without recompiling: the instances reversed,
    # inputs and labels reversed, give the gradients reversed
    compiled.set_param("hid", next(iter(values)), next(iter(values.values()))[::-1])
    for name, v in list(values.items())[1:]:
        compiled.set_param("hid", name, v[::-1])
    flipped = compiled.run_batch(x[:, ::-1], mask, labels=labels[::-1])
    for name, g in run["grads"].items():
        _same_bits(flipped["grads"][name], np.ascontiguousarray(g[::-1]), f"gradient of {name}, instances reversed")


# ALIF with both parts of the eligibility kernel reading values of the instance: tau_m (the
# membrane component, per presynaptic neuron) and tau_a (the adaptation component, per synapse)
# per instance, r_m (the membrane component's input factor) dynamic
EVERY_PART = dict(batch_values={"tau_m": [8.0, 13.0, 21.0], "tau_a": [20.0, 30.0, 60.0]}, dynamic=["r_m"])


@pytest.mark.slow  # 15 to 22 s here, most of it building the emulated CUDA code
def test_cuda_emu_equals_cpu_with_values_per_instance():
    """Both launches of the CUDA eligibility kernel (one thread per presynaptic neuron, then one
    per synapse) load the instance's values where the instance is known: cuda-emu gives the
    cpu's bits."""
    x, mask, labels, w = _problem(2, 3)
    runs = [_compile(_network(f"instances_emu_{backend}", 3, m.ALIF, ALIF, w, **EVERY_PART), backend).run_batch(
        x, mask, labels=labels) for backend in ("cpu", "cuda-emu")]
    assert runs[0]["hidden_spikes"].sum(axis=1).min() > 0
    for key in ("y", "loss"):
        _same_bits(runs[1][key], runs[0][key], key)
    for name, g in runs[0]["grads"].items():
        _same_bits(runs[1]["grads"][name], g, f"gradient of {name} on cuda-emu")


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_eligibility_kernels_with_values_per_instance_compile_with_nvcc():
    from spikeforge.codegen.render import render_network
    from spikeforge.runtime.nvcc import build_cubin

    _, _, _, w = _problem(6, 3)
    spec = _compile(_network("instances_nvcc", 3, m.ALIF, ALIF, w, **EVERY_PART)).spec
    source = render_network(spec, "cuda")
    for kernel in ("eprop_eligibility_hid_hid_presynaptic(", "eprop_eligibility_hid_hid("):
        body = source[source.index(kernel):]
        body = body[:body.index("\n}\n")]
        assert "const scalar tau_m = _hid_p_tau_m[_b];" in body and "const scalar r_m = _hid_p_r_m[0];" in body
    assert build_cubin(source, "sm_80", name=spec.name, describe=spec.name).path.read_bytes()[:4] == b"\x7fELF"


def _cache_entries(path: Path) -> int:
    return sum(1 for _ in path.iterdir()) if path.exists() else 0


@pytest.mark.parametrize("model,params,name,values", [
    (m.LIF_SUBTRACTIVE, LIF, "tau_m", (10.0, 16.0)),
    (m.ALIF, ALIF, "v_th", (0.6, 0.45)),
], ids=["lif-tau_m", "alif-v_th"])
def test_a_dynamic_parameter_changes_between_batches_without_recompiling(tmp_path, monkeypatch, model, params,
                                                                         name, values):
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path / "cache"))
    x, mask, labels, w = _problem(4, 2)
    compiled = _compile(_network(f"dynamic_{name}", 2, model, dict(params, **{name: values[0]}), w, dynamic=[name]))
    entries, lib = _cache_entries(tmp_path / "cache"), getattr(compiled.backend, "lib", None)
    runs = [compiled.run_batch(x, mask, labels=labels)]
    compiled.set_param("hid", name, values[1])
    runs.append(compiled.run_batch(x, mask, labels=labels))
    assert _cache_entries(tmp_path / "cache") == entries  # nothing was compiled
    assert getattr(compiled.backend, "lib", None) is lib
    assert compiled.simulation.get_param("hid", name) == values[1]
    assert not np.array_equal(runs[0]["grads"]["inp_hid_w"], runs[1]["grads"]["inp_hid_w"])
    for value, run in zip(values, runs):
        ref = _compile(_network(f"constant_{name}", 2, model, dict(params, **{name: value}), w)).run_batch(
            x, mask, labels=labels)
        for key in ("y", "loss"):
            _same_bits(run[key], ref[key], f"{key}, {name} = {value}")
        for key, g in ref["grads"].items():
            _same_bits(run["grads"][key], g, f"gradient of {key}, {name} = {value}")


def test_refusals_name_the_population_and_the_parameter():
    x, mask, labels, w = _problem(5, 2)
    compiler = EpropCompiler()

    def compile_(net):
        return compiler.compile(net, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE, n_steps=T)

    # the readout's kappa = exp(-dt / tau_m) is compiled into the training kernels
    for extra, what in (({"batch_values": {"tau_m": [10.0, 20.0]}}, "one value per batch instance"),
                        ({"dynamic": ["tau_m"]}, "dynamic")):
        net = _network(f"refused_readout_{what[:3]}", 2, m.LIF_SUBTRACTIVE, LIF, w, readout_batch=extra)
        with pytest.raises(NetworkError, match=rf"readout 'out': parameter 'tau_m' is {what}, but the training "
                                               r"compiler compiles kappa = exp\(-dt / tau_m\) into its kernels"):
            compile_(net)
    # the readout's other parameter may be of any kind when it is not trained
    free_bias = _network("readout_bias_per_instance", 2, m.LIF_SUBTRACTIVE, LIF, w, readout=dict(tau_m=15.0),
                         readout_batch={"batch_values": {"bias": [0.0, 0.5]}})
    EpropCompiler().compile(free_bias, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE[:3],
                            n_steps=T).close()
    with pytest.raises(NetworkError, match="readout 'out': to train its bias, give 'bias' one value per neuron"):
        compile_(free_bias)
    # one value per neuron cannot enter a component kept per presynaptic neuron; per instance can
    per_neuron = _network("refused_per_neuron", 2, m.LIF_SUBTRACTIVE, dict(LIF, tau_m=[10.0] * 3 + [12.0] * 3), w)
    with pytest.raises(NetworkError, match=r"hidden population 'hid' \(lif_subtractive\): parameter 'tau_m' has one "
                                           r"value per neuron, but the eligibility component of 'v' is kept per "
                                           r"presynaptic neuron; give it one value \(or one per batch instance\)"):
        compile_(per_neuron)
    # every instance is checked: a refractory period or a negative surrogate width in one
    for values, message in (({"t_ref": [0.0, 2.0]}, r"the refractory period 't_ref' is 2 ms"),
                            ({"v_th": [0.6, -0.5]}, r"the surrogate's scale 'v_th' must be positive, got -0.5")):
        net = _network(f"refused_{next(iter(values))}", 2, m.ALIF, ALIF, w, batch_values=values)
        with pytest.raises(NetworkError, match=r"hidden population 'hid' \(alif\): .*" + message):
            compile_(net)
    # and a new value between batches: refused, and the parameter keeps its value
    compiled = compile_(_network("refused_dynamic", 2, m.ALIF, ALIF, w, dynamic=["v_th", "t_ref"],
                                 batch_values={"tau_a": [20.0, 30.0]}))
    with pytest.raises(NetworkError, match=r"hidden population 'hid' \(alif\): the surrogate's scale 'v_th' must be "
                                           "positive, got -0.2"):
        compiled.set_param("hid", "v_th", -0.2)
    assert compiled.simulation.get_param("hid", "v_th") == 0.6
    with pytest.raises(NetworkError, match=r"the refractory period 't_ref' is 1 ms"):
        compiled.set_param("hid", "t_ref", 1.0)
    assert compiled.simulation.get_param("hid", "t_ref") == 0.0
    with pytest.raises(ModelError, match="time constant 'tau_a' must be positive"):
        compiled.set_param("hid", "tau_a", [20.0, -1.0])
    np.testing.assert_array_equal(compiled.simulation.get_param("hid", "tau_a"), [20.0, 30.0])

