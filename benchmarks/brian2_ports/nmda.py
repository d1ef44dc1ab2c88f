"""Brian2 side of examples/brian2/nmda.yaml: NMDA synapses with a magnesium block, kept in the synapse.

100 Poisson inputs at 10 Hz, all connected to 20 LIF neurons (C_m = 500 pF, g_L = 25 nS,
E_L = -70 mV, threshold -50 mV, reset -55 mV, 2 ms refractory with v clamped, v(0) uniform
in [-70, -55] mV). Per synapse, integrated every step: dx/dt = -x / 2 ms (x += 1 on a
presynaptic spike), ds/dt = -s / 100 ms + 0.5/ms x (1 - s); each neuron receives
I_nmda = sum of 2 nS s (0 - v) / (1 + [Mg] exp(-0.062 v/mV) / 3.57), [Mg] = 1 (summed).
Exponential Euler for the synapse equations, exact integration for the neurons: the methods
spikeforge chooses for the port (spec.integrators). dt = 0.1 ms. Keeps the spikes.
"""

from _standalone import build_and_run, config, standalone

cfg = config()
b2 = standalone()
ms, mV, nS, pF = b2.ms, b2.mV, b2.nS, b2.pF
b2.defaultclock.dt = 0.1 * ms
inputs = b2.PoissonGroup(100, rates=10 * b2.Hz)
cells = b2.NeuronGroup(20, """dv/dt = (g_L*(E_L - v) + I_nmda)/C_m : volt (unless refractory)
                              I_nmda : amp""",
                       threshold="v > -50*mV", reset="v = -55*mV", refractory=2 * ms, method="exact",
                       namespace={"g_L": 25 * nS, "E_L": -70 * mV, "C_m": 500 * pF})
cells.v = "-70*mV + 15*mV*rand()"
nmda = b2.Synapses(inputs, cells, """dx/dt = -x/tau_rise : 1 (clock-driven)
                                     ds/dt = -s/tau_decay + alpha*x*(1 - s) : 1 (clock-driven)
                                     mg_block = 1/(1 + Mg*exp(-0.062*v_post/mV)/3.57) : 1
                                     I_nmda_post = g_nmda*s*(E_nmda - v_post)*mg_block : amp (summed)""",
                   on_pre="x += 1", method="exponential_euler",
                   namespace={"tau_rise": 2 * ms, "tau_decay": 100 * ms, "alpha": 0.5 / ms, "g_nmda": 2 * nS,
                              "E_nmda": 0 * mV, "Mg": 1.0})
nmda.connect()
spikes = b2.SpikeMonitor(cells)
b2.run(cfg["duration"] * ms)
build_and_run(cfg, lambda: {"t": spikes.t / ms, "i": spikes.i})
