"""Exact gradients of a spike-time loss through the event sequence of the ``event`` backend.

Between two events a neuron follows its free flow, so every spike time and every state
is a smooth function of the weights as long as the order of the events does not change
(SparseProp; EventProp computes the same gradients by an adjoint ODE). This module replays
the recorded event sequence of one batch instance in numpy, in the order the kernel
processed it, and keeps, for each quantity computed, its partial derivatives with respect
to the quantities it came from. These partials are the maps sympy derived
(:mod:`spikeforge.codegen.event_maps`):

* a spike at t_k = t_last + T(v):            dt_k = dt_last + dT/dv dv   (dT/dv = -1/f(v))
  (a spike caused at once by a jump past the threshold has t_k = t_arrival: dt_k = dt_arrival)
* an input of weight w arriving at t:         v' = V(t - t_last; v) + w
                                             dv' = dV/dv dv + dV/ds (dt - dt_last) + dw
                                             (dV/ds = f(V), dV/dv = f(V)/f(v))
* a reset:                                    v' = v_reset: no dependence; t_last = t_k

and then runs the chain rule backwards over this record (reverse mode: the adjoint of the
event sequence), from dL/dt_k of the recorded spikes to the weights.

This first version runs in Python over the recorded events (tens of us per delivery); the
gradients are exact, not fast. What it covers: neuron populations and spike sources of the
event backend whose spikes are all recorded, stored projections with one weight per
synapse (gradients are given for these), any delays; Poisson inputs (add_poisson_input)
are not replayed and are refused.

>>> sim = net.build(backend="event"); sim.run(100.0)
>>> def loss(times, units):            # spike times in the order they happened
...     return L, dL_dtimes
>>> value, grads = spike_time_gradients(sim, loss)   # grads["proj"]: one per synapse
"""

from __future__ import annotations

import numpy as np

from ..errors import NetworkError


class _Tape:
    """Nodes in creation order, each with its (parent, partial) pairs: a topological order."""

    def __init__(self):
        self.parents: list[tuple] = []

    def node(self, *pairs) -> int:
        self.parents.append(tuple((p, d) for p, d in pairs if p is not None))
        return len(self.parents) - 1

    def backward(self, seeds: dict[int, float]) -> np.ndarray:
        adj = np.zeros(len(self.parents))
        for k, g in seeds.items():
            adj[k] += g
        for k in range(len(self.parents) - 1, -1, -1):
            a = adj[k]
            if a != 0.0:
                for p, d in self.parents[k]:
                    adj[p] += a * d
        return adj


class _Maps:
    """One neuron population's derived maps as numpy functions of neuron i's values."""

    def __init__(self, pop: dict, maps):
        import sympy

        from ..codegen.event_maps import DRIVE, S

        v = sympy.Symbol(maps.var, real=True)
        vs = sympy.Symbol("V_s", real=True)
        names = maps.symbols
        args = [sympy.Symbol(DRIVE, real=True), *[sympy.Symbol(k, real=True) for k in names]]
        mod = [{"log1p": np.log1p, "expm1": np.expm1}, "math"]
        self.T = sympy.lambdify([v, *args], maps.time_to_threshold, modules=mod)
        self.V = sympy.lambdify([S, v, *args], maps.state_after, modules=mod)
        self.f = sympy.lambdify([v, *args], maps.flow, modules=mod)
        self.threshold = sympy.lambdify(args, maps.threshold, modules=mod)
        self.reset = sympy.lambdify(args, maps.reset, modules=mod)
        self.dT_dv = sympy.lambdify([v, *args], maps.dT_dv, modules=mod)
        self.dV_ds = sympy.lambdify([vs, *args], maps.dV_ds, modules=mod)
        self.dV_dv = sympy.lambdify([vs, v, *args], maps.dV_dv, modules=mod)
        self.values = [pop["drive"], *[pop["values"][k] for k in names]]

    def args(self, i: int) -> list[float]:
        return [float(x[i]) if np.ndim(x) else float(x) for x in self.values]


def _schedule(sim, times, units):
    """The recorded spikes and the deliveries they cause, in the kernel's order: by time;
    at equal times deliveries (projections in order, each first in, first out) before spikes,
    spikes in the recorded order."""
    keys = [(t, 1, 0, seq, "spike", seq) for seq, t in enumerate(times)]
    for q_index, q in enumerate(sim.spec.projections):
        pre = sim.spec.population(q["pre"])
        delay = q["delay_ms"]
        for seq, (t, u) in enumerate(zip(times, units)):
            if pre["offset"] <= u < pre["offset"] + pre["size"]:
                if delay > 0:
                    keys.append((t + delay, 0, q_index, seq, "arrival", seq))
    keys.sort(key=lambda k: k[:4])
    return keys


def _check(sim, b: int):
    if sim.spec.inputs:
        raise NetworkError(f"poisson input '{sim.spec.inputs[0]['name']}': spike-time gradients replay recorded "
                           "events only; use a Poisson population (recorded) instead")
    missing = [p["name"] for p in sim.spec.populations if not p["record"]]
    if missing:
        raise NetworkError(f"population '{missing[0]}': spike-time gradients need the spikes of every population "
                           "recorded")
    for q in sim.spec.projections:
        if q["procedural"]:
            raise NetworkError(f"projection '{q['name']}': spike-time gradients need stored connectivity")
    if not 0 <= b < sim.batch_size:
        raise NetworkError(f"batch instance {b} is not in [0, {sim.batch_size})")


