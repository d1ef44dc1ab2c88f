"""The command line explains itself: every subcommand's --help ends with examples, takes
-q/--quiet, and the summaries read as sentences (plurals, time units)."""

from __future__ import annotations

import pytest

from spikeforge.cli import _plural, _seconds, build_parser, main
from spikeforge.runtime.backends import backend_names

CUBA = "examples/cuba.yaml"


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_ends_with_examples_and_offers_quiet(name, capsys):
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    tail = text[text.index("\nexamples:\n"):].strip().splitlines()[1:]
    assert tail and all(line.startswith("  ") and "spikeforge" in line for line in tail)
    assert "-q, --quiet" in text


def test_top_level_help_ends_with_examples(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "doctor" in text and text.rstrip().splitlines()[-1].strip().startswith("spikeforge COMMAND --help")


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_argument_has_help(name):
    sub = _subcommands()[name]
    undocumented = [a.dest for a in sub._actions if not a.help]
    assert undocumented == []


def test_run_backend_lists_the_registered_backends(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "backend to run on: " + ", ".join(backend_names()) in text


def test_plurals_and_time_units():
    assert [_plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert [_seconds(t) for t in (0.00042, 0.0042, 0.052, 1.234, 125.0)] == \
        ["420 us", "4.2 ms", "52 ms", "1.23 s", "2 min 05 s"]


def test_run_summary_reads_as_a_sentence(tmp_path, capsys):
    one = tmp_path / "one.yaml"
    one.write_text("name: one\ndt: 0.1\nduration: 0.1\npopulations:\n  p:\n    size: 1\n    model: lif\n"
                   "    record: [spikes]\n")
    assert main(["run", str(one), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 neuron in 1 population, 0 projections" in out and "(1 step)" in out
    assert " 0.00 s" not in out


def test_diff_code_quiet_prints_nothing(tmp_path, capsys):
    changed = tmp_path / "cuba_slow.yaml"
    changed.write_text(open(CUBA).read().replace("tau_m: 20.0", "tau_m: 30.0", 1))
    assert main(["diff-code", "-q", CUBA, str(changed)]) == 1
    assert capsys.readouterr().out == ""
