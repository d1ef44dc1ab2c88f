"""The pipeline's structure, checked on the source: data flows one way
(models -> codegen -> runtime; training on top), and no package reaches into another's
private names. Read with ``ast``: every import counts, also one inside a function."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spikeforge"

#: What each stage may not import (its own later stages, and the front ends above them).
FORBIDDEN = {
    "models": ("codegen", "runtime", "training", "network", "config", "frontend", "cli"),
    "codegen": ("runtime", "training", "config", "frontend", "cli"),
    "runtime": ("training", "config", "frontend", "cli"),
}
#: Private names imported across packages (none): the test fails when one is added, and when
#: one listed here is gone (then delete its line).
KNOWN_PRIVATE_IMPORTS: set = set()


def imports(path: Path):
    """(module path inside spikeforge, imported names) of every relative import in ``path``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:len(parts) - node.level])
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("spikeforge."):
                    yield a.name.removeprefix("spikeforge."), []


def sources():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_each_stage_imports_only_earlier_stages(stage):
    wrong = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        for target, names in imports(path):
            modules = [target] + [f"{target}.{n}" if target else n for n in names]
            for m in modules:
                if m.split(".")[0] in FORBIDDEN[stage]:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {m}")
    assert wrong == []


def test_no_private_names_across_packages():
    found = set()
    for path in sources():
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0] if len(rel.parts) > 1 else None
        for target, names in imports(path):
            other = target.split(".")[0] if target else None
            if other == own:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    found.add((rel.as_posix(), target, n))
    assert found - KNOWN_PRIVATE_IMPORTS == set(), "a new private import across packages"
    assert KNOWN_PRIVATE_IMPORTS - found == set(), "gone: delete it from KNOWN_PRIVATE_IMPORTS"
