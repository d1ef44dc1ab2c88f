"""Data-parallel e-prop on GPUs: measured compute per GPU + modelled all-reduce = an ESTIMATE of the speed-up.

The SHD-sized network of ``gpu_eprop_shd.py`` (700 inputs -> 256 recurrent ALIF -> 20
readouts, 1000 steps of 1 ms, Poisson input, random labels) with a fixed global batch
(``--global-batch``, default 512) split over K = 1, 2, 4, 8, 16, 32 GPUs (``--gpus``):
each GPU then runs a per-rank batch of B = 512 / K.

Measured, on ONE device (``--backend cuda``, default; ``cpu`` and ``cuda-emu`` for smoke
runs with ``--quick``), for each B, after ``--warmup`` steps, the median of ``--repeats``:

* ``run_batch(grads=False)`` of the trainer's runtime (the network the EpropConfig
  translates into, compiled for a batch of B by the training compiler): upload of the
  dense input, the forward pass with eligibility traces and per-instance gradients on the
  device, download of the outputs;
* the per-rank sum of the gradients over the batch, ``gradient_sums()`` (the host path:
  the per-instance gradients downloaded and summed), packing the sums into one vector
  (``np.concatenate``, as the trainer does) and ``set_gradient`` (the upload of the
  reduced sums);
* the Adam step from the reduced sums: ``step(batch=1)`` (every trainable array);
* for the 1-GPU baseline, the training step as one process runs it: ``run_batch`` +
  ``step(batch=B)`` (the batch reduced inside the optimiser kernels).

T_host(B) = run_batch + host sums + pack + set_gradient + Adam (its device<->host copies
are thus measured, not modelled); T_1 = the single-process step at the global batch.
T_nccl(B) = run_batch + device sums + Adam needs the sums on the device, which the
trainer's runtime does not offer (it all-reduces through the host): the NCCL columns stay
empty ("-") and are kept for a runtime that does.

Modelled: the all-reduce. Payload = float64 sums of all weights (700x256 + 256x256 +
20x256 + 20 values: 2.0 MB for SHD) + the metric vector (6 float64). A ring all-reduce
over K ranks takes

    t_ar(K) = 2 (K-1)/K * bytes / bus_bandwidth + 2 (K-1) * latency

"Bus bandwidth" in NCCL's own sense (nccl-tests, PERFORMANCE.md): for an all-reduce,
busbw = algbw * 2 (K-1)/K, a figure comparable to the speed of the links whatever K is;
the latency term counts the 2 (K-1) steps of the ring. Default assumptions (all
overridable; conservative round numbers, not measurements):

* within a node of ``--gpus-per-node`` 8 GPUs, NCCL over NVLink/NVSwitch: 200 GB/s, 10 us
  per step (below the large-message bus bandwidths nccl-tests reports on 8-GPU NVSwitch
  servers, a few hundred GB/s: a 2 MB message does not reach the peak);
* across nodes (16 GPUs = 2 nodes, 32 = 4 nodes), InfiniBand with one 200 Gb/s adapter per
  GPU (25 GB/s line rate): 20 GB/s, 20 us per step; a ring that crosses nodes is bounded by
  these links, and every step is charged their latency;
* the host path: one MPI all-reduce of the host buffer, within a node through shared
  memory (10 GB/s, 10 us), across nodes over the same InfiniBand (20 GB/s, 20 us). Its
  device<->host copies are in T_host (measured); PCIe at ``--pcie-gbs`` (20 GB/s each way)
  is only printed next to them as a check;
* the NCCL path also all-reduces the metric vector with MPI (48 bytes: latency only,
  recursive doubling, ceil(log2 K) * the host network's latency).

    S(K) = T_1 / (T(512/K) + t_ar(K)),   efficiency = S(K) / K

for both paths, next to mlGeNN's reported 7.2x on 8 A100s and 21.5x on 32 (SHD, global
batch 512). Not modelled: overlap of communication with compute (spikeforge does not
overlap), the host work per batch (gathering samples, ``to_dense``: printed, it shrinks
with B too), contention between the ranks of a node for host CPUs and PCIe, stragglers.

``--from-json FILE`` recomputes the estimate from the measurements of an earlier
``--json`` file under other assumptions, without measuring.

``--mpi-check`` is a different job: the path check of data-parallel training on one
device. A small training job (evidence accumulation, written as YAML into ``--workdir``)
runs with ``spikeforge train`` as one process and as ``mpiexec -n 2`` (both ranks share
the device; the gradients are all-reduced through the host with MPI);
final weights (from the checkpoints), accuracy and samples/s are compared. Without an
MPI launcher that matches mpi4py, it says so and exits 0.

    python benchmarks/gpu_eprop_scaling.py [--global-batch 512] [--json gpu_eprop_scaling.json]
    python benchmarks/gpu_eprop_scaling.py --from-json gpu_eprop_scaling.json --inter-gbs 10
    python benchmarks/gpu_eprop_scaling.py --mpi-check [--backend cuda] [--workdir DIR]
    python benchmarks/gpu_eprop_scaling.py --quick --backend cuda-emu
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import common_parser, finish_args, fmt, fmt_s, machine_info, print_table  # noqa: E402
from gpu_cuba import Results, start  # noqa: E402
from gpu_eprop_shd import (  # noqa: E402
    SHD,
    TRAINER_OPTIONS,
    add_network_arguments,
    gpu_used_mib,
    is_shd_size,
    poisson_dataset,
    quick_network,
    shd_config,
)

GPUS = (1, 2, 4, 8, 16, 32)
MLGENN_SPEEDUP = {8: 7.2, 32: 21.5}  # mlGeNN, e-prop on SHD, global batch 512, A100s (reported)
MLGENN_GPU = "NVIDIA A100"
METRICS = 6  # float64 values of the metric vector the trainer all-reduces (Trainer._METRIC_KEYS)
ESTIMATE_LABEL = ("ESTIMATE: compute measured on one device, all-reduce modelled "
                  "(ring: 2 (K-1)/K * bytes / bus bandwidth + 2 (K-1) * latency)")


# --------------------------------------------------------------------------- measuring


def _median(values):
    return statistics.median(values) if values else None


def measure_batch(runtime, data, B: int, global_batch: int, repeats: int, warmup: int) -> dict:
    """Time one optimiser step's pieces at per-rank batch ``B`` (see the module docstring)."""
    import numpy as np

    lr = TRAINER_OPTIONS["lr"]
    names = list(runtime.names)
    device_sums = callable(getattr(runtime, "device_gradient_sums", None))

    t0 = time.perf_counter()
    x, y, mask = data[:B].to_dense()
    to_dense = time.perf_counter() - t0

    keys = ["run_batch", "device_sums", "host_sums", "pack", "set_gradient", "adam_reduced", "adam_single"]
    times = {k: [] for k in keys}
    step = 0
    for i in range(warmup + repeats):
        t = {}
        t0 = time.perf_counter()
        runtime.run_batch(x, mask, labels=y, grads=False)
        t["run_batch"] = time.perf_counter() - t0
        if device_sums:
            t0 = time.perf_counter()
            runtime.device_gradient_sums()
            t["device_sums"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sums = runtime.gradient_sums()
        t["host_sums"] = time.perf_counter() - t0
        # the single-process step: the batch reduced inside the optimiser kernels (before
        # set_gradient, which writes into the first instance's gradients)
        step += 1
        t0 = time.perf_counter()
        runtime.step(batch=B, mean=True, lr=lr, step=step, clamp={})
        t["adam_single"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vector = np.concatenate([sums[w].ravel() for w in names] + [np.zeros(METRICS)])
        t["pack"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        offset = 0
        for w in names:
            n = sums[w].size
            runtime.set_gradient(w, vector[offset: offset + n].reshape(sums[w].shape), 1.0 / global_batch)
            offset += n
        t["set_gradient"] = time.perf_counter() - t0
        step += 1
        t0 = time.perf_counter()
        runtime.step(batch=1, mean=False, lr=lr, step=step, clamp={})
        t["adam_reduced"] = time.perf_counter() - t0
        if i >= warmup:
            for k, v in t.items():
                times[k].append(v)

    n = len(times["run_batch"])
    nccl = ([times["run_batch"][j] + times["device_sums"][j] + times["adam_reduced"][j] for j in range(n)]
            if device_sums else [])
    host = [times["run_batch"][j] + times["host_sums"][j] + times["pack"][j] + times["set_gradient"][j]
            + times["adam_reduced"][j] for j in range(n)]
    single = [times["run_batch"][j] + times["adam_single"][j] for j in range(n)]
    out = {"batch": B, "to_dense": to_dense, "repeats": n, "warmup": warmup,
           "median": {k: _median(v) for k, v in times.items()}, "all": times,
           "T_nccl": _median(nccl), "T_host": _median(host), "T_single": _median(single),
           "T_nccl_all": nccl, "T_host_all": host, "T_single_all": single}
    del x, y, mask
    return out


def build_runtime(args, cfg, data, B: int):
    """The trainer's runtime of ``cfg`` for a batch of ``B``, compiled for the trial length
    of ``data`` (one untimed batch runs); the seconds it took."""
    from spikeforge.training.distributed import SingleProcess
    from spikeforge.training.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(cfg, batch_size=B, **TRAINER_OPTIONS, backend=args.backend, threads=args.threads,
                      comm=SingleProcess())
    x, y, mask = data[:B].to_dense()
    trainer.runtime.run_batch(x, mask, labels=y, learn=False)
    return trainer.runtime, time.perf_counter() - t0


def run(args, res: Results) -> dict:
    import numpy as np

    out = res.data
    G = args.global_batch
    t0 = time.perf_counter()
    data = poisson_dataset(G, args.inputs, args.outputs, args.steps, SHD["dt"], args.rate, args.seed)
    out["data_seconds"] = time.perf_counter() - t0
    print(f"\ninput: {G} samples of Poisson spikes, {float(np.mean(data.spike_counts)):.0f} spikes per sample "
          f"({fmt_s(out['data_seconds'])} to draw)", flush=True)

    cfg = shd_config(args)
    runtime, out["build_seconds"] = build_runtime(args, cfg, data, G)
    print(f"build (Trainer construction and the first batch: codegen, compile or cache, allocation): "
          f"{fmt_s(out['build_seconds'])}", flush=True)

    shapes = {w: tuple(int(d) for d in runtime.weight_shape(w)) for w in runtime.names}
    out["weight_shapes"] = shapes
    out["payload_bytes"] = 8 * sum(math.prod(s) for s in shapes.values())
    out["metric_bytes"] = 8 * METRICS
    out["device_sums_available"] = callable(getattr(runtime, "device_gradient_sums", None))
    out["measured"] = []
    res.save()

    # the global batch first (the 1-GPU baseline), then the smallest per-rank batches, which
    # cost least: a run stopped by a time limit loses the large ones (few GPUs) first. The
    # network is compiled for its batch size: one runtime per per-rank batch
    for B in [G] + sorted({G // k for k in args.gpus} - {G}):
        if B != G:
            runtime.close()
            runtime, seconds = build_runtime(args, cfg, data, B)
            print(f"  per-rank batch {B}: built in {fmt_s(seconds)}", flush=True)
        print(f"  per-rank batch {B}: {args.warmup} warm-up + {args.repeats} timed steps ...", flush=True)
        m = measure_batch(runtime, data, B, G, args.repeats, args.warmup)
        m["gpu_used_mib"] = gpu_used_mib(runtime)
        out["measured"].append(m)
        print(f"    T_host {fmt_s(m['T_host'])}, single process {fmt_s(m['T_single'])} "
              f"(run_batch {fmt_s(m['median']['run_batch'])})", flush=True)
        res.save()
    runtime.close()
    return out


# --------------------------------------------------------------------------- the model


def ring_allreduce(k: int, nbytes: float, gbs: float, latency_us: float) -> float:
    """Seconds of a ring all-reduce of ``nbytes`` over ``k`` ranks (bus bandwidth in GB/s)."""
    if k <= 1:
        return 0.0
    return 2 * (k - 1) / k * nbytes / (gbs * 1e9) + 2 * (k - 1) * latency_us * 1e-6


def small_allreduce(k: int, latency_us: float) -> float:
    """A tiny all-reduce (latency only): recursive doubling, ceil(log2 k) steps."""
    return 0.0 if k <= 1 else math.ceil(math.log2(k)) * latency_us * 1e-6


def assumptions(args) -> dict:
    return {"gpus_per_node": args.gpus_per_node,
            "nccl_intra_node": {"bus_gbs": args.intra_gbs, "latency_us": args.intra_latency_us,
                                "what": "NCCL over NVLink/NVSwitch"},
            "inter_node": {"bus_gbs": args.inter_gbs, "latency_us": args.inter_latency_us,
                           "what": "InfiniBand, one adapter per GPU (NCCL and MPI)"},
            "host_intra_node": {"bus_gbs": args.host_gbs, "latency_us": args.host_latency_us,
                                "what": "MPI through shared memory"},
            "pcie_gbs": args.pcie_gbs}


def comm_times(k: int, payload: int, metric_bytes: int, a: dict) -> dict:
    """Modelled all-reduce seconds of both paths at ``k`` GPUs."""
    intra = k <= a["gpus_per_node"]
    nccl_net = a["nccl_intra_node"] if intra else a["inter_node"]
    host_net = a["host_intra_node"] if intra else a["inter_node"]
    nccl = (ring_allreduce(k, payload, nccl_net["bus_gbs"], nccl_net["latency_us"])
            + small_allreduce(k, host_net["latency_us"]))
    host = ring_allreduce(k, payload + metric_bytes, host_net["bus_gbs"], host_net["latency_us"])
    nodes = max(1, math.ceil(k / a["gpus_per_node"]))
    return {"nccl": nccl, "host": host, "nodes": nodes, "network": "intra-node" if intra else f"{nodes} nodes"}


def estimate(out: dict, gpus, global_batch: int, a: dict) -> list[dict]:
    by_batch = {m["batch"]: m for m in out["measured"]}
    base = by_batch.get(global_batch)
    if base is None:
        return []
    t1 = base["T_single"]
    rows = []
    for k in gpus:
        m = by_batch.get(global_batch // k) if global_batch % k == 0 else None
        if m is None:
            continue
        c = comm_times(k, out["payload_bytes"], out["metric_bytes"], a)
        row = {"gpus": k, "batch": m["batch"], "network": c["network"], "nodes": c["nodes"], "T_1": t1,
               "mlgenn_speedup": MLGENN_SPEEDUP.get(k)}
        for path in ("nccl", "host"):
            T = m[f"T_{path}"]
            if T is None or k == 1:
                row[path] = None if k > 1 else {"T": t1, "t_ar": 0.0, "step": t1, "speedup": 1.0, "efficiency": 1.0,
                                                "ar_fraction": 0.0}
                continue
            step = T + c[path]
            row[path] = {"T": T, "t_ar": c[path], "step": step, "speedup": t1 / step, "efficiency": t1 / step / k,
                         "ar_fraction": c[path] / step}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def report(args, out: dict):
    G = args.global_batch
    a = assumptions(args)
    backend = out.get("backend", args.backend)
    where = out.get("gpu_name") or backend
    ms = sorted(out["measured"], key=lambda m: -m["batch"])

    rows = []
    for m in ms:
        md = m["median"]
        rows.append([m["batch"], G // m["batch"] if G % m["batch"] == 0 else "-", fmt_s(m["to_dense"]),
                     fmt_s(md["run_batch"]), fmt_s(md["device_sums"]), fmt_s(md["host_sums"]), fmt_s(md["pack"]),
                     fmt_s(md["set_gradient"]), fmt_s(md["adam_reduced"]), fmt_s(m["T_nccl"]), fmt_s(m["T_host"]),
                     fmt_s(m["T_single"]), fmt(m["batch"] / (m["T_nccl"] or m["T_host"]), 4)])
    print_table(["per-GPU batch B", "K", "to_dense (not in T)", "run_batch", "device sums", "host sums (+D2H)",
                 "pack", "set_gradient (H2D)", "Adam (step, batch=1)", "T_nccl(B)", "T_host(B)",
                 "1 process (+step, batch=B)", "samples/s per rank"], rows,
                title=f"Measured on one device ({where}, backend {backend}): one optimiser step per rank, median of "
                      f"{args.repeats} after {args.warmup} warm-up; {args.inputs}-{args.hidden} ALIF-{args.outputs}, "
                      f"{args.steps} steps", align="rrrrrrrrrrrrr")

    payload, metric_bytes = out["payload_bytes"], out["metric_bytes"]
    shapes = out.get("weight_shapes", {})
    print(f"\nall-reduce payload: float64 sums of {' + '.join('x'.join(map(str, s)) for s in shapes.values())} "
          f"= {payload:,} bytes ({payload / 1e6:.2f} MB) + the metric vector ({metric_bytes} bytes)")
    base = next((m for m in ms if m["batch"] == G), None)
    if base is not None and backend == "cuda" and base["all"]["device_sums"]:
        t = base["all"]
        copies = statistics.median(h - d + s for h, d, s in zip(t["host_sums"], t["device_sums"], t["set_gradient"]))
        out["host_copies_measured"] = copies
        print(f"device<->host copies of the sums (host path, measured at B = {G}, in T_host): {fmt_s(copies)} "
              f"(gradient_sums - device_gradient_sums + set_gradient); PCIe model at {a['pcie_gbs']:g} GB/s each way: "
              f"{fmt_s(2 * payload / (a['pcie_gbs'] * 1e9))}")
    print("assumptions: " + "; ".join([
        f"{a['gpus_per_node']} GPUs per node",
        f"NCCL within a node {a['nccl_intra_node']['bus_gbs']:g} GB/s bus bandwidth, "
        f"{a['nccl_intra_node']['latency_us']:g} us per ring step (NVLink/NVSwitch)",
        f"across nodes {a['inter_node']['bus_gbs']:g} GB/s, {a['inter_node']['latency_us']:g} us (InfiniBand, "
        "NCCL and MPI)",
        f"host MPI within a node {a['host_intra_node']['bus_gbs']:g} GB/s, "
        f"{a['host_intra_node']['latency_us']:g} us (shared memory)"]))

    rows_est = estimate(out, args.gpus, G, a)
    out["assumptions"] = a
    out["estimate"] = rows_est
    if not rows_est:
        print(f"\nno estimate: the global batch {G} itself was not measured")
        return

    def cells(p):
        if p is None:
            return ["-"] * 5
        return [fmt_s(p["t_ar"]), fmt_s(p["step"]), f"{p['speedup']:.2f}x", f"{p['efficiency']:.0%}",
                f"{p['ar_fraction']:.1%}"]

    rows = []
    for r in rows_est:
        ml = r["mlgenn_speedup"]
        rows.append([r["gpus"], r["batch"], r["network"], *cells(r["nccl"]), *cells(r["host"]),
                     f"{ml:g}x ({ml / r['gpus']:.0%})" if ml else ""])
    print_table(["K GPUs", "B per GPU", "network", "t_ar NCCL", "step NCCL", "S NCCL", "eff.", "all-reduce share",
                 "t_ar host", "step host", "S host", "eff.", "all-reduce share", f"mlGeNN reported ({MLGENN_GPU})"],
                rows, title=f"{ESTIMATE_LABEL}\nS(K) = T_1 / (T(B = {G}/K) + t_ar(K)), T_1 = "
                            f"{fmt_s(rows_est[0]['T_1'])} (one process, batch {G}); step = T(B) + t_ar",
                align="rrlrrrrrrrrrrl")
    comparable = is_shd_size(args) and G == 512 and backend == "cuda"
    out["comparable_with_mlgenn"] = comparable
    print("\nThis is an ESTIMATE, not a multi-GPU measurement: per-rank compute timed on one device, all-reduce from "
          "the model above." + ("" if comparable else
                                "  [NOT comparable with mlGeNN: not the SHD size with global batch 512 on backend "
                                "cuda]"))


# --------------------------------------------------------------------------- the MPI path check


def mpi_library() -> str | None:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().strip().splitlines()[0]
    except Exception as exc:  # no mpi4py, or no MPI library behind it
        return f"unavailable ({type(exc).__name__}: {exc})"


def launcher_candidates() -> list[str]:
    """MPI launchers that may be on this machine, most likely first (duplicates removed)."""
    names = ("mpiexec", "mpirun")
    found = []
    if os.environ.get("MPIEXEC"):
        found.append(os.environ["MPIEXEC"])
    for name in names:
        found.append(shutil.which(name))
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    dirs += [Path(p) / "bin" for p in sys.path if p]  # pip install --target DIR puts scripts into DIR/bin
    try:
        import mpi4py

        for v in mpi4py.get_config().values():  # the MPI it was built with: mpicc's directory
            dirs.append(Path(v).parent)
    except Exception:
        pass
    dirs += [Path(d) for d in ("/usr/local/mpi/bin", "/opt/hpcx/ompi/bin", "/usr/lib64/openmpi/bin",
                               "/usr/lib64/mpich/bin", "/opt/amazon/openmpi/bin", "/usr/local/bin", "/usr/bin")]
    for d in dirs:
        for name in names:
            f = d / name
            if f.is_file() and os.access(f, os.X_OK):
                found.append(str(f))
    out = []
    for f in found:
        if f and os.path.realpath(f) not in {os.path.realpath(g) for g in out}:
            out.append(f)
    return out


def mpi_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")  # Open MPI refuses root without these
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def find_launcher(timeout: float = 60) -> tuple[str | None, list[str]]:
    """The first launcher whose ``-n 2`` gives mpi4py a 2-rank world, and notes on the others."""
    notes = []
    # one write per rank, so that the two lines do not interleave
    probe = "import os; from mpi4py import MPI; os.write(1, b'size %d\\n' % MPI.COMM_WORLD.Get_size())"
    for launcher in launcher_candidates():
        try:
            p = subprocess.run([launcher, "-n", "2", sys.executable, "-c", probe], capture_output=True, text=True,
                               timeout=timeout, env=mpi_env(), cwd=REPO)
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"{launcher}: {type(exc).__name__}: {exc}")
            continue
        sizes = [line.split()[1] for line in p.stdout.splitlines() if line.startswith("size ")]
        if p.returncode == 0 and sizes == ["2", "2"]:
            return launcher, notes
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        notes.append(f"{launcher}: exit {p.returncode}, world sizes {sizes or 'none'} "
                     f"(expected 2, 2: not the MPI mpi4py uses?) {' | '.join(tail)}")
    return None, notes


MPI_JOB = """\
# The path check of data-parallel training (written by benchmarks/gpu_eprop_scaling.py --mpi-check):
# evidence accumulation, small: 3 cues, 64 ALIF neurons, dt 2 ms; {steps} optimiser steps of a global batch of 32.
name: mpi_path_check
dt: 2.0
data:
  kind: evidence_accumulation
  options: {{n_cues: 3, delay: 50.0}}
  n_samples: {n_samples}
  test_fraction: 0.2
  seed: 0
network:
  hidden:
    model: alif
    size: {hidden}
    params: {{tau_m: 20.0, v_th: 0.6, r_m: 10.0, tau_a: 2000.0, beta: 0.1, t_ref: 0.0}}
  recurrent: true
  tau_out: 20.0
  feedback: symmetric
  regularisation: {{rate: 1.0, target_hz: 10.0}}
training:
  epochs: {epochs}
  batch_size: 32
  lr: 0.01
  reduce: mean
  seed: 1
"""


def _train(cmd: list[str], timeout: float) -> dict:
    """Run one training job (in its own process group, so that a time-out stops the launcher
    and its ranks together); its JSON result and spikeforge's log lines."""
    import signal

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(), cwd=REPO,
                         start_new_session=True)

    def stop(signum=None, frame=None):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if signum is not None:  # this process is being stopped (e.g. by `timeout`): take the job along
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        stop()
        stdout, stderr = p.communicate()
        rc = 124
        stderr += f"\n(timed out after {timeout:g} s: --mpi-timeout)"
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - t0
    result = None
    if rc == 0 and "{" in stdout:
        try:
            result = json.loads(stdout[stdout.index("{"):])
        except ValueError:
            result = None
    log = [line for line in stderr.splitlines() if line.startswith("spikeforge:")]
    return {"cmd": " ".join(cmd), "rc": rc, "wall_seconds": wall, "result": result, "log": log,
            "stderr_tail": stderr.strip().splitlines()[-15:] if rc else []}


def _weights(path: Path) -> dict | None:
    import numpy as np

    if not path.exists():
        return None
    with np.load(path) as f:
        return {k.split("/", 1)[1]: f[k].astype(np.float64) for k in f.files if k.startswith("weight/")}


def _mpi_run(args, launcher: str, job: Path, work: Path, ranks: int) -> dict:
    """The training job on ``ranks`` MPI ranks (1: a plain process), its checkpoint in ``work``."""
    ckpt = work / f"ranks{ranks}.ckpt.npz"
    if ckpt.exists():
        ckpt.unlink()
    cmd = [sys.executable, "-m", "spikeforge.cli", "train", str(job), "--backend", args.backend, "--json",
           "--no-progress", "--checkpoint", str(ckpt)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if ranks > 1:
        cmd = [launcher, "-n", str(ranks), *cmd]
    print(f"\n{ranks} rank(s): {' '.join(cmd)}", flush=True)
    r = _train(cmd, timeout=args.mpi_timeout)
    r["checkpoint"] = str(ckpt)
    for line in r["log"]:
        print(f"  {line}")
    if r["rc"] != 0 or r["result"] is None:
        print(f"  FAILED (exit status {r['rc']}):\n    " + "\n    ".join(r["stderr_tail"]))
    return r


def mpi_check(args) -> int:
    import numpy as np

    print(f"MPI path check: the same small training job with 1 process and with 2 MPI ranks on one device "
          f"(backend {args.backend})" + ("  [--quick]" if args.quick else ""))
    raw = {"benchmark": "gpu_eprop_scaling --mpi-check", "backend": args.backend, "quick": args.quick,
           "machine": machine_info(), "mpi_library": mpi_library(), "complete": False}
    res = Results(args.json, raw)
    print(f"mpi4py's MPI: {raw['mpi_library']}")
    launcher, notes = find_launcher()
    raw["launcher"], raw["launcher_notes"] = launcher, notes
    for n in notes:
        print(f"  launcher tried: {n}")
    if launcher is None:
        raw["skipped"] = "no MPI launcher that starts a 2-rank mpi4py job"
        print("\nSKIPPED: no MPI launcher (mpiexec, mpirun; on PATH, next to this Python, in mpi4py's MPI, or in the "
              "usual MPI directories) starts a 2-rank mpi4py job here; set MPIEXEC=/path/to/mpiexec if there is one.")
        res.save(final=True)
        return 0
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=30)
    raw["launcher_version"] = (version.stdout or version.stderr).strip().splitlines()[:1]
    print(f"launcher: {launcher} ({' '.join(raw['launcher_version']) or '?'})")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="spikeforge-mpi-check-"))
    work.mkdir(parents=True, exist_ok=True)
    n_samples, hidden, epochs = (80, 16, 1) if args.quick else (400, 64, 2)
    job = work / "mpi_path_check.yaml"
    job.write_text(MPI_JOB.format(n_samples=n_samples, hidden=hidden, epochs=epochs,
                                  steps=epochs * math.ceil(n_samples * 0.8 / 32)))
    print(f"job: {job} ({n_samples} trials, {hidden} hidden, {epochs} epoch(s), global batch 32)")
    raw["job"] = job.read_text()
    runs = {}
    for ranks in (1, 2):
        runs[ranks] = raw.setdefault("runs", {})[str(ranks)] = _mpi_run(args, launcher, job, work, ranks)
        res.save()

    ok = all(r["rc"] == 0 and r["result"] for r in runs.values())
    rows, sums = [], {}
    for ranks, r in runs.items():
        w = _weights(Path(r["checkpoint"]))
        out = r["result"] or {}
        sums[ranks] = w
        checksum = sum(float(np.abs(v).sum()) for v in w.values()) if w else None
        r["weights_checksum"] = checksum
        rows.append([ranks, out.get("ranks", "-"), out.get("epochs", "-"), fmt(out.get("train_accuracy")),
                     fmt(out.get("test_accuracy")), fmt(out.get("samples_per_second"), 4), fmt_s(r["wall_seconds"]),
                     f"{checksum:.6f}" if checksum is not None else "-"])
    print_table(["ranks asked", "ranks (job)", "epochs", "train accuracy", "test accuracy", "samples/s (last epoch)",
                 "wall (process)", "weights checksum (sum |w|)"], rows,
                title=f"The same job, 1 process vs 2 MPI ranks sharing one device (backend {args.backend})")
    verdict = {}
    if sums.get(1) and sums.get(2):
        diffs = {k: float(np.max(np.abs(sums[1][k] - sums[2][k]))) if sums[1][k].size else 0.0 for k in sums[1]}
        scale = max(float(np.max(np.abs(v))) for v in sums[1].values() if v.size)
        verdict = {"max_abs_diff": diffs, "max_abs_weight": scale,
                   "same_weights": max(diffs.values()) <= 1e-3 * scale}
        print("\nlargest |w(1 rank) - w(2 ranks)| per weight: "
              + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()) + f" (largest |w|: {scale:.3g})")
    ranks2 = (runs[2]["result"] or {}).get("ranks")
    if runs[2]["result"] is not None and ranks2 != 2:
        ok = False
        print(f"\nNOT a 2-rank job: the launched job reports {ranks2} rank(s) (launcher and mpi4py's MPI differ?)")
    print("gradient path: host (MPI) all-reduce (the trainer's only path)")
    if "same_weights" in verdict:
        print("final weights: " + ("the same up to floating-point rounding (1 process vs 2 ranks)"
                                   if verdict["same_weights"] else "DIFFERENT beyond rounding (max diff > 1e-3 of the "
                                                                   "largest weight)"))
        ok = ok and verdict["same_weights"]
    s1, s2 = ((runs[k]["result"] or {}).get("samples_per_second") for k in (1, 2))
    if s1 and s2:
        print(f"samples/s: 2 ranks sharing one device / 1 process = {s2 / s1:.2f} (a path check, not a scaling result)")
    raw["verdict"] = verdict
    raw["ok"] = ok
    print(f"\npath check: {'OK' if ok else 'FAILED'}")
    if args.json:
        res.save(final=True)
    return 0 if ok else 1


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = common_parser(__doc__.splitlines()[0])
    add_network_arguments(p)
    p.add_argument("--global-batch", type=int, default=SHD["batch"], help="global batch (default 512)")
    p.add_argument("--gpus", type=int, nargs="+", default=list(GPUS), metavar="K",
                   help="GPU counts to estimate (default 1 2 4 8 16 32; those that do not divide the global batch "
                        "are left out)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per batch size, the median is used (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps per batch size (default 1)")
    g = p.add_argument_group("the communication model (conservative round numbers; see the docstring)")
    g.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    g.add_argument("--intra-gbs", type=float, default=200.0,
                   help="NCCL bus bandwidth within a node, GB/s (NVLink/NVSwitch; default 200)")
    g.add_argument("--intra-latency-us", type=float, default=10.0, help="per ring step within a node, us (default 10)")
    g.add_argument("--inter-gbs", type=float, default=20.0,
                   help="bus bandwidth across nodes per GPU, GB/s (InfiniBand; NCCL and MPI; default 20)")
    g.add_argument("--inter-latency-us", type=float, default=20.0, help="per ring step across nodes, us (default 20)")
    g.add_argument("--host-gbs", type=float, default=10.0,
                   help="host-path MPI bus bandwidth within a node, GB/s (shared memory; default 10)")
    g.add_argument("--host-latency-us", type=float, default=10.0,
                   help="host-path MPI latency per step within a node, us (default 10)")
    g.add_argument("--pcie-gbs", type=float, default=20.0,
                   help="PCIe each way, GB/s: printed next to the measured copies of the host path (default 20)")
    p.add_argument("--from-json", metavar="FILE",
                   help="no measuring: the estimate from the measurements in FILE (an earlier --json)")
    m = p.add_argument_group("the MPI path check")
    m.add_argument("--mpi-check", action="store_true",
                   help="instead: a small training job with 1 process and with 2 MPI ranks on this one device")
    m.add_argument("--workdir", help="--mpi-check: where the job, checkpoints go (default: a new temporary directory)")
    m.add_argument("--mpi-timeout", type=float, default=120.0,
                   help="--mpi-check: limit per training run, s (default 120)")
    args = p.parse_args(argv)
    if args.quick:
        quick_network(args)
        args.global_batch = min(args.global_batch, 32)  # 1 sample per rank at K = 32
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
    if min(args.global_batch, args.steps, args.repeats, args.inputs, args.hidden, args.outputs,
           args.gpus_per_node, *args.gpus) < 1 or args.warmup < 0:
        p.error("sizes, --global-batch, --steps, --repeats, --gpus and --gpus-per-node must be positive, --warmup "
                "non-negative")
    if min(args.intra_gbs, args.inter_gbs, args.host_gbs, args.pcie_gbs) <= 0 \
            or min(args.intra_latency_us, args.inter_latency_us, args.host_latency_us) < 0:
        p.error("bandwidths must be positive, latencies non-negative")
    left_out = [k for k in args.gpus if args.global_batch % k]
    args.gpus = sorted({k for k in args.gpus if args.global_batch % k == 0} | {1})
    if left_out and not args.quick:
        print(f"(GPU counts {left_out} do not divide the global batch {args.global_batch}: left out)")
    return finish_args(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mpi_check:
        return mpi_check(args)
    if args.from_json:
        out = json.loads(Path(args.from_json).read_text())
        saved = out.get("args", {})
        for k in ("global_batch", "inputs", "hidden", "outputs", "steps", "repeats", "warmup"):
            if k in saved:
                setattr(args, k, saved[k])
        args.gpus = sorted({k for k in args.gpus if args.global_batch % k == 0} | {1})
        print(f"estimate from the measurements in {args.from_json} (backend {out.get('backend')}, "
              f"{out.get('gpu_name') or 'no GPU'}, {out.get('machine', {}).get('date', '?')})")
        report(args, out)
        if args.json:
            Results(args.json, out).save(final=True)
        return 0
    res = start(args, f"data-parallel e-prop scaling estimate, SHD-sized network, backend {args.backend}",
                "gpu_eprop_scaling", mlgenn={"speedup": MLGENN_SPEEDUP, "gpu": MLGENN_GPU, "global_batch": 512})
    if res is None:
        return 2
    out = run(args, res)
    report(args, out)
    if args.json:
        res.save(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
