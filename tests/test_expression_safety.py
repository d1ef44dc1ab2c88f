"""Model text is data: parsed by an allow-list, never evaluated; generated comments never change
the code; reserved names are refused where the model is defined; removable singularities
(exprel) are finite in float and double."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy

from spikeforge import models as m
from spikeforge.cli import main
from spikeforge.codegen.cprint import CPrinter, comment_text
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.config import load_file, load_network
from spikeforge.errors import ConfigError, ModelError
from spikeforge.models import NeuronModel
from spikeforge.models.expressions import ParseContext, parse_expression, symbol
from spikeforge.models.functions import exprel, exprel_prime
from spikeforge.network import Network
from tests.conftest import gpu_available, nvcc_path

TEMPLATES = Path(__file__).resolve().parents[1] / "spikeforge" / "templates"
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
needs_cxx = pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")


def payload(path: Path, kind: str) -> str:
    """An equation that runs ``touch path`` if its text is ever evaluated: the issue's, and one that
    reaches a shell through sympy's own classes (it did so under ``sympy.parse_expr``)."""
    if kind == "subclasses":
        return ("-v/tau_m + 0*len([c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
                f"'_wrap_close'][0].__init__.__globals__['system']('touch {path}'))")
    return ("-v/tau_m + 0*Integer(Integer.__new__.__globals__['__builtins__']['__import__']('os')"
            f".system('touch {path}'))")


PAYLOADS = ["subclasses", "builtins"]


def yaml_with_equation(rhs: str) -> str:
    return textwrap.dedent("""\
        name: payload
        models:
          mine:
            kind: neuron
            params: {tau_m: 10.0}
            vars: {v: 0.0}
            equations: |
              dv/dt = RHS
            threshold: v > 1
        populations:
          a: {size: 2, model: mine}
        """).replace("RHS", rhs)


def parse(text, known=("v", "u", "w", "th", "x"), condition=False):
    return parse_expression(text, ParseContext("test", set(known)), "field", condition=condition)


# -- 1. a model file is data, never code ------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOADS)
def test_shell_payload_in_an_equation_is_refused_and_runs_nothing(tmp_path, kind):
    target = tmp_path / "pwned"
    with pytest.raises(ModelError) as err:
        NeuronModel("evil", params={"tau_m": 10.0}, vars={"v": 0.0}, equations=f"dv/dt = {payload(target, kind)}")
    assert "model 'evil', field 'equations'" in str(err.value) and "not allowed" in str(err.value)
    assert not target.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_shell_payload_in_a_yaml_file_is_refused_with_its_line_and_runs_nothing(tmp_path, kind):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml_with_equation(payload(target, kind)))
    with pytest.raises(ConfigError) as err:
        load_file(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "dv/dt" in text)
    assert str(err.value).startswith(f"{path}:{line}: ") and "model 'mine'" in str(err.value)
    assert "not allowed in the model language" in str(err.value)
    assert not target.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_shell_payload_under_show_code_exits_with_one_line_and_runs_nothing(tmp_path, capsys, kind):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml_with_equation(payload(target, kind)))
    status = main(["show-code", str(path)])
    out, err = capsys.readouterr()
    assert status != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "not allowed" in err and "Traceback" not in err
    assert not target.exists()


def test_a_lambda_call_is_not_an_expression():
    with pytest.raises(ModelError, match="model 'test', field 'field'.*lambda is not allowed"):
        parse("(lambda: 1)()")


@pytest.mark.parametrize("text, says", [
    ("v.real", "attribute access"),
    ("x.__class__", "attribute access"),
    ("v[0]", "subscripts"),
    ("[c for c in (1, 2)][0]", "subscripts"),
    ("sum([v for v in (1, 2)])", "comprehensions"),
    ("'touch' + v", "strings"),
    ("exp(x=v)", "keyword arguments"),
    ("max(*(v, u))", "starred arguments"),
    ("__import__('os')", "names beginning with '__'"),
    ("v + __builtins__", "names beginning with '__'"),
    ("f'{v}'", "f-strings"),
    ("(y := 2) + v", "':=' is not allowed"),
    ("exp.__call__(v)", "attribute access"),
    ("(v)(2)", "'v' is not a function"),
    ("v if u else w", "where(condition, a, b)"),
    ("v is u", "'is'"),
    ("v @ u", "'@'"),
    ("exp(v, u)", "exp() takes 1 argument, got 2"),
    ("clip(v, u)", "clip() takes 3 arguments, got 2"),
    ("rand_uniform(3)", "takes 0 arguments"),
    ("exp", "must be called"),
    ("None", "not allowed"),
    ("2**2**2**2**2", "too large"),
])
def test_every_construct_outside_the_language_is_refused(text, says):
    with pytest.raises(ModelError) as err:
        parse(text)
    assert says in str(err.value) and "model 'test', field 'field'" in str(err.value)


