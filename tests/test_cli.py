"""Tests of the ``spikeforge`` command line (spikeforge.cli)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikeforge import __version__
from spikeforge.cli import main

REPO = Path(__file__).resolve().parents[1]
CUBA = str(REPO / "examples" / "cuba.yaml")
STDP_EXAMPLE = str(REPO / "examples" / "stdp_minibatch.yaml")
HAS_CXX = bool(os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"))
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="needs a C++ compiler")

JSON_KEYS = {
    "network",
    "backend",
    "batch_size",
    "steps",
    "dt",
    "duration_ms",
    "spikes",
    "rates_hz",
    "build_seconds",
    "from_cache",
    "run_seconds",
}


def run_json(capsys, *args) -> dict:
    code = main(["run", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object on stdout


@needs_cxx
def test_run_cuba_json(capsys):
    result = run_json(capsys, CUBA, "--duration", "100")
    assert JSON_KEYS <= set(result)
    assert result["network"] == "cuba" and result["backend"] == "cpu" and result["batch_size"] == 1
    assert result["steps"] == 1000 and result["dt"] == pytest.approx(0.1)
    assert result["duration_ms"] == pytest.approx(100.0)
    assert set(result["spikes"]) == {"exc", "inh"} == set(result["rates_hz"])
    assert result["spikes"]["exc"] > 0 and result["spikes"]["inh"] > 0
    rate = result["spikes"]["exc"] / (3200 * 0.1)
    assert result["rates_hz"]["exc"] == pytest.approx(rate)
    assert 0.5 < rate < 50  # CUBA fires at a few Hz
    assert isinstance(result["from_cache"], bool)
    assert result["build_seconds"] > 0 and result["run_seconds"] > 0


@needs_cxx
def test_batch_size_roughly_doubles_spikes(capsys):
    # --threads 1: OpenMP's busy-waiting makes batched runs crawl on an oversubscribed machine
    one = run_json(capsys, CUBA, "--duration", "100", "--threads", "1")
    two = run_json(capsys, CUBA, "--duration", "100", "--batch-size", "2", "--threads", "1")
    assert two["batch_size"] == 2
    for pop in ("exc", "inh"):
        assert 1.4 < two["spikes"][pop] / one["spikes"][pop] < 2.6
        assert two["rates_hz"][pop] == pytest.approx(one["rates_hz"][pop], rel=0.3)


@needs_cxx
def test_save_writes_the_recordings(capsys, tmp_path):
    out = tmp_path / "run" / "cuba.npz"
    result = run_json(
        capsys, CUBA, "--duration", "50", "--batch-size", "2", "--threads", "1", "--save", str(out)
    )
    assert result["saved"] == str(out)
    with np.load(out) as data:
        keys = set(data.files)
        assert {"dt", "batch_size"} <= keys
        for pop in ("exc", "inh"):
            assert {f"spikes/{pop}/times", f"spikes/{pop}/ids", f"spikes/{pop}/batch"} <= keys
            assert data[f"spikes/{pop}/ids"].size == result["spikes"][pop]
        assert int(data["batch_size"]) == 2
        assert set(np.unique(data["spikes/exc/batch"])) == {0, 1}
        assert data["spikes/exc/times"].max() < 50.0


@needs_cxx
def test_human_summary(capsys):
    assert main(["run", CUBA, "--duration", "20", "--threads", "1", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cuba: 4000 neurons")
    assert "build" in out and "run" in out and "200 steps" in out
    assert "exc" in out and "inh" in out and "Hz" in out


@needs_cxx
def test_default_records_every_spiking_population(capsys, tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(
        textwrap.dedent(
            """\
        duration: 20
        populations:
          src: {size: 20, model: poisson, init: {rate: 200.0}}
          out: {size: 5, model: lif, params: {v_th: -64.0}}
          li: {size: 5, model: leaky_integrator}
        projections:
          p: {pre: src, post: out, weight_update: {model: static_constant, params: {w: 1.0}},
              postsynaptic: delta}
        """
        )
    )
    result = run_json(capsys, str(path))
    assert result["network"] == "small"
    assert set(result["spikes"]) == {"src", "out"}  # li has no threshold
    assert result["spikes"]["src"] > 0


@needs_cxx
def test_stdp_example_outputs_fire(capsys):
    result = run_json(capsys, STDP_EXAMPLE, "--duration", "200", "--threads", "1")
    assert result["batch_size"] == 8
    assert result["spikes"]["input"] > 0
    assert result["spikes"]["output"] > 0
    assert 5 < result["rates_hz"]["input"] < 40


def test_bad_file_is_one_clean_line(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("populations:\n  a:\n    size: 10\n    model: lfi\n")
    assert main(["run", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"spikeforge: error: {path}:4: ")
    assert "unknown neuron model 'lfi'" in lines[0]
    assert "Traceback" not in err


def test_verbose_adds_the_traceback(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("populations: {a: {size: 0, model: lif}}\n")
    assert main(["run", str(path), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("spikeforge: error: ")


def test_usage_errors(capsys, tmp_path):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    path = tmp_path / "nodur.yaml"
    path.write_text("populations: {a: {size: 1, model: lif}}\n")
    assert main(["run", str(path)]) == 2
    assert "--duration" in capsys.readouterr().err
    assert main(["run", CUBA, "--batch-size", "0"]) == 2
    assert main(["run", CUBA, "--duration", "-5"]) == 2
    assert main([]) == 2
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spikeforge {__version__}"


def test_unknown_backend_is_a_usage_error(capsys, tmp_path):
    assert main(["run", CUBA, "--duration", "1", "--backend", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tpu'" in err and "Traceback" not in err
    path = tmp_path / "tpu.yaml"
    path.write_text("duration: 1\nbackend: tpu\npopulations: {a: {size: 1, model: lif}}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spikeforge: error: {path}:2: backend: unknown backend 'tpu'") and err.count("\n") == 1


@needs_cxx
def test_console_script_in_a_subprocess(tmp_path):
    cmd = [sys.executable, "-m", "spikeforge.cli", "run", CUBA, "--json", "--duration", "20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["steps"] == 200 and result["spikes"]["exc"] > 0

    bad = tmp_path / "bad.yaml"
    bad.write_text("populations:\n  a: {size: 10, model: lif\n")
    proc = subprocess.run(
        [sys.executable, "-m", "spikeforge.cli", "run", str(bad)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        f"spikeforge: error: {bad}:2: invalid YAML"
    )


# -- exit statuses: 2 for a wrong command line or input file, 1 for failed work (docs/cli.md) --


SMALL = "duration: 1.0\npopulations: {a: {size: 2, model: poisson, init: {rate: 100.0}, record: [spikes]}}\n"


@pytest.mark.parametrize("argv_of, text", [
    (lambda p: ["run", p, "--duration", "0.05"], SMALL),  # not a multiple of dt
    (lambda p: ["run", p, "--threads", "0"], SMALL),  # argparse
    (lambda p: ["run", p + ".missing"], SMALL),
    (lambda p: ["build", p, "--out", p + ".out"], "populations: {a: {size: 2, model: lif, params: {tau_m: -1}}}\n"),
    (lambda p: ["show-code", p], "populations: {a: {size: 2, model: nope}}\n"),
    (lambda p: ["train", p], "data: {kind: digits}\nnetwork: {hidden: {model: lif, size: 0}}\n"),
])
def test_usage_errors_exit_2(capsys, tmp_path, argv_of, text):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    assert main(argv_of(str(path))) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_runtime_errors_exit_1(capsys, tmp_path, monkeypatch):
    path = tmp_path / "f.yaml"
    path.write_text(SMALL)
    monkeypatch.setenv("CXX", "no-such-compiler-spikeforge")  # a valid file, but nothing can compile it
    for argv in (["run", str(path)], ["build", str(path), "--out", str(tmp_path / "out")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("spikeforge: error: ") and "no-such-compiler-spikeforge" in err
        assert err.count("\n") == 1


@needs_cxx
def test_an_output_that_cannot_be_written_exits_1(capsys, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(SMALL)
    (tmp_path / "a_file").write_text("")
    assert main(["run", str(path), "--threads", "1", "--save", str(tmp_path / "a_file" / "out.npz")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("spikeforge: error: cannot save recordings to ") and "Traceback" not in err
