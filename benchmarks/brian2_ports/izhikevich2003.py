"""Brian2 side of examples/brian2/izhikevich2003.yaml: the network of Izhikevich (2003), Fig. 3.

800 excitatory and 200 inhibitory neurons, dt = 1 ms, with the scheme of the paper's listing:
each step I = thalamic noise (sd 5 excitatory, 2 inhibitory, fresh per neuron and step) + the
weights of the neurons that spiked in the previous step; v takes two half steps of
0.04 v^2 + 5 v + 140 - u + I with u and I held, then u += a (b v - u); v >= 30: v = c, u += d.
r uniform in [0, 1] per neuron: excitatory a = 0.02, b = 0.2, c = -65 + 15 r^2, d = 8 - 6 r^2;
inhibitory a = 0.02 + 0.08 r, b = 0.25 - 0.05 r, c = -65, d = 2. v = -65, u = b v at the start.
All-to-all weights (autapses included): 0.5 rand() from excitatory, -rand() from inhibitory.

In Brian2's schedule the update (a run_regularly operation in the 'groups' slot) reads the
input summed into I_next by the previous step's spikes and clears it; thresholds, synaptic
delivery and resets follow in the same step. Keeps the spikes (neuron ids: excitatory first).
"""

from _standalone import build_and_run, config, standalone

cfg = config()
b2 = standalone()
b2.defaultclock.dt = 1 * b2.ms
n_exc, n_inh = 800, 200
cells = b2.NeuronGroup(n_exc + n_inh, """v : 1
                                         u : 1
                                         I_next : 1
                                         a : 1 (constant)
                                         b : 1 (constant)
                                         c : 1 (constant)
                                         d : 1 (constant)
                                         sigma : 1 (constant)
                                         r : 1 (constant)""",
                       threshold="v >= 30", reset="v = c\nu += d")
cells.run_regularly("""I_now = I_next + sigma*randn()
                       v += 0.5*(0.04*v**2 + 5*v + 140 - u + I_now)
                       v += 0.5*(0.04*v**2 + 5*v + 140 - u + I_now)
                       u += a*(b*v - u)
                       I_next = 0""", when="groups")
exc, inh = cells[:n_exc], cells[n_exc:]
cells.r = "rand()"
exc.a, exc.b, exc.c, exc.d, exc.sigma = 0.02, 0.2, "-65 + 15*r**2", "8 - 6*r**2", 5.0
inh.a, inh.b, inh.c, inh.d, inh.sigma = "0.02 + 0.08*r", "0.25 - 0.05*r", -65.0, 2.0, 2.0
cells.v = -65.0
cells.u = "b*v"
from_exc = b2.Synapses(exc, cells, "w : 1 (constant)", on_pre="I_next_post += w")
from_inh = b2.Synapses(inh, cells, "w : 1 (constant)", on_pre="I_next_post += w")
from_exc.connect()
from_inh.connect()
from_exc.w = "0.5*rand()"
from_inh.w = "-rand()"
spikes = b2.SpikeMonitor(cells)
b2.run(cfg["duration"] * b2.ms)
build_and_run(cfg, lambda: {"t": spikes.t / b2.ms, "i": spikes.i})
