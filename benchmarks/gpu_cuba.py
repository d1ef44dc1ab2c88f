"""CUBA on the GPU (backend ``cuda``): batch scaling, size scaling, host cost per step.

Three parts (``--parts``, default all), each in this one process, one configuration
after the other (every Simulation is closed before the next is built):

* ``batch``: CUBA, 4000 neurons (``--n``), ``--duration`` s of biological time (default
  1 s = 10,000 steps) at batch 1, 64, 512 (``--batches``): wall time, time per step,
  cost per batch instance, and the wall time at each batch relative to batch 1. The
  claim to check: on a GPU the wall time stays nearly constant as the batch grows,
  until the GPU is full (ratio ~1). Measured twice: with no recording (the kernels
  alone; min of ``--repeats`` runs) and with all spikes recorded, as the other CUBA
  benchmarks do: the recording buffers are pulled to the host and decoded every 1000
  steps, which costs host time per step and instance, so these runs last
  ``--record-duration`` (default 0.1 s = one recording chunk; min of ``--record-repeats``).
* ``size``: CUBA with 4k, 40k, 400k, 4M neurons (``--sizes``) at batch 1,
  ``cuba_network(n=N)``, i.e. connection probability 80/N as in ``size_scaling.py``, so
  every neuron keeps ~80 synapses. Reported apart: network construction (drawing the
  connectivity, on the host), build (``Simulation.build_seconds``: codegen, nvcc or
  cache, module load, allocation and upload) and run. The run is timed without spike
  recording (the GPU work); a second build with all spikes recorded runs
  ``--rate-duration`` s (default 0.1 s = one recording chunk) to get the firing rate
  (a check that the GPU simulates the right network) and the cost of recording. A
  size whose state does not fit in GPU memory is skipped with the backend's message
  (the ``cuda`` backend checks before allocating anything).
* ``host``: the host's CPU time per simulated step during ``run()`` (``time.process_time``
  over the run / steps; target <= 10 µs), for a tiny CUBA network (200 neurons, launch
  overhead dominates) and for CUBA 4000, batch 1. Columns: wall per step, CPU per
  step, the part of it spent inside ``_synchronise`` (waiting for the GPU: with the
  CUDA default scheduling the driver spin-waits, so waiting costs CPU time) and the CPU
  time outside it (launches, recording). Variants on ``cuda``: without recording,
  without CUDA graphs (``use_graphs=False``: one launch per kernel per step), and with
  the wait done on a blocking-sync event (patched in by this script, not spikeforge's
  own behaviour: it shows what a blocking wait would save).

``--backend cuda-emu`` or ``cpu`` run the same code (with ``--quick``: a smoke run on a
machine without a GPU; the numbers then mean nothing). The GPU (name, memory, compute
capability, driver and CUDA versions) is printed and stored in the JSON.

    python benchmarks/gpu_cuba.py [--parts batch size host] [--json gpu_cuba.json]
    python benchmarks/gpu_cuba.py --quick --backend cuda-emu
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    LoadMeter,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    fmt_load,
    fmt_s,
    machine_info,
    print_table,
    rss_mb,
    verdict,
    write_json,
)

PARTS = ("batch", "size", "host")
HOST_TARGET_S = 10e-6  # host CPU time per simulated step
TINY_N = 200  # the tiny network of the host part (cuba_network needs n >= 80: p = 80 / n)


# --------------------------------------------------------------------------- the GPU


def _nvidia_smi() -> dict:
    fields = "name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.max.mem,power.limit,pstate"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[-300:]}
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    return dict(zip(fields.split(","), (v.strip() for v in first.split(","))))


def gpu_info() -> dict:
    """The CUDA GPU (device 0) as pycuda and nvidia-smi see it, and the nvcc in use;
    ``available: False`` with the reason where there is none."""
    info: dict = {}
    try:
        from spikeforge.runtime.nvcc import find_nvcc, nvcc_identity

        info["nvcc"] = nvcc_identity(find_nvcc())
    except Exception as exc:
        info["nvcc"] = f"not found ({exc})"
    try:
        from spikeforge.runtime.cuda import import_pycuda

        drv = import_pycuda()
    except Exception as exc:
        info.update(available=False, reason=str(exc))
        return info
    import pycuda

    dev = drv.Device(0)
    major, minor = dev.compute_capability()
    drv_version = drv.get_driver_version()  # e.g. 13000: the CUDA version the driver supports
    attrs = {}
    for name in ("MULTIPROCESSOR_COUNT", "L2_CACHE_SIZE", "GLOBAL_MEMORY_BUS_WIDTH", "MEMORY_CLOCK_RATE",
                 "CLOCK_RATE"):
        try:
            attrs[name.lower()] = int(dev.get_attribute(getattr(drv.device_attribute, name)))
        except Exception:  # some attributes are gone from newer drivers
            pass
    info.update(
        available=True,
        name=dev.name(),
        devices=drv.Device.count(),
        memory_gib=round(dev.total_memory() / 2**30, 2),
        compute_capability=f"{major}.{minor}",
        driver_cuda_version=f"{drv_version // 1000}.{drv_version % 1000 // 10}",
        pycuda=getattr(pycuda, "VERSION_TEXT", "?"),
        pycuda_cuda_version=".".join(str(v) for v in drv.get_version()),
        attributes=attrs,
        nvidia_smi=_nvidia_smi(),
    )
    return info


def describe_gpu(info: dict) -> str:
    lines = [f"nvcc:     {info.get('nvcc', '?')}"]
    if not info.get("available"):
        lines.insert(0, f"GPU:      none ({info.get('reason', '?')})")
        return "\n".join(lines)
    smi = info.get("nvidia_smi", {})
    lines.insert(0, f"GPU:      {info['name']}, {info['memory_gib']} GiB, compute capability "
                    f"{info['compute_capability']}, {info['attributes'].get('multiprocessor_count', '?')} SMs; "
                    f"driver {smi.get('driver_version', '?')} (CUDA {info['driver_cuda_version']}); "
                    f"pycuda {info['pycuda']} (built for CUDA {info['pycuda_cuda_version']})")
    return "\n".join(lines)


def gpu_memory(sim) -> dict:
    """Free/total device memory while ``sim`` (backend cuda) holds its state; {} elsewhere."""
    drv = getattr(sim.backend, "drv", None)
    if drv is None:
        return {}
    try:
        free, total = drv.mem_get_info()
    except Exception:
        return {}
    return {"gpu_free_mib": free / 2**20, "gpu_used_mib": (total - free) / 2**20}


# --------------------------------------------------------------------------- measuring


class SyncMeter:
    """Replaces ``backend._synchronise`` (where the backend has one) by a wrapper that
    adds up the wall and CPU time spent waiting in it; ``blocking=True`` (cuda only)
    waits on a blocking-sync event instead of ``stream.synchronize()``."""

    def __init__(self, backend, blocking: bool = False):
        self.wall = self.cpu = 0.0
        self.calls = 0
        self.active = hasattr(backend, "_synchronise")
        if not self.active:
            return
        wait = backend._synchronise
        if blocking:
            drv = backend.drv
            event = drv.Event(drv.event_flags.BLOCKING_SYNC | drv.event_flags.DISABLE_TIMING)

            def wait():
                event.record(backend.stream)
                event.synchronize()

        def timed():
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                wait()
            finally:
                self.cpu += time.process_time() - c0
                self.wall += time.perf_counter() - w0
                self.calls += 1

        backend._synchronise = timed

    def clear(self):
        self.wall = self.cpu = 0.0
        self.calls = 0


def state_mib(sim) -> float | None:
    try:
        from spikeforge.runtime.cuda import state_bytes

        return state_bytes(sim.spec, sim.batch_size) / 2**20
    except Exception:
        return None


def build(net, args, record: bool = True, **options):
    """``net.build`` on ``args.backend`` with spike recording switched on or off."""
    for pop in net.populations.values():
        pop.record_spikes = record
    if args.threads is not None and args.backend != "cuda":
        options["threads"] = args.threads
    t0 = time.perf_counter()
    sim = net.build(backend=args.backend, **options)
    return sim, time.perf_counter() - t0


def measure(sim, steps: int, repeats: int, warmup_steps: int, blocking: bool = False) -> dict:
    """Time ``repeats`` runs of ``steps`` steps (each after ``sim.reset()``, after a
    warm-up run of ``warmup_steps``, which also captures the CUDA graphs)."""
    meter = SyncMeter(sim.backend, blocking)
    if warmup_steps:
        sim.reset()
        sim.run(steps=warmup_steps)
    runs = []
    load = LoadMeter()
    for _ in range(max(1, repeats)):
        sim.reset()
        meter.clear()
        c0 = time.process_time()
        with load.measure():
            sim.run(steps=steps)
        cpu = time.process_time() - c0
        runs.append({"wall": sim.run_seconds, "cpu": cpu, "sync_wall": meter.wall if meter.active else None,
                     "sync_cpu": meter.cpu if meter.active else None, "sync_calls": meter.calls})
    best = min(runs, key=lambda r: r["wall"])
    out = {
        "steps": steps,
        "bio_seconds": steps * sim.dt / 1000.0,
        "run_seconds": best["wall"],
        "run_seconds_median": statistics.median(r["wall"] for r in runs),
        "run_seconds_all": [r["wall"] for r in runs],
        "per_step_seconds": best["wall"] / steps,
        "cpu_seconds": best["cpu"],
        "cpu_per_step_seconds": best["cpu"] / steps,
        "sync_cpu_per_step_seconds": None if best["sync_cpu"] is None else best["sync_cpu"] / steps,
        "host_cpu_per_step_seconds": None if best["sync_cpu"] is None else (best["cpu"] - best["sync_cpu"]) / steps,
        "sync_wall_seconds": best["sync_wall"],
        "runs": runs,
        "launches_per_step": len(getattr(sim.backend, "step_launches", [])) or None,
        **load.as_dict(),
        **gpu_memory(sim),
    }
    if sim.spec.populations and any(p["record_spikes"] for p in sim.spec.populations):
        per_b = [0] * sim.batch_size
        counts = sim.spike_counts()
        for pop in counts:
            for b, (_, ids) in enumerate(sim.spikes(pop)):
                per_b[b] += int(ids.size)
        n = sum(p["size"] for p in sim.spec.populations)
        out["total_spikes"] = int(sum(counts.values()))
        out["spikes_per_instance"] = per_b
        out["rate_hz"] = out["total_spikes"] / (n * sim.batch_size * out["bio_seconds"]) if steps else 0.0
    return out


def close(sim):
    try:
        sim.close()
    finally:
        gc.collect()


def failure(exc: BaseException) -> dict:
    from spikeforge.errors import NetworkError

    does_not_fit = (isinstance(exc, NetworkError) and "memory" in str(exc)) or type(exc).__name__ == "MemoryError"
    kind = "skipped" if does_not_fit else "failed"
    return {kind: f"{type(exc).__name__}: {exc}".strip()}


class Results:
    """The JSON document, rewritten after every measurement so that a run stopped by a
    time limit still leaves what it measured."""

    def __init__(self, path, data: dict):
        self.path = Path(path) if path else None
        self.data = data

    def save(self, final: bool = False):
        if self.path is None:
            return
        if final:
            self.data["complete"] = True
            write_json(self.path, self.data)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
            os.replace(tmp, self.path)


# --------------------------------------------------------------------------- parts


def start(args, title: str, benchmark: str, **fields) -> Results | None:
    """Print the header (title, machine, GPU) and open the results file; None (after saying
    why) when the cuda backend was asked for and cannot run here."""
    machine, gpu = machine_info(), gpu_info()
    print(title + ("  [--quick: smoke run, not a measurement]" if args.quick else ""))
    print(describe_machine(machine))
    print(describe_gpu(gpu), flush=True)
    if args.backend == "cuda" and not gpu.get("available"):
        print(f"\nthe cuda backend cannot run here: {gpu.get('reason')}")
        return None
    res = Results(args.json, {"benchmark": benchmark, "backend": args.backend, "quick": args.quick,
                              "machine": machine, "gpu": gpu, "args": dict(vars(args)), "complete": False,
                              "gpu_name": gpu.get("name") if args.backend == "cuda" else None, **fields})
    res.save()
    return res


def part_batch(args, res: Results):
    from spikeforge.networks import cuba_network

    series = {False: (steps_of(args.duration), args.repeats),
              True: (steps_of(args.record_duration), args.record_repeats)}
    out = res.data["batch"] = {"n": args.n, "batches": args.batches, "runs": [],
                               "steps": {"no recording": series[False][0], "recording": series[True][0]}}
    print(f"\n[batch] CUBA {args.n} neurons, batches {args.batches}", flush=True)
    for record in args.record_modes:
        steps, repeats = series[record]
        for batch in args.batches:
            row = {"batch": batch, "record": record}
            try:
                net = cuba_network(n=args.n, batch_size=batch, seed=args.seed)
                sim, build_wall = build(net, args, record=record)
                try:
                    row.update(measure(sim, steps, repeats, warmup_steps(args, steps, record)))
                    row.update(build_seconds=sim.build_seconds, build_wall_seconds=build_wall,
                               from_cache=bool(sim.from_cache), state_mib=state_mib(sim))
                finally:
                    close(sim)
            except Exception as exc:
                row.update(failure(exc))
            out["runs"].append(row)
            res.save()
            print(f"  recording {'on ' if record else 'off'}, batch {batch:4d}, {steps:,} steps: "
                  + (fmt_s(row["run_seconds"]) if "run_seconds" in row else " ".join(failure_of(row).values())),
                  flush=True)

    claims = []
    for record in args.record_modes:
        steps, repeats = series[record]
        runs = [r for r in out["runs"] if r["record"] == record]
        base = next((r for r in runs if r["batch"] == args.batches[0] and "run_seconds" in r), None)
        rows = []
        for r in runs:
            if "run_seconds" not in r:
                rows.append([r["batch"], *failure_of(r).values()] + [""] * 7)
                continue
            b = r["batch"]
            r["per_instance_seconds"] = r["run_seconds"] / b
            r["wall_vs_first"] = r["run_seconds"] / base["run_seconds"] if base else None
            r["per_instance_vs_first"] = (r["per_instance_seconds"] / (base["run_seconds"] / base["batch"])
                                          if base else None)
            if base and b != base["batch"]:
                claims.append(f"batch {b}: {r['wall_vs_first']:.2f}x (recording {'on' if record else 'off'})")
            rates = r.get("spikes_per_instance")
            rate = "-" if not rates else (f"{min(rates) / (args.n * r['bio_seconds']):.3g}-"
                                          f"{max(rates) / (args.n * r['bio_seconds']):.3g}")
            rows.append([b, fmt_s(r["run_seconds"]), fmt_s(r["per_step_seconds"]), fmt_s(r["per_instance_seconds"]),
                         fmt(r["wall_vs_first"], 3), fmt(r["per_instance_vs_first"], 3), rate,
                         fmt(r.get("state_mib"), 3), fmt(r.get("gpu_used_mib"), 4)])
        what = ("all spikes recorded (pulled and decoded on the host every 1000 steps)" if record
                else "no spike recording (the kernels alone)")
        print_table(["batch", "wall (min)", "per step", "per instance", f"wall vs batch {args.batches[0]}",
                     f"per instance vs batch {args.batches[0]}", "rate/instance Hz", "state MiB", "GPU used MiB"],
                    rows, title=f"Batch scaling, backend {args.backend}: CUBA {args.n} neurons, {what}, "
                                f"{steps * 0.1 / 1000:g} s biological time ({steps:,} steps), min of {repeats}")
    if claims:
        print(f"\nwall time relative to batch {args.batches[0]} (near-constant = ~1.0 until the GPU is full): "
              + "; ".join(claims))


def steps_of(seconds: float) -> int:
    """CUBA steps (dt = 0.1 ms) in ``seconds`` of biological time, at least 1."""
    return max(1, int(round(seconds * 1000.0 / 0.1)))


def warmup_steps(args, steps: int, record: bool) -> int:
    """Steps of the warm-up run: enough to capture the CUDA graphs; short with recording,
    whose host-side decoding costs as much per step in the warm-up as in the timed run."""
    try:
        from spikeforge.runtime.cuda import GRAPH_STEPS
    except ImportError:
        GRAPH_STEPS = 100
    return min(steps, GRAPH_STEPS if record else args.warmup_steps, args.warmup_steps)


def failure_of(row: dict) -> dict:
    return {k: row[k] for k in ("skipped", "failed") if k in row} or {"failed": "?"}


def part_size(args, res: Results):
    from spikeforge.networks import cuba_network

    steps = steps_of(args.duration)
    rate_steps = steps_of(args.rate_duration)
    out = res.data["size"] = {"sizes": args.sizes, "steps": steps, "rate_steps": rate_steps, "runs": []}
    print(f"\n[size] CUBA at {', '.join(f'{n:,}' for n in args.sizes)} neurons, batch 1, "
          f"{args.duration:g} s ({steps:,} steps) without recording, {args.rate_duration:g} s with", flush=True)
    for n in args.sizes:
        row: dict = {"n": n}
        out["runs"].append(row)
        try:
            t0 = time.perf_counter()
            net = cuba_network(n=n, seed=args.seed)
            row["network_seconds"] = time.perf_counter() - t0
            row["n_synapses"] = int(sum(p.n_synapses for p in net.projections.values()))
            row["host_rss_mib"] = rss_mb()
            print(f"  {n:>11,} neurons: network {fmt_s(row['network_seconds'])} "
                  f"({row['n_synapses']:,} synapses)", flush=True)
            res.save()
            sim, build_wall = build(net, args, record=False)
            try:
                row["build_seconds"], row["build_wall_seconds"] = sim.build_seconds, build_wall
                row["from_cache"], row["state_mib"] = bool(sim.from_cache), state_mib(sim)
                row["run"] = measure(sim, steps, args.repeats, warmup_steps(args, steps, False))
            finally:
                close(sim)
            print(f"      run {fmt_s(row['run']['run_seconds'])} (build {fmt_s(row['build_seconds'])})", flush=True)
            res.save()
            if args.rate_duration > 0:
                sim, _ = build(net, args, record=True)
                try:
                    row["recorded"] = measure(sim, rate_steps, 1, warmup_steps(args, rate_steps, True))
                finally:
                    close(sim)
                print(f"      recorded run of {rate_steps} steps {fmt_s(row['recorded']['run_seconds'])}, "
                      f"rate {row['recorded']['rate_hz']:.3g} Hz", flush=True)
        except Exception as exc:
            row.update(failure(exc))
            print(f"      {next(iter(failure_of(row).items()))[0]}: {next(iter(failure_of(row).values()))}",
                  flush=True)
        finally:
            net = None
            gc.collect()
        res.save()

    rows, notes, ref = [], [], None
    for r in out["runs"]:
        run, rec = r.get("run"), r.get("recorded")
        if run is None:
            kind = next(iter(failure_of(r)))
            rows.append([f"{r['n']:,}", fmt(r.get("n_synapses")), fmt_s(r.get("network_seconds")),
                         fmt_s(r.get("build_seconds")), f"{kind} (below)"] + [""] * 8)
            notes.append(f"{r['n']:,} neurons {kind}: {failure_of(r)[kind]}")
            continue
        per_bio = run["run_seconds"] / run["bio_seconds"]
        per_neuron_s = per_bio / r["n"]
        ref = ref or per_neuron_s
        r["per_bio_second"], r["per_neuron_second"], r["vs_smallest"] = per_bio, per_neuron_s, per_neuron_s / ref
        rate = rec.get("rate_hz") if rec else None
        events = rate * r["n"] * run["bio_seconds"] * r["n_synapses"] / r["n"] if rate else None
        r["ns_per_event"] = run["run_seconds"] / events * 1e9 if events else None
        r["recording_per_step_seconds"] = rec["per_step_seconds"] - run["per_step_seconds"] if rec else None
        rows.append([f"{r['n']:,}", f"{r['n_synapses']:,}", fmt_s(r["network_seconds"]),
                     fmt_s(r["build_seconds"]) + (" (cached)" if r["from_cache"] else ""),
                     fmt_s(run["run_seconds"]), fmt_s(run["per_step_seconds"]), fmt(per_bio, 3),
                     fmt(per_neuron_s * 1e9, 3), fmt(r["vs_smallest"], 3), fmt(rate, 3), fmt(r["ns_per_event"], 3),
                     fmt_s(rec["per_step_seconds"]) if rec else "-", fmt(r["state_mib"], 4)])
    print_table(["neurons", "synapses", "network (host)", "build", "run (min)", "per step", "x real time",
                 "ns per neuron-s", "vs smallest", "rate Hz", "ns/event", "per step recorded", "state MiB"], rows,
                title=f"Size scaling, backend {args.backend}: batch 1, {args.duration:g} s biological time without "
                      f"spike recording (min of {args.repeats}); "
                      + (f"'rate' and 'per step recorded': a run of {rate_steps} steps with all spikes recorded; "
                         if args.rate_duration > 0 else "no run with recording (--rate-duration 0); ")
                      + "'x real time': run seconds per biological second")
    for note in notes:
        print(f"\n{note}")


def part_host(args, res: Results):
    from spikeforge.networks import cuba_network

    steps = steps_of(args.host_duration)
    out = res.data["host"] = {"steps": steps, "target_seconds": HOST_TARGET_S, "runs": []}
    variants = [("default", True, {}, False), ("no recording", False, {}, False)]
    if args.backend == "cuda":
        variants += [("no CUDA graphs", True, {"use_graphs": False}, False),
                     ("blocking wait (patched)", True, {}, True)]
    print(f"\n[host] CPU time per step, {steps:,} steps, networks of {args.host_sizes} neurons", flush=True)
    for n in args.host_sizes:
        for label, record, options, blocking in variants:
            row = {"n": n, "variant": label, "record": record, **options, "blocking_wait": blocking}
            try:
                net = cuba_network(n=n, seed=args.seed)
                sim, _ = build(net, args, record=record, **options)
                try:
                    row.update(measure(sim, steps, args.repeats, warmup_steps(args, steps, record),
                                       blocking=blocking))
                finally:
                    close(sim)
            except Exception as exc:
                row.update(failure(exc))
            out["runs"].append(row)
            res.save()
    rows = []
    for r in out["runs"]:
        if "run_seconds" not in r:
            rows.append([f"{r['n']:,}", r["variant"], *failure_of(r).values()] + [""] * 6)
            continue
        r["target_met"] = r["cpu_per_step_seconds"] <= HOST_TARGET_S
        rows.append([f"{r['n']:,}", r["variant"], fmt_s(r["per_step_seconds"]), fmt_s(r["cpu_per_step_seconds"]),
                     fmt_s(r["sync_cpu_per_step_seconds"]), fmt_s(r["host_cpu_per_step_seconds"]),
                     fmt(r["launches_per_step"]), fmt_load(r.get("other_cores")), verdict(r["target_met"])])
    print_table(["neurons", "variant", "wall per step", "CPU per step", "of it waiting", "CPU outside waits",
                 "kernels/step", "other load", f"CPU <= {fmt_s(HOST_TARGET_S)}"], rows,
                title=f"Host cost per step, backend {args.backend}, batch 1, {steps:,} steps (min of {args.repeats}): "
                      "CPU = time.process_time() of this process during run(); 'waiting' = inside _synchronise",
                align="llrrrrrrl")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument("--backend", default="cuda", choices=("cuda", "cuda-emu", "cpu"),
                   help="backend (default cuda; cuda-emu/cpu for smoke runs without a GPU)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default all)")
    p.add_argument("--n", type=int, default=4000, help="neurons of the batch part (default 4000)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512], help="batch sizes (default 1 64 512)")
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000, 400000, 4000000],
                   help="neuron counts of the size part (default 4k 40k 400k 4M)")
    p.add_argument("--duration", type=float, default=1.0, help="biological time in s (default 1)")
    p.add_argument("--rate-duration", type=float, default=0.1,
                   help="size part: biological time of the run with spikes recorded, s (default 0.1; 0: skip it)")
    p.add_argument("--host-duration", type=float, default=1.0, help="host part: biological time in s (default 1)")
    p.add_argument("--host-sizes", type=int, nargs="+", default=[TINY_N, 4000],
                   help=f"host part: neuron counts (default {TINY_N} 4000)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs, the minimum is reported (default 3)")
    p.add_argument("--record-duration", type=float, default=0.1,
                   help="batch part: biological time of the runs with all spikes recorded, s (default 0.1 = one "
                        "recording chunk of 1000 steps: decoding the recording on the host takes long at large "
                        "batches, and its cost per step does not depend on the duration)")
    p.add_argument("--record-repeats", type=int, default=2,
                   help="batch part: timed runs with all spikes recorded (default 2)")
    p.add_argument("--record", choices=("both", "on", "off"), default="both",
                   help="batch part: with spike recording, without, or both (default)")
    p.add_argument("--warmup-steps", type=int, default=1000, help="steps of the warm-up run (default 1000)")
    p.add_argument("--threads", type=int, default=None, help="threads of the cpu and cuda-emu backends")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 200)
        args.batches = [1, 4]
        args.sizes = [100, 200]
        args.duration = min(args.duration, 0.002)
        args.record_duration = min(args.record_duration, 0.002)
        args.rate_duration = min(args.rate_duration, 0.002)
        args.host_duration = min(args.host_duration, 0.005)
        args.host_sizes = [100, 200]
        args.repeats = min(args.repeats, 2)
        args.record_repeats = min(args.record_repeats, 1)
        args.warmup_steps = min(args.warmup_steps, 10)
        if args.threads is None and args.backend == "cuda-emu":
            args.threads = 1
    args.batches = sorted(set(args.batches))
    args.sizes = sorted(set(args.sizes))
    args.record_modes = {"both": [False, True], "on": [True], "off": [False]}[args.record]
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    res = start(args, f"CUBA on backend {args.backend}", "gpu_cuba")
    if res is None:
        return 2
    for part in args.parts:
        {"batch": part_batch, "size": part_size, "host": part_host}[part](args, res)
    failed = [r for part in PARTS for r in res.data.get(part, {}).get("runs", []) if "failed" in r]
    if failed:
        print(f"\n{len(failed)} configuration(s) failed: " + "; ".join(r["failed"][:200] for r in failed))
    if args.json:
        res.save(final=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
