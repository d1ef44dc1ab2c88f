"""Occupancy-based CUDA block sizes: the occupancy formula, ptxas's report, the choice."""

import json

import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.occupancy import choose_block_sizes, occupancy, parse_ptxas
from spikeforge.networks import cuba_network
from tests.conftest import nvcc_path

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")


@pytest.mark.parametrize("arch, block, registers, shared, expected", [
    ("sm_80", 128, 32, 0, 1.0),            # 16 blocks x 4 warps = 64 warps: full
    ("sm_80", 128, 64, 0, 0.5),            # 2048 registers a warp: 32 warps fit
    ("sm_80", 256, 128, 0, 0.25),          # 4096 registers a warp: 16 warps = 2 blocks of 8
    ("sm_80", 128, 40, 0, 0.75),           # 40 -> 1280 registers a warp (unit 256): 51 warps -> 12 blocks
    ("sm_80", 128, 32, 48 * 1024, 0.1875),  # shared memory: 3 blocks of 48 KiB in 164 KiB
    ("sm_86", 512, 32, 0, 1.0),            # 1536 threads: 3 blocks of 512
    ("sm_86", 1024, 32, 0, 2 / 3),         # one block of 1024 of the 1536
    ("sm_90", 64, 32, 0, 1.0),             # 32 blocks of 2 warps: full
    ("sm_90", 32, 32, 0, 0.5),             # the 32-block limit: 32 warps of 64
])
def test_occupancy_formula(arch, block, registers, shared, expected):
    assert occupancy(block, registers, shared, arch) == pytest.approx(expected)


PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'neuron_update_exc' for 'sm_90'
ptxas info    : Function properties for neuron_update_exc
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 520 bytes smem, 384 bytes cmem[0]
ptxas info    : Compiling entry function 'presynaptic_update_exc_exc' for 'sm_90'
ptxas info    : Function properties for presynaptic_update_exc_exc
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 22 registers, 384 bytes cmem[0]
"""


def test_ptxas_report_is_parsed_per_kernel():
    assert parse_ptxas(PTXAS) == {"neuron_update_exc": (32, 520), "presynaptic_update_exc_exc": (22, 0)}


def _small_network():
    """CUBA with a 40-neuron inhibitory population (4000 -> 200 neurons in all)."""
    return generate(cuba_network(n=200, name="occupancy_small"))


def test_a_small_population_gets_a_block_that_covers_it_without_idle_warps():
    spec = _small_network()
    usage = {k.name: (32, 520 if k.kind == "neuron_update" else 0) for k in spec.kernels}
    sizes, report = choose_block_sizes(spec, usage, "sm_90")
    assert sizes["neuron_update_inh"] == 64      # 40 neurons: 64 threads, not 128
    assert sizes["neuron_update_exc"] == 128     # 160 neurons: the default ties with the rest
    rows = {r["kernel"]: r for r in report}
    assert rows["neuron_update_inh"]["rows"] == 40
    assert 256 not in rows["neuron_update_inh"]["occupancy"]  # more threads than neurons: not offered


def test_register_heavy_kernels_are_not_offered_blocks_their_registers_cannot_fill():
    spec = generate(cuba_network(n=4000, name="occupancy_heavy"))
    usage = {k.name: (168, 0) for k in spec.kernels}  # 168 x 512 > 65536 registers
    sizes, report = choose_block_sizes(spec, usage, "sm_80")
    for row in report:
        assert 512 not in row["occupancy"]
        assert row["occupancy"][row["chosen"]] == max(row["occupancy"].values())
    # explicit sizes win: nothing is chosen for them
    fixed, _ = choose_block_sizes(spec, usage, "sm_80", fixed={"neuron_update": 256})
    assert not any(name.startswith("neuron_update") for name in fixed)


@needs_nvcc
def test_build_chooses_block_sizes_from_ptxas_and_compiles_them(tmp_path):
    """spikeforge build --backend cuda: ptxas's registers → occupancy → block sizes; the
    .cu written is the one compiled with them, and build.json reports the choice."""
    from spikeforge.cli import main

    yaml = tmp_path / "small.yaml"
    yaml.write_text("""\
name: occupancy_cli
dt: 0.1
duration: 10
populations:
  big: {size: 300, model: lif, params: {tau_m: 20.0, v_rest: -49.0, v_reset: -60.0, v_th: -50.0, t_ref: 5.0}}
  small: {size: 40, model: lif, params: {tau_m: 20.0, v_rest: -49.0, v_reset: -60.0, v_th: -50.0, t_ref: 5.0}}
projections:
  big_to_small:
    pre: big
    post: small
    connectivity: {fixed_probability: 0.1}
    weight_update: {model: static_constant, params: {w: 0.5}}
    postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}
""")
    out = tmp_path / "out"
    assert main(["build", str(yaml), "--backend", "cuda", "--arch", "sm_80", "--out", str(out)]) == 0
    summary = json.loads((out / "build.json").read_text())
    rows = {r["kernel"]: r for r in summary["occupancy"]}
    assert rows["neuron_update_small"]["registers"] > 0
    assert rows["neuron_update_small"]["chosen"] == 64
    blocks = {la["kernel"]: la["block"] for la in summary["launches"]}
    assert blocks["neuron_update_small"] == 64 and blocks["neuron_update_big"] == 128
    source = (out / "occupancy_cli.cu").read_text()
    assert "__launch_bounds__(64) neuron_update_small(" in source
    assert "__launch_bounds__(128) neuron_update_big(" in source
