"""Brian2 C++ standalone side of the CUBA benchmark.

The Vogels & Abbott (2005) CUBA network, exactly as in Brian2's
``examples/CUBA.py`` (Brette et al. 2007, benchmark 2), run in Brian2's C++
standalone mode on a single thread, so that spikeforge can be compared
against it on the same machine in the same run.

Run it with the peer environment (see ``benchmarks/setup_peers.sh``)::

    benchmarks/.env/bin/python benchmarks/brian2_cuba.py [DURATION_S] [--repeats N]

It prints ONE JSON line on stdout:

* ``build_seconds``: wall time of ``device.build(compile=True, run=False)``,
  i.e. all code generation plus the C++ compilation, into a fresh temporary
  directory (a cold build; Brian2's defaults: ``make -j``, g++ with
  ``-O3 -ffast-math -fno-finite-math-only -march=native``).
* ``run_seconds``: the main simulation loop time as measured *inside* the
  generated C++ (``device._last_run_time``, read back from
  ``last_run_info.txt``). Without OpenMP, Brian2 measures it with
  ``std::clock()``, i.e. process CPU time, which equals wall time for this
  single-threaded, compute-bound loop. It excludes network construction
  (synapse creation, initial values) and writing results to disk. With
  ``--repeats N`` the built binary is re-run N times (``device.run()``) and
  the minimum is reported; all values are in ``run_seconds_all``.
* ``binary_wall_seconds``: minimum wall time of the whole ``main`` process
  (measured by Brian2 around the subprocess), for reference: includes
  network construction and result file I/O.
* ``total_spikes`` / ``mean_rate_hz``: from a SpikeMonitor on all neurons
  (last repeat; with a fixed seed every repeat is identical).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time

import brian2
from brian2 import (
    NeuronGroup,
    SpikeMonitor,
    Synapses,
    defaultclock,
    device,
    ms,
    mV,
    prefs,
    run,
    second,
    seed,
    set_device,
)

N_NEURONS = 4000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "duration",
        nargs="?",
        type=float,
        default=1.0,
        help="simulated time in seconds (default: 1)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the built binary N times and report the minimum run time",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="RNG seed for connectivity and initial values (default: 42)",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=N_NEURONS,
        help=f"neurons (default {N_NEURONS}); connection probability 80/n (0.02 at 4000)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated project directory (path printed on stderr)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def build_network(duration_s: float, n: int = N_NEURONS) -> SpikeMonitor:
    """Set up the CUBA network (as in Brian2's examples/CUBA.py) and run()."""
    taum = 20 * ms
    taue = 5 * ms
    taui = 10 * ms
    Vt = -50 * mV
    Vr = -60 * mV
    El = -49 * mV

    eqs = """
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    """
    namespace = {
        "taum": taum,
        "taue": taue,
        "taui": taui,
        "Vt": Vt,
        "Vr": Vr,
        "El": El,
    }

    P = NeuronGroup(
        n,
        eqs,
        threshold="v>Vt",
        reset="v = Vr",
        refractory=5 * ms,
        method="exact",  # alias of "linear", which older copies of the example use
        namespace=namespace,
    )
    P.v = "Vr + rand() * (Vt - Vr)"
    P.ge = 0 * mV
    P.gi = 0 * mV

    we = (60 * 0.27 / 10) * mV  # excitatory synaptic weight (voltage)
    wi = (-20 * 4.5 / 10) * mV  # inhibitory synaptic weight
    Ce = Synapses(P, P, on_pre="ge += we", namespace={"we": we})
    Ci = Synapses(P, P, on_pre="gi += wi", namespace={"wi": wi})
    n_exc, p = n * 4 // 5, 80.0 / n
    Ce.connect(f"i<{n_exc}", p=p)
    Ci.connect(f"i>={n_exc}", p=p)

    s_mon = SpikeMonitor(P)

    # In standalone mode with build_on_run=False this only records the run.
    run(duration_s * second)
    return s_mon


def main() -> None:
    args = parse_args()

    workdir = tempfile.mkdtemp(prefix="brian2_cuba_")
    try:
        set_device("cpp_standalone", directory=workdir, build_on_run=False)
        prefs.devices.cpp_standalone.openmp_threads = 0  # single thread, no OpenMP
        defaultclock.dt = 0.1 * ms
        seed(args.seed)

        s_mon = build_network(args.duration, args.n)

        # Cold build: code generation + compilation into a fresh directory.
        t0 = time.perf_counter()
        device.build(directory=workdir, compile=True, run=False, with_output=False)
        build_seconds = time.perf_counter() - t0

        run_times: list[float] = []
        wall_times: list[float] = []
        for _ in range(args.repeats):
            device.run(with_output=False)
            run_times.append(float(device._last_run_time))
            wall_times.append(float(device.timers["run_binary"]))

        total_spikes = int(s_mon.num_spikes)
        result = {
            "brian2_version": brian2.__version__,
            "n_neurons": args.n,
            "duration_s": args.duration,
            "dt_ms": float(defaultclock.dt / ms),
            "seed": args.seed,
            "threads": 1,
            "build_seconds": round(build_seconds, 4),
            "run_seconds": round(min(run_times), 4),
            "run_seconds_all": [round(t, 4) for t in run_times],
            "binary_wall_seconds": round(min(wall_times), 4),
            "repeats": args.repeats,
            "total_spikes": total_spikes,
            "mean_rate_hz": round(total_spikes / (args.n * args.duration), 4),
        }
        print(json.dumps(result))
    finally:
        if args.keep:
            print(f"project kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
