"""NaN and inf state never passes unnoticed: after every run, and every N steps when asked,
the model's variables are checked; what is found is warned about (or raised) and recorded,
naming the population, the variable, the count and the step it was first seen."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.errors import NonFiniteStateError, NonFiniteStateWarning
from spikeforge.models import NeuronModel
from spikeforge.network import Network
from tests.conftest import BACKENDS_SLOW_EMU

# Forward Euler on dv/dt = -k v with k dt = 2.5: v is multiplied by -1.5 each step, so it
# overflows float (about 3.4e38) after some 220 steps. Exact integration would be stable.
BLOWUP = NeuronModel("blowup", params={"k": 25.0}, vars={"v": 1.0}, equations="dv/dt = -k * v", integrator="euler")


def _diverging(backend, batch_size=2):
    net = Network("diverging", dt=0.1, batch_size=batch_size)
    net.add_population("bad", 10, BLOWUP)
    net.add_population("good", 5, m.LIF, params=dict(tau_m=10.0, v_rest=0.0, v_reset=0.0, v_th=1.0),
                       init={"v": 0.0})
    net.record_var("bad", "v")
    sim = net.build(backend=backend)
    sim.set("bad", "v", np.array([0.0] * 3 + [1.0] * 7))  # three neurons stay at 0: 7 x 2 diverge
    return sim


def test_diverging_euler_is_warned_after_the_run(backend):
    sim = _diverging(backend)
    with pytest.warns(NonFiniteStateWarning) as caught:
        sim.run(steps=400)
    ours = [w for w in caught if issubclass(w.category, NonFiniteStateWarning)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "population 'bad', variable 'v': 14 of 20 elements" in msg
    assert "first seen at step 400" in msg and "check_every" in msg  # says how coarse the step is
    [record] = sim.nonfinite
    assert (record.kind, record.owner, record.var, record.count, record.size) == ("population", "bad", "v", 14, 20)
    assert record.first_step == 400 and not record.exact
    # the next run does not warn again about the same variable, but keeps its count current
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteStateWarning)
        sim.run(steps=10)
    assert sim.nonfinite[0].count == 14
    sim.reset()
    assert sim.nonfinite == []


def test_check_every_step_gives_the_exact_first_step(backend):
    sim = _diverging(backend)
    with pytest.warns(NonFiniteStateWarning, match="first non-finite at step"):
        sim.run(steps=400, check_every=1)
    [record] = sim.nonfinite
    v = sim.recorded("bad", "v")  # v after each step: row r is the state after step r + 1
    first_row = int(np.argmax(~np.isfinite(v).all(axis=(1, 2))))
    assert np.isfinite(v[first_row - 1]).all() and not np.isfinite(v[first_row]).all()
    assert record.exact and record.first_step == first_row + 1
    assert record.last_finite_step == first_row
    assert 150 < record.first_step < 300  # the overflow, not the start


def test_raise_stops_at_the_first_check_that_sees_it(backend):
    sim = _diverging(backend)
    sim.on_nonfinite = "raise"
    with pytest.raises(NonFiniteStateError, match=r"'bad', variable 'v'.*finite at the check before, step 200 "
                                                  r"\(checked every 50 steps\)"):
        sim.run(steps=2000, check_every=50)
    assert sim.step == 250  # stopped there, not after 2000 steps
    v = sim.recorded("bad", "v")
    assert v.shape[0] == 250 and not np.isfinite(v[-1]).all()  # the recordings hold the part simulated


@pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
def test_a_healthy_network_reports_nothing(backend):
    net = Network("healthy", dt=0.1, batch_size=2)
    net.add_population("inp", 20, m.POISSON, init={"rate": 50.0})
    net.add_population("out", 10, m.LIF, params=dict(tau_m=10.0, v_rest=0.0, v_reset=0.0, v_th=1.0))
    net.add_population("src", 4, m.SPIKE_SOURCE_ARRAY)  # its spike times end in an inf sentinel
    net.add_projection("ff", "inp", "out", m.STATIC, m.EXP_CURR, wu_init={"w": 0.3}, ps_params={"tau_syn": 5.0})
    sim = net.build(backend=backend)
    sim.set_spike_times("src", ([1.0, 2.0], [0, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteStateWarning)
        sim.run(steps=200, check_every=7)
    assert sim.nonfinite == []


def test_on_nonfinite_is_checked():
    net = Network("opt", dt=0.1)
    net.add_population("n", 1, m.LIF, params=dict(tau_m=10.0, v_rest=0.0, v_reset=0.0, v_th=1.0))
    with pytest.raises(Exception, match="on_nonfinite must be one of warn, raise, ignore"):
        net.build(on_nonfinite="sometimes")
    with pytest.raises(Exception, match="check_every must be a positive number of steps"):
        net.build(check_every=0)


DIVERGING_YAML = """\
name: diverging
dt: 0.1
duration: 50
batch_size: 2
models:
  blowup:
    kind: neuron
    params: {k: 25.0}
    vars: {v: 1.0}
    equations: dv/dt = -k * v
    integrator: euler
populations:
  bad: {size: 10, model: blowup}
  ok:
    size: 4
    model: lif
    params: {tau_m: 10.0, v_rest: 0.0, v_reset: 0.0, v_th: 1.0}
    record: [spikes]
"""


def _cli(tmp_path, *args):
    path = tmp_path / "diverging.yaml"
    path.write_text(DIVERGING_YAML)
    return subprocess.run([sys.executable, "-m", "spikeforge.cli", "run", str(path), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("cli_backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_cli_reports_nan_state_in_json_and_on_stderr(tmp_path, cli_backend):
    proc = _cli(tmp_path, "--backend", cli_backend, "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "non-finite" in line]
    assert len(warning) == 1 and warning[0].startswith("spikeforge: warning: non-finite state in population 'bad'")
    [record] = json.loads(proc.stdout)["nonfinite"]
    assert record["owner"] == "bad" and record["var"] == "v" and record["kind"] == "population"
    assert record["count"] == 20 and record["size"] == 20 and record["first_step"] == 500


@pytest.mark.parametrize("cli_backend", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_cli_strict_stops_with_exit_1(tmp_path, cli_backend):
    proc = _cli(tmp_path, "--backend", cli_backend, "--strict", "--check-finite-every", "10", "-q")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("spikeforge: error: non-finite state in population 'bad', variable 'v'")
    assert "checked every 10 steps" in lines[0]


def test_cli_reports_no_nonfinite_for_a_healthy_network(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(textwrap.dedent("""\
        name: ok
        dt: 0.1
        duration: 20
        populations:
          n: {size: 4, model: lif, params: {tau_m: 10.0, v_rest: 0.0, v_reset: 0.0, v_th: 1.0}}
        """))
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "run", str(path), "--json", "--strict"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nonfinite"] == []
