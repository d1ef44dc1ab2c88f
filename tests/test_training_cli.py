"""spikeforge train: YAML jobs, JSON results, checkpoints, errors with file and line."""

import json

from spikeforge.cli import main

JOB = """\
name: tiny_digits
dt: 1.0
data:
  kind: digits
  options: {encoding: latency}
  test_fraction: 0.25
network:
  hidden: {model: lif_subtractive, size: 24, params: {tau_m: 20.0, v_th: 0.6, r_m: 10.0}}
  recurrent: true
  tau_out: 20.0
training:
  epochs: 1
  batch_size: 64
  lr: 0.005
"""


def test_train_prints_json_results(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    assert main(["train", str(path), "--json", "--checkpoint", str(tmp_path / "ck.npz")]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "epochs", "seconds",
                "samples_per_second"):
        assert key in out, key
    assert out["epochs"] == 1 and out["train_samples"] + out["test_samples"] == 1797
    assert 0.0 <= out["test_accuracy"] <= 1.0
    assert (tmp_path / "ck.npz").exists()
    # resume to 2 epochs from the checkpoint
    assert main(["train", str(path), "--json", "--epochs", "2", "--resume", "--checkpoint",
                 str(tmp_path / "ck.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


def test_train_errors_name_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(JOB.replace("tau_out: 20.0", "tau_outt: 20.0"))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:10:" in err and "tau_outt" in err and "did you mean 'tau_out'" in err
    path.write_text(JOB.replace("kind: digits", "kind: mnist"))
    assert main(["train", str(path)]) == 2
    assert "unknown data set 'mnist'" in capsys.readouterr().err
    path.write_text(JOB.replace("model: lif_subtractive", "model: lifx"))
    assert main(["train", str(path)]) == 2
    assert ":8:" in capsys.readouterr().err
