"""Per-neuron hidden parameters: LIF and ALIF neurons in one layer (Bellec's LSNN).

With the ALIF model, ``beta = 0`` makes a neuron a plain LIF neuron; ``beta`` given per
neuron mixes both kinds in one hidden layer. The compiled network (the EpropConfig
translated) is checked against the independent numpy reference (tests/eprop_reference.py,
whose ``beta`` may be an array), to rounding (summation order), not bit for bit.
"""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.models.neuron import NeuronModel
from spikeforge.training.model import EpropConfig
from tests.conftest import nvcc_path
from tests.eprop_reference import bptt_gradients, eprop_gradients, forward
from tests.test_eprop_kernel import OURS, _run, compiled_runtime, compiled_spec
from tests.test_eprop_reference import ALIF, make_problem

N_IN, N_H, K, T, B = 5, 4, 3, 40, 3
BETA = np.array([0.0, 0.0, 0.4, 0.4])  # two LIF neurons, then two ALIF neurons
MIXED = dict(ALIF, beta=BETA)


def _config(beta, recurrent=True, loss="xent", name="eprop_mixed"):
    hp = dict(tau_m=ALIF["tau_m"], tau_a=ALIF["tau_a"], v_th=ALIF["v_th"], beta=beta)
    return EpropConfig(N_IN, N_H, K, m.ALIF, hp, recurrent=recurrent, tau_out=ALIF["tau_out"], dt=ALIF["dt"],
                       loss=loss, gamma=ALIF["gamma"], precision="double", name=name)


def _runtime(cfg, backend="cpu"):
    return compiled_runtime(cfg, B, backend)


def test_reference_with_per_neuron_beta_equals_its_bptt_and_mixes_both_kinds():
    """The reference's per-neuron beta: e-prop equals BPTT without recurrence, and the mix
    differs from both uniform layers (every neuron spikes)."""
    X, targets, mask, weights = make_problem(11, recurrent=False, loss="xent")
    ep = eprop_gradients(X, targets, mask, MIXED, weights, loss="xent")
    bp = bptt_gradients(X, targets, mask, MIXED, weights, loss="xent")
    for key in ("W_in", "W_out", "b"):
        np.testing.assert_allclose(ep[key], bp[key], rtol=1e-9, atol=1e-11, err_msg=key)
    assert np.all(forward(X, MIXED, weights)["z"].sum(axis=(0, 1)) > 0)
    for uniform in (0.0, 0.4):
        other = eprop_gradients(X, targets, mask, dict(ALIF, beta=uniform), weights, loss="xent")
        assert not np.allclose(other["W_in"], ep["W_in"])


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_generated_eprop_with_per_neuron_beta_equals_numpy_eprop(backend, loss):
    X, targets, mask, weights = make_problem(12, recurrent=True, loss=loss)
    ref = eprop_gradients(X, targets, mask, MIXED, weights, loss=loss)
    rt = _runtime(_config(BETA, loss=loss, name=f"eprop_mixed_{loss}"), backend)
    out = _run(rt, X, targets, mask, weights, loss)
    for key, ours in OURS.items():
        np.testing.assert_allclose(out["grads"][ours], ref["per_instance"][key], rtol=1e-9, atol=1e-11,
                                   err_msg=key)
    np.testing.assert_allclose(out["loss"], ref["per_instance"]["loss"], rtol=1e-10)
    assert np.all(out["hidden_spikes"].sum(axis=0) > 0)


