"""Reading what spikeforge generates (show-code, diff-code) and looking at what a network did (plots)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.config import load_file

ROOT = Path(__file__).resolve().parent.parent
CUBA = str(ROOT / "examples" / "cuba.yaml")


def test_show_code_contains_the_source_equations(capsys):
    assert main(["show-code", CUBA]) == 0
    out = capsys.readouterr().out
    for text in ("dv/dt = (v_rest - v + r_m * i_syn) / tau_m  (unless refractory)  [exact]",
                 "threshold: v > v_th", "reset: v = v_reset", "integrator for exc: exact",
                 "dx/dt = -x / tau_syn", "neuron update of population 'exc' (3200 x lif; integrator: exact)"):
        assert text in out, text


@pytest.mark.parametrize("backend", ["cuda", "cuda-emu"])
def test_show_code_for_the_cuda_backends(backend, capsys):
    assert main(["show-code", CUBA, "--backend", backend, "--population", "exc"]) == 0
    out = capsys.readouterr().out
    assert "__global__" in out and "neuron_update_exc" in out and "threshold: v > v_th" in out
    assert "neuron_update_inh" not in out


def test_listed_kernels_match_the_built_ones(capsys):
    assert main(["show-code", CUBA, "--list", "--json", "--backend", "cuda"]) == 0
    listed = json.loads(capsys.readouterr().out)["kernels"]
    net, _ = load_file(CUBA)
    sim = net.build()
    assert [k["name"] for k in listed] == [k.name for k in sim.spec.kernels]
    first = listed[0]
    assert first["launch"]["block"] == 128 and first["launch"]["grid"] == [25, 1]
    assert {"array": "exc_v", "dims": "per element, per batch instance", "shape": [1, 3200]} in first["reads"]
    syn = next(k for k in listed if k["name"] == "presynaptic_update_exc_exc")
    assert any(r["array"] == "exc_exc_row_start" and "shared by the batch" in r["dims"] for r in syn["reads"])
    assert main(["show-code", CUBA, "--kernel", "nope"]) == 2


def test_generated_code_is_byte_identical_across_runs():
    """Two separate processes: same model, same text, same cache key."""
    code = ("import hashlib; from spikeforge.config import load_file;"
            "from spikeforge.runtime.build import cache_key;"
            f"net, _ = load_file({CUBA!r}); s = net.generated_code('cpu'); c = net.generated_code('cuda');"
            "print(hashlib.sha256((s + c).encode()).hexdigest(), cache_key(s, name='cuba'))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0].split()) == 2
    net, _ = load_file(CUBA)
    assert hashlib.sha256((net.generated_code("cpu") + net.generated_code("cuda")).encode()).hexdigest() == \
        runs[0].split()[0]


def test_diff_code_shows_what_changed(tmp_path, capsys):
    changed = tmp_path / "cuba_slow.yaml"
    changed.write_text(Path(CUBA).read_text().replace("tau_m: 20.0", "tau_m: 30.0", 1))
    assert main(["diff-code", CUBA, CUBA]) == 0
    assert capsys.readouterr().out == ""
    assert main(["diff-code", CUBA, str(changed)]) == 1
    out = capsys.readouterr().out
    assert "-    const scalar tau_m = 20.0f;" in out and "+    const scalar tau_m = 30.0f;" in out


def _png_ok(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # not a blank picture


def test_run_plot_writes_a_raster_png(tmp_path, capsys):
    out = tmp_path / "cuba.png"
    assert main(["run", CUBA, "--duration", "100", "--batch-size", "2", "--plot", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] == str(out)
    _png_ok(out)


@pytest.mark.slow
def test_train_plot_writes_curves(tmp_path, capsys):
    from tests.test_training_cli import JOB

    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("epochs: 1", "epochs: 2"))
    out = tmp_path / "curves.png"
    assert main(["train", str(job), "--json", "--plot", str(out)]) == 0
    capsys.readouterr()
    _png_ok(out)


def test_saved_recordings_have_the_documented_layout(tmp_path):
    net, _ = load_file(CUBA, batch_size=2)
    net.record_var("exc", "v")
    sim = net.build()
    sim.run(duration=20.0)
    path = sim.save(tmp_path / "rec.npz")
    with np.load(path) as f:
        expected = {"dt", "batch_size", "spikes/exc/times", "spikes/exc/ids", "spikes/exc/batch", "vars/exc/v"}
        assert expected <= set(f.files)
        assert f["vars/exc/v"].shape == (200, 2, 3200)
        assert set(np.unique(f["spikes/exc/batch"])) <= {0, 1}
