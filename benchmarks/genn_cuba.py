"""CUBA (Vogels & Abbott 2005) in PyGeNN 5.4, single-threaded CPU backend: the peer column.

Runs in the peer environment ``benchmarks/.env-genn`` (PyGeNN built from source; see
benchmarks/README.md). The network is ``brian2_cuba.py``'s and spikeforge's ``cuba_network``:
n neurons (4/5 excitatory), connection probability 80/n, LIF with tau_m = 20 ms, v_rest = -49 mV,
threshold -50 mV, reset -60 mV, 5 ms refractory, exponential currents (5 and 10 ms) that jump by
1.62 and -9 mV, initial v uniform in [-60, -50] mV, dt = 0.1 ms, every spike recorded. The
membrane equation is integrated exactly for the step's input, as spikeforge and Brian2 do.
GeNN's optimisations are on: ``optimize_code`` (-O3 -ffast-math; spikeforge uses no fast-math;
PyGeNN has no preference for -march=native), narrow sparse indices, fused postsynaptic models.

Prints one JSON line: ``run_seconds`` (GeNN's own kernel timers: neuron update + presynaptic
update, summed over the run; minimum of ``--repeats`` runs, each from where the last one left
the state; the first starts from the initial values),
``loop_seconds`` (the Python loop of ``step_time()`` calls, for the record), ``build_seconds``
(code generation and compilation: the first build of a fresh directory), and the spike count.

    benchmarks/.env-genn/bin/python benchmarks/genn_cuba.py [duration_s] [--n 4000] [--precision float]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import numpy as np
from pygenn import (
    GeNNModel,
    create_neuron_model,
    create_postsynaptic_model,
    init_postsynaptic,
    init_sparse_connectivity,
    init_var,
    init_weight_update,
)

LIF = create_neuron_model(
    "cuba_lif",
    params=["TauM", "Vrest", "Vreset", "Vthresh", "TauRefrac"],
    vars=[("V", "scalar"), ("RefracTime", "scalar")],
    derived_params=[("ExpTC", lambda pars, dt: np.exp(-dt / pars["TauM"]))],
    sim_code="""
    if (RefracTime <= 0.0) {
        // dv/dt = (v_rest - v + i_syn) / tau_m, exact for the step's input
        const scalar alpha = Isyn + Vrest;
        V = alpha - (ExpTC * (alpha - V));
    }
    else {
        RefracTime -= dt;
    }
    """,
    threshold_condition_code="RefracTime <= 0.0 && V > Vthresh",
    reset_code="""
    V = Vreset;
    RefracTime = TauRefrac;
    """)

EXP_VOLT = create_postsynaptic_model(
    "exp_volt",
    params=["tau"],
    derived_params=[("ExpDecay", lambda pars, dt: np.exp(-dt / pars["tau"]))],
    sim_code="""
    injectCurrent(inSyn);
    inSyn *= ExpDecay;
    """)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("duration", nargs="?", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--n", type=int, default=4000, help="neurons (default 4000)")
    p.add_argument("--precision", choices=["float", "double"], default="float")
    p.add_argument("--repeats", type=int, default=3, help="timed runs, minimum reported (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dir", help="build into this directory and keep it (a second process finds the code built: "
                                 "GeNN's warm start); default: a fresh temporary directory")
    return p.parse_args()


def build_model(n: int, precision: str, seed: int, workdir: str) -> tuple[GeNNModel, list]:
    # optimised: -O3 -ffast-math (PyGeNN's default builds without optimisation)
    model = GeNNModel(precision, "cuba", backend="single_threaded_cpu", optimize_code=True)
    model.dt = 0.1
    model.seed = seed
    model.timing_enabled = True
    model.default_narrow_sparse_ind_enabled = True
    model.fuse_postsynaptic_models = True
    params = {"TauM": 20.0, "Vrest": -49.0, "Vreset": -60.0, "Vthresh": -50.0, "TauRefrac": 5.0}
    init = {"V": init_var("Uniform", {"min": -60.0, "max": -50.0}), "RefracTime": 0.0}
    n_exc = n * 4 // 5
    pops = {"exc": model.add_neuron_population("exc", n_exc, LIF, params, init),
            "inh": model.add_neuron_population("inh", n - n_exc, LIF, params, init)}
    for pop in pops.values():
        pop.spike_recording_enabled = True
    p = 80.0 / n
    for pre, w, tau in (("exc", 1.62, 5.0), ("inh", -9.0, 10.0)):
        for post in ("exc", "inh"):
            model.add_synapse_population(
                f"{pre}_{post}", "SPARSE", pops[pre], pops[post],
                init_weight_update("StaticPulseConstantWeight", {"g": w}),
                init_postsynaptic(EXP_VOLT, {"tau": tau}),
                init_sparse_connectivity("FixedProbabilityNoAutapse" if pre == post else "FixedProbability",
                                         {"prob": p}))
    return model, list(pops.values())


def main() -> None:
    args = parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="genn_cuba_")
    try:
        model, pops = build_model(args.n, args.precision, args.seed, workdir)
        t0 = time.perf_counter()
        model.build(path_to_model=workdir)
        build_seconds = time.perf_counter() - t0
        steps = int(round(args.duration * 1000.0 / model.dt))
        model.load(num_recording_timesteps=steps)
        runs, loops, spikes = [], [], 0
        for _ in range(args.repeats):
            model.timestep = 0  # the state runs on from the previous run (PyGeNN 5 has no reset)
            n0, p0 = model.neuron_update_time, model.presynaptic_update_time
            t0 = time.perf_counter()
            for _ in range(steps):
                model.step_time()
            loops.append(time.perf_counter() - t0)
            runs.append(model.neuron_update_time - n0 + model.presynaptic_update_time - p0)
            model.pull_recording_buffers_from_device()
            spikes = sum(len(pop.spike_recording_data[0][0]) for pop in pops)
        print(json.dumps({
            "n_neurons": args.n, "precision": args.precision, "duration_s": args.duration,
            "build_seconds": round(build_seconds, 4), "run_seconds": min(runs), "run_seconds_all": runs,
            "loop_seconds": min(loops), "total_spikes": spikes,
            "mean_rate_hz": spikes / (args.n * args.duration),
        }))
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
