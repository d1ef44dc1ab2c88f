"""The Python examples in the README and in docs/ run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(path, i) for path in DOCS for i in range(len(_python_blocks(path)))]


@pytest.mark.parametrize("path,index", BLOCKS, ids=[f"{p.name}[{i}]" for p, i in BLOCKS])
def test_documented_python_example_runs(path, index, monkeypatch):
    code = _python_blocks(path)[index]
    monkeypatch.chdir(ROOT)  # examples use paths like examples/cuba.yaml
    namespace = {}
    exec(compile(code, f"{path.name}[python block {index}]", "exec"), namespace)
    if "sim" in namespace:
        assert namespace["sim"].step > 0
