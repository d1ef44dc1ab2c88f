"""Memory is checked before anything big is allocated: a network, a recording or a
training batch that cannot fit is refused in one line naming its largest part.

``SPIKEFORGE_MEMORY_LIMIT`` stands in for the machine's free memory, so these tests do
not depend on how much RAM the machine running them has.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.cli import main
from spikeforge.errors import MemoryLimitError, NetworkError, ResourceError
from spikeforge.network import FixedProbability, Network
from spikeforge.runtime import memory
from spikeforge.training.model import EpropConfig

LIF = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("spikeforge: error: ")
    return err


def write(tmp_path, text: str):
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- sizes and limits


def test_sizes_parse_and_print():
    assert memory.parse_bytes("2GiB") == 2 * 2**30
    assert memory.parse_bytes("2G") == 2 * 2**30
    assert memory.parse_bytes("500MB") == 500 * 10**6
    assert memory.parse_bytes("1e9") == 10**9
    assert memory.parse_bytes(" 1.5 kib ") == 1536
    for bad in ("", "2 apples", "GiB", "-1G"):
        with pytest.raises(ValueError):
            memory.parse_bytes(bad)
    assert memory.format_bytes(512) == "512 B"
    assert memory.format_bytes(1536) == "1.5 KiB"
    assert memory.format_bytes(7.3 * 2**40) == "7.3 TiB"


def test_available_memory_comes_from_the_machine_or_the_override(monkeypatch):
    monkeypatch.delenv(memory.ENV_LIMIT, raising=False)
    free, source = memory.host_available()
    total = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    assert 0 < free <= total
    assert source in ("MemAvailable", "the memory limit of this process's cgroup")
    monkeypatch.setenv(memory.ENV_LIMIT, "3GiB")
    assert memory.host_available() == (3 * 2**30, "SPIKEFORGE_MEMORY_LIMIT=3GiB")
    monkeypatch.setenv(memory.ENV_LIMIT, "none")
    assert memory.host_available()[0] is None
    monkeypatch.setenv(memory.ENV_LIMIT, "lots")
    with pytest.raises(ResourceError, match="SPIKEFORGE_MEMORY_LIMIT: 'lots' is not a size"):
        memory.host_available()


def test_the_largest_consumer_is_named():
    needs = [memory.Need("population 'a' state", 10 * 2**30), memory.Need("projection 'b' connectivity", 3 * 2**40)]
    with pytest.raises(MemoryLimitError) as info:
        memory.check(needs, context="network 'n'", available=22 * 2**30, source="MemAvailable")
    assert str(info.value).startswith(
        "network 'n': projection 'b' connectivity needs 3.0 TiB (the largest part of 3.0 TiB in all), "
        "but only 22.0 GiB of host memory are available (MemAvailable)")
    assert isinstance(info.value, MemoryError)  # callers that catch MemoryError still do
    assert memory.check(needs, context="n", available=4 * 2**40, source="test") == 10 * 2**30 + 3 * 2**40


# --------------------------------------------------------------------------- simulation, through the CLI


def test_a_population_larger_than_the_machine_is_refused_before_compiling(capsys, tmp_path, monkeypatch):
    """No override: the machine's own free memory. 2**31 neurons x 10**4 instances is
    ~80 TiB of state, which no test machine has. Nothing is compiled first."""
    monkeypatch.delenv(memory.ENV_LIMIT, raising=False)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # compiling would fail differently
    path = write(tmp_path, "name: big\ndt: 0.1\nduration: 1\nbatch_size: 10000\n"
                           "populations:\n  exc: {size: 2147483648, model: lif}\n")
    assert main(["run", path]) == 1
    err = one_line_error(capsys)
    assert "network 'big' at batch size 10000: population 'exc' state needs" in err
    assert "TiB" in err and "of host memory are available" in err


def test_sizes_beyond_what_generated_code_can_index_are_refused(capsys, tmp_path):
    path = write(tmp_path, "name: big\ndt: 0.1\nduration: 1\npopulations:\n  exc: {size: 1000000000000, model: lif}\n")
    assert main(["run", path]) == 2
    assert "net.yaml:5: population 'exc': size 1000000000000 is more than" in one_line_error(capsys)
    path = write(tmp_path, "name: big\ndt: 0.1\nduration: 1\npopulations:\n  exc: {size: 1e12, model: lif}\n")
    assert main(["run", path]) == 2
    assert "size must be a positive integer, got 1000000000000.0" in one_line_error(capsys)
    with pytest.raises(NetworkError, match="delay 1e\\+09 ms is 10000000000 steps"):
        net = Network("d", dt=0.1)
        net.add_population("a", 10, m.LIF, params=LIF)
        net.add_projection("aa", "a", "a", m.STATIC_CONSTANT, m.EXP_CURR, wu_params={"w": 1.0},
                           ps_params={"tau_syn": 5.0}, delay=1e9)
    with pytest.raises(NetworkError, match="about 4.5e\\+12 synapses, more than the 4294967295"):
        net = Network("c")
        net.add_population("a", 3_000_000, m.LIF, params=LIF)
        net.add_projection("aa", "a", "a", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.5),
                           wu_params={"w": 1.0}, ps_params={"tau_syn": 5.0})


def test_a_long_delay_names_its_buffer(capsys, tmp_path, monkeypatch):
    """1000 neurons with a 1 s delay at dt 0.1: a 10001-slot spike buffer of 40 MB."""
    monkeypatch.setenv(memory.ENV_LIMIT, "16MiB")
    path = write(tmp_path, """name: delayed
