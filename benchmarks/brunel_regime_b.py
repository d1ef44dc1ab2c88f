"""Brunel (2000) network statistics, spikeforge against Brian2, over several seeds.

The model of Brunel (2000), "Dynamics of sparsely connected networks of excitatory and
inhibitory spiking neurons", as Brian2's example ``frompapers/Brunel_2000`` sets it up:
N_E = 10000 and N_I = 2500 LIF neurons (tau = 20 ms, theta = 20 mV, V_r = 10 mV,
t_ref = 2 ms, exact integration, ``(unless refractory)``), delta synapses ``v += J``
(J = 0.1 mV, inhibitory -g J) with delay D = 1.5 ms, random connectivity with
probability epsilon = 0.1, and an external drive of C_E = 1000 Poisson sources per neuron
at nu_ext = (nu_ext/nu_thr) * theta / (J C_E tau) (Brian2's ``PoissonInput``), dt = 0.1 ms.

Statistics over the window [--t-start, duration] (ms), all neurons:

* ``rate``: spikes / (neurons x window), Hz;
* ``isi_cv``: per neuron std(ISI) / mean(ISI) (population std, ddof = 0) over the neurons with
  at least 3 spikes in the window (two ISIs), averaged over those neurons;
* ``pop_cv``: the population rate in 1 ms bins (spikes of all neurons per bin), std / mean.

``--variants`` adds spikeforge runs that each change one thing (see VARIANTS), to test
hypotheses for a difference; ``--brian2-variants`` does the same on the Brian2 side.
The Brian2 part needs the peer environment (``bash benchmarks/setup_peers.sh``) and is
skipped without it. Brian2 runs in C++ standalone mode (one build per variant, its binary
run once per seed, seeded by the OS: Brian2's runs are not reproducible).

    python benchmarks/brunel_regime_b.py --seeds 5 --duration 1000
    python benchmarks/brunel_regime_b.py --quick          # small network, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".env" / "bin" / "python"

REGIMES = {"A": (3.0, 2.0), "B": (6.0, 4.0), "C": (5.0, 2.0), "D": (4.5, 0.9)}  # g, nu_ext / nu_thr

# Each spikeforge variant changes one thing against 'baseline' (the Brian2 example's model).
VARIANTS = {
    "baseline": {},
    "in_degree": {"in_degree": True},  # fixed in-degree C_E, C_I (the paper's connectivity)
    "t_ref_2.1": {"t_ref": 2.1},  # one step more refractoriness (the rule before issue 10)
    "delay_1.4": {"delay": 1.4},  # one step less delay
    "delay_1.6": {"delay": 1.6},  # one step more delay
    "double": {"precision": "double"},
}
# 'in_degree': every neuron gets exactly C_E and C_I inputs (drawn once in Python, so the runs of one
# build share their connectivity and differ in the external input only).
BRIAN2_VARIANTS = ("baseline", "in_degree")


# --------------------------------------------------------------------------- statistics


def spike_statistics(times_ms, ids, n_neurons, t_start, t_stop, bin_ms=1.0):
    """Rate (Hz), mean per-neuron ISI CV and the CV of the population rate in ``bin_ms`` bins."""
    times_ms, ids = np.asarray(times_ms, float), np.asarray(ids, np.int64)
    keep = (times_ms >= t_start) & (times_ms < t_stop)
    times_ms, ids = times_ms[keep], ids[keep]
    window_s = (t_stop - t_start) * 1e-3
    rate = times_ms.size / (n_neurons * window_s)
    order = np.lexsort((times_ms, ids))
    t_sorted, i_sorted = times_ms[order], ids[order]
    isi = np.diff(t_sorted)
    same = i_sorted[1:] == i_sorted[:-1]
    isi, owner = isi[same], i_sorted[1:][same]
    n_isi = np.bincount(owner, minlength=n_neurons)
    s1 = np.bincount(owner, isi, minlength=n_neurons)
    s2 = np.bincount(owner, isi * isi, minlength=n_neurons)
    ok = n_isi >= 2
    mean = s1[ok] / n_isi[ok]
    var = np.maximum(s2[ok] / n_isi[ok] - mean * mean, 0.0)
    isi_cv = float(np.mean(np.sqrt(var) / mean)) if ok.any() else float("nan")
    n_bins = int(round((t_stop - t_start) / bin_ms))
    counts = np.bincount(((times_ms - t_start) / bin_ms).astype(np.int64), minlength=n_bins)[:n_bins]
    pop_cv = float(counts.std() / counts.mean()) if counts.mean() > 0 else float("nan")
    return {"rate": float(rate), "isi_cv": isi_cv, "pop_cv": pop_cv}


def nu_ext_hz(nu_ratio, c_e, j=0.1, theta=20.0, tau=20.0):
    """nu_ext = ratio * nu_thr, nu_thr = theta / (J C_E tau), in Hz (tau in ms)."""
    return nu_ratio * theta / (j * c_e * tau) * 1e3


# --------------------------------------------------------------------------- spikeforge


def brunel_network(g, nu_ratio, n_e, seed, *, in_degree=False, t_ref=2.0, delay=1.5, precision="float",
                   epsilon=0.1, g_dynamic=False):
    """The spikeforge network. ``g`` a number: compiled in (or ``g_dynamic``: settable with
    ``set_param`` on ``inh_exc`` and ``inh_inh``); a list: a sweep, one value per batch instance
    (batch size = its length, ``batch_values`` of the inhibitory weight ``w = -g J``)."""
    from spikeforge import models as m
    from spikeforge.network import Network

    sweep = list(g) if isinstance(g, (list, tuple)) else None
    n_i = n_e // 4
    c_e, c_i = int(epsilon * n_e), int(epsilon * n_i)
    net = Network("brunel", dt=0.1, seed=seed, precision=precision, batch_size=len(sweep) if sweep else 1)
    lif = {"tau_m": 20.0, "v_rest": 0.0, "v_reset": 10.0, "v_th": 20.0, "t_ref": t_ref, "r_m": 1.0}
    for name, size in (("exc", n_e), ("inh", n_i)):
        net.add_population(name, size, m.LIF, params=lif, init={"v": 0.0}, record_spikes=True)
        net.add_poisson_input(f"ext_{name}", name, "v", n=c_e, rate_hz=nu_ext_hz(nu_ratio, c_e), weight=0.1)
    w_inh = -(sweep[0] if sweep else g) * 0.1
    for pre, post, w, c in (("exc", "exc", 0.1, c_e), ("exc", "inh", 0.1, c_e),
                            ("inh", "exc", w_inh, c_i), ("inh", "inh", w_inh, c_i)):
        conn = {"fixed_in_degree": c} if in_degree else {"fixed_probability": epsilon}
        inh = pre == "inh"
        net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.delta_curr("v"),
                           connectivity=conn, wu_params={"w": w}, delay=delay,
                           wu_batch_values={"w": [-gb * 0.1 for gb in sweep]} if inh and sweep else None,
                           wu_dynamic=["w"] if inh and g_dynamic else None)
    return net


def run_spikeforge(g, nu_ratio, n_e, seed, duration, **options):
    net = brunel_network(g, nu_ratio, n_e, seed, **options)
    t0 = time.perf_counter()
    sim = net.build()
    sim.run(duration=duration)
    wall = time.perf_counter() - t0
    (te, ie), = sim.spikes("exc")
    (ti, ii), = sim.spikes("inh")
    sim.close()
    return np.concatenate([te, ti]), np.concatenate([ie, ii + n_e]), n_e + n_e // 4, wall


# --------------------------------------------------------------------------- Brian2 (peer venv)

def brian2_worker_source():
    """The Brian2 script: builds once, then runs the binary once per seed. Brian2's standalone
    binary seeds its generator from std::random_device when the script sets no seed, so every run
    draws new connectivity and input (not reproducible; 'seed' only numbers the runs)."""
    return r'''
import json, sys, time
import numpy as np
from brian2 import (NeuronGroup, PoissonInput, SpikeMonitor, Synapses, defaultclock, device, ms, mV, prefs,
                    run, set_device)
cfg = json.loads(sys.argv[1])
set_device("cpp_standalone", build_on_run=False)
prefs.devices.cpp_standalone.openmp_threads = cfg.get("threads", 0)  # 0: Brian2's default, no OpenMP
n_e = cfg["n_e"]; n_i = n_e // 4; N = n_e + n_i; eps = 0.1; C_E = int(eps * n_e)
tau = 20 * ms; theta = 20 * mV; V_r = 10 * mV; J = 0.1 * mV; D = 1.5 * ms; g = cfg["g"]
defaultclock.dt = 0.1 * ms
neurons = NeuronGroup(N, "dv/dt = -v/tau : volt (unless refractory)", threshold="v > theta",
                      reset="v = V_r", refractory=2 * ms, method="exact")
exc = Synapses(neurons[:n_e], neurons, on_pre="v += J", delay=D)
sweep = cfg.get("g_values")  # a sweep: the inhibitory weight is a variable set per run (run_args), not compiled in
if sweep:
    inh = Synapses(neurons[n_e:], neurons, "w_inh : volt (shared)", on_pre="v += w_inh", delay=D)
else:
    inh = Synapses(neurons[n_e:], neurons, on_pre="v += -g*J", delay=D)
if cfg["variant"] == "in_degree":  # drawn here once: every run of the binary has this connectivity
    rng = np.random.default_rng(cfg["seeds"][0])
    for syn, n_pre in ((exc, n_e), (inh, n_i)):
        k = int(eps * n_pre)
        pre = np.concatenate([rng.choice(n_pre, k, replace=False) for _ in range(N)])
        syn.connect(i=pre, j=np.repeat(np.arange(N), k))
else:
    exc.connect(p=eps)
    inh.connect(p=eps)
ext = PoissonInput(neurons, "v", N=C_E, rate=cfg["nu_ext"] * 1e-3 / ms, weight=J)
mon = SpikeMonitor(neurons)
run(cfg["duration"] * ms)
t0 = time.perf_counter()
device.build(directory=cfg["dir"], run=False)
build_s = time.perf_counter() - t0
result = {"build_s": build_s, "runs": []}
for s in cfg["seeds"]:
    for k, g_k in enumerate(sweep or [g]):
        tag = f"{s}_g{k}" if sweep else f"{s}"
        t0 = time.perf_counter()
        device.run(results_directory=f"results_{tag}", with_output=False,
                   run_args={inh.w_inh: -g_k * J} if sweep else None)
        wall = time.perf_counter() - t0
        path = f"{cfg['out']}_{tag}.npz"
        np.savez(path, t=np.asarray(mon.t / ms), i=np.asarray(mon.i))
        result["runs"].append({"seed": s, "g": g_k, "path": path, "wall": wall})
print(json.dumps(result))
'''


def run_brian2(g, nu_ratio, n_e, seeds, duration, variant, workdir, threads=0):
    """``g`` a number: compiled in; a list: one build, its binary run once per value and seed with
    the inhibitory weight set by ``device.run(run_args=...)``."""
    sweep = list(g) if isinstance(g, (list, tuple)) else None
    cfg = {"g": sweep[0] if sweep else g, "g_values": sweep, "nu_ext": nu_ext_hz(nu_ratio, int(0.1 * n_e)),
           "n_e": n_e, "seeds": list(seeds), "duration": duration, "variant": variant, "threads": threads,
           "dir": str(Path(workdir) / f"b2_{variant}"), "out": str(Path(workdir) / f"b2_{variant}")}
    script = Path(workdir) / "brunel_brian2.py"
    script.write_text(brian2_worker_source())
    proc = subprocess.run([str(PEER_PYTHON), str(script), json.dumps(cfg)], capture_output=True, text=True,
                          cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"Brian2 worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- table


def summarise(rows):
    """mean +- sd and min..max of each statistic over seeds."""
    out = {}
    for key in ("rate", "isi_cv", "pop_cv"):
        vals = np.array([r[key] for r in rows])
        out[key] = (vals.mean(), vals.std(ddof=1) if vals.size > 1 else 0.0, vals.min(), vals.max())
    return out


def print_table(results):
    print("| simulator / variant | seeds | rate (Hz) | ISI CV | pop-rate CV (1 ms) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        s = summarise(rows)
        cells = [f"{m:.3g} ± {sd:.2g} ({lo:.3g}–{hi:.3g})" if k == "rate" else
                 f"{m:.3f} ± {sd:.3f} ({lo:.3f}–{hi:.3f})" for k, (m, sd, lo, hi) in s.items()]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="B")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1000.0, help="ms (default 1000)")
    parser.add_argument("--t-start", type=float, default=200.0, help="start of the analysis window, ms")
    parser.add_argument("--n-e", type=int, default=10000, help="excitatory neurons (N_I = N_E / 4)")
    parser.add_argument("--variants", default="baseline", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--brian2-variants", default="baseline",
                        help=f"comma-separated, of {', '.join(BRIAN2_VARIANTS)}; 'none' skips Brian2")
    parser.add_argument("--quick", action="store_true", help="N_E = 2000, 2 seeds, 400 ms: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write every run's statistics to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_e, args.seeds, args.duration, args.t_start = 2000, 2, 400.0, 100.0
    g, nu_ratio = REGIMES[args.regime]
    seeds = list(range(1, args.seeds + 1))
    results, raw = {}, {}
    for variant in [v for v in args.variants.split(",") if v]:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
        rows = []
        for s in seeds:
            t, i, n, wall = run_spikeforge(g, nu_ratio, args.n_e, s, args.duration, **VARIANTS[variant])
            row = spike_statistics(t, i, n, args.t_start, args.duration)
            row.update(seed=s, wall_s=wall)
            rows.append(row)
            print(f"spikeforge {variant} seed {s}: {row}", file=sys.stderr, flush=True)
        results[f"spikeforge {variant}"] = rows
    b2_variants = [v for v in args.brian2_variants.split(",") if v and v != "none"]
    if b2_variants and not PEER_PYTHON.exists():
        print(f"(Brian2 skipped: no peer environment at {PEER_PYTHON}; bash benchmarks/setup_peers.sh)",
              file=sys.stderr)
        b2_variants = []
    with tempfile.TemporaryDirectory(prefix="brunel_b2_") as work:
        for variant in b2_variants:
            if variant not in BRIAN2_VARIANTS:
                parser.error(f"unknown Brian2 variant {variant!r} (known: {', '.join(BRIAN2_VARIANTS)})")
            info = run_brian2(g, nu_ratio, args.n_e, seeds, args.duration, variant, work)
            rows = []
            for run in info["runs"]:
                data = np.load(run["path"])
                row = spike_statistics(data["t"], data["i"], args.n_e + args.n_e // 4, args.t_start, args.duration)
                row.update(seed=run["seed"], wall_s=run["wall"])
                rows.append(row)
                print(f"brian2 {variant} seed {run['seed']}: {row}", file=sys.stderr, flush=True)
            results[f"Brian2 {variant}"] = rows
    print(f"\nBrunel 2000 regime {args.regime} (g = {g:g}, nu_ext = {nu_ratio:g} nu_thr), N_E = {args.n_e}, "
          f"N_I = {args.n_e // 4}, {args.duration:g} ms, statistics over [{args.t_start:g}, {args.duration:g}] ms; "
          "mean ± sd over seeds (min–max)\n")
    print_table(results)
    if args.json:
        raw = {"regime": args.regime, "n_e": args.n_e, "duration": args.duration, "t_start": args.t_start,
               "results": results}
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
