"""Learning-rate schedules: their values, training.lr_schedule in YAML (errors with file and
line), and a real training run that steps with the scheduled learning rate."""

import json
import math
import pickle

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.errors import ConfigError, NetworkError
from spikeforge.training.config import load_training
from spikeforge.training.schedules import Constant, CosineDecay, ExponentialDecay, StepDecay, Warmup
from spikeforge.training.trainer import Trainer
from tests.test_training_cli import REGRESSION_JOB

# -- the schedules ------------------------------------------------------------------------------


def test_step_decay_halves_every_n_epochs():
    s = StepDecay(0.01, every=10, factor=0.5)
    assert [s(e, 1) for e in (0, 9, 10, 19, 20, 35)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.00125])
    assert s(3, 1) == s(3, 5000)  # per epoch: the step does not matter


def test_exponential_decay_per_epoch_and_per_step():
    s = ExponentialDecay(0.1, gamma=0.9)
    assert [s(e, 7) for e in (0, 1, 3)] == pytest.approx([0.1, 0.09, 0.1 * 0.9**3])
    s = ExponentialDecay(0.1, gamma=0.9, per="step")
    assert [s(0, k) for k in (1, 2, 4)] == pytest.approx([0.1, 0.09, 0.1 * 0.9**3])  # step 1 is the first
    assert s(0, 4) == s(9, 4)


def test_cosine_decay_spans_the_epochs_and_ends_at_min_lr():
    s = CosineDecay(0.01, epochs=10, min_lr=1e-4)
    assert s(0, 1) == pytest.approx(0.01)
    assert s(5, 1) == pytest.approx((0.01 + 1e-4) / 2)
    assert s(2, 1) == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * 0.2)) / 2)
    assert s(10, 1) == s(25, 1) == pytest.approx(1e-4)
    values = [s(e, 1) for e in range(11)]
    assert values == sorted(values, reverse=True)
    longer = s.over(20)
    assert longer == CosineDecay(0.01, epochs=20, min_lr=1e-4) and longer(10, 1) == pytest.approx(s(5, 1))


