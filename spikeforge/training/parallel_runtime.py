"""What the :class:`~.trainer.Trainer` drives for the time-parallel method: a network compiled
by :class:`~.parallel.ParallelCompiler`, seen through the runtime interface of
:class:`~.network_runtime.CompiledRuntime` (weights, Adam moments, minibatches, gradient
sums, optimiser steps; one compiled network per trial length, a short batch padded).

The weights keep the names of the compiler's path (``<projection>_w`` as [pre][post]
matrices, ``<readout>_p_bias``). A padded batch's extra instances run (on zero inputs) but
neither their losses nor their gradients count: the optimiser sums the first ``batch``
instances only.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

from ..errors import NetworkError
from .network_runtime import CompiledRuntime
from .spike_rules import make_spike_rule


class ParallelRuntime(CompiledRuntime):
    """The trainer's runtime for a :class:`~.parallel.ParallelCompiler` job."""

    reads_input_in_parts = False  # the time-parallel method takes the whole sequence at once

    def _gradient_array(self, array: str) -> str:
        readout = self._active.layers[-1].name
        if array == f"{readout}_p_bias":
            return f"par_{readout}_grad_bias"
        return f"{array[:-2]}_par_grad"

    @property
    def plan(self):
        """What the trainer reads of a plan: the inputs, hidden layers, readout, dt and the
        trainable projections into hidden layers (the ones ``clamp`` bounds)."""
        self.check()
        c, net = self._active, self.job.network
        hidden, readout = c.layers[:-1], c.layers[-1]
        trained = {name[:-2] for name in self.names if name.endswith("_w")}
        into_hidden = [q for q in net.projections.values() if q.post in hidden and q.name in trained]
        return SimpleNamespace(inputs=c.inputs, hidden=hidden, readout=readout, dt=net.dt,
                               hidden_projections=into_hidden)

    @contextmanager
    def spike_rule(self, spike):
        """Inside the block the network runs its hidden layers under spike rule ``spike`` (a name
        or a :class:`~.spike_rules.SpikeRule`) with the weights it has now: the same job compiled
        by a copy of the compiler that differs in its rule alone (e.g. ``threshold``, to evaluate
        deterministically a network trained with a stochastic rule). Afterwards the networks of
        the block are closed and the trained ones run again, their weights and moments as they
        were (what the block changed of them is dropped)."""
        rule = make_spike_rule(spike)
        weights, moments = self.get_weights(), self.moments()
        saved = self.job, self.compiled, self._active, self._weights, self._moments
        compiler = copy.copy(self.job.compiler)
        compiler.spike = rule
        self.job = dataclasses.replace(self.job, compiler=compiler)
        self.compiled, self._active, self._weights, self._moments = {}, None, weights, moments
        try:
            yield self
        finally:
            for c in self.compiled.values():
                c.close()
            self.job, self.compiled, self._active, self._weights, self._moments = saved

    def run_batch(self, x, mask, labels=None, targets=None, *, learn: bool = True, grads: bool = True) -> dict:
        """As :meth:`CompiledRuntime.run_batch`: ``y`` (T, B, K), per-instance ``loss``,
        ``hidden_spikes`` (B, hidden neurons: counts over the trial), ``output`` (each trial's:
        see :class:`~.objectives.Readout`) and, with ``learn`` and ``grads``, the per-instance gradients.
        ``learn=False`` runs the forward pass and the loss only (no adjoint scans, no gradients)."""
        x, labels, targets, n = self._padded(x, labels, targets)
        T = x.shape[0]
        c = self._compile(T)
        out = c.gradients(x, mask, labels=labels, targets=targets) if learn else self._forward(c, x, mask, labels,
                                                                                              targets)
        self._n = n
        counts = c.spike_counts()
        y = np.asarray(out["y"])[:, :n]
        output = c.compiler.readout.output(y, mask)
        result = {"y": y, "loss": np.asarray(out["loss"])[:n], "hidden_spikes": np.concatenate(counts, axis=1)[:n],
                  "output": output}
        if learn and grads:
            result["grads"] = {}
            for name, wt in self.names.items():
                g = c.backend.pull(self._gradient_array(wt.array)).reshape(self.batch_size, -1)[:n]
                result["grads"][name] = np.stack([wt.from_compiled(row) for row in g])
        return result

    @staticmethod
    def _forward(c, x, mask, labels, targets) -> dict:
        """The forward pass and each instance's loss (:meth:`~.parallel.CompiledParallel.evaluate`)."""
        return c.evaluate(x, mask, labels, targets)

    def gradient_sums(self) -> dict[str, np.ndarray]:
        """float64 gradients of the last batch, summed over its instances."""
        out = {}
        for name, wt in self.names.items():
            g = self._active.backend.pull(self._gradient_array(wt.array)).reshape(self.batch_size, -1)[: self._n]
            out[name] = wt.from_compiled(g.sum(axis=0, dtype=np.float64))
        return out

    def set_gradient(self, name: str, gradient: np.ndarray, scale: float):
        """Make ``gradient * scale`` the only instance's gradient of weight ``name`` (a reduced,
        e.g. all-reduced, gradient) for :meth:`step` with ``batch=1``."""
        wt = self.names[name]
        if self._active is None:
            self._compile(1)
        gname = self._gradient_array(wt.array)
        g = self._active.backend.pull(gname)
        first = g.reshape(self.batch_size, -1)[0]
        first[...] = wt.to_compiled(gradient)
        first *= scale
        self._active.backend.push(gname, g)

    def step(self, *, batch: int, mean: bool, lr: float, step: int, clamp: dict):
        """One optimiser step of every trainable array from the first ``batch`` instances'
        gradients (``clamp``: weight name -> (lo, hi))."""
        c = self._active
        if not 1 <= batch <= self.batch_size:
            raise NetworkError(f"a step over {batch} instances, but the network runs {self.batch_size}")
        bounds = {self.names[k].array: v for k, v in clamp.items()}
        c.steps_taken = int(step)
        for index in range(c.n_backward, len(c.spec.custom_updates)):
            target = c.spec.custom_updates[index].name[len("optimiser_"):]
            hyper = c.compiler.optimiser.hyper(int(step), batch, mean, bounds.get(target))
            hyper[0] = lr
            c.backend.push("eprop_optimiser", hyper)
            c.backend.custom_update(index)