def test_boolean_words_have_pythons_precedence():
    v, u, w, th = (symbol(n) for n in ("v", "u", "w", "th"))
    assert parse("v >= th and not (u > 2)", condition=True) == sympy.And(v >= th, u <= 2)
    assert parse("v > -40 and w < 1e9", condition=True) == sympy.And(v > -40, w < sympy.Float(1e9))
    assert parse("v > 1 or not u < 0 and w > 2", condition=True) == sympy.Or(v > 1, sympy.And(u >= 0, w > 2))
    assert parse("0 < v <= th", condition=True) == sympy.And(sympy.StrictLessThan(0, v), v <= th)
    # the symbols stay as they were: & | ~ join conditions, ^ is a power, literals are exact
    assert parse("(v > 1) & ~(u > 2) | (w > 3)", condition=True) == sympy.Or(sympy.And(v > 1, u <= 2), w > 3)
    assert parse("v^2 / 2 + 0.5") == v**2 * sympy.Rational(1, 2) + sympy.Float("0.5")
    with pytest.raises(ModelError, match="'and' needs a condition"):
        parse("v and u > 1", condition=True)


@needs_cxx
def test_a_threshold_written_with_and_not_or_runs_as_python_reads_it():
    ramp = NeuronModel("ramp", params={"th": 1.0}, vars={"v": 0.0, "u": 0.0},
                       equations="dv/dt = 1", threshold="v >= th and not (u > 2) or v > 100", reset="v = 0")
    net = Network("precedence", dt=0.1)
    net.add_population("on", 1, ramp, init={"u": 0.0}, record_spikes=True)
    net.add_population("off", 1, ramp, init={"u": 3.0}, record_spikes=True)
    sim = net.build()
    sim.run(duration=10.0)
    counts = sim.spike_counts()
    assert counts["off"] == 0  # u > 2 blocks it, and v never passes 100
    assert 8 <= counts["on"] <= 10  # v reaches th every ~1 ms


# -- comments never change the code ------------------------------------------------------------


def test_comment_text_is_one_harmless_line():
    assert comment_text("2.0 * tau_m  # \\") == "2.0 * tau_m  #"
    assert comment_text("a \\\nb\r\nc") == "a \\ | b | c"
    assert comment_text("x ??/") == "x ? ?/"
    assert "??" not in comment_text("x ???/")
    assert comment_text("a */ b") == "a * / b"
    assert comment_text("tab\there\x00bell\x07") == "tab here bell"
    assert comment_text("v = 0 \\ \\  ") == "v = 0"


@needs_cxx
def test_a_derived_comment_ending_in_a_backslash_keeps_the_next_line(tmp_path):
    text = textwrap.dedent("""\
        name: comments
        models:
          mine:
            kind: neuron
            params: {tau_m: 10.0}
            derived: {k1: "2.0 * tau_m  # \\\\", k2: "3.0 * tau_m  # ??/", k3: "k2 + 1  # */"}
            vars: {x: 0.0, y: 0.0}
            sim_code: "x = k2; y = k3  # \\\\"
        populations:
          a: {size: 1, model: mine}
        """)
    net, _ = load_network(text, filename="comments.yaml")
    sim = net.build()
    assert "const scalar k2 = " in sim.source
    assert not any(line.rstrip().endswith("\\") for line in sim.source.splitlines())
    sim.run(steps=1)
    assert sim.get("a", "x")[0, 0] == 30.0
    assert sim.get("a", "y")[0, 0] == 31.0


# -- reserved names --------------------------------------------------------------------------


RESERVED = ["int", "double", "new", "class", "scalar", "ctx", "size_t", "dt", "t", "expm1f", "lround", "M_PI",
            "INFINITY", "threadIdx", "blockIdx", "sf_state", "exp", "lambda", "uint32_t"]


