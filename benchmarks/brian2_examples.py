"""The Brian2 ports of examples/brian2/, spikeforge and Brian2 side by side over seeds.

For each example, spikeforge runs the YAML file (loaded as ``spikeforge run`` loads it, with the
seed overridden) and Brian2 2.9 (the peer environment, benchmarks/.env) runs a script of the same
model in C++ standalone mode: benchmarks/brian2_ports/<example>.py, or for the four Brunel (2000)
regimes the Brian2 network of benchmarks/brunel_regime_b.py. Brian2's standalone binary is built
once per example and run once per seed; it seeds itself from the operating system, so its runs are
independent samples. Both sides are analysed by the same code.

Statistics, over the window [t_start, duration] (ms; per example in EXAMPLES):

* ``rate`` (all recorded neurons) and ``rate <population>``: spikes / (neurons x window), Hz;
* ``ISI CV``: per neuron std / mean of its inter-spike intervals (neurons with >= 2 ISIs in the
  window), averaged over neurons; ``pop-rate CV``: std / mean of the population spike count in
  1 ms bins (the definitions of brunel_regime_b.spike_statistics, reused here);
* STDP (Song et al. 2000): the final weights as fractions of the synapses in 10 bins of w / gmax
  over [0, 1] (the last bin holds w = gmax), their mean w / gmax and the fraction in the two outer
  bins (w < 0.1 gmax or w >= 0.9 gmax), a measure of how bimodal the distribution has become;
* gap junctions (deterministic): the membrane potential of every neuron at every step, compared
  step by step (spikeforge records at the end of a step, Brian2 at the start of the next one: the
  same instant), and the spike times.

Verdict (the rule, applied to every statistic of a stochastic example): with Brian2's values over
its n seeds having minimum lo, maximum hi and standard error se = sd / sqrt(n) (sd with ddof = 1),
the statistic is **inside** when the mean of spikeforge's values over its seeds lies in
[lo - se, hi + se], and **OUTSIDE** otherwise; se is at least 1e-9 x max(|lo|, |hi|), as the
deterministic example's statistics are equal on both sides up to rounding. (A single seed's value
would fall outside the min-max of 5 other seeds one time in three even for identical simulators;
the mean over seeds is what the widened range can judge.) The rule has false alarms: for two
identical simulators with normally distributed statistics, the mean of 5 seeds falls outside the
other's widened range of 5 seeds with probability 0.06 (simulated), so among the ~45 statistics
here about 3 are expected OUTSIDE by chance; with 10 seeds the probability is 0.004, with 20 below
1e-4. A statistic outside at 5 seeds is therefore run again with ``--seeds 20``: a systematic
difference stays outside, chance does not. The deterministic gap-junction example is **inside** when the
largest |v_spikeforge - v_Brian2| over all neurons and steps is <= 1e-6 and the spike times agree.

    python benchmarks/brian2_examples.py                           # everything, 5 seeds (9-35 min)
    python benchmarks/brian2_examples.py --examples cobahh,gap_junctions --seeds 3
    python benchmarks/brian2_examples.py --quick                   # smoke run: small examples, no Brian2
    python benchmarks/brian2_examples.py --from-json a.json b.json   # one table from saved runs, judged again
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import PEER_PYTHON, common_parser, describe_machine, machine_info, print_table, run_json, write_json
from brunel_regime_b import REGIMES, spike_statistics
from brunel_regime_b import run_brian2 as run_brunel_brian2

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE.parent / "examples" / "brian2"
PORTS_DIR = HERE / "brian2_ports"
TRACE_TOLERANCE = 1e-6
ROUNDING = 1e-9  # relative: identical values of a deterministic example differ in the last bits
WEIGHT_BINS = 10


@dataclass(frozen=True)
class Example:
    populations: tuple[str, ...]  # spiking populations analysed, in Brian2's neuron order
    duration: float  # ms, default run length
    t_start: float  # ms, start of the analysis window
    note: str = ""  # why the duration differs from the YAML file's, if it does
    kind: str = "spiking"  # 'spiking', 'stdp' (final weights too) or 'deterministic' (traces)


EXAMPLES = {
    "cobahh": Example(("exc", "inh"), 1000.0, 100.0),
    "brunel2000_A": Example(("exc", "inh"), 600.0, 200.0),
    **{f"brunel2000_{r}": Example(("exc", "inh"), 700.0, 200.0, "700 ms (file: 1200): 40 runs of 12,500 neurons "
                                  "on the shared 2-core machine") for r in "BCD"},
    "izhikevich2003": Example(("exc", "inh"), 1000.0, 100.0),
    "stdp_song2000": Example(("neuron",), 100000.0, 0.0, "100 s (file: 10 s), as Song et al. and Brian2's "
                             "example: the weights need it to become bimodal", kind="stdp"),
    "gap_junctions": Example(("neurons",), 500.0, 0.0, kind="deterministic"),
    "nmda": Example(("neurons",), 5000.0, 100.0, "5 s (file: 1 s): its 20 neurons share the same 100 inputs, so "
                    "a run is one sample of the input; a longer one narrows the spread over seeds"),
}
QUICK_EXAMPLES = ("gap_junctions", "nmda", "stdp_song2000")
QUICK_DURATION = 50.0


# --------------------------------------------------------------------------- spikeforge


def run_spikeforge(name: str, seed: int, duration: float) -> dict:
    """Run examples/brian2/<name>.yaml with ``seed``; spikes pooled in ``populations`` order (ids
    offset like Brian2's single group), plus final weights or traces where the example has them."""
    from spikeforge.config import load_file

    example = EXAMPLES[name]
    net, cfg = load_file(EXAMPLES_DIR / f"{name}.yaml", seed=seed)
    t0 = time.perf_counter()
    sim = net.build()
    cfg.apply_inputs(sim)
    sim.run(duration=duration)
    wall = time.perf_counter() - t0
    times, ids, offset = [], [], 0
    for pop in example.populations:
        (t, i), = sim.spikes(pop)
        times.append(t)
        ids.append(i + offset)
        offset += net.populations[pop].size
    out = {"t": np.concatenate(times), "i": np.concatenate(ids), "wall": wall}
    if example.kind == "stdp":
        out["w"] = np.asarray(sim.get("input_neuron", "w"), float).ravel()
    if example.kind == "deterministic":
        pop = example.populations[0]
        out["v"] = sim.recorded(pop, "v")[:, 0, :]  # (steps, neurons), the end of each step
    sim.close()
    return out


# --------------------------------------------------------------------------- Brian2 (peer venv)


def run_brian2(name: str, seeds: list[int], duration: float, workdir: str) -> list[dict]:
    """Brian2's runs of example ``name``, one per seed, as dicts like :func:`run_spikeforge`'s."""
    if name.startswith("brunel2000_"):
        g, nu_ratio = REGIMES[name[-1]]
        info = run_brunel_brian2(g, nu_ratio, 10000, seeds, duration, "baseline", workdir)
    else:
        cfg = {"seeds": seeds, "duration": duration, "dir": str(Path(workdir) / f"b2_{name}"),
               "out": str(Path(workdir) / name)}
        info = run_json([str(PEER_PYTHON), str(PORTS_DIR / f"{name}.py"), json.dumps(cfg)], cwd=workdir)
    runs = []
    for run in info["runs"]:
        data = dict(np.load(run["path"]))
        data["wall"] = run["wall"]
        if "v" in data:
            data["v"] = data["v"].T  # Brian2 keeps (neurons, steps)
        runs.append(data)
    return runs


# --------------------------------------------------------------------------- statistics


def statistics(name: str, run: dict, sizes: dict[str, int], t_start: float, duration: float) -> dict[str, float]:
    """The statistics of one run over [t_start, duration] (see the module docstring), by name."""
    example = EXAMPLES[name]
    n_all = sum(sizes[p] for p in example.populations)
    base = spike_statistics(run["t"], run["i"], n_all, t_start, duration)
    stats = {"rate (Hz)": base["rate"]}
    if len(example.populations) > 1:
        offset = 0
        for pop in example.populations:
            mine = (run["i"] >= offset) & (run["i"] < offset + sizes[pop])
            stats[f"rate {pop} (Hz)"] = spike_statistics(run["t"][mine], run["i"][mine] - offset, sizes[pop],
                                                         t_start, duration)["rate"]
            offset += sizes[pop]
    stats["ISI CV"] = base["isi_cv"]
    if n_all >= 10:
        stats["pop-rate CV (1 ms)"] = base["pop_cv"]
    if example.kind == "stdp":
        w = run["w"] / 0.01  # w / gmax
        counts = np.histogram(np.clip(w, 0.0, 1.0), bins=WEIGHT_BINS, range=(0.0, 1.0))[0] / w.size
        stats["mean w/gmax"] = float(w.mean())
        stats["outer fraction (w<0.1 or >=0.9 gmax)"] = float(counts[0] + counts[-1])
        for k, c in enumerate(counts):
            close = "]" if k == WEIGHT_BINS - 1 else ")"
            stats[f"w/gmax in [{k / WEIGHT_BINS:.1f}, {(k + 1) / WEIGHT_BINS:.1f}{close}"] = float(c)
    return stats


def judge(sf_values, b2_values) -> tuple[str, tuple[float, float]]:
    """The verdict of the module docstring: spikeforge's mean inside Brian2's [min - se, max + se]?"""
    sf, b2 = np.asarray(sf_values, float), np.asarray(b2_values, float)
    if b2.size == 0 or np.isnan(sf).any() or np.isnan(b2).any():
        return "-", (float("nan"), float("nan"))
    se = b2.std(ddof=1) / np.sqrt(b2.size) if b2.size > 1 else 0.0
    se = max(se, ROUNDING * max(abs(b2.min()), abs(b2.max())))
    lo, hi = b2.min() - se, b2.max() + se
    return ("inside" if lo <= sf.mean() <= hi else "OUTSIDE"), (float(lo), float(hi))


def trace_comparison(sf_runs: list[dict], b2_runs: list[dict]) -> dict:
    """Deterministic example: the largest |v| difference and whether the spike times agree."""
    worst, same_spikes = 0.0, True
    for sf in sf_runs:
        for b2 in b2_runs:
            steps = min(len(sf["v"]), len(b2["v"]) - 1)
            worst = max(worst, float(np.abs(sf["v"][:steps] - b2["v"][1:steps + 1]).max()))
            same_spikes &= (len(sf["t"]) == len(b2["t"]) and bool(np.allclose(np.sort(sf["t"]), np.sort(b2["t"]))))
    return {"max |dv|": worst, "spikes agree": same_spikes, "spikes": int(len(sf_runs[0]["t"])),
            "verdict": "inside" if worst <= TRACE_TOLERANCE and same_spikes else "OUTSIDE"}


def _spread(values) -> str:
    v = np.asarray(values, float)
    if v.size == 0 or np.isnan(v).all():
        return "-"
    if np.isnan(v).any():
        return f"{np.nanmean(v):.4g} ({np.isnan(v).sum()} of {v.size} seeds undefined)"
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return f"{v.mean():.4g} ± {sd:.2g} ({v.min():.4g}–{v.max():.4g})"


# --------------------------------------------------------------------------- main


def compare(name: str, seeds: list[int], duration: float, t_start: float, with_brian2: bool, workdir: str) -> dict:
    from spikeforge.config import load_file

    net, _ = load_file(EXAMPLES_DIR / f"{name}.yaml")
    sizes = {p: net.populations[p].size for p in EXAMPLES[name].populations}
    sf_runs = []
    for s in seeds:
        sf_runs.append(run_spikeforge(name, s, duration))
        print(f"  spikeforge {name} seed {s}: {sf_runs[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    b2_runs = run_brian2(name, seeds, duration, workdir) if with_brian2 else []
    for run in b2_runs:
        print(f"  Brian2 {name}: run {run['wall']:.1f} s", file=sys.stderr, flush=True)
    sf_stats = [statistics(name, r, sizes, t_start, duration) for r in sf_runs]
    b2_stats = [statistics(name, r, sizes, t_start, duration) for r in b2_runs]
    rows = []
    for key in sf_stats[0]:
        sf_vals = [s[key] for s in sf_stats]
        b2_vals = [s[key] for s in b2_stats]
        rows.append({"statistic": key, "spikeforge": sf_vals, "brian2": b2_vals})
    result = {"example": name, "duration": duration, "t_start": t_start, "seeds": seeds,
              "rows": rows, "spikeforge_wall_s": [r["wall"] for r in sf_runs],
              "brian2_wall_s": [r["wall"] for r in b2_runs]}
    if EXAMPLES[name].kind == "deterministic" and with_brian2:
        result["traces"] = trace_comparison(sf_runs, b2_runs)
    return result


def print_results(results: list[dict]) -> None:
    table = []
    for res in results:
        label = f"{res['example']} ({res['duration']:g} ms, from {res['t_start']:g})"
        for k, row in enumerate(res["rows"]):
            table.append([label if k == 0 else "", row["statistic"], _spread(row["spikeforge"]),
                          _spread(row["brian2"]),
                          "-" if np.isnan(row["range"][0]) else f"{row['range'][0]:.4g}–{row['range'][1]:.4g}",
                          row["verdict"]])
        if "traces" in res:
            tr = res["traces"]
            table.append(["", "v traces, all neurons and steps", f"max abs diff {tr['max |dv|']:.2g}",
                          f"{tr['spikes']} spikes, {'same' if tr['spikes agree'] else 'DIFFERENT'} times",
                          f"<= {TRACE_TOLERANCE:g}", tr["verdict"]])
    print_table(["example (window)", "statistic", "spikeforge: mean ± sd (min–max)", "Brian2: mean ± sd (min–max)",
                 "Brian2 min − se … max + se", "verdict"], table, align="llllll")
    notes = [f"{n}: {EXAMPLES[n].note}" for n in dict.fromkeys(r["example"] for r in results)
             if EXAMPLES[n].note and any(r["duration"] == EXAMPLES[n].duration for r in results if r["example"] == n)]
    if notes:
        print("\nDurations: " + "; ".join(notes))


def main(argv=None):
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--examples", default=",".join(EXAMPLES), help="comma-separated, of " + ", ".join(EXAMPLES))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per simulator (default 5)")
    parser.add_argument("--duration", type=float, help="ms, for every example (default: each example's, see "
                                                       "EXAMPLES; the window starts at its t_start or 0)")
    parser.add_argument("--no-brian2", action="store_true", help="spikeforge only (no verdicts)")
    parser.add_argument("--from-json", nargs="+", metavar="FILE",
                        help="run nothing: print one table from the --json files of earlier runs, judged again")
    args = parser.parse_args(argv)
    if args.from_json:
        return report([r for f in args.from_json for r in json.loads(Path(f).read_text())["results"]], args.json)
    names = [n for n in args.examples.split(",") if n]
    if args.quick:
        names = [n for n in names if n in QUICK_EXAMPLES] if args.examples != parser.get_default("examples") \
            else list(QUICK_EXAMPLES)
        args.seeds, args.duration, args.no_brian2 = 2, QUICK_DURATION, True
    for n in names:
        if n not in EXAMPLES:
            parser.error(f"unknown example {n!r} (known: {', '.join(EXAMPLES)})")
    with_brian2 = not args.no_brian2
    if with_brian2 and not PEER_PYTHON.exists():
        print(f"(Brian2 skipped: no peer environment at {PEER_PYTHON}; bash benchmarks/setup_peers.sh)",
              file=sys.stderr)
        with_brian2 = False
    seeds = list(range(1, args.seeds + 1))
    info = machine_info()
    print(describe_machine(info) + "\n")
    results = []
    with tempfile.TemporaryDirectory(prefix="brian2_examples_") as work:
        for name in names:
            example = EXAMPLES[name]
            duration = args.duration if args.duration is not None else example.duration
            t_start = example.t_start if example.t_start < duration else 0.0
            print(f"{name}: {len(seeds)} seeds, {duration:g} ms", file=sys.stderr, flush=True)
            results.append(compare(name, seeds, duration, t_start, with_brian2, work))
    report(results, args.json, info)


def report(results: list[dict], json_path=None, info=None) -> None:
    """Judge every statistic (again), print the table and the statistics outside Brian2's spread."""
    for res in results:
        for row in res["rows"]:
            row["verdict"], row["range"] = judge(row["spikeforge"], row["brian2"])
    with_brian2 = any(row["brian2"] for res in results for row in res["rows"])
    seeds = sorted({len(res["seeds"]) for res in results})
    print(f"\nBrian2 examples side by side, {'/'.join(map(str, seeds))} seeds each; verdict: the spikeforge mean "
          "inside Brian2's [min − se, max + se] (se = sd/√n over Brian2's seeds)\n")
    print_results(results)
    outside = [(r["example"], row["statistic"]) for r in results for row in r["rows"] if row["verdict"] == "OUTSIDE"]
    outside += [(r["example"], "traces") for r in results if r.get("traces", {}).get("verdict") == "OUTSIDE"]
    if with_brian2:
        print(f"\n{len(outside)} statistic(s) outside Brian2's spread" + (": " + ", ".join(
            f"{e} {s}" for e, s in outside) if outside else ""))
    if json_path:
        write_json(json_path, {"machine": info, "results": results, "outside": outside})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
