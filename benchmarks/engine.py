"""The CPU engine by network size: spikeforge against Brian2 and a bandwidth floor, one thread.

For each size (default 4k, 40k and 400k neurons, CUBA with 80 synapses per neuron, 1 s of
biological time at dt = 0.1 ms, batch 1, one thread, every spike recorded):

* spikeforge in float and in double: ``Simulation.run_seconds`` (the generated loop), minimum of
  ``--repeats`` runs in a fresh process (``run_cuba_worker``);
* Brian2 2.9 C++ standalone (double): ``benchmarks/brian2_cuba.py --n N`` in the peer
  environment ``benchmarks/.env``, its main loop's time, minimum of ``--repeats`` runs;
* PyGeNN 5.4, single-threaded CPU backend, double: ``benchmarks/genn_cuba.py --n N`` in
  ``benchmarks/.env-genn`` (GeNN built from source), the sum of its own neuron and presynaptic
  update timers, minimum of ``--repeats`` runs;
* a **bandwidth floor**: the least time per neuron-step any CUBA code can take at this size on
  this machine, measured by a C++ loop compiled with spikeforge's flags that reads and writes
  the state one neuron-step must touch (v, the refractory counter and the two synaptic variables:
  32 bytes per neuron-step in float, 56 in double) and does the neuron update's arithmetic, with
  no synapses and no spikes.

Per neuron-second = run time / (neurons x biological seconds). "growth" is per neuron-second
relative to the smallest size; "floor distance" is spikeforge's cost per neuron-step over the
floor's. "vs Brian2" and "vs GeNN" divide spikeforge's time (float or double) by the peer's in
double, their default.

    python benchmarks/engine.py [--sizes 4000 40000 400000] [--repeats 5] [--no-brian2] [--json out.json]
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    GENN_PYTHON,
    HERE,
    PEER_PYTHON,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_s,
    machine_info,
    print_table,
    run_brian2_cuba,
    run_cuba_worker,
    run_json,
    single_thread_env,
    write_json,
)

FLOOR_SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
// The state of one CUBA neuron-step: v, the refractory counter and the two synaptic variables,
// each read and written once, with the update's arithmetic; no synapses, no spikes.
template <typename T>
static double run(T* v, int32_t* refrac, T* xe, T* xi, size_t n, uint64_t steps) {
    const T a = (T)0.995, b = (T)0.005, ce = (T)0.98, ci = (T)0.99;
    for (uint64_t s = 0; s < steps; s++) {
        #pragma omp simd
        for (size_t i = 0; i < n; i++) {
            const T x = xe[i] + xi[i];
            int32_t r = refrac[i];
            r = r > 0 ? r - 1 : 0;
            v[i] = r > 0 ? v[i] : a * v[i] + b * x;
            refrac[i] = r;
            xe[i] = ce * xe[i] + (1 - ce);  // decays towards 1, never towards subnormal numbers
            xi[i] = ci * xi[i] + (1 - ci);
        }
    }
    return (double)v[n / 2];
}
extern "C" double floor_float(float* v, int32_t* r, float* e, float* i, size_t n, uint64_t s) {
    return run(v, r, e, i, n, s);
}
extern "C" double floor_double(double* v, int32_t* r, double* e, double* i, size_t n, uint64_t s) {
    return run(v, r, e, i, n, s);
}
"""


