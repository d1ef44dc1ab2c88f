"""Long runs: run in chunks (same results as one call), a progress bar, Ctrl-C that stops
within a fraction of a second and keeps what was simulated, and one line on stderr when a
compiler actually runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.network import FixedProbability, Network
from spikeforge.runtime.run_control import ChunkPlanner
from tests.conftest import BACKENDS_SLOW_EMU

REPO = Path(__file__).resolve().parents[1]
LIF = dict(tau_m=10.0, v_rest=0.0, v_reset=0.0, v_th=1.0, t_ref=2.0)
STDP_PARAMS = dict(a_plus=0.01, a_minus=0.012, w_min=-10.0, w_max=10.0)


def _mixed_network(backend):
    """Random input (keyed by step), a spike source array, a delay, plastic weights
    reduced over the batch, recorded spikes and a recorded variable."""
    net = Network("chunks", dt=0.1, batch_size=2, seed=3)
    net.add_population("noise", 40, m.POISSON, init={"rate": 80.0}, record_spikes=True)
    net.add_population("src", 5, m.SPIKE_SOURCE_ARRAY, record_spikes=True)
    net.add_population("out", 12, m.LIF, params=LIF, record_spikes=True)
    net.add_projection("ff", "noise", "out", m.STATIC, m.EXP_CURR, FixedProbability(0.3), wu_init={"w": 1.5},
                       ps_params={"tau_syn": 5.0}, delay=1.5)
    net.add_projection("plastic", "src", "out", m.stdp("sum"), m.EXP_CURR, "dense", wu_params=STDP_PARAMS,
                       wu_init={"w": 0.5})
    net.record_var("out", "v")
    return net.build(backend=backend)


def _simulate(backend, chunk_steps):
    sim = _mixed_network(backend)
    sim.chunk_steps = chunk_steps
    calls = []
    real_run = sim.backend.run

    def counted(n):  # the real backend runs; we only note how many steps each call ran
        calls.append(n)
        real_run(n)

    sim.backend.run = counted
    sim.set_spike_times("src", ([1.0, 3.0, 5.5, 11.0], [0, 1, 4, 2]))
    sim.run(steps=123)
    sim.set_spike_times("src", ([14.0, 15.0, 25.3, 30.0], [3, 1, 0, 4]))  # input pushed between runs
    sim.run(steps=200)
    spikes = {p: sim.spikes(p) for p in ("noise", "src", "out")}
    out = (spikes, sim.recorded("out", "v"), sim.get("plastic", "w"), sim.get("out", "v"), sim.step)
    sim.close()
    return out, calls


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_chunked_runs_give_the_results_of_one_call(backend):
    whole, calls_whole = _simulate(backend, 10**9)
    chunked, calls_chunked = _simulate(backend, 7)
    adaptive, _ = _simulate(backend, None)
    assert calls_whole == [123, 200]
    assert calls_chunked == [7] * 17 + [4] + [7] * 28 + [4]
    for other in (chunked, adaptive):
        for pop, per_batch in whole[0].items():
            assert any(ids.size for _, ids in per_batch)
            for (t1, i1), (t2, i2) in zip(per_batch, other[0][pop]):
                np.testing.assert_array_equal(t1, t2)
                np.testing.assert_array_equal(i1, i2)
        for a, b in zip(whole[1:], other[1:]):
            np.testing.assert_array_equal(a, b)
    assert whole[1].shape == (323, 2, 12) and whole[4] == 323
    assert not np.all(whole[2] == 0.5)  # the weights did learn


def test_chunk_planner_aims_at_a_tenth_of_a_second():
    planner = ChunkPlanner()
    assert planner.next(10**6) == 1
    planner.measured(1, 1e-5)  # 10 µs per step: grows at most 4-fold per chunk
    assert planner.next(10**6) == 4
    for _ in range(20):
        n = planner.next(10**6)
        planner.measured(n, n * 1e-5)
    assert planner.next(10**6) == 10_000  # 0.1 s of work
    planner.measured(10_000, 1.0)  # the machine got ten times slower: shrink at once
    assert planner.next(10**6) == 1_000
    assert planner.next(300) == 300
    graphs = ChunkPlanner(granularity=100)  # whole CUDA graphs
    graphs.measured(100, 100 * 3.3e-5)
    assert graphs.next(10**6) == 400
    graphs.measured(400, 400 * 3.3e-5)
    assert graphs.next(10**6) == 1600
    graphs.measured(1600, 1600 * 3.3e-5)
    assert graphs.next(10**6) == 3000  # 0.1 s / 33 µs = 3030, rounded down to whole graphs


def _slow_network(n=2000):
    net = Network("long_run", dt=0.1, seed=5)
    net.add_population("inp", 200, m.POISSON, init={"rate": 20.0})
    net.add_population("out", n, m.LIF, params=LIF, record_spikes=True)
    net.add_population("probe", 1, m.LIF, params=LIF)  # a recorded variable that fits in memory for 1e7 steps
    net.add_projection("ff", "inp", "out", m.STATIC, m.EXP_CURR, FixedProbability(0.1), wu_init={"w": 0.8},
                       ps_params={"tau_syn": 5.0})
    net.add_projection("fp", "inp", "probe", m.STATIC, m.EXP_CURR, "dense", wu_init={"w": 0.8},
                       ps_params={"tau_syn": 5.0})
    net.record_var("probe", "v")
    return net


@contextlib.contextmanager
def _interrupt_after(seconds):
    """SIGINT to this process after ``seconds`` (as Ctrl-C sends it); never after the block."""
    sent = {}

    def fire():
        sent["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield sent
    finally:
        timer.cancel()
        timer.join()


@pytest.mark.slow
def test_ctrl_c_in_python_stops_soon_and_keeps_what_was_simulated(capsys):
    sim = _slow_network().build()
    requested = 10_000_000  # 1000 s of biological time: minutes of work
    with _interrupt_after(0.5) as sent, pytest.raises(KeyboardInterrupt):
        sim.run(steps=requested)
    latency = time.perf_counter() - sent["t"]
    assert latency < 1.0  # 0.5 s at most, plus slack for a busy machine
    done = sim.step
    assert 0 < done < requested and sim.run_steps_done == done and sim.run_steps_requested == requested
    assert sim.recorded("probe", "v").shape[0] == done  # the recordings hold every step run
    times, ids = sim.spikes("out")[0]
    assert ids.size > 0 and times.max() < sim.t
    # the simulation goes on from there
    sim.run(steps=100)
    assert sim.step == done + 100 and sim.recorded("probe", "v").shape[0] == done + 100
    assert "step/s" not in capsys.readouterr().err  # stderr is no terminal: no progress bar by default


@pytest.mark.slow
def test_progress_bar_appears_after_two_seconds_when_asked(capsys):
    sim = _slow_network().build(progress=True)
    sim.run(steps=1000)  # a short run: no bar
    assert capsys.readouterr().err == ""
    with _interrupt_after(2.8), pytest.raises(KeyboardInterrupt):
        sim.run(steps=10_000_000)
    err = capsys.readouterr().err
    assert "long_run" in err and "step" in err and "of 1e+06 ms" in err
    sim.run(steps=1000, progress=False)
    assert capsys.readouterr().err == ""


LONG_YAML = """\
name: long_cli
dt: 0.1
duration: 1000000
populations:
  inp: {size: 200, model: poisson, init: {rate: 20.0}}
  out:
    size: 2000
    model: lif
    params: {tau_m: 10.0, v_rest: 0.0, v_reset: 0.0, v_th: 1.0, t_ref: 2.0}
    record: [spikes]
