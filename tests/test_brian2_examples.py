"""Every port in examples/brian2/ loads and runs through `spikeforge run --json` for a few ms.

The statistics against Brian2 are benchmarks/brian2_examples.py's job; this checks that each
file stays valid as the model language changes, and that --json reports a finite rate for every
population the file records spikes of. All nine files take about 13 s together (cold build cache).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from spikeforge.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "brian2"
FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
#: Short runs: enough steps for every model to spike or not, still cheap (Brunel has 12,500 neurons).
DURATION_MS = {"stdp_song2000.yaml": 50, "izhikevich2003.yaml": 50}

def _populations_recording_spikes(tree: dict) -> set[str]:
    recorded = set()
    for name, pop in tree["populations"].items():
        record = pop.get("record") or []
        entries = record if isinstance(record, dict) else [
            next(iter(entry)) if isinstance(entry, dict) else entry for entry in record]
        if "spikes" in entries:
            recorded.add(name)
    return recorded


def test_every_port_is_listed():
    assert {"cobahh.yaml", "izhikevich2003.yaml", "stdp_song2000.yaml", "gap_junctions.yaml", "nmda.yaml",
            "brunel2000_A.yaml", "brunel2000_B.yaml", "brunel2000_C.yaml", "brunel2000_D.yaml"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_port_runs_with_json_rates(name, capsys):
    path = EXAMPLES / name
    recorded = _populations_recording_spikes(yaml.safe_load(path.read_text()))
    assert recorded, f"{name} records no spikes"
    duration = DURATION_MS.get(name, 20)
    code = main(["run", str(path), "--duration", str(duration), "--batch-size", "1", "--threads", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["steps"] == round(duration / result["dt"])
    assert result["nonfinite"] == []
    rates = result["rates_hz"]
    assert recorded <= set(rates), (name, sorted(rates))
    for pop in recorded:
        assert math.isfinite(rates[pop]) and rates[pop] >= 0, (name, pop, rates[pop])
