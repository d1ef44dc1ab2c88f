"""What the :class:`~.trainer.Trainer` drives on the training compiler's path: a network
compiled by :class:`~.compiler.EpropCompiler`, seen through the runtime interface the
trainer uses (weights, Adam moments, minibatches, gradient sums, optimiser steps).

Two kinds of job reach it:

* an ordinary :class:`~spikeforge.network.Network` with the names of its input, hidden and
  readout populations and its trainable projections (:class:`NetworkJob`); its weights are
  named by their arrays (``<projection>_w``, ``<readout>_p_bias``);
* an :class:`~.model.EpropConfig`, translated into such a network (:func:`translate`):
  ``value_input`` inputs, ``scaled`` synapses into the hidden layer, ``one_step_curr``
  postsynaptic models and a ``leaky_readout`` readout. Its weights keep their old names and
  layouts (``w_in`` [hidden][input], ``w_rec``, ``w_out`` [readout][hidden], ``b_out``), so
  checkpoints written before the translation existed load unchanged.

The trial length is fixed when a network is compiled, so one compiled network is kept per
trial length met (compiled on first use; weights and moments move with the trainer). A
batch smaller than the compiled one is padded; only its own instances count.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import NetworkError
from .datasets import SpikeRaster


@dataclass
class NetworkJob:
    """A network and what the compiler needs to train it."""

    network: object
    compiler: object
    inputs: str
    hidden: str | list
    readout: str
    trainable: list = field(default_factory=list)
    n_steps: int | None = None  # the trial length, when known before the data
    backend: str = "cpu"  # a name of the backend registry
    backend_options: dict = field(default_factory=dict)  # e.g. device= (the GPU) for cuda


@dataclass
class _Weight:
    """A trainable array as the trainer names it: the compiled array, and how the trainer's
    layout maps onto its flat [pre][post] values (``transpose``: the trainer's is [post][pre])."""

    array: str
    shape: tuple
    transpose: bool = False
    fixed: bool = False  # kept by the trainer only (w_rec of a network without recurrence)
    no_self: bool = False  # a square matrix whose diagonal (self-connections) is kept at zero

    def to_compiled(self, value: np.ndarray) -> np.ndarray:
        return (np.asarray(value).T if self.transpose else np.asarray(value)).ravel()

    def from_compiled(self, flat: np.ndarray) -> np.ndarray:
        if self.transpose:
            return np.ascontiguousarray(flat.reshape(self.shape[::-1]).T)
        return flat.reshape(self.shape).copy()


def initial_weights(cfg, seed: int, init_scale: float, dtype) -> tuple[dict, np.ndarray]:
    """The initial weights of an :class:`~.model.EpropConfig`: Gaussian, scaled by fan-in (no
    self-connections), zero bias; and its random feedback matrix."""
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


def translate(cfg, batch_size: int, seed: int, init_scale: float, optimiser):
    """An :class:`~.model.EpropConfig` as a :class:`NetworkJob` (a network of ``batch_size``
    instances), the trainer's names of its weights, its initial weights
    (:func:`initial_weights`) and its random feedback matrix (used with random feedback, kept
    in checkpoints either way)."""
    from ..models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
    from ..network import Network
    from .compiler import EpropCompiler
    from .objectives import RandomFeedback, SymmetricFeedback

    dtype = np.float32 if cfg.precision == "float" else np.float64
    w, feedback = initial_weights(cfg, seed, init_scale, dtype)
    n_in, n_h, k = cfg.n_inputs, cfg.n_hidden, cfg.n_outputs
    net = Network(cfg.name, dt=cfg.dt, batch_size=batch_size, precision=cfg.precision)
    net.add_population("inp", n_in, VALUE_INPUT)
    params = dict(cfg.params)
    params.update({p: [float(x) for x in v] for p, v in cfg.per_neuron_params.items()})
    net.add_population("hid", n_h, cfg.hidden_model, params)
    net.add_population("out", k, LEAKY_READOUT, dict(tau_m=cfg.tau_out, bias=[float(b) for b in w["b_out"]]))
    net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR, wu_init={"w": w["w_in"].T.ravel()})
    trainable = ["inp_hid"]
    if cfg.recurrent:
        net.add_projection("hid_hid", "hid", "hid", STATIC, ONE_STEP_CURR, wu_init={"w": w["w_rec"].T.ravel()})
        trainable.append("hid_hid")
    net.add_projection("hid_out", "hid", "out", STATIC, ONE_STEP_CURR, wu_init={"w": w["w_out"].T.ravel()})
    trainable += ["hid_out", "out.bias"]
    compiler = EpropCompiler(loss=cfg.loss, optimiser=optimiser, feedback=RandomFeedback() if cfg.feedback == "random"
                             else SymmetricFeedback(), surrogate=cfg.surrogate, gamma=cfg.gamma,
                             reg_rate=cfg.reg_rate, reg_target_hz=cfg.reg_target_hz)
    names = {"w_in": _Weight("inp_hid_w", (n_h, n_in), True),
             "w_rec": _Weight("hid_hid_w", (n_h, n_h), True, fixed=not cfg.recurrent, no_self=True),
             "w_out": _Weight("hid_out_w", (k, n_h), True), "b_out": _Weight("out_p_bias", (k,))}
    job = NetworkJob(net, compiler, "inp", "hid", "out", trainable)
    return job, names, w, feedback