projections:
  ff:
    pre: inp
    post: out
    connectivity: {fixed_probability: 0.1}
    weight_update: {model: static, init: {w: 0.25}}
    postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}
"""


@pytest.mark.slow
def test_ctrl_c_in_the_cli_prints_and_saves_the_partial_result(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(LONG_YAML)
    cmd = [sys.executable, "-m", "spikeforge.cli", "-v", "run", str(path), "--json", "--progress",
           "--save", str(tmp_path / "out.npz")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    err_lines = []
    for line in proc.stderr:  # wait until it simulates
        err_lines.append(line)
        if "running" in line:
            break
    assert "running" in err_lines[-1], "".join(err_lines)
    time.sleep(2.5)  # long enough for the progress bar
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    stopped = None
    for line in proc.stderr:  # (the progress bar's carriage returns end lines here too)
        err_lines.append(line)
        if "interrupted at" in line:
            stopped = time.perf_counter() - t0
            break
    out, err = proc.communicate(timeout=120)
    exited = time.perf_counter() - t0
    err = "".join(err_lines) + err
    assert proc.returncode == 130, err
    assert stopped is not None and stopped < 1.0  # 0.5 s at most, plus slack for a busy machine
    assert exited < 10.0  # then it counts, saves, prints and exits
    result = json.loads(out)
    assert result["interrupted"] is True and result["steps_requested"] == 10_000_000
    assert 0 < result["steps"] < 10_000_000 and result["spikes"]["out"] > 0
    assert f"interrupted at t = {result['steps'] * 0.1:g} ms (step {result['steps']} of 10000000)" in err
    assert "step/s" in err  # the progress bar
    saved = np.load(tmp_path / "out.npz")
    assert saved["spikes/out/ids"].size == result["spikes"]["out"]
    assert saved["spikes/out/times"].max() < result["duration_ms"]


TINY_YAML = """\
name: tiny_{tag}
dt: 0.1
duration: 5
populations:
  n: {{size: 3, model: lif, params: {{tau_m: 10.0, v_rest: 0.0, v_reset: 0.0, v_th: 1.0}}}}
"""


@pytest.mark.slow
def test_compiling_line_only_on_a_cache_miss(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML.format(tag=os.getpid()))

    def run(cache, *args):
        env = {**os.environ, "SPIKEFORGE_CACHE_DIR": str(tmp_path / cache)}
        proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "run", str(path), *args],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    name = f"tiny_{os.getpid()}"
    assert run("cache_a") == f"spikeforge: compiling network '{name}' (cpu) ...\n"
    assert run("cache_a") == ""  # from the cache: nothing
    assert run("cache_b", "--quiet") == ""  # compiled, silently
    assert run("cache_a", "--backend", "cuda-emu") == f"spikeforge: compiling network '{name}' (cuda-emu) ...\n"
