"""Checkpoints: every array and every metadata field is checked before a resume, temporary
files of a crashed write are removed, and an unwritable path is refused before training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.fileio import remove_stale_temporaries
from spikeforge.training.trainer import CheckpointError, Trainer
from tests.test_trainer import _config, _toy

ROOT = Path(__file__).resolve().parent.parent
ARRAYS = ["weight/w_in", "weight/w_rec", "weight/w_out", "weight/b_out", "feedback",
          *(f"adam/{k}_{w}" for w in ("w_in", "w_rec", "w_out", "b_out") for k in ("m", "v"))]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trainer and the checkpoint it wrote after one epoch."""
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    trainer = Trainer(_config(name="ckpt_toy"), batch_size=8, lr=0.01, seed=5)
    trainer.fit(_toy(n=16), epochs=1, progress=False, checkpoint=path)
    return trainer, path


def _contents(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _meta(data):
    return json.loads(bytes(data["meta"]).decode())


def _write(path, data, meta=None):
    if meta is not None:
        data = dict(data, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    np.savez(path, **data)
    return path


def _refused(trainer, path, *needles):
    before = trainer.weights
    with pytest.raises(CheckpointError) as err:
        trainer.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    for name, w in trainer.weights.items():  # a refused checkpoint changes nothing
        np.testing.assert_array_equal(w, before[name])
    return message


@pytest.mark.parametrize("name", ARRAYS)
def test_a_missing_array_is_refused_by_name(saved, tmp_path, name):
    trainer, path = saved
    data = _contents(path)
    del data[name]
    _refused(trainer, _write(tmp_path / "c.npz", data), f"missing array '{name}'")


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.update({"weight/w_in": d["weight/w_in"][:, :-1]}),
     "'weight/w_in' has shape (16, 11), expected (16, 12)"),
    (lambda d: d.update({"adam/m_w_out": d["adam/m_w_out"].T}), "'adam/m_w_out' has shape (16, 2)"),
    (lambda d: d.update({"feedback": d["feedback"][:1]}), "'feedback' has shape (1, 2)"),
    (lambda d: d.update({"weight/w_rec": d["weight/w_rec"].astype(np.float64)}), "'weight/w_rec' has dtype float64"),
    (lambda d: d.update({"weight/b_out": d["weight/b_out"].astype(np.int64)}), "'weight/b_out' has dtype int64"),
    (lambda d: d["weight/w_out"].__setitem__((0, 3), np.nan), "'weight/w_out' has 1 non-finite values"),
    (lambda d: d["adam/m_w_in"].__setitem__((2, 2), np.inf), "'adam/m_w_in' has 1 non-finite values"),
    (lambda d: d["adam/v_w_rec"].__setitem__((1, 0), -1.0), "'adam/v_w_rec' (Adam's second moment) has negative"),
    (lambda d: d.update({"extra": np.zeros(3)}), "unexpected array 'extra'"),
])
def test_bad_arrays_are_refused(saved, tmp_path, change, needle):
    trainer, path = saved
    data = {k: v.copy() for k, v in _contents(path).items()}
    change(data)
    _refused(trainer, _write(tmp_path / "c.npz", data), needle)


