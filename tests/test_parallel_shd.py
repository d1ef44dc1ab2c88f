"""examples/shd_parallel.yaml: the SHD job of the time-parallel method, loaded as shipped (its
data paths relative to the file, so a copy next to a ``data/`` folder of small files in SHD's
HDF5 layout reads them) and trained by ``spikeforge train`` for two short epochs of a few
samples: the shipped network, rule and regulariser compile, run on SHD's 700 channels and learn."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_datasets import write_shd

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shd_parallel.yaml"


def _samples(n, seed):
    """SHD-like trials (seconds, channels 0..699, 20 classes): each class fires its own band of
    35 channels during the first 0.3 s, plus sparse background over every channel up to 1.2 s
    (later than the example's max_time, so that the cut is exercised)."""
    rng = np.random.default_rng(seed)
    times, units, labels = [], [], []
    for i in range(n):
        label = (3 * i) % 20
        k_band, k_noise = 300, 100
        t = np.concatenate([rng.uniform(0.0, 0.3, k_band), rng.uniform(0.0, 1.2, k_noise)])
        u = np.concatenate([label * 35 + rng.integers(0, 35, k_band), rng.integers(0, 700, k_noise)])
        order = np.argsort(t)
        times.append(t[order])
        units.append(u[order])
        labels.append(label)
    return times, units, labels


@pytest.mark.slow
def test_the_shd_parallel_example_as_shipped_trains_on_a_small_shd_file(tmp_path, capsys):
    pytest.importorskip("h5py")
    from spikeforge.cli import main
    from spikeforge.training.config import load_training
    from spikeforge.training.parallel import ParallelCompiler
    from spikeforge.training.spike_rules import BernoulliSigmoid

    (tmp_path / "examples").mkdir()
    (tmp_path / "data").mkdir()
    path = tmp_path / "examples" / "shd_parallel.yaml"
    shutil.copyfile(EXAMPLE, path)  # unchanged: ../data/shd_{train,test}.h5 from its folder
    write_shd(tmp_path / "data" / "shd_train.h5", *_samples(8, 0))
    write_shd(tmp_path / "data" / "shd_test.h5", *_samples(4, 1))

    job = load_training(path)
    compiler = job.trainer_options["compiler"]
    assert isinstance(compiler, ParallelCompiler) and isinstance(compiler.spike, BernoulliSigmoid)
    assert compiler.reg_rate > 0 and compiler.readout.name == "mean"
    pops = job.config.populations
    assert pops["inp"].size == 700 and pops["out"].size == 20
    assert job.trainer_options["hidden"] == ["h1", "h2"] and all(128 <= pops[h].size <= 256 for h in ("h1", "h2"))
    assert len(job.train) == 8 and len(job.test) == 4 and job.train.duration == 1000.0
    assert max(float(s.times.max()) for s in job.train) < 1000.0  # spikes after max_time dropped

    ck = tmp_path / "ck.npz"
    assert main(["train", str(path), "--json", "--epochs", "2", "--batch-size", "4", "--threads", "1",
                 "--no-progress", "--checkpoint", str(ck)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["train_samples"] == 8 and out["test_samples"] == 4
    first, last = out["history"]
    assert all(math.isfinite(h[k]) for h in (first, last) for k in ("train_loss", "val_loss"))
    assert 0.0 <= out["test_accuracy"] <= 1.0
    assert 0 < last["train_rate_hz"] < 500  # the stochastic layers spike, far from every step
    assert last["train_loss"] < first["train_loss"], out["history"]  # it learns (and the rates fall)
    with np.load(ck) as saved:
        assert {"weight/inp_h1_w", "weight/h1_h2_w", "weight/h2_out_w"} <= set(saved.files)
