"""``spikeforge doctor`` run for real on this machine: each line agrees with what is
installed, and every missing piece comes with what to install."""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import shutil

import pytest

from spikeforge.cli import main
from tests.conftest import nvcc_path


def _doctor(capsys, *extra):
    rc = main(["doctor", *extra])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def report():
    from spikeforge.doctor import diagnose

    return {c.name: c for c in diagnose()}


def test_each_check_agrees_with_the_machine(report):
    assert report["C++ compiler"].ok == any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    assert report["nvcc"].ok == (nvcc_path() is not None)
    # the driver: its library is where the dynamic linker finds it (a driver without a GPU still fails)
    if ctypes.util.find_library("cuda") is None:
        assert not report["CUDA driver"].ok and "libcuda" in report["CUDA driver"].detail
    assert report["pycuda"].ok == (importlib.util.find_spec("pycuda") is not None)
    if importlib.util.find_spec("mpi4py") is None:
        assert not report["MPI"].ok
    if importlib.util.find_spec("cupy") is None:
        assert not report["NCCL (cupy)"].ok and "spikeforge[gpu]" in report["NCCL (cupy)"].fix
    if report["nvcc"].ok:
        assert report["nvcc"].detail.startswith("Build cuda_") or "release" in report["nvcc"].detail
    for check in report.values():
        assert check.ok or check.fix, f"{check.name} is missing and says nothing about how to get it"


def test_pycuda_advice_names_the_toolkit_found(report):
    if report["pycuda"].ok:
        pytest.skip("pycuda is installed")
    toolkit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_ROOT") or "/usr/local/cuda"
    if os.path.isfile(os.path.join(toolkit, "include", "cuda.h")):
        # pycuda's build takes the first nvcc on PATH: the command puts this toolkit's first
        assert f"PATH={toolkit}/bin:$PATH CUDA_ROOT={toolkit} pip install pycuda" in report["pycuda"].fix
        if not os.path.isfile(os.path.join(toolkit, "include", "curand.h")):  # pycuda's build includes it
            assert not report["CUDA headers"].ok and "curand.h" in report["CUDA headers"].detail
    if not report["CUDA driver"].ok:
        assert "driver" in report["pycuda"].fix


def test_doctor_command_prints_the_report(capsys, report):
    rc, out = _doctor(capsys)
    assert rc == 0  # the cpu backend runs here
    for name, check in report.items():
        line = next(line for line in out.out.splitlines() if f" {name} " in line)
        assert line.split()[0] == ("ok" if check.ok else "missing")
    from spikeforge.runtime.backends import backend_names, get_backend

    cpu_side = [b for b in backend_names() if not get_backend(b).gpu]  # a C++ compiler runs them
    assert "backends that can run here: " + ", ".join(cpu_side) in out.out


def test_doctor_json_and_quiet(capsys, report):
    rc, out = _doctor(capsys, "--json")
    data = json.loads(out.out)
    assert rc == 0 and data["schema_version"] >= 1
    assert {c["name"]: c["ok"] for c in data["checks"]} == {n: c.ok for n, c in report.items()}
    assert data["backends"]["cpu"] is True and data["backends"]["cuda"] == all(
        report[n].ok for n in ("nvcc", "CUDA driver", "pycuda"))
    rc, out = _doctor(capsys, "-q")
    missing = [n for n, c in report.items() if not c.ok]
    assert rc == 0 and len(out.out.splitlines()) == len(missing)
    assert all(line.startswith("missing ") for line in out.out.splitlines())


def test_doctor_json_keys_are_documented(capsys):
    from tests.test_cli_json_docs import check, documented

    rc, out = _doctor(capsys, "--json")
    result = json.loads(out.out)
    check(result, documented()["doctor"], "doctor")
    assert all(set(c) == {"name", "ok", "detail", "needed_for", "fix"} for c in result["checks"])
