"""Runs the generated e-prop kernel: weights, gradients, minibatches.

Gradients are accumulated per batch instance inside the kernel, reduced across the batch
here (``sum`` or ``mean``), and handed to the optimiser.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from ..errors import NetworkError
from ..runtime import memory
from ..runtime.build import build_and_load
from ..runtime.cpu import GeneratedContext
from .codegen import generate_training_kernel, per_neuron_names
from .model import EpropConfig

WEIGHTS = ("w_in", "w_rec", "w_out", "b_out")
GRADS = {"w_in": "g_in", "w_rec": "g_rec", "w_out": "g_out", "b_out": "g_b"}


def initial_weights(cfg: EpropConfig, seed: int, init_scale: float, dtype) -> tuple[dict, np.ndarray]:
    """Gaussian weights scaled by fan-in (no self-connections), zero bias, random feedback."""
    rng = np.random.default_rng(seed)
    n_in, n_h, k = cfg.n_inputs, cfg.n_hidden, cfg.n_outputs
    weights = {
        "w_in": rng.normal(0, init_scale / math.sqrt(n_in), (n_h, n_in)),
        "w_rec": rng.normal(0, init_scale / math.sqrt(n_h), (n_h, n_h)) if cfg.recurrent else np.zeros((n_h, n_h)),
        "w_out": rng.normal(0, 1.0 / math.sqrt(n_h), (k, n_h)),
        "b_out": np.zeros(k),
    }
    np.fill_diagonal(weights["w_rec"], 0.0)
    feedback = rng.normal(0, 1.0 / math.sqrt(k), (n_h, k)).astype(dtype)
    return {n: w.astype(dtype) for n, w in weights.items()}, feedback


def check_batch(cfg: EpropConfig, x, mask, labels, targets, dtype):
    """Validate one minibatch; returns (x, mask, labels, targets) as arrays."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != cfg.n_inputs:
        raise NetworkError(f"inputs must have shape (steps, batch, {cfg.n_inputs}), got {x.shape}")
    T, B = x.shape[:2]
    mask = np.asarray(mask, dtype=dtype)
    if mask.shape != (T,):
        raise NetworkError(f"mask must have shape ({T},), got {mask.shape}")
    if cfg.loss == "xent":
        labels = np.asarray(labels)
        if labels.shape != (B,) or labels.min() < 0 or labels.max() >= cfg.n_outputs:
            raise NetworkError(f"labels must be {B} integers in [0, {cfg.n_outputs})")
    else:
        targets = np.asarray(targets)
        if targets.shape != (T, B, cfg.n_outputs):
            raise NetworkError(f"targets must have shape {(T, B, cfg.n_outputs)}, got {targets.shape}")
    return x, mask, labels, targets


