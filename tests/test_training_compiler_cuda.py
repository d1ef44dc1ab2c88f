"""The training compiler on the CUDA backends: the same e-prop kernels as .cu templates, run on
the CPU through cuda-emu, compiled by nvcc.

cuda-emu must equal the cpu backend bit for bit in double precision: every CUDA thread does the
arithmetic of one iteration of the cpu loop, in the same order (the learning signal's sum over
the readout, the optimisers' sum over the batch), so what tests/test_training_compiler.py
checks against the numpy reference holds here too; the quick case checks cuda-emu against the
reference directly. Networks are tiny: the emulated threads are fibers."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.launch import kernel_launches, plan
from spikeforge.codegen.render import render_network
from spikeforge.errors import BackendUnavailableError
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.network import FromList, Network
from spikeforge.training.compiler import EpropCompiler
from spikeforge.training.objectives import SGD, Adam, RandomFeedback
from tests.conftest import nvcc_path
from tests.test_training_compiler import (
    CASES,
    DT,
    HIDDEN,
    N_H,
    N_IN,
    TAU_OUT,
    K,
    T,
    _network,
    _problem,
    _reference,
    _same_bits,
    _same_run,
)

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
TRAINABLE = ["inp_hid", "hid_hid", "hid_out", "out.bias"]


def _run(net, backend, x, mask, labels=None, targets=None, compiler=None, trainable=TRAINABLE, steps=1):
    """Gradients and outputs of one batch, then the weights after ``steps`` optimiser steps. The
    cpu's eligibility kernels step by step (block_steps=1): the order the CUDA kernels sum in."""
    compiler = compiler or EpropCompiler(loss="xent" if labels is not None else "mse", optimiser=Adam(lr=0.01),
                                         block_steps=1)
    compiled = compiler.compile(net, inputs="inp", hidden=[p for p in net.populations if p.startswith("h")],
                                readout="out", trainable=trainable, n_steps=x.shape[0], backend=backend)
    try:
        out = compiled.run_batch(x, mask, labels=labels, targets=targets)
        out["weights"] = []
        for _ in range(steps):
            compiled.apply_gradients(mean=True)
            out["weights"].append(compiled.weights())
            compiled.run_batch(x, mask, labels=labels, targets=targets)
        return out
    finally:
        compiled.close()


def _same_runs(new, ref, what):
    for key in ("y", "loss", "hidden_spikes"):
        _same_bits(new[key], ref[key], f"{what}: {key}")
    for name, g in ref["grads"].items():
        assert np.abs(g).max() > 0, f"{what}: gradient of {name} is 0"
        _same_bits(new["grads"][name], g, f"{what}: gradient of {name}")
    for step, (wn, wr) in enumerate(zip(new.get("weights", []), ref.get("weights", []), strict=True)):
        for name in wr:
            _same_bits(wn[name], wr[name], f"{what}: {name} after step {step + 1}")


FAST = ("lsnn", "xent", 8)  # one oracle case stays in the quick loop


@pytest.mark.parametrize("kind,loss,batch", [pytest.param(*c, marks=() if c == FAST else pytest.mark.slow)
                                             for c in CASES], ids=[f"{k}-{loss}-B{b}" for k, loss, b in CASES])
def test_cuda_emu_gradients_equal_the_cpu_compiler_bit_for_bit_and_numpy_eprop(kind, loss, batch):
    x, mask, target, weights = _problem(1, batch, loss, real_valued=(kind == "alif"))
    labels, targets = (target, None) if loss == "xent" else (None, target)
    runs = {backend: _run(_network(kind, batch, weights), backend, x, mask, labels, targets, steps=2)
            for backend in ("cpu", "cuda-emu")}
    _same_runs(runs["cuda-emu"], runs["cpu"], f"{kind} {loss} B{batch}, cuda-emu against cpu")
    _same_run(runs["cuda-emu"], _reference(kind, x, mask, target, weights, loss), batch,
              f"{kind} {loss} B{batch}, cuda-emu against numpy")


