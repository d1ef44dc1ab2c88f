"""The package as a user meets it: the names ``import spikeforge`` exports (imported on first
use, so the import itself loads neither sympy nor Jinja2), and the examples in the public
functions' docstrings, which run as written."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import spikeforge

ROOT = Path(spikeforge.__file__).resolve().parent.parent


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_spikeforge_loads_no_heavy_module():
    out = _fresh("import json, sys, spikeforge\n"
                 "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
                 "{'sympy', 'jinja2', 'matplotlib', 'numpy', 'yaml'})))")
    assert json.loads(out) == []


def test_a_name_is_imported_on_first_use_only():
    out = _fresh("import sys, spikeforge\n"
                 "before = 'spikeforge.errors' in sys.modules\n"
                 "error = spikeforge.ConfigError('x')\n"
                 "print(before, 'spikeforge.errors' in sys.modules, 'ConfigError' in vars(spikeforge))")
    assert out.split() == ["False", "True", "True"]


def test_from_spikeforge_import_network_and_models():
    from spikeforge import Network, models
    from spikeforge.models import LIF
    from spikeforge.network import Network as NetworkInModule

    assert Network is NetworkInModule and models.LIF is LIF


def test_every_exported_name_resolves_to_its_module_attribute():
    assert len(spikeforge.__all__) == len(set(spikeforge.__all__))
    for name in spikeforge.__all__:
        if name == "__version__":
            continue
        module, attribute = spikeforge._EXPORTS[name]
        expected = importlib.import_module(module)
        if attribute is not None:
            expected = getattr(expected, attribute)
        assert getattr(spikeforge, name) is expected, name
    assert set(spikeforge.__all__) <= set(dir(spikeforge))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Netwrok'"):
        spikeforge.Netwrok  # noqa: B018
    with pytest.raises(ImportError):
        exec("from spikeforge import Netwrok", {})


def test_the_type_checking_imports_match_the_exports():
    """What mypy and IDEs see (the TYPE_CHECKING block) is what is exported at run time."""
    import ast

    tree = ast.parse(Path(spikeforge.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.asname or alias.name for node in block.body for alias in node.names}
    assert seen == set(spikeforge._EXPORTS)


# The modules whose public functions carry examples; their examples build a 400-neuron CUBA
# network (cached) and draw it.
# (the examples that build and run a network repeat what test_plots checks: full suite only)
DOCTESTED = [pytest.param("spikeforge", marks=pytest.mark.slow),
             pytest.param("spikeforge.plots", marks=pytest.mark.slow), "spikeforge.doctor"]
#: The exported functions and classes, each with an example in its own docstring.
# digits: scikit-learn's load; Trainer and the compilers: learning runs; Simulation and the plots: CUBA
# runs (test_plots runs one in the quick loop)
FULL_SUITE_EXAMPLES = ("digits", "Trainer", "Simulation", "plot_raster", "plot_rates", "plot_simulation",
                       "EpropCompiler", "ParallelCompiler")
EXPORTED = [pytest.param(n, marks=pytest.mark.slow) if n in FULL_SUITE_EXAMPLES else n
            for n in sorted(n for n in spikeforge._EXPORTS if spikeforge._EXPORTS[n][1] is not None)]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module):
    pytest.importorskip("matplotlib")
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _is_documented_callable(obj) -> bool:
    import inspect

    return inspect.isfunction(obj) or inspect.isclass(obj)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_function_has_an_example_that_runs(name, monkeypatch):
    obj = getattr(spikeforge, name)
    if not _is_documented_callable(obj) or not callable(obj):
        pytest.skip(f"{name} is an object, not a function or class")
    if isinstance(obj, type) and issubclass(obj, BaseException):
        pytest.skip("an exception class")
    import inspect

    if inspect.isclass(obj) and name not in CLASSES_WITH_EXAMPLES:
        pytest.skip("class examples are checked for the classes listed")
    doc = inspect.getdoc(obj) or ""
    assert "Examples:" in doc and ">>>" in doc, f"{name}: no example in its docstring"
    if "nir" in (obj.__module__ or ""):
        pytest.importorskip("nir")
    if name == "digits":
        pytest.importorskip("sklearn")
    monkeypatch.chdir(ROOT)  # examples name files such as examples/cuba.yaml
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(recurse=False).find(obj, name, globs={}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


#: The exported classes whose own docstring carries an example that runs (the test above runs it).
CLASSES_WITH_EXAMPLES = {
    "Network", "Simulation", "Dense", "OneToOne", "FixedProbability", "FromList", "FixedInDegree", "FixedOutDegree",
    "FixedTotal", "NeuronModel", "WeightUpdateModel", "PostsynapticModel", "CurrentSourceModel", "Trainer",
    "EpropConfig", "Adam", "SGD", "SoftmaxCrossEntropy", "MeanSquaredError", "CosineDecay", "ExponentialDecay",
    "StepDecay", "Warmup", "SpikeDataset", "EpropCompiler", "ParallelCompiler",
}


#: Classes whose public methods each carry an example, but for those named (value_parts: a view
#: for the backends; the descriptions: what checkpoints compare).
METHOD_EXAMPLES = {"Network": {"value_parts"}, "Simulation": set(),
                   "Trainer": {"training_description", "job_description"}}


@pytest.mark.slow  # every method's example builds, generates or trains a small network
@pytest.mark.parametrize("cls_name", sorted(METHOD_EXAMPLES))
def test_public_methods_have_examples_that_run(cls_name, monkeypatch):
    import inspect

    cls = getattr(spikeforge, cls_name)
    monkeypatch.chdir(ROOT)
    methods = {k: v for k, v in vars(cls).items() if inspect.isfunction(v) and not k.startswith("_")}
    missing, failed = [], []
    for name, method in sorted(methods.items()):
        if name in METHOD_EXAMPLES[cls_name]:
            continue
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder(recurse=False).find(method, f"{cls_name}.{name}", globs={}):
            runner.run(test)
        result = runner.summarize(verbose=False)
        if result.attempted == 0:
            missing.append(name)
        elif result.failed:
            failed.append(name)
    assert missing == [] and failed == [], f"{cls_name}: no example: {missing}; failing: {failed}"
