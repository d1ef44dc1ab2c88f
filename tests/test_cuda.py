"""The CUDA path without a GPU: every generated kernel compiles with nvcc, the very same
source runs on the CPU through cuda-emu and agrees with the CPU backend."""

import json

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.errors import BackendUnavailableError, BuildError, MemoryLimitError
from spikeforge.network import FixedProbability, Network
from spikeforge.networks import cuba_network
from tests.conftest import gpu_available, nvcc_path

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")


def _test_networks():
    """A network using every kernel kind and connectivity the generator has."""
    yield "cuba", cuba_network(n=400)
    net = Network("kinds", dt=0.1, batch_size=2, seed=3)
    net.add_population("inp", 30, m.POISSON, init={"rate": 30.0})
    net.add_population("ssa", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_population("lif", 20, m.LIF, params=dict(v_th=-50.0, t_ref=2.0))
    net.add_population("alif", 10, m.ALIF)
    net.add_population("izh", 8, m.IZHIKEVICH)
    net.add_population("ro", 3, m.LEAKY_INTEGRATOR)
    net.add_projection("d", "inp", "lif", m.STDP, m.EXP_CURR, "dense", wu_init={"w": 0.5})
    net.add_projection("s", "inp", "alif", m.stdp("sum"), m.DELTA_CURR, FixedProbability(0.3), delay=0.5)
    net.add_projection("o", "ssa", "ro", m.STATIC, m.EXP_CURR, "dense")
    net.add_projection("one", "lif", "lif", m.stdp("max"), m.EXP_CURR, "one_to_one")
    net.add_projection("r", "izh", "izh", m.stdp(batched=True), m.EXP_CURR, FixedProbability(0.5))
    net.add_current_source("noise", "izh", m.NOISE, params={"mean": 5.0, "sd": 2.0})
    net.record_spikes("lif", "alif")
    net.record_var("ro", "v")
    yield "kinds", net
    dbl = cuba_network(n=200, precision="double", name="cuba_double")
    yield "double", dbl


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_generated_kernel_compiles_with_nvcc(arch, tmp_path):
    from spikeforge.runtime.nvcc import build_cubin

    for name, net in _test_networks():
        result = build_cubin(render_network(generate(net), "cuda"), arch, name=name, describe=name)
        data = result.path.read_bytes()
        assert data[:4] == b"\x7fELF"  # a cubin is an ELF image
        spec = generate(net)
        for k in spec.kernels:
            assert k.name.encode() in data


@pytest.mark.slow
def test_cpu_and_cuda_emu_give_identical_cuba_spikes_at_batch_1_and_4():
    """Same arithmetic in the same order: identical spikes (one thread: the emulator then
    fills each spike queue in neuron order, as the CPU does)."""
    for batch in (1, 4):
        net = cuba_network(n=1000, batch_size=batch, seed=5)
        cpu = net.build(threads=1)
        emu = net.build(backend="cuda-emu", threads=1)
        cpu.run(duration=60.0)
        emu.run(duration=60.0)
        total = 0
        for pop in ("exc", "inh"):
            for b in range(batch):
                (tc, ic), (te, ie) = cpu.spikes(pop)[b], emu.spikes(pop)[b]
                np.testing.assert_array_equal(tc, te)
                np.testing.assert_array_equal(ic, ie)
                total += ic.size
        assert total > 0
        np.testing.assert_array_equal(cpu.get("exc", "v"), emu.get("exc", "v"))


@pytest.mark.slow
def test_cuda_emu_with_parallel_blocks_agrees_in_rate():
    """With blocks on several threads the order of atomics varies, so input sums may differ
    in the last bits; the documented tolerance is agreement of the rates."""
    net = cuba_network(n=1000, batch_size=2, seed=6)
    cpu = net.build(threads=1)
    emu = net.build(backend="cuda-emu", threads=2)
    cpu.run(duration=100.0)
    emu.run(duration=100.0)
    a, b = sum(cpu.spike_counts().values()), sum(emu.spike_counts().values())
    assert a > 0 and abs(a - b) <= 0.1 * a


@pytest.mark.slow
def test_all_kernel_kinds_run_on_cuda_emu_like_cpu():
    nets = {name: net for name, net in _test_networks()}
    net = nets["kinds"]
    cpu = net.build(threads=1)
    emu = net.build(backend="cuda-emu", threads=1)
    for sim in (cpu, emu):
        sim.set_spike_times("ssa", ([1.0, 2.0, 3.0], [0, 1, 4]))
        sim.run(duration=30.0)
    for owner, var in (("lif", "v"), ("alif", "a"), ("izh", "u"), ("d", "w"), ("s", "w"), ("one", "w"),
                       ("r", "w"), ("ro", "v")):
        np.testing.assert_allclose(emu.get(owner, var), cpu.get(owner, var), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{owner}.{var}")
    np.testing.assert_array_equal(emu.recorded("ro", "v"), cpu.recorded("ro", "v"))
    for pop in ("lif", "alif"):
        for b in range(2):
            np.testing.assert_array_equal(emu.spikes(pop)[b][1], cpu.spikes(pop)[b][1])


def test_generated_cuda_source_shares_the_philox_header_and_is_stable():
    net = cuba_network(n=400)
    a = render_network(generate(net), "cuda")
    b = render_network(generate(cuba_network(n=400)), "cuda")
    assert a == b
    assert "sf_philox4x32_10" in a and "__global__" in a and "<<<" not in a


def test_cuda_backend_without_gpu_or_pycuda_says_what_is_missing():
    if gpu_available():
        pytest.skip("a GPU is available here")
    net = cuba_network(n=400)
    with pytest.raises(BackendUnavailableError) as e:
        net.build(backend="cuda")
    msg = str(e.value)
    assert "cuda-emu" in msg and ("pycuda" in msg or "GPU" in msg or "driver" in msg)


def test_unknown_backend():
    with pytest.raises(BackendUnavailableError, match="cpu, cuda, cuda-emu"):
        cuba_network(n=400).build(backend="opencl")


@needs_nvcc
def test_unsupported_arch_is_a_clear_error():
    from spikeforge.runtime.nvcc import build_cubin

    src = render_network(generate(cuba_network(n=400)), "cuda")
    with pytest.raises(BuildError, match="unsupported CUDA architecture 'sm_12'"):
        build_cubin(src, "sm_12")
    with pytest.raises(BuildError, match="expected a name like"):
        build_cubin(src, "hopper")


@needs_nvcc
def test_kernel_compile_error_names_what_was_built_and_quotes_the_line():
    from spikeforge.runtime.nvcc import build_cubin

    src = render_network(generate(cuba_network(n=400)), "cuda").replace("v = v_reset;", "v = v_resett;", 1)
    with pytest.raises(BuildError) as e:
        build_cubin(src, "sm_80", describe="network 'cuba'")
    msg = str(e.value)
    assert msg.startswith("failed to compile the generated code for network 'cuba'")
    assert "v_resett" in msg and "reset: v = v_reset" in msg  # the quoted line carries its equation


def test_missing_nvcc_is_a_clear_error(monkeypatch):
    from spikeforge.errors import CompilerNotFoundError
    from spikeforge.runtime.nvcc import find_nvcc

    monkeypatch.setenv("NVCC", "/nonexistent/nvcc")
    with pytest.raises(CompilerNotFoundError, match="/nonexistent/nvcc"):
        find_nvcc()


def test_model_too_large_for_device_memory_is_caught_before_allocation():
    from spikeforge.runtime.cuda import check_fits, state_bytes

    spec = generate(cuba_network(n=4000))
    need = state_bytes(spec, 512)
    assert need > 512 * 4000 * 4  # at least one float per neuron and instance
    with pytest.raises(MemoryLimitError, match=r"population 'exc' state needs .* MiB .* only .* MiB of GPU memory "
                                               r"are available \(free on test GPU"):
        check_fits(spec, 512, free=need - 1, total=2 * need, device="test GPU")
    assert check_fits(spec, 512, free=need, total=2 * need) == need
    with pytest.raises(MemoryLimitError, match=r"in all\), but only .* MiB of GPU memory"):
        check_fits(spec, 512, free=need, total=2 * need, extra_bytes=1)


@needs_nvcc
def test_cli_build_writes_sources_and_cubin(tmp_path):
    from spikeforge.cli import main

    out = tmp_path / "gen"
    assert main(["build", "examples/cuba.yaml", "--backend", "cuda", "--arch", "sm_90", "--out", str(out),
                 "--json"]) == 0
    assert (out / "cuba.cu").read_text().count("__global__") >= 6
    assert (out / "cuba.cubin").read_bytes()[:4] == b"\x7fELF"
    meta = json.loads((out / "build.json").read_text())
    assert meta["arch"] == "sm_90" and "neuron_update_exc" in meta["kernels"]


@pytest.mark.slow
def test_cli_runs_on_cuda_emu(capsys):
    from spikeforge.cli import main

    assert main(["run", "examples/cuba.yaml", "--backend", "cuda-emu", "--duration", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "cuda-emu" and out["steps"] == 200
    assert sum(out["spikes"].values()) > 0


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_eprop_training_kernels_compile_with_nvcc(arch):
    """The networks EpropConfigs translate into (the trainer's), compiled by the training
    compiler for the cuda target."""
    from spikeforge.codegen.launch import plan
    from spikeforge.runtime.nvcc import build_cubin
    from spikeforge.training.model import EpropConfig
    from tests.test_eprop_kernel import compiled_spec

    cases = ((m.ALIF, "xent", True, "float"), (m.LIF_SUBTRACTIVE, "mse", False, "float"),
             (m.ALIF, "mse", True, "double"))
    for model, loss, recurrent, precision in cases:
        cfg = EpropConfig(7, 5, 3, model, recurrent=recurrent, loss=loss, precision=precision,
                          name=f"eprop_nvcc_{model.name}_{precision}")
        spec = compiled_spec(cfg)
        data = build_cubin(render_network(spec, "cuda"), arch, name=spec.name, describe=spec.name).path.read_bytes()
        names = [launch.name for launch in plan(spec)]
        assert ("eprop_eligibility_hid_hid" in names) == recurrent
        assert "eprop_eligibility_inp_hid" in names and any(n.startswith("optimiser_") for n in names)
        for name in names:
            assert name.encode() in data, name


def test_spike_bitmask_decoding_follows_the_set_bits():
    """The recording decoder unpacks only non-zero words and returns (step, instance,
    neuron) in that order, also for a population that is not a multiple of 32."""
    from spikeforge.runtime.device import decode_spike_bits

    rng = np.random.default_rng(3)
    for size in (1, 31, 32, 33, 100):
        flags = rng.random((7, 5, size)) < 0.1
        flags[0, 0, size - 1] = True  # the last neuron: the highest used bit of the last word
        words = (size + 31) // 32
        padded = np.zeros((7, 5, words * 32), dtype=bool)
        padded[:, :, :size] = flags
        bits = np.packbits(padded, axis=2, bitorder="little").view(np.uint32)
        for got, want in zip(decode_spike_bits(bits), np.nonzero(flags)):
            np.testing.assert_array_equal(got, want)
    assert all(a.size == 0 for a in decode_spike_bits(np.zeros((3, 2, 4), dtype=np.uint32)))
