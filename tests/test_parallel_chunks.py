"""The time-parallel method in chunks (``ParallelCompiler(chunk=C)``): a sequence of T steps run
by kernels of C steps, chunk after chunk (C not dividing T), against the same network run over
the whole sequence at once: spikes and forward values the same (float: bit for bit), losses and
gradients equal to 1e-12 in double, for every spike rule with the rate regulariser, the per-step
and an aggregated readout; the memory it keeps, and the refusal's suggested chunk."""

import numpy as np
import pytest

from spikeforge.errors import MemoryLimitError, NetworkError
from spikeforge.runtime import memory
from spikeforge.training.parallel import ParallelCompiler
from tests.test_parallel_kernels import N1, N2, N_IN, B, K, T, _network, _problem
from tests.test_parallel_rules import RULES

CHUNK = 15  # 40 steps: chunks of 15, 15 and 10 (the last runs past the sequence's end)
QUICK = ["threshold", "first_crossing_fastsnn"]  # a rule without and one with values carried both ways; the others slow


def _run(rule, precision, chunk, readout="per_step", loss="xent", reg=True, passes=2):
    x, weights = _problem(2)
    rng = np.random.default_rng(4)
    mask = np.zeros(T)
    mask[T // 4:] = 1.0
    labels, targets = rng.integers(0, K, B), rng.normal(0.0, 0.5, (T, B, K))
    kwargs = {"reg_rate": 0.7, "reg_target_hz": 100.0} if reg else {}
    compiled = ParallelCompiler(loss=loss, spike=RULES[rule][0], readout=readout, chunk=chunk, **kwargs).compile(
        _network(precision, weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=T)
    try:
        # passes after the first draw other numbers (a stochastic rule), and start again from the initial state
        out = [compiled.gradients(x, mask, labels=labels, targets=targets, values=True) for _ in range(passes)]
        out.append(compiled.evaluate(x, mask, labels=labels, targets=targets, draw=0))
        out.append(compiled.memory())
    finally:
        compiled.close()
    return out


def _rel(new, old, what, rtol):
    assert np.abs(old).max() > 0, what
    np.testing.assert_allclose(new, old, rtol=0, atol=rtol * np.abs(old).max(), err_msg=what)


def _compare(whole, chunked, rtol, exact_values, exact_grads=False):
    for a, b in zip(whole[:-2], chunked[:-2]):
        for pop, values in a["forward"].items():
            for v, value in values.items():
                if v == "z" or exact_values:
                    np.testing.assert_array_equal(b["forward"][pop][v], value, err_msg=f"{pop}.{v}")
                else:
                    _rel(b["forward"][pop][v], value, f"{pop}.{v}", rtol)
        _rel(b["loss"], a["loss"], "loss", rtol)
        assert set(b["grads"]) == set(a["grads"])
        for name, g in a["grads"].items():
            if exact_grads:
                np.testing.assert_array_equal(b["grads"][name], g, err_msg=f"gradient of {name}")
            else:
                _rel(b["grads"][name], g, f"gradient of {name}", rtol)
    np.testing.assert_array_equal(chunked[-2]["y"], whole[-2]["y"])
    _rel(chunked[-2]["loss"], whole[-2]["loss"], "evaluate's loss", rtol)


def _rules(quick):
    return [r if r in quick else pytest.param(r, marks=pytest.mark.slow) for r in RULES]


@pytest.mark.parametrize("rule", _rules(QUICK))
def test_chunks_give_the_whole_sequences_spikes_losses_and_gradients_in_double(rule):
    whole, chunked = _run(rule, "double", None), _run(rule, "double", CHUNK)
    _compare(whole, chunked, 1e-12, exact_values=False)
    z = whole[0]["forward"]["h1"]["z"]
    assert 0 < z.mean() < 0.8
    if rule.startswith("first_crossing"):  # first spikes in a later chunk than the first
        fired = z.any(axis=0)
        assert (z.argmax(axis=0)[fired] >= CHUNK).any()


@pytest.mark.parametrize("readout, loss", [("max", "mse"), pytest.param("last", "xent", marks=pytest.mark.slow),
                                           pytest.param("mean", "mse", marks=pytest.mark.slow)])
def test_chunks_of_an_aggregating_readout(readout, loss):
    """The readout's error over the whole window computed once every chunk ran forward."""
    rule = "first_crossing"
    _compare(_run(rule, "double", None, readout, loss), _run(rule, "double", CHUNK, readout, loss), 1e-12,
             exact_values=False)


@pytest.mark.parametrize("rule", _rules(["bernoulli_spsn"]))
def test_chunks_in_float_give_the_same_values_bit_for_bit(rule):
    """Forward values float for float (the chunk's first input summed as the senders' list is),
    and the gradients too: each weight's sum runs in the reverse scans' order, t descending, over
    the whole sequence as over its chunks (the last chunk first). The losses to rounding (summed
    per chunk)."""
    _compare(_run(rule, "float", None), _run(rule, "float", 7), 2e-6, exact_values=True, exact_grads=True)


def test_chunk_of_the_whole_sequence_or_more_is_the_whole_sequence():
    whole, same = _run("threshold", "double", None, passes=1), _run("threshold", "double", T, passes=1)
    assert same[-1] == whole[-1]
    for name, g in whole[0]["grads"].items():
        np.testing.assert_array_equal(same[0]["grads"][name], g)


def test_memory_of_a_chunk_and_the_refusal_suggests_one_that_fits(monkeypatch):
    """The arrays hold one chunk's steps, (C B N) values each, and the host keeps each chunk's
    boundary and the readout's values of every step."""
    whole, chunked = _run("threshold", "double", None, passes=1)[-1], _run("threshold", "double", CHUNK, passes=1)[-1]
    C, n_chunks = CHUNK, -(-T // CHUNK)
    per_step = 8 * B  # double
    # h1: v, x, u of every step (a binary rule's spikes are kept as the senders' lists; the first
    # layer's dE/du is not kept), and the senders' lists; plus what it sent in the previous
    # chunk's last step (h1 and the inputs), dE/du of the next chunk's first step (h2 and out)
    assert whole["h1"] - chunked["h1"] == (3 * per_step * N1 + 4 * B * (N1 + 1)) * (T - C) - 8 * B * N1
    # the inputs: their values and senders' lists of every step, less what they sent in the
    # previous chunk's last step and the chunk's first step
    assert whole["inp"] - chunked["inp"] == (per_step * N_IN + 4 * B * (N_IN + 1)) * (T - C) - 8 * B * N_IN - 4
    assert whole["h2"] - chunked["h2"] == (4 * per_step * N2 + 4 * B * (N2 + 1)) * (T - C) - 2 * 8 * B * N2
    # per boundary: h1's v, x, h2's v, a, the readout's v, the hidden layers' spike counts and sent values; y
    assert chunked["chunk boundaries"] == 8 * B * ((n_chunks - 1) * (4 * N1 + 4 * N2 + K) + T * K)
    x, weights = _problem(6)
    monkeypatch.setenv(memory.ENV_LIMIT, "1MiB")
    with pytest.raises(MemoryLimitError, match=r"population 'h1' time-parallel .*chunks of (\d+) steps fit") as info:
        ParallelCompiler().compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out",
                                   n_steps=20_000)
    fits = int(str(info.value).split("chunks of ")[1].split()[0])
    assert 100 < fits < 20_000
    ParallelCompiler(chunk=fits).compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"],
                                         readout="out", n_steps=20_000).close()
    with pytest.raises(MemoryLimitError):
        ParallelCompiler(chunk=2 * fits).compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"],
                                                 readout="out", n_steps=20_000)
    # "auto": the whole sequence where it fits, else the longest chunk that fits
    auto = ParallelCompiler(chunk="auto")
    for steps, chunk in ((T, T), (20_000, fits)):
        compiled = auto.compile(_network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out",
                                n_steps=steps)
        compiled.close()
        assert (compiled.chunk, compiled.chunked, auto.chunk) == (chunk, steps > T, "auto")


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "10"])
def test_chunk_is_checked(chunk):
    with pytest.raises(NetworkError, match="chunk must be a positive integer"):
        ParallelCompiler(chunk=chunk)


