"""External Poisson drive (Brian2's PoissonInput): the Poisson sampler of philox.h against its
numpy reference (spikeforge.rng.poisson) draw for draw, the distribution against the exact pmf,
the effect on neurons on every backend (and when in the step it happens), batches and seeds,
nvcc, and the errors for bad input in Python and YAML."""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge import rng
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_network
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.models import builtins as m
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from tests.conftest import nvcc_path

HEADER_DIR = Path(spikeforge.__file__).parent / "templates" / "common"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "poisson_input.yaml"
LAMBDAS = (0.02, 0.5, 2.0, 9.0, 30.0, 200.0)

# Two integrators: every event adds its weight, nothing else changes v or u.
INTEGRATORS = NeuronModel("integrators", vars={"v": 0.0, "u": 0.0})

# ---------------------------------------------------------------------------------------
# The header on its own: a C++ driver prints sf_poisson for (lambda, seed, owner) over a grid
# of (element, batch, step); compiled with the flags of the CPU backend (no FMA contraction).
# ---------------------------------------------------------------------------------------
DRIVER = r"""
#include "philox.h"
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
    const double lambda = strtod(argv[1], nullptr);
    const uint64_t seed = strtoull(argv[2], nullptr, 10);
    const uint32_t owner = (uint32_t)strtoul(argv[3], nullptr, 10);
    const sf_poisson_params p = sf_poisson_setup(lambda);
    for (uint32_t s = 0; s < 4; s++)
        for (uint32_t b = 0; b < 5; b++)
            for (uint32_t e = 0; e < 1000; e++)
                std::printf("%u\n", sf_poisson(seed, e, b, s, owner, p));
    return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("poisson_driver")
    (d / "driver.cpp").write_text(DRIVER)
    exe = d / "driver"
    subprocess.run([cxx, "-O3", "-std=c++17", "-ffp-contract=off", "-fno-trapping-math", f"-I{HEADER_DIR}",
                    str(d / "driver.cpp"), "-o", str(exe)], check=True)
    return exe


def _grid():
    s, b, e = np.meshgrid(np.arange(4), np.arange(5), np.arange(1000), indexing="ij")
    return e.ravel(), b.ravel(), s.ravel()


@pytest.mark.parametrize("lam", [0.0, *LAMBDAS, 9.999, 10.0, 1e4])
def test_header_draws_equal_the_numpy_reference(driver, lam):
    """Inversion below 10, PTRS from 10 on, the switch itself and a huge mean: the same count
    for every one of 20000 (element, batch, step), from the same Philox words."""
    out = subprocess.run([str(driver), repr(lam), "987654321", "7"], capture_output=True, text=True, check=True)
    got = np.array(out.stdout.split(), dtype=np.int64)
    e, b, s = _grid()
    want = rng.poisson(987654321, e, b, s, 7, lam)
    assert got.shape == want.shape == (20000,)
    assert np.array_equal(got, want)
    if lam > 0:
        assert len(np.unique(got)) > 1


def test_sampler_constants_are_the_same_in_python_and_cpp(driver, tmp_path):
    """rng.poisson_setup / log_factorial compute what sf_poisson_setup / sf_log_factorial do."""
    src = tmp_path / "consts.cpp"
    src.write_text(r"""