@pytest.mark.parametrize("name", [*RESERVED, "_hidden", "i_syn"])
def test_a_reserved_parameter_name_is_refused_where_the_model_is_defined(name):
    with pytest.raises(ModelError) as err:
        NeuronModel("clash", params={name: 1.0}, vars={"v": 0.0}, equations="dv/dt = -v")
    msg = str(err.value)
    assert "model 'clash'" in msg and "'params'" in msg and f"'{name}'" in msg and "cannot name" in msg


@pytest.mark.parametrize("name", RESERVED)
def test_a_reserved_variable_name_is_refused_where_the_model_is_defined(name):
    with pytest.raises(ModelError) as err:
        NeuronModel("clash", vars={name: 0.0, "v": 0.0}, equations="dv/dt = -v")
    msg = str(err.value)
    assert "model 'clash'" in msg and "'vars'" in msg and f"'{name}'" in msg


def test_reserved_names_in_synapse_models_and_derived_parameters_are_refused():
    with pytest.raises(ModelError, match="'new' cannot name a variable"):
        m.WeightUpdateModel("wu", vars={"new": 0.0}, on_pre="post_input += new")
    with pytest.raises(ModelError, match="'INFINITY' cannot name a variable"):
        m.WeightUpdateModel("wu", vars={"w": 0.0}, pre_vars={"INFINITY": 0.0}, on_pre="post_input += w")
    with pytest.raises(ModelError, match="'class' cannot name a derived parameter"):
        NeuronModel("d", params={"tau": 1.0}, derived={"class": "2 * tau"})


def test_an_ode_for_a_parameter_is_refused():
    with pytest.raises(ModelError) as err:
        NeuronModel("lif2", params={"tau_m": 10.0}, vars={"v": 0.0}, equations="dv/dt = -v / tau_m\ndtau_m/dt = 1")
    msg = str(err.value)
    assert "model 'lif2', field 'equations'" in msg and "'tau_m' is not a state variable" in msg
    with pytest.raises(ModelError, match="'i_syn' is not a state variable"):
        NeuronModel("lif3", vars={"v": 0.0}, equations="di_syn/dt = -v")


# -- exprel, expm1, log1p ---------------------------------------------------------------------


def test_exprel_is_a_sympy_function_with_a_correct_derivative():
    x = sympy.Symbol("x", real=True)
    assert exprel(0) == 1 and exprel_prime(0) == sympy.Rational(1, 2)
    assert exprel(x).diff(x) == exprel_prime(x)
    for value in (-30.0, -0.7, -1e-6, 1e-9, 0.2, 0.49, 0.51, 3.0):
        exact = (mpmath.expm1(value) / value)
        assert math.isclose(float(exprel(sympy.Float(value))), float(exact), rel_tol=1e-15)
        slope = mpmath.diff(lambda y: mpmath.expm1(y) / y, mpmath.mpf(value))
        assert math.isclose(float(exprel_prime(sympy.Float(value))), float(slope), rel_tol=1e-13)
        assert math.isclose(float(exprel(x).diff(x).subs(x, value).evalf()), float(slope), rel_tol=1e-13)


def test_functions_print_in_float_and_double():
    x = symbol("x")
    e = parse("exprel(x) + expm1(x) + log1p(x) + exp(x)")
    assert CPrinter("float").doprint(e) == "expf(x) + expm1f(x) + sf_exprelf(x) + log1pf(x)"
    assert CPrinter("double").doprint(e) == "exp(x) + expm1(x) + sf_exprel(x) + log1p(x)"
    assert CPrinter("float").doprint(exprel(x).diff(x)) == "sf_exprel_primef(x)"


PROBE_XS = [0.0, 1e-8, -1e-8, 50.0, -50.0, 1.0, -0.3]


@needs_cxx
@pytest.mark.parametrize("precision", ["float", "double"])
@pytest.mark.parametrize("backend", [
    "cpu", pytest.param("cuda-emu", marks=pytest.mark.slow), pytest.param("cuda", marks=pytest.mark.gpu)])
