"""Train a small network to fire at target times, with exact gradients from the event backend.

Ten input neurons (a spike array: one spike each, at 2, 4, ..., 20 ms) project onto five LIF
neurons with a constant drive (alone, each fires first at 48 ms); an inhibitory recurrent
projection couples the five with a 1 ms delay. The loss is the squared distance of each
output neuron's first spike from its target (28, 32, 36, 40 and 44 ms). The inputs are kept
small enough that the outputs cross the threshold by the flow, not at a jump: a spike fired
by a jump sits at the input's time and has no gradient with respect to the weights. Plain gradient
descent on both projections' weights, with the gradient computed exactly through the
recorded event sequence (spikeforge.training.event_gradients; docs/backends.md, "The event
backend"). Run it with

    python examples/event_spike_times.py [--epochs 30]

and it prints the loss and the first spike times as it learns.
"""

from __future__ import annotations

import argparse

import numpy as np

import spikeforge.models.builtins as m
from spikeforge.network import Network
from spikeforge.training.event_gradients import spike_time_gradients

TARGETS = np.array([28.0, 32.0, 36.0, 40.0, 44.0])  # ms, one per output neuron
N_IN, N_OUT = 10, len(TARGETS)


def build():
    rng = np.random.default_rng(0)
    net = Network("event_spike_times", dt=0.1, seed=3, precision="double")
    net.add_population("inp", N_IN, m.SPIKE_SOURCE_ARRAY)
    net.add_population("out", N_OUT, m.LIF, params={"tau_m": 20.0, "v_rest": 0.0, "v_reset": 0.0, "v_th": 20.0},
                       init={"v": 0.0})
    net.add_current_source("drive", "out", m.DC, params={"amp": 22.0})  # alone: first spike at 20 ln 11 = 48 ms
    net.add_projection("in_out", "inp", "out", m.STATIC, m.DELTA_CURR, "dense",
                       wu_init={"w": rng.uniform(0.0, 0.6, N_IN * N_OUT)})
    net.add_projection("out_out", "out", "out", m.STATIC, m.DELTA_CURR, "dense",
                       wu_init={"w": rng.uniform(-0.5, 0.0, N_OUT * N_OUT)}, delay=1.0)
    net.record_spikes("inp", "out")
    sim = net.build(backend="event")
    sim.set_spike_times("inp", (2.0 * np.arange(1, N_IN + 1), np.arange(N_IN)))
    return sim


def first_spike_loss(offset: int):
    """L = sum over output neurons of (first spike time - target)^2 and dL/dt of every spike."""
    def loss(times, units):
        d = np.zeros(times.size)
        value = 0.0
        for i in range(N_OUT):
            mine = np.flatnonzero(units == offset + i)
            if mine.size == 0:
                continue  # silent: no gradient from this neuron (the drive makes it fire)
            j = mine[0]
            value += (times[j] - TARGETS[i]) ** 2
            d[j] = 2.0 * (times[j] - TARGETS[i])
        return value, d

    return loss


def first_times(sim) -> np.ndarray:
    times, ids = sim.spikes("out")[0]
    return np.array([times[ids == i][0] if np.any(ids == i) else np.nan for i in range(N_OUT)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    sim = build()
    offset = sim.spec.population("out")["offset"]
    loss = first_spike_loss(offset)
    history = []
    for epoch in range(args.epochs + 1):
        sim.reset()
        sim.run(60.0)
        value, grads = spike_time_gradients(sim, loss)
        history.append(value)
        if epoch % 10 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  loss {value:10.4f}  first spikes (ms) "
                  + " ".join(f"{t:6.2f}" for t in first_times(sim)))
        if epoch < args.epochs:
            for name, g in grads.items():
                sim.set_weights(name, sim.weights(name) - args.lr * g)
    print("targets (ms)" + " " * 25 + " ".join(f"{t:6.2f}" for t in TARGETS))
    return history


if __name__ == "__main__":
    main()