@pytest.mark.parametrize("change,needle", [
    (lambda m: m.pop("epoch"), "meta: missing key 'epoch'"),
    (lambda m: m.pop("rng"), "meta: missing key 'rng'"),
    (lambda m: m.pop("network"), "meta: missing key 'network'"),
    (lambda m: m.pop("training"), "meta: missing key 'training'"),
    (lambda m: m.update(epoch="1"), "meta.epoch must be a non-negative integer, got '1'"),
    (lambda m: m.update(epoch=True), "meta.epoch must be a non-negative integer"),
    (lambda m: m.update(step=-3), "meta.step must be a non-negative integer, got -3"),
    (lambda m: m.update(step=2.5), "meta.step must be a non-negative integer"),
    (lambda m: m.update(history={"a": 1}), "meta.history must be a list"),
    (lambda m: m.update(history=[]), "meta.history has 0 epoch logs but meta.epoch is 1"),
    (lambda m: m["history"][0].update(train_loss="x"), "meta.history[0].train_loss must be a finite number"),
    (lambda m: m.update(rng={"bit_generator": "PCG64", "state": 3}), "meta.rng is not the state of a PCG64"),
    (lambda m: m.update(rng=[1, 2]), "meta.rng is not the state of a PCG64"),
    (lambda m: m.update(version=1), "has format 1, this spikeforge reads format 2"),
    (lambda m: m.update(version="2"), "has format '2'"),
    (lambda m: m.update(colour="blue"), "meta: unknown key 'colour'"),
    (lambda m: m.update(network=[1]), "meta.network must be a JSON object"),
    (lambda m: m["network"].update(n_hidden=32), "another network: network.n_hidden is 32 in the checkpoint but 16"),
    (lambda m: m["network"]["params"].update(tau_m=20.0), "network.params.tau_m is 20.0 in the checkpoint but 10.0"),
    (lambda m: m["network"]["model"]["odes"].update(v="0"), "network.model.odes.v is '0' in the checkpoint"),
    (lambda m: m["training"].update(batch_size=4), "other training settings: training.batch_size is 4"),
    (lambda m: m["training"]["adam"].update(beta1=0.5), "training.adam.beta1 is 0.5"),
])
def test_bad_metadata_is_refused_by_field(saved, tmp_path, change, needle):
    trainer, path = saved
    data = _contents(path)
    meta = _meta(data)
    change(meta)
    _refused(trainer, _write(tmp_path / "c.npz", data, meta), needle)


@pytest.mark.parametrize("raw,needle", [
    (b"{not json", "'meta' is not valid JSON"),
    (b"\xff\xfe\x00", "'meta' is not UTF-8 text"),
    (b"[1, 2, 3]", "'meta' must be a JSON object, got list"),
    (b"NaN", "'meta' must be a JSON object"),
])
def test_garbage_meta_is_refused(saved, tmp_path, raw, needle):
    trainer, path = saved
    data = dict(_contents(path), meta=np.frombuffer(raw, dtype=np.uint8))
    _refused(trainer, _write(tmp_path / "c.npz", data), needle)


def test_meta_of_the_wrong_kind_or_not_an_archive_is_refused(saved, tmp_path):
    trainer, path = saved
    data = _contents(path)
    _refused(trainer, _write(tmp_path / "a.npz", dict(data, meta=np.zeros((2, 2)))), "'meta' must be a 1-D uint8")
    del data["meta"]
    _refused(trainer, _write(tmp_path / "b.npz", data), "missing array 'meta'")
    np.save(tmp_path / "single.npy", np.zeros(3))
    _refused(trainer, tmp_path / "single.npy", "not a checkpoint's .npz archive")
    _refused(trainer, tmp_path, "is a folder")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))  # never unpickled
    _refused(trainer, tmp_path / "pickled.npz", "'meta' is not readable")
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    _refused(trainer, tmp_path / "cut.npz", "not readable")


def test_a_checkpoint_of_another_precision_is_refused(saved, tmp_path):
    _, path = saved
    other = Trainer(_config(name="ckpt_toy_double", precision="double"), batch_size=8, seed=5)
    _refused(other, path, "network.precision is 'float' in the checkpoint but 'double' here")


JOB = """\
name: ckpt_pattern
dt: 1.0
data:
  kind: pattern_generation
  options: {n_outputs: 2, duration: 30.0, n_inputs: 8}
  n_samples: 4
  test_fraction: 0.5
network:
  hidden: {model: lif_subtractive, size: 12, params: {tau_m: 20.0, v_th: 0.6, r_m: 20.0}}
training:
  epochs: 1
  batch_size: 2
  lr: 0.01
"""


