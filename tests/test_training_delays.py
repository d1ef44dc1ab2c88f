"""e-prop through the training compiler on projections with per-synapse delays.

A synapse of delay d delivers the spike sent at step t at step t + 1 + d, so its eligibility
vector reads the presynaptic signal d steps back: eps_t = D(h_{t-1}) eps_{t-1} + c s_{t-1-d}.
The oracles: a projection whose synapses all have delay d equals a projection-wide delay d
(bit for bit); a projection with mixed delays equals its synapses split into one projection
per delay; a delayed value input equals the undelayed network fed the inputs d steps later;
cuda-emu equals cpu bit for bit."""

from pathlib import Path

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.render import render_network
from spikeforge.errors import NetworkError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import FromList, Network
from spikeforge.training.compiler import EpropCompiler
from tests.conftest import nvcc_path
from tests.test_training_compiler import DT, HIDDEN, N_H, N_IN, TAU_OUT, K, T, _problem
from tests.test_training_compiler_cuda import _same_runs

TRAINABLE = ["inp_hid", "hid_hid", "hid_out", "out.bias"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sparse_delays.yaml"


def _pairs(keep):
    """The (pre, post) indices of the kept synapses of a [post][pre] mask, in synapse order."""
    post, pre = np.nonzero(keep)
    order = np.lexsort((post, pre))
    return pre[order], post[order]


def _network(name, batch, weights, *, rec_delay=0.0, in_delay=0.0, out_delay=0.0, keep=None,
             input_synapse=m.STATIC, recurrent=True):
    """inp -> hid (alif, recurrent) -> out, weights in the old [post][pre] layout. The delays
    (ms) are one number or one value per synapse; ``keep``: the recurrent synapses
    ([post][pre] mask) of a sparse recurrent projection, or None (dense)."""
    net = Network(name, dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, *HIDDEN["alif"])
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=list(weights["b_out"])))
    net.add_projection("inp_hid", "inp", "hid", input_synapse, ONE_STEP_CURR,
                       wu_init={"w": weights["w_in"].T.ravel()}, delay=in_delay)
    if not recurrent:
        pass
    elif keep is None:
        net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR,
                           wu_init={"w": weights["w_rec"].T.ravel()}, delay=rec_delay)
    else:
        pre, post = _pairs(keep)
        net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR,
                           FromList(tuple(map(int, pre)), tuple(map(int, post))),
                           wu_init={"w": weights["w_rec"][post, pre]}, delay=rec_delay)
    net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": weights["w_out"].T.ravel()},
                       delay=out_delay)
    return net


def _run(net, x, mask, target, backend="cpu", trainable=TRAINABLE):
    compiled = EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out",
                                                  trainable=trainable, n_steps=T, backend=backend)
    try:
        return compiled.spec, compiled.run_batch(x, mask, labels=target)
    finally:
        compiled.close()


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_equal_per_synapse_delays_equal_a_projection_wide_delay_bit_for_bit(backend, sparse):
    """Every synapse of the input and recurrent projections with delay d (per synapse: the
    eligibility kept per synapse, each reading its own s_{t-1-d}) gives the gradients of a
    projection-wide delay d (components shared per presynaptic neuron), bit for bit."""
    batch, d = 2, 2
    x, mask, target, weights = _problem(11, batch, "xent", real_valued=False)
    keep = np.random.default_rng(11).random((N_H, N_H)) < 0.5 if sparse else None
    n_rec = int(keep.sum()) if sparse else N_H * N_H
    wide = _network(f"delays_wide_{sparse}", batch, weights, rec_delay=d * DT, in_delay=d * DT, keep=keep)
    per = _network(f"delays_per_{sparse}", batch, weights, rec_delay=[d * DT] * n_rec,
                   in_delay={"values": [d * DT], "counts": [N_IN * N_H]}, keep=keep)
    spec_wide, ref = _run(wide, x, mask, target, backend)
    spec_per, new = _run(per, x, mask, target, backend)
    assert spec_per.array("hid_eprop_s_hist").slots == spec_wide.array("hid_eprop_s_hist").slots == d + 2
    assert spec_per.array("inp_eprop_s_hist").slots == d + 2
    # per synapse: the membrane component, shared per presynaptic neuron without delays, is per synapse
    assert spec_wide.array("hid_hid_eprop_eps_v").size == N_H
    assert spec_per.array("hid_hid_eprop_eps_v").size == n_rec
    assert ref["hidden_spikes"].sum() > 0
    _same_runs(new, ref, f"{backend}, {'sparse' if sparse else 'dense'}")


