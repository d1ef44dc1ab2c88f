"""What users write: neuron, synapse and current-source models as equations."""

from .builtins import (
    ALIF,
    CURRENT_SOURCES,
    DC,
    DELTA_CURR,
    EXP_CURR,
    IZHIKEVICH,
    LEAKY_INTEGRATOR,
    LIF,
    LIF_SUBTRACTIVE,
    NEURONS,
    NOISE,
    POISSON,
    POSTSYNAPTIC,
    QIF,
    SPIKE_SOURCE_ARRAY,
    STATIC,
    STATIC_CONSTANT,
    STDP,
    WEIGHT_UPDATES,
    delta_curr,
    stdp,
)
from .neuron import NeuronModel, SpikeSourceArrayModel
from .synapse import CurrentSourceModel, PostsynapticModel, WeightUpdateModel
from .variables import Constant, Normal, Uniform, Var

__all__ = [
    "ALIF", "CURRENT_SOURCES", "DC", "DELTA_CURR", "EXP_CURR", "IZHIKEVICH", "LEAKY_INTEGRATOR", "LIF",
    "LIF_SUBTRACTIVE", "QIF",
    "NEURONS", "NOISE", "POISSON", "POSTSYNAPTIC", "SPIKE_SOURCE_ARRAY", "STATIC", "STATIC_CONSTANT", "STDP",
    "WEIGHT_UPDATES", "delta_curr", "stdp", "NeuronModel", "SpikeSourceArrayModel", "CurrentSourceModel",
    "PostsynapticModel", "WeightUpdateModel", "Constant", "Normal", "Uniform", "Var",
]
