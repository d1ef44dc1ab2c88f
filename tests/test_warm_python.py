"""The warm start of networks made in Python: ``Network.build()`` of a network whose calls
passed their checks before, and which was built before, goes to the cached library and its
layout without sympy or Jinja2 and gives the cold build's results bit for bit; any change to
what the calls give (a parameter, the connectivity, an array's content, the seed, a model's
equations) is a miss; a damaged entry is a miss that is written again.

The quick tests work in this process (keys, descriptions, elements made later); the runs in
fresh interpreters (a script run twice, as a user runs it) are in the full suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge import warm
from spikeforge.models import DC, EXP_CURR, LIF, STATIC, NeuronModel
from spikeforge.network import FixedProbability, FromList, Network

ROOT = Path(spikeforge.__file__).resolve().parent.parent
HEAVY = ("sympy", "jinja2")

#: A CUBA-like network made in Python, with a model of its own, values per neuron and per
#: synapse given as arrays, drawn and listed connectivity, a current source and a recorded
#: variable; argv[1]: where to write what it computed, argv[2]: the changes (JSON).
#: The network of the tests, as a script writes it (the model made each time).
MAKE = """
def make(**change):
    leaky = NeuronModel("leaky", params={"tau_m": 20.0, "v_th": -50.0, "v_reset": -65.0}, vars={"v": -65.0},
                        equations=change.get("eq", "dv/dt = (-65 - v + i_syn) / tau_m"), threshold="v > v_th",
                        reset="v = v_reset")
    net = Network("warm_py", dt=0.5, batch_size=2, seed=change.get("seed", 3))
    net.add_population("exc", 40, leaky, params={"tau_m": np.linspace(15.0, 25.0, 40)},
                       init={"v": {"uniform": [-65.0, -50.0]}}, record_spikes=True)
    net.add_population("inh", 10, LIF, params={"v_rest": -60.0}, record_spikes=True)
    net.add_projection("ee", "exc", "exc", STATIC, EXP_CURR, FixedProbability(change.get("p", 0.2)),
                       wu_init={"w": 2.0})
    net.add_projection("ei", "exc", "inh", STATIC, EXP_CURR, FromList([0, 1, 2, 3], [0, 3, 6, 9]),
                       wu_init={"w": np.array(change.get("w", [30.0, 31.0, 32.0, 33.0]))})
    net.add_current_source("drive", "exc", DC, params={"amp": change.get("amp", 20.0)})
    net.record_var("exc", "v", neurons=[0, 1, 2], every=2)
    return net
"""

#: A CUBA-like network made in Python (MAKE), with a model of its own, values per neuron and
#: per synapse given as arrays, drawn and listed connectivity, a current source and a recorded
#: variable; argv[1]: where to write what it computed, argv[2]: the changes (JSON).
SCRIPT = """
import json, sys
import numpy as np
from spikeforge import Network, NeuronModel
from spikeforge.models import DC, EXP_CURR, LIF, STATIC
from spikeforge.network import FixedProbability, FromList
""" + MAKE + """
net = make(**json.loads(sys.argv[2]))
sim = net.build(threads=1)
sim.run(60.0)
out = {f"{p}_{k}_{n}": a for p in ("exc", "inh") for k, spikes in enumerate(sim.spikes(p))
       for n, a in zip(("t", "i"), spikes)}
