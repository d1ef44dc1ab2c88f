"""The event backend (exact event-driven simulation) against references written here: an
O(N)-per-spike numpy simulation with the closed forms written by hand, the textbook LIF
interspike interval, and the clock-driven cpu backend, whose first-spike error must shrink
linearly in dt."""

from __future__ import annotations

import math

import numpy as np
import pytest

import spikeforge.models.builtins as m
from spikeforge.errors import ModelError, NetworkError
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network

# -- an O(N)-per-spike reference ---------------------------------------------------------------


def lif_maps(tau, v_inf, v_th):
    """LIF closed forms as in any textbook: T(v) = tau ln((v_inf - v)/(v_inf - v_th))."""
    def T(v):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = tau * np.log((v_inf - v) / (v_inf - v_th))
        t = np.where((v_inf > v_th) & (v < v_th), t, np.inf)
        return np.where(v > v_th, 0.0, t)

    def V(s, v):
        return v_inf + (v - v_inf) * np.exp(-s / tau)

    return T, V


def qif_maps(tau, drive, v_th):
    """QIF dv/dt = (v^2 + I)/tau, I > 0: v(s) = sqrt(I) tan(atan(v/sqrt(I)) + sqrt(I) s/tau)."""
    r = np.sqrt(drive)

    def T(v):
        t = tau / r * (np.arctan(v_th / r) - np.arctan(v / r))
        return np.where(v > v_th, 0.0, t)

    def V(s, v):
        return r * np.tan(np.arctan(v / r) + r * s / tau)

    return T, V


def reference(T, V, v0, row_start, post, w, v_reset, n_spikes, delay=0.0, t_ref=0.0):
    """Every neuron's next spike time recomputed at every event (O(N) each); ties: time, then
    index; the neuron that fires is reset before its targets receive; deliveries due at the
    time of a spike go first; a neuron is held at the reset for t_ref after its spike, and
    inputs arriving meanwhile are lost."""
    v = np.array(v0, dtype=np.float64)
    t_last = np.zeros_like(v)
    pending = []  # FIFO of (arrival time, pre)
    times, ids = [], []

    def deliver(pre, t):
        k = slice(row_start[pre], row_start[pre + 1])
        j, wk = post[k], w[k]
        awake = t >= t_last[j]
        j, wk = j[awake], wk[awake]
        v[j] = V(t - t_last[j], v[j]) + wk
        t_last[j] = t

    while len(times) < n_spikes:
        due = t_last + T(v)
        i = int(np.argmin(due))  # the first of equal times: the smallest index
        if pending and pending[0][0] <= due[i]:
            t, pre = pending.pop(0)
            deliver(pre, t)
            continue
        t = due[i]
        times.append(t)
        ids.append(i)
        v[i], t_last[i] = v_reset, t + t_ref
        if delay > 0:
            pending.append((t + delay, i))
        else:
            deliver(i, t)
    return np.array(times), np.array(ids)


def lif_network(name, n, k, weights, v0, delay=0.0, seed=11, procedural=None, t_ref=0.0):
    net = Network(name, dt=0.1, seed=seed, precision="double")
    net.add_population("exc", n, m.LIF, params={"tau_m": 20.0, "v_rest": -45.0, "v_reset": -65.0, "v_th": -50.0,
                                                 "t_ref": t_ref}, init={"v": v0})
    if procedural is None:
        net.add_projection("rec", "exc", "exc", m.STATIC, m.DELTA_CURR, {"fixed_out_degree": k},
                           wu_init={"w": weights}, delay=delay)
    else:
        net.add_projection("rec", "exc", "exc", m.STATIC_CONSTANT, m.DELTA_CURR,
                           {"fixed_probability": {"p": procedural[0], "procedural": procedural[1]}},
                           wu_params={"w": weights}, delay=delay)
    net.record_spikes("exc")
    return net


