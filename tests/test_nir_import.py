"""NIR import (spikeforge.interop.nir.from_nir): the imported neurons follow NIR's equations
(against their closed-form solutions in exact mode and a numpy forward Euler in euler mode),
biases, recurrent edges and delays arrive when the conventions say, files and the CLI round
trip, and every bad graph is refused in one line naming the node."""

from dataclasses import dataclass

import numpy as np
import pytest
import yaml

from spikeforge.cli import main
from spikeforge.config import load_network
from spikeforge.errors import NetworkError

nir = pytest.importorskip("nir")

from spikeforge.interop.nir import from_nir  # noqa: E402
from spikeforge.interop.nir_import import nir_plan, plan_yaml  # noqa: E402

DT = 1e-3  # s
STEPS = 60
# The input x (held constant) reaches the neurons one step later, through the Linear / Affine.
X = np.array([1.0, 2.0])
# LIF: through an Affine with a bias; CubaLIF: through a Linear.
W_LIF, B_LIF = np.array([[1.2, 0.3], [0.0, 0.9]]), np.array([0.4, -0.2])
LIF = dict(tau=np.array([0.010, 0.025]), r=np.array([1.0, 1.5]), v_leak=np.array([0.2, -0.1]),
           v_threshold=np.array([1.0, 1.2]), v_reset=np.array([0.1, -0.3]))
W_CUBA = np.array([[2.0, 0.5], [1.0, 1.0]])
# A second layer after the LIF, in snnTorch's export form (r = tau / dt: v = beta v + I in euler mode).
W_2, B_2 = np.array([[0.8, 0.6], [0.5, 0.9]]), np.array([0.05, 0.1])
LIF_2 = dict(tau=np.array([0.004, 0.008]), r=np.array([4.0, 8.0]), v_leak=np.zeros(2), v_threshold=np.ones(2))
CUBA = dict(tau_syn=np.array([0.004, 0.006]), tau_mem=np.array([0.010, 0.020]), r=np.array([1.0, 0.8]),
            v_leak=np.array([0.0, 0.1]), v_threshold=np.array([1.0, 0.9]), v_reset=np.array([0.0, 0.2]),
            w_in=np.array([1.0, 1.5]))


def two_neuron_graph():
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([2])),
               "affine": nir.Affine(weight=W_LIF, bias=B_LIF),
               "lif": nir.LIF(**LIF),
               "linear": nir.Linear(weight=W_CUBA),
               "cuba": nir.CubaLIF(**CUBA),
               "out_lif": nir.Output(output_type=np.array([2])),
               "out_cuba": nir.Output(output_type=np.array([2])),
               "affine_2": nir.Affine(weight=W_2, bias=B_2),
               "lif_2": nir.LIF(**LIF_2)},
        edges=[("input", "affine"), ("affine", "lif"), ("lif", "out_lif"),
               ("input", "linear"), ("linear", "cuba"), ("cuba", "out_cuba"), ("lif", "affine_2"),
               ("affine_2", "lif_2")])


def run(net, steps=STEPS):
    net.record_var("cuba", "current")
    net.add_timed_input("input", "x", X[None, :], dt=net.dt)
    sim = net.build()
    sim.run(steps=steps)
    net.record_spikes("lif_2")
    net.record_var("lif_2", "v")
    spikes = {p: np.zeros((steps, 2), bool) for p in ("lif", "cuba", "lif_2")}
    for p in spikes:
        times, ids = sim.spikes(p)[0]
        spikes[p][np.round(times / net.dt).astype(int), ids] = True
    return sim, spikes


def input_at(n):
    """The summed input of step n: x (and the bias with it) reach the neurons from step 1."""
    return (B_LIF + W_LIF @ X, W_CUBA @ X) if n >= 1 else (np.zeros(2), np.zeros(2))