#include "philox.h"
#include <cstdio>
int main() {
    const double lams[] = {0.02, 2.0, 10.0, 30.0, 200.0, 12345.5};
    for (double l : lams) {
        const sf_poisson_params p = sf_poisson_setup(l);
        std::printf("%a %a %a %a %a %a %a", p.lambda, p.exp_minus_lambda, p.log_lambda, p.b, p.a,
                    p.inv_alpha, p.v_r);
        for (int k = 0; k < SF_POISSON_TABLE; k++) std::printf(" %llu", (unsigned long long)p.threshold[k]);
        std::printf("\n");
    }
    for (int k = 0; k < 40; k++) std::printf("%a\n", sf_log_factorial((double)k));
    std::printf("%a\n", sf_log_factorial(1e6));
}
""")
    exe = tmp_path / "consts"
    subprocess.run([shutil.which("g++") or "c++", "-O0", "-ffp-contract=off", f"-I{HEADER_DIR}", str(src),
                    "-o", str(exe)], check=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    for line, lam in zip(lines[:6], (0.02, 2.0, 10.0, 30.0, 200.0, 12345.5)):
        p = rng.poisson_setup(lam)
        words = line.split()
        assert [float.fromhex(x) for x in words[:7]] == [p.lam, p.exp_minus_lambda, p.log_lambda, p.b, p.a,
                                                          p.inv_alpha, p.v_r]
        assert [int(x) for x in words[7:]] == list(p.threshold)
        assert len(p.threshold) == rng.POISSON_TABLE == 48
        assert (len(p.cdf) > 5) == (lam < 10)  # the inversion's table is used below a mean of 10 only
    ks = np.array([*range(40), 1e6])
    got = np.array([float.fromhex(x) for x in lines[6:]])
    assert np.array_equal(got, rng.log_factorial(ks))
    mpmath = pytest.importorskip("mpmath")  # sympy's dependency
    mpmath.mp.dps = 40
    exact = np.array([float(mpmath.loggamma(int(k) + 1)) for k in ks])
    assert np.allclose(got, exact, rtol=5e-16, atol=0)  # within about 2 ulp of log(k!)


@pytest.mark.parametrize("lam", [0.0, 1e-12, 0.02, 0.7, 4.0, 9.0, 9.8907, 10 - 1e-12])
def test_inversion_thresholds_split_the_uniforms_exactly_at_the_distribution_function(lam):
    """The header compares the 52-bit integer m of U = (m + 0.5) 2^-52 with T_k instead of U
    with F_k: T_k - 1 must give U <= F_k and T_k must give U > F_k, for every F_k of the table
    (the numbers are exact in double, so the comparison below is too). The table ends where F
    stops growing, within 47 entries for every lambda < 10, and the rest never counts."""
    p = rng.poisson_setup(lam)
    assert 1 <= len(p.cdf) <= 47 < rng.POISSON_TABLE
    assert all(a < b for a, b in zip(p.cdf, p.cdf[1:]))
    for F, T in zip(p.cdf, p.threshold):
        assert 0 < T <= rng.POISSON_NEVER
        assert (T - 1 + 0.5) * 2.0**-52 <= F
        if T < rng.POISSON_NEVER:
            assert (T + 0.5) * 2.0**-52 > F
    assert set(p.threshold[len(p.cdf):]) == {rng.POISSON_NEVER} and rng.POISSON_NEVER > 2**52 - 1


def test_lambda_just_below_ten_needs_47_terms():
    """The longest table: the recurrence stops growing F after 47 terms at lambda ~ 9.9, and
    never needs more below 10 (where PTRS takes over)."""
    longest = max(len(rng.poisson_setup(lam).cdf) for lam in np.linspace(9.0, 10.0, 2001)[:-1])
    assert longest == 47
    assert rng.poisson_setup(10.0).cdf == () and set(rng.poisson_setup(10.0).threshold) == {rng.POISSON_NEVER}


def test_neuron_loop_with_poisson_input_is_vectorised(tmp_path):
    """The inversion is branch-free (a fixed table, the Philox rounds unrolled), so the C++
    compiler vectorises a neuron update that draws Poisson counts: the Brunel network spends
    most of its time there. Checked with GCC's optimisation report, the CPU backend's flags."""
    from spikeforge.runtime import build

    cxx = build.find_cxx_compiler()
    if "g++" not in build.compiler_identity(cxx) and "GCC" not in build.compiler_identity(cxx):
        pytest.skip("the optimisation report checked here is GCC's")
    flags = [f for f in build._default_flags(cxx) if f != "-shared"]
    if "-march=native" not in flags or platform.machine() not in ("x86_64", "AMD64"):
        # 64-bit vector compares need SSE4.2 (x86-64-v2) or later: not in the generic x86-64 target
        pytest.skip("checked for builds for this machine's x86 vector units (-march=native)")
    net = Network("vec", dt=0.1, seed=1)
    net.add_population("exc", 1000, m.LIF, params=dict(v_rest=0.0, v_reset=10.0, v_th=20.0, t_ref=2.0))
    net.add_poisson_input("ext", "exc", "v", 1000, 40.0, 0.1)  # lambda = 4: inversion
    source = net.generated_code("cpu")
    lines = source.splitlines()
    kernel = next(n for n, line in enumerate(lines) if "neuron_update_exc_instance(" in line)
    loop = next(n for n in range(kernel, len(lines)) if "for (uint32_t _i = _i0; _i < _i1; _i++)" in lines[n])
    assert "sf_poisson_inversion(" in "\n".join(lines[loop:loop + 40])
    (tmp_path / "vec.cpp").write_text(source)
    report = subprocess.run([cxx, *flags, "-c", "-fopt-info-vec-optimized", str(tmp_path / "vec.cpp"), "-o",
                             str(tmp_path / "vec.o")], capture_output=True, text=True, check=True).stderr
    # GCC names the loop by a line of its head or its first statement
    vectorised = {int(line.split("vec.cpp:")[1].split(":")[0]) for line in report.splitlines()
                  if "vec.cpp:" in line and "optimized: loop vectorized" in line}
    assert vectorised & {loop + 1, loop + 2}, report


def _exact_pmf(lam: float, kmax: int) -> np.ndarray:
    k = np.arange(kmax + 1)
    return np.exp(-lam + k * math.log(lam) - np.array([math.lgamma(x + 1.0) for x in k]))


@pytest.mark.parametrize("lam", LAMBDAS)
def test_counts_follow_the_poisson_distribution(lam):
    """Mean, variance and a chi-square test against the exact pmf (bins with fewer than 20
    expected draws pooled into the two tails) over 400000 draws; fixed seed, so no flakes."""
    n = 400_000
    i = np.arange(n)
    k = rng.poisson(2024, i % 2000, i // 2000 % 8, i // 16000, 3, lam)
    assert abs(k.mean() - lam) < 5 * math.sqrt(lam / n)
    # var of the sample variance of a Poisson: (lam + 2 lam^2 (n / (n - 1))) / n ~ (lam + 2 lam^2) / n
    assert abs(k.var() - lam) < 5 * math.sqrt((lam + 2 * lam**2) / n)
    kmax = int(lam + 15 * math.sqrt(lam) + 15)
    assert k.max() <= kmax
    expected = _exact_pmf(lam, kmax) * n
    observed = np.bincount(k, minlength=kmax + 1)
    big = expected >= 20
    below = ~big & (np.arange(kmax + 1) < lam)
    above = ~big & (np.arange(kmax + 1) > lam)
    obs = np.r_[observed[big], observed[below].sum(), observed[above].sum()]
    exp = np.r_[expected[big], expected[below].sum(), expected[above].sum()]
    keep = exp > 0
    chi2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def _integrator_net(backend_batch=2, seed=11, precision="double"):
    net = Network("pin", dt=0.1, batch_size=backend_batch, seed=seed, precision=precision)
    net.add_population("p", 300, INTEGRATORS)
    # lambda = 1000 * 20 Hz * 0.1 ms = 2 (inversion) and 600 * 500 Hz * 0.1 ms = 30 (PTRS)
    a = net.add_poisson_input("ext_v", "p", "v", 1000, 20.0, 0.5)
    b = net.add_poisson_input("ext_u", "p", "u", 600, 500.0, -0.25)
    net.record_var("p", "v")
    net.record_var("p", "u")
    return net, a, b


def _reference_counts(seed, pi, dt, steps, batch, size):
    s, b, e = np.meshgrid(np.arange(steps), np.arange(batch), np.arange(size), indexing="ij")
    return rng.poisson(seed, e, b, s, pi.id, pi.lam(dt))


def test_increments_equal_weight_times_the_reference_draws(backend):
    """A neuron that only integrates: v after step n is the sum of w * k over steps 0..n, k the
    reference draws of its own input (inversion for v, PTRS for u), in every batch instance."""
    net, a, b = _integrator_net()
    sim = net.build(backend)
    sim.run(steps=50)
    v, u = sim.recorded("p", "v"), sim.recorded("p", "u")
    assert v.shape == (50, 2, 300)
    ka = _reference_counts(11, a, 0.1, 50, 2, 300)
    kb = _reference_counts(11, b, 0.1, 50, 2, 300)
    assert a.id != b.id
    assert np.array_equal(v, np.cumsum(ka * 0.5, axis=0))
    assert np.array_equal(u, np.cumsum(kb * -0.25, axis=0))
    assert abs(ka.mean() - 2.0) < 0.05 and abs(kb.mean() - 30.0) < 0.2


def test_cpu_and_cuda_emu_agree_exactly_in_float():
    """Float precision: the same increments, bit for bit, on both backends."""
    net, a, _ = _integrator_net(precision="float")
    out = []
    for backend in ("cpu", "cuda-emu"):
        sim = net.build(backend)
        sim.run(steps=30)
        out.append((sim.recorded("p", "v"), sim.recorded("p", "u")))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    ka = _reference_counts(11, a, 0.1, 30, 2, 300).astype(np.float32)
    v = np.zeros((2, 300), np.float32)
    for step in range(30):
        v = v + ka[step] * np.float32(0.5)
        assert np.array_equal(out[0][0][step], v)


def test_batch_instances_differ_and_a_seed_reproduces():
    net, _, _ = _integrator_net(seed=5)
    first = net.build("cpu")
    first.run(steps=20)
    again = net.build("cpu")
    again.run(steps=20)
    v1, v2 = first.recorded("p", "v"), again.recorded("p", "v")
    assert np.array_equal(v1, v2)
    assert not np.array_equal(v1[:, 0], v1[:, 1])
    other, _, _ = _integrator_net(seed=6)
    sim = other.build("cpu")
    sim.run(steps=20)
    assert not np.array_equal(sim.recorded("p", "v"), v1)


COUNTER = NeuronModel("counter", params={"t_ref": 0.3}, vars={"v": 0.0}, threshold="v > 1", reset="v = 0",
                      refractory="t_ref")


def test_increment_comes_after_the_threshold_and_before_the_reset(backend):
    """Brian2's schedule (PoissonInput in the 'synapses' slot): the state update, the threshold
    test, then v += w * k, then the reset of the neurons that spiked; events still add to v while
    the neuron is refractory. Checked step by step against that order in numpy."""
    net = Network("sched", dt=0.1, batch_size=2, seed=3, precision="double")
    net.add_population("p", 64, COUNTER, record_spikes=True)
    pi = net.add_poisson_input("kick", "p", "v", 100, 100.0, 0.375)  # lambda = 1
    net.record_var("p", "v")
    sim = net.build(backend)
    steps = 60
    sim.run(steps=steps)
    k = _reference_counts(3, pi, 0.1, steps, 2, 64)
    v = np.zeros((2, 64))
    refrac = np.zeros((2, 64), dtype=np.int64)
    want_v, want_spikes = [], [[], []]
    for step in range(steps):
        refrac = np.maximum(refrac - 1, 0)
        spike = (refrac == 0) & (v > 1)
        v = v + k[step] * 0.375
        v[spike] = 0.0
        refrac[spike] = 3
        want_v.append(v.copy())
        for b in range(2):
            want_spikes[b] += [(step, i) for i in np.flatnonzero(spike[b])]
    assert np.array_equal(sim.recorded("p", "v"), np.array(want_v))
    for b, (times, ids) in enumerate(sim.spikes("p")):
        got = sorted(zip(np.round(np.asarray(times) / 0.1).astype(int).tolist(), np.asarray(ids).tolist()))
        assert got == want_spikes[b]
        assert len(got) > 20


def test_lif_with_poisson_drive_cpu_equals_cuda_emu():
    net = Network("lifpi", dt=0.1, batch_size=2, seed=9)
    net.add_population("exc", 200, m.LIF, params=dict(v_rest=0.0, v_reset=10.0, v_th=20.0, t_ref=2.0),
                       record_spikes=True)
    net.add_poisson_input("ext", "exc", "v", 1000, 20.0, 0.1)
    runs = []
    for backend in ("cpu", "cuda-emu"):
        sim = net.build(backend, threads=1)
        sim.run(duration=50.0)
        runs.append([(np.asarray(t).tolist(), np.asarray(i).tolist()) for t, i in sim.spikes("exc")])
    assert runs[0] == runs[1]
    assert len(runs[0][0][0]) > 200


def test_generated_code_names_the_input_and_is_stable():
    net, _, _ = _integrator_net()
    text = net.generated_code("cpu", "neuron_update_p")
    assert "poisson input 'ext_v'" in text and "lambda = n * rate * dt = 1000 * 20 Hz * 0.1 ms = 2.0" in text
    # each input calls the method of its lambda: inversion for 2, PTRS for 30
    assert text.count("sf_poisson_inversion(_seed, _i, _b + _batch_offset, (uint32_t)_step,") == 1
    assert text.count("sf_poisson_ptrs(_seed, _i, _b + _batch_offset, (uint32_t)_step,") == 1
    assert net.generated_code("cpu") == _integrator_net()[0].generated_code("cpu")


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.parametrize("arch,precision", [("sm_80", "float"), ("sm_90", "double")])
def test_poisson_input_kernel_compiles_with_nvcc(arch, precision):
    from spikeforge.runtime.nvcc import build_cubin

    net, _, _ = _integrator_net(precision=precision)
    result = build_cubin(render_network(generate(net), "cuda"), arch, name=f"poisson_input_{precision}",
                         describe="poisson input")
    assert b"neuron_update_p" in result.path.read_bytes()


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(rate_hz=-1.0), "rate must not be negative"),
    (dict(rate_hz=float("nan")), "rate must be a finite number"),
    (dict(n=0), "n .*must be a positive integer"),
    (dict(n=2.5), "n .*must be a positive integer"),
    (dict(n=True), "n .*must be a positive integer"),
    (dict(weight=float("inf")), "weight must be a finite number"),
    (dict(weight="0.1"), "weight must be a finite number"),
    (dict(target="w"), "has no variable 'w' \\(variables: v\\)"),
    (dict(population="nope"), "unknown population 'nope'"),
    (dict(n=10**9, rate_hz=1e6), "more than the 1e\\+09 a draw can count"),
    (dict(name="exc"), "already used"),
])
def test_bad_python_input_is_one_clear_error(kwargs, match):
    net = Network("bad", dt=0.1)
    net.add_population("exc", 10, m.LIF)
    args = dict(name="ext", population="exc", target="v", n=100, rate_hz=10.0, weight=0.1) | kwargs
    with pytest.raises(NetworkError, match=match) as info:
        net.add_poisson_input(**args)
    assert "\n" not in str(info.value)
    assert not net.poisson_inputs


def test_target_shared_or_integer_variables_are_refused():
    model = NeuronModel("shared", vars={"v": 0.0, "g": {"init": 0.0, "per_element": False},
                                        "c": {"init": 0, "dtype": "int"}})
    net = Network("bad", dt=0.1)
    net.add_population("p", 4, model)
    for target in ("g", "c"):
        with pytest.raises(NetworkError, match=f"target '{target}' must be a real-valued variable per neuron"):
            net.add_poisson_input("ext", "p", target, 10, 1.0, 1.0)


YAML = """\
name: pin
dt: 0.1
populations:
  exc: {size: 10, model: lif}
