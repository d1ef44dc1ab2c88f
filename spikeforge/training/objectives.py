"""The pieces of an e-prop training job that are objects: losses, feedback and optimisers.

Each adds its own arrays to the network's spec and its own lines of generated code; the
templates never branch on which one it is. Code is C text over the locals the kernels
define (named in each method's docstring)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..codegen.ir import ArraySpec, Line
from ..errors import NetworkError


def _real(value, name: str, positive: bool = False, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NetworkError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0 or value < 0 or below_one and value >= 1:
        raise NetworkError(f"{name} must be {'in [0, 1)' if below_one else 'positive' if positive else '>= 0'}, "
                           f"got {value!r}")
    return float(value)


# -- losses -------------------------------------------------------------------------------

class Loss:
    """A loss over the readout: its arrays (targets) and the code of one step and instance.

    The code reads ``_y[k]`` (readout values of this step), ``_mask`` (the step's weight in the
    loss), ``_b``, ``_step`` and ``K``; it writes ``_err[k]`` (dLoss/dy of this step) and adds
    this step's loss to ``_loss``."""

    name = "loss"

    def arrays(self, n_out: int, n_steps: int) -> list[ArraySpec]:
        return []

    def code(self) -> list[Line]:
        raise NotImplementedError

    def feed(self, backend, batch_size: int, n_out: int, n_steps: int, labels, targets):
        """Write one minibatch's targets into the arrays."""
        raise NotImplementedError


class SoftmaxCrossEntropy(Loss):
    """Per-step softmax cross-entropy against one label per instance, weighted by the mask
    (the readout window): ``loss = -sum_t mask_t log p_t[label]``, ``err_k = mask (p_k - 1[k = label])``."""

    name = "softmax_cross_entropy"

    def arrays(self, n_out, n_steps):
        return [ArraySpec("eprop_labels", "eprop", "labels", "int32", 1, True, "eprop_data",
                          comment="the label of each batch instance")]

    def code(self):
        c = [
            "scalar _max = _y[0];",
            "for (uint32_t _k = 1; _k < K; _k++) _max = fmax(_max, _y[_k]);",
            "scalar _sum = 0;",
            "for (uint32_t _k = 0; _k < K; _k++) { _err[_k] = exp(_y[_k] - _max); _sum += _err[_k]; }",
            "const int32_t _label = _eprop_labels[_b];",
            "for (uint32_t _k = 0; _k < K; _k++) {",
            "    const scalar _p = _err[_k] / _sum;",
            "    if ((int32_t)_k == _label && _mask != 0) _loss -= _mask * log(fmax(_p, (scalar)1e-30));",
            "    _err[_k] = _mask * (_p - ((int32_t)_k == _label ? (scalar)1 : (scalar)0));",
            "}",
        ]
        return [Line("", "softmax cross-entropy: p = softmax(y), loss -= mask log p[label], "
                         "err = mask (p - onehot(label))")] + [Line(x) for x in c]

    def feed(self, backend, batch_size, n_out, n_steps, labels, targets):
        labels = np.asarray(labels)
        if labels.shape != (batch_size,) or not np.issubdtype(labels.dtype, np.integer) \
                or labels.min() < 0 or labels.max() >= n_out:
            raise NetworkError(f"labels must be {batch_size} integers in [0, {n_out})")
        backend.push("eprop_labels", labels.astype(np.int32).reshape(batch_size, 1))