def _sparse_two_layers(batch, seed):
    """inp -> h1 (lif_subtractive; sparse recurrent projection with a delay of 2 steps) -> h2
    (alif, per-neuron beta) -> out, every projection trainable, the readout bias too."""
    rng = np.random.default_rng(seed)
    n1, n2 = 7, 5
    net = Network(f"emu_sparse_two_layers_{batch}", dt=DT, batch_size=batch, precision="double")
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h1", n1, *HIDDEN["lif_subtractive"])
    net.add_population("h2", n2, HIDDEN["alif"][0], dict(HIDDEN["alif"][1], beta=list(rng.uniform(0.1, 0.5, n2))))
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=TAU_OUT, bias=[0.1, -0.2, 0.0]))
    net.add_projection("inp_h1", "inp", "h1", SCALED, ONE_STEP_CURR, wu_init={"w": rng.uniform(0, 1.5, N_IN * n1)})
    pre, post = np.nonzero(rng.random((n1, n1)) < 0.4)  # in (pre, post) order: synapse order
    net.add_projection("h1_h1", "h1", "h1", m.STATIC, ONE_STEP_CURR, FromList(tuple(map(int, pre)),
                       tuple(map(int, post))), wu_init={"w": rng.normal(0, 0.5, pre.size)}, delay=2 * DT)
    net.add_projection("h1_h2", "h1", "h2", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.uniform(0.5, 2.5, n1 * n2)})
    net.add_projection("h1_out", "h1", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(0, 1, n1 * K)})
    net.add_projection("h2_out", "h2", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(0, 1, n2 * K)})
    return net, ["inp_h1", "h1_h1", "h1_h2", "h1_out", "h2_out", "out.bias"]


@pytest.mark.slow
def test_cuda_emu_equals_cpu_on_sparse_delayed_two_layer_networks_with_sgd():
    """Sparse rows (the row of a thread's synapse found by binary search), a delay, two hidden
    layers with random feedback and regularisation, SGD with a clamp: the same bits."""
    batch = 3
    net, trainable = _sparse_two_layers(batch, 5)
    x, mask, target, _ = _problem(5, batch, "xent", real_valued=True)
    runs = {}
    for backend in ("cpu", "cuda-emu"):
        compiler = EpropCompiler(loss="xent", optimiser=SGD(lr=0.05), feedback=RandomFeedback(seed=3),
                                 reg_rate=0.1, reg_target_hz=20.0, block_steps=1)  # the cpu step by step
        compiled = compiler.compile(net, inputs="inp", hidden=["h1", "h2"], readout="out", trainable=trainable,
                                    n_steps=T, backend=backend)
        out = compiled.run_batch(x, mask, labels=target)
        compiled.apply_gradients(clamp=(-0.8, 0.8))
        out["weights"] = [compiled.weights()]
        runs[backend] = out
        compiled.close()
    assert runs["cpu"]["hidden_spikes"].sum() > 0
    assert np.abs(runs["cpu"]["weights"][0]["h1_h1_w"]).max() == 0.8  # the clamp bit
    _same_runs(runs["cuda-emu"], runs["cpu"], "sparse two-layer network")