def test_lif_and_cubalif_follow_the_closed_form_solution_in_exact_mode():
    net = from_nir(two_neuron_graph(), dt=DT, precision="double")
    outputs = net.nir_import.outputs
    assert net.nir_import.assumed["discretisation"] == "exact"
    assert (outputs["out_lif"], outputs["out_cuba"]) == (("lif", "spikes"), ("cuba", "spikes"))
    sim, spikes = run(net)
    t_step = DT  # the closed forms below are in seconds, as the NIR graph
    # LIF: tau v' = (v_leak - v) + r I with I constant from the anchor a (a reset or step 0):
    # v(t) = v_inf + (v_a - v_inf) exp(-(t - t_a) / tau), v_inf = v_leak + r I.
    p = LIF
    v_lif, want_lif = np.zeros((STEPS, 2)), np.zeros((STEPS, 2), bool)
    anchor_v, anchor_n, level = np.zeros(2), np.full(2, -1), None
    for n in range(STEPS):
        i_now = input_at(n)[0]
        if n <= 1:  # the input changes at step 1: a new anchor at the end of step 0
            anchor_v, anchor_n = (np.zeros(2), np.full(2, -1)) if n == 0 else (v_lif[0].copy(), np.zeros(2, int))
            level = p["v_leak"] + p["r"] * i_now
        v = level + (anchor_v - level) * np.exp(-(n - anchor_n) * t_step / p["tau"])
        want_lif[n] = v > p["v_threshold"]
        v = np.where(want_lif[n], p["v_reset"], v)
        anchor_v = np.where(want_lif[n], p["v_reset"], anchor_v)
        anchor_n = np.where(want_lif[n], n, anchor_n)
        v_lif[n] = v
    # CubaLIF: tau_s I' = -I + w_in S, tau_m v' = (v_leak - v) + r I with S constant:
    # I(t) = I_inf + (I_a - I_inf) e^(-t/tau_s),
    # v(t) = v_leak + r I_inf + B e^(-t/tau_s) + (v_a - v_leak - r I_inf - B) e^(-t/tau_m),
    # B = r (I_a - I_inf) tau_s / (tau_s - tau_m); t since the anchor (step 0's end, or a reset).
    c = CUBA
    v_cuba, cur_cuba, want_cuba = np.zeros((STEPS, 2)), np.zeros((STEPS, 2)), np.zeros((STEPS, 2), bool)
    state_v, state_i, anchor_n = np.zeros(2), np.zeros(2), np.full(2, -1)
    for n in range(STEPS):
        if n == 1:
            state_v, state_i, anchor_n = v_cuba[0].copy(), cur_cuba[0].copy(), np.zeros(2, int)
        i_inf = c["w_in"] * input_at(n)[1]
        t = (n - anchor_n) * t_step
        b = c["r"] * (state_i - i_inf) * c["tau_syn"] / (c["tau_syn"] - c["tau_mem"])
        cur = i_inf + (state_i - i_inf) * np.exp(-t / c["tau_syn"])
        v = (c["v_leak"] + c["r"] * i_inf + b * np.exp(-t / c["tau_syn"])
             + (state_v - c["v_leak"] - c["r"] * i_inf - b) * np.exp(-t / c["tau_mem"]))
        want_cuba[n] = v > c["v_threshold"]
        v = np.where(want_cuba[n], c["v_reset"], v)
        state_v, state_i = np.where(want_cuba[n], v, state_v), np.where(want_cuba[n], cur, state_i)
        anchor_n = np.where(want_cuba[n], n, anchor_n)
        v_cuba[n], cur_cuba[n] = v, cur
    assert want_lif.sum() >= 4 and want_cuba.sum() >= 4  # both fire several times
    np.testing.assert_array_equal(spikes["lif"], want_lif)
    np.testing.assert_array_equal(spikes["cuba"], want_cuba)
    np.testing.assert_allclose(sim.recorded("lif", "v")[:, 0], v_lif, rtol=0, atol=1e-6 * LIF["v_threshold"].min())
    np.testing.assert_allclose(sim.recorded("cuba", "v")[:, 0], v_cuba, rtol=0, atol=1e-6 * CUBA["v_threshold"].min())
    np.testing.assert_allclose(sim.recorded("cuba", "current")[:, 0], cur_cuba, rtol=0, atol=1e-9)


