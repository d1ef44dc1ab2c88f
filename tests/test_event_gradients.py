"""Exact spike-time gradients through the event backend's recorded event sequence, against
central finite differences of runs of the compiled kernel itself."""

from __future__ import annotations

import numpy as np
import pytest

import spikeforge.models.builtins as m
from spikeforge.errors import NetworkError
from spikeforge.network import Network
from spikeforge.training.event_gradients import spike_time_gradients


def first_spikes(units, per_neuron=3):
    """Indices of the first ``per_neuron`` spikes of every unit, in event order."""
    seen: dict[int, int] = {}
    chosen = []
    for j, u in enumerate(units):
        if seen.get(u, 0) < per_neuron:
            chosen.append(j)
            seen[u] = seen.get(u, 0) + 1
    return np.array(chosen)


@pytest.mark.parametrize("delay", [pytest.param(0.0, marks=pytest.mark.slow), 1.0])  # one build each: ~2 s
def test_weight_gradients_of_a_spike_time_loss_agree_with_finite_differences(delay):
    n, k, duration = 100, 10, 100.0
    rng = np.random.default_rng(0)
    net = Network(f"event_grad_{int(delay)}", dt=0.1, seed=1, precision="double")
    net.add_population("exc", n, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0,
                                                 "t_ref": delay},  # with the delay, a refractory period
                       init={"v": rng.uniform(0.0, 15.0, n)})
    net.add_current_source("drive", "exc", m.DC, params={"amp": rng.uniform(22.0, 28.0, n)})
    net.add_population("inp", 5, m.SPIKE_SOURCE_ARRAY)
    net.add_projection("rec", "exc", "exc", m.STATIC, m.DELTA_CURR, {"fixed_out_degree": k},
                       wu_init={"w": rng.uniform(-2.0, 1.0, n * k)}, delay=delay)
    net.add_projection("feed", "inp", "exc", m.STATIC, m.DELTA_CURR, {"fixed_out_degree": 20},
                       wu_init={"w": rng.uniform(-1.0, 1.0, 100)})
    net.record_spikes("exc", "inp")
    sim = net.build(backend="event")
    sim.set_spike_times("inp", (np.array([3.0, 7.5, 12.0, 30.0, 41.0]), np.arange(5)))
    sim.run(duration)
    times, units = sim.events()
    chosen = first_spikes(units)
    target = times[chosen] + rng.uniform(-1.0, 1.0, chosen.size)

    def loss(t, u):
        j = first_spikes(u)
        d = np.zeros(t.size)
        d[j] = 2.0 * (t[j] - target)
        return float(np.sum((t[j] - target) ** 2)), d

    value, grads = spike_time_gradients(sim, loss)
    assert set(grads) == {"rec", "feed"}
    assert value == pytest.approx(loss(times, units)[0], rel=1e-12)

    def run_loss(projection, weights):
        sim.set_weights(projection, weights)
        sim.reset()
        sim.run(duration)
        t, u = sim.events()
        assert np.array_equal(u, units)  # the same event order: the loss is smooth here
        return loss(t, u)[0]

    h = 1e-5
    for name in ("rec", "feed"):
        w0, g = sim.weights(name), grads[name]
        assert np.count_nonzero(g) > 10
        for idx in np.argsort(-np.abs(g))[:8]:
            plus, minus = w0.copy(), w0.copy()
            plus[idx] += h
            minus[idx] -= h
            fd = (run_loss(name, plus) - run_loss(name, minus)) / (2 * h)
            assert abs(fd - g[idx]) <= 1e-5 * abs(g[idx]), (name, idx, fd, g[idx])
        sim.set_weights(name, w0)


@pytest.mark.slow  # a build for a refusal: ~1.5 s
def test_poisson_inputs_and_procedural_rows_are_refused_by_name():
    net = Network("event_grad_refused", dt=0.1, seed=1, precision="double")
    net.add_population("exc", 10, m.LIF, params={"v_rest": -45.0})
    net.add_poisson_input("ext", "exc", "v", 10, 5.0, 0.5)
    net.record_spikes("exc")
    sim = net.build(backend="event")
    sim.run(10.0)
    with pytest.raises(NetworkError, match=r"poisson input 'ext'"):
        spike_time_gradients(sim, lambda t, u: (0.0, np.zeros(t.size)))


@pytest.mark.slow  # trains for 15 epochs: ~3 s with its build
def test_the_example_learns_its_target_spike_times():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "event_spike_times.py"
    spec = importlib.util.spec_from_file_location("event_spike_times_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history = example.main(["--epochs", "15"])
    assert history[0] > 100.0 and history[-1] < 1e-3 * history[0]
