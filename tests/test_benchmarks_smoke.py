"""Every benchmark script runs (with --quick: tiny sizes, seconds) and exits 0."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["cuba_vs_brian2.py", "batch_scaling.py", "size_scaling.py", "cuda_emu_cuba.py", "mpi_scaling.py",
           "eprop_vs_snntorch.py", "eprop_learning.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_runs_quick(script, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "|" in proc.stdout  # a table was printed
    assert out.exists() and out.stat().st_size > 0