class MeanSquaredError(Loss):
    """Half the squared error against a target per step, instance and readout neuron, weighted
    by the mask: ``loss = sum_t mask_t / 2 |y_t - target_t|^2``, ``err = mask (y - target)``."""

    name = "mse"

    def arrays(self, n_out, n_steps):
        return [ArraySpec("eprop_targets", "eprop", "targets", "scalar", n_out, True, "eprop_data", slots=n_steps,
                          comment="the target of each step, batch instance and readout neuron")]

    def code(self):
        return [Line("", "mean squared error: loss += mask / 2 (y - target)^2, err = mask (y - target)"),
                Line("const scalar* const _target = _eprop_targets + ((size_t)_step * _B + _b) * K;"),
                Line("for (uint32_t _k = 0; _k < K; _k++) {"),
                Line("    const scalar _d = _y[_k] - _target[_k];"),
                Line("    _loss += (scalar)0.5 * _mask * _d * _d;"),
                Line("    _err[_k] = _mask * _d;"),
                Line("}")]

    def feed(self, backend, batch_size, n_out, n_steps, labels, targets):
        targets = np.asarray(targets, dtype=float)
        if targets.shape != (n_steps, batch_size, n_out):
            raise NetworkError(f"targets must have shape {(n_steps, batch_size, n_out)}, got {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise NetworkError("targets must be finite")
        backend.push("eprop_targets", targets)


LOSSES = {"xent": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def make_loss(loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise NetworkError(f"loss must be one of {', '.join(LOSSES)} or a Loss, got {loss!r}")
    return LOSSES[loss]()


# -- feedback ------------------------------------------------------------------------------

class Feedback:
    """How the readout error reaches the neurons of a hidden population: ``L_j = sum_k B_jk
    err_k``. ``matrix(hidden, readout_projection)`` is the C text of ``B_jk`` (for ``_j``,
    ``_k``), ``arrays`` and ``reads`` the arrays it adds and reads. ``readout_projection`` is
    the name of the hidden population's projection to the readout, or None."""

    name = "feedback"
    needs_readout_projection = False

    def arrays(self, hidden: str, n_hidden: int, n_out: int) -> list[ArraySpec]:
        return []

    def matrix(self, hidden: str, readout_projection: str | None) -> str:
        raise NotImplementedError

    def reads(self, hidden: str, readout_projection: str | None) -> list[str]:
        raise NotImplementedError


class SymmetricFeedback(Feedback):
    """``B = W_out^T``: the weights of the population's projection to the readout."""

    name = "symmetric"
    needs_readout_projection = True

    def matrix(self, hidden, readout_projection):
        return f"_{readout_projection}_w[(size_t)_j * K + _k]"

    def reads(self, hidden, readout_projection):
        return [f"{readout_projection}_w"]


class RandomFeedback(Feedback):
    """A fixed random matrix ``B_jk ~ N(0, 1/K)`` per hidden population (Bellec's random
    e-prop), drawn once from ``seed`` and the population's name."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def arrays(self, hidden, n_hidden, n_out):
        rng = np.random.default_rng([self.seed, zlib.crc32(hidden.encode())])
        values = rng.normal(0, 1.0 / math.sqrt(n_out), (n_hidden, n_out))
        return [ArraySpec(f"{hidden}_eprop_feedback", hidden, "_eprop_feedback", "scalar", n_hidden * n_out, False,
                          "eprop_data", data=values.ravel(), comment="random feedback B[hidden][readout]")]

    def matrix(self, hidden, readout_projection):
        return f"_{hidden}_eprop_feedback[(size_t)_j * K + _k]"

    def reads(self, hidden, readout_projection):
        return [f"{hidden}_eprop_feedback"]


def make_feedback(feedback) -> Feedback:
    if isinstance(feedback, Feedback):
        return feedback
    if feedback == "symmetric":
        return SymmetricFeedback()
    if feedback == "random":
        return RandomFeedback()
    raise NetworkError(f"feedback must be 'symmetric', 'random' or a Feedback, got {feedback!r}")


# -- optimisers ----------------------------------------------------------------------------

class Optimiser:
    """One step on a trainable array from its per-instance gradients: ``arrays(name, size)`` its
    state, ``code(...)`` the lines run once per step (C text), ``body(...)`` those run for each
    element ``_k`` (a loop on the cpu, a thread per element on a GPU), ``hyper(step)`` the values
    of the array ``eprop_optimiser`` the step reads (learning rates and such: never compiled in)."""

    name = "optimiser"

    def arrays(self, owner: str, target: str, size: int) -> list[ArraySpec]:
        return []

    def code(self, target: str, grad: str, size: int) -> list[Line]:
        raise NotImplementedError

    def body(self, target: str, grad: str, size: int) -> list[Line]:
        raise NotImplementedError

    def hyper(self, step: int, batch: int, mean: bool, clamp) -> np.ndarray:
        raise NotImplementedError


HYPER_SIZE = 10
_HYPER = ("lr", "beta1", "beta2", "eps", "t", "mean", "clamp", "lo", "hi", "batch")


def _hyper_lines() -> list[Line]:
    names = ", ".join(f"_{n} = _eprop_optimiser[{k}]" for k, n in enumerate(_HYPER[:4]))
    return [
        Line(f"const double {names};", "hyperparameters: set between steps, never compiled in"),
        Line("const uint64_t _n = (uint64_t)_eprop_optimiser[4];", "steps taken, this one included (from 1)"),
        Line("const bool _mean = _eprop_optimiser[5] != 0, _clamp = _eprop_optimiser[6] != 0;"),
        Line("const double _lo = _eprop_optimiser[7], _hi = _eprop_optimiser[8];", "clamp range"),
        Line("const uint32_t _batch = (uint32_t)_eprop_optimiser[9];", "instances whose gradients count"),
        Line("(void)_beta1; (void)_beta2; (void)_eps; (void)_n;"),
    ]



def _batch_gradient(grad: str, size: int) -> list[Line]:
    """``_g``: element ``_k`` of the gradient array ``grad`` summed over the batch in instance
    order (the order every backend keeps), divided by the batch size for a mean."""
    return [
        Line("double _g = 0;"),
        Line(f"for (uint32_t _b = 0; _b < _batch; _b++) _g += _{grad}[(size_t)_b * {size}u + _k];",
             "reduce over the batch, in instance order"),
        Line("if (_mean) _g /= _batch;"),
    ]


def _clamp_and_store(target: str) -> list[Line]:
    """The new value ``_w`` clipped to [lo, hi] when clamping, stored into ``target``."""
    return [Line("if (_clamp) _w = fmin(fmax(_w, _lo), _hi);"), Line(f"_{target}[_k] = (scalar)_w;")]


class Adam(Optimiser):
    """Adam (Kingma & Ba, bias-corrected); the gradient is the sum (or mean) over the batch."""

    name = "adam"

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr = _real(lr, "Adam: lr", positive=True)
        self.beta1 = _real(beta1, "Adam: beta1", below_one=True)
        self.beta2 = _real(beta2, "Adam: beta2", below_one=True)
        self.eps = _real(eps, "Adam: eps", positive=True)

    def arrays(self, owner, target, size):
        return [ArraySpec(f"{target}_adam_{m}", owner, f"_adam_{m}", "scalar", size, False, "optimiser",
                          comment=f"Adam's {'first' if m == 'm' else 'second'} moment of {target}")
                for m in ("m", "v")]

    def code(self, target, grad, size):
        return _hyper_lines() + [
            Line(f"scalar* const _m = _{target}_adam_m;"), Line(f"scalar* const _v = _{target}_adam_v;"),
            Line("const double c1 = 1.0 - pow(_beta1, (double)_n), c2 = 1.0 - pow(_beta2, (double)_n);",
                 "bias corrections"),
        ]

    def body(self, target, grad, size):
        return [
            *_batch_gradient(grad, size),
            Line("_m[_k] = (scalar)(_beta1 * _m[_k] + (1.0 - _beta1) * _g);", "m = beta1 m + (1 - beta1) g"),
            Line("_v[_k] = (scalar)(_beta2 * _v[_k] + (1.0 - _beta2) * _g * _g);", "v = beta2 v + (1 - beta2) g^2"),
            Line(f"double _w = _{target}[_k] - _lr * (_m[_k] / c1) / (sqrt(_v[_k] / c2) + _eps);",
                 "w -= lr m^ / (sqrt(v^) + eps)"),
            *_clamp_and_store(target),
        ]

    def hyper(self, step, batch, mean, clamp):
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        return np.array([self.lr, self.beta1, self.beta2, self.eps, step, int(mean), int(clamp is not None),
                         lo, hi, batch], dtype=np.float64)


class SGD(Optimiser):
    """Plain gradient descent: ``w -= lr g``."""

    name = "sgd"

    def __init__(self, lr: float = 1e-3):
        self.lr = _real(lr, "SGD: lr", positive=True)

    def code(self, target, grad, size):
        return _hyper_lines()

    def body(self, target, grad, size):
        return [*_batch_gradient(grad, size), Line(f"double _w = _{target}[_k] - _lr * _g;", "w -= lr g"),
                *_clamp_and_store(target)]

    def hyper(self, step, batch, mean, clamp):
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        return np.array([self.lr, 0, 0, 0, step, int(mean), int(clamp is not None), lo, hi, batch], dtype=np.float64)
