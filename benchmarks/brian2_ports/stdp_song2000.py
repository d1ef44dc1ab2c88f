"""Brian2 side of examples/brian2/stdp_song2000.yaml: Song, Miller & Abbott (2000), additive STDP.

1000 Poisson inputs at 15 Hz onto one conductance-based LIF neuron,
    tau_m dv/dt = g_e (E_e - v) + E_l - v,  dg_e/dt = -g_e / tau_e,
tau_m = 10 ms, E_l = -74 mV, E_e = 0, tau_e = 5 ms, v > -54 mV: v = -60 mV; forward Euler,
dt = 0.1 ms. Each input spike adds w to g_e. Per synapse, traces decaying with 20 ms:
pre spike: A_pre += 0.01 gmax, w = clip(w + A_post, 0, gmax); post spike:
A_post -= 1.05 * 0.01 gmax, w = clip(w + A_pre, 0, gmax). gmax = 0.01, w uniform in [0, gmax].
v starts at v_r = -60 mV as in the spikeforge port (not at 0).
Keeps the output neuron's spikes and the final weights.
"""

from _standalone import build_and_run, config, standalone

cfg = config()
b2 = standalone()
ms, mV = b2.ms, b2.mV
b2.defaultclock.dt = 0.1 * ms
gmax, tau_trace = 0.01, 20 * ms
step_pre = 0.01 * gmax
step_post = -1.05 * step_pre
inputs = b2.PoissonGroup(1000, rates=15 * b2.Hz)
cell = b2.NeuronGroup(1, """dv/dt = (ge*(E_e - v) + E_l - v)/tau_m : volt
                            dge/dt = -ge/tau_e : 1""",
                      threshold="v > -54*mV", reset="v = -60*mV", method="euler",
                      namespace={"E_e": 0 * mV, "E_l": -74 * mV, "tau_m": 10 * ms, "tau_e": 5 * ms})
cell.v = -60 * mV
plastic = b2.Synapses(inputs, cell, """w : 1
                                       dapre/dt = -apre/tau_trace : 1 (event-driven)
                                       dapost/dt = -apost/tau_trace : 1 (event-driven)""",
                      on_pre="""ge += w
                                apre += step_pre
                                w = clip(w + apost, 0, gmax)""",
                      on_post="""apost += step_post
                                 w = clip(w + apre, 0, gmax)""")
plastic.connect()
plastic.w = "rand()*gmax"
spikes = b2.SpikeMonitor(cell)
b2.run(cfg["duration"] * ms)
build_and_run(cfg, lambda: {"t": spikes.t / ms, "i": spikes.i, "w": plastic.w[:]})
