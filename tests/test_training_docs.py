"""docs/training.md documents every key a training job file accepts, and nothing else."""

import re
from pathlib import Path

from spikeforge.training.config import JOB_KEYS, NETWORK_JOB_KEYS

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def documented_keys(heading: str = "The job file") -> set[str]:
    """The keys of the table in section ``heading`` (a row may name several: `data.train`, `data.test`)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            keys.update(re.findall(r"`([a-z_.0-9]+)`", first_cell))
    return keys


def test_every_job_file_key_is_documented():
    accepted = {f"{where}.{key}" if where else key for where, keys in JOB_KEYS.items() for key in keys}
    # a mapping is documented through its keys (network.hidden.model ...), not on a row of its own
    mappings = {f"{where}.{key}" if where else key for where, keys in JOB_KEYS.items() for key in keys
                if (f"{where}.{key}" if where else key) in JOB_KEYS}
    documented = documented_keys()
    assert accepted - mappings - documented == set(), "keys the loader accepts but docs/training.md omits"
    assert documented - accepted == set(), "keys docs/training.md lists that the loader refuses"


def test_every_training_key_of_a_job_over_a_network_description_is_documented():
    accepted = {f"{where}.{key}" for where, keys in NETWORK_JOB_KEYS.items() for key in keys}
    accepted -= {k for k in accepted if k in NETWORK_JOB_KEYS and k != "training.optimiser"}  # documented by keys
    documented = documented_keys("A job over a network description")
    assert accepted - documented == set(), "keys the loader accepts but docs/training.md omits"
    assert documented - accepted == set(), "keys docs/training.md lists that the loader refuses"
