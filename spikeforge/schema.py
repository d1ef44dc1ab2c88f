"""JSON Schemas of spikeforge's YAML files, for editors.

An editor with a YAML language server (yaml-language-server: VS Code's YAML extension,
Neovim, Helix...) completes and checks a network or training file against these schemas.
They are built from the same tables of keys the loaders check (``spikeforge.config``,
``spikeforge.training.config``), so a key the loader accepts is a key the schema offers,
and the published files (``spikeforge/schemas/*.schema.json``) are regenerated with

    python -m spikeforge.schema --write

The schemas check keys and the shapes of values; the loaders check everything else (that a
name is known, that a number is in range, that an equation parses) and remain the
authority: a file the schema accepts may still be refused, with a line-numbered message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from .models import builtins
from .training import config as training_config
from .training.objectives import READOUTS
from .training.spike_rules import RULES

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"

# Shapes of values (the loaders accept these forms; docs/yaml.md describes them).
NUMBER = {"type": "number"}
QUANTITY = {"type": ["number", "string"], "description": "a number in the base unit, or a value with a unit: '20 ms'"}
COUNT = {"type": "integer", "minimum": 0}
NAME = {"type": "string", "pattern": IDENTIFIER}
CODE = {"type": ["string", "number"], "description": "equations, statements or an expression (a string)"}
ANY_VALUE = {"description": "a number, a value with a unit, an expression string, a list, or a mapping "
                            "({values, counts}, {uniform: [lo, hi]}, {normal: [mean, sd]}, ...)"}


def _named(item: dict) -> dict:
    """A mapping from identifiers to ``item``."""
    return {"type": "object", "patternProperties": {IDENTIFIER: item}, "additionalProperties": False}


def _mapping(keys, types: dict, required=(), description: str | None = None) -> dict:
    """An object with exactly ``keys`` (a key without an entry in ``types`` takes any value)."""
    out = {"type": "object", "properties": {k: types.get(k, {}) for k in keys}, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _enum(values, description: str | None = None) -> dict:
    out = {"enum": sorted(values)}
    if description:
        out["description"] = description
    return out


def _model_name(kind: str) -> dict:
    """A built-in model of ``kind`` (offered for completion) or a model from ``models:``."""
    registry = {"neuron": builtins.NEURONS, "weight_update": builtins.WEIGHT_UPDATES,
                "postsynaptic": builtins.POSTSYNAPTIC, "current_source": builtins.CURRENT_SOURCES}[kind]
    return {"anyOf": [{"enum": sorted(registry)}, NAME],
            "description": f"a built-in {kind} model or one defined under models:"}


def _value_keys() -> dict:
    return {"params": _named(ANY_VALUE), "init": _named(ANY_VALUE), "dynamic": {"type": "array", "items": NAME},
            "batch_values": _named({"type": "array"}), "draws": _named(ANY_VALUE)}


def _user_model() -> dict:
    """``models: {name: {kind: ..., ...}}``: the keys depend on the kind."""
    kinds = list(config.MODEL_KINDS)
    field_types = {
        "params": _named({"type": ["number", "string", "null"]}), "derived": _named(CODE),
        "subexpressions": _named(CODE), "vars": _named(ANY_VALUE), "pre_vars": _named(ANY_VALUE),
        "post_vars": _named(ANY_VALUE), "summed": _named(CODE), "units": _named({"type": "string"}),
        "integrator": _enum(("exact", "exponential_euler", "euler", "rk4")),
        # event code, or named pathways: {up: code, down: code}
        "on_pre": {"anyOf": [CODE, _named(CODE)]}, "on_post": {"anyOf": [CODE, _named(CODE)]},
    }
    branches = []
    for kind, (_, keys) in config.MODEL_KINDS.items():
        types = {"kind": {"const": kind}}
        for key in keys:
            types[key] = field_types.get(key, CODE)
        branches.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                         "then": _mapping(("kind", *keys), types)})
    return {"type": "object", "required": ["kind"], "properties": {"kind": _enum(kinds)}, "allOf": branches}


def _connectivity() -> dict:
    kinds = ("fixed_probability", "from_list", "fixed_in_degree", "fixed_out_degree", "fixed_total")
    one_key = [{"type": "object", "properties": {k: {}}, "required": [k], "additionalProperties": False}
               for k in kinds]
    expressions = _mapping(("condition", "probability", "params", "allow_autapses"),
                           {"condition": CODE, "probability": CODE, "params": _named(ANY_VALUE),
                            "allow_autapses": {"type": "boolean"}},
                           description="connect where condition holds, with probability probability")
    return {"anyOf": [_enum(("dense", "all_to_all", "one_to_one")), *one_key, expressions],
            "description": "docs/models.md, 'Connectivity'"}


def _record() -> dict:
    options = {"type": ["object", "boolean", "null"],
               "properties": {"neurons": {}, "every": {"type": "integer", "minimum": 1}},
               "additionalProperties": False}
    name = {"type": "string", "pattern": IDENTIFIER, "description": "spikes, rate or a variable"}
    return {"anyOf": [name, {"type": "array", "items": {"anyOf": [name, _named(options)]}}, _named(options)]}


def network_schema() -> dict:
    """The schema of a network file (``spikeforge run FILE``; docs/yaml.md)."""
    values = _value_keys()
    population = _mapping(config.POPULATION_KEYS, {
        "size": {"type": "integer", "minimum": 1}, "model": _model_name("neuron"), "record": _record(),
        "spikes": _mapping(config.SPIKES_KEYS, {"file": {"type": "string"}}),
        "timed_inputs": _named(_mapping(config.TIMED_INPUT_KEYS, {"file": {"type": "string"}, "key": NAME,
                                                                  "dt": QUANTITY})),
        **values}, required=("size", "model"))
    weight_update = {"anyOf": [_model_name("weight_update"), _mapping(config.WEIGHT_UPDATE_KEYS, {
        "model": _model_name("weight_update"), **values}, required=("model",))]}
    postsynaptic = {"anyOf": [_model_name("postsynaptic"), _mapping(config.POSTSYNAPTIC_KEYS, {
        "model": _model_name("postsynaptic"), "target": NAME, **values}, required=("model",))]}
    projection = _mapping(config.PROJECTION_KEYS, {
        "pre": NAME, "post": NAME, "connectivity": _connectivity(), "weight_update": weight_update,
        "postsynaptic": postsynaptic, "delay": ANY_VALUE,
        "max_delay": QUANTITY}, required=("pre", "post"))
    current_source = _mapping(config.CURRENT_SOURCE_KEYS, {
        "population": NAME, "model": _model_name("current_source"), **values}, required=("population", "model"))
    poisson_input = _mapping(config.POISSON_INPUT_KEYS, {
        "population": NAME, "target": NAME, "n": {"type": "integer", "minimum": 0}, "rate": QUANTITY,
        "weight": QUANTITY}, required=config.POISSON_INPUT_KEYS)
    top = _mapping(config.TOP_LEVEL_KEYS, {
        "name": NAME, "dt": QUANTITY, "seed": COUNT, "batch_size": {"type": "integer", "minimum": 1},
        "precision": _enum(("float", "double")), "duration": QUANTITY, "backend": _enum(config.BACKENDS),
        "save": {"type": "string"}, "models": _named(_user_model()), "populations": _named(population),
        "projections": _named(projection), "current_sources": _named(current_source),
        "poisson_inputs": _named(poisson_input)}, required=("populations",))
    return {"$schema": DIALECT, "$id": "https://spikeforge.invalid/schemas/network.schema.json",
            "title": "spikeforge network file", "description": "docs/yaml.md", **top}


def training_schema() -> dict:
    """The schema of a training job file (``spikeforge train FILE``; docs/training.md)."""
    keys = training_config.JOB_KEYS
    schedule_keys = ("kind", *dict.fromkeys(k for ks, _ in training_config.SCHEDULE_KINDS.values() for k in ks),
                     "warmup_steps")
    schedule = _mapping(schedule_keys, {"kind": _enum(training_config.SCHEDULE_KINDS),
                                        "every": {"type": "integer", "minimum": 1}, "factor": NUMBER,
                                        "gamma": NUMBER, "per": _enum(("epoch", "step")), "min_lr": NUMBER,
                                        "warmup_steps": COUNT}, required=("kind",))
    data = _mapping(keys["data"], {
        "kind": _enum(training_config.DATA_KINDS), "options": {"type": "object"},
        "n_samples": {"type": "integer", "minimum": 1}, "test_fraction": NUMBER, "seed": COUNT,
        "train": {"type": "string"}, "test": {"type": "string"}}, required=("kind",))
    hidden_value = {"anyOf": [QUANTITY, {"type": "array", "items": NUMBER},
                              _mapping(("values", "counts"), {"values": {"type": "array", "items": NUMBER},
                                                              "counts": {"type": "array", "items": COUNT}},
                                       required=("values", "counts"))]}
    hidden = _mapping(keys["network.hidden"], {"model": _model_name("neuron"),
                                               "size": {"type": "integer", "minimum": 1},
                                               "params": _named(hidden_value)}, required=("model", "size"))
    network = _mapping(keys["network"], {
        "hidden": hidden, "recurrent": {"type": "boolean"}, "tau_out": QUANTITY,
        "feedback": _enum(("symmetric", "random")), "surrogate": _enum(("triangular", "fast_sigmoid", "exponential")),
        "gamma": NUMBER, "precision": _enum(("float", "double")),
        "regularisation": _mapping(keys["network.regularisation"], {"rate": NUMBER, "target_hz": QUANTITY})},
        required=("hidden",))
    training = _mapping(keys["training"], {
        "method": _enum(training_config.METHODS),
        "epochs": {"type": "integer", "minimum": 1}, "batch_size": {"type": "integer", "minimum": 1},
        "lr": NUMBER, "lr_schedule": {"anyOf": [schedule, {"type": "null"}]}, "reduce": _enum(("mean", "sum")),
        "seed": COUNT, "init_scale": NUMBER, "checkpoint": {"type": "string"},
        "clamp": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}})
    # the other form: network: an ordinary network description; training: also names its roles
    described = {k: v for k, v in network_schema().items() if k not in ("$schema", "$id", "title", "description")}
    described["description"] = "an ordinary network description (docs/yaml.md) without batch_size and duration"
    net_keys = training_config.NETWORK_JOB_KEYS
    # training.spike (the parallel method): a rule's name, or {rule: NAME, <its constructor's options>}
    gradients = sorted({g for r in RULES.values() for g in getattr(r, "GRADIENTS", ())})
    spike = {"anyOf": [_enum(tuple(RULES)), _mapping(training_config.SPIKE_KEYS, {
        "rule": _enum(tuple(RULES)), "temperature": NUMBER, "gradient": _enum(tuple(gradients)),
        "hard": {"type": "boolean"}}, required=("rule",))]}
    roles = _mapping(net_keys["training"], {
        **training["properties"], "inputs": NAME, "readout": NAME,
        "hidden": {"anyOf": [NAME, {"type": "array", "items": NAME}]},
        "trainable": {"type": "array", "items": {"type": "string"}}, "loss": _enum(("xent", "mse")),
        "readout_output": _enum(READOUTS),
        "optimiser": _mapping(net_keys["training.optimiser"], {"kind": _enum(training_config.OPTIMISERS),
                                                               "beta1": NUMBER, "beta2": NUMBER, "eps": NUMBER}),
        "feedback": {"anyOf": [_enum(training_config.FEEDBACK), _named(_enum(training_config.FEEDBACK))]},
        "surrogate": network["properties"]["surrogate"], "gamma": NUMBER,
        "regularisation": network["properties"]["regularisation"], "spike": spike,
        "chunk": {"anyOf": [{"type": "integer", "minimum": 1}, _enum(("auto",))]}},
        required=("inputs", "hidden", "readout", "trainable"))
    top = _mapping(keys[""], {"name": NAME, "dt": QUANTITY, "models": _named(_user_model()), "data": data,
                              "network": {"anyOf": [network, described]},
                              "training": {"anyOf": [training, roles]}}, required=("data", "network"))
    return {"$schema": DIALECT, "$id": "https://spikeforge.invalid/schemas/training.schema.json",
            "title": "spikeforge training job file", "description": "docs/training.md", **top}


SCHEMAS = {"network": network_schema, "training": training_schema}


def schema_text(kind: str) -> str:
    """The published text of schema ``kind`` (stable: sorted keys, two-space indent)."""
    return json.dumps(SCHEMAS[kind](), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_path(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind}.schema.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikeforge.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write the schemas into {SCHEMA_DIR}")
    parser.add_argument("kind", nargs="?", choices=sorted(SCHEMAS), help="print one schema")
    args = parser.parse_args(argv)
    if args.write:
        from .fileio import atomic_write_text

        SCHEMA_DIR.mkdir(exist_ok=True)
        for kind in SCHEMAS:
            atomic_write_text(schema_path(kind), schema_text(kind))
            schema_path(kind).chmod(0o644)  # package data, readable by all
            print(schema_path(kind))
        return 0
    sys.stdout.write(schema_text(args.kind or "network"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
