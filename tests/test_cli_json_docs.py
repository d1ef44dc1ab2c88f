"""Every ``--json`` key is documented in docs/cli.md, and every key documented as always
present is in the output: the tables are parsed and compared with real runs."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from spikeforge.cli import JSON_SCHEMA_VERSION, main

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
needs_cxx = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs a C++ compiler")

NETWORK = """\
    duration: 2.0
    populations:
      src: {size: 4, model: poisson, init: {rate: 500.0}, record: [spikes]}
      out: {size: 2, model: lif, params: {v_th: -64.0}, record: [spikes]}
    projections:
      p: {pre: src, post: out, weight_update: {model: static_constant, params: {w: 2.0}}, postsynaptic: delta}
    """

JOB = """\
    name: tiny
    dt: 1.0
    data: {kind: pattern_generation, n_samples: 2, test_fraction: 0.5, options: {duration: 20.0, n_inputs: 4}}
    network:
      hidden: {model: lif_subtractive, size: 4}
    training: {epochs: 1, batch_size: 1}
    """


def documented() -> dict[str, dict[str, str]]:
    """Table title -> {key: the `present` column}."""
    tables: dict[str, dict[str, str]] = {}
    title = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^### `spikeforge ([\w-]+)[^`]*--json`(.*)$", line)
        if heading:
            title = heading.group(1) + (" history" if "history" in heading.group(2) else "")
            tables[title] = {}
            continue
        if line.startswith("#"):
            title = None
        row = re.match(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", line)
        if title and row:
            tables[title][row.group(1)] = row.group(2).strip()
    return tables


def check(output: dict, table: dict[str, str], what: str):
    undocumented = sorted(set(output) - set(table))
    assert not undocumented, f"{what}: keys missing from docs/cli.md: {undocumented}"
    missing = sorted(k for k, present in table.items() if present == "always" and k not in output)
    assert not missing, f"{what}: documented as always present but not in the output: {missing}"


def json_of(capsys, argv) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    assert isinstance(result, dict) and result["schema_version"] == JSON_SCHEMA_VERSION == 1
    assert next(iter(result)) == "schema_version"
    return result


@pytest.fixture
def network_file(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(NETWORK))
    return path


def test_the_doc_has_a_table_per_json_command():
    tables = documented()
    assert set(tables) == {"run", "build", "show-code", "train", "train history", "doctor"}
    assert all(t["schema_version"] == "always" for name, t in tables.items() if "history" not in name)


def test_show_code_list_json_keys(capsys, network_file):
    table = documented()["show-code"]
    for backend in ("cpu", "cuda-emu"):
        check(json_of(capsys, ["show-code", str(network_file), "--list", "--json", "--backend", backend]), table,
              f"show-code --backend {backend}")


@needs_cxx
def test_run_json_keys(capsys, network_file):
    result = json_of(capsys, ["run", str(network_file), "--json", "--threads", "1"])
    check(result, documented()["run"], "run")


@needs_cxx
def test_build_json_keys(capsys, network_file, tmp_path):
    result = json_of(capsys, ["build", str(network_file), "--out", str(tmp_path / "out"), "--json"])
    check(result, documented()["build"], "build")
    assert json.loads((tmp_path / "out" / "build.json").read_text()) == {**result, "seconds": result["seconds"]}


@needs_cxx
@pytest.mark.slow
def test_train_json_keys(capsys, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(JOB))
    result = json_of(capsys, ["train", str(path), "--json", "--threads", "1"])
    tables = documented()
    check(result, tables["train"], "train")
    assert result["history"]
    for entry in result["history"]:
        check(entry, tables["train history"], "train history entry")
