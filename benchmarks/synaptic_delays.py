"""What per-synapse (dendritic) delays cost against one projection-wide delay.

CUBA (Vogels & Abbott, Brian2's example: 4,000 LIF neurons, 80 synapses per neuron, float,
dt = 0.1 ms) on the cpu backend, every projection delayed:

* ``wide``: ``delay=0.5`` (ms) for the projection, the fast path (the spike queue waits);
* ``per-synapse, equal``: ``delay="0.5"``, one value per synapse, all 5 steps: the same
  spikes as ``wide`` bit for bit (the script checks the counts), so the difference is the
  cost of the dendritic buffer alone (a delay read and a slot per synapse event, and the
  neuron update emptying one slot per step);
* ``per-synapse, drawn``: ``delay="0.1 + 0.9*rand()"`` with ``max_delay=1`` (1 to 10 steps):
  other dynamics, shown for its rate.

Each configuration is built once; the runs are interleaved ``--repeats`` times in one
process and the fastest is kept (the machine is shared), so the ratio is measured in the
same run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def cuba(delay, n: int, batch: int, seed: int = 42, max_delay=None):
    from spikeforge import models as m
    from spikeforge.network import FixedProbability, Network

    net = Network("cuba_delays", dt=0.1, batch_size=batch, seed=seed)
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)
    n_exc = n * 4 // 5
    for pop, size in (("exc", n_exc), ("inh", n - n_exc)):
        net.add_population(pop, size, m.LIF, params=lif, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    extra = {} if max_delay is None else {"max_delay": max_delay}
    for pre, w, tau in (("exc", 1.62, 5.0), ("inh", -9.0, 10.0)):
        for post in ("exc", "inh"):
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(80.0 / n),
                               wu_params={"w": w}, ps_params={"tau_syn": tau}, delay=delay, **extra)
    return net


CONFIGS = {
    "wide: delay=0.5": dict(delay=0.5),
    "per-synapse, equal: delay=\"0.5\"": dict(delay="0.5"),
    "per-synapse, drawn: delay=\"0.1 + 0.9*rand()\", max_delay=1": dict(delay="0.1 + 0.9*rand()", max_delay=1.0),
}


def main(argv=None) -> int:
    parser = C.common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="neurons (default 4000)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--duration", type=float, default=1000.0, help="ms per run (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per configuration (default 5)")
    args = C.finish_args(parser.parse_args(argv))
    if args.quick:
        args.n, args.duration, args.repeats = 400, 50.0, 1
    steps = round(args.duration / 0.1)
    sims, builds = {}, {}
    with C.fresh_cache_dir() as cache:
        os.environ["SPIKEFORGE_CACHE_DIR"] = cache
        for label, cfg in CONFIGS.items():
            t0 = time.perf_counter()
            sims[label] = cuba(n=args.n, batch=args.batch, **cfg).build("cpu")
            builds[label] = time.perf_counter() - t0
        best = {label: float("inf") for label in CONFIGS}
        spikes = {}
        for _ in range(args.repeats):
            for label, sim in sims.items():
                sim.reset()
                t0 = time.perf_counter()
                sim.run(steps=steps)
                best[label] = min(best[label], time.perf_counter() - t0)
                spikes[label] = sum(sim.spike_counts().values())
    labels = list(CONFIGS)
    wide = best[labels[0]]
    same = spikes[labels[0]] == spikes[labels[1]]
    rows = [[label, C.fmt(best[label], 3), C.fmt(best[label] / wide, 2) + "x", C.fmt(builds[label], 2),
             f"{spikes[label] / args.n / (args.duration / 1000.0) / args.batch:.1f}"] for label in labels]
    C.print_table(["delay", f"run s ({args.duration:g} ms, best of {args.repeats})", "vs wide", "build s",
                   "rate Hz"], rows)
    print(f"equal per-synapse delays give the projection-wide delay's spike count: {'yes' if same else 'NO'}")
    print(C.describe_machine(C.machine_info()))
    if args.json:
        C.write_json(args.json, {"best_run_s": best, "build_s": builds, "spikes": spikes, "same_spikes": same,
                                 "n": args.n, "batch": args.batch, "duration_ms": args.duration})
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
