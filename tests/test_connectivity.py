"""Connectivity drawn by the generated C++ builder (spikeforge.connectivity): conditions,
probability expressions, fixed in/out-degree and total, fixed probability; reproducibility
by seed and thread count; errors with projection, field and, for YAML, file and line."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from scipy import stats

from spikeforge import models as m
from spikeforge.config import load_network
from spikeforge.connectivity import FixedInDegree, FixedOutDegree, FixedTotal, FromExpressions, draw_rows
from spikeforge.errors import ConfigError, ModelError, NetworkError
from spikeforge.network import FixedProbability, Network

#: Binomial bounds are two-sided at this level (each test checks few quantities).
ALPHA = 1e-4


def pairs(row_start, post):
    pre = np.repeat(np.arange(row_start.size - 1), np.diff(row_start.astype(np.int64)))
    return pre, post.astype(np.int64)


def dense_matrix(row_start, post, n_post):
    pre, post = pairs(row_start, post)
    mat = np.zeros((row_start.size - 1, n_post), dtype=np.int64)
    np.add.at(mat, (pre, post), 1)
    return mat


def check_rows(row_start, post, n_post):
    """Valid ragged rows: starts ascending, post indices in range, ascending within a row."""
    assert row_start.dtype == np.uint32 and post.dtype == np.uint32
    assert row_start[0] == 0 and row_start[-1] == post.size and np.all(np.diff(row_start.astype(np.int64)) >= 0)
    assert post.size == 0 or post.max() < n_post
    for i in range(row_start.size - 1):
        assert np.all(np.diff(post[row_start[i]:row_start[i + 1]].astype(np.int64)) > 0)  # no repeats


def binomial_ok(count, n, p):
    lo, hi = stats.binom.ppf(ALPHA / 2, n, p), stats.binom.isf(ALPHA / 2, n, p)
    return lo <= count <= hi


# -- conditions and probability expressions -----------------------------------------------


def test_condition_not_equal_is_all_but_the_diagonal():
    rs, post = draw_rows(FromExpressions("i != j"), 40, 40, 1, 2, "t")
    check_rows(rs, post, 40)
    assert np.array_equal(dense_matrix(rs, post, 40), 1 - np.eye(40, dtype=np.int64))


def test_condition_band_between_unequal_sizes():
    rs, post = draw_rows(FromExpressions("abs(i - j) < 10"), 50, 70, 1, 2, "t")
    check_rows(rs, post, 70)
    i, j = np.meshgrid(np.arange(50), np.arange(70), indexing="ij")
    assert np.array_equal(dense_matrix(rs, post, 70), (np.abs(i - j) < 10).astype(np.int64))


def test_probability_expression_per_distance_frequency_within_binomial_bounds():
    n = 600
    conn = FromExpressions(probability="exp(-abs(i - j)/tau)", params={"tau": 30.0})
    rs, post = draw_rows(conn, n, n, 5, 3, "t")
    check_rows(rs, post, n)
    pre, post = pairs(rs, post)
    connected = np.bincount(np.abs(pre - post), minlength=n)
    for d in (0, 1, 10, 30, 60, 100):
        pairs_at_d = n if d == 0 else 2 * (n - d)
        assert binomial_ok(connected[d], pairs_at_d, np.exp(-d / 30.0)), (d, connected[d], pairs_at_d)
    assert connected[0] == n  # probability 1: always
    far = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) >= 400
    assert binomial_ok(connected[400:].sum(), int(far.sum()), float(np.exp(-np.abs(
        np.subtract.outer(np.arange(n), np.arange(n)))[far] / 30.0).mean()))


def test_probability_combined_with_condition():
    conn = FromExpressions("i != j", "exp(-abs(i - j)/tau)", {"tau": 30.0})
    rs, post = draw_rows(conn, 300, 300, 5, 3, "t")
    pre, post = pairs(rs, post)
    assert not np.any(pre == post)
    # the pairs off the diagonal are the very ones drawn without the condition
    rs0, post0 = draw_rows(FromExpressions(probability="exp(-abs(i - j)/tau)", params={"tau": 30.0}),
                           300, 300, 5, 3, "t")
    pre0, post0 = pairs(rs0, post0)
    keep = pre0 != post0
    assert np.array_equal(pre, pre0[keep]) and np.array_equal(post, post0[keep])


# -- fixed degrees and totals -------------------------------------------------------------


def test_fixed_in_degree_exact_and_without_repeats():
    rs, post = draw_rows(FixedInDegree(25), 200, 300, 7, 4, "t")
    check_rows(rs, post, 300)  # no pair twice
    assert np.array_equal(np.bincount(post, minlength=300), np.full(300, 25))
    # every presynaptic neuron is as likely: row sizes near 300 * 25 / 200
    sizes = np.diff(rs.astype(np.int64))
    assert sizes.sum() == 7500 and stats.chisquare(sizes).pvalue > ALPHA


def test_fixed_in_degree_without_autapses_and_all_but_one():
    rs, post = draw_rows(FixedInDegree(99, allow_autapses=False), 100, 100, 7, 4, "t")
    assert np.array_equal(dense_matrix(rs, post, 100), 1 - np.eye(100, dtype=np.int64))


def test_fixed_out_degree_exact():
    rs, post = draw_rows(FixedOutDegree(30, allow_autapses=False), 250, 120, 7, 4, "t")
    check_rows(rs, post, 120)
    assert np.all(np.diff(rs.astype(np.int64)) == 30)
    pre, post = pairs(rs, post)
    assert not np.any(pre == post)
    assert stats.chisquare(np.bincount(post, minlength=120)).pvalue > ALPHA


def test_fixed_total_exact():
    rs, post = draw_rows(FixedTotal(5000), 100, 80, 7, 4, "t")
    check_rows(rs, post, 80)
    assert post.size == 5000
    assert stats.chisquare(np.bincount(post, minlength=80)).pvalue > ALPHA
    # each row's count is hypergeometric: n pairs of all n_pre * n_post, n_post of them in the row
    n_pre, n_post, n = 3000, 50, 60000
    rs, post = draw_rows(FixedTotal(n), n_pre, n_post, 7, 4, "t")
    assert post.size == n
    sizes = np.diff(rs.astype(np.int64))
    edges = np.array([0, 14, 17, 19, 20, 21, 23, 26, n_post + 1])
    observed = np.histogram(sizes, edges)[0]
    expected = n_pre * np.diff(stats.hypergeom.cdf(edges - 1, n_pre * n_post, n_post, n))
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > ALPHA
    assert abs(sizes.var() / stats.hypergeom.var(n_pre * n_post, n_post, n) - 1) < 0.1
    rs, post = draw_rows(FixedTotal(90, allow_autapses=False), 10, 10, 7, 4, "t")
    assert np.array_equal(dense_matrix(rs, post, 10), 1 - np.eye(10, dtype=np.int64))


def test_fixed_probability_count_and_rows_within_binomial_bounds():
    n_pre, n_post, p = 2000, 1500, 0.05
    rs, post = draw_rows(FixedProbability(p), n_pre, n_post, 3, 5, "t")
    check_rows(rs, post, n_post)
    assert binomial_ok(post.size, n_pre * n_post, p)
    sizes = np.diff(rs.astype(np.int64))
    # per-row sizes are Binomial(n_post, p): their histogram against the pmf
    edges = np.array([0, 60, 68, 72, 75, 78, 82, 90, n_post + 1])
    observed = np.histogram(sizes, edges)[0]
    expected = n_pre * np.diff(stats.binom.cdf(edges - 1, n_post, p))
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > ALPHA
    # columns too (the skips are uniform over j)
    assert stats.chisquare(np.bincount(post, minlength=n_post)).pvalue > ALPHA
    # without autapses: no diagonal, the rest unchanged
    rs2, post2 = draw_rows(FixedProbability(p, allow_autapses=False), n_pre, n_post, 3, 5, "t")
    pre, post_ = pairs(rs, post)
    keep = pre != post_
    assert np.array_equal(pairs(rs2, post2)[1], post_[keep])


@pytest.mark.parametrize("conn", [FixedProbability(0.1), FixedInDegree(40), FixedOutDegree(40), FixedTotal(20000),
                                  FromExpressions("i != j", "exp(-abs(i - j)/tau)", {"tau": 30.0})],
                         ids=["probability", "in_degree", "out_degree", "total", "expression"])
def test_reproducible_by_seed_and_independent_of_threads(conn):
    one = draw_rows(conn, 700, 600, 11, 6, "t", threads=1)
    two = draw_rows(conn, 700, 600, 11, 6, "t", threads=2)
    again = draw_rows(conn, 700, 600, 11, 6, "t", threads=2)
    for a, b, c in zip(one, two, again):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    other_seed = draw_rows(conn, 700, 600, 12, 6, "t")
    other_projection = draw_rows(conn, 700, 600, 11, 7, "t")
    assert not np.array_equal(one[1][:1000], other_seed[1][:1000])
    assert not np.array_equal(one[1][:1000], other_projection[1][:1000])


# -- errors -----------------------------------------------------------------------------


def net_with(conn, n_pre=20, n_post=20):
    net = Network("c", dt=0.1, seed=1)
    net.add_population("a", n_pre, m.LIF)
    net.add_population("b", n_post, m.LIF)
    return net, lambda: net.add_projection("ab", "a", "b", m.STATIC_CONSTANT, m.EXP_CURR, conn,
                                           wu_params={"w": 0.1})


def test_unknown_name_in_condition():
    with pytest.raises(NetworkError, match=r"projection 'ab': connectivity\.condition: unknown symbol 'k'"):
        net_with({"condition": "i != k"})[1]()


def test_probability_outside_unit_interval_detected_when_drawn():
    with pytest.raises(NetworkError, match=r"projection 'ab': connectivity\.probability 'i/10' is 1\.1 for i = 11, "
                                           r"j = 0; a probability must be in \[0, 1\]"):
        net_with({"probability": "i/10"})[1]()


@pytest.mark.parametrize("spec, message", [
    ({"fixed_in_degree": 21}, r"fixed_in_degree 21 is more than the 20 distinct presynaptic"),
    ({"fixed_in_degree": {"k": 20, "allow_autapses": False}}, r"fixed_in_degree 20 is more than the 19"),
    ({"fixed_out_degree": 21}, r"fixed_out_degree 21 is more than the 20"),
    ({"fixed_total": 401}, r"fixed_total 401 is more than the 400 distinct pairs"),
    ({"fixed_in_degree": -1}, r"fixed_in_degree must be a whole number"),
])
def test_degrees_that_would_repeat_pairs_are_refused(spec, message):
    with pytest.raises(NetworkError, match="projection 'ab': connectivity." + message):
        net_with(spec)[1]()


YAML = """\
name: t
populations:
  a: {size: 30, model: lif}
