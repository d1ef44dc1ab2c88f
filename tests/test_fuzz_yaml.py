"""Fuzzing the YAML loaders: mutated example files raise spikeforge's own errors, nothing else.

Each example file (network files through :func:`spikeforge.config.load_network`, which also
builds the Network; training files through :func:`spikeforge.training.config.load_training`,
which also builds the data set and the e-prop configuration) is mutated by hypothesis:
keys deleted, renamed or duplicated, values replaced by values of other types (lists,
mappings, strings, null, booleans, huge, tiny, negative and non-finite numbers) or by values
from elsewhere in the file, lines deleted, duplicated or re-indented, YAML syntax broken.
Loading must either succeed or raise a :class:`~spikeforge.errors.SpikeforgeError`; nothing
is compiled or run. Populations and sample counts are shrunk first so that each load takes
milliseconds; ``derandomize`` makes CI see the same cases every time.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikeforge.config import load_network  # noqa: E402
from spikeforge.errors import SpikeforgeError  # noqa: E402
from spikeforge.training.config import load_training  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NETWORK_FILES = ["cuba.yaml", "stdp_minibatch.yaml"]
TRAINING_FILES = ["digits.yaml", "evidence_accumulation.yaml", "pattern_generation.yaml", "shd.yaml"]
#: Shrunk so that one load takes milliseconds (the structure of the file is unchanged).
SMALLER = {"size": 8, "n_samples": 8, "epochs": 1}

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD_VALUES = [
    None, True, False, 0, 1, -1, 2, 10**12, -(10**12), 2**63, 2**64 + 1, -(2**70), 1e300, -1e300, 1e-300, 0.5,
    math.nan, math.inf, -math.inf, "", "x", "neuron", "lif", "dense", "1e3", "dv/dt = -v", "__import__('os')",
    [], [1], ["neuron"], [None], [[1, 2]], {}, {"a": 1}, {"kind": ["neuron"]}, {"uniform": [1, "x"]},
    {"normal": [0, -1]}, {"fixed_probability": {"p": 2}},
]
BREAKERS = [":", "{", "}", "[", "]", ",", "- ", "&a", "*a", "!!python/object:os.system", "|", ">", "'", '"', "#",
            "%", "@", "\t", "? ", "<<: *x"]


def _shrink(node):
    if isinstance(node, dict):
        return {k: (SMALLER[k] if k in SMALLER and isinstance(v, int) else _shrink(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_shrink(v) for v in node]
    return node


def _paths(node, prefix=()):
    """Every path to a value of the tree (dict keys and list indices)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@st.composite
def _tree_mutation(draw, tree):
    paths = _paths(tree)
    if not paths:
        return tree
    path = draw(st.sampled_from(paths))
    parent, key = _get(tree, path[:-1]), path[-1]
    op = draw(st.sampled_from(["delete", "replace", "replace", "swap", "rename", "wrap"]))
    if op == "delete":
        del parent[key]
    elif op == "replace":
        # Integers: small ones, or huge ones numpy refuses at once (never a size that fits
        # but takes minutes: that is the memory check's and the user's business).
        parent[key] = draw(st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=12),
                                     st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True)))
    elif op == "swap":  # a value from elsewhere in the file: the right shape for another key
        parent[key] = copy.deepcopy(_get(tree, draw(st.sampled_from(paths))))
    elif op == "wrap":
        value = parent[key]
        parent[key] = draw(st.sampled_from([[value], {"x": value}, {value is None: 1}]))
    elif isinstance(parent, dict):  # rename, possibly onto a sibling (the sibling is replaced)
        new = draw(st.one_of(st.sampled_from([*parent, "kind", "model", "params", "", "1", "x y"]),
                             st.text(max_size=8)))
        parent[new] = parent.pop(key)
    return tree


def _text_mutation(text: str, draw) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "truncate"]))
    if op == "delete":
        del lines[i]
    elif op == "duplicate":  # duplicate keys, or a repeated list item
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
    elif op == "dedent":
        lines[i] = lines[i][draw(st.integers(1, 4)):]
    elif op == "insert":
        at = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at] + draw(st.sampled_from(BREAKERS)) + lines[i][at:]
    else:
        return text[: draw(st.integers(0, len(text)))]
    return "\n".join(lines) + "\n"


@st.composite
def mutated(draw, name: str) -> str:
    tree = _shrink(yaml.safe_load((EXAMPLES / name).read_text()))
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(_tree_mutation(tree))
    text = yaml.safe_dump(tree, sort_keys=False, default_flow_style=draw(st.sampled_from([False, None])))
    if draw(st.booleans()):
        text = _text_mutation(text, draw)
    return text


def _only_our_errors(load, text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load(text)
        except SpikeforgeError:
            pass


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="spikeforge-fuzz-") as d:
        yield Path(d)


def test_unmutated_examples_load(workdir):
    for name in NETWORK_FILES:
        load_network(yaml.safe_dump(_shrink(yaml.safe_load((EXAMPLES / name).read_text()))),
                     filename=str(EXAMPLES / name))
    path = workdir / "digits.yaml"
    path.write_text(yaml.safe_dump(_shrink(yaml.safe_load((EXAMPLES / "digits.yaml").read_text()))))
    load_training(path)


def test_wrong_type_of_model_kind_is_a_config_error():
    """What the fuzzer first found: an unhashable kind was a TypeError."""
    from spikeforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^f.yaml:1: models.m.kind: unknown model kind \['neuron'\]"):
        load_network("models: {m: {kind: [neuron]}}\npopulations: {a: {size: 1, model: lif}}\n", filename="f.yaml")


@pytest.mark.slow  # about 10 s each on 2 busy cores; CI runs them
@pytest.mark.parametrize("name", NETWORK_FILES)
def test_mutated_network_files_raise_only_spikeforge_errors(name):
    @FUZZ
    @given(mutated(name))
    def check(text):
        _only_our_errors(lambda t: load_network(t, filename=str(EXAMPLES / name)), text)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING_FILES)
def test_mutated_training_files_raise_only_spikeforge_errors(name, workdir):
    path = workdir / name

    def load(text):
        path.write_text(text)
        load_training(path)

    @FUZZ
    @given(mutated(name))
    def check(text):
        _only_our_errors(load, text)

    check()


def test_keys_must_be_names():
    """Found by the fuzzer: a boolean key in a variable's options was a TypeError."""
    from spikeforge.errors import ConfigError

    text = "models:\n  m:\n    kind: neuron\n    vars:\n      v: {off: 1}\npopulations: {a: {size: 1, model: m}}\n"
    with pytest.raises(ConfigError, match=r"^f.yaml:5: models.m.vars.v: keys must be names, got a boolean False "
                                          r"\(YAML reads on/off"):
        load_network(text, filename="f.yaml")