def test_values_live_in_arrays_not_in_the_source():
    """Another mix of beta generates the same source (no recompilation): the values live in
    an array of the hidden population, the scalar parameters stay constants."""
    from spikeforge.codegen.render import render_network

    a, b = _config(BETA, name="eprop_mixed_src"), _config(BETA[::-1].copy(), name="eprop_mixed_src")
    assert "beta" not in a.params and a.per_neuron_params["beta"].tolist() == BETA.tolist()
    specs = [compiled_spec(cfg) for cfg in (a, b)]
    assert [x.name for x in specs[0].arrays if "beta" in x.name] == ["hid_p_beta"]
    for target in ("cpu", "cuda"):
        assert render_network(specs[0], target) == render_network(specs[1], target), target


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_uniform_arrays_give_the_scalar_gradients(backend):
    """Every ALIF parameter the kernel can load per neuron (beta, v_th, tau_a), given as
    arrays of one repeated value, trains like the same values given as numbers."""
    X, targets, mask, weights = make_problem(14, recurrent=True, loss="xent")
    scalar = _config(ALIF["beta"], name="eprop_mixed_scalar")
    arrays = EpropConfig(N_IN, N_H, K, m.ALIF, dict(tau_m=ALIF["tau_m"], tau_a=[ALIF["tau_a"]] * N_H,
                                                    v_th=np.full(N_H, ALIF["v_th"]), beta=[ALIF["beta"]] * N_H),
                         tau_out=ALIF["tau_out"], dt=ALIF["dt"], gamma=ALIF["gamma"], precision="double",
                         name="eprop_mixed_arrays")
    assert sorted(arrays.per_neuron_params) == ["beta", "tau_a", "v_th"]
    want = _run(_runtime(scalar, backend), X, targets, mask, weights, "xent")
    got = _run(_runtime(arrays, backend), X, targets, mask, weights, "xent")
    np.testing.assert_array_equal(got["hidden_spikes"], want["hidden_spikes"])
    for key in want["grads"]:
        np.testing.assert_allclose(got["grads"][key], want["grads"][key], rtol=1e-10, atol=1e-13, err_msg=key)


