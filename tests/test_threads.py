"""OpenMP on a shared machine: no thread team without enough work, and waiting threads sleep.

A thread team costs microseconds to start and join on an idle machine and milliseconds when
other processes hold the cores, so a kernel may only start one when it has enough work; the
OpenMP runtime's default wait policy is passive unless the user chose otherwise.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.network import FixedProbability, Network
from spikeforge.networks import cuba_network
from spikeforge.runtime.build import find_cxx_compiler
from spikeforge.runtime.cuda_emu import emu_header
from spikeforge.training.model import EpropConfig

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(spikeforge.__file__).resolve().parent / "templates"


def stdp_network(n_pre=50, n_post=1, batch_size=1, name="threads_stdp"):
    """Poisson inputs onto LIF neurons through dense STDP (weights shared: a batch reduction)."""
    net = Network(name, dt=0.1, batch_size=batch_size, seed=3, precision="double")
    net.add_population("input", n_pre, m.POISSON, init={"rate": 50.0})
    net.add_population("out", n_post, m.LIF, params=dict(tau_m=10.0, v_rest=-60.0, v_reset=-65.0, v_th=-55.0,
                                                         r_m=80.0 / n_pre), record_spikes=True)
    net.add_projection("syn", "input", "out", m.STDP, m.EXP_CURR, "dense", wu_init={"w": {"uniform": [0.2, 0.8]}})
    return net


def sparse_stdp_network():
    net = Network("threads_sparse", dt=0.1, seed=4)
    net.add_population("a", 60, m.POISSON, init={"rate": 20.0})
    net.add_population("b", 40, m.LIF)
    net.add_projection("ab", "a", "b", m.STDP, m.EXP_CURR, FixedProbability(0.2), wu_init={"w": 0.5})
    return net


def independent_network(batch_size=8, name="threads_independent"):
    """CUBA-like, with Poisson input and delays, spikes and v recorded: its batch instances
    never meet (static weights), so the run loop may run them apart."""
    net = Network(name, dt=0.1, batch_size=batch_size, seed=11, precision="float")
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=2.0)
    net.add_population("input", 200, m.POISSON, init={"rate": 20.0})
    for pop, size in (("exc", 1600), ("inh", 400)):
        net.add_population(pop, size, m.LIF, params=lif, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    net.add_projection("in_exc", "input", "exc", m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.05),
                       wu_params={"w": 1.0}, ps_params={"tau_syn": 5.0}, delay=1.5)
    for pre, w, tau, delay in (("exc", 1.62, 5.0, 0.8), ("inh", -9.0, 10.0, 0.0)):
        for post in ("exc", "inh"):
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(0.04),
                               wu_params={"w": w}, ps_params={"tau_syn": tau}, delay=delay)
    net.record_var("exc", "v")
    return net


def eprop_config():
    return EpropConfig(3, 4, 2, m.LIF_SUBTRACTIVE, {"tau_m": 20.0, "v_th": 0.6}, name="threads_eprop")


def eprop_runtime(threads, batch=1):
    """The trainer's runtime of :func:`eprop_config` (the network it translates into)."""
    from spikeforge.training.network_runtime import CompiledRuntime, translate
    from spikeforge.training.objectives import Adam

    job, names, initial, feedback = translate(eprop_config(), batch, 0, 1.0, Adam())
    return CompiledRuntime(job, names, threads=threads, feedback=feedback, initial=initial)


# ------------------------------------------------------------------- every pragma has a work check


def unguarded_parallel_pragmas(source: str) -> list[str]:
    """The `#pragma omp parallel` lines with neither an if clause nor a work check (an
    `if (... SF_PARALLEL_MIN_...)` opening the block they sit in) right before them."""
    lines = source.splitlines()
    bad = []
    for i, line in enumerate(lines):
        if not re.search(r"#\s*pragma\s+omp\s+parallel\b", line):
            continue
        if re.search(r"\bif\s*\(", line.split("pragma", 1)[1]):
            continue
        previous = [x.strip() for x in lines[:i] if x.strip() and not x.strip().startswith(("//", "#"))]
        if previous and previous[-1].startswith("if (") and "SF_PARALLEL_MIN_" in previous[-1]:
            continue
        bad.append(line.strip())
    return bad


