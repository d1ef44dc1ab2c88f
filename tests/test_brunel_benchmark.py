"""benchmarks/brunel_regime_b.py: its statistics on spike trains whose values are known, and a
quick run of the spikeforge side."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import brunel_regime_b as bench  # noqa: E402


def test_statistics_of_known_spike_trains():
    # neuron 0: ISIs 10, 20, 10, 20 ms (CV 1/3); neuron 1: ISIs 5, 5, 5 (CV 0); neuron 2: one ISI (left out
    # of the ISI CV); neuron 3: silent. Spikes before t_start are dropped.
    t0 = [100.0, 110.0, 130.0, 140.0, 160.0]
    t1 = [100.0, 105.0, 110.0, 115.0]
    t2 = [150.0, 170.0]
    times = np.array([50.0, *t0, *t1, *t2])
    ids = np.array([0] + [0] * 5 + [1] * 4 + [2] * 2)
    s = bench.spike_statistics(times, ids, 4, 100.0, 200.0)
    assert s["rate"] == pytest.approx(11 / (4 * 0.1))
    assert s["isi_cv"] == pytest.approx((1 / 3 + 0.0) / 2)
    counts = np.bincount((times[times >= 100] - 100).astype(int), minlength=100)
    assert s["pop_cv"] == pytest.approx(counts.std() / counts.mean())


def test_nu_ext_of_the_four_regimes():
    assert bench.nu_ext_hz(1.0, 1000) == pytest.approx(10.0)  # nu_thr = theta / (J C_E tau) = 10 Hz
    assert [bench.nu_ext_hz(r, 1000) for _, r in bench.REGIMES.values()] == pytest.approx([20.0, 40.0, 20.0, 9.0])


@pytest.mark.slow
def test_quick_run_prints_a_table(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "brunel_regime_b.py"), "--quick",
                           "--brian2-variants", "none", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| spikeforge baseline | 2 |" in proc.stdout
    rows = json.loads(out.read_text())["results"]["spikeforge baseline"]
    assert len(rows) == 2 and all(r["rate"] > 10 and 0 < r["isi_cv"] < 2 for r in rows)