def test_exprel_expm1_log1p_values_through_a_compiled_model(precision, backend):
    if backend == "cuda" and not gpu_available():
        pytest.skip("needs a CUDA GPU and pycuda")
    probe = NeuronModel("probe", params={"x": 0.0}, vars={"a": 0.0, "b": 0.0, "c": 0.0},
                        sim_code="a = exprel(x); b = expm1(x); c = log1p(x / 100)")
    net = Network(f"exprel_{precision}", dt=0.1, precision=precision)
    for k, x in enumerate(PROBE_XS):
        net.add_population(f"p{k}", 1, probe, params={"x": x})
    sim = net.build(backend=backend)
    assert ("sf_exprelf(x)" if precision == "float" else "sf_exprel(x)") in sim.source
    sim.run(steps=1)
    dtype, rtol = (np.float32, 4e-7) if precision == "float" else (np.float64, 2e-16)
    for k, x in enumerate(PROBE_XS):
        xv = mpmath.mpf(float(dtype(x)))  # the parameter as the network's precision holds it
        expected = {"a": 1 if xv == 0 else mpmath.expm1(xv) / xv, "b": mpmath.expm1(xv),
                    "c": mpmath.log1p(mpmath.mpf(float(dtype(float(dtype(x)) / 100))))}
        for var, want in expected.items():
            got = float(sim.get(f"p{k}", var)[0, 0])
            assert math.isclose(got, float(want), rel_tol=rtol, abs_tol=0 if want else 1e-300), (var, x, got)


@needs_cxx
def test_the_c_helpers_are_exact_near_zero_in_float_and_double(tmp_path):
    """sf_math.h, compiled by itself: exprel and its derivative at 0, near 0 and far out."""
    xs = [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, -0.4999, 0.5, -0.5, 0.51, 2.0, 50.0, -50.0]
    program = tmp_path / "probe.cpp"
    program.write_text(
        '#include <stdio.h>\n#include "sf_math.h"\nint main() {\n'
        f"    const double xs[] = {{{', '.join(repr(x) for x in xs)}}};\n"
        "    for (double x : xs) printf(\"%.17g %.17g %.9g %.9g\\n\", sf_exprel(x), sf_exprel_prime(x),"
        " (double)sf_exprelf((float)x), (double)sf_exprel_primef((float)x));\n    return 0;\n}\n")
    exe = tmp_path / "probe"
    subprocess.run([CXX, "-std=c++17", "-O2", "-I", str(TEMPLATES / "common"), str(program), "-o", str(exe)],
                   check=True)
    rows = [list(map(float, line.split())) for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()]
    for x, (rel_d, prime_d, rel_f, prime_f) in zip(xs, rows):
        for xv, got_rel, got_prime, rtol in ((x, rel_d, prime_d, 4e-16), (float(np.float32(x)), rel_f, prime_f, 4e-7)):
            want = float(exprel(sympy.Float(xv, 30)).evalf(30))
            want_prime = float(exprel_prime(sympy.Float(xv, 30)).evalf(30))
            assert math.isclose(got_rel, want, rel_tol=rtol), (x, got_rel, want)
            assert math.isclose(got_prime, want_prime, rel_tol=8 * rtol), (x, got_prime, want_prime)


# -- removable singularities of rate functions ---------------------------------------------------


RATES = {  # Brian2's COBAHH rate functions, written the textbook way (v in mV, rates in 1/ms)
    "alpha_m": "0.32*(13 - v + VT)/(exp((13 - v + VT)/4) - 1)",
    "beta_m": "0.28*(v - VT - 40)/(exp((v - VT - 40)/5) - 1)",
    "alpha_h": "0.128*exp((17 - v + VT)/18)",
    "beta_h": "4/(1 + exp((40 - v + VT)/5))",
    "alpha_n": "0.032*(15 - v + VT)/(exp((15 - v + VT)/5) - 1)",
    "beta_n": "0.5*exp((10 - v + VT)/40)",
}
SINGULAR_AT = {"alpha_m": -50.0, "beta_m": -23.0, "alpha_n": -48.0}  # v where numerator and denominator vanish


def test_textbook_rate_functions_are_rewritten_with_exprel_and_keep_their_values():
    v, vt = symbol("v"), symbol("VT")
    for name, text in RATES.items():
        guarded = parse(text, known=("v", "VT"))
        assert guarded.has(exprel) == (name in SINGULAR_AT), name
        raw = sympy.sympify(text.replace("v", "vv"), locals={"vv": v, "VT": vt})
        for value in (-80.0, -49.0, -30.0, 10.0):
            at = {v: value, vt: -63.0}
            assert math.isclose(float(guarded.subs(at).evalf()), float(raw.subs(at).evalf()), rel_tol=1e-12)
        if name in SINGULAR_AT:  # finite at the singular point, equal to the limit (raw, just beside it)
            at = SINGULAR_AT[name]
            near = raw.subs({v: sympy.Float(at, 30) + sympy.Float("1e-6", 30), vt: -63}).evalf(30)
            assert math.isclose(float(guarded.subs({v: at, vt: -63.0})), float(near), rel_tol=1e-6)
    x, k, a = symbol("x"), symbol("k"), symbol("a")
    known = ("x", "k", "a")
    assert parse("a*x/(1 - exp(-x/k))", known) == a * k / exprel(-x / k)
    assert parse("(exp(x) - 1)/x", known) == exprel(x)
    assert parse("1/(exp(x) - 1)", known) == 1 / (sympy.exp(x) - 1)  # a pole, not 0/0: left alone