def _split_network(name, batch, weights, delays, sparse_keep):
    """The recurrent synapses of ``sparse_keep`` ([post][pre]) with per-synapse ``delays``
    (steps, in synapse order), as one sparse projection per delay value, each with that
    projection-wide delay; the rest as _network."""
    net = _network(name, batch, weights, recurrent=False)
    pre, post = _pairs(sparse_keep)
    names = {}
    for d in sorted(set(delays.tolist())):
        sel = delays == d
        names[d] = f"hid_hid_d{d}"
        net.add_projection(names[d], "hid", "hid", m.STATIC, ONE_STEP_CURR,
                           FromList(tuple(map(int, pre[sel])), tuple(map(int, post[sel]))),
                           wu_init={"w": weights["w_rec"][post[sel], pre[sel]]}, delay=d * DT)
    return net, names


@pytest.mark.parametrize("sparse", [pytest.param(False, marks=pytest.mark.slow), True], ids=["dense", "sparse"])
def test_mixed_per_synapse_delays_equal_one_projection_per_delay(sparse):
    """Recurrent delays of 0, 1 or 3 steps per synapse give, on each synapse, the gradient of
    the same synapse in a network whose recurrent synapses are split into three projections,
    one per delay, each with that delay for the whole projection. Not bit for bit: the
    hidden neurons sum the input of three projections in another order than the one of a
    single projection's dendritic buffer, so their state may differ in the last bit; 1e-12
    relative in double."""
    batch = 2
    x, mask, target, weights = _problem(12, batch, "xent", real_valued=False)
    rng = np.random.default_rng(12)
    keep = rng.random((N_H, N_H)) < (0.6 if sparse else 1.0)
    np.fill_diagonal(keep, False)  # the dense diagonal never learns: compare the synapses that do
    weights["w_rec"] *= 1.5  # enough recurrent input to matter
    n_rec = int(keep.sum())
    delays = rng.choice([0, 1, 3], n_rec)
    assert set(delays.tolist()) == {0, 1, 3}
    if sparse:
        per = _network("mixed_per_sparse", batch, weights, rec_delay=list(delays * DT), keep=keep)
        on_keep = np.arange(n_rec)
    else:  # dense: the diagonal (delay 0, weight 0) is there but never learns
        full = np.zeros((N_H, N_H), int)
        pre, post = _pairs(keep)
        full[pre, post] = delays  # [pre][post]: synapse order of a dense projection
        per = _network("mixed_per_dense", batch, weights, rec_delay=list(full.ravel() * DT))
        on_keep = pre * N_H + post
    split, names = _split_network(f"mixed_split_{sparse}", batch, weights, delays, keep)
    spec, new = _run(per, x, mask, target)
    assert spec.array("hid_eprop_s_hist").slots == 3 + 2
    _, ref = _run(split, x, mask, target, trainable=["inp_hid", *names.values(), "hid_out", "out.bias"])
    assert ref["hidden_spikes"].sum() > 0
    np.testing.assert_array_equal(new["hidden_spikes"], ref["hidden_spikes"])
    for key in ("y", "loss"):
        np.testing.assert_allclose(new[key], ref[key], rtol=1e-12, atol=0)
    for name in ("inp_hid_w", "hid_out_w", "out_p_bias"):
        np.testing.assert_allclose(new["grads"][name], ref["grads"][name], rtol=1e-12, atol=1e-15, err_msg=name)
    got = new["grads"]["hid_hid_w"][:, on_keep]
    want = np.zeros_like(got)
    for d, proj in names.items():
        want[:, delays == d] = ref["grads"][f"{proj}_w"]
    scale = np.abs(want).max()
    assert scale > 0 and all(np.abs(want[:, delays == d]).max() > 0 for d in names)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)
    # and the delays matter: the same synapses all without delay learn otherwise
    _, plain = _run(_network("mixed_plain", batch, weights, keep=keep) if sparse else
                    _network("mixed_plain_dense", batch, weights), x, mask, target)
    plain_g = plain["grads"]["hid_hid_w"][:, on_keep]
    assert np.abs(plain_g - got).max() > 1e-3 * scale


def test_per_synapse_delays_on_a_value_input_equal_inputs_shifted_by_them():
    """A value input (scaled synapses: the input is w * value) with per-synapse delays reads
    value when the spike is sent and the product waits: all delays d give the gradients of
    the undelayed network fed the inputs d steps later, bit for bit."""
    batch, d = 2, 3
    x, mask, target, weights = _problem(13, batch, "xent", real_valued=True)
    shifted = np.concatenate([np.zeros((d, batch, N_IN)), x[:-d]])
    _, plain = _run(_network("value_plain", batch, weights, input_synapse=SCALED), shifted, mask, target)
    spec, delayed = _run(_network("value_per", batch, weights, input_synapse=SCALED,
                                  in_delay=[d * DT] * (N_IN * N_H)), x, mask, target)
    assert spec.array("inp_eprop_s_hist").slots == d + 2
    assert plain["hidden_spikes"].sum() > 0
    _same_runs(delayed, plain, "value input with per-synapse delays")


