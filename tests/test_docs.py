"""The examples in the README run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks(ROOT / "README.md"))))
def test_readme_python_example_runs(index):
    code = _python_blocks(ROOT / "README.md")[index]
    namespace = {}
    exec(compile(code, f"README.md[python block {index}]", "exec"), namespace)
    if "sim" in namespace:
        assert namespace["sim"].step > 0