class EpropRuntime(GeneratedContext):
    """The compiled training kernel of ``cfg`` with its weights (numpy arrays)."""

    def __init__(self, cfg: EpropConfig, seed: int = 0, threads: int | None = None, init_scale: float = 1.0):
        self.cfg = cfg
        self.kernel = generate_training_kernel(cfg)
        memory.check_eprop(cfg, self.kernel.layout)  # the weights fit, before compiling or allocating
        self.lib, self.build = build_and_load(self.kernel.source, name=f"{cfg.name}_eprop",
                                              describe=f"e-prop kernel of '{cfg.name}'")
        L = self.lib
        L.sf_create.restype = ctypes.c_void_p
        L.sf_destroy.argtypes = [ctypes.c_void_p]
        L.sf_bind.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        L.sf_bind.restype = ctypes.c_int
        L.sf_run_batch.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
        d = ctypes.c_double
        L.sf_apply_gradients.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_int, d, d, d, d,
                                         ctypes.c_uint64, ctypes.c_int, d, d]
        L.sf_apply_gradients.restype = ctypes.c_int
        L.sf_set_num_threads.argtypes = [ctypes.c_int]
        L.sf_set_num_threads.restype = ctypes.c_int
        if threads is not None:
            L.sf_set_num_threads(int(threads))
        self.ctx = ctypes.c_void_p(L.sf_create())
        self.dtype = np.float32 if cfg.precision == "float" else np.float64
        self._shape = (0, 0)  # (T, B) the per-batch arrays are sized for
        self.arrays: dict[str, np.ndarray] = {}
        self.weights, self.feedback = initial_weights(cfg, seed, init_scale, self.dtype)
        for name, arr in self.weights.items():
            self._bind(name, arr)
            self._bind(f"m_{name}", np.zeros_like(arr))  # Adam moments
            self._bind(f"v_{name}", np.zeros_like(arr))
        self._bind("feedback", self.feedback)
        for name in per_neuron_names(cfg):  # per-neuron parameters: values in arrays, not in the source
            self._bind(f"p_{name}", np.array(cfg.per_neuron_params[name], dtype=self.dtype))

    def _index(self, name: str) -> int:
        return [n for n, _, _ in self.kernel.layout].index(name)

    def _bind(self, name: str, arr: np.ndarray):
        self.arrays[name] = arr
        if self.lib.sf_bind(self.ctx, self._index(name), arr.ctypes.data) != 0:
            raise RuntimeError(f"cannot bind {name}")

    @staticmethod
    def _check_weights(cfg: EpropConfig, weights: dict):
        n_in, n_h, k = cfg.n_inputs, cfg.n_hidden, cfg.n_outputs
        shapes = {"w_in": (n_h, n_in), "w_rec": (n_h, n_h), "w_out": (k, n_h), "b_out": (k,)}
        for name, value in weights.items():
            if name not in shapes:
                raise NetworkError(f"unknown weight '{name}' (weights: {', '.join(WEIGHTS)})")
            if np.shape(value) != shapes[name]:
                raise NetworkError(f"weight '{name}' has shape {shapes[name]}, got {np.shape(value)}")
            if not np.all(np.isfinite(value)):
                raise NetworkError(f"weight '{name}' must be finite")

    def set_weights(self, weights: dict):
        self._check_weights(self.cfg, weights)
        for name, value in weights.items():
            self.weights[name][...] = value
        np.fill_diagonal(self.weights["w_rec"], 0.0)

    def _size_batch(self, T: int, B: int):
        if self._shape == (T, B):
            return
        held = sum(self.arrays[n].nbytes for n, _, shape in self.kernel.layout
                   if ("T" in shape or "B" in shape) and n in self.arrays)
        memory.check_eprop(self.cfg, self.kernel.layout, T, B, freed=held)
        for name, dtype, shape in self.kernel.layout:
            if "T" not in shape and "B" not in shape:
                continue  # weights, feedback and optimiser state keep their arrays
            real = tuple(T if d == "T" else B if d == "B" else d for d in shape)
            arr = np.zeros(real, dtype=np.int32 if dtype == "int32" else self.dtype)
            self._bind(name, arr)
        self._shape = (T, B)

    def run_batch(self, x: np.ndarray, mask: np.ndarray, labels=None, targets=None, *, learn: bool = True,
                  grads: bool = True) -> dict:
        """Run one minibatch; ``x`` is (T, B, n_inputs) of spikes. Returns the readout traces
        ``y`` (T, B, n_outputs), the losses and the hidden spike counts per instance, and, when
        learning and ``grads``, the per-instance gradients (arrays with a leading batch axis).

        ``learn=False`` runs the forward pass only (evaluation, prediction): no eligibility
        traces, no gradients, a fraction of the cost. ``grads=False`` leaves the gradients in
        the runtime (for :meth:`apply_gradients` or :meth:`gradient_sums`) instead of copying them.
        """
        x, mask, labels, targets = check_batch(self.cfg, x, mask, labels, targets, self.dtype)
        T, B = x.shape[:2]
        self._size_batch(T, B)
        a = self.arrays
        a["x"][...] = x
        a["mask"][...] = mask
        if self.cfg.loss == "xent":
            a["labels"][...] = labels
        else:
            a["targets"][...] = targets
        for g in GRADS.values():
            a[g][...] = 0
        a["hidden_spikes"][...] = 0
        self.lib.sf_run_batch(self.ctx, B, T, int(bool(learn)))
        out = {"y": a["y"].copy(), "loss": a["loss"].copy(), "hidden_spikes": a["hidden_spikes"].copy()}
        if learn and grads:
            out["grads"] = {w: a[g].copy() for w, g in GRADS.items()}
        return out

    def gradient_sums(self) -> dict[str, np.ndarray]:
        """float64 gradients of the last batch, summed over its instances."""
        return {w: self.arrays[g].sum(axis=0, dtype=np.float64) for w, g in GRADS.items()}

    def apply_gradients(self, index: int, batch: int, mean: bool, lr: float, beta1: float, beta2: float, eps: float,
                        t: int, clamp: tuple | None):
        """Reduce weight ``index``'s gradients over the batch and take one Adam step."""
        if not 1 <= batch <= self._shape[1]:
            raise NetworkError(f"apply_gradients: batch {batch} but the last batch had {self._shape[1]} instances")
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        status = self.lib.sf_apply_gradients(self.ctx, index, batch, int(mean), lr, beta1, beta2, eps, t,
                                             int(clamp is not None), float(lo), float(hi))
        if status != 0:
            raise RuntimeError(f"cannot apply gradients to weight {index}")

    def weight_shape(self, name: str) -> tuple:
        return self.weights[name].shape

    def set_gradient(self, name: str, gradient: np.ndarray):
        """Set the reduced (all-reduced) gradient of weight ``name`` for :meth:`apply_reduced`
        (where a batch of one would have left it)."""
        if self._shape[1] < 1:  # no batch has run in this process yet (an empty shard)
            self._size_batch(1, 1)
        self.arrays[GRADS[name]][0] = gradient

    def apply_reduced(self, index: int, scale: float, lr: float, beta1: float, beta2: float, eps: float, t: int,
                      clamp: tuple | None):
        """One Adam step of weight ``index`` from the gradient set by :meth:`set_gradient` times ``scale``."""
        self.arrays[GRADS[WEIGHTS[index]]][0] *= scale
        self.apply_gradients(index, 1, False, lr, beta1, beta2, eps, t, clamp)

    def moments(self) -> dict[str, np.ndarray]:
        return {f"{k}_{w}": self.arrays[f"{k}_{w}"].copy() for w in WEIGHTS for k in ("m", "v")}

    def set_moments(self, moments: dict):
        for name, value in moments.items():
            self.arrays[name][...] = value

    def set_feedback(self, feedback):
        self.feedback[...] = feedback

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.weights.items()}