def test_launch_shapes_of_the_training_kernels():
    """One thread per hidden neuron (learning signal, readout gradient), per synapse
    (eligibility, after one per presynaptic neuron), per trainable element (the optimiser, a
    custom update launched on its own), one per instance for the readout error; batch on y."""
    batch = 4
    x, mask, target, weights = _problem(1, batch, "xent", real_valued=False)
    compiler = EpropCompiler(loss="xent")
    spec = compiler.compile(_network("alif", batch, weights), inputs="inp", hidden="hid", readout="out",
                            trainable=TRAINABLE, n_steps=T).spec
    shapes = {launch.name: launch for launch in plan(spec)}
    n_syn = N_H * N_H
    eligibility = next(k for k in spec.kernels if k.name == "eprop_eligibility_hid_hid")
    assert [launch.name for launch in kernel_launches(eligibility)] == [
        "eprop_eligibility_hid_hid_presynaptic", "eprop_eligibility_hid_hid"]
    elig, pre = shapes["eprop_eligibility_hid_hid"], shapes["eprop_eligibility_hid_hid_presynaptic"]
    assert (elig.grid_x * elig.block >= n_syn, elig.batched, pre.batched) == (True, True, True)
    assert shapes["eprop_learning_signal_hid"].batched and shapes["eprop_error_out"].grid_x == 1
    custom = [launch for launch in plan(spec) if launch.phase == "custom"]
    assert [launch.name for launch in custom] == [k.name for k in spec.custom_updates]
    assert all(not launch.batched for launch in custom)
    source = render_network(spec, "cuda")
    assert "const uint32_t _j = (uint32_t)blockIdx.x * 128u + threadIdx.x;" in source  # a thread per neuron
    assert "for (uint32_t _j = 0" not in source  # ... not a loop over neurons
    with pytest.raises(BackendUnavailableError, match="unknown backend 'gpu9'"):
        compiler.compile(_network("alif", batch, weights), inputs="inp", hidden="hid", readout="out",
                         trainable=TRAINABLE, n_steps=T, backend="gpu9")


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_training_kernel_compiles_with_nvcc(arch):
    """Dense and sparse eligibility (both parts), the step kernels with and without the bias,
    learning signals with random feedback and regularisation, Adam and SGD steps, xent and mse,
    double and float."""
    from spikeforge.runtime.nvcc import build_cubin

    x, mask, target, weights = _problem(1, 2, "mse", real_valued=False)
    specs = []
    net, trainable = _sparse_two_layers(2, 1)
    specs.append(EpropCompiler(loss="xent", optimiser=SGD(), feedback="random", reg_rate=0.1).compile(
        net, inputs="inp", hidden=["h1", "h2"], readout="out", trainable=trainable, n_steps=T).spec)
    single = _network("lsnn", 2, weights)
    single.precision = "float"
    specs.append(EpropCompiler(loss="mse").compile(single, inputs="inp", hidden="hid", readout="out",
                                                   trainable=TRAINABLE, n_steps=T).spec)
    for spec in specs:
        data = build_cubin(render_network(spec, "cuda"), arch, name=spec.name, describe=spec.name).path.read_bytes()
        assert data[:4] == b"\x7fELF"
        names = [launch.name for launch in plan(spec)]
        assert any(n.endswith("_presynaptic") for n in names) and any(n.startswith("optimiser_") for n in names)
        for name in names:
            assert name.encode() in data, name


@pytest.mark.gpu
def test_cuda_on_a_gpu_equals_cpu_to_libm_rounding():
    """On a GPU the arithmetic order is the same (and nvcc fuses no multiply-adds), but exp, log,
    expm1 and pow come from CUDA's maths library, not the C library: the readout, losses and
    gradients agree to a few ulp per step, not bit for bit."""
    from tests.conftest import gpu_available

    if not gpu_available():
        pytest.skip("needs a CUDA GPU and pycuda")
    x, mask, target, weights = _problem(1, 8, "xent", real_valued=False)
    runs = {backend: _run(_network("lsnn", 8, weights), backend, x, mask, labels=target, steps=2)
            for backend in ("cpu", "cuda")}
    gpu, cpu = runs["cuda"], runs["cpu"]
    np.testing.assert_array_equal(gpu["hidden_spikes"], cpu["hidden_spikes"])
    for key in ("y", "loss"):
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-10, atol=1e-12)
    for name, g in cpu["grads"].items():
        np.testing.assert_allclose(gpu["grads"][name], g, rtol=1e-9, atol=1e-12, err_msg=name)
    for wg, wc in zip(gpu["weights"], cpu["weights"], strict=True):
        for name in wc:
            np.testing.assert_allclose(wg[name], wc[name], rtol=1e-9, atol=1e-12, err_msg=name)