@pytest.mark.parametrize("n, k, delay, t_ref, n_spikes", [
    pytest.param(1000, 50, 0.0, 0.0, 10_000, marks=pytest.mark.slow),  # the acceptance run: the reference ~5 s
    (200, 20, 1.5, 2.0, 600),  # with a delay and a refractory period
])
def test_e1_the_event_backend_matches_an_o_n_reference_spike_for_spike(n, k, delay, t_ref, n_spikes):
    rng = np.random.default_rng(5)
    v0 = rng.uniform(-65.0, -50.0, n)
    weights = rng.uniform(-1.0, 0.4, n * k)  # mostly inhibition; excitation can fire a neuron at once
    net = lif_network(f"event_e1_{n}", n, k, weights, v0, delay=delay, t_ref=t_ref)
    sim = net.build(backend="event")
    row_start, post = sim.rows("rec")
    T, V = lif_maps(20.0, -45.0, -50.0)
    ref_t, ref_i = reference(T, V, v0, row_start.astype(np.int64), post.astype(np.int64), sim.weights("rec"),
                             -65.0, n_spikes, delay, t_ref)
    sim.run(float(ref_t[-1]) + 1e-6)
    times, ids = sim.spikes("exc")[0]
    assert times.size >= n_spikes
    np.testing.assert_array_equal(ids[:n_spikes], ref_i)
    assert np.max(np.abs(times[:n_spikes] - ref_t)) <= 1e-9
    # the excitatory jumps made neurons fire at the very time of another's spike: ties were tested
    assert np.count_nonzero(np.diff(times[:n_spikes]) == 0) > 0
    if t_ref > 0:  # inputs reached refractory neurons and were lost
        assert sim.deliveries() < np.count_nonzero(times + delay < sim.t) * k


def test_a_lone_lif_neurons_interspike_interval_is_tau_log_i_over_i_minus_v_th():
    net = Network("event_lone_lif", dt=0.1, precision="double")
    net.add_population("n", 1, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0},
                       init={"v": 0.0})
    net.add_current_source("drive", "n", m.DC, params={"amp": 30.0})
    net.record_spikes("n")
    sim = net.build(backend="event")
    sim.run(300.0)
    times, _ = sim.spikes("n")[0]
    isi = 20.0 * math.log(30.0 / (30.0 - 20.0))
    assert times.size == int(300.0 // isi)
    np.testing.assert_allclose(np.diff(np.concatenate([[0.0], times])), isi, rtol=1e-12, atol=0)


@pytest.mark.slow  # a reference of 2,000 spikes and a build: ~2 s on two busy cores
def test_qif_matches_its_reference_for_about_ten_spikes_per_neuron():
    n, k = 200, 20
    rng = np.random.default_rng(2)
    v0 = rng.uniform(-5.0, 5.0, n)
    weights = rng.uniform(-0.3, 0.3, n * k)
    net = Network("event_qif", dt=0.1, seed=4, precision="double")
    net.add_population("q", n, m.QIF, params={"tau_m": 10.0, "v_th": 100.0, "v_reset": -100.0}, init={"v": v0})
    net.add_current_source("drive", "q", m.DC, params={"amp": 1.0})
    net.add_projection("rec", "q", "q", m.STATIC, m.DELTA_CURR, {"fixed_out_degree": k}, wu_init={"w": weights})
    net.record_spikes("q")
    sim = net.build(backend="event")
    assert "atan2" in sim.spec.event_maps and "tan(" in sim.spec.event_maps  # the phase (theta) form
    T, V = qif_maps(10.0, 1.0, 100.0)
    row_start, post = sim.rows("rec")
    ref_t, ref_i = reference(T, V, v0, row_start.astype(np.int64), post.astype(np.int64), sim.weights("rec"),
                             -100.0, 10 * n)
    sim.run(float(ref_t[-1]) + 1e-6)
    times, ids = sim.spikes("q")[0]
    np.testing.assert_array_equal(ids[:10 * n], ref_i)
    assert np.max(np.abs(times[:10 * n] - ref_t)) <= 1e-9
    assert np.bincount(ref_i, minlength=n).mean() == 10


@pytest.mark.slow  # two builds: ~5 s
def test_the_o_n_scan_reference_of_the_kernel_gives_the_heaps_events():
    rng = np.random.default_rng(6)
    v0 = rng.uniform(-65.0, -50.0, 300)
    weights = rng.uniform(-1.0, 0.4, 300 * 20)
    runs = []
    for queue in ("heap", "scan"):
        sim = lif_network("event_scan", 300, 20, weights, v0, delay=0.5).build(backend="event", queue=queue)
        sim.run(100.0)
        runs.append(sim.spikes("exc")[0])
    assert runs[0][0].size > 500
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


@pytest.mark.slow  # two builds and a drawn connectivity: ~3 s
def test_procedural_rows_give_the_spikes_of_the_stored_rows_drawn_from_the_same_stream():
    rng = np.random.default_rng(3)
    v0 = rng.uniform(-65.0, -50.0, 300)
    runs = []
    for procedural in (False, True):
        net = lif_network(f"event_proc_{int(procedural)}", 300, None, -0.8, v0, delay=0.5, seed=9,
                          procedural=(0.05, procedural))
        sim = net.build(backend="event")
        sim.run(200.0)
        runs.append(sim.spikes("exc")[0])
    assert runs[0][0].size > 1000
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def _driven(name, batch_size, batch_offset=0, threads=1):
    net = Network(name, dt=0.1, seed=21, batch_size=batch_size, precision="double")
    net.add_population("exc", 200, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 10.0, "v_th": 20.0},
                       init={"v": 5.0})
    net.add_population("src", 20, m.POISSON, init={"rate": 50.0})
    net.add_population("arr", 2, m.SPIKE_SOURCE_ARRAY)
    net.add_poisson_input("ext", "exc", "v", 100, 10.0, 1.2)
    net.add_projection("inh", "exc", "exc", m.STATIC_CONSTANT, m.DELTA_CURR,
                       {"fixed_probability": {"p": 0.05, "procedural": True}}, wu_params={"w": -0.5}, delay=1.0)
    net.add_projection("feed", "src", "exc", m.STATIC, m.DELTA_CURR, {"fixed_probability": 0.2}, wu_init={"w": 1.0})
    net.add_projection("kick", "arr", "exc", m.STATIC, m.DELTA_CURR, "dense", wu_init={"w": 30.0})
    net.record_spikes("exc", "src", "arr")
    sim = net.build(backend="event", threads=threads, batch_offset=batch_offset)
    sim.set_spike_times("arr", (np.array([10.0, 20.0]), np.array([0, 1])))
    sim.run(100.0)
    return sim