projections:
  aa:
    pre: a
    post: a
    connectivity:
      condition: "i != j"
      probability: {prob}
      params: {tau: 30}
    weight_update: {model: static_constant, params: {w: 0.1}}
    postsynaptic: exp_curr
"""


def test_yaml_expression_connectivity_and_its_errors():
    net, _ = load_network(YAML.replace("{prob}", '"exp(-abs(i - j)/tau)"'), filename="net.yaml")
    rs = net.projections["aa"].rows
    ref = draw_rows(FromExpressions("i != j", "exp(-abs(i - j)/tau)", {"tau": 30}), 30, 30, 0,
                    net.projections["aa"].id, "t")
    assert np.array_equal(rs.row_start, ref[0]) and np.array_equal(rs.post_ind, ref[1])
    with pytest.raises(ConfigError) as info:
        load_network(YAML.replace("{prob}", '"exp(-abs(i - k)/tau)"'), filename="net.yaml")
    assert info.value.filename == "net.yaml" and info.value.line == 10
    assert "projections.aa.connectivity.probability: unknown symbol 'k'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_network(YAML.replace("{prob}", '"2*tau/(1 + abs(i - j))"'), filename="net.yaml")
    assert info.value.line == 10 and "connectivity.probability" in str(info.value)
    assert "is 30 for i = 0, j = 1; a probability must be in [0, 1]" in str(info.value)


def test_yaml_fixed_in_degree():
    text = textwrap.dedent("""\
        name: t
        populations:
          a: {size: 30, model: lif}
        projections:
          aa:
            pre: a
            post: a
            connectivity: {fixed_in_degree: {k: 31, allow_autapses: true}}
            weight_update: {model: static_constant, params: {w: 0.1}}
            postsynaptic: exp_curr
        """)
    with pytest.raises(ConfigError) as info:
        load_network(text, filename="net.yaml")
    assert info.value.line == 8 and "fixed_in_degree 31 is more than the 30" in str(info.value)
    net, _ = load_network(text.replace("k: 31", "k: 12"), filename="net.yaml")
    assert np.array_equal(np.bincount(net.projections["aa"].rows.post_ind), np.full(30, 12))


# -- simulations --------------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_and_cuda_emu_use_the_same_connectivity():
    """A recurrent network on an expression connectivity, random weights per synapse: the
    same spikes on both backends."""
    def build(backend):
        net = Network("conn_sim", dt=0.1, seed=4)
        net.add_population("drive", 40, m.POISSON, init={"rate": 80.0})
        net.add_population("exc", 60, m.LIF)
        net.add_projection("feed", "drive", "exc", m.STATIC, m.EXP_CURR, {"fixed_in_degree": 8},
                           wu_init={"w": m.Uniform(4.0, 7.0)})
        net.add_projection("rec", "exc", "exc", m.STATIC, m.EXP_CURR,
                           {"condition": "i != j", "probability": "exp(-abs(i - j)/10)"},
                           wu_init={"w": "0.5"})
        net.record_spikes("exc")
        return net, net.build(backend)

    (net_c, cpu), (net_e, emu) = build("cpu"), build("cuda-emu")
    for name in ("feed", "rec"):
        assert np.array_equal(net_c.projections[name].rows.post_ind, net_e.projections[name].rows.post_ind)
    cpu.run(300)
    emu.run(300)
    spikes_c, spikes_e = cpu.spikes("exc"), emu.spikes("exc")
    assert len(spikes_c[0][0]) > 20
    assert np.array_equal(spikes_c[0][0], spikes_e[0][0]) and np.array_equal(spikes_c[0][1], spikes_e[0][1])


# -- procedural connectivity --------------------------------------------------------------


def procedural_net(procedural, backend="cpu", steps=400):
    net = Network("proc", dt=0.1, seed=4)
    net.add_population("drive", 200, m.POISSON, init={"rate": 50.0})
    net.add_population("exc", 300, m.LIF)
    net.add_projection("feed", "drive", "exc", m.STATIC_CONSTANT, m.EXP_CURR,
                       FixedProbability(0.1, procedural=procedural), wu_params={"w": 3.0})
    net.add_projection("rec", "exc", "exc", m.STATIC_CONSTANT, m.EXP_CURR,
                       FixedProbability(0.05, allow_autapses=False, procedural=procedural), wu_params={"w": 0.5},
                       delay=1.0)
    net.record_spikes("exc")
    sim = net.build(backend)
    sim.run(steps)
    return net, sim


@pytest.mark.slow
def test_procedural_rows_are_the_stored_rows_on_cpu_and_cuda_emu():
    """Rows drawn again at each spike from the builder's Philox numbers: the same spikes as
    the stored projection, on both backends, and no connectivity array in the model."""
    net, stored = procedural_net(False)
    spikes = stored.spikes("exc")[0]
    assert len(spikes[0]) > 100
    for backend in ("cpu", "cuda-emu"):
        pnet, proc = procedural_net(True, backend)
        assert all(q.rows is None for q in pnet.projections.values())
        got = proc.spikes("exc")[0]
        assert np.array_equal(got[0], spikes[0]) and np.array_equal(got[1], spikes[1]), backend
    from spikeforge.codegen.generate import generate

    assert [a.name for a in generate(pnet).arrays if a.role == "connectivity"] == []
    assert [a.name for a in generate(net).arrays if a.role == "connectivity"] != []


def test_procedural_kernels_compile_with_nvcc():
    from tests.conftest import nvcc_path

    if nvcc_path() is None:
        pytest.skip("nvcc not found")
    from spikeforge.codegen.generate import generate
    from spikeforge.codegen.render import render_network
    from spikeforge.runtime.nvcc import build_cubin

    net = Network("proc_nvcc", dt=0.1, seed=4)
    net.add_population("exc", 300, m.LIF)
    net.add_projection("rec", "exc", "exc", m.STATIC_CONSTANT, m.EXP_CURR,
                       FixedProbability(0.05, allow_autapses=False, procedural=True), wu_params={"w": 0.5})
    result = build_cubin(render_network(generate(net), "cuda"), "sm_80", name="proc_nvcc", describe="procedural")
    assert b"presynaptic_update_rec" in result.path.read_bytes()


@pytest.mark.parametrize("weight_update, kwargs, message", [
    (m.STATIC, {"wu_init": {"w": 1.0}}, r"per-synapse variable\(s\) w"),
    (m.STDP, {"wu_init": {"w": 1.0}}, r"per-synapse variable\(s\) w"),
    (m.STATIC_CONSTANT, {"wu_params": {"w": "0.5*rand()"}}, r"values per synapse need stored connectivity"),
    (m.STATIC_CONSTANT, {"wu_params": {"w": "0.5*i"}}, r"unknown symbol 'i'"),
])
def test_procedural_needs_static_weights(weight_update, kwargs, message):
    net = Network("c", dt=0.1, seed=1)
    net.add_population("a", 20, m.LIF)
    with pytest.raises((NetworkError, ModelError), match=message):
        net.add_projection("aa", "a", "a", weight_update, m.EXP_CURR, {"fixed_probability": {"p": 0.1,
                                                                                           "procedural": True}},
                           **kwargs)


def test_yaml_procedural():
    text = YAML.replace('''      condition: "i != j"
      probability: {prob}
      params: {tau: 30}''', "      fixed_probability: {p: 0.2, procedural: true}")
    net, _ = load_network(text, filename="net.yaml")
    assert net.projections["aa"].connectivity == FixedProbability(0.2, procedural=True)
    with pytest.raises(ConfigError) as info:
        load_network(text.replace("procedural: true", "procedural: 1"), filename="net.yaml")
    assert info.value.line == 9 and "fixed_probability.procedural: expected true or false" in str(info.value)