def _replay(sim, b: int, times, units):
    """Forward pass: the tape, the node of each recorded spike and of each weight used."""
    tape = _Tape()
    spec = sim.spec
    maps = {p["name"]: _Maps(p, spec.maps[p["name"]]) for p in spec.neuron_pops}
    owner = np.empty(spec.n_units, dtype=np.int64)
    pops = spec.neuron_pops + spec.source_pops
    for k, p in enumerate(pops):
        owner[p["offset"]:p["offset"] + p["size"]] = k
    v = np.zeros(spec.n_neurons)
    for p in spec.neuron_pops:
        v[p["offset"]:p["offset"] + p["size"]] = p["init"]
    v_node = [None] * spec.n_neurons
    t_last = np.zeros(spec.n_neurons)
    t_node = [None] * spec.n_neurons
    spike_node = [None] * len(times)
    weight_nodes: dict[str, dict[int, int]] = {q["name"]: {} for q in spec.projections}
    weights = {q["name"]: sim.weights(q["name"]) if sim.has_weights(q["name"]) else None for q in spec.projections}
    rows = {q["name"]: sim.rows(q["name"]) for q in spec.projections}
    out_of = {k: [q for q in spec.projections if q["pre"] == p["name"]] for k, p in enumerate(pops)}
    worst = 0.0

    def deliver(q, pre: int, t: float, t_src):
        post_pop = spec.population(q["post"])
        mp = maps[q["post"]]
        row_start, post = rows[q["name"]]
        w = weights[q["name"]]
        const_w = None if w is not None else float(q["weight"])
        for k in range(int(row_start[pre]), int(row_start[pre + 1])):
            i = int(post[k])
            n = post_pop["offset"] + i
            if t < t_last[n]:  # refractory: the input is lost
                continue
            a = mp.args(i)
            s = t - t_last[n]
            vn = mp.V(s, v[n], *a)
            ds = mp.dV_ds(vn, *a)
            dv = mp.dV_dv(vn, v[n], *a) if v_node[n] is not None else 0.0
            w_value = const_w if const_w is not None else float(w[k])
            if const_w is None:
                leaf = weight_nodes[q["name"]].get(k)
                if leaf is None:
                    leaf = weight_nodes[q["name"]][k] = tape.node()
            else:
                leaf = None
            v_node[n] = tape.node((v_node[n], dv), (t_src, ds), (t_node[n], -ds), (leaf, 1.0))
            v[n] = vn + w_value
            t_last[n], t_node[n] = t, t_src

    for t_event, _, q_index, _, kind, seq in _schedule(sim, times, units):
        u = int(units[seq])
        k = int(owner[u])
        p = pops[k]
        if kind == "arrival":
            deliver(spec.projections[q_index], u - p["offset"], t_event, spike_node[seq])
            continue
        if not p["source"]:
            mp = maps[p["name"]]
            i = u - p["offset"]
            a = mp.args(i)
            if v[u] > mp.threshold(*a):  # fired at once by a jump: at the arrival's time
                t_k, node = t_last[u], tape.node((t_node[u], 1.0))
            else:
                t_k = t_last[u] + mp.T(v[u], *a)
                node = tape.node((t_node[u], 1.0), (v_node[u], mp.dT_dv(v[u], *a)))
            worst = max(worst, abs(t_k - times[seq]))
            spike_node[seq] = node
            v[u], v_node[u] = mp.reset(*a), None
            t_last[u], t_node[u] = times[seq] + p["refractory_ms"][i], node  # held at the reset until then
        for q in out_of[k]:
            if q["delay_ms"] == 0:
                deliver(q, u - p["offset"], times[seq], spike_node[seq])
    if worst > 1e-6:
        raise NetworkError(f"the replay of batch instance {b} drifted {worst:g} ms from the recorded spikes; the "
                           "recording does not start at t = 0 or the weights changed since the run")
    return tape, spike_node, weight_nodes


def spike_time_gradients(sim, loss, b: int = 0):
    """``(L, grads)``: the value of ``loss`` and its exact gradient with respect to every
    per-synapse weight (``grads[projection]``, one per synapse in row order, the order of
    ``sim.weights``), through the event sequence ``sim`` recorded in batch instance ``b``
    since its last reset.

    ``loss(times, units)`` gets the recorded spikes in the order they happened (times in
    ms, units as :meth:`EventSimulation.events`) and returns ``(L, dL/dtimes)``."""
    _check(sim, b)
    times, units = sim.events(b)
    value, dl_dt = loss(times, units)
    dl_dt = np.asarray(dl_dt, dtype=np.float64)
    if dl_dt.shape != times.shape:
        raise NetworkError(f"the loss gave {dl_dt.shape} derivatives for {times.shape} spikes")
    tape, spike_node, weight_nodes = _replay(sim, b, times, units)
    seeds = {}
    for k, g in enumerate(dl_dt):
        if g != 0.0 and spike_node[k] is not None:
            seeds[spike_node[k]] = seeds.get(spike_node[k], 0.0) + float(g)
    adj = tape.backward(seeds)
    grads = {}
    for q in sim.spec.projections:
        if not sim.has_weights(q["name"]):
            continue
        g = np.zeros(sim.weights(q["name"]).size)
        for k, node in weight_nodes[q["name"]].items():
            g[k] = adj[node]
        grads[q["name"]] = g
    return float(value), grads


__all__ = ["spike_time_gradients"]
