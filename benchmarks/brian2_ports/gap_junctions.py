"""Brian2 side of examples/brian2/gap_junctions.yaml: ten leaky neurons, all pairs coupled by gap junctions.

    tau dv/dt = v0 - v + Igap,  v0 = 1.05, tau = 10 ms;  v > 1: v = 0;  v_i(0) = i / (N - 1)
    Igap_post = sum over incoming synapses of w (v_pre - v_post), w = 0.02, every pair (self included)

Exact integration, dt = 0.1 ms, double precision. Deterministic: every run gives the same traces.
Keeps the membrane potential of every neuron at every step (Brian2 records at the start of a
step) and the spikes.
"""

from _standalone import build_and_run, config, standalone

cfg = config()
b2 = standalone()
b2.defaultclock.dt = 0.1 * b2.ms
n_cells, drive, tau_m, coupling = 10, 1.05, 10 * b2.ms, 0.02

cells = b2.NeuronGroup(n_cells, """dv/dt = (v0 - v + Igap) / tau_m : 1
                                   Igap : 1
                                   v0 : 1 (constant)""",
                       threshold="v > 1", reset="v = 0", method="exact")
cells.v0 = drive
cells.v = "i * 1.0 / (N - 1)"
gaps = b2.Synapses(cells, cells, """w : 1 (constant)
                                    Igap_post = w * (v_pre - v_post) : 1 (summed)""")
gaps.connect()
gaps.w = coupling
voltage = b2.StateMonitor(cells, "v", record=True)
spikes = b2.SpikeMonitor(cells)
b2.run(cfg["duration"] * b2.ms)
build_and_run(cfg, lambda: {"v_t": voltage.t / b2.ms, "v": voltage.v, "t": spikes.t / b2.ms, "i": spikes.i})