def parse_args():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000, 400000], help="neuron counts")
    p.add_argument("--duration", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs, minimum reported (default 5)")
    p.add_argument("--no-brian2", action="store_true", help="skip Brian2")
    p.add_argument("--no-genn", action="store_true", help="skip GeNN")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.duration, args.repeats, args.no_brian2, args.no_genn = [1000, 4000], 0.05, 2, True, True
    return finish_args(args)


def build_floor(workdir: Path) -> ctypes.CDLL:
    from spikeforge.runtime.build import BASE_FLAGS, find_cxx_compiler  # as generated code is built

    src, lib = workdir / "floor.cpp", workdir / "floor.so"
    src.write_text(FLOOR_SOURCE)
    subprocess.run([find_cxx_compiler(), *BASE_FLAGS, "-fopenmp", "-march=native", str(src), "-o", str(lib)],
                   check=True)
    dll = ctypes.CDLL(str(lib))
    for name in ("floor_float", "floor_double"):
        getattr(dll, name).restype = ctypes.c_double
    return dll


def measure_floor(dll, n: int, precision: str, repeats: int) -> float:
    """Seconds per neuron-step of the floor loop over n neurons: the minimum over many short
    calls (about 2 ms each, like one spikeforge run of the smallest size), so that a busy machine
    shows as fewer quiet calls rather than a higher floor."""
    import numpy as np

    dtype = np.float32 if precision == "float" else np.float64
    v, xe, xi = (np.full(n, 0.5, dtype) for _ in range(3))
    refrac = np.zeros(n, np.int32)
    steps = max(2, int(2e6 // n))
    fn = getattr(dll, f"floor_{precision}")
    ptrs = [ctypes.c_void_p(a.ctypes.data) for a in (v, refrac, xe, xi)]
    fn(*ptrs, ctypes.c_size_t(n), ctypes.c_uint64(steps))  # warm the caches
    best = float("inf")
    for _ in range(30 * repeats):
        t0 = time.perf_counter()
        fn(*ptrs, ctypes.c_size_t(n), ctypes.c_uint64(steps))
        best = min(best, (time.perf_counter() - t0) / (n * steps))
    return best


def run_genn(n: int, duration: float, repeats: int) -> dict | None:
    if not GENN_PYTHON.exists():
        return None
    return run_json([str(GENN_PYTHON), str(HERE / "genn_cuba.py"), str(duration), "--n", str(n), "--precision",
                     "double", "--repeats", str(repeats)], env=single_thread_env(), timeout=3600)


def main() -> int:
    args = parse_args()
    info = machine_info()
    print(describe_machine(info))
    rows, raw = [], {"machine": info, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="spikeforge-floor-") as tmp:
        dll = build_floor(Path(tmp))
        for n in args.sizes:
            r = {"load_before": os.getloadavg()}
            for prec in ("float", "double"):
                out = run_cuba_worker(n=n, precision=prec, duration_ms=args.duration * 1000.0,
                                      repeats=args.repeats if n < 100000 else min(args.repeats, 3))
                r[prec] = out
                r[f"floor_{prec}"] = measure_floor(dll, n, prec, 3)
            r["brian2"] = (None if args.no_brian2 or not PEER_PYTHON.exists()
                           else run_brian2_cuba(args.duration, args.repeats, n=n, timeout=3600))
            r["genn"] = None if args.no_genn else run_genn(n, args.duration, args.repeats)
            r["load_after"] = os.getloadavg()
            raw["sizes"][n] = r
            print(f"  {n} neurons measured (load {r['load_after'][0]:.2f})", flush=True)
    base = {}
    for n, r in raw["sizes"].items():
        steps_per_neuron = args.duration / 1e-4
        for prec in ("float", "double"):
            per = r[prec]["run_seconds"] / (n * args.duration)
            base.setdefault(prec, per)
            per_step = r[prec]["run_seconds"] / (n * steps_per_neuron)
            peers = {k: (r[k]["run_seconds"] / (n * args.duration) if r[k] else None) for k in ("brian2", "genn")}
            rows.append([f"{n:,}", prec, fmt_s(r[prec]["run_seconds"]), fmt(per * 1e6, 3),
                         fmt(per / base[prec], 3), fmt(per_step * 1e9, 3), fmt(r[f"floor_{prec}"] * 1e9, 3),
                         fmt(per_step / r[f"floor_{prec}"], 3),
                         *[x for k in ("brian2", "genn") for x in
                           ((fmt(peers[k] * 1e6, 3), fmt(per / peers[k], 3)) if peers[k] else ("-", "-"))],
                         fmt(r[prec]["mean_rate_hz"], 3), f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}"])
    print_table(["neurons", "spikeforge", "run", "us per neuron-s", "growth", "ns per neuron-step",
                 "floor ns", "floor distance", "Brian2 (double) us per neuron-s", "vs Brian2",
                 "GeNN (double) us per neuron-s", "vs GeNN", "rate Hz",
                 "load before / after"], rows)
    if args.json:
        write_json(args.json, json.loads(json.dumps(raw, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