def test_the_check_finds_an_unconditional_pragma():
    assert unguarded_parallel_pragmas("    #pragma omp parallel for schedule(static)\n    for (;;) {}\n")
    assert unguarded_parallel_pragmas("if (_B > 1) {\n#pragma omp parallel for\n")
    assert not unguarded_parallel_pragmas("#pragma omp parallel for if (n > 4096)\n")
    assert not unguarded_parallel_pragmas("if (_B > 1 && _n >= SF_PARALLEL_MIN_WORK) {\n#pragma omp parallel for\n")


@pytest.mark.parametrize("make", [stdp_network, sparse_stdp_network, lambda: cuba_network(n=200)],
                         ids=["stdp", "sparse_stdp", "cuba"])
def test_generated_cpu_code_enters_no_parallel_region_without_a_work_check(make):
    source = render_network(generate(make()), "cpu")
    assert "#pragma omp parallel" in source
    assert unguarded_parallel_pragmas(source) == []


def test_eprop_and_cuda_emu_code_enter_no_parallel_region_without_a_work_check():
    rt = eprop_runtime(threads=None, batch=4)
    rt.check()
    source = render_network(rt.compiled[1].spec, "cpu")
    assert "eprop_eligibility_inp_hid" in source
    assert "#pragma omp parallel" in source
    assert unguarded_parallel_pragmas(source) == []
    assert unguarded_parallel_pragmas(emu_header()) == []
    for template in sorted(TEMPLATES.glob("*/*.j2")):
        assert unguarded_parallel_pragmas(template.read_text()) == [], template.name


# ------------------------------------------------------------------- behaviour: teams actually started

# Interposes GOMP_parallel (every `#pragma omp parallel` region compiled by GCC calls it, with
# num_threads = 1 when the region's if clause is false) and counts the calls that may start a team.
_COUNTER = r"""
#include <dlfcn.h>
#include <atomic>
typedef void (*parallel_fn)(void (*)(void*), void*, unsigned, unsigned);
static std::atomic<unsigned long> teams{0};
extern "C" void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) {
    static parallel_fn real = (parallel_fn)dlsym(RTLD_NEXT, "GOMP_parallel");
    if (num_threads != 1) teams++;
    real(fn, data, num_threads, flags);
}
extern "C" unsigned long sf_test_teams(void) { return teams.load(); }
"""