poisson_inputs:
  ext:
    population: exc
    target: v
    n: 1000
    rate: 10.0
    weight: 0.1
"""


@pytest.mark.parametrize("old,new,line,field,match", [
    ("rate: 10.0", "rate: -5", 10, "rate", "must not be negative"),
    ("rate: 10.0", "rate: .nan", 10, "rate", "finite"),
    ("n: 1000", "n: 0", 9, "n", "positive integer"),
    ("n: 1000", "n: 2.5", 9, "n", "expected an integer"),
    ("target: v", "target: vv", 8, "target", "has no variable 'vv'"),
    ("weight: 0.1", "weight: .inf", 11, "weight", "finite"),
    ("weight: 0.1", "weight: heavy", 11, "weight", "expected a number"),
    ("population: exc", "population: inh", 7, "population", "unknown population 'inh'"),
    ("rate: 10.0", "rate: 1180591620717411303424", 10, "rate", "events per step, more than the 1e+09"),
    ("n: 1000", "n: 18446744073709551617", 9, "n", "of at most 4294967295"),
    ("    weight: 0.1\n", "", 6, "", "missing required key 'weight'"),
    ("    weight: 0.1\n", "    weight: 0.1\n    rates: 3\n", 12, "", "unknown key 'rates'"),
])
def test_bad_yaml_is_one_error_with_file_line_and_field(tmp_path, old, new, line, field, match):
    path = tmp_path / "pin.yaml"
    path.write_text(YAML.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_network(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}: poisson_inputs.ext{'.' + field if field else ''}")
    assert match in msg or pytest.fail(msg)


def test_yaml_values_with_units(tmp_path):
    """rate in any frequency unit, weight in any unit of the target's dimension; the wrong
    dimension is an error at its line."""
    path = tmp_path / "pin.yaml"
    path.write_text(YAML.replace("rate: 10.0", "rate: 0.02 kHz").replace("weight: 0.1", "weight: 100 uV"))
    net, _ = load_network(path)
    assert (net.poisson_inputs["ext"].rate_hz, net.poisson_inputs["ext"].weight) == (20.0, 0.1)
    for old, new, line, field, match in [("rate: 10.0", "rate: 3 mV", 10, "rate", "is a frequency (Hz)"),
                                         ("weight: 0.1", "weight: 1 ms", 11, "weight", "is a voltage (mV)")]:
        path.write_text(YAML.replace(old, new))
        with pytest.raises(ConfigError) as info:
            load_network(path)
        assert str(info.value).startswith(f"{path}:{line}: poisson_inputs.ext.{field}: ")
        assert match in str(info.value)


def test_yaml_builds_the_same_input_as_python():
    net, _ = load_network(textwrap.dedent(YAML))
    pi = net.poisson_inputs["ext"]
    assert (pi.population.name, pi.target, pi.n, pi.rate_hz, pi.weight) == ("exc", "v", 1000, 10.0, 0.1)
    assert pi.lam(net.dt) == pytest.approx(1.0)


def test_example_runs_with_the_cli(capsys):
    from spikeforge.cli import main

    assert main(["run", str(EXAMPLE), "--duration", "50", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert 80 < out["rates_hz"]["exc"] < 200