@pytest.mark.slow  # a build and four runs: ~2 s
def test_batch_instances_are_the_single_runs_of_their_global_index_on_any_thread_count():
    batched = _driven("event_batch", 3, threads=2)
    for b in range(3):
        single = _driven("event_batch", 1, batch_offset=b)
        for pop in ("exc", "src"):
            np.testing.assert_array_equal(batched.spikes(pop)[b][0], single.spikes(pop)[0][0])
            np.testing.assert_array_equal(batched.spikes(pop)[b][1], single.spikes(pop)[0][1])
    counts = [batched.spikes("exc")[b][0].size for b in range(3)]
    assert min(counts) > 100 and len(set(counts)) > 1  # driven, and each instance its own Poisson numbers
    t, ids = batched.spikes("arr")[0]
    np.testing.assert_array_equal(t, [10.0, 20.0])
    # the spike array's kick (30 mV) fires every neuron at 10 ms exactly
    exc_t, exc_ids = batched.spikes("exc")[0]
    assert np.array_equal(np.sort(exc_ids[exc_t == 10.0]), np.arange(200))


@pytest.mark.slow  # shares the build of the batch test; alone it compiles (~3 s)
def test_a_run_in_pieces_and_a_reset_give_the_same_spikes():
    sim = _driven("event_batch", 1)
    whole = sim.spikes("exc")[0]
    sim.reset()
    assert sim.run(37.5) is sim  # chains, as the clock-driven run does
    sim.run(steps=625)  # 62.5 ms in steps of the network's dt
    again = sim.spikes("exc")[0]
    np.testing.assert_array_equal(whole[0], again[0])
    np.testing.assert_array_equal(whole[1], again[1])
    for bad in (dict(), dict(duration=1.0, steps=10), dict(steps=-1), dict(steps=2.5)):
        with pytest.raises(ValueError):
            sim.run(**bad)


# -- refusals ----------------------------------------------------------------------------------

EIF = NeuronModel("eif", params={"tau_m": 20.0, "v_t": -50.0, "delta_t": 2.0}, vars={"v": -65.0},
                  equations="dv/dt = (-65 - v + delta_t * exp((v - v_t) / delta_t) + i_syn) / tau_m",
                  threshold="v > -30", reset="v = -65")
NOISY = NeuronModel("noisy", params={"tau_m": 20.0}, vars={"v": 0.0},
                    equations="dv/dt = (2 - v) / tau_m", threshold="v > 1", reset="v = rand_uniform()")
JITTERY = NeuronModel("jittery", params={"tau_m": 20.0}, vars={"v": 0.0},
                      equations="dv/dt = (2 - v) / tau_m", threshold="v > 1 + rand_normal()", reset="v = 0")
DRIFTING = NeuronModel("drifting", params={"tau_m": 20.0}, vars={"v": 0.0},
                       equations="dv/dt = (sin(t) - v) / tau_m", threshold="v > 1", reset="v = 0")


