"""The time-parallel method's CUDA kernels (spikeforge/training/parallel_cuda.py) against its cpu
kernels: run through cuda-emu (the same .cu compiled for the CPU) and compiled by nvcc.

The scans are chunked (chunk length 16 over T = 40 steps: two whole chunks and a short one), so
the states equal the cpu's to rounding (the same affine map, summed in another order), and bit
for bit in the first chunk (the simulation's own update from the initial state, as the cpu
runs it); the input, the spike rules (the same lines and Philox counters) and the weight
gradient's sums are the cpu's. Networks are tiny: the emulated threads are fibers."""

import numpy as np
import pytest

from spikeforge.codegen.launch import plan
from spikeforge.codegen.render import render_network
from spikeforge.errors import NetworkError
from spikeforge.training.parallel import ParallelCompiler
from spikeforge.training.spike_rules import FirstCrossing
from tests.conftest import nvcc_path
from tests.test_parallel_kernels import DT, B, T, _network, _problem

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
CHUNK = 16  # T = 40: chunks of 16, 16 and 8 steps
V_TH = {"h1": 0.5, "h2": 0.4}  # the layers' thresholds (tests/test_parallel_kernels.py's models)


def _run(backend, precision, spike, readout="per_step", **options):
    """Forward values, losses and per-instance gradients of one batch, and the weights after one
    Adam step, through the compiled network on ``backend``."""
    x, weights = _problem(1)
    labels = np.array([0, 2])
    compiled = ParallelCompiler(loss="xent", spike=spike, reg_rate=0.1, readout=readout).compile(
        _network(precision, weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T,
        backend=backend, **options)
    try:
        out = compiled.gradients(x, np.ones(T), labels=labels, values=True)
        compiled.apply_gradients(mean=True)
        out["weights"] = {name: compiled.backend.pull(name) for name in compiled.weight_arrays}
        out["spec"] = compiled.spec
        return out
    finally:
        compiled.close()


def _rel(a, b, tol, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= tol * scale, f"{what}: max |diff| {np.abs(a - b).max():.3g}, scale {scale:.3g}"


def _compare(emu, cpu, tol, exact_first_chunk: bool):
    """Spikes (and inputs) equal, states, losses and gradients to ``tol`` of their scale."""
    for pop, values in cpu["forward"].items():
        for v, ref in values.items():
            new = emu["forward"][pop][v]
            if v == "z":
                assert 0 < ref.mean() < 0.9, f"{pop}: spiking, not saturated"
                near = np.abs(emu["forward"][pop]["v"] - V_TH[pop]) <= 100 * tol * np.abs(ref).max()
                np.testing.assert_array_equal(new[~near], ref[~near], err_msg=f"{pop}.z")
            elif v == "u":  # from the same spikes and weights, summed in the same order
                np.testing.assert_array_equal(new, ref, err_msg=f"{pop}.u")
            else:
                _rel(new, ref, tol, f"{pop}.{v}")
            if exact_first_chunk and v != "z":
                np.testing.assert_array_equal(new[:CHUNK], ref[:CHUNK], err_msg=f"{pop}.{v}, first chunk")
    _rel(emu["loss"], cpu["loss"], tol, "loss")
    for name, g in cpu["grads"].items():
        assert np.abs(g).max() > 0, f"gradient of {name} is 0"
        _rel(emu["grads"][name], g, tol, f"gradient of {name}")
    for name, w in cpu["weights"].items():
        _rel(emu["weights"][name], w, tol, f"{name} after an Adam step")


@pytest.fixture(scope="module")
def threshold_runs():
    """The quick case: double, the threshold rule with the rate regulariser, on cpu and cuda-emu."""
    return {backend: _run(backend, "double", "threshold", **({"scan_chunk": CHUNK} if backend != "cpu" else {}))
            for backend in ("cpu", "cuda-emu")}


def test_cuda_emu_equals_the_cpu_kernels_in_double(threshold_runs):
    """Two hidden layers (a LIF fed by exp_curr: two states; a coupled pair), the readout's bias,
    the rate regulariser; chunked scans with a short last chunk, forward and reverse."""
    runs = threshold_runs
    names = [k.name for k in runs["cuda-emu"]["spec"].custom_updates]
    for kernel in ("parallel_forward_carry_h1", "parallel_forward_fixup_h2", "parallel_adjoint_carry_out",
                   "parallel_adjoint_fixup_h1", "parallel_bias_gradient_out", "parallel_rate_loss_h2",
                   "parallel_count_chunks_h1", "parallel_count_h1"):
        assert kernel in names
    _compare(runs["cuda-emu"], runs["cpu"], 1e-12, exact_first_chunk=True)


@pytest.mark.slow
@pytest.mark.parametrize("spike", ["first_crossing", FirstCrossing(gradient="fastsnn"), "bernoulli_sigmoid", "gumbel"],
                         ids=["first_crossing", "fastsnn", "bernoulli_sigmoid", "gumbel"])
def test_cuda_emu_equals_the_cpu_kernels_for_every_spike_rule(spike):
    """first_crossing's step of the first spike is found chunk by chunk (the chunks' values
    combined in order), and so are the fastsnn gradient's running sums (from the last chunk
    down); the other rules run per element."""
    runs = {backend: _run(backend, "double", spike, **({"scan_chunk": CHUNK} if backend != "cpu" else {}))
            for backend in ("cpu", "cuda-emu")}
    if isinstance(spike, FirstCrossing) or spike == "first_crossing":
        names = [k.name for k in runs["cuda-emu"]["spec"].custom_updates]
        assert "parallel_spike_carry_h1" in names
        assert ("parallel_drive_carry_h1" in names) == isinstance(spike, FirstCrossing)  # fastsnn
        z = runs["cpu"]["forward"]["h1"]["z"]
        first = z.argmax(axis=0)[z.any(axis=0)]
        assert (first < CHUNK).any() and (first >= CHUNK).any()  # first spikes in chunk 0 and in later chunks
    _compare(runs["cuda-emu"], runs["cpu"], 1e-12, exact_first_chunk=True)


@pytest.mark.slow
def test_with_one_chunk_cuda_emu_is_the_cpu_bit_for_bit():
    """chunk >= T: no carry, every scan the cpu's recurrence: states, spikes and gradients bit
    for bit in double (the loss is summed over the steps by a warp: to rounding)."""
    runs = {backend: _run(backend, "double", "first_crossing", **({"scan_chunk": T} if backend != "cpu" else {}))
            for backend in ("cpu", "cuda-emu")}
    assert not any("_carry_" in k.name and "spike" not in k.name for k in runs["cuda-emu"]["spec"].custom_updates)
    for pop, values in runs["cpu"]["forward"].items():
        for v, ref in values.items():
            np.testing.assert_array_equal(runs["cuda-emu"]["forward"][pop][v], ref, err_msg=f"{pop}.{v}")
    for name, g in runs["cpu"]["grads"].items():
        np.testing.assert_array_equal(runs["cuda-emu"]["grads"][name], g, err_msg=name)
    _rel(runs["cuda-emu"]["loss"], runs["cpu"]["loss"], 1e-12, "loss")


@pytest.mark.slow
@pytest.mark.parametrize("spike,readout", [("threshold", "per_step"), ("bernoulli_sigmoid", "mean")])
def test_cuda_emu_equals_the_cpu_kernels_in_float(spike, readout):
    """float: the spikes where |g| is not within rounding of 0, the values to 1e-5; with the
    default chunk length (ceil(sqrt(40)) = 7: six chunks), and an aggregated readout."""
    runs = {backend: _run(backend, "float", spike, readout) for backend in ("cpu", "cuda-emu")}
    _compare(runs["cuda-emu"], runs["cpu"], 1e-5, exact_first_chunk=False)


@pytest.mark.slow
def test_a_trainer_epoch_on_cuda_emu_gives_the_cpus_weights():
    from spikeforge.training.datasets import SpikeDataset
    from spikeforge.training.objectives import Adam
    from spikeforge.training.trainer import Trainer

    rng = np.random.default_rng(5)
    pairs = [((rng.random((T, 5)) < (0.15 if k % 3 else 0.4)) * 1.0, k % 3) for k in range(6)]
    data = SpikeDataset.from_pairs(pairs, n_inputs=5, n_outputs=3, dt=DT, task="classification")
    weights = {}
    for backend in ("cpu", "cuda-emu"):
        x, w0 = _problem(2)
        trainer = Trainer(_network("double", w0), compiler=ParallelCompiler(loss="xent", optimiser=Adam()),
                          inputs="inp", hidden=["h1", "h2"], readout="out", batch_size=B, lr=0.01, seed=3,
                          trainable=["inp_h1", "h1_h2", "h2_out", "out.bias"],
                          backend=backend)
        trainer.fit(data, epochs=1, progress=False)
        weights[backend] = trainer.runtime.get_weights()
    for name, w in weights["cpu"].items():
        _rel(weights["cuda-emu"][name], w, 1e-12, f"{name} after an epoch")


def test_chunk_length_is_checked():
    x, weights = _problem(1)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(NetworkError, match="chunk must be a positive integer"):
            ParallelCompiler().compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"],
                                       readout="out", n_steps=T, backend="cuda-emu", scan_chunk=bad)


def _nvcc_build(spec, arch):
    from spikeforge.runtime.nvcc import build_cubin

    data = build_cubin(render_network(spec, "cuda"), arch, name=spec.name, describe=spec.name).path.read_bytes()
    assert data[:4] == b"\x7fELF"
    custom = [launch.name for launch in plan(spec) if launch.phase == "custom"]
    assert any(n.startswith("parallel_forward_carry") for n in custom)
    for name in custom:
        assert name.encode() in data, name


@needs_nvcc
def test_the_parallel_kernels_compile_with_nvcc(threshold_runs):
    _nvcc_build(threshold_runs["cuda-emu"]["spec"], "sm_80")


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_parallel_kernels_of_every_rule_compile_with_nvcc(arch):
    """float, the per-neuron rules (first_crossing with the fastsnn gradient) and an aggregated readout."""
    spec = _run("cuda-emu", "float", FirstCrossing(gradient="fastsnn"), "mean", scan_chunk=CHUNK)["spec"]
    _nvcc_build(spec, arch)


def test_a_sequence_in_chunks_is_refused_on_the_device_backends():
    """Chunks of a long sequence (ParallelCompiler(chunk=)) are the cpu kernels' so far: a device
    backend says so, naming the backend, rather than running the whole sequence silently."""
    x, weights = _problem(1)
    with pytest.raises(NetworkError, match="chunk=8: a sequence in chunks runs on the cpu backend only so far "
                                           r"\(backend 'cuda-emu'"):
        ParallelCompiler(loss="xent", chunk=8).compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"],
                                                       readout="out", n_steps=T, backend="cuda-emu")
