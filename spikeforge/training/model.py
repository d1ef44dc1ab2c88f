"""The network e-prop trains: inputs -> recurrent hidden layer -> leaky-integrator readout.

This description knows nothing about how it is trained or run: ``EpropConfig`` says which
neuron model the hidden layer uses, the sizes, the readout, the loss and the learning
signal; :mod:`spikeforge.training.codegen` derives and generates the training kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import NetworkError
from ..models.neuron import NeuronModel

LOSSES = ("xent", "mse")
FEEDBACK = ("symmetric", "random")


@dataclass
class EpropConfig:
    """A recurrent spiking network trained with e-prop.

    Timing: a spike emitted at step t reaches its targets at step t+1 (input -> hidden,
    hidden -> hidden, hidden -> readout). The readout is ``y_t = kappa y_{t-1} +
    (1 - kappa)(W_out z_{t-1} + b)`` with ``kappa = exp(-dt / tau_out)``.
    """

    n_inputs: int
    n_hidden: int
    n_outputs: int
    hidden_model: NeuronModel
    hidden_params: dict = field(default_factory=dict)
    recurrent: bool = True
    tau_out: float = 20.0
    dt: float = 1.0
    loss: str = "xent"  # per-step softmax cross-entropy over the readout window, or "mse"
    feedback: str = "symmetric"  # learning signals through W_out^T, or fixed random matrices
    surrogate: str = "triangular"
    gamma: float = 0.3
    reg_rate: float = 0.0  # firing-rate regularisation strength (0: off)
    reg_target_hz: float = 10.0
    precision: str = "float"
    name: str = "eprop"

    def __post_init__(self):
        for k in ("n_inputs", "n_hidden", "n_outputs"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NetworkError(f"{k} must be a positive integer, got {v!r}")
        if self.loss not in LOSSES:
            raise NetworkError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.feedback not in FEEDBACK:
            raise NetworkError(f"feedback must be one of {', '.join(FEEDBACK)}, got {self.feedback!r}")
        for k in ("tau_out", "dt", "gamma", "reg_rate", "reg_target_hz"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (k in ("tau_out", "dt") and v == 0):
                raise NetworkError(f"{k} must be a finite {'positive' if k in ('tau_out', 'dt') else 'non-negative'} "
                                   f"number, got {v!r}")
        if not isinstance(self.hidden_model, NeuronModel) or not self.hidden_model.spiking:
            raise NetworkError("hidden_model must be a spiking NeuronModel (with a threshold)")
        self.params = self.hidden_model.bind_params(self.hidden_params, "hidden layer")
        if self.hidden_model.refractory is not None:
            steps = 0.0
            if "t_ref" in self.params:
                steps = self.params["t_ref"]
            if steps > 0:
                raise NetworkError("e-prop training does not support refractory periods yet: set t_ref to 0")
        if self.precision not in ("float", "double"):
            raise NetworkError(f"precision must be 'float' or 'double', got {self.precision!r}")

    @property
    def kappa(self) -> float:
        return math.exp(-self.dt / self.tau_out)