@pytest.mark.parametrize("model, why", [
    (m.ALIF, r"model 'alif'.*2 ODEs \(v, a\)"),
    (m.IZHIKEVICH, r"model 'izhikevich'.*2 ODEs"),
    (EIF, r"model 'eif'.*not a polynomial.*no closed-form.*root finder"),
    (DRIFTING, r"model 'drifting'.*depends on the time t"),
    (m.VALUE_INPUT, r"model 'value_input'.*sim_code"),
    (NOISY, r"model 'noisy'.*reset draws random numbers"),
    (JITTERY, r"model 'jittery'.*threshold draws random numbers"),
])
def test_models_outside_the_class_are_refused_naming_the_model_and_why(model, why):
    net = Network("event_refused", dt=0.1)
    net.add_population("p", 3, model)
    with pytest.raises(ModelError, match=why):
        net.build(backend="event")


def _lif(name="event_refused", **params):
    net = Network(name, dt=0.1)
    net.add_population("p", 3, m.LIF, params=params)
    return net


@pytest.mark.parametrize("change, why", [
    (lambda net: net.add_projection("r", "p", "p", m.STATIC, m.EXP_CURR, "dense", wu_init={"w": 1.0}),
     r"projection 'r': postsynaptic model 'exp_curr' is not a delta synapse"),
    (lambda net: net.add_current_source("n", "p", m.NOISE),
     r"current source 'n': model 'noise' is not a constant drive"),
    (lambda net: net.add_timed_input("p", "v_rest", np.zeros((4, 1)), dt=1.0),
     r"population 'p': timed input 'v_rest' is a time-dependent input"),
    (lambda net: net.record_var("p", "v"), r"records exact spike times only"),
    (lambda net: net.add_projection("r", "p", "p", m.STDP, m.DELTA_CURR, "dense"),
     r"projection 'r': weight update 'stdp' is not a static weight"),
])
def test_what_the_event_backend_does_not_simulate_is_refused_by_name(change, why):
    net = _lif()
    change(net)
    with pytest.raises(NetworkError, match=why):
        net.build(backend="event")


FLOWING = NeuronModel("flowing", params={"tau_m": 20.0, "t_ref": 2.0}, vars={"v": 0.0},
                      equations="dv/dt = (30 - v) / tau_m", threshold="v > 20", reset="v = 0", refractory="t_ref")


def test_a_refractory_period_with_a_flowing_state_and_a_qif_below_rheobase_are_refused():
    net = Network("event_refused", dt=0.1)
    net.add_population("p", 3, FLOWING)
    with pytest.raises(NetworkError, match=r"population 'p': model 'flowing' has a refractory period, but its "
                                           r"equation is not flagged '\(unless refractory\)'"):
        net.build(backend="event")
    net = Network("event_refused", dt=0.1)
    net.add_population("q", 3, m.QIF)
    with pytest.raises(NetworkError, match=r"population 'q': model 'qif' needs .*rheobase"):
        net.build(backend="event")


def test_the_maps_are_shown_in_their_careful_forms():
    from spikeforge.codegen.event_maps import derive_event_maps

    maps = derive_event_maps(m.LIF)
    assert maps.kind == "linear" and "log1p" in maps.c["T"] and "expm1" in maps.c["V"]
    text = maps.text()
    for part in ("T(v)", "V(s; v)", "jump", "dT/dv", "dV/ds", "dV/dv"):
        assert part in text
    # dT/dv = -1/f and dV/ds = f(V) (the flow, here (v_rest - v + r_m i_syn)/tau_m)
    import sympy

    v, vs = sympy.Symbol("v", real=True), sympy.Symbol("V_s", real=True)
    assert sympy.simplify(maps.dT_dv * maps.flow + 1) == 0
    assert sympy.simplify(maps.dV_ds - maps.flow.subs(v, vs)) == 0


# -- against the clock-driven backend ------------------------------------------------------------