np.savez(sys.argv[1], v=sim.recorded("exc", "v"), **out)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sympy", "jinja2"})
print(json.dumps({"heavy": heavy, "spikes": sim.spike_counts()}))
"""


def run_script(cache: Path, out: Path, **change) -> dict:
    env = {**os.environ, "SPIKEFORGE_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(change)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as saved:
        recordings = {k: saved[k] for k in saved.files}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "recordings": recordings, "stderr": proc.stderr}


def entries(cache: Path) -> list[Path]:
    return sorted(p.parent for p in (cache / "warm").glob("*/*/entry.json"))


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a["recordings"]) == sorted(b["recordings"])
    for key, value in a["recordings"].items():
        np.testing.assert_array_equal(value, b["recordings"][key], err_msg=key)
        assert value.dtype == b["recordings"][key].dtype
    assert a["spikes"] == b["spikes"]


# --------------------------------------------------------------------------- in this process


_space: dict = {"NeuronModel": NeuronModel, "Network": Network, "np": np, "LIF": LIF, "STATIC": STATIC,
                "EXP_CURR": EXP_CURR, "DC": DC, "FixedProbability": FixedProbability, "FromList": FromList}
exec(MAKE, _space)  # the same function the script defines
make = _space["make"]


def test_descriptions_spell_out_types_and_refuse_what_they_cannot_write():
    assert len({json.dumps(warm.normalise(v)) for v in (1, 1.0, True, "1", np.float32(1), [1], (1,))}) == 7
    a = warm.normalise({"w": np.arange(3.0)})
    assert a == warm.normalise({"w": np.arange(3.0)}) != warm.normalise({"w": np.arange(3.0) + 1})
    assert warm.normalise({"a": 1, "b": 2}) != warm.normalise({"b": 2, "a": 1})  # order is kept: code follows it
    assert warm.normalise(lambda: 1) is None and warm.normalise([object()]) is None


def test_a_model_is_described_by_its_arguments_and_a_builtin_parses_on_first_use():
    def leaky(eq):
        return NeuronModel("m", params={"tau": 10.0}, vars={"v": 0.0}, equations=eq)

    assert leaky("dv/dt = -v / tau").description == leaky("dv/dt = -v / tau").description
    assert leaky("dv/dt = -v / tau").description != leaky("dv/dt = -2*v / tau").description
    fresh = NeuronModel.deferred(*LIF.__dict__["_args"][0], **LIF.__dict__["_args"][1])
    assert fresh.__dict__["_pending"] and fresh.spiking  # known without parsing
    assert "odes" not in fresh.__dict__
    assert [o.var for o in fresh.odes] == ["v"] and not fresh.__dict__["_pending"]


def test_the_language_names_a_check_reads_without_sympy_are_the_parsers():
    from spikeforge.models import functions, reserved

    assert reserved._LANGUAGE_FUNCTIONS == set(functions.FUNCTIONS) | set(functions.CONSTANTS)


def test_a_known_good_call_makes_its_element_later_with_the_same_values():
    eager = make()  # the first time in this cache (or not): every call leaves its mark
    later = make()  # every call known good: the elements wait
    assert later.populations["exc"].__dict__.get("_warm_pending")
    assert later._warm_build_key("cpu") == eager._warm_build_key("cpu") is not None
    assert later.projections["ee"].n_synapses == eager.projections["ee"].n_synapses  # made here
    assert not later.projections["ee"].__dict__.get("_warm_pending")
    assert warm.state_digest(later.populations["exc"].params) == warm.state_digest(eager.populations["exc"].params)
    np.testing.assert_array_equal(later.projections["ee"].rows.post_ind, eager.projections["ee"].rows.post_ind)
    assert later.projections["ee"].pre is later.populations["exc"]
    assert [p.id for p in later.projections.values()] == [p.id for p in eager.projections.values()]
    assert later._warm_build_key("cpu") == eager._warm_build_key("cpu")  # made, unchanged: same key


@pytest.mark.parametrize("change", [{"seed": 4}, {"p": 0.25}, {"amp": 21.0}, {"w": [30.0, 31.0, 32.0, 34.0]},
                                    {"eq": "dv/dt = (-64 - v + i_syn) / tau_m"}])
def test_any_change_to_what_the_calls_give_changes_the_key(change):
    assert make()._warm_build_key("cpu") != make(**change)._warm_build_key("cpu")


def test_a_network_changed_in_place_or_holding_a_callable_has_no_warm_start():
    net = make()
    net.populations["inh"].params["v_rest"] = -61.0  # in place: not what the calls made
    assert net._warm_build_key("cpu") is None
    net = Network("odd", dt=0.5)
    net.add_population("p", 3, LIF, params={"v_rest": np.float64(-60.0)})
    assert net._warm_build_key("cpu") is not None
    net.add_population("q", 3, LIF, init={"v": -60.0}, record_spikes=True, draws=None)
    net.__dict__["extra"] = 1  # state the description does not know
    assert net._warm_build_key("cpu") is None


# --------------------------------------------------------------------------- fresh interpreters


@pytest.mark.slow  # three fresh interpreters, one cold compile of the network: ~15 s on a loaded machine
def test_a_second_build_in_a_fresh_interpreter_is_warm_and_bit_identical(tmp_path):
    cache = tmp_path / "cache"
    cold = run_script(cache, tmp_path / "cold.npz")
    assert "sympy" in cold["heavy"] and len(entries(cache)) == 1
    again = run_script(cache, tmp_path / "warm.npz")
    assert again["heavy"] == [], "a warm build imported " + ", ".join(again["heavy"])
    assert_same(cold, again)
    assert sum(cold["spikes"].values()) > 0
    # a damaged entry: the full path runs, says so, writes it again, and the results stay
    (entry,) = entries(cache)
    (entry / "arrays.npz").write_bytes(b"not an npz")
    rebuilt = run_script(cache, tmp_path / "rebuilt.npz")
    assert "damaged" in rebuilt["stderr"] and "sympy" in rebuilt["heavy"]
    assert_same(cold, rebuilt)
    assert run_script(cache, tmp_path / "warm2.npz")["heavy"] == []


@pytest.mark.slow  # a fresh interpreter per change, each a cold build
@pytest.mark.parametrize("change", [{"seed": 4}, {"p": 0.25}, {"amp": 21.0}, {"w": [30.0, 31.0, 32.0, 80.0]},
                                    {"eq": "dv/dt = (-60 - v + i_syn) / tau_m"}])
def test_a_change_is_a_miss_in_a_fresh_interpreter(tmp_path, change):
    cache = tmp_path / "cache"
    base = run_script(cache, tmp_path / "base.npz")
    changed = run_script(cache, tmp_path / "changed.npz", **change)
    assert "sympy" in changed["heavy"] and len(entries(cache)) == 2
    different = [k for k in base["recordings"] if base["recordings"][k].shape != changed["recordings"][k].shape
                 or not np.array_equal(base["recordings"][k], changed["recordings"][k])]
    assert different, "the changed network computed what the first did"