def test_a_job_in_chunks_trains_as_the_whole_sequence(tmp_path):
    """``training.chunk`` of a job file: the compiler's chunk; an epoch of the job trains the
    weights the job without chunks trains (to rounding: the gradients' sums run in another order)."""
    from spikeforge.errors import ConfigError
    from spikeforge.training.config import load_training
    from spikeforge.training.trainer import Trainer
    from tests.test_parallel_trainer import PAR_JOB
    from tests.test_parallel_yaml import JOB

    weights, evaluated = [], []
    for chunk in (None, 7):  # 20 steps: chunks of 7, 7 and 6
        path = tmp_path / f"job{chunk}.yaml"
        path.write_text(JOB if chunk is None else JOB.replace("  lr: 0.01\n", f"  lr: 0.01\n  chunk: {chunk}\n"))
        job = load_training(path)
        assert job.trainer_options["compiler"].chunk == chunk
        trainer = Trainer(job.config, **{k: v for k, v in job.trainer_options.items() if k != "epochs"})
        trainer.fit(job.train, epochs=1, progress=False)
        weights.append(trainer.weights)
        evaluated.append(trainer.evaluate(job.train))  # the forward pass and the loss only
    for name, w in weights[0].items():
        np.testing.assert_allclose(weights[1][name], w, rtol=1e-12, atol=1e-12 * np.abs(w).max(), err_msg=name)
    assert evaluated[0]["loss"] > 0
    np.testing.assert_allclose(evaluated[1]["loss"], evaluated[0]["loss"], rtol=1e-12)
    path.write_text(JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  chunk: auto\n"))
    assert load_training(path).trainer_options["compiler"].chunk == "auto"
    for value, message in (("0", "must be a positive number of steps"), ("7.5", "expected an integer")):
        path = tmp_path / "bad.yaml"
        path.write_text(JOB.replace("  lr: 0.01\n", f"  lr: 0.01\n  chunk: {value}\n"))
        with pytest.raises(ConfigError, match=f"training.chunk: {message}") as info:
            load_training(path)
        assert info.value.line == JOB.splitlines().index("  lr: 0.01") + 2
    eprop = PAR_JOB.replace("method: parallel", "method: eprop")
    path.write_text(eprop.replace("  lr: 0.01\n", "  lr: 0.01\n  chunk: 5\n"))
    with pytest.raises(ConfigError, match="training.chunk: the parallel method's setting"):
        load_training(path)
