"""spikeforge train: YAML jobs, JSON results, checkpoints, errors with file and line."""

import json
import math

import pytest

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


@pytest.mark.slow
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
    # the loss is a mean per step of the readout window: near ln 10 after one epoch, not summed over
    # the window's steps (about 45 before)
    assert 0 < out["train_loss"] < 1.2 * math.log(10) and 0 < out["test_loss"] < 1.2 * math.log(10), out
    assert out["train_loss"] == out["history"][-1]["train_loss"]
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


REGRESSION_JOB = """\
name: tiny_pattern
dt: 1.0
data:
  kind: pattern_generation
  options: {n_outputs: 2, duration: 60.0, n_inputs: 8}
  n_samples: 2
  test_fraction: 0.5
network:
  hidden: {model: lif_subtractive, size: 12, params: {tau_m: 20.0, v_th: 0.6, r_m: 20.0}}
  recurrent: true
  tau_out: 20.0
training:
  epochs: 3
  batch_size: 1
  lr: 0.01
"""


def test_train_reports_the_normalised_mse_of_a_regression(tmp_path, capsys):
    import numpy as np
    import pytest

    from spikeforge.training.config import load_training
    from spikeforge.training.datasets import normalized_mse
    from spikeforge.training.trainer import Trainer

    path = tmp_path / "pattern.yaml"
    path.write_text(REGRESSION_JOB)
    ckpt = tmp_path / "ck.npz"
    assert main(["train", str(path), "--json", "--checkpoint", str(ckpt)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"test_mse", "test_nmse", "train_mse", "train_nmse"} <= set(out)
    assert "test_accuracy" not in out and np.isfinite(out["test_nmse"]) and out["test_nmse"] > 0
    # the same trained network (from the checkpoint) predicts the readout traces again
    job = load_training(path)
    trainer = Trainer(job.config, **job.trainer_options)
    trainer.load_checkpoint(ckpt)
    window = job.test.readout_mask
    target = np.stack([s.target for s in job.test], axis=1)
    assert out["test_nmse"] == pytest.approx(normalized_mse(trainer.predict(job.test)[window], target[window]),
                                             rel=1e-9)
    # ... and it is the reported mse over the variance of the target
    assert out["test_nmse"] == pytest.approx(out["test_mse"] / np.var(target[window], dtype=np.float64), rel=1e-4)
    assert out["train_nmse"] == pytest.approx(out["train_mse"] / np.var(target[window], dtype=np.float64), rel=1e-6)
    # the text summary shows it next to the mse
    assert main(["train", str(path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test_mse" in text and "test_nmse" in text and "train_nmse" in text


@pytest.mark.parametrize("line,value,message", [
    ("  test_fraction: 0.5", "1.0", "data.test_fraction: must be in [0, 1)"),
    ("  test_fraction: 0.5", "1.5", "data.test_fraction: must be in [0, 1)"),
    ("  test_fraction: 0.5", "-0.1", "data.test_fraction: must be in [0, 1)"),
    ("  lr: 0.01", "0", "training.lr: must be positive"),
])
def test_bad_training_numbers_name_file_line_and_field(tmp_path, capsys, line, value, message):
    """test_fraction 1.0 trained on nothing and printed loss 0; 1.5 gave a traceback."""
    key = line.split(":")[0]
    text = REGRESSION_JOB.replace(line, f"{key}: {value}")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    number = text.splitlines().index(f"{key}: {value}") + 1
    assert main(["train", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert f"{path}:{number}: {message}" in captured.err, captured.err
    assert "Traceback" not in captured.err and "epochs in" not in captured.out


@pytest.mark.parametrize("extra,message", [
    ("  reduce: max\n", "training.reduce: expected mean or sum, got 'max'"),
    ("  seed: -2\n", "training.seed: must be a non-negative integer"),
    ("  clamp: [1.0, -1.0]\n", "training.clamp: expected [low, high], two finite numbers with low < high"),
    ("  clamp: [true, 2]\n", "training.clamp: expected [low, high]"),
])
def test_bad_training_settings_name_the_line(tmp_path, capsys, extra, message):
    path = tmp_path / "job.yaml"
    text = REGRESSION_JOB + extra
    path.write_text(text)
    assert main(["train", str(path), "--no-progress"]) == 2
    assert f"{path}:{len(text.splitlines())}: {message}" in capsys.readouterr().err


def test_a_test_fraction_of_0_trains_on_everything_and_reports_no_test_metrics(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(REGRESSION_JOB.replace("test_fraction: 0.5", "test_fraction: 0.0").replace("epochs: 3",
                                                                                               "epochs: 1"))
    assert main(["train", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_samples"] == 2 and out["test_samples"] == 0
    assert not any(k.startswith("test_") and k != "test_samples" for k in out), out
    path.write_text(REGRESSION_JOB.replace("test_fraction: 0.5", "test_fraction: 0.9"))
    assert main(["train", str(path)]) == 2  # 0.9 of 2 samples holds out both
    assert "no training samples: test_fraction 0.9 of 2 samples holds out all of them" in capsys.readouterr().err