def test_warmup_ramps_linearly_over_the_first_steps():
    s = Warmup(0.01, steps=4)
    assert [s(0, k) for k in (1, 2, 3, 4, 5, 1000)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    s = Warmup(StepDecay(0.01, every=1, factor=0.5), steps=2)
    assert [s(0, 1), s(1, 2), s(2, 3)] == pytest.approx([0.005, 0.005, 0.0025])
    assert Warmup(CosineDecay(0.01, epochs=5), steps=3).over(8) == Warmup(CosineDecay(0.01, epochs=8), steps=3)
    assert Constant(0.02)(7, 99) == 0.02 and Constant(0.02).over(3) == Constant(0.02)


def test_schedules_pickle():
    for s in (Constant(0.01), StepDecay(0.01, every=2, factor=0.5), ExponentialDecay(0.01, 0.9, per="step"),
              CosineDecay(0.01, epochs=4, min_lr=1e-3), Warmup(CosineDecay(0.01, epochs=4), steps=3)):
        back = pickle.loads(pickle.dumps(s))
        assert back == s and back(2, 5) == s(2, 5)


@pytest.mark.parametrize("make, message", [
    (lambda: StepDecay(0.01, every=0, factor=0.5), "every must be a positive integer"),
    (lambda: StepDecay(0.01, every=2.5, factor=0.5), "every must be a positive integer"),
    (lambda: StepDecay(0.01, every=2, factor=0.0), r"factor must be in \(0, 1\]"),
    (lambda: StepDecay(0.01, every=2, factor=-0.5), r"factor must be in \(0, 1\]"),
    (lambda: StepDecay(0.01, every=2, factor=2.0), r"factor must be in \(0, 1\]"),
    (lambda: ExponentialDecay(0.01, gamma=float("nan")), "gamma must be a finite number"),
    (lambda: ExponentialDecay(0.01, gamma=0.9, per="batch"), "per must be 'epoch' or 'step'"),
    (lambda: CosineDecay(float("inf"), epochs=3), "lr must be a finite number"),
    (lambda: CosineDecay(0.01, epochs=3, min_lr=0.1), r"min_lr must be in \[0, 0.01\]"),
    (lambda: CosineDecay(0.01, epochs=0), "epochs must be a positive integer"),
    (lambda: Warmup(0.01, steps=0), "steps must be a positive integer"),
    (lambda: Constant(-1.0), r"lr must be in \[0, inf\)"),
])
def test_bad_schedule_arguments_are_refused(make, message):
    with pytest.raises(NetworkError, match=message):
        make()


# -- training.lr_schedule in YAML -------------------------------------------------------------


def _job(tmp_path, schedule: str, **replace):
    text = REGRESSION_JOB + schedule
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path, text


@pytest.mark.parametrize("schedule, expected", [
    ("", 0.01),
    ("  lr_schedule: {kind: constant}\n", Constant(0.01)),
    ("  lr_schedule: {kind: step, every: 2, factor: 0.5}\n", StepDecay(0.01, every=2, factor=0.5)),
    ("  lr_schedule: {kind: exponential, gamma: 0.98}\n", ExponentialDecay(0.01, gamma=0.98)),
    ("  lr_schedule: {kind: exponential, gamma: 0.98, per: step}\n", ExponentialDecay(0.01, 0.98, per="step")),
    ("  lr_schedule: {kind: cosine, min_lr: 1e-4}\n", CosineDecay(0.01, epochs=3, min_lr=1e-4)),
    ("  lr_schedule: {kind: cosine, warmup_steps: 5}\n", Warmup(CosineDecay(0.01, epochs=3), steps=5)),
    ("  lr_schedule: {kind: step, every: 1, factor: 0.5, warmup_steps: 0}\n", StepDecay(0.01, 1, 0.5)),
])
def test_yaml_builds_the_schedule_from_lr(tmp_path, schedule, expected):
    path, _ = _job(tmp_path, schedule)
    assert load_training(path).trainer_options["lr"] == expected


BAD = "  lr_schedule:\n    kind: step\n    every: 2\n    factor: 0.5\n"


@pytest.mark.parametrize("schedule, bad_line, message", [
    (BAD.replace("kind: step", "kind: linear"), "    kind: linear", "unknown schedule 'linear' (known: constant, "),
    (BAD.replace("factor: 0.5", "factor: -0.5"), "    factor: -0.5", "lr_schedule.factor: must be positive"),
    (BAD.replace("factor: 0.5", "factor: 0"), "    factor: 0", "lr_schedule.factor: must be positive"),
    (BAD.replace("factor: 0.5", "factor: 2"), "    factor: 2", "lr_schedule.factor: must be at most 1"),
    (BAD.replace("factor: 0.5", "factor: .nan"), "    factor: .nan", "lr_schedule.factor: expected a finite number"),
    (BAD.replace("every: 2", "every: 0"), "    every: 0", "lr_schedule.every: must be a positive integer"),
    (BAD.replace("every: 2", "every: 1.5"), "    every: 1.5", "lr_schedule.every: expected an integer"),
    (BAD.replace("factor: 0.5", "facter: 0.5"), "    facter: 0.5", "did you mean 'factor'"),
    (BAD + "    gamma: 0.9\n", "    gamma: 0.9", "(kind step): unknown key 'gamma' (allowed: kind, every, factor, "),
    (BAD.replace("    factor: 0.5\n", ""), "  lr_schedule:", "missing required key 'factor'"),
    (BAD + "    warmup_steps: -3\n", "    warmup_steps: -3", "warmup_steps: must be a non-negative integer"),
    ("  lr_schedule:\n    kind: exponential\n    gamma: .inf\n", "    gamma: .inf", "expected a finite number"),
    ("  lr_schedule:\n    kind: exponential\n    gamma: 0.9\n    per: batch\n", "    per: batch",
     "per: expected epoch or step"),
    ("  lr_schedule:\n    kind: cosine\n    min_lr: 0.5\n", "    min_lr: 0.5", "min_lr: must be in [0, training.lr"),
    ("  lr_schedule: [step]\n", "  lr_schedule: [step]", "lr_schedule: expected a mapping"),
])
def test_yaml_schedule_errors_name_file_line_and_field(tmp_path, schedule, bad_line, message):
    path, text = _job(tmp_path, schedule)
    line = text.splitlines().index(bad_line) + 1
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert err.value.filename == str(path) and err.value.line == line, str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: training.lr_schedule")
    assert message in str(err.value)


def test_yaml_negative_lr_and_non_positive_epochs_or_batch_are_refused(tmp_path):
    path, text = _job(tmp_path, "", **{"lr: 0.01": "lr: -0.01"})
    with pytest.raises(ConfigError, match=r":15: training.lr: must not be negative"):
        load_training(path)
    path, text = _job(tmp_path, "  lr_schedule: {kind: cosine}\n", **{"epochs: 3": "epochs: 0"})
    with pytest.raises(ConfigError, match=r":13: training.epochs: must be a positive integer, got 0"):
        load_training(path)


def test_cli_schedule_error_names_file_and_line(tmp_path, capsys):
    path, text = _job(tmp_path, BAD.replace("kind: step", "kind: stepp"))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{text.splitlines().index('    kind: stepp') + 1}: " in err and "unknown schedule 'stepp'" in err


# -- training with a schedule -------------------------------------------------------------------


def test_cli_trains_with_the_scheduled_learning_rate(tmp_path, capsys):
    # one training trial, batch 1: epoch e is optimiser step e + 1
    path, _ = _job(tmp_path, BAD.replace("every: 2", "every: 1") + "    warmup_steps: 2\n")
    assert main(["train", str(path), "--json"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    expected = Warmup(StepDecay(0.01, every=1, factor=0.5), steps=2)
    assert [h["lr"] for h in history] == pytest.approx([expected(e, e + 1) for e in range(3)])
    assert [h["lr"] for h in history] == pytest.approx([0.005, 0.005, 0.0025])
    # --epochs stretches a cosine schedule over the epochs of the run
    path, _ = _job(tmp_path, "  lr_schedule: {kind: cosine, min_lr: 0.001}\n")
    assert main(["train", str(path), "--json", "--epochs", "4"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    assert [h["lr"] for h in history] == pytest.approx([CosineDecay(0.01, 4, 0.001)(e, 1) for e in range(4)])


def test_trainer_steps_with_the_schedule_it_is_given(tmp_path):
    path, _ = _job(tmp_path, "")
    job = load_training(path)
    options = dict(job.trainer_options, lr=None)

    def weights(lr):
        trainer = Trainer(job.config, **dict(options, lr=lr))
        trainer.fit(job.train, epochs=2, progress=False)
        return trainer.weights, [h["lr"] for h in trainer.history]

    plain, lrs = weights(0.01)
    assert lrs == [0.01, 0.01]
    constant, _ = weights(Constant(0.01))
    for name, w in plain.items():
        np.testing.assert_array_equal(constant[name], w, err_msg=name)
    decayed, lrs = weights(StepDecay(0.01, every=1, factor=0.1))
    assert lrs == pytest.approx([0.01, 0.001])
    assert any(not np.array_equal(decayed[name], w) for name, w in plain.items())


def test_yaml_non_positive_batch_size_is_refused_with_its_line(tmp_path):
    path, text = _job(tmp_path, "", **{"batch_size: 1": "batch_size: 0"})
    line = text.splitlines().index("  batch_size: 0") + 1
    with pytest.raises(ConfigError, match=rf":{line}: training.batch_size: must be a positive integer, got 0"):
        load_training(path)