def test_euler_mode_equals_forward_euler_and_subtract_resets_by_the_threshold():
    net = from_nir(two_neuron_graph(), dt=DT, discretisation="euler", reset="subtract", precision="double")
    sim, spikes = run(net)
    p, c = LIF, CUBA
    v, vc, cur = np.zeros(2), np.zeros(2), np.zeros(2)
    v_lif, v_cuba, s_lif, s_cuba = [], [], [], []
    for n in range(STEPS):
        i_lif, s_in = input_at(n)
        v = v + DT / p["tau"] * ((p["v_leak"] - v) + p["r"] * i_lif)
        cur = cur + DT / c["tau_syn"] * (-cur + c["w_in"] * s_in)
        vc = vc + DT / c["tau_mem"] * ((c["v_leak"] - vc) + c["r"] * cur)  # v from this step's current
        s_lif.append(v > p["v_threshold"])
        s_cuba.append(vc > c["v_threshold"])
        v = np.where(s_lif[-1], v - p["v_threshold"], v)
        vc = np.where(s_cuba[-1], vc - c["v_threshold"], vc)
        v_lif.append(v)
        v_cuba.append(vc)
    assert np.sum(s_lif) >= 4 and np.sum(s_cuba) >= 4
    np.testing.assert_array_equal(spikes["lif"], s_lif)
    np.testing.assert_array_equal(spikes["cuba"], s_cuba)
    np.testing.assert_allclose(sim.recorded("lif", "v")[:, 0], v_lif, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sim.recorded("cuba", "v")[:, 0], v_cuba, rtol=0, atol=1e-12)
    # A simulator that passes spikes on within the step (snnTorch: v = beta v + W s + b, reset by
    # subtraction in the step of the spike), layer by layer: spikeforge's layer k at step n + k is
    # its step n, biases included.
    v1, v2, same_step_1, same_step_2, mem_2 = np.zeros(2), np.zeros(2), [], [], []
    for _ in range(STEPS - 2):
        v1 = (1 - DT / p["tau"]) * v1 + DT / p["tau"] * (p["v_leak"] + p["r"] * (W_LIF @ X + B_LIF))
        s1 = v1 > p["v_threshold"]
        v1 = np.where(s1, v1 - p["v_threshold"], v1)
        v2 = (1 - DT / LIF_2["tau"]) * v2 + (W_2 @ s1 + B_2)
        s2 = v2 > 1.0
        v2 = np.where(s2, v2 - 1.0, v2)
        same_step_1.append(s1)
        same_step_2.append(s2)
        mem_2.append(v2)
    assert np.sum(same_step_2) >= 4
    np.testing.assert_array_equal(spikes["lif"][1:STEPS - 1], same_step_1)
    np.testing.assert_array_equal(spikes["lif_2"][2:], same_step_2)
    np.testing.assert_allclose(sim.recorded("lif_2", "v")[2:, 0], mem_2, rtol=0, atol=1e-12)
    # snnTorch's Synaptic (syn = alpha syn + S; mem = beta mem + syn, the new syn) runs one step
    # behind, for the projection, as a LIF does: euler mode steps v from the step's new current.
    syn, mem, same_step_cuba = np.zeros(2), np.zeros(2), []
    for _ in range(STEPS - 1):
        syn = (1 - DT / c["tau_syn"]) * syn + DT / c["tau_syn"] * c["w_in"] * (W_CUBA @ X)
        mem = (1 - DT / c["tau_mem"]) * mem + DT / c["tau_mem"] * (c["v_leak"] + c["r"] * syn)
        same_step_cuba.append(mem > c["v_threshold"])
        mem = np.where(same_step_cuba[-1], mem - c["v_threshold"], mem)
    np.testing.assert_array_equal(spikes["cuba"][1:], same_step_cuba)


