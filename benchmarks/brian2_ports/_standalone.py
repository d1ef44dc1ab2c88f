"""Shared by the Brian2 ports: build a network once in C++ standalone mode, run its binary once per seed.

Each port script is run by the peer environment's Python (benchmarks/.env) as
``python <port>.py '<json config>'`` with the config keys ``seeds`` (list of run numbers),
``duration`` (ms), ``dir`` (build directory) and ``out`` (prefix of the result files). The
port sets up its network, then calls :func:`build_and_run` with a function that returns the
arrays to keep after a run; one ``<out>_<seed>.npz`` is written per run and one JSON line
is printed: ``{"build_s": ..., "runs": [{"seed", "path", "wall"}, ...]}``.

The standalone binary seeds its random numbers from the operating system when the script
sets no seed, so every run draws new initial values, connectivity and input: the runs are
independent samples (not reproducible; ``seed`` only numbers them).
"""

import json
import sys
import time

import numpy as np


def config() -> dict:
    """The JSON config given as the first command-line argument."""
    return json.loads(sys.argv[1])


def standalone():
    """Switch Brian2 to C++ standalone mode (build on demand) and return its module."""
    import brian2

    brian2.set_device("cpp_standalone", build_on_run=False)
    return brian2


def build_and_run(cfg: dict, collect) -> None:
    """Build once, run the binary once per seed, save ``collect()`` (a dict of arrays) per run."""
    from brian2 import device

    t0 = time.perf_counter()
    device.build(directory=cfg["dir"], run=False)
    result = {"build_s": time.perf_counter() - t0, "runs": []}
    for seed in cfg["seeds"]:
        t0 = time.perf_counter()
        device.run(results_directory=f"results_{seed}", with_output=False)
        wall = time.perf_counter() - t0
        path = f"{cfg['out']}_{seed}.npz"
        np.savez(path, **{k: np.asarray(v) for k, v in collect().items()})
        result["runs"].append({"seed": seed, "path": path, "wall": wall})
    print(json.dumps(result))
