"""Every benchmark script runs (with --quick: tiny sizes, seconds) and exits 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["cuba_vs_brian2.py", "batch_scaling.py", "size_scaling.py", "cuda_emu_cuba.py", "mpi_scaling.py",
           "eprop_vs_snntorch.py", "parallel_vs_eprop.py", "eprop_learning.py", "ctrl_c_latency.py", "brunel_speed.py",
           "shared_machine.py", "batched_sweep.py", "brunel_sweep.py", "connectivity.py",
           "brian2_examples.py", "parallel_chunks.py", "engine.py", "event_scaling.py", "event_vs_clock.py",
           "eprop_layout.py"]
# the GPU benchmarks default to backend cuda; without a GPU they run on the other two
GPU_SCRIPTS = [(script, backend) for script in ("gpu_cuba.py", "gpu_eprop_shd.py", "gpu_parallel_shd.py")
               for backend in ("cuda-emu", "cpu")]


@pytest.mark.slow  # a benchmark script in a subprocess
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_runs_quick(script, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "|" in proc.stdout  # a table was printed
    assert out.exists() and out.stat().st_size > 0


@pytest.mark.slow  # a benchmark script in a subprocess
@pytest.mark.parametrize("script,backend", GPU_SCRIPTS)
def test_gpu_benchmark_script_runs_quick(script, backend, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--backend", backend,
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "|" in proc.stdout
    assert out.exists() and '"complete": true' in out.read_text()


def test_gpu_session_script_parses_and_explains_itself(tmp_path):
    script = ROOT / "benchmarks" / "gpu_session.sh"
    for name in ("gpu_session.sh", "gpu_prepare.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / name)], capture_output=True,
                              timeout=60).returncode == 0, name
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0 and "Stages:" in proc.stdout


def _run_scaling(args, tmp_path):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_eprop_scaling.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow  # a benchmark script in a subprocess
@pytest.mark.parametrize("backend", ["cpu", "cuda-emu"])
def test_scaling_estimate_runs_quick(backend, tmp_path):
    """gpu_eprop_scaling.py measures every per-rank batch of the global batch and prints the
    estimate for K = 1..32 GPUs, labelled as one; --from-json redoes it under other assumptions."""
    out = tmp_path / "scaling.json"
    proc = _run_scaling(["--quick", "--backend", backend, "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ESTIMATE" in proc.stdout and "mlGeNN" in proc.stdout
    data = json.loads(out.read_text())
    assert data["complete"] is True
    assert sorted(m["batch"] for m in data["measured"]) == [1, 2, 4, 8, 16, 32]  # global batch 32 with --quick
    rows = {r["gpus"]: r for r in data["estimate"]}
    assert sorted(rows) == [1, 2, 4, 8, 16, 32]
    assert rows[1]["host"]["speedup"] == 1.0 and rows[32]["host"]["t_ar"] > rows[8]["host"]["t_ar"] > 0
    assert rows[32]["nccl"] is None  # the trainer's runtime has no device sums (no NCCL path)
    assert rows[8]["mlgenn_speedup"] == 7.2 and rows[32]["mlgenn_speedup"] == 21.5
    # the payload: float64 sums of w_in (16x20), w_rec (16x16), w_out (4x16), b_out (4) at --quick sizes
    assert data["payload_bytes"] == 8 * (16 * 20 + 16 * 16 + 4 * 16 + 4)

    again = tmp_path / "again.json"
    proc = _run_scaling(["--from-json", str(out), "--inter-gbs", "1", "--json", str(again)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    slower = {r["gpus"]: r for r in json.loads(again.read_text())["estimate"]}
    assert slower[32]["host"]["t_ar"] > rows[32]["host"]["t_ar"]
    assert slower[8]["host"]["t_ar"] == rows[8]["host"]["t_ar"]  # within a node: unchanged


def test_scaling_ring_model():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_eprop_scaling import ring_allreduce, small_allreduce

    assert ring_allreduce(1, 1e6, 10, 10) == 0.0 and small_allreduce(1, 10) == 0.0
    # 2 (K-1)/K * bytes / busbw + 2 (K-1) * latency
    assert ring_allreduce(8, 2e6, 200, 10) == pytest.approx(2 * 7 / 8 * 2e6 / 200e9 + 14 * 10e-6)
    assert small_allreduce(32, 20) == pytest.approx(5 * 20e-6)


@pytest.mark.slow  # a benchmark script in a subprocess
def test_scaling_mpi_path_check_quick(tmp_path):
    """--mpi-check on the cpu backend: 1 process vs 2 MPI ranks give the same weights (or the
    check says clearly that there is no MPI launcher, and exits 0)."""
    out = tmp_path / "mpi.json"
    proc = _run_scaling(["--quick", "--mpi-check", "--backend", "cpu", "--threads", "1", "--workdir",
                         str(tmp_path / "work"), "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    if data.get("skipped"):
        assert "SKIPPED" in proc.stdout
        return
    assert data["ok"] and data["verdict"]["same_weights"]
    assert data["runs"]["2"]["result"]["ranks"] == 2
    assert "path check: OK" in proc.stdout