def test_a_recurrent_cubalif_in_euler_mode_is_snntorchs_rsynaptic_one_step_behind():
    # snnTorch's export of RSynaptic (all to all, its recurrent Linear with a bias) and a Leaky after
    # it: r = tau / dt and w_in = tau_syn / dt, so euler mode steps syn = alpha syn + I and
    # mem = beta mem + syn. snnTorch feeds the recurrent spikes of step t - 1 into step t's syn and
    # mem: the loop takes one step, in spikeforge too (v steps from the step's new current).
    rng = np.random.default_rng(5)
    n_in, n, n_out, steps, dt = 3, 6, 2, 80, 1e-4
    alpha, beta, beta_out = 0.8, 0.9, 0.85
    w1, b1 = rng.normal(0.0, 0.12, (n, n_in)), rng.normal(0.0, 0.01, n)
    wr, br = rng.normal(0.0, 0.08, (n, n)), rng.normal(0.0, 0.005, n)
    w2 = rng.normal(0.4, 0.3, (n_out, n))
    tau_syn, tau_mem, tau_out = dt / (1 - alpha), dt / (1 - beta), dt / (1 - beta_out)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([n_in])), "fc1": nir.Affine(weight=w1, bias=b1),
               "lif": nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem), r=np.full(n, tau_mem / dt),
                                  v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.full(n, tau_syn / dt)),
               "w_rec": nir.Affine(weight=wr, bias=br), "fc2": nir.Linear(weight=w2),
               "out": nir.LIF(tau=np.full(n_out, tau_out), r=np.full(n_out, tau_out / dt), v_leak=np.zeros(n_out),
                              v_threshold=np.ones(n_out)),
               "output": nir.Output(output_type=np.array([n_out]))},
        edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "fc2"),
               ("fc2", "out"), ("out", "output")])
    net = from_nir(graph, dt=dt, discretisation="euler", reset="subtract", precision="double")
    assert net.nir_import.steps_behind == {"output": 2}
    x = rng.random((steps, n_in))
    net.add_timed_input("input", "x", np.vstack([x, np.zeros((1, n_in))]), dt=net.dt)
    net.record_spikes("lif")
    sim = net.build()
    sim.run(steps=steps + 2)
    got = {}
    for pop, size in (("lif", n), ("out", n_out)):
        got[pop] = np.zeros((steps + 2, size), bool)
        times, ids = sim.spikes(pop)[0]
        got[pop][np.round(times / net.dt).astype(int), ids] = True
    syn, mem, z, mem_out = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n_out)
    want_hid, want_out, v_out = [], [], []
    for t in range(steps):  # snnTorch's order, the reset by subtraction in the step of the spike
        syn = alpha * syn + (w1 @ x[t] + b1) + (wr @ z + br)
        mem = beta * mem + syn
        z = (mem > 1.0).astype(float)
        mem -= z
        mem_out = beta_out * mem_out + w2 @ z
        s_out = mem_out > 1.0
        mem_out = np.where(s_out, mem_out - 1.0, mem_out)
        want_hid.append(z > 0)
        want_out.append(s_out)
        v_out.append(mem_out)
    assert 0.05 < np.mean(want_hid) < 0.6 and np.sum(want_out) >= 5
    np.testing.assert_array_equal(got["lif"][1:steps + 1], want_hid)
    np.testing.assert_array_equal(got["out"][2:], want_out)
    np.testing.assert_allclose(sim.recorded("out", "v")[2:, 0], v_out, rtol=0, atol=1e-9)