def test_cli_resume_from_a_checkpoint_without_w_in_is_one_clear_error(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    ckpt = tmp_path / "run.npz"
    assert main(["train", str(job), "--no-progress", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    data = _contents(ckpt)
    del data["weight/w_in"]
    _write(ckpt, data)
    code = main(["train", str(job), "--no-progress", "--checkpoint", str(ckpt), "--resume", "--epochs", "2"])
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(ckpt) in lines[0] and "missing array 'weight/w_in'" in lines[0], captured.err
    assert "Traceback" not in captured.err and "epochs in" not in captured.out


# -- writability before the first epoch ---------------------------------------------------------------


def test_an_unwritable_checkpoint_path_is_refused_before_the_first_epoch(tmp_path):
    (tmp_path / "a_file").write_text("x")
    trainer = Trainer(_config(name="ckpt_toy"), batch_size=8, seed=5)
    for bad, needle in [(tmp_path / "a_file" / "run.npz", "is not a folder"), (tmp_path, "is a folder")]:
        with pytest.raises(CheckpointError, match="cannot be written") as err:
            trainer.fit(_toy(n=16), epochs=1, progress=False, checkpoint=bad)
        assert needle in str(err.value) and str(bad) in str(err.value)
        assert trainer.epoch == 0 and trainer.step == 0 and trainer.history == []  # nothing was trained


def test_cli_refuses_an_unwritable_checkpoint_before_training(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    (tmp_path / "a_file").write_text("x")
    bad = tmp_path / "a_file" / "run.npz"
    assert main(["train", str(job), "--no-progress", "--checkpoint", str(bad)]) != 0
    captured = capsys.readouterr()
    assert f"checkpoint '{bad}' cannot be written" in captured.err and "epochs in" not in captured.out


# -- temporary files of a crashed write ----------------------------------------------------------------

WRITER = """\
import os, signal, sys, time
from spikeforge.fileio import atomic_write

def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    open(sys.argv[2], "w").close()  # tell the test the temporary file exists
    if sys.argv[3] == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)

atomic_write(sys.argv[1], write)
"""


def _writer(tmp_path, target, mode):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    flag = tmp_path / f"started_{mode}"
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(flag), mode], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None or mode == "crash", "the writer ended early"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_a_crash_mid_write_leaves_no_temporary_file_after_the_next_save(saved, tmp_path):
    trainer, _ = saved
    target = tmp_path / "run.npz"
    live = _writer(tmp_path, target, "live")  # a writer still at work keeps its file
    try:
        crashed = _writer(tmp_path, target, "crash")
        assert crashed.wait(timeout=60) == -signal.SIGKILL
        leftovers = list(tmp_path.glob("run.npz.*.tmp"))
        assert len(leftovers) == 2 and not target.exists()
        trainer.save_checkpoint(target)
        remaining = list(tmp_path.glob("run.npz.*.tmp"))
        assert len(remaining) == 1 and f".{live.pid}@" in remaining[0].name, remaining
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(target) == remaining  # now that writer is gone too
    trainer.load_checkpoint(target)


def test_loading_removes_the_temporary_files_of_a_crashed_write(saved, tmp_path):
    trainer, path = saved
    target = tmp_path / "run.npz"
    target.write_bytes(path.read_bytes())
    crashed = _writer(tmp_path, target, "crash")
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    assert len(list(tmp_path.glob("run.npz.*.tmp"))) == 1
    fresh = Trainer(_config(name="ckpt_toy"), batch_size=8, lr=0.01, seed=9)
    fresh.load_checkpoint(target)
    assert not list(tmp_path.glob("run.npz.*.tmp"))
    assert os.path.getsize(target) == os.path.getsize(path)
    assert fresh.epoch == 1 and len(fresh.history) == 1
    for name, w in trainer.weights.items():
        np.testing.assert_array_equal(fresh.weights[name], w)
