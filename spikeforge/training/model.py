"""The network e-prop trains: inputs -> recurrent hidden layer -> leaky-integrator readout.

This description knows nothing about how it is trained or run: ``EpropConfig`` says which
neuron model the hidden layer uses, the sizes, the readout, the loss and the learning
signal; :func:`spikeforge.training.network_runtime.translate` turns it into a network that
the training compiler (:mod:`spikeforge.training.compiler`) trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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

    A hidden-neuron parameter is a number (the same for every hidden neuron) or a 1-D
    sequence of ``n_hidden`` numbers, one per neuron: with the ALIF model, ``beta`` zero for
    some neurons makes them plain LIF neurons (Bellec's LSNN). After construction,
    ``params`` holds the scalar parameters (compiled in as constants) and
    ``per_neuron_params`` the others (float64 arrays, one value per neuron in the translated
    network). A per-neuron parameter may not enter a
    derived parameter or an eligibility component kept per presynaptic neuron.

    Examples:
        >>> from spikeforge import LIF_SUBTRACTIVE, EpropConfig
        >>> config = EpropConfig(64, 32, 10, LIF_SUBTRACTIVE, dict(v_th=0.6, r_m=10.0), name="demo")
        >>> config.n_inputs, config.n_hidden, config.n_outputs
        (64, 32, 10)
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
        scalars, self.per_neuron_params = self._split_hidden_params()
        bound = self.hidden_model.bind_params(scalars, "hidden layer")
        self.params = {k: v for k, v in bound.items() if k not in self.per_neuron_params}
        from ..models.parameters import check_parameter_values  # time constants > 0, finite derived values

        check_parameter_values(self.hidden_model, {**self.params, **self.per_neuron_params}, self.dt, "hidden layer")
        m = self.hidden_model
        if m.refractory is not None:
            # the training kernels have no refractory state: only a period of 0 trains the model as it simulates
            period = hidden_values(self, m.refractory)
            if not np.all(np.isfinite(period)) or np.any(period != 0):
                shown = float(np.nanmax(np.abs(period))) if np.any(np.isfinite(period)) else float("nan")
                raise NetworkError(f"hidden layer ({m.name}): e-prop training does not model refractoriness, but "
                                   f"the refractory period '{m.refractory_source}' is {shown:g} ms; set it to 0")
        if self.per_neuron_params:
            check_per_neuron_params(self)
        if self.precision not in ("float", "double"):
            raise NetworkError(f"precision must be 'float' or 'double', got {self.precision!r}")

    def _split_hidden_params(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(scalar values, per-neuron arrays) of ``hidden_params``; arrays are validated here."""
        m = self.hidden_model
        scalars, arrays = {}, {}
        for name, value in dict(self.hidden_params or {}).items():
            if isinstance(value, (str, bytes)) or np.ndim(value) == 0:
                scalars[name] = value  # bind_params checks it (and unknown names)
                continue
            where = f"hidden layer ({m.name}): parameter '{name}'"
            if name not in m.params:
                scalars[name] = value  # reported as unknown by bind_params
                continue
            try:
                if np.asarray(value).dtype == bool or any(isinstance(v, bool) for v in np.ravel(value)):
                    raise TypeError("booleans")
                arr = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise NetworkError(f"{where}: per-neuron values must be numbers") from None
            if arr.ndim != 1 or arr.shape[0] != self.n_hidden:
                raise NetworkError(f"{where}: per-neuron values must be a 1-D sequence of n_hidden = "
                                   f"{self.n_hidden} numbers, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise NetworkError(f"{where}: per-neuron values must be finite")
            arr.flags.writeable = False
            arrays[name] = arr
        return scalars, arrays

    @property
    def kappa(self) -> float:
        return math.exp(-self.dt / self.tau_out)


def hidden_values(cfg: EpropConfig, expr) -> np.ndarray:
    """The value of ``expr`` (of the hidden model's parameters, derived parameters and ``dt``)
    for each distinct combination of per-neuron values it uses (one value if it uses none);
    NaN where it cannot be evaluated to a number."""
    import sympy

    from ..models.expressions import symbol

    m = cfg.hidden_model
    env = {symbol(k): sympy.Float(v) for k, v in cfg.params.items()}
    env[symbol("dt")] = sympy.Float(cfg.dt)
    per_neuron = sorted({x.name for x in sympy.sympify(expr).free_symbols} & set(cfg.per_neuron_params))
    rows = np.unique(np.stack([cfg.per_neuron_params[p] for p in per_neuron], axis=1), axis=0) if per_neuron \
        else np.zeros((1, 0))
    out = []
    for row in rows:
        local = dict(env) | {symbol(p): sympy.Float(v) for p, v in zip(per_neuron, row)}
        for name, e in m.derived.items():
            local[symbol(name)] = sympy.sympify(e).xreplace(local)
        value = sympy.sympify(expr).xreplace(local).evalf()
        out.append(float(value) if value.is_number and value.is_real else float("nan"))
    return np.array(out)


def check_per_neuron_params(cfg: EpropConfig):
    """Refuse per-neuron parameters where the kernel evaluates them outside a per-neuron
    context: in a derived parameter (a constant of the whole layer) or in an eligibility
    component kept per presynaptic neuron (shared by all postsynaptic neurons)."""
    from ..codegen.eprop import derive

    m = cfg.hidden_model
    names = set(cfg.per_neuron_params)
    if not names:
        return

    def refuse(name, what):
        raise NetworkError(f"hidden layer ({m.name}): parameter '{name}' has per-neuron values, but {what}; "
                           "give it a single value")

    for d, expr in m.derived.items():
        used = sorted(names & {s.name for s in expr.free_symbols})
        if used:
            refuse(used[0], f"the derived parameter '{d}' uses it")
    deriv = derive(m, cfg.params, surrogate=cfg.surrogate, gamma=cfg.gamma)
    n = len(deriv.states)
    for s in deriv.per_presynaptic:
        a = deriv.states.index(s)
        factors = [deriv.c[a]] + [deriv.D[a, b] for b in range(n)]
        used = sorted(names & {x.name for f in factors for x in f.free_symbols})
        if used:
            refuse(used[0], f"the eligibility component of '{s}' depends on it and is kept per presynaptic "
                            "neuron (shared by all postsynaptic neurons)")