def test_subtract_delayed_is_snntorchs_default_reset_one_step_behind():
    """snnTorch's default neurons (reset_delay=True) take the threshold off with the step after a
    spike: reset_n = H(mem_(n-1) - theta), mem_n = beta mem_(n-1) + I_n - reset_n theta,
    z_n = H(mem_n - theta): after each spike v differs by (1 - beta) theta from a reset in the
    step of the spike (reset="subtract"), and so do the spikes."""
    w, theta, beta = np.array([[0.6, 0.2], [0.1, 0.5]]), np.array([1.0, 0.7]), np.array([0.9, 0.8])
    tau = DT / (1 - beta)  # snnTorch's export: tau = dt / (1 - beta), r = tau / dt
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "linear": nir.Linear(weight=w),
                                "lif": nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(2), v_threshold=theta,
                                               v_reset=np.zeros(2)),
                                "out": nir.Output(output_type=np.array([2]))},
                         edges=[("input", "linear"), ("linear", "lif"), ("lif", "out")])
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 1.0, (STEPS, 2))
    spikes, v = {}, {}
    for reset in ("subtract_delayed", "subtract"):
        net = from_nir(graph, dt=DT, discretisation="euler", reset=reset, precision="double")
        net.add_timed_input("input", "x", x, dt=net.dt)
        net.record_var("lif", "v")
        sim = net.build()
        sim.run(steps=STEPS)
        times, ids = sim.spikes("lif")[0]
        spikes[reset] = np.zeros((STEPS, 2), bool)
        spikes[reset][np.round(times / net.dt).astype(int), ids] = True
        v[reset] = sim.recorded("lif", "v")[:, 0]
    mem, z, mems, zs = np.zeros(2), np.zeros(2), [], []
    for n in range(STEPS - 1):  # snnTorch's step n is spikeforge's n + 1 (one projection)
        mem = beta * mem + w @ x[n] - z * theta
        z = (mem > theta).astype(float)
        mems.append(mem)
        zs.append(z.astype(bool))
    assert 10 <= np.sum(zs) <= STEPS
    np.testing.assert_array_equal(spikes["subtract_delayed"][1:], zs)
    np.testing.assert_allclose(v["subtract_delayed"][1:], mems, rtol=0, atol=1e-12)
    assert not np.array_equal(spikes["subtract"][1:], zs)  # NIR's reset in the spike's step is another network


def test_a_bias_is_switched_on_when_the_input_first_reaches_its_population():
    graph = two_neuron_graph()
    graph.nodes.update({"affine_3": nir.Affine(weight=np.eye(2), bias=np.array([0.3, 0.3])), "lif_3": _lif(),
                        "out_3": nir.Output(output_type=np.array([2]))})
    graph.edges += [("cuba", "affine_3"), ("affine_3", "lif_3"), ("lif_3", "out_3")]
    for discretisation in ("exact", "euler"):  # one step per projection, after a CubaLIF too
        plan = nir_plan(graph, dt=DT, discretisation=discretisation)
        assert plan.info.steps_behind == {"out_lif": 1, "out_cuba": 1, "output_lif_2": 2, "out_3": 2}
        populations = plan.network["populations"]
        for pop, steps, bias in (("lif", 1, B_LIF), ("lif_2", 2, B_2), ("lif_3", 2, 0.3)):
            rows = populations[pop]["timed_inputs"]["bias"]["values"]  # zeros, then the bias from then on
            assert len(rows) == steps + 1 and not np.any(rows[:steps])
            np.testing.assert_array_equal(rows[steps], bias)