@pytest.mark.slow  # four cpu builds (dt is compiled in): about 20 s on two busy cores
def test_the_clock_driven_first_spike_error_shrinks_linearly_in_dt():
    n = 200
    rng = np.random.default_rng(8)
    v0 = rng.uniform(0.0, 15.0, n)
    drive = rng.uniform(25.0, 40.0, n)

    def build(dt, backend):
        net = Network(f"event_first_spike_{backend}_{str(dt).replace('.', '_')}", dt=dt, precision="double")
        net.add_population("n", n, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0},
                           init={"v": v0})
        net.add_current_source("drive", "n", m.DC, params={"amp": drive})
        net.record_spikes("n")
        return net.build(backend=backend)

    def first_spikes(sim):
        t, ids = sim.spikes("n")[0]
        first = np.full(n, np.nan)
        for k in range(t.size - 1, -1, -1):
            first[ids[k]] = t[k]
        return first

    exact = build(0.1, "event")
    exact.run(100.0)
    exact_first = first_spikes(exact)
    dts = [0.2, 0.1, 0.05, 0.025]
    errors = []
    for dt in dts:
        sim = build(dt, "cpu")
        sim.run(steps=int(round(100.0 / dt)))
        errors.append(np.mean(np.abs(first_spikes(sim) - exact_first)))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - 1.0) <= 0.2, (errors, slope)


@pytest.mark.slow  # a build: ~2 s
def test_deliveries_of_several_delayed_projections_go_in_time_order():
    """Two delayed projections from one spike source: the later projection's earlier delivery
    comes first (a target reaching threshold records which input crossed it)."""
    net = Network("event_two_delays", dt=0.1, precision="double")
    net.add_population("src", 1, m.SPIKE_SOURCE_ARRAY)
    net.add_population("n", 2, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0},
                       init={"v": 0.0})
    net.add_projection("slow", "src", "n", m.STATIC, m.DELTA_CURR, "dense", wu_init={"w": [25.0, 0.0]}, delay=3.0)
    net.add_projection("fast", "src", "n", m.STATIC, m.DELTA_CURR, "dense", wu_init={"w": [0.0, 25.0]}, delay=1.0)
    net.record_spikes("n")
    sim = net.build(backend="event")
    sim.set_spike_times("src", (np.array([1.0, 1.5]), np.array([0, 0])))
    sim.run(10.0)
    times, ids = sim.spikes("n")[0]
    np.testing.assert_array_equal(ids, [1, 1, 0, 0])
    np.testing.assert_allclose(times, [2.0, 2.5, 4.0, 4.5], rtol=0, atol=1e-12)


@pytest.mark.slow  # a build and 10^6 events at one instant: ~3 s
def test_an_excitatory_loop_without_delay_is_stopped_and_named():
    net = Network("event_runaway", dt=0.1, precision="double")
    net.add_population("n", 2, m.LIF, params={"v_rest": -45.0}, init={"v": -60.0})
    net.add_projection("loop", "n", "n", m.STATIC, m.DELTA_CURR, "dense", wu_init={"w": 30.0})
    net.record_spikes("n")
    sim = net.build(backend="event")
    with pytest.raises(NetworkError, match=r"population 'n': neuron \d .*fired without end at t = "):
        sim.run(100.0)


@pytest.mark.slow  # shares the lone LIF's build; alone it compiles (~2 s)
def test_the_state_read_and_set_between_runs_follows_the_closed_form():
    net = Network("event_lone_lif", dt=0.1, precision="double")
    net.add_population("n", 1, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0},
                       init={"v": 0.0})
    net.add_current_source("drive", "n", m.DC, params={"amp": 30.0})
    net.record_spikes("n")
    sim = net.build(backend="event")
    sim.run(10.0)
    np.testing.assert_allclose(sim.state("n"), [[30.0 * (1 - math.exp(-0.5))]], rtol=1e-14)
    sim.set_state("n", [19.0])  # one below threshold: fires after 20 ln(11/10) ms
    sim.run(10.0)
    times, _ = sim.spikes("n")[0]
    np.testing.assert_allclose(times, [10.0 + 20.0 * math.log(11.0 / 10.0)], rtol=1e-14)


@pytest.mark.slow  # a build of the 10^4-neuron example: ~3 s
def test_a_yaml_file_with_backend_event_runs_from_the_command_line(capsys, tmp_path):
    import json
    from pathlib import Path

    from spikeforge.cli import main

    example = Path(__file__).resolve().parents[1] / "examples" / "event_sparse.yaml"
    saved = tmp_path / "spikes.npz"
    assert main(["run", str(example), "--duration", "50", "--save", str(saved), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "event" and result["duration_ms"] == 50.0
    assert 2.0 < result["rates_hz"]["exc"] < 30.0
    with np.load(saved) as data:
        times = data["spikes/exc/times"]
        assert times.size == result["spikes"]["exc"] and np.all(np.diff(times) >= 0) and times.max() < 50.0
        assert not np.allclose(times, np.round(times * 10) / 10)  # exact times, not on a 0.1 ms grid
