"""Warm start: the whole process of ``spikeforge run examples/cuba.yaml`` with a warm cache.

Measures wall time of whole processes, as a user sees them, on one thread
(``--threads 1``, OMP_NUM_THREADS=1), each a fresh interpreter:

* ``spikeforge run examples/cuba.yaml -q --threads 1 --json`` with a warm cache: one priming
  run into a fresh SPIKEFORGE_CACHE_DIR (it compiles), then ``--runs`` timed runs; for this
  checkout and, with ``--before DIR``, for another spikeforge checkout (e.g. the code before
  the warm-start cache: ``git archive <rev> spikeforge | tar -x -C DIR``), interleaved;
* the same network made in Python (``cuba_network()``, the Python API's CUBA) and run for
  1 s by a script, ``Network.build(threads=1)`` with a warm cache (the warm start of networks
  made in Python), interleaved with the YAML runs alike;
* ``python -c "import spikeforge"``, ``python -c "import spikeforge; from spikeforge import
  models"`` and, for scale, ``python -c "import numpy"`` and
  ``python -c "pass"``;
* the peer, Brian2's C++ standalone CUBA (``benchmarks/brian2_cuba.py``'s network, 1 s,
  dt 0.1 ms, one thread) as a whole Python process into a project directory built before
  (Brian2 generates the code again and make finds nothing to recompile), and its ``main``
  binary alone (network construction and the run, no Python), in the peer environment
  ``benchmarks/.env`` (see setup_peers.sh), skipped without it;
* PyGeNN 5.4's CUBA (``benchmarks/genn_cuba.py``, single-threaded CPU backend) as a whole
  process into a directory built before, in ``benchmarks/.env-genn``, skipped without it.

Medians and minima of ``--runs`` runs, with the load average before and after each group.

    python benchmarks/warm_start.py [--runs 7] [--before DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    GENN_PYTHON,
    PEER_PYTHON,
    describe_machine,
    machine_info,
    print_table,
    single_thread_env,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
CUBA = REPO / "examples" / "cuba.yaml"

#: The CUBA network made in Python, built and run for 1 s on one thread; prints what it computed
#: and whether the build was warm (sympy and Jinja2 never imported).
PYTHON_CUBA = """
import json, sys, time
from spikeforge import cuba_network
sim = cuba_network().build(threads=1)
sim.run(1000.0)
print(json.dumps({"spikes": sim.spike_counts(), "from_cache": bool(sim.from_cache),
                  "warm": not {"sympy", "jinja2"} & set(sys.modules), "build_seconds": sim.build_seconds,
                  "run_seconds": sim.run_seconds}))