HH = dict(
    params={"Cm": 200.0, "gl": 10.0, "El": -60.0, "EK": -90.0, "ENa": 50.0, "g_na": 20000.0, "g_kd": 6000.0,
            "VT": -63.0, "taue": 5.0, "taui": 10.0, "Ee": 0.0, "Ei": -80.0},
    vars={"v": -60.0, "m": 0.0, "n": 0.0, "h": 0.0, "ge": 0.0, "gi": 0.0},
    equations=f"""
        dv/dt = (gl*(El - v) + ge*(Ee - v) + gi*(Ei - v) - g_na*m*m*m*h*(v - ENa) - g_kd*n*n*n*n*(v - EK))/Cm
        dm/dt = {RATES['alpha_m']}*(1 - m) - {RATES['beta_m']}*m
        dn/dt = {RATES['alpha_n']}*(1 - n) - {RATES['beta_n']}*n
        dh/dt = {RATES['alpha_h']}*(1 - h) - {RATES['beta_h']}*h
        dge/dt = -ge/taue
        dgi/dt = -gi/taui
    """,
    threshold="v > -20",
    refractory="3",
)


@needs_cxx
@pytest.mark.slow
def test_cobahh_written_the_textbook_way_stays_finite_in_float():
    """Brian2's COBAHH (units ms, mV, nS, pF), 800 neurons for 500 ms in float. Before the exprel
    rewrite, 22 of these 800 neurons (83 + 15 of 4000) ended NaN."""
    with np.errstate(all="ignore"):  # why: in float, 13 - v + VT and exp((13 - v + VT)/4) - 1 both vanish
        x = np.float32(13) - np.float32(-50.0) + np.float32(-63.0)
        assert np.isnan(np.float32(0.32) * x / (np.exp(x / np.float32(4)) - np.float32(1)))
    hh = NeuronModel("hh_textbook", **HH)
    net = Network("cobahh_textbook", dt=0.1, precision="float", seed=1)
    init = {"v": {"normal": [-65.0, 5.0]}, "ge": {"normal": [40.0, 15.0]}, "gi": {"normal": [200.0, 120.0]}}
    net.add_population("e", 640, hh, init=init, record_spikes=True)
    net.add_population("i", 160, hh, init=init, record_spikes=True)
    for name, pre, post, w, target in [("ee", "e", "e", 6.0, "ge"), ("ei", "e", "i", 6.0, "ge"),
                                       ("ie", "i", "e", 67.0, "gi"), ("ii", "i", "i", 67.0, "gi")]:
        net.add_projection(name, pre, post, m.STATIC_CONSTANT, m.delta_curr(target),
                           connectivity={"fixed_probability": 0.02}, wu_params={"w": w})
    sim = net.build()
    assert sim.spec.integrators["e"] == "exponential_euler"
    assert sim.source.count("sf_exprelf(") >= 3 * 2
    sim.run(duration=500.0)
    for pop in ("e", "i"):
        for var in ("v", "m", "n", "h"):
            values = np.asarray(sim.get(pop, var))
            assert np.isfinite(values).all(), (pop, var, int((~np.isfinite(values)).sum()))
    assert sum(sim.spike_counts().values()) > 800  # the network is active: neurons cross the singular points


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
@pytest.mark.parametrize("precision", ["float", "double"])
def test_exprel_compiles_with_nvcc(precision):
    from spikeforge.runtime.nvcc import build_cubin

    probe = NeuronModel("probe", params={"x": 0.5}, vars={"a": 0.0, "v": 0.0},
                        equations="dv/dt = -v * exprel(v) + log1p(x) * expm1(x)", sim_code="a = exprel(x)")
    net = Network(f"exprel_nvcc_{precision}", dt=0.1, precision=precision)
    net.add_population("p", 4, probe)
    result = build_cubin(render_network(generate(net), "cuda"), "sm_80", name=net.name, describe=net.name)
    assert result.path.read_bytes()[:4] == b"\x7fELF"