_COUNT_TEAMS = """
import ctypes, json, sys
sys.path.insert(0, {tests!r})
from test_threads import stdp_network, eprop_runtime
from spikeforge.networks import cuba_network
import numpy as np

teams = ctypes.CDLL(None).sf_test_teams
out = {{}}
for name, net in [("stdp_b1", stdp_network()), ("stdp_b4", stdp_network(batch_size=4)),
                  ("cuba_b2", cuba_network(n=400, batch_size=2, name="threads_cuba")),
                  ("large_b2", stdp_network(n_pre=2048, batch_size=2, name="threads_large"))]:
    sim = net.build(threads=2)
    before = teams()
    sim.run(steps=100)
    out[name] = teams() - before
rt = eprop_runtime(threads=2)
x = (np.random.default_rng(0).random((20, 1, 3)) < 0.3).astype(np.float32)
rt.run_batch(x, np.ones(20), labels=np.zeros(1, dtype=np.int32))  # compiled for 20 steps on first use
before = teams()
rt.run_batch(x, np.ones(20), labels=np.zeros(1, dtype=np.int32))
rt.step(batch=1, mean=True, lr=0.01, step=1, clamp=dict())
out["eprop_b1"] = teams() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def team_counter(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("teams")
    (tmp / "counter.cpp").write_text(_COUNTER)
    lib = tmp / "libcounter.so"
    subprocess.run([find_cxx_compiler(), "-O2", "-shared", "-fPIC", "counter.cpp", "-o", lib.name,
                    "-Wl,--no-as-needed", "-lgomp", "-ldl"], cwd=tmp, check=True, capture_output=True)
    return lib


def _run_counting_teams(lib: Path, script: str, *args: str) -> dict:
    env = {**os.environ, "LD_PRELOAD": str(lib)}
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def team_counts(team_counter):
    return _run_counting_teams(team_counter, _COUNT_TEAMS.format(tests=str(ROOT / "tests")))


@pytest.mark.slow
def test_small_kernels_start_no_thread_team(team_counts):
    """100 steps of small networks at batch 1 (the STDP batch reduction ran a team every step)
    and 2 (the synapse updates did), and one small e-prop trial: not a single team."""
    assert team_counts["stdp_b1"] == 0
    assert team_counts["stdp_b4"] == 0
    assert team_counts["cuba_b2"] == 0
    assert team_counts["eprop_b1"] == 0


@pytest.mark.slow
def test_large_kernels_still_run_on_a_team(team_counts):
    # 2048 Poisson neurons x 2 instances, whose STDP weights are shared: a step's work is worth a
    # team, and the run is one team per call of the run loop (a run's first chunks are short),
    # meeting at the batch reduction every step, not a team per kernel and step (200 or more)
    assert 1 <= team_counts["large_b2"] <= 10


# ------------------------------------------------------------------- independent instances: one team per run

# Runs the independent network (batch 8, 800 steps in two runs, so the v recording starts
# again) on every path of the run loop, saving every array of the final state, the recorded
# v and the spikes, and counting the thread teams each configuration started.
_RUN_PATHS = """
import ctypes, json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_threads import independent_network, stdp_network

teams = ctypes.CDLL(None).sf_test_teams
out_dir = sys.argv[1]
configs = {{
    # name: (threads, steps per backend call: None = as the runtime chooses)
    "one_thread": (1, None),
    "two_threads": (2, None),
    "two_threads_whole_runs": (2, 400),      # two calls: one team each
    "two_threads_uneven": (2, 97),           # 97-step calls, then a short one on the per-step path
    "per_step_two_threads": (2, 1),          # one step per call: the per-step path, teams in the kernels
    "per_step_one_thread": (1, 1),
}}
out = {{}}
for name, (threads, chunk) in configs.items():
    sim = independent_network().build(threads=threads)
    sim.chunk_steps = chunk
    before = teams()
    sim.run(steps=500)
    sim.run(steps=300)
    out[name] = teams() - before
    result = {{"arr_" + k: v for k, v in sim.backend.arrays.items()}}
    result["recorded_v"] = sim.recorded("exc", "v")
    for pop in ("exc", "inh"):
        for b, (t, i) in enumerate(sim.spikes(pop)):
            result[f"spikes_{{pop}}_{{b}}_t"], result[f"spikes_{{pop}}_{{b}}_i"] = t, i
    np.savez(f"{{out_dir}}/{{name}}.npz", **result)
# shared weights learned across the batch couple the instances: steps stay in lockstep
sim = stdp_network(n_pre=2048, batch_size=4, name="threads_coupled").build(threads=2)
sim.chunk_steps = 200
before = teams()
sim.run(steps=200)
out["coupled"] = teams() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def run_paths(team_counter, tmp_path_factory):
    out = tmp_path_factory.mktemp("paths")
    teams = _run_counting_teams(team_counter, _RUN_PATHS.format(tests=str(ROOT / "tests")), str(out))
    return teams, {name: dict(np.load(out / f"{name}.npz")) for name in teams if name != "coupled"}


def test_the_generator_marks_networks_whose_instances_never_meet():
    assert generate(independent_network()).instances_independent
    assert generate(cuba_network(n=200)).instances_independent
    # a weight shared across the batch and learned: its batch reduction couples the instances
    assert not generate(stdp_network(batch_size=4)).instances_independent
    assert not generate(sparse_stdp_network()).instances_independent


