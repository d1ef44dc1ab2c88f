"""The time-parallel method trained by the Trainer (``Trainer(net, compiler=ParallelCompiler(...))``
and ``training: {method: parallel}`` in a job file): it learns a small task; its steps equal
those of an oracle built from CompiledParallel's own per-batch gradients and Adam written in
numpy; a resumed checkpoint continues as an uninterrupted run; checkpoints of the other method
are refused."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.training.checkpoints import CheckpointError
from spikeforge.training.compiler import EpropCompiler
from spikeforge.training.objectives import Adam
from spikeforge.training.parallel import ParallelCompiler
from spikeforge.training.trainer import Trainer

T, N_IN, N_H, K = 20, 8, 12, 2

#: a LIF without reset: what the parallel method's threshold rule takes
PARALIF = NeuronModel("paralif", params={"tau_m": 8.0, "v_th": 0.5}, vars={"v": 0.0},
                      equations="dv/dt = (-v + i_syn) / tau_m", threshold="v > v_th")


def _network(batch=4, precision="double", seed=1):
    rng = np.random.default_rng(seed)
    net = Network("ff", dt=1.0, batch_size=batch, precision=precision)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("hid", N_H, PARALIF)
    net.add_population("out", K, LEAKY_READOUT, dict(tau_m=10.0, bias=[0.0] * K))
    net.add_projection("inp_hid", "inp", "hid", STATIC, ONE_STEP_CURR,
                       wu_init={"w": rng.uniform(0.0, 1.2, (N_IN, N_H)).ravel()})
    net.add_projection("hid_out", "hid", "out", STATIC, ONE_STEP_CURR,
                       wu_init={"w": rng.normal(0.0, 0.5, (N_H, K)).ravel()})
    return net


def _data(n, seed=0):
    """Two classes: spikes on the first half of the channels, or on the second half."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        label = i % 2
        x = np.zeros((T, N_IN), dtype=np.float32)
        half = slice(0, N_IN // 2) if label == 0 else slice(N_IN // 2, N_IN)
        x[:, half] = rng.random((T, N_IN // 2)) < 0.4
        x[:, :] = np.maximum(x, rng.random((T, N_IN)) < 0.05)
        pairs.append((x, label))
    return pairs


ROLES = dict(inputs="inp", hidden=["hid"], readout="out", trainable=["inp_hid", "hid_out", "out.bias"])


def _trainer(batch=4, lr=0.02, seed=3, readout="per_step", **kw):
    return Trainer(_network(batch), compiler=ParallelCompiler(loss="xent", optimiser=Adam(lr=lr), readout=readout),
                   batch_size=batch, lr=lr, seed=seed, **ROLES, **kw)


def test_fit_learns_above_chance():
    trainer = _trainer(batch=8)
    before = trainer.evaluate(_data(32, seed=9))["accuracy"]
    trainer.fit(_data(64), epochs=4, progress=False)
    logs = trainer.evaluate(_data(32, seed=9))
    assert before <= 0.6, before  # chance before training: the task is learnt, not given
    assert logs["accuracy"] >= 0.9, (before, logs)
    assert trainer.predict(_data(4, seed=9)).shape == (4,)


def _dataset(pairs):
    from spikeforge.training.datasets import SpikeDataset

    return SpikeDataset.from_pairs(pairs, n_inputs=N_IN, n_outputs=K, dt=1.0, task="classification")


def _oracle(data, batch, lr, seed, epochs, readout="per_step"):
    """The same training from CompiledParallel's per-instance gradients (a network compiled per
    batch size met: the short last batch runs unpadded) and Adam in numpy: mean over the batch,
    the trainer's data order (its seeded permutation per epoch)."""
    nets, weights = {}, None
    rng = np.random.Generator(np.random.PCG64(seed))
    names = {"inp_hid_w": "inp_hid", "hid_out_w": "hid_out", "out_p_bias": "out.bias"}
    moments = None
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(data))
        for start in range(0, len(data), batch):
            idx = order[start: start + batch]
            n = len(idx)
            if n not in nets:
                nets[n] = ParallelCompiler(loss="xent", optimiser=Adam(), readout=readout).compile(
                    _network(n), n_steps=T, **ROLES)
            c = nets[n]
            if weights is None:
                weights = {a: c.backend.pull(a).ravel().astype(np.float64) for a in names}
                moments = {a: (np.zeros_like(w), np.zeros_like(w)) for a, w in weights.items()}
            for a, w in weights.items():
                c.backend.push(a, w)
            x, y, mask = data.to_dense([data[int(i)] for i in idx])
            out = c.gradients(x, mask, labels=y)
            step += 1
            rate = lr(epoch, step) if callable(lr) else lr
            opt = Adam()
            for a, key in names.items():
                g = out["grads"][key].reshape(n, -1).sum(axis=0) / n
                m, v = moments[a]
                m[:] = opt.beta1 * m + (1 - opt.beta1) * g
                v[:] = opt.beta2 * v + (1 - opt.beta2) * g * g
                c1, c2 = 1 - opt.beta1 ** step, 1 - opt.beta2 ** step
                weights[a] = weights[a] - rate * (m / c1) / (np.sqrt(v / c2) + opt.eps)
    for c in nets.values():
        c.close()
    return weights


@pytest.mark.parametrize("readout, schedule", [("per_step", False), ("max", False), ("per_step", True)])
def test_fit_equals_oracle_step_for_step(readout, schedule):
    """Two epochs of 10 samples in batches of 4 (4, 4, then 2: the trainer pads that one); a
    learning-rate schedule (halved every epoch) reaches the generated optimiser at every step."""
    from spikeforge.training.schedules import StepDecay

    lr = StepDecay(0.02, every=1, factor=0.5) if schedule else 0.02
    data = _dataset(_data(10))
    trainer = Trainer(_network(4), compiler=ParallelCompiler(loss="xent", optimiser=Adam(), readout=readout),
                      batch_size=4, lr=lr, seed=5, **ROLES)
    trainer.fit(data, epochs=2, progress=False)
    expected = _oracle(data, 4, lr, 5, 2, readout)
    got = trainer.weights
    assert trainer.step == 6
    for name, w in expected.items():
        np.testing.assert_allclose(got[name].ravel(), w, rtol=1e-9, atol=1e-12, err_msg=name)
    start = _trainer(batch=4).weights
    assert any(np.abs(got[k] - start[k]).max() > 1e-3 for k in got)  # training moved the weights


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    data = _dataset(_data(10))
    whole = _trainer(seed=7)
    whole.fit(data, epochs=3, progress=False)
    path = tmp_path / "par.ckpt.npz"
    first = _trainer(seed=7)
    first.fit(data, epochs=1, progress=False, checkpoint=path)
    resumed = _trainer(seed=7)
    resumed.fit(data, epochs=3, progress=False, checkpoint=path, resume=True)
    assert resumed.step == whole.step == 9
    for name, w in whole.weights.items():
        np.testing.assert_array_equal(resumed.weights[name], w, err_msg=name)
    for name, m in whole._moments.items():
        np.testing.assert_array_equal(resumed._moments[name], m, err_msg=name)


def test_checkpoint_of_the_other_method_is_refused(tmp_path):
    data = _dataset(_data(4))
    par = tmp_path / "par.ckpt.npz"
    _trainer().fit(data, epochs=1, progress=False, checkpoint=par)
    eprop = Trainer(_network(4), compiler=EpropCompiler(loss="xent", optimiser=Adam(lr=0.02)), batch_size=4,
                    lr=0.02, seed=3, **ROLES)
    with pytest.raises(CheckpointError, match="method"):
        eprop.load_checkpoint(par)
    ep = tmp_path / "eprop.ckpt.npz"
    eprop.save_checkpoint(ep)
    with pytest.raises(CheckpointError, match="method"):
        _trainer().load_checkpoint(ep)


def test_checkpoint_of_another_spike_rule_or_regulariser_is_refused(tmp_path):
    """The spike rule (with its options) and the regulariser are part of the job: resuming
    under others would train a different objective from the saved moments."""
    data = _dataset(_data(4))
    path = tmp_path / "par.ckpt.npz"
    _trainer().fit(data, epochs=1, progress=False, checkpoint=path)
    for options, field in ((dict(spike="bernoulli_sigmoid"), "spike"), (dict(reg_rate=0.5), "reg_rate")):
        other = Trainer(_network(4), compiler=ParallelCompiler(loss="xent", optimiser=Adam(), **options),
                        batch_size=4, lr=0.02, seed=3, **ROLES)
        with pytest.raises(CheckpointError, match=field):
            other.load_checkpoint(path)


PAR_JOB = """\
name: par_job
dt: 1.0
models:
  paralif:
    kind: neuron
    params: {tau_m: 8.0, v_th: 0.5}
    vars: {v: 0.0}
    equations: "dv/dt = (-v + i_syn) / tau_m"
    threshold: "v > v_th"
data:
  kind: pattern_generation
  options: {n_outputs: 2, duration: 20.0, n_inputs: 8}
  n_samples: 6
  test_fraction: 0.5
network:
  precision: double
  populations:
    inp: {size: 8, model: value_input}
    hid: {size: 10, model: paralif}
    out: {size: 2, model: leaky_readout, params: {tau_m: 10.0, bias: {values: [0.0], counts: [2]}}}
  projections:
    inp_hid: {pre: inp, post: hid, weight_update: static, postsynaptic: one_step_curr}
    hid_out: {pre: hid, post: out, weight_update: static, postsynaptic: one_step_curr}
training:
  method: parallel
  inputs: inp
  hidden: hid
  readout: out
  trainable: [inp_hid, hid_out, out.bias]
  epochs: 2
  batch_size: 2
  lr: 0.01
"""


def test_spikeforge_train_runs_a_parallel_job(tmp_path, capsys):
    import json

    from spikeforge.cli import main
    from spikeforge.training.config import load_training

    path = tmp_path / "par.yaml"
    path.write_text(PAR_JOB)
    job = load_training(path)
    assert isinstance(job.trainer_options["compiler"], ParallelCompiler)
    path.write_text(PAR_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  readout_output: last\n"))
    assert load_training(path).trainer_options["compiler"].readout.name == "last"
    path.write_text(PAR_JOB)
    assert main(["train", str(path), "--json", "--checkpoint", str(tmp_path / "ck.npz")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["train_samples"] == 3 and out["test_samples"] == 3
    assert out["test_mse"] > 0
    # the same job with e-prop: the parallel checkpoint is refused
    path.write_text(PAR_JOB.replace("  method: parallel\n", "  method: eprop\n"))
    assert main(["train", str(path), "--resume", "--checkpoint", str(tmp_path / "ck.npz"), "--no-progress"]) != 0
    assert "network.compiler.method is 'parallel' in the checkpoint but 'eprop' here" in capsys.readouterr().err


@pytest.mark.parametrize("old, new, line, message", [
    ("  method: parallel\n", "  method: bptt\n", "  method: bptt", "training.method: expected eprop or parallel"),
    ("    hid_out:", "    hid_hid: {pre: hid, post: hid, weight_update: static, postsynaptic: one_step_curr}\n"
     "    hid_out:", "    hid_hid: {pre: hid, post: hid, weight_update: static, postsynaptic: one_step_curr}",
     "projection 'hid_hid' from 'hid' to 'hid' is recurrent"),
    ("  lr: 0.01\n", "  lr: 0.01\n  feedback: random\n", "  feedback: random", "training.feedback: e-prop's setting"),
    ("  lr: 0.01\n", "  lr: 0.01\n  surrogate: smooth\n", "  surrogate: smooth", "surrogate must be one of"),
])
def test_parallel_job_errors_name_the_line(tmp_path, old, new, line, message):
    from spikeforge.errors import ConfigError
    from spikeforge.training.config import load_training

    text = PAR_JOB.replace(old, new)
    assert text != PAR_JOB
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert message in str(err.value)
    assert err.value.line == text.splitlines().index(line) + 1, str(err.value)


def _mpi_job(out: Path):
    """Under mpiexec (or alone): two epochs over 10 samples, global batch 4; each rank writes
    its weights."""
    trainer = _trainer(batch=4, lr=0.02, seed=5, threads=1)
    trainer.fit(_dataset(_data(10)), epochs=2, progress=False)
    np.savez(out / f"weights_rank{trainer.comm.rank}.npz", ranks=trainer.comm.size, **trainer.weights)


@pytest.mark.slow
def test_two_mpi_ranks_equal_one(tmp_path):
    """Data parallelism through the trainer's host all-reduce: each rank runs half the batch
    (the short last batch: one sample each), and both end where one rank does."""
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPIKEFORGE_MPI_TIMEOUT": "60", "PYTHONPATH": str(root)}
    env.pop("SPIKEFORGE_FAULT", None)
    runs = {}
    for ranks in (1, 2):
        out = tmp_path / str(ranks)
        out.mkdir()
        cmd = [sys.executable, __file__, str(out)]
        r = subprocess.run([mpiexec, "-n", "2", *cmd] if ranks == 2 else cmd, capture_output=True, text=True,
                           timeout=300, env=env, cwd=root)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[ranks] = [dict(np.load(out / f"weights_rank{k}.npz")) for k in range(ranks)]
    one, (r0, r1) = runs[1][0], runs[2]
    assert int(r0["ranks"]) == 2
    for name in ("inp_hid_w", "hid_out_w", "out_p_bias"):
        assert r0[name].tobytes() == r1[name].tobytes(), name
        np.testing.assert_allclose(r0[name], one[name], rtol=1e-9, atol=1e-11, err_msg=name)


if __name__ == "__main__":
    _mpi_job(Path(sys.argv[1]))


@pytest.mark.parametrize("readout, loss", [("sum", "xent"), ("mean", "mse"), ("max", "xent"), ("last", "mse")])
def test_aggregated_readouts_match_the_numpy_reference(readout, loss, monkeypatch):
    """With BPTT over the whole sequence the error of every step is known after the forward pass:
    the reference's adjoint driven by the aggregated loss's error (the readout object's host
    side, which e-prop uses too) gives the same per-instance gradients."""
    from spikeforge.training.objectives import make_loss, make_readout
    from tests import parallel_reference as ref
    from tests import test_parallel_kernels as k

    x, weights = k._problem(2)
    rng = np.random.default_rng(4)
    mask = np.zeros(k.T)
    mask[k.T // 4:] = 1.0
    labels = rng.integers(0, k.K, k.B)
    targets = rng.normal(0.0, 0.5, (k.T, k.B, k.K))
    truth = labels if loss == "xent" else targets
    compiled = ParallelCompiler(loss=loss, readout=readout).compile(
        k._network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=k.T)
    try:
        par = compiled.gradients(x, mask, labels=labels, targets=targets)
    finally:
        compiled.close()

    def aggregated(y, truth_, mask_, _loss):
        lab, tgt = (truth_, None) if loss == "xent" else (None, truth_)
        value, err, _ = make_readout(readout).loss_and_error(make_loss(loss), y, mask_, lab, tgt)
        return value, err

    monkeypatch.setattr(ref, "loss_and_error", aggregated)
    hidden, out = k._reference_stack()
    g = ref.gradients(x, truth, mask, hidden, out, weights, k.BIAS, loss)
    k._rel_close(par["loss"], g["loss"], "loss", 1e-12)
    for name, gw in zip(("inp_h1", "h1_h2", "h2_out"), g["W"]):
        k._rel_close(par["grads"][name], gw.transpose(0, 2, 1), f"gradient of {name}")
    k._rel_close(par["grads"]["out.bias"], g["b"], "gradient of out.bias")
    # and not the per-step loss's gradients
    per_step = ParallelCompiler(loss=loss).compile(
        k._network("double", weights), inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=k.T)
    try:
        other = per_step.gradients(x, mask, labels=labels, targets=targets)
    finally:
        per_step.close()
    assert not np.allclose(other["grads"]["h2_out"], par["grads"]["h2_out"])


@pytest.mark.parametrize("readout", ["per_step", "mean"])
def test_evaluate_runs_forward_only_with_the_losses_of_a_learning_batch(readout):
    """learn=False skips the backward pass: the same readout values and losses as a learning
    batch (a short one: padded)."""
    trainer = _trainer(batch=4, readout=readout)
    data = _dataset(_data(3))
    x, y, mask = data.to_dense([data[i] for i in range(3)])
    learning = trainer.runtime.run_batch(x, mask, labels=y)
    forward = trainer.runtime.run_batch(x, mask, labels=y, learn=False)
    np.testing.assert_array_equal(forward["y"], learning["y"])
    np.testing.assert_allclose(forward["loss"], learning["loss"], rtol=1e-12)
    assert forward["loss"].shape == (3,) and np.all(forward["loss"] > 0)


def test_parallel_method_in_the_older_job_form_is_refused_at_its_line(tmp_path):
    from spikeforge.errors import ConfigError
    from spikeforge.training.config import load_training
    from tests.test_trainer_compiler import OLD_JOB

    text = OLD_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  method: parallel\n")
    assert text != OLD_JOB
    path = tmp_path / "old.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="the parallel method trains a network description") as err:
        load_training(path)
    assert err.value.line == text.splitlines().index("  method: parallel") + 1
    path.write_text(OLD_JOB.replace("  lr: 0.01\n", "  lr: 0.01\n  method: eprop\n"))
    assert load_training(path).epochs >= 1