"""

BRIAN2_WARM = """
import sys, time
sys.path.insert(0, {bench!r})
from brian2 import defaultclock, device, ms, prefs, seed, set_device
import brian2_cuba
set_device("cpp_standalone", directory={directory!r}, build_on_run=False)
prefs.devices.cpp_standalone.openmp_threads = 0
defaultclock.dt = 0.1 * ms
seed(42)
monitor = brian2_cuba.build_network(1.0)
device.build(directory={directory!r}, compile=True, run=True, with_output=False)
print(int(monitor.num_spikes))
"""


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


#: Where the processes run: not a checkout (``python -m``/``-c`` put the current directory first on sys.path).
NEUTRAL = Path(tempfile.gettempdir())


def timed(cmd: list[str], env: dict, cwd: Path = NEUTRAL) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return seconds, proc.stdout


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "all_s": [round(t, 4) for t in times]}


def spikeforge_runs(checkouts: dict[str, Path], runs: int, python: bool = False) -> dict:
    """Warm whole-process runs of each checkout, interleaved (the machine's load hits all alike):
    ``spikeforge run cuba.yaml``, or (``python``) the script :data:`PYTHON_CUBA`."""
    caches = {name: Path(tempfile.mkdtemp(prefix=f"sf-warm-{name}-")) for name in checkouts}
    envs = {name: {**single_thread_env(), "PYTHONPATH": str(path), "SPIKEFORGE_CACHE_DIR": str(caches[name])}
            for name, path in checkouts.items()}
    cmd = ([sys.executable, "-c", PYTHON_CUBA] if python else
           [sys.executable, "-m", "spikeforge.cli", "run", str(CUBA), "-q", "--threads", "1", "--json"])
    out: dict = {name: {"times": []} for name in checkouts}
    try:
        for name in checkouts:  # priming: compiles into the fresh cache (and keeps the warm entry)
            seconds, text = timed(cmd, envs[name])
            out[name]["cold_s"] = round(seconds, 3)
        out["load_before"] = loadavg()
        for _ in range(runs):
            for name in checkouts:
                seconds, text = timed(cmd, envs[name])
                result = json.loads(text)
                if not result["from_cache"]:
                    raise RuntimeError(f"{name}: a warm run compiled")
                out[name]["warm"] = result.get("warm")
                out[name]["times"].append(seconds)
                out[name]["spikes"] = result["spikes"]
                out[name]["build_seconds"] = round(result["build_seconds"], 4)
                out[name]["run_seconds"] = round(result["run_seconds"], 4)
        out["load_after"] = loadavg()
    finally:
        for cache in caches.values():
            shutil.rmtree(cache, ignore_errors=True)
    for name in checkouts:
        out[name].update(summary(out[name].pop("times")))
    return out


def import_runs(runs: int) -> dict:
    env = {**single_thread_env(), "PYTHONPATH": str(REPO)}
    snippets = {"python -c pass": "pass", "import numpy": "import numpy", "import spikeforge": "import spikeforge",
                "import spikeforge; from spikeforge import models": "import spikeforge; from spikeforge import models"}
    out: dict = {"load_before": loadavg()}
    times: dict[str, list[float]] = {k: [] for k in snippets}
    for _ in range(runs):
        for what, code in snippets.items():
            times[what].append(timed([sys.executable, "-c", code], env)[0])
    out["load_after"] = loadavg()
    out.update({what: summary(t) for what, t in times.items()})
    return out


def brian2_runs(runs: int) -> dict | None:
    if not PEER_PYTHON.exists():
        return None
    project = Path(tempfile.mkdtemp(prefix="brian2-warm-"))
    script = project / "cuba_warm.py"
    script.write_text(BRIAN2_WARM.format(bench=str(REPO / "benchmarks"), directory=str(project / "standalone")))
    env = single_thread_env()
    out: dict = {}
    try:
        out["cold_s"] = round(timed([str(PEER_PYTHON), str(script)], env, cwd=project)[0], 3)
        out["load_before"] = loadavg()
        whole, binary = [], []
        for _ in range(runs):
            seconds, text = timed([str(PEER_PYTHON), str(script)], env, cwd=project)
            whole.append(seconds)
            out["spikes"] = int(text.split()[-1])
            binary.append(timed([str(project / "standalone" / "main")], env, cwd=project / "standalone")[0])
        out["load_after"] = loadavg()
        version = subprocess.run([str(PEER_PYTHON), "-c", "import brian2; print(brian2.__version__)"],
                                 capture_output=True, text=True).stdout.strip()
        out.update(version=version, whole_process=summary(whole), binary_only=summary(binary))
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return out


def genn_runs(runs: int) -> dict | None:
    """PyGeNN 5.4's CUBA (``genn_cuba.py``, single-threaded CPU backend, 1 s, one timed run) as a
    whole process into a directory built before: GeNN generates the code again and finds the
    model built."""
    if not GENN_PYTHON.exists():
        return None
    project = Path(tempfile.mkdtemp(prefix="genn-warm-"))
    cmd = [str(GENN_PYTHON), str(REPO / "benchmarks" / "genn_cuba.py"), "1", "--repeats", "1",
           "--dir", str(project)]
    env = single_thread_env()
    out: dict = {}
    try:
        out["cold_s"] = round(timed(cmd, env, cwd=project)[0], 3)
        out["load_before"] = loadavg()
        whole = []
        for _ in range(runs):
            seconds, text = timed(cmd, env, cwd=project)
            whole.append(seconds)
            out["spikes"] = json.loads(text.splitlines()[-1])["total_spikes"]
        out["load_after"] = loadavg()
        out["whole_process"] = summary(whole)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--before", metavar="DIR", help="another spikeforge checkout to time alike")
    parser.add_argument("--no-brian2", action="store_true", help="skip Brian2")
    parser.add_argument("--no-genn", action="store_true", help="skip GeNN")
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = parser.parse_args()

    info = machine_info()
    print(describe_machine(info))
    checkouts = {"after": REPO}
    if args.before:
        checkouts = {"before": Path(args.before).resolve(), **checkouts}
    sf = spikeforge_runs(checkouts, args.runs)
    py = spikeforge_runs(checkouts, args.runs, python=True)
    imports = import_runs(args.runs)
    peer = None if args.no_brian2 else brian2_runs(args.runs)
    genn = None if args.no_genn else genn_runs(args.runs)

    rows = [[f"spikeforge run cuba.yaml, warm ({name})", f"{sf[name]['median_s']:.3f}", f"{sf[name]['min_s']:.3f}",
             f"build {sf[name]['build_seconds']:.3f} s, run {sf[name]['run_seconds']:.3f} s, "
             f"spikes {sf[name]['spikes']}"] for name in checkouts]
    rows += [[f"Python script cuba_network().build(), warm ({name})", f"{py[name]['median_s']:.3f}",
              f"{py[name]['min_s']:.3f}",
              f"build {py[name]['build_seconds']:.3f} s, run {py[name]['run_seconds']:.3f} s, "
              f"spikes {py[name]['spikes']}" + ("" if py[name].get("warm") else "; imported sympy or Jinja2")]
             for name in checkouts]
    rows += [[what, f"{imports[what]['median_s']:.3f}", f"{imports[what]['min_s']:.3f}", ""]
             for what in ("python -c pass", "import numpy", "import spikeforge",
                          "import spikeforge; from spikeforge import models")]
    if peer is not None:
        rows += [[f"Brian2 {peer['version']} C++ standalone CUBA, warm, whole process",
                  f"{peer['whole_process']['median_s']:.3f}", f"{peer['whole_process']['min_s']:.3f}",
                  f"spikes {peer['spikes']}"],
                 ["Brian2 main binary alone", f"{peer['binary_only']['median_s']:.3f}",
                  f"{peer['binary_only']['min_s']:.3f}", ""]]
    if genn is not None:
        rows.append(["PyGeNN 5.4 CUBA (single-threaded CPU), warm, whole process",
                     f"{genn['whole_process']['median_s']:.3f}", f"{genn['whole_process']['min_s']:.3f}",
                     f"spikes {genn['spikes']}; spikeforge / GeNN (medians) "
                     f"{sf['after']['median_s'] / genn['whole_process']['median_s']:.2f}"])
    print_table(["what (whole process, 1 thread)", "median s", "min s", "notes"], rows,
                title=f"{args.runs} runs each; load average before/after: spikeforge {sf['load_before']} / "
                      f"{sf['load_after']}, Python script {py['load_before']} / {py['load_after']}, "
                      f"imports {imports['load_before']} / {imports['load_after']}"
                      + (f", Brian2 {peer['load_before']} / {peer['load_after']}" if peer else "")
                      + (f", GeNN {genn['load_before']} / {genn['load_after']}" if genn else ""))
    if args.json:
        write_json(args.json, {"machine": info, "spikeforge": sf, "python_script": py, "imports": imports,
                               "brian2": peer, "genn": genn,
                               "runs": args.runs, "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}})


if __name__ == "__main__":
    main()