@pytest.mark.slow
def test_independent_instances_run_on_one_thread_team_per_run(run_paths):
    """Batch 8 on 2 threads: one team for each long enough call of the run loop, not one per
    kernel and step (which kept a busy machine waiting for the other thread at every join)."""
    teams, _ = run_paths
    assert teams["two_threads_whole_runs"] == 3  # calls of 400, 100 and 300 steps
    assert teams["per_step_two_threads"] >= 800  # one step per call: the kernels start their own teams


@pytest.mark.slow
def test_every_run_path_gives_identical_results(run_paths):
    """Instance by instance on one or two threads, in calls of any length, or step by step:
    every state array, the recorded v and the spikes are bit for bit the same."""
    teams, results = run_paths
    reference = results["per_step_one_thread"]
    assert reference["recorded_v"].shape == (800, 8, 1600)
    assert len(reference["spikes_exc_3_t"]) > 100
    assert not np.array_equal(reference["recorded_v"][:, 0], reference["recorded_v"][:, 1])  # instances differ
    for name, got in results.items():
        assert got.keys() == reference.keys(), name
        for key in reference:
            np.testing.assert_array_equal(got[key], reference[key], err_msg=f"{name}: {key}")
    assert teams["two_threads_whole_runs"] < teams["per_step_two_threads"]  # the paths really differ


@pytest.mark.slow
def test_coupled_instances_run_on_one_team_too(run_paths):
    """Instances that share learned weights meet every step, at the batch reduction, inside
    one team per call of the run loop (tests/test_parallel_region.py checks their results);
    the per-step path started a team per kernel and step (200 or more here)."""
    teams, _ = run_paths
    assert teams["coupled"] == 1


# ------------------------------------------------------------------- results do not depend on threads


@pytest.mark.parametrize("batch_size", [1, 4])
def test_stdp_results_are_the_same_on_one_and_two_threads(batch_size):
    """200 x 100 dense STDP synapses: at batch 4 the batch reduction (80,000 adds) runs on a
    team, at batch 1 on the calling thread; weights and spikes agree exactly."""
    results = []
    for threads in (1, 2):
        sim = stdp_network(200, 100, batch_size, name=f"threads_stdp_big_{batch_size}").build(threads=threads)
        sim.run(steps=300)
        results.append((sim.get("syn", "w"), sim.spikes("out")))
    (w1, s1), (w2, s2) = results
    assert np.any(w1 != w1.flat[0])  # the weights learned something
    np.testing.assert_array_equal(w1, w2)
    for (t1, i1), (t2, i2) in zip(s1, s2):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(i1, i2)
    assert sum(len(t) for t, _ in s1) > 0


# ------------------------------------------------------------------- waiting threads sleep

_SHOW_ENV = """
import ctypes, os
from spikeforge.networks import cuba_network
cuba_network(n=100, name="threads_env").build(threads=2).run(steps=10)
print("environ", os.environ.get("OMP_WAIT_POLICY"), flush=True)
ctypes.CDLL("libgomp.so.1").omp_display_env(1)
"""


def _openmp_settings(**env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    proc = subprocess.run([sys.executable, "-c", _SHOW_ENV], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = dict(re.findall(r"^\s*(?:\[[^\]]*\]\s*)?(\w+) = '([^']*)'", proc.stderr, re.M))
    shown["environ"] = proc.stdout.split("environ", 1)[1].strip()
    return shown


def test_openmp_threads_wait_passively_by_default():
    """The runtime the generated library loads sees OMP_WAIT_POLICY=passive: no spinning
    (GOMP_SPINCOUNT 0; the runtime's own default spins 300,000 times)."""
    shown = _openmp_settings()
    assert shown["environ"] == "passive"
    assert shown["OMP_WAIT_POLICY"] == "PASSIVE"
    assert shown["GOMP_SPINCOUNT"] == "0"


def test_the_users_wait_policy_wins():
    shown = _openmp_settings(OMP_WAIT_POLICY="active")
    assert shown["environ"] == "active"
    assert shown["OMP_WAIT_POLICY"] == "ACTIVE"
    assert int(shown["GOMP_SPINCOUNT"]) > 300000