def test_recurrent_edges_arrive_one_step_later_and_delays_add_their_steps():
    # Integrate-and-fire neurons: v grows by r * I * dt per step (r per second, dt = 1 ms).
    nodes = {"input": nir.Input(input_type=np.array([1])),
             "drive": nir.Linear(weight=np.array([[1500.0], [0.0]])),
             "ifs": nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
             "rec": nir.Linear(weight=np.array([[0.0, 0.0], [300.0, 0.0]])),  # neuron 0 -> neuron 1
             "delay": nir.Delay(delay=np.array([0.003, 0.0])),  # per neuron of 'ifs'
             "down": nir.Linear(weight=np.array([[200.0, 0.0]])),
             "late": nir.I(r=np.ones(1)),
             "out": nir.Output(output_type=np.array([1])),
             "read": nir.Affine(weight=np.array([[1.0, 10.0]]), bias=np.array([0.5])),
             "readout": nir.Output(output_type=np.array([1])),
             "w_any": nir.Linear(weight=np.array([[1.0, 1.0]])),
             "any": nir.Threshold(threshold=np.array([0.5])),  # stateless: its input of the step > 0.5
             "any_out": nir.Output(output_type=np.array([1]))}
    edges = [("input", "drive"), ("drive", "ifs"), ("ifs", "rec"), ("rec", "ifs"), ("ifs", "delay"),
             ("delay", "down"), ("down", "late"), ("late", "out"), ("ifs", "read"), ("read", "readout"),
             ("ifs", "w_any"), ("w_any", "any"), ("any", "any_out")]
    net = from_nir(nir.NIRGraph(nodes=nodes, edges=edges), dt=DT, precision="double")
    assert net.nir_import.outputs == {"out": ("late", "v"), "readout": ("readout", "y"), "any_out": ("any", "spikes")}
    assert net.nir_import.steps_behind == {"out": 2, "readout": 2, "any_out": 2}
    net.add_timed_input("input", "x", np.array([1.0, 0.0]), dt=net.dt)  # x = 1 at step 0 only
    net.record_var("ifs", "v")
    net.record_spikes("ifs")
    sim = net.build()
    sim.run(steps=8)
    v, late = sim.recorded("ifs", "v")[:, 0], sim.recorded("late", "v")[:, 0, 0]
    # step 0: x is sent; step 1: neuron 0 gets 1500 * 1 ms = 1.5 > 1, spikes, resets to 0;
    # step 2: the recurrent edge brings 300 * 1 ms to neuron 1; step 1 + 1 + 3: the delayed edge 0.2.
    times, ids = sim.spikes("ifs")[0]
    assert times.tolist() == [1.0] and ids.tolist() == [0]
    np.testing.assert_allclose(v[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(v[:, 1], [0, 0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], atol=1e-12)
    np.testing.assert_allclose(late, [0, 0, 0, 0, 0, 0.2, 0.2, 0.2], atol=1e-12)
    # an Output read through an Affine: y = W s + b, two projections from the input (so its bias
    # starts at step 2), the spikes of the step before
    np.testing.assert_allclose(sim.recorded("readout", "y")[:, 0, 0], [0, 0, 1.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    times, ids = sim.spikes("any")[0]  # a Threshold after a weight: a spike where 1 * s0 + 1 * s1 > 0.5
    assert times.tolist() == [2.0] and ids.tolist() == [0]


def test_a_nir_file_imports_as_the_graph_and_the_cli_writes_yaml_that_loads_the_same_network(tmp_path, capsys):
    graph = two_neuron_graph()
    path = tmp_path / "two.nir"
    nir.write(path, graph)
    assert plan_yaml(nir_plan(path, dt=DT)) == plan_yaml(nir_plan(graph, dt=DT))

    out = tmp_path / "nir.yaml"  # the network of the euler test (its compiled code is in the cache)
    assert main(["import-nir", str(path), "--dt", "1e-3", "--out", str(out), "--discretisation", "euler",
                 "--reset", "subtract", "--precision", "double"]) == 0
    assert "discretisation euler, reset subtract" in capsys.readouterr().out
    text = out.read_text()
    assert "dv/dt = ((v_leak - v) + r * (i_syn + bias)) / tau" in text  # the equations, spelled out
    assert "dcurrent/dt = (w_in * (i_syn + bias) - current) / tau_syn" in text
    from_yaml, _ = load_network(out)
    direct = from_nir(graph, dt=DT, discretisation="euler", reset="subtract", precision="double")
    assert from_yaml.generated_code() == direct.generated_code()
    runs = [run(net) for net in (from_yaml, direct)]
    for pop, var in (("lif", "v"), ("cuba", "v"), ("cuba", "current"), ("lif_2", "v")):
        np.testing.assert_array_equal(runs[0][0].recorded(pop, var), runs[1][0].recorded(pop, var))
    assert runs[0][1]["lif_2"].any()
    assert all(np.array_equal(runs[0][1][p], runs[1][1][p]) for p in ("lif", "cuba", "lif_2"))


def test_convolution_pooling_and_flatten_become_the_matrix_they_compute():
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(2, 1, 2, 2)), np.array([0.5, -1.0])
    nodes = {"input": nir.Input(input_type=np.array([1, 4, 4])),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=kernel, stride=1, padding=1, dilation=1, groups=1,
                                bias=bias),
             "lif": nir.LIF(tau=np.full((2, 5, 5), 0.01), r=np.ones((2, 5, 5)), v_leak=np.zeros((2, 5, 5)),
                            v_threshold=np.ones((2, 5, 5))),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
             "li": nir.LI(tau=np.full(8, 0.01), r=np.ones(8), v_leak=np.zeros(8)),
             "out": nir.Output(output_type=np.array([8]))}
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "li"), ("li", "out")]
    whole = nir_plan(nir.NIRGraph(nodes=nodes, edges=edges), dt=DT)
    plan = whole.network
    written = yaml.safe_load(plan_yaml(whole))  # random weights come back from the YAML text exactly
    for q in ("input_to_lif", "lif_to_li"):
        np.testing.assert_array_equal(written["projections"][q]["weight_update"]["init"]["w"],
                                      plan["projections"][q]["weight_update"]["init"]["w"])
    # the convolution written out: output (c, y, x) = sum_k kernel[c, 0, ky, kx] * padded[y + ky, x + kx]
    want = np.zeros((2, 5, 5, 4, 4))
    for c, y, x, ky, kx in np.ndindex(2, 5, 5, 2, 2):
        iy, ix = y + ky - 1, x + kx - 1
        if 0 <= iy < 4 and 0 <= ix < 4:
            want[c, y, x, iy, ix] += kernel[c, 0, ky, kx]
    conv = plan["projections"]["input_to_lif"]
    pre, post = conv["connectivity"]["from_list"]["pre"], conv["connectivity"]["from_list"]["post"]
    got = np.zeros((50, 16))
    got[post, pre] = conv["weight_update"]["init"]["w"]
    np.testing.assert_array_equal(got, want.reshape(50, 16))
    bias_rows = plan["populations"]["lif"]["timed_inputs"]["bias"]["values"]  # 0 at step 0, from step 1 on
    np.testing.assert_array_equal(bias_rows, [np.zeros(50), np.repeat(bias, 25)])
    pool = plan["projections"]["lif_to_li"]  # 2x2 sums over the 4x4 top-left of each 5x5 map
    pre, post = pool["connectivity"]["from_list"]["pre"], pool["connectivity"]["from_list"]["post"]
    want = [(c * 25 + (2 * py + dy) * 5 + 2 * px + dx, c * 4 + py * 2 + px)
            for c, py, px, dy, dx in np.ndindex(2, 2, 2, 2, 2)]
    assert sorted(zip(pre.tolist(), post.tolist())) == sorted(want) and pool["weight_update"]["init"]["w"] == 1.0


