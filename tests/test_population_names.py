"""Population and projection names become part of generated identifiers (``_<pop>_spk``...).
Names that spell a generated local variable once prefixed (``n`` -> ``_n_spk``) must still
compile and run on every backend."""

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.network import FixedProbability, Network
from tests.conftest import nvcc_path

# each name, with the suffix a kernel appends, once spelt a local of some template
NAMES = ["n", "sh", "ss", "spk", "conn"]


def _network(batch_size=2):
    net = Network("names", dt=0.1, batch_size=batch_size, seed=5)
    net.add_population("src", 40, m.POISSON, init={"rate": 200.0})
    for name in NAMES:
        net.add_population(name, 10, m.LIF, params=dict(v_th=-64.0, t_ref=1.0))
        net.add_projection(f"p_{name}", "src", name, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.5),
                           wu_params={"w": 2.0}, ps_params={"tau_syn": 2.0})
    net.add_projection("conn_n", "n", "conn", m.STATIC_CONSTANT, m.DELTA_CURR, "dense", wu_params={"w": 0.5})
    net.record_spikes(*NAMES)
    return net


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_populations_named_like_generated_locals_compile_and_run(backend):
    sim = _network().build(backend=backend, threads=1)
    sim.run(steps=200)
    counts = sim.spike_counts()
    assert all(counts[name] > 0 for name in NAMES), counts
    if backend == "cuda-emu":
        cpu = _network().build(backend="cpu", threads=1)
        cpu.run(steps=200)
        for name in NAMES:
            for (t1, i1), (t2, i2) in zip(sim.spikes(name), cpu.spikes(name)):
                assert np.array_equal(t1, t2) and np.array_equal(i1, i2)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_populations_named_like_generated_locals_compile_with_nvcc():
    from spikeforge.runtime.nvcc import build_cubin

    source = render_network(generate(_network()), "cuda")
    result = build_cubin(source, "sm_80", name="population_names", describe="population names")
    assert b"neuron_update_n" in result.path.read_bytes()