dt: 0.1
duration: 1
populations:
  exc: {size: 1000, model: lif}
projections:
  ee:
    pre: exc
    post: exc
    connectivity: {fixed_probability: 0.001}
    weight_update: {model: static_constant, params: {w: 1.0}}
    postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}
    delay: 1000.0
""")
    assert main(["run", path]) == 1
    err = one_line_error(capsys)
    assert "population 'exc' spike delay buffer (10001 steps) needs 38.2 MiB" in err
    assert "16.0 MiB of host memory are available (SPIKEFORGE_MEMORY_LIMIT=16MiB)" in err


def test_connectivity_is_refused_before_it_is_drawn(capsys, tmp_path, monkeypatch):
    """4000 x 4000 at p = 0.5: 8e6 synapses, ~122 MiB while the builder draws them."""
    monkeypatch.setenv(memory.ENV_LIMIT, "64MiB")
    net = Network("dense_random")
    net.add_population("exc", 4000, m.LIF, params=LIF)
    with pytest.raises(MemoryLimitError, match=r"network 'dense_random': projection 'ee' connectivity \(8e\+06 "
                                               r"synapses\) needs 122.\d MiB, but only 64.0 MiB"):
        net.add_projection("ee", "exc", "exc", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.5),
                           wu_params={"w": 1.0}, ps_params={"tau_syn": 5.0})
    assert "ee" not in net.projections
    path = write(tmp_path, """name: dense_random
populations:
  exc: {size: 4000, model: lif}
projections:
  ee:
    pre: exc
    post: exc
    connectivity: {fixed_probability: 0.5}
    weight_update: {model: static_constant, params: {w: 1.0}}
    postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}
""")
    assert main(["run", path, "--duration", "1"]) == 1  # a runtime error (exit 1), with the file's line
    assert "net.yaml:8: network 'dense_random': projection 'ee' connectivity" in one_line_error(capsys)


def test_a_long_recording_is_refused_before_its_buffer_is_allocated(monkeypatch):
    """1000 neurons x 20000 steps of v: 76 MiB of float32."""
    net = Network("rec")
    net.add_population("exc", 1000, m.LIF, params=LIF)
    net.record_var("exc", "v")
    sim = net.build(threads=1)
    try:
        monkeypatch.setenv(memory.ENV_LIMIT, "32MiB")
        with pytest.raises(MemoryLimitError, match=r"network 'rec': recording exc.v for 20000 steps needs 76.3 MiB, "
                                                   r"but only 32.0 MiB"):
            sim.run(steps=20000)
        assert sim.step == 0  # nothing ran
        sim.run(steps=100)  # a shorter piece fits
        assert sim.recorded("exc", "v").shape == (100, 1, 1000)
    finally:
        sim.close()


# --------------------------------------------------------------------------- training


def test_a_training_batch_that_does_not_fit_is_refused(monkeypatch):
    """64 trials through 256 recurrent neurons: per-trial gradients and eligibility traces of
    256 x 256 synapses, ~0.5 MiB each per trial, are refused when the network is compiled for
    that batch, before the first trial runs; a batch of 2 fits."""
    from tests.test_eprop_kernel import compiled_runtime

    monkeypatch.setenv(memory.ENV_LIMIT, "8MiB")
    cfg = EpropConfig(64, 256, 10, m.LIF_SUBTRACTIVE, {"tau_m": 20.0, "v_th": 0.6, "r_m": 10.0},
                      name="eprop_memory")
    rng = np.random.default_rng(0)
    mask = np.ones(10)
    x = (rng.random((10, 64, 64)) < 0.1).astype(np.float32)
    with pytest.raises(MemoryLimitError, match=r"network 'eprop_memory' at batch size 64: projection 'hid_hid' "
                                               r"state needs [0-9.]+ MiB .* but only 8.0 MiB"):
        compiled_runtime(cfg, 64, threads=1).run_batch(x, mask, labels=np.zeros(64, dtype=int))
    out = compiled_runtime(cfg, 2, threads=1).run_batch(x[:, :2], mask, labels=np.zeros(2, dtype=int))
    assert out["y"].shape == (10, 2, 10)


def test_a_cgroup_memory_limit_lowers_what_is_available(tmp_path):
    """cgroup v2 and v1 layouts as the kernel writes them (the process's own cgroup, or
    the root of a container's namespace)."""
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text(f"{8 * 2**30}\n")
    (v2 / "job" / "memory.current").write_text(f"{3 * 2**30}\n")
    (v2 / "job" / "memory.stat").write_text(f"anon 1\ninactive_file {2**30}\nactive_file 5\n")
    (tmp_path / "cg2").write_text("0::/job\n")
    assert memory._cgroup_available(tmp_path / "cg2", v2) == 6 * 2**30  # 8 - 3 + 1 reclaimable
    (v2 / "job" / "memory.max").write_text("max\n")
    assert memory._cgroup_available(tmp_path / "cg2", v2) is None

    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)  # the container sees its cgroup as the root
    (v1 / "memory.limit_in_bytes").write_text(f"{4 * 2**30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.stat").write_text("cache 7\ntotal_inactive_file 0\n")
    (tmp_path / "cg1").write_text("5:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n")
    assert memory._cgroup_available(tmp_path / "cg1", tmp_path / "v1") == 3 * 2**30
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory._cgroup_available(tmp_path / "cg1", tmp_path / "v1") is None
