"""The tables of tests/conftest.py that leave repeats to the full suite name tests that exist:
a renamed test would otherwise drop out of the table and make the quick loop slower unnoticed."""

import re
from pathlib import Path

from tests.conftest import FULL_SUITE_ONLY, QUICK_LOOP_KEEPS, _slow_reason

ROOT = Path(__file__).resolve().parent.parent


def _defined(nodeid):
    path, _, name = nodeid.partition("[")[0].partition("::")
    return re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M) is not None


def test_every_entry_names_a_test_function_that_exists():
    missing = [k for k in [*QUICK_LOOP_KEEPS, *FULL_SUITE_ONLY] if not _defined(k)]
    assert not missing, missing


def test_every_parametrised_test_keeps_a_case_in_the_quick_loop_and_every_entry_says_why():
    for test, (kept, why) in QUICK_LOOP_KEEPS.items():
        assert kept and why, test
        assert _slow_reason(f"{test}[{kept[0]}]") is None
        assert _slow_reason(f"{test}[not-{kept[0]}]") == why
    assert all(FULL_SUITE_ONLY.values())
    assert _slow_reason("tests/test_cuda.py::test_every_generated_kernel_compiles_with_nvcc[sm_90]") is not None
