"""spikeforge: code-generating, batched simulator and trainer for spiking neural networks.

The names users need are exported here, and each is imported on first use: ``import
spikeforge`` itself stays cheap (no sympy, Jinja2 or matplotlib), so the command line
starts fast and a warm run never loads the code generator.

Examples:
    >>> import spikeforge as sf
    >>> net = sf.cuba_network(n=400, batch_size=2)
    >>> isinstance(net, sf.Network)
    True
    >>> sf.LIF.name
    'lif'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> (module, attribute in it; None: the module itself).
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # networks
    "Network": ("spikeforge.network", "Network"),
    "Dense": ("spikeforge.network", "Dense"),
    "OneToOne": ("spikeforge.network", "OneToOne"),
    "FixedProbability": ("spikeforge.network", "FixedProbability"),
    "FromList": ("spikeforge.network", "FromList"),
    "FixedInDegree": ("spikeforge.connectivity", "FixedInDegree"),
    "FixedOutDegree": ("spikeforge.connectivity", "FixedOutDegree"),
    "FixedTotal": ("spikeforge.connectivity", "FixedTotal"),
    "cuba_network": ("spikeforge.networks", "cuba_network"),
    "load_file": ("spikeforge.config", "load_file"),
    "load_network": ("spikeforge.config", "load_network"),
    "Simulation": ("spikeforge.runtime.simulation", "Simulation"),
    "backend_names": ("spikeforge.runtime.backends", "backend_names"),
    "get_backend": ("spikeforge.runtime.backends", "get_backend"),
    # models
    "models": ("spikeforge.models", None),
    "NeuronModel": ("spikeforge.models", "NeuronModel"),
    "WeightUpdateModel": ("spikeforge.models", "WeightUpdateModel"),
    "PostsynapticModel": ("spikeforge.models", "PostsynapticModel"),
    "CurrentSourceModel": ("spikeforge.models", "CurrentSourceModel"),
    "LIF": ("spikeforge.models", "LIF"),
    "LIF_SUBTRACTIVE": ("spikeforge.models", "LIF_SUBTRACTIVE"),
    "ALIF": ("spikeforge.models", "ALIF"),
    "IZHIKEVICH": ("spikeforge.models", "IZHIKEVICH"),
    "LEAKY_INTEGRATOR": ("spikeforge.models", "LEAKY_INTEGRATOR"),
    "POISSON": ("spikeforge.models", "POISSON"),
    "SPIKE_SOURCE_ARRAY": ("spikeforge.models", "SPIKE_SOURCE_ARRAY"),
    "EXP_CURR": ("spikeforge.models", "EXP_CURR"),
    "DELTA_CURR": ("spikeforge.models", "DELTA_CURR"),
    "STATIC": ("spikeforge.models", "STATIC"),
    "STATIC_CONSTANT": ("spikeforge.models", "STATIC_CONSTANT"),
    "STDP": ("spikeforge.models", "STDP"),
    # training: the trainer and its compilers, objectives, schedules
    "Trainer": ("spikeforge.training.trainer", "Trainer"),
    "EpropCompiler": ("spikeforge.training.compiler", "EpropCompiler"),
    "ParallelCompiler": ("spikeforge.training.parallel", "ParallelCompiler"),
    "EpropConfig": ("spikeforge.training.model", "EpropConfig"),
    "Adam": ("spikeforge.training.objectives", "Adam"),
    "SGD": ("spikeforge.training.objectives", "SGD"),
    "SoftmaxCrossEntropy": ("spikeforge.training.objectives", "SoftmaxCrossEntropy"),
    "MeanSquaredError": ("spikeforge.training.objectives", "MeanSquaredError"),
    "CosineDecay": ("spikeforge.training.schedules", "CosineDecay"),
    "ExponentialDecay": ("spikeforge.training.schedules", "ExponentialDecay"),
    "StepDecay": ("spikeforge.training.schedules", "StepDecay"),
    "Warmup": ("spikeforge.training.schedules", "Warmup"),
    # datasets
    "datasets": ("spikeforge.training.datasets", None),
    "SpikeDataset": ("spikeforge.training.datasets", "SpikeDataset"),
    "digits": ("spikeforge.training.datasets", "digits"),
    "evidence_accumulation": ("spikeforge.training.datasets", "evidence_accumulation"),
    "pattern_generation": ("spikeforge.training.datasets", "pattern_generation"),
    "load_shd": ("spikeforge.training.datasets", "load_shd"),
    # interop and pictures
    "to_nir": ("spikeforge.interop.nir", "to_nir"),
    "from_nir": ("spikeforge.interop.nir", "from_nir"),
    "plot_simulation": ("spikeforge.plots", "plot_simulation"),
    "plot_raster": ("spikeforge.plots", "plot_raster"),
    "plot_rates": ("spikeforge.plots", "plot_rates"),
    "plot_history": ("spikeforge.plots", "plot_history"),
    # errors
    "SpikeforgeError": ("spikeforge.errors", "SpikeforgeError"),
    "ModelError": ("spikeforge.errors", "ModelError"),
    "NetworkError": ("spikeforge.errors", "NetworkError"),
    "ConfigError": ("spikeforge.errors", "ConfigError"),
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what mypy and IDEs see; at run time each name is imported on first use
    from . import models as models
    from .config import load_file as load_file
    from .config import load_network as load_network
    from .connectivity import FixedInDegree as FixedInDegree
    from .connectivity import FixedOutDegree as FixedOutDegree
    from .connectivity import FixedTotal as FixedTotal
    from .errors import ConfigError as ConfigError
    from .errors import ModelError as ModelError
    from .errors import NetworkError as NetworkError
    from .errors import SpikeforgeError as SpikeforgeError
    from .interop.nir import from_nir as from_nir
    from .interop.nir import to_nir as to_nir
    from .models import ALIF as ALIF
    from .models import DELTA_CURR as DELTA_CURR
    from .models import EXP_CURR as EXP_CURR
    from .models import IZHIKEVICH as IZHIKEVICH
    from .models import LEAKY_INTEGRATOR as LEAKY_INTEGRATOR
    from .models import LIF as LIF
    from .models import LIF_SUBTRACTIVE as LIF_SUBTRACTIVE
    from .models import POISSON as POISSON
    from .models import SPIKE_SOURCE_ARRAY as SPIKE_SOURCE_ARRAY
    from .models import STATIC as STATIC
    from .models import STATIC_CONSTANT as STATIC_CONSTANT
    from .models import STDP as STDP
    from .models import CurrentSourceModel as CurrentSourceModel
    from .models import NeuronModel as NeuronModel
    from .models import PostsynapticModel as PostsynapticModel
    from .models import WeightUpdateModel as WeightUpdateModel
    from .network import Dense as Dense
    from .network import FixedProbability as FixedProbability
    from .network import FromList as FromList
    from .network import Network as Network
    from .network import OneToOne as OneToOne
    from .networks import cuba_network as cuba_network
    from .plots import plot_history as plot_history
    from .plots import plot_raster as plot_raster
    from .plots import plot_rates as plot_rates
    from .plots import plot_simulation as plot_simulation
    from .runtime.backends import backend_names as backend_names
    from .runtime.backends import get_backend as get_backend
    from .runtime.simulation import Simulation as Simulation
    from .training import datasets as datasets
    from .training.compiler import EpropCompiler as EpropCompiler
    from .training.datasets import SpikeDataset as SpikeDataset
    from .training.datasets import digits as digits
    from .training.datasets import evidence_accumulation as evidence_accumulation
    from .training.datasets import load_shd as load_shd
    from .training.datasets import pattern_generation as pattern_generation
    from .training.model import EpropConfig as EpropConfig
    from .training.objectives import SGD as SGD
    from .training.objectives import Adam as Adam
    from .training.objectives import MeanSquaredError as MeanSquaredError
    from .training.objectives import SoftmaxCrossEntropy as SoftmaxCrossEntropy
    from .training.parallel import ParallelCompiler as ParallelCompiler
    from .training.schedules import CosineDecay as CosineDecay
    from .training.schedules import ExponentialDecay as ExponentialDecay
    from .training.schedules import StepDecay as StepDecay
    from .training.schedules import Warmup as Warmup
    from .training.trainer import Trainer as Trainer


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it in the module."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'spikeforge' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
