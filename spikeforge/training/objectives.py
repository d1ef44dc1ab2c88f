"""The pieces of an e-prop training job that are objects: losses, readouts, feedback and optimisers.

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
    #: the error and the loss are 0 at a step of weight 0 (a kernel may skip those steps)
    masked = True

    def arrays(self, n_out: int, n_steps: int) -> list[ArraySpec]:
        return []

    def code(self) -> list[Line]:
        raise NotImplementedError

    def feed(self, backend, batch_size: int, n_out: int, n_steps: int, labels, targets):
        """Write one minibatch's targets into the arrays."""
        raise NotImplementedError

    def check(self, batch_size: int, n_out: int, n_steps: int, labels, targets) -> np.ndarray:
        """One minibatch's labels or targets, checked (what :meth:`feed` writes)."""
        raise NotImplementedError

    def of_output(self, output: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On the host, for a readout that aggregates over the window: the loss of each
        instance (batch,) and its derivative by the aggregated ``output`` (batch, readout),
        against ``truth`` (the labels, or the targets aggregated as the output is)."""
        raise NotImplementedError


class SoftmaxCrossEntropy(Loss):
    """Per-step softmax cross-entropy against one label per instance, weighted by the mask
    (the readout window): ``loss = -sum_t mask_t log p_t[label]``, ``err_k = mask (p_k - 1[k = label])``.

    Examples:
        >>> from spikeforge import EpropCompiler, SoftmaxCrossEntropy
        >>> compiler = EpropCompiler(loss=SoftmaxCrossEntropy())      # the same as loss="xent"
    """

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

    def check(self, batch_size, n_out, n_steps, labels, targets):
        labels = np.asarray(labels)
        if labels.shape != (batch_size,) or not np.issubdtype(labels.dtype, np.integer) \
                or labels.min() < 0 or labels.max() >= n_out:
            raise NetworkError(f"labels must be {batch_size} integers in [0, {n_out})")
        return labels

    def feed(self, backend, batch_size, n_out, n_steps, labels, targets):
        labels = self.check(batch_size, n_out, n_steps, labels, targets)
        backend.push("eprop_labels", labels.astype(np.int32).reshape(batch_size, 1))

    def of_output(self, output, truth):
        """``loss = -log softmax(output)[label]``, ``d/doutput = softmax(output) - onehot(label)``."""
        shifted = output - output.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(output.shape[0])
        loss = -np.log(np.maximum(p[rows, truth], 1e-30))
        grad = p.copy()
        grad[rows, truth] -= 1.0
        return loss, grad


class MeanSquaredError(Loss):
    """Half the squared error against a target per step, instance and readout neuron, weighted
    by the mask: ``loss = sum_t mask_t / 2 |y_t - target_t|^2``, ``err = mask (y - target)``.

    Examples:
        >>> from spikeforge import EpropCompiler, MeanSquaredError
        >>> compiler = EpropCompiler(loss=MeanSquaredError())         # the same as loss="mse"
    """

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

    def check(self, batch_size, n_out, n_steps, labels, targets):
        targets = np.asarray(targets, dtype=float)
        if targets.shape != (n_steps, batch_size, n_out):
            raise NetworkError(f"targets must have shape {(n_steps, batch_size, n_out)}, got {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise NetworkError("targets must be finite")
        return targets

    def feed(self, backend, batch_size, n_out, n_steps, labels, targets):
        backend.push("eprop_targets", self.check(batch_size, n_out, n_steps, labels, targets))

    def of_output(self, output, truth):
        """``loss = |output - target|^2 / 2``, ``d/doutput = output - target``."""
        d = output - truth
        return 0.5 * np.sum(d * d, axis=1), d


LOSSES = {"xent": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def make_loss(loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise NetworkError(f"loss must be one of {', '.join(LOSSES)} or a Loss, got {loss!r}")
    return LOSSES[loss]()


class ErrorTable(Loss):
    """The readout error of every step read from a table the host wrote before the trial
    (``[step][batch][readout]``): how a readout that aggregates over the window learns. The
    host runs the trial forward first, computes the aggregated output, its loss and
    ``err_t = dLoss/dy_t`` (:meth:`Readout.loss_and_error`), writes them here and runs the
    trial again, learning; the kernel adds nothing to the loss (the host has it)."""

    name = "error_table"
    masked = False  # the table's errors count at every step

    def arrays(self, n_out, n_steps):
        return [ArraySpec("eprop_err_table", "eprop", "err_table", "scalar", n_out, True, "eprop_data",
                          slots=n_steps, comment="dLoss/dy of each step, batch instance and readout neuron")]

    def code(self):
        return [Line("", "readout error from the table the host wrote: err = dLoss/dy_t"),
                Line("const scalar* const _table = _eprop_err_table + ((size_t)_step * _B + _b) * K;"),
                Line("for (uint32_t _k = 0; _k < K; _k++) _err[_k] = _table[_k];"),
                Line("(void)_mask;")]

    def feed(self, backend, batch_size, n_out, n_steps, labels, targets):
        """``targets``: the table, (steps, batch, readout)."""
        backend.push("eprop_err_table", np.asarray(targets, dtype=float).reshape(n_steps, batch_size, n_out))


# -- readouts --------------------------------------------------------------------------------

class Readout:
    """What the loss is of: the readout ``y_t`` at every step of the window (:class:`PerStep`),
    or one output per trial and readout neuron aggregated over the window (the steps with a
    mask above 0). ``kernel_loss(loss)`` is the loss object whose code the error kernel runs;
    ``output(y, mask)`` the output of each trial (batch, readout) from the readout values
    (steps, batch, readout); ``loss_and_error`` the host's side of an aggregated readout."""

    name = "readout"
    aggregated = True

    def kernel_loss(self, loss: Loss) -> Loss:
        return ErrorTable()

    def output(self, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def spread(self, grad: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``err_t = dLoss/dy_t`` (steps, batch, readout) from ``grad = dLoss/doutput`` (batch, readout)."""
        raise NotImplementedError

    def window(self, mask: np.ndarray) -> np.ndarray:
        """The steps of the window; at least one."""
        steps = np.flatnonzero(np.asarray(mask) > 0)
        if steps.size == 0:
            raise NetworkError(f"readout '{self.name}': the mask selects no step (the window is empty)")
        return steps

    def loss_and_error(self, loss: Loss, y, mask, labels, targets) -> tuple:
        """``(loss of each instance, err (steps, batch, readout), output (batch, readout))`` of
        the readout values ``y`` (steps, batch, readout) against the labels or targets (the
        targets aggregated as ``y`` is)."""
        y = np.asarray(y, dtype=np.float64)
        T, B, K = y.shape
        truth = loss.check(B, K, T, labels, targets)
        if truth.ndim == 3:  # targets per step: aggregated as y is (max: each target's own maximum)
            truth = self.output(truth, mask)
        out = self.output(y, mask)
        value, grad = loss.of_output(out, truth)
        return value, self.spread(grad, y, mask), out

    def loss_scale(self, mask) -> float:
        """What divides a trial's loss when it is reported: 1 (one loss per trial)."""
        return 1.0


class PerStep(Readout):
    """The loss of ``y_t`` at every step of the window, weighted by the mask, summed over the
    steps; the error of each step is computed as the trial runs (by the loss's own code).
    A trial's output (what a prediction takes) is the mean of ``y`` over the window."""

    name = "per_step"
    aggregated = False

    def kernel_loss(self, loss):
        return loss

    def output(self, y, mask):
        window = np.asarray(mask) > 0
        if not window.any():
            return np.zeros(y.shape[1:])
        return y[window].mean(axis=0)

    def loss_scale(self, mask):
        """The steps of the window: the reported loss is a mean per step."""
        return max(float(np.asarray(mask, dtype=np.float64).sum()), 1e-300)


class SumReadout(Readout):
    """``Y = sum_t mask_t y_t``; ``err_t = mask_t dLoss/dY``."""

    name = "sum"

    def window(self, mask):
        return np.flatnonzero(np.asarray(mask) > 0)  # an empty window sums to 0

    def output(self, y, mask):
        return np.tensordot(np.asarray(mask, dtype=np.float64), y, axes=(0, 0))

    def spread(self, grad, y, mask):
        return np.asarray(mask, dtype=np.float64)[:, None, None] * grad[None]


class MeanReadout(Readout):
    """``Y = sum_t mask_t y_t / sum_t mask_t`` (the mean over the window for a 0/1 mask);
    ``err_t = mask_t dLoss/dY / sum_t mask_t``."""

    name = "mean"

    def _weights(self, mask):
        self.window(mask)
        m = np.asarray(mask, dtype=np.float64)
        return m / m.sum()

    def output(self, y, mask):
        return np.tensordot(self._weights(mask), y, axes=(0, 0))

    def spread(self, grad, y, mask):
        return self._weights(mask)[:, None, None] * grad[None]


class MaxReadout(Readout):
    """``Y_k = max_t y_tk`` over the window, per instance and readout neuron; the error reaches
    the step of the maximum only (the first such step on a tie)."""

    name = "max"

    def _argmax(self, y, mask):
        steps = self.window(mask)
        return steps[np.argmax(y[steps], axis=0)]  # (batch, readout): the step of each maximum

    def output(self, y, mask):
        return np.take_along_axis(y, self._argmax(y, mask)[None], axis=0)[0]

    def spread(self, grad, y, mask):
        err = np.zeros(y.shape)
        np.put_along_axis(err, self._argmax(y, mask)[None], grad[None], axis=0)
        return err


class LastReadout(Readout):
    """``Y = y_t`` at the last step of the window; the error reaches that step only."""

    name = "last"

    def output(self, y, mask):
        return y[self.window(mask)[-1]]

    def spread(self, grad, y, mask):
        err = np.zeros(y.shape)
        err[self.window(mask)[-1]] = grad
        return err


READOUTS = {r.name: r for r in (PerStep, SumReadout, MeanReadout, MaxReadout, LastReadout)}


def make_readout(readout) -> Readout:
    if isinstance(readout, Readout):
        return readout
    if not isinstance(readout, str) or readout not in READOUTS:
        raise NetworkError(f"readout must be one of {', '.join(READOUTS)} or a Readout, got {readout!r}")
    return READOUTS[readout]()


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
    """Adam (Kingma & Ba, bias-corrected); the gradient is the sum (or mean) over the batch.

    Examples:
        >>> from spikeforge import Adam, EpropCompiler
        >>> compiler = EpropCompiler(loss="xent", optimiser=Adam(lr=1e-3))
    """

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
    """Plain gradient descent: ``w -= lr g``.

    Examples:
        >>> from spikeforge import SGD, EpropCompiler
        >>> compiler = EpropCompiler(loss="mse", optimiser=SGD(lr=1e-2))
    """

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
