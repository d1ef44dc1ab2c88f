"""What the time-parallel method cannot train, given in a job file: refused when the file is
loaded, naming the model (or projection) and the reason, at the line of the model's field
(a model of the file's ``models:``) or of the population (a built-in model) or projection; and a
batch whose every-step values (O(T B N)) do not fit in memory refused by ``spikeforge train``
before anything is allocated or trained."""

import pytest

from spikeforge.errors import ConfigError
from spikeforge.runtime import memory
from spikeforge.training.config import load_training
from tests.test_parallel_trainer import PAR_JOB

HID = "    hid: {size: 10, model: paralif}\n"


@pytest.mark.parametrize("old, new, line, message", [
    # the file's own model with a quadratic term: the line of its equations
    ('    equations: "dv/dt = (-v + i_syn) / tau_m"\n', '    equations: "dv/dt = (v * v - v + i_syn) / tau_m"\n',
     '    equations: "dv/dt = (v * v - v + i_syn) / tau_m"',
     "model 'paralif', field 'equations': the parallel method needs linear subthreshold dynamics: "
     "'dv/dt = (v * v - v + i_syn) / tau_m' is not linear with constant coefficients in the state"),
    # a coefficient depending on t
    ('    equations: "dv/dt = (-v + i_syn) / tau_m"\n', '    equations: "dv/dt = (-v * t + i_syn) / tau_m"\n',
     '    equations: "dv/dt = (-v * t + i_syn) / tau_m"', "model 'paralif', field 'equations': the parallel method "
     "needs linear subthreshold dynamics"),
    # a built-in model that is not linear: the line of the population that uses it
    (HID, "    hid: {size: 10, model: izhikevich}\n", "    hid: {size: 10, model: izhikevich}",
     "model 'izhikevich', field 'equations': the parallel method needs linear subthreshold dynamics"),
    # a reset: the line of the model's reset; a built-in LIF's: the population's
    ('    threshold: "v > v_th"\n', '    threshold: "v > v_th"\n    reset: "v = 0"\n', '    reset: "v = 0"',
     "model 'paralif', field 'reset': population 'hid': the parallel method's spike rules run without a reset"),
    (HID, "    hid: {size: 10, model: lif}\n", "    hid: {size: 10, model: lif}",
     "model 'lif', field 'reset': population 'hid': the parallel method's spike rules run without a reset"),
    # a recurrent projection: the line of its entry
    ("    hid_out:", "    hid_hid: {pre: hid, post: hid, weight_update: static, postsynaptic: one_step_curr}\n"
     "    hid_out:", "    hid_hid: {pre: hid, post: hid, weight_update: static, postsynaptic: one_step_curr}",
     "projection 'hid_hid' from 'hid' to 'hid' is recurrent (cycle hid -> hid): the parallel method trains "
     "feed-forward networks only"),
    # sparse connectivity: the projection's line
    ("    inp_hid: {pre: inp, post: hid, weight_update: static,",
     "    inp_hid: {pre: inp, post: hid, connectivity: {fixed_probability: 0.5}, weight_update: static,",
     "    inp_hid: {pre: inp, post: hid, connectivity: {fixed_probability: 0.5}, weight_update: static, "
     "postsynaptic: one_step_curr}", "projection 'inp_hid': the parallel method takes dense projections"),
])
def test_what_the_method_cannot_train_is_refused_at_its_line(tmp_path, old, new, line, message):
    text = PAR_JOB.replace(old, new)
    assert text != PAR_JOB
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_training(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:{err.value.line}: ")
    assert err.value.line == text.splitlines().index(line) + 1, str(err.value)
    # the same network under e-prop is not refused for it (the method's limits, not the file's)
    if "recurrent" not in message and "dense" not in message:
        eprop = text.replace("  method: parallel\n", "  method: eprop\n")
        path.write_text(eprop)
        load_training(path)


def test_a_batch_too_long_for_memory_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """200 s trials at dt = 1 ms, batch 2: the hidden layer's every-step values (v, u, z, dE/du,
    its senders: ~140 MiB) exceed a 64 MiB machine: `spikeforge train` fails (exit 1) naming the
    file and the line of training.batch_size, the network, the batch size and the layer, before
    the first batch (no checkpoint written)."""
    from spikeforge.cli import main

    text = PAR_JOB.replace("duration: 20.0", "duration: 200000.0")
    assert text != PAR_JOB
    path = tmp_path / "long.yaml"
    path.write_text(text)
    load_training(path)  # a valid file: the limit is the machine's
    monkeypatch.setenv(memory.ENV_LIMIT, "64MiB")
    ck = tmp_path / "ck.npz"
    assert main(["train", str(path), "--no-progress", "--epochs", "1", "--checkpoint", str(ck)]) == 1
    err = capsys.readouterr().err
    line = text.splitlines().index("  batch_size: 2") + 1  # training.batch_size
    assert f"{path}:{line}: network 'par_job' at batch size 2: population 'hid' time-parallel training " \
           "values" in err, err
    assert "64.0 MiB of host memory are available (SPIKEFORGE_MEMORY_LIMIT=64MiB)" in err
    assert not ck.exists()
    # the same job with 20 ms trials fits
    path.write_text(PAR_JOB)
    assert main(["train", str(path), "--no-progress", "--epochs", "1", "--checkpoint", str(ck)]) == 0
    assert ck.exists()
