"""The kinds of model a YAML file may define under ``models:``, and the built-in models by kind."""

from __future__ import annotations

from ..models import builtins as _builtins
from ..models.neuron import NeuronModel
from ..models.synapse import CurrentSourceModel, PostsynapticModel, WeightUpdateModel

__all__ = ["MODEL_KINDS", "CODE_FIELDS", "EXPRESSION_FIELDS", "builtin_registry"]

#: For each model kind: the class and the keys a user-defined model of that kind may have.
MODEL_KINDS = {
    "neuron": (
        NeuronModel,
        (
            "params",
            "derived",
            "vars",
            "equations",
            "threshold",
            "reset",
            "refractory",
            "integrator",
            "sim_code",
            "subexpressions",
        ),
    ),
    "weight_update": (
        WeightUpdateModel,
        (
            "params",
            "derived",
            "vars",
            "pre_vars",
            "post_vars",
            "pre_equations",
            "post_equations",
            "on_pre_spike",
            "on_post_spike",
            "on_pre",
            "on_post",
            "subexpressions",
            "equations",
            "summed",
        ),
    ),
    "postsynaptic": (PostsynapticModel, ("params", "derived", "vars", "equations", "apply", "subexpressions")),
    "current_source": (CurrentSourceModel, ("params", "derived", "vars", "equations", "current", "subexpressions")),
}
# Every kind of model may declare the units it computes its names in (spikeforge.units).
MODEL_KINDS = {kind: (cls, (*keys, "units")) for kind, (cls, keys) in MODEL_KINDS.items()}
#: Model fields holding code or an expression (a string, or a number for expressions).
CODE_FIELDS = {
    "equations",
    "threshold",
    "reset",
    "refractory",
    "sim_code",
    "pre_equations",
    "post_equations",
    "on_pre_spike",
    "on_post_spike",
    "on_pre",
    "on_post",
    "apply",
    "current",
}
EXPRESSION_FIELDS = {"threshold", "refractory", "current"}  # may also be a number


def builtin_registry(kind: str) -> dict:
    """The built-in models of ``kind`` (a key of :data:`MODEL_KINDS`), by name."""
    return {
        "neuron": _builtins.NEURONS,
        "weight_update": _builtins.WEIGHT_UPDATES,
        "postsynaptic": _builtins.POSTSYNAPTIC,
        "current_source": _builtins.CURRENT_SOURCES,
    }[kind]

