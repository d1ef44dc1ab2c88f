"""Every benchmark script runs (with --quick: tiny sizes, seconds) and exits 0."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["cuba_vs_brian2.py", "batch_scaling.py", "size_scaling.py", "cuda_emu_cuba.py", "mpi_scaling.py",
           "eprop_vs_snntorch.py", "eprop_learning.py"]
# the GPU benchmarks default to backend cuda; without a GPU they run on the other two
GPU_SCRIPTS = [(script, backend) for script in ("gpu_cuba.py", "gpu_eprop_shd.py") for backend in ("cuda-emu", "cpu")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_runs_quick(script, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "|" in proc.stdout  # a table was printed
    assert out.exists() and out.stat().st_size > 0


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
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=60).returncode == 0
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0 and "Stages:" in proc.stdout
