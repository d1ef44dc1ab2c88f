"""The warm-start cache: a second ``spikeforge run`` of a file goes from the YAML to the cached
library without sympy or Jinja2 and gives the cold run's results bit for bit; a change to
the file, the files it names or the options is a miss; a damaged entry is a miss that is
written again.

Every run is a real ``spikeforge run`` in a subprocess (a fresh interpreter, as a user
runs it) into a cache of the test's own; a small wrapper records which modules it imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge.warm import run_key

ROOT = Path(spikeforge.__file__).resolve().parent.parent
HEAVY = ("sympy", "jinja2")

#: Runs the CLI, then writes its exit status and the heavy modules it imported to argv[1].
WRAPPER = """
import json, sys
from spikeforge.cli import main
rc = main(sys.argv[2:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")[1:]))
with open(sys.argv[1].split(",")[0], "w") as f:
    json.dump({"rc": rc, "heavy": heavy}, f)
"""

# Every value the full path computes on the host: connectivity drawn (fixed_probability) and
# listed (from_list), initial values from expressions of draws and other variables (u = b*v,
# per-synapse w), parameters per element and as expressions, a dynamic parameter, spikes and
# a timed input from files, and a recorded variable; two batch instances.
NETWORK = """\
name: warm_check
dt: 0.5
seed: 7
batch_size: 2
precision: float
duration: 40
models:
  driven:
    kind: neuron
    params: {tau: 10.0, I_ext: 0.0, v_th: 1.0}
    vars: {v: 0.0}
    equations: dv/dt = (I_ext - v) / tau
    threshold: v > v_th
    reset: v = 0
populations:
  stim:
    size: 4
    model: spike_source_array
    spikes: {file: stim.npz}
  exc:
    size: 40
    model: izhikevich
    draws: {r: "rand()"}
    params: {a: 0.02, b: 0.2, c: "-65 + 15*r**2", d: "8 - 6*r**2"}
    init: {v: "-70 + 10*rand()", u: "b*v"}
    record: [spikes, v]
  drv:
    size: 4
    model: driven
    params: {tau: [5.0, 7.0, 9.0, 11.0]}
    timed_inputs:
      I_ext: {file: drive.npz, key: I, dt: 10.0}
    record: [spikes]
projections:
  stim_exc:
    pre: stim
    post: exc
    connectivity: {from_list: {pre: [0, 1, 2, 3, 0], post: [0, 5, 10, 15, 20]}}
    weight_update: {model: static, init: {w: "20 + 5*rand()"}}
    postsynaptic: delta
  ee:
    pre: exc
    post: exc
    connectivity: {fixed_probability: 0.2}
    weight_update: {model: static_constant, params: {w: "0.5*rand()"}}
    postsynaptic: {model: exp_curr, params: {tau_syn: 5.0}}
  drv_exc:
    pre: drv
    post: exc
    connectivity: dense
    weight_update: {model: static_constant, params: {w: 3.0}, dynamic: [w]}
    postsynaptic: delta
"""


def write_network(folder: Path, text: str = NETWORK, drive=(0.0, 2.0, 4.0, 1.0)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "stim.npz", times=np.array([1.0, 2.0, 5.0, 7.5]), ids=np.array([0, 1, 2, 3]))
    np.savez(folder / "drive.npz", I=np.array(drive))
    path = folder / "net.yaml"
    path.write_text(text)
    return path


def run(path: Path, cache: Path, out: Path, *extra) -> dict:
    """``spikeforge run path --json --save out`` in a fresh interpreter: its JSON summary,
    exit status, heavy imports, stderr and saved recordings."""
    report = out.with_suffix(".report.json")
    env = {**os.environ, "SPIKEFORGE_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, ",".join([str(report), *HEAVY]), "run", str(path), "--json", "-q",
         "--save", str(out), *extra],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as saved:
        recordings = {k: saved[k] for k in saved.files}
    return {**json.loads(report.read_text()), "summary": json.loads(proc.stdout), "stderr": proc.stderr,
            "recordings": recordings}


def assert_same_recordings(a: dict, b: dict):
    assert a["summary"]["spikes"] == b["summary"]["spikes"]
    assert sorted(a["recordings"]) == sorted(b["recordings"])
    for key, value in a["recordings"].items():
        np.testing.assert_array_equal(value, b["recordings"][key], err_msg=key)
        assert value.dtype == b["recordings"][key].dtype


def entries(cache: Path) -> list[Path]:
    return sorted(p.parent for p in (cache / "warm").glob("*/*/entry.json"))


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold run into a fresh cache, shared by the tests of a worker (the compile is the
    costly part); a test that damages the entry leaves it written again."""
    folder = tmp_path_factory.mktemp("warm")
    path, cache = write_network(folder / "net"), folder / "cache"
    result = run(path, cache, folder / "cold.npz")
    return path, cache, result


def test_the_second_run_imports_neither_sympy_nor_jinja2_and_gives_the_same_results(cold, tmp_path):
    path, cache, first = cold
    assert set(first["heavy"]) == set(HEAVY)  # the full path: models, code generator, templates
    assert first["summary"]["spikes"]["exc"] > 0 and first["summary"]["spikes"]["drv"] > 0
    assert len(entries(cache)) == 1

    warm = run(path, cache, tmp_path / "warm.npz")
    assert warm["heavy"] == []
    assert warm["summary"]["from_cache"] is True
    assert_same_recordings(first, warm)


@pytest.mark.parametrize("damage", [
    "spec",
    pytest.param("truncated", marks=pytest.mark.slow),  # the same fallback, other damage
    pytest.param("arrays", marks=pytest.mark.slow),
    pytest.param("mismatch", marks=pytest.mark.slow),
])
def test_a_damaged_entry_falls_back_to_the_full_path_and_is_written_again(cold, tmp_path, damage):
    path, cache, first = cold
    (entry,) = entries(cache)
    meta = entry / "entry.json"
    if damage == "spec":  # still valid JSON, still a well-formed spec: another seed
        data = json.loads(meta.read_text())
        data["data"]["spec"]["seed"] += 1
        meta.write_text(json.dumps(data))
    elif damage == "mismatch":  # checksums right, but an array fewer than the library has
        data = json.loads(meta.read_text())
        data["data"]["spec"]["arrays"].pop()
        data["data_sha256"] = hashlib.sha256(json.dumps(data["data"], sort_keys=True).encode()).hexdigest()
        meta.write_text(json.dumps(data))
    elif damage == "truncated":
        meta.write_text(meta.read_text()[:200])
    else:
        blob = bytearray((entry / "arrays.npz").read_bytes())
        blob[-100] ^= 0xFF
        (entry / "arrays.npz").write_bytes(bytes(blob))

    fallback = run(path, cache, tmp_path / "fallback.npz")
    assert set(fallback["heavy"]) == set(HEAVY)
    assert "warm-start entry" in fallback["stderr"]
    assert_same_recordings(first, fallback)
    if damage == "mismatch":  # found out once the library is loaded: removed, written by the next run
        assert entries(cache) == []
        run(path, cache, tmp_path / "rewrite.npz")

    again = run(path, cache, tmp_path / "again.npz")  # written again: a warm start once more
    assert again["heavy"] == []
    assert_same_recordings(first, again)


def test_the_key_follows_the_file_the_files_it_names_and_the_options(tmp_path):
    path = write_network(tmp_path / "a")

    def key(text=None, **options):
        if text is not None:
            path.write_text(text)
        options = {"backend": None, "batch_size": None, "seed": None, **options}
        return run_key(path, **options)

    base = key()
    assert base is not None and key() == base
    # comments and layout are not content
    assert key("# a comment\n" + NETWORK.replace("dt: 0.5", "dt:   0.5   # ms")) == base
    changed = {
        "equation": NETWORK.replace("dv/dt = (I_ext - v) / tau", "dv/dt = (I_ext - 2*v) / tau"),
        "parameter": NETWORK.replace("tau_syn: 5.0", "tau_syn: 6.0"),
        "seed": NETWORK.replace("seed: 7", "seed: 8"),
        "precision": NETWORK.replace("precision: float", "precision: double"),
        "model": NETWORK.replace("model: izhikevich", "model: lif"),
    }
    keys = {what: key(text) for what, text in changed.items()}
    key(NETWORK)
    keys.update(seed_option=key(seed=8), batch_option=key(batch_size=4), backend_option=key(backend="cuda-emu"))
    write_network(tmp_path / "a", drive=(0.0, 2.0, 4.0, 1.5))  # a file the network names
    keys["named file"] = key()
    assert base not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_the_key_follows_the_compiler_flags(tmp_path, monkeypatch):
    path = write_network(tmp_path)
    monkeypatch.setenv("SPIKEFORGE_PORTABLE", "0")
    native = run_key(path, backend=None, batch_size=None, seed=None)
    monkeypatch.setenv("SPIKEFORGE_PORTABLE", "1")  # no -march=native
    assert run_key(path, backend=None, batch_size=None, seed=None) != native


@pytest.mark.slow  # three more cold builds: the same path as above, with other code
@pytest.mark.parametrize("change", ["seed", "parameter", "precision", "equation"])
def test_a_changed_file_is_a_miss_with_the_right_results(cold, tmp_path, change):
    path, cache, first = cold
    before = entries(cache)
    text = {
        "seed": NETWORK.replace("seed: 7", "seed: 8"),
        "parameter": NETWORK.replace("tau_syn: 5.0", "tau_syn: 2.0"),
        "precision": NETWORK.replace("precision: float", "precision: double"),
        "equation": NETWORK.replace("dv/dt = (I_ext - v) / tau", "dv/dt = (2*I_ext - v) / tau"),
    }[change]
    changed = write_network(tmp_path / "changed", text)
    miss = run(changed, cache, tmp_path / "miss.npz")
    assert set(miss["heavy"]) == set(HEAVY)
    differs = [k for k in first["recordings"]
               if first["recordings"][k].shape != miss["recordings"][k].shape
               or not np.array_equal(first["recordings"][k], miss["recordings"][k])]
    assert differs, "the change changed nothing: the test would not see a stale entry"

    warm = run(changed, cache, tmp_path / "warm.npz")
    assert warm["heavy"] == []
    assert_same_recordings(miss, warm)
    # the full path on its own (no warm entries at all) agrees
    full = run(changed, tmp_path / "other-cache", tmp_path / "full.npz")
    assert_same_recordings(miss, full)
    for entry in set(entries(cache)) - set(before):  # the shared cache as it was, for the tests after this one
        shutil.rmtree(entry)


@pytest.mark.slow  # compiles again
def test_a_library_gone_from_the_compile_cache_is_a_miss_and_the_entry_serves_again(cold, tmp_path):
    path, cache, first = cold
    (entry,) = entries(cache)
    library_key = json.loads((entry / "entry.json").read_text())["library_key"]
    library = cache / library_key[:2] / library_key
    assert (library / "source.cpp").is_file()
    shutil.rmtree(library)

    miss = run(path, cache, tmp_path / "miss.npz")
    assert set(miss["heavy"]) == set(HEAVY) and miss["summary"]["from_cache"] is False
    assert "warm-start entry" not in miss["stderr"]  # not damage: nothing to report
    assert_same_recordings(first, miss)
    assert entries(cache) == [entry]

    warm = run(path, cache, tmp_path / "warm.npz")
    assert warm["heavy"] == []
    assert_same_recordings(first, warm)


@pytest.mark.slow  # loads the network in full, twice
def test_a_warm_simulation_changes_parameters_as_a_built_one(cold, monkeypatch):
    """What the stored network does not hold (the models, for set_param and the values computed
    again at reset) comes from the file, loaded when first needed."""
    from spikeforge.config import load_file
    from spikeforge.warm import WarmStart

    path, cache, _ = cold
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(cache))

    def run_twice(net, cfg):
        sim = net.build("cpu")
        cfg.apply_inputs(sim)
        sim.run(duration=10.0)
        sim.set_param("drv_exc", "w", 5.0)
        sim.reset()
        cfg.apply_inputs(sim)
        sim.run(duration=40.0)
        return sim.spike_counts(), sim.recorded("exc", "v"), sim.get_param("drv_exc", "w")

    warm = WarmStart.for_run(path, backend=None, batch_size=None, seed=None).load()
    assert warm is not None
    counts, v, w = run_twice(*warm)
    full_counts, full_v, full_w = run_twice(*load_file(path))
    assert counts == full_counts and w == full_w == 5.0
    np.testing.assert_array_equal(v, full_v)