def test_delays_the_compiler_refuses_name_the_projection():
    batch = 1
    _, _, _, weights = _problem(14, batch, "xent", real_valued=False)
    net = _network("refused_readout", batch, weights, out_delay=[1.0] * (N_H * K))
    with pytest.raises(NetworkError, match=r"trainable projection 'hid_out': the projection to the readout must be "
                                           r"dense and without delay \(delay: 0, not per synapse\)"):
        EpropCompiler().compile(net, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE, n_steps=T)
    wide = _network("refused_value", batch, weights, in_delay=2.0, input_synapse=SCALED)
    with pytest.raises(NetworkError, match="trainable projection 'inp_hid' has a delay, but its input reads "
                                           "presynaptic variables"):
        EpropCompiler().compile(wide, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE, n_steps=T)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.parametrize("precision", ["double", pytest.param("float", marks=pytest.mark.slow)])
def test_per_synapse_delay_kernels_compile_with_nvcc(precision):
    """Dense and sparse eligibility kernels with per-synapse delays (uint8 and uint32 delay
    arrays), on a model with per-presynaptic components without delays (alif)."""
    from spikeforge.runtime.nvcc import build_cubin

    _, _, _, weights = _problem(15, 2, "xent", real_valued=False)
    keep = np.random.default_rng(15).random((N_H, N_H)) < 0.5
    net = _network(f"nvcc_delays_{precision}", 2, weights, rec_delay={"uniform": [1.0, 5.0]},
                   in_delay="300 * rand()", keep=keep)  # > 255 steps: a uint32 delay array
    net.precision = precision
    spec = EpropCompiler(loss="xent").compile(net, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE,
                                              n_steps=T).spec
    assert {spec.array("hid_hid_syn_delay").dtype, spec.array("inp_hid_syn_delay").dtype} == {"uint8", "uint32"}
    source = render_network(spec, "cuda")
    assert "_hid_hid_syn_delay[_k]" in source and "_inp_hid_syn_delay[_k]" in source
    assert "eprop_eligibility_hid_hid_presynaptic" not in source  # every component is per synapse
    data = build_cubin(source, "sm_80", name=spec.name, describe=spec.name).path.read_bytes()
    assert data[:4] == b"\x7fELF" and b"eprop_eligibility_hid_hid" in data


@pytest.mark.slow
def test_the_sparse_delays_example_learns_in_one_short_epoch(tmp_path, capsys):
    """examples/sparse_delays.yaml as shipped, with a smaller hidden layer and one epoch: it
    loads, compiles and learns well above chance (10 %)."""
    import json

    from spikeforge.cli import main

    text = EXAMPLE.read_text()
    assert "fixed_probability: {p: 0.1" in text and "delay: {uniform: [1 ms, 5 ms]}" in text
    small = text.replace("size: 256", "size: 64").replace("sqrt(256)", "sqrt(64)").replace("sqrt(26)", "sqrt(6)")
    assert small != text
    path = tmp_path / "sparse_delays.yaml"
    path.write_text(small)
    assert main(["train", str(path), "--json", "--epochs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 1
    assert out["test_accuracy"] > 0.25, out


def test_a_delay_per_named_pathway_is_refused():
    """The delay of the pathway that delivers is not the projection's: refused, not ignored."""
    from spikeforge.models.synapse import WeightUpdateModel

    batch = 1
    _, _, _, weights = _problem(16, batch, "xent", real_valued=False)
    net = _network("refused_pathway", batch, weights, recurrent=False)
    deliver = WeightUpdateModel("deliver_only", vars={"w": 0.0}, on_pre={"deliver": "post_input += w"})
    net.add_projection("hid_hid", "hid", "hid", deliver, ONE_STEP_CURR, wu_init={"w": weights["w_rec"].T.ravel()},
                       delay={"deliver": 2.0})
    with pytest.raises(NetworkError, match=r"trainable projection 'hid_hid': delay: one delay per named pathway "
                                           r"\(deliver\)"):
        EpropCompiler().compile(net, inputs="inp", hidden="hid", readout="out", trainable=TRAINABLE, n_steps=T)