def network_weights(job: NetworkJob) -> dict[str, _Weight]:
    """The trainer's names of a network job's weights: the trainable arrays' own names, dense
    projections as [pre][post] matrices, sparse ones as their stored synapses, the bias as a
    vector."""
    net, names = job.network, {}
    for t in job.trainable:
        if t == f"{job.readout}.bias":
            names[f"{job.readout}_p_bias"] = _Weight(f"{job.readout}_p_bias", (net.populations[job.readout].size,))
            continue
        q = net.projections.get(t)
        if q is None:
            continue  # the compiler names the mistake
        shape = (q.pre.size, q.post.size) if q.rows is None else (q.n_synapses,)
        names[f"{t}_w"] = _Weight(f"{t}_w", shape)
    return names


class CompiledRuntime:
    """The trainer's runtime on the compiler's path (see the module docstring)."""

    #: run_batch reads its input a part of the trial at a time (the trainer may hand it a
    #: SpikeRaster, binned as it is read)
    reads_input_in_parts = True

    def __init__(self, job: NetworkJob, names: dict[str, _Weight], *, threads=None, feedback=None, initial=None):
        self.job, self.names, self.threads = job, names, threads
        self.batch_size = int(job.network.batch_size)
        self.dtype = np.float32 if job.network.precision == "float" else np.float64
        self.compiled: dict[int, object] = {}  # trial length -> CompiledEprop
        self._active = None
        self._feedback = None if feedback is None else np.asarray(feedback, dtype=self.dtype)
        self._n = 0  # instances of the last batch
        self._weights, self._moments = {}, {}  # the state while no network is compiled
        for name, wt in names.items():
            self._weights[name] = (np.array(initial[name], dtype=self.dtype) if initial is not None
                                   else self._initial(wt))
            for m in ("m", "v"):
                self._moments[f"{m}_{name}"] = np.zeros(wt.shape, dtype=self.dtype)

    # -- compiling -----------------------------------------------------------------------------
    def _initial(self, wt: _Weight) -> np.ndarray:
        if wt.fixed:
            return np.zeros(wt.shape, dtype=self.dtype)
        net = self.job.network
        if wt.array.endswith("_p_bias"):
            pop = net.populations[wt.array[: -len("_p_bias")]]
            flat = np.broadcast_to(np.asarray(pop.params["bias"], dtype=float), (pop.size,))
        else:
            flat = self._projection_weights(net.projections[wt.array[:-2]])
        return wt.from_compiled(np.asarray(flat, dtype=self.dtype))

    def _projection_weights(self, q) -> np.ndarray:
        """The initial weights of ``q`` as the compiled network starts them (its initialiser
        may run in the generated code: the network is compiled to read them)."""
        compiled = self._compile(self.job.n_steps or 1, activate=False)
        return compiled.backend.pull(f"{q.name}_w").ravel()

    def _compile(self, n_steps: int, activate: bool = True):
        if n_steps not in self.compiled:
            j = self.job
            self.compiled[n_steps] = j.compiler.compile(j.network, inputs=j.inputs, hidden=j.hidden,
                                                         readout=j.readout, trainable=j.trainable, n_steps=n_steps,
                                                         threads=self.threads, backend=j.backend,
                                                         **j.backend_options)
            self._push_feedback(self.compiled[n_steps])
        c = self.compiled[n_steps]
        if activate and c is not self._active:
            state_w, state_m = (self.get_weights(), self.moments()) if self._weights else ({}, {})
            self._active = c
            self.set_weights(state_w)
            self.set_moments(state_m)
        return c

    def check(self):
        """Compile once (trial length 1) to check the job before training starts."""
        if self._active is None:
            self._compile(1)

    @property
    def plan(self):
        self.check()
        return self._active.plan

    # -- weights and moments -----------------------------------------------------------------
    def _pull(self, array):
        return self._active.backend.pull(array).ravel()

    def get_weights(self) -> dict[str, np.ndarray]:
        if self._active is None:
            return {k: v.copy() for k, v in self._weights.items()}
        return {name: self._weights[name].copy() if wt.fixed else wt.from_compiled(self._pull(wt.array))
                for name, wt in self.names.items()}

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self.get_weights()

    def weight_shape(self, name: str) -> tuple:
        return self.names[name].shape

    def set_weights(self, weights: dict):
        for name, value in weights.items():
            if name not in self.names:
                raise NetworkError(f"unknown weight '{name}' (weights: {', '.join(self.names)})")
            wt = self.names[name]
            if np.shape(value) != wt.shape:
                raise NetworkError(f"weight '{name}' has shape {wt.shape}, got {np.shape(value)}")
            if not np.all(np.isfinite(value)):
                raise NetworkError(f"weight '{name}' must be finite")
            self._weights[name] = np.array(value, dtype=self.dtype)
            if wt.no_self:  # EpropConfig has no self-connections: a diagonal given is dropped
                np.fill_diagonal(self._weights[name], 0.0)
            if self._active is not None and not wt.fixed:
                self._active.backend.push(wt.array, wt.to_compiled(self._weights[name]).astype(self.dtype))

    def _has_moments(self, wt: _Weight) -> bool:
        """Whether the compiled network keeps Adam's moments of ``wt`` (not for SGD)."""
        return not wt.fixed and any(a.name == f"{wt.array}_adam_m" for a in self._active.spec.arrays)

    def moments(self) -> dict[str, np.ndarray]:
        """Adam's moments by the trainer's names (``m_<w>``, ``v_<w>``; zeros for SGD)."""
        if self._active is None:
            return {k: v.copy() for k, v in self._moments.items()}
        out = {}
        for name, wt in self.names.items():
            for m in ("m", "v"):
                out[f"{m}_{name}"] = (wt.from_compiled(self._pull(f"{wt.array}_adam_{m}")) if self._has_moments(wt)
                                      else self._moments[f"{m}_{name}"].copy())
        return out

    def set_moments(self, moments: dict):
        for key, value in moments.items():
            m, name = key.split("_", 1)
            wt = self.names[name]
            self._moments[key] = np.array(value, dtype=self.dtype)
            if self._active is not None and self._has_moments(wt):
                self._active.backend.push(f"{wt.array}_adam_{m}", wt.to_compiled(value).astype(self.dtype))

    @property
    def feedback(self) -> np.ndarray | None:
        return self._feedback

    def _push_feedback(self, compiled):
        """The old path's random feedback matrix, where the compiled network has random feedback."""
        name = f"{self.job.hidden}_eprop_feedback"
        if self._feedback is not None and any(a.name == name for a in compiled.spec.arrays):
            compiled.backend.push(name, self._feedback.ravel())

    def set_feedback(self, feedback):
        self._feedback = np.asarray(feedback, dtype=self.dtype)
        for c in self.compiled.values():
            self._push_feedback(c)

    # -- running -------------------------------------------------------------------------------
    def _padded(self, x, labels, targets) -> tuple:
        """A minibatch of ``n`` <= the compiled batch, padded with silent instances:
        ``(x, labels, targets, n)``."""
        if not isinstance(x, SpikeRaster):  # a SpikeRaster is binned as the run reads it
            x = np.asarray(x)
        T, n = x.shape[0], x.shape[1]
        if n > self.batch_size:
            raise NetworkError(f"a batch of {n} instances, but the network was compiled for {self.batch_size}")
        pad = self.batch_size - n
        if pad:
            x = x.with_batch(self.batch_size) if isinstance(x, SpikeRaster) else np.concatenate(
                [x, np.zeros((T, pad, *x.shape[2:]), dtype=x.dtype)], axis=1)
            if labels is not None:
                labels = np.concatenate([np.asarray(labels), np.zeros(pad, dtype=np.asarray(labels).dtype)])
            if targets is not None:
                targets = np.asarray(targets)
                targets = np.concatenate([targets, np.zeros((T, pad, *targets.shape[2:]))], axis=1)
        return x, labels, targets, n

    def run_batch(self, x, mask, labels=None, targets=None, *, learn: bool = True, grads: bool = True) -> dict:
        """Run one minibatch; ``x`` is (T, B, n_inputs). Returns the readout traces ``y`` (T,
        B, n_outputs), the losses and the hidden spike counts per instance and, when learning
        and ``grads``, the per-instance gradients by the trainer's names (arrays with a leading
        batch axis). ``learn=False`` runs the forward pass only. A batch smaller than the
        compiled one is padded with silent instances."""
        x, labels, targets, n = self._padded(x, labels, targets)
        T = x.shape[0]
        c = self._compile(T)
        out = c.run_batch(x, mask, labels=labels, targets=targets, learn=learn)
        self._n = n
        result = {"y": out["y"][:, :n], "loss": out["loss"][:n], "hidden_spikes": out["hidden_spikes"][:n],
                  "output": out["output"][:n]}
        if learn and grads:
            result["grads"] = {name: np.stack([wt.from_compiled(g) for g in out["grads"][wt.array][:n]])
                               for name, wt in self.names.items() if not wt.fixed}
        return result

    def gradient_sums(self) -> dict[str, np.ndarray]:
        """float64 gradients of the last batch, summed over its instances."""
        out = {}
        for name, wt in self.names.items():
            if wt.fixed:
                out[name] = np.zeros(wt.shape)
                continue
            g = self._active.backend.pull(self._active.gradient_arrays[wt.array])[: self._n]
            out[name] = wt.from_compiled(g.reshape(self._n, -1).sum(axis=0, dtype=np.float64))
        return out

    def set_gradient(self, name: str, gradient: np.ndarray, scale: float):
        """Make ``gradient * scale`` the only instance's gradient of weight ``name`` (a reduced,
        e.g. all-reduced, gradient) for :meth:`step` with ``batch=1``."""
        wt = self.names[name]
        if wt.fixed:
            return
        if self._active is None:
            self._compile(1)
        gname = self._active.gradient_arrays[wt.array]
        g = self._active.backend.pull(gname)
        first = g.reshape(g.shape[0], -1)[0]
        first[...] = wt.to_compiled(gradient)
        first *= scale
        self._active.backend.push(gname, g)

    def step(self, *, batch: int, mean: bool, lr: float, step: int, clamp: dict):
        """One optimiser step of every trainable array (``clamp``: weight name -> (lo, hi))."""
        self._active.apply_gradients(mean=mean, batch=batch, lr=lr, step=step,
                                     clamp={self.names[k].array: v for k, v in clamp.items()})

    def close(self):
        for c in self.compiled.values():
            c.close()


def copy_with_batch(network, batch_size: int):
    """A shallow copy of ``network`` that runs ``batch_size`` instances."""
    net = copy.copy(network)
    net.batch_size = int(batch_size)
    return net
