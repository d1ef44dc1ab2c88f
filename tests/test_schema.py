"""The published JSON Schemas of network and training files: current, and in agreement with
the loaders on every example file and on files the loaders refuse."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from spikeforge import schema
from spikeforge.config import load_network
from spikeforge.errors import ConfigError
from spikeforge.training.config import load_training

ROOT = Path(__file__).resolve().parents[1]
TRAINING_EXAMPLES = {"digits.yaml", "evidence_accumulation.yaml", "pattern_generation.yaml", "shd.yaml"}
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml"))


def validator(kind):
    return jsonschema.Draft202012Validator(schema.SCHEMAS[kind]())


def kind_of(path: Path) -> str:
    return "training" if path.name in TRAINING_EXAMPLES or "train" in yaml.safe_load(path.read_text()) \
        else "network"


@pytest.mark.parametrize("kind", sorted(schema.SCHEMAS))
def test_the_published_schema_is_current(kind):
    """The file editors read equals what the key tables give (else: python -m spikeforge.schema --write)."""
    assert schema.schema_path(kind).read_text(encoding="utf-8") == schema.schema_text(kind)
    jsonschema.Draft202012Validator.check_schema(schema.SCHEMAS[kind]())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_every_example_file_is_valid(path):
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    kind = "training" if "training" in data or "data" in data else "network"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind).iter_errors(data)]
    assert errors == []


NETWORK = {"populations": {"exc": {"size": 10, "model": "lif", "record": ["spikes"]}},
           "projections": {"ee": {"pre": "exc", "post": "exc", "connectivity": {"fixed_probability": 0.1},
                                  "weight_update": {"model": "static_constant", "params": {"w": 0.1}},
                                  "postsynaptic": {"model": "exp_curr", "params": {"tau_syn": "5 ms"}},
                                  "delay": 1.0}}}


@pytest.mark.parametrize("change, where", [
    (lambda d: d["populations"]["exc"].update(sise=10), "populations.exc"),
    (lambda d: d["projections"]["ee"].update(dealy=1.0), "projections.ee"),
    (lambda d: d.update(populaitons={}), ""),
    (lambda d: d["populations"]["exc"].update(size="ten"), "populations.exc.size"),
    (lambda d: d.update(precision="half"), "precision"),
    (lambda d: d["projections"]["ee"].update(connectivity={"fixed_probabilty": 0.1}), "projections.ee.connectivity"),
])
def test_the_schema_refuses_what_the_loader_refuses(change, where):
    import copy

    data = copy.deepcopy(NETWORK)
    assert list(validator("network").iter_errors(data)) == []
    load_network(yaml.safe_dump(data))  # the unchanged file loads
    change(data)
    errors = list(validator("network").iter_errors(data))
    assert errors, "the schema accepted a file the loader refuses"
    assert any(".".join(map(str, e.absolute_path)).startswith(where) for e in errors)
    with pytest.raises(ConfigError):
        load_network(yaml.safe_dump(data))


def test_the_training_schema_refuses_an_unknown_key(tmp_path):
    good = {"data": {"kind": "digits"}, "network": {"hidden": {"model": "lif", "size": 8}},
            "training": {"epochs": 1, "lr_schedule": {"kind": "step", "every": 2, "factor": 0.5}}}
    assert list(validator("training").iter_errors(good)) == []
    bad = {**good, "training": {"epochs": 1, "learning_rate": 0.1}}
    assert [".".join(map(str, e.absolute_path)) for e in validator("training").iter_errors(bad)] == ["training"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_training(path)
