"""Brian2 side of examples/brian2/cobahh.yaml: the COBAHH benchmark network (Brette et al. 2007, benchmark 3).

4000 Traub & Miles Hodgkin-Huxley neurons (3200 excitatory, 800 inhibitory), every ordered pair
connected with probability 0.02; an excitatory spike adds 6 nS to g_e, an inhibitory one 67 nS
to g_i, no delay; g_e, g_i decay with 5 and 10 ms towards reversal potentials 0 and -80 mV.
Membrane area 20000 um^2. A spike is v > -20 mV outside a 3 ms refractory period (integration
goes on). Initial v = E_l + (5 randn() - 5) mV, g_e = (1.5 randn() + 4) 10 nS,
g_i = (12 randn() + 20) 10 nS; m, n, h = 0. Exponential Euler, dt = 0.1 ms.
Keeps the spikes (neuron ids: excitatory first).
"""

from _standalone import build_and_run, config, standalone

cfg = config()
b2 = standalone()
ms, mV, nS, pF = b2.ms, b2.mV, b2.nS, b2.pF
b2.defaultclock.dt = 0.1 * ms
n_exc, n_inh = 3200, 800
area_um2 = 20000.0
membrane = {  # per unit area (uF/cm^2, S/cm^2) times the area (1 um^2 = 1e-8 cm^2)
    "Cm": 1e-6 * area_um2 * 1e-8 * b2.farad, "gl": 5e-5 * area_um2 * 1e-8 * b2.siemens,
    "g_na": 100e-3 * area_um2 * 1e-8 * b2.siemens, "g_kd": 30e-3 * area_um2 * 1e-8 * b2.siemens,
    "El": -60 * mV, "EK": -90 * mV, "ENa": 50 * mV, "VT": -63 * mV, "Ee": 0 * mV, "Ei": -80 * mV,
    "taue": 5 * ms, "taui": 10 * ms,
}
traub_miles = b2.Equations("""
dv/dt = (gl*(El - v) + ge*(Ee - v) + gi*(Ei - v) - g_na*m**3*h*(v - ENa) - g_kd*n**4*(v - EK))/Cm : volt
dm/dt = a_m*(1 - m) - b_m*m : 1
dn/dt = a_n*(1 - n) - b_n*n : 1
dh/dt = a_h*(1 - h) - b_h*h : 1
dge/dt = -ge/taue : siemens
dgi/dt = -gi/taui : siemens
a_m = 1.28/exprel((13*mV - v + VT)/(4*mV))/ms : Hz
b_m = 1.4/exprel((v - VT - 40*mV)/(5*mV))/ms : Hz
a_h = 0.128*exp((17*mV - v + VT)/(18*mV))/ms : Hz
b_h = 4/(1 + exp((40*mV - v + VT)/(5*mV)))/ms : Hz
a_n = 0.16/exprel((15*mV - v + VT)/(5*mV))/ms : Hz
b_n = 0.5*exp((10*mV - v + VT)/(40*mV))/ms : Hz
""")
cells = b2.NeuronGroup(n_exc + n_inh, traub_miles, threshold="v > -20*mV", refractory=3 * ms,
                       method="exponential_euler", namespace=membrane)
to_all_exc = b2.Synapses(cells[:n_exc], cells, on_pre="ge += 6*nS")
to_all_inh = b2.Synapses(cells[n_exc:], cells, on_pre="gi += 67*nS")
to_all_exc.connect(p=0.02)
to_all_inh.connect(p=0.02)
cells.v = "El + (5*randn() - 5)*mV"
cells.ge = "(1.5*randn() + 4)*10*nS"
cells.gi = "(12*randn() + 20)*10*nS"
spikes = b2.SpikeMonitor(cells)
b2.run(cfg["duration"] * ms)
build_and_run(cfg, lambda: {"t": spikes.t / ms, "i": spikes.i})