def test_alif_with_zero_beta_array_gives_the_lif_gradients():
    """beta = 0 for every neuron: ALIF's threshold is LIF's, and its adaptation component
    of the eligibility vector is weighted by -beta = 0, so the gradients are LIF's."""
    X, targets, mask, weights = make_problem(13, recurrent=True, loss="xent")
    alif = _run(_runtime(_config(np.zeros(N_H), name="eprop_mixed_zero")), X, targets, mask, weights, "xent")
    lif_cfg = EpropConfig(N_IN, N_H, K, m.LIF_SUBTRACTIVE, dict(tau_m=ALIF["tau_m"], v_th=ALIF["v_th"]),
                          tau_out=ALIF["tau_out"], dt=ALIF["dt"], gamma=ALIF["gamma"], precision="double",
                          name="eprop_mixed_lif")
    lif = _run(_runtime(lif_cfg), X, targets, mask, weights, "xent")
    assert lif["hidden_spikes"].sum() > 0
    np.testing.assert_array_equal(alif["hidden_spikes"], lif["hidden_spikes"])
    for key in lif["grads"]:
        np.testing.assert_allclose(alif["grads"][key], lif["grads"][key], rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("beta,message", [
    ([0.0, 0.1], r"parameter 'beta'.*n_hidden = 4 numbers, got shape \(2,\)"),
    ([0.0, 0.1, np.nan, 0.1], "parameter 'beta'.*finite"),
    ([[0.0, 0.1, 0.1, 0.1]], "parameter 'beta'.*1-D"),
    (["a", "b", "c", "d"], "parameter 'beta'.*numbers"),
])
def test_bad_per_neuron_values_are_refused(beta, message):
    with pytest.raises(NetworkError, match=message):
        _config(beta)


def test_per_neuron_values_outside_a_per_neuron_context_are_refused():
    # LIF's membrane component of the eligibility vector is kept per presynaptic neuron
    with pytest.raises(NetworkError, match=r"\(lif_subtractive\): parameter 'tau_m' has per-neuron values.*"
                                           r"eligibility component of 'v'.*per presynaptic neuron"):
        EpropConfig(N_IN, N_H, K, m.LIF_SUBTRACTIVE, dict(tau_m=[10.0, 10.0, 20.0, 20.0]))
    # a derived parameter is one constant for the whole layer
    model = NeuronModel("lif_derived", params={"tau_m": 20.0, "v_th": 0.6}, vars={"v": 0.0},
                        derived={"alpha": "exp(-dt / tau_m)"}, equations="dv/dt = (i_syn - v) / tau_m",
                        threshold="v > v_th", reset="v -= v_th")
    with pytest.raises(NetworkError, match="parameter 'tau_m' has per-neuron values, but the derived parameter "
                                           "'alpha' uses it"):
        EpropConfig(N_IN, N_H, K, model, dict(tau_m=[10.0, 10.0, 20.0, 20.0]))
    spec = NeuronModel("lif_scaled", params={"tau_m": 20.0, "v_th": 0.6, "g": 1.0}, vars={"v": 0.0},
                       derived={"v_scaled": "g * v_th"}, equations="dv/dt = (i_syn - v) / tau_m",
                       threshold="v > v_scaled", reset="v -= v_th")
    with pytest.raises(NetworkError, match="parameter 'g' has per-neuron values, but the derived parameter "
                                           "'v_scaled' uses it"):
        EpropConfig(N_IN, N_H, K, spec, dict(g=[1.0, 1.0, 2.0, 2.0]))
    # ... while per-neuron threshold parameters of ALIF are fine (used only per neuron)
    cfg = EpropConfig(N_IN, N_H, K, m.ALIF, dict(v_th=[0.5, 0.5, 0.6, 0.6], beta=BETA, tau_a=[20.0] * 4))
    assert sorted(cfg.per_neuron_params) == ["beta", "tau_a", "v_th"]


JOB = """\
name: lsnn
dt: 1.0
data:
  kind: evidence_accumulation
  n_samples: 4
network:
  hidden:
    model: alif
    size: 6
    params:
      tau_a: 200.0
      beta: {values: [0.0, 0.1], counts: [2, 4]}
      v_th: [0.6, 0.6, 0.6, 0.5, 0.5, 0.5]
training:
  epochs: 1
"""


def test_yaml_per_neuron_params(tmp_path):
    from spikeforge.training.config import load_training

    path = tmp_path / "lsnn.yaml"
    path.write_text(JOB)
    cfg = load_training(path).config
    assert cfg.per_neuron_params["beta"].tolist() == [0.0, 0.0, 0.1, 0.1, 0.1, 0.1]
    assert cfg.per_neuron_params["v_th"].tolist() == [0.6, 0.6, 0.6, 0.5, 0.5, 0.5]
    assert cfg.params["tau_a"] == 200.0
    for bad, line, message in [
        ("counts: [2, 4]", 12, "network.hidden.params.beta.counts: must sum to network.hidden.size = 6, got 5"),
        ("values: [0.0, 0.1]", 12, "network.hidden.params.beta.values: expected a list of numbers"),
        ("[0.6, 0.6, 0.6, 0.5, 0.5, 0.5]", 13, "network.hidden.params.v_th: expected one value per hidden neuron"),
        ("counts: [2, 4]}", 12, "network.hidden.params.beta: unknown key 'count'"),
    ]:
        replacement = {"counts: [2, 4]": "counts: [2, 3]", "values: [0.0, 0.1]": "values: [0.0, x]",
                       "[0.6, 0.6, 0.6, 0.5, 0.5, 0.5]": "[0.6, 0.5]", "counts: [2, 4]}": "count: [2, 4]}"}[bad]
        path.write_text(JOB.replace(bad, replacement))
        with pytest.raises(ConfigError) as err:
            load_training(path)
        assert f"{path}:{line}:" in str(err.value) and message in str(err.value), str(err.value)
    # a per-neuron value the model refuses: the error names the parameter's line
    path.write_text(JOB.replace("model: alif", "model: lif_subtractive").replace("      tau_a: 200.0\n", "")
                    .replace("      beta: {values: [0.0, 0.1], counts: [2, 4]}\n", "")
                    .replace("v_th: [", "tau_m: ["))
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert f"{path}:11:" in str(err.value) and "parameter 'tau_m' has per-neuron values" in str(err.value)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_mixed_eprop_kernels_compile_with_nvcc():
    from spikeforge.codegen.render import render_network
    from spikeforge.runtime.nvcc import build_cubin

    cfg = EpropConfig(7, 6, 3, m.ALIF, dict(beta=[0.0] * 3 + [0.1] * 3, v_th=[0.6] * 3 + [0.5] * 3),
                      name="eprop_nvcc_mixed")
    spec = compiled_spec(cfg)
    data = build_cubin(render_network(spec, "cuda"), "sm_80", name=spec.name, describe=spec.name).path.read_bytes()
    assert b"eprop_eligibility_hid_hid" in data and b"eprop_learning_signal_hid" in data


def test_checkpoint_of_another_lif_alif_split_is_refused(tmp_path):
    """The per-neuron values are part of the network: a checkpoint of one split does not
    load into another (same sizes, same model), and loads into the same one."""
    from spikeforge.training.trainer import CheckpointError, Trainer

    a = Trainer(_config(BETA, name="eprop_mixed_ckpt"), batch_size=3, seed=1)
    a.save_checkpoint(tmp_path / "a.npz")
    Trainer(_config(BETA.copy(), name="eprop_mixed_ckpt"), batch_size=3, seed=1).load_checkpoint(tmp_path / "a.npz")
    other = Trainer(_config(BETA[::-1].copy(), name="eprop_mixed_ckpt"), batch_size=3, seed=1)
    with pytest.raises(CheckpointError, match="another network"):
        other.load_checkpoint(tmp_path / "a.npz")
