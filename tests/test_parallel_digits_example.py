"""examples/digits_parallel.yaml: the digits job trained by the time-parallel method loads as
the parallel method, compiles and learns in one short epoch of a reduced network."""
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_parallel.yaml"


@pytest.mark.slow
def test_the_digits_parallel_example_learns_in_one_short_epoch(tmp_path, capsys):
    from spikeforge.cli import main
    from spikeforge.training.config import load_training
    from spikeforge.training.parallel import ParallelCompiler

    text = EXAMPLE.read_text()
    assert "method: parallel" in text and "kind: digits" in text
    small = text.replace("size: 512", "size: 64").replace("sqrt(512)", "sqrt(64)")
    assert small != text
    path = tmp_path / "digits_parallel.yaml"
    path.write_text(small)
    assert isinstance(load_training(path).trainer_options["compiler"], ParallelCompiler)
    assert main(["train", str(path), "--json", "--epochs", "1", "--threads", "1", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 1 and out["test_samples"] == 359
    assert out["test_accuracy"] > 0.25, out   # chance: 10 %
