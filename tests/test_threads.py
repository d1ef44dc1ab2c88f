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
from spikeforge.training.codegen import generate_training_kernel
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


def eprop_config():
    return EpropConfig(3, 4, 2, m.LIF_SUBTRACTIVE, {"tau_m": 20.0, "v_th": 0.6}, name="threads_eprop")


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
    source = generate_training_kernel(eprop_config()).source
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
from test_threads import stdp_network, eprop_config
from spikeforge.networks import cuba_network
from spikeforge.training.runtime import EpropRuntime
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
rt = EpropRuntime(eprop_config(), threads=2)
x = (np.random.default_rng(0).random((20, 1, 3)) < 0.3).astype(np.float32)
before = teams()
rt.run_batch(x, np.ones(20), labels=np.zeros(1, dtype=np.int32))
out["eprop_b1"] = teams() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def team_counts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teams")
    (tmp / "counter.cpp").write_text(_COUNTER)
    lib = tmp / "libcounter.so"
    subprocess.run([find_cxx_compiler(), "-O2", "-shared", "-fPIC", "counter.cpp", "-o", lib.name,
                    "-Wl,--no-as-needed", "-lgomp", "-ldl"], cwd=tmp, check=True, capture_output=True)
    env = {**os.environ, "LD_PRELOAD": str(lib)}
    proc = subprocess.run([sys.executable, "-c", _COUNT_TEAMS.format(tests=str(ROOT / "tests"))], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_small_kernels_start_no_thread_team(team_counts):
    """100 steps of small networks at batch 1 (the STDP batch reduction ran a team every step)
    and 2 (the synapse updates did), and one small e-prop trial: not a single team."""
    assert team_counts["stdp_b1"] == 0
    assert team_counts["stdp_b4"] == 0
    assert team_counts["cuba_b2"] == 0
    assert team_counts["eprop_b1"] == 0


def test_large_kernels_still_run_on_a_team(team_counts):
    # 2048 Poisson neurons x 2 instances: the neuron update is worth a team every step
    assert team_counts["large_b2"] >= 100


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