def test_a_nested_graph_is_flattened_into_its_parent(tmp_path):
    # snnTorch writes a recurrent layer (RLeaky) as a graph of its own: input -> lif <-> w_rec -> output
    w_rec = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    layer = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "lif": _lif(3),
                                "w_rec": nir.Linear(weight=w_rec), "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "0": nir.Linear(weight=np.ones((3, 2))),
                                "1": layer, "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "0"), ("0", "1"), ("1", "output")])
    path = tmp_path / "nested.nir"
    nir.write(path, graph)
    for source in (graph, path):
        plan = nir_plan(source, dt=DT)
        assert plan.info.populations == {"input": "input", "1.lif": "n_1_lif"}
        assert plan.info.outputs == {"output": ("n_1_lif", "spikes")}
        projections = plan.network["projections"]
        assert sorted(projections) == ["input_to_n_1_lif", "n_1_lif_to_n_1_lif"]
        np.testing.assert_array_equal(projections["n_1_lif_to_n_1_lif"]["weight_update"]["init"]["w"],
                                      w_rec.T.ravel())  # NIR's (out, in) as [pre][post]


@dataclass(eq=False)
class Resonator(nir.NIRNode):
    """A primitive NIR 1.0 does not define (a later version's, or a vendor's)."""

    freq: np.ndarray

    def __post_init__(self):
        self.input_type = {"input": np.array(self.freq.shape)}
        self.output_type = {"output": np.array(self.freq.shape)}


def test_a_grouped_strided_dilated_conv1d_is_the_matrix_pytorch_computes():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(4, 1, 3))  # 4 output channels, 2 groups of 1 input channel each
    nodes = {"input": nir.Input(input_type=np.array([2, 9])),
             "conv": nir.Conv1d(input_shape=9, weight=kernel, stride=2, padding=1, dilation=2, groups=2,
                                bias=np.zeros(4)),
             "lif": _lif((4, 4))}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "lif")], type_check=False)
    q = nir_plan(graph, dt=DT).network["projections"]["input_to_lif"]
    matrix = np.zeros((16, 18))
    matrix[q["connectivity"]["from_list"]["post"], q["connectivity"]["from_list"]["pre"]] = \
        q["weight_update"]["init"]["w"]
    x = rng.normal(size=(2, 9))
    padded = np.pad(x, ((0, 0), (1, 1)))
    want = [sum(kernel[c, 0, k] * padded[c // 2, 2 * o + 2 * k] for k in range(3)) for c in range(4) for o in range(4)]
    np.testing.assert_allclose(matrix @ x.ravel(), want, rtol=1e-12)


def _lif(n=2, **change):
    fields = dict(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    return nir.LIF(**{**fields, **change})


BAD_GRAPHS = {
    "unsupported primitive": (
        {"input": nir.Input(input_type=np.array([2])), "odd": Resonator(freq=np.ones(2)),
         "out": nir.Output(output_type=np.array([2]))},
        [("input", "odd"), ("odd", "out")], "NIR node 'odd' (Resonator): primitive not supported (supported: "
                                            "Input, Output, LIF, "),
    "cycle without a weight": (
        {"input": nir.Input(input_type=np.array([2])), "w": nir.Linear(weight=np.eye(2)), "lif": _lif()},
        [("input", "w"), ("w", "lif"), ("lif", "lif")], "NIR node 'lif' (LIF): a cycle (lif -> lif) has no weight"),
    "cycle through weights alone": (
        {"input": nir.Input(input_type=np.array([2])), "a": nir.Linear(weight=np.eye(2)),
         "b": nir.Linear(weight=np.eye(2)), "lif": _lif()},
        [("input", "a"), ("a", "b"), ("b", "a"), ("b", "lif")], "NIR node 'a' (Linear): a cycle through weight"),
    "mismatched shapes": (
        {"input": nir.Input(input_type=np.array([2])), "w": nir.Linear(weight=np.ones((3, 4))), "lif": _lif(3)},
        [("input", "w"), ("w", "lif")], "NIR node 'w' (Linear): edge 'input' -> 'w': 'input' gives 2 values, 'w' "
                                        "takes 4"),
    "NaN parameter": (
        {"input": nir.Input(input_type=np.array([2])), "w": nir.Linear(weight=np.eye(2)),
         "lif": _lif(tau=np.array([0.01, np.nan]))},
        [("input", "w"), ("w", "lif")], "NIR node 'lif' (LIF): field 'tau' is not finite (nan at index 1)"),
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_a_bad_graph_is_refused_in_one_line_naming_the_node(case):
    nodes, edges, message = BAD_GRAPHS[case]
    with pytest.raises(NetworkError) as err:
        from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), dt=DT)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dt_is_required():
    with pytest.raises(NetworkError, match=r"^from_nir: dt is required .*dt=1e-3 with time_unit='s'") as err:
        from_nir(two_neuron_graph())
    assert "\n" not in str(err.value)
