"""Long sequences of the time-parallel method in chunks: a sequence of T steps run by kernels
compiled for C steps (:class:`~.parallel.ParallelCompiler` with ``chunk``), chunk after chunk,
with the gradients of the whole sequence at once.

Forward, chunk k (steps kC .. kC + C - 1) starts where chunk k - 1 ended: the states of its last
step (pushed as the simulation's initial state, which the forward scans read at their step 0),
the values each layer sent in its last step (``par_<layer>_last``: the input of step 0) and the
values the spike rule carries through the scan. The kernels read the chunk's first step from
``par_chunk``, and the spike rules draw with key step ``draw T + kC + t``: the numbers of the
pass over the whole sequence. Each chunk's boundary is kept (O(T/C B N)), and the readout's
values of every step (O(T B K)).

Backward, once every chunk has run forward (a readout that aggregates over the window needs all
of ``y`` for its error): the chunks in reverse, each one's forward pass recomputed from its
boundary (gradient checkpointing; the last chunk's is still in the arrays), then the error of
its steps, the adjoint scans and the weight gradients. The adjoint of a chunk's step after its
last is the next chunk's first (left in the scans' scratch arrays), dE/dz of its last step comes
from the next layer's dE/du of the next chunk's first step (``par_<layer>_du_next``, written by
the host), and the gradients sum over the chunks (the last one first). What the reverse scans
read of the whole forward pass the host writes: the rate regulariser's spike count over the
whole sequence, and a spike rule's steps (``SpikeRule.carried_steps``, e.g. first_crossing's step
of the first spike) as steps of the chunk.

When C does not divide T, the last chunk runs past the sequence's end: its extra steps have zero
inputs, mask and error, so they add nothing to the loss or the gradients (the kernels leave the
rate regulariser's term out there), and their spikes are not counted.
"""

from __future__ import annotations

import numpy as np

from ..errors import NetworkError


def _padded(values: np.ndarray, steps: int) -> np.ndarray:
    """``values`` (steps', ...) with zero steps appended to ``steps``."""
    if len(values) == steps:
        return values
    out = np.zeros((steps, *values.shape[1:]), dtype=values.dtype)
    out[: len(values)] = values
    return out


class ChunkedRun:
    """One pass over a sequence in chunks of a :class:`~.parallel.CompiledParallel` (see the
    module's doc): the forward pass that keeps the chunks' boundaries, then the backward pass."""

    def __init__(self, compiled, x, draw: int):
        self.c = compiled
        self.x = np.asarray(x)  # (steps, batch, inputs): chunks are slices
        self.draw = draw
        T, C, B = compiled.n_steps, compiled.chunk, compiled.network.batch_size
        self.n_chunks = -(-T // C)
        self.hidden = compiled.layers[:-1]
        carried = compiled.compiler._carried()
        self.steps_carried = [c for c in compiled.compiler.spike.carried_steps if c in carried]
        others = [c for c in carried if c != "count" and c not in self.steps_carried]
        if others and T % C:
            raise NetworkError(f"chunk {C}: the spike rule carries {', '.join(others)} through the scan; run it in "
                               f"chunks that divide the sequence's {T} steps")
        # per chunk, the values it starts from: {"states": {array: value}, "carried": ..., "last": ...}
        self.bounds: list = [None] * self.n_chunks
        self.bounds[0] = {"states": dict(compiled._x0), "carried": {}, "last": {}}
        self.counts = {h.name: np.zeros((B, h.size)) for h in self.hidden}  # spikes over the sequence
        # the step (of the sequence) of each carried step value, T: none (e.g. no spike yet)
        self.steps = {(h.name, c): np.full((B, h.size), T, dtype=np.int64) for h in self.hidden
                      for c in self.steps_carried}
        self.ends: dict = {}  # carried values at the sequence's end, for the reverse scans

    def _valid(self, k: int) -> int:
        """The steps of chunk ``k`` inside the sequence."""
        return min(self.c.chunk, self.c.n_steps - k * self.c.chunk)

    def _steps_of(self, name: str, n: int, k: int) -> np.ndarray:
        """Array ``name`` (batch, C n) as (steps inside the sequence, batch, n)."""
        B, C = self.c.network.batch_size, self.c.chunk
        return self.c.backend.peek(name).reshape(B, C, n)[:, : self._valid(k)].transpose(1, 0, 2).copy()

    def run(self, k: int):
        """The forward kernels over chunk ``k``, from its boundary."""
        c, be = self.c, self.c.backend
        T, C, B = c.n_steps, c.chunk, c.network.batch_size
        bound, first = self.bounds[k], k * C
        be.push("par_chunk", np.array([first], dtype=np.uint32))
        xs = np.zeros((C, B, c.inputs.size), dtype=self.x.dtype)
        xs[: self._valid(k)] = self.x[first: first + C]
        c._push_inputs(xs)
        if k > 0:
            be.push(f"par_{c.inputs.name}_last", self.x[first - 1])
        for part in ("states", "carried", "last"):
            for name, value in bound[part].items():
                be.push(name, value)
        be.step = self.draw * T + first  # the kernels' _step: key step draw T + kC + t
        for index in range(c.n_forward):
            be.custom_update(index)

    def _boundary(self, k: int) -> dict:
        """What chunk ``k + 1`` starts from, read after chunk ``k``'s forward pass."""
        c, be = self.c, self.c.backend
        B, C = c.network.batch_size, c.chunk
        states = {}
        for h in c.layers:
            for v, array in c.initial_arrays[h.name].items():
                last = be.peek(f"par_{h.name}_{v}").reshape(B, C, h.size)[:, C - 1]
                states[array] = last.reshape(c._x0[array].shape).copy()
        carried = {f"par_{h.name}_{v}": be.pull(f"par_{h.name}_{v}") for h in self.hidden
                   for v in c.compiler._carried()}
        last = {f"par_{h.name}_last": c.spike_values(h, C - 1)[:, 0].copy() for h in self.hidden}
        return {"states": states, "carried": carried, "last": last}

    def _after_chunk(self, k: int):
        """Spike counts, the carried steps and (after the last chunk) the carried values at the
        sequence's end, from chunk ``k``'s forward pass."""
        c, be = self.c, self.c.backend
        B, C, valid = c.network.batch_size, c.chunk, self._valid(k)
        for h in self.hidden:
            self.counts[h.name] += c.spike_counts_of(h, valid)
            for v in self.steps_carried:  # a step of this chunk (< valid) where none was before
                local, seen = be.peek(f"par_{h.name}_{v}").reshape(B, h.size), self.steps[h.name, v]
                new = (seen == c.n_steps) & (local < valid)
                seen[new] = k * C + local[new].astype(np.int64)
            if k == self.n_chunks - 1:
                for v in c.compiler._carried():
                    self.ends[h.name, v] = be.pull(f"par_{h.name}_{v}")
                if "count" in c.compiler._carried() and valid < C:  # the count of the steps inside the sequence
                    z = c.spike_values(h, 0, valid)
                    count = (self.bounds[k]["carried"][f"par_{h.name}_count"].reshape(B, h.size).copy()
                             if k else np.zeros((B, h.size), dtype=z.dtype))
                    for t in range(valid):  # one step after the other, as the scan adds
                        count = count + z[:, t]
                    self.ends[h.name, "count"] = count

    def forward(self, values: bool = True, after=None) -> dict:
        """Every chunk forward (``after(k)`` once chunk ``k`` ran): the layers' values as
        :meth:`~.parallel.CompiledParallel.forward` gives them."""
        c = self.c
        out_pop = c.layers[-1]
        parts: dict = {}
        for k in range(self.n_chunks):
            self.run(k)
            for h in c.layers if values else [out_pop]:
                names = [*c.states[h.name], "u"] if values else ["v"]
                for v in names:
                    parts.setdefault(h.name, {}).setdefault(v, []).append(
                        self._steps_of(f"par_{h.name}_{v}", h.size, k))
                if values and h is not out_pop:
                    z = c.spike_values(h, 0, self._valid(k)).transpose(1, 0, 2).copy()
                    parts[h.name].setdefault("z", []).append(z)
            self._after_chunk(k)
            if after is not None:
                after(k)
            if k + 1 < self.n_chunks:
                self.bounds[k + 1] = self._boundary(k)
        return {pop: {v: np.concatenate(a) for v, a in vs.items()} for pop, vs in parts.items()}

    def _feed(self, k: int, mask, labels, truth):
        """The loss's inputs of chunk ``k``'s steps: the mask, and the labels or targets."""
        c = self.c
        C, sl = c.chunk, slice(k * c.chunk, k * c.chunk + self._valid(k))
        c.backend.push("eprop_mask", _padded(mask[sl], C))
        per_step = np.ndim(truth) == 3  # (steps, batch, readout): targets of every step
        c.compiler.loss.feed(c.backend, c.network.batch_size, c.layers[-1].size, C, labels,
                             _padded(truth[sl], C) if per_step else None)

    def backward(self, mask, labels, truth, err) -> list:
        """The chunks in reverse (see the module's doc); each chunk's part of the loss (batch,)."""
        c, be = self.c, self.c.backend
        B, C = c.network.batch_size, c.chunk
        aggregated = err is not None
        losses: list = [None] * self.n_chunks
        for k in range(self.n_chunks - 1, -1, -1):
            if k < self.n_chunks - 1:  # (the last chunk's forward values are still there)
                self.run(k)
            for (name, v), value in self.ends.items():
                if v in self.steps_carried:  # the step as a step of this chunk (< 0: before it)
                    seen = self.steps[name, v]
                    value = np.where(seen == c.n_steps, C, seen - k * C).astype(value.dtype).reshape(value.shape)
                be.push(f"par_{name}_{v}", value)
            if aggregated:
                sl = slice(k * C, k * C + self._valid(k))
                be.push("eprop_mask", _padded(mask[sl], C))
                be.push("par_err", np.ascontiguousarray(_padded(err[sl], C).transpose(1, 0, 2)).reshape(B, -1))
                be.push("par_loss", np.zeros((B, 1)))
            else:
                self._feed(k, mask, labels, truth)
            for index in range(c.n_forward + (1 if aggregated else 0), c.n_backward):
                be.custom_update(index)
            losses[k] = be.pull("par_loss").reshape(B)
            if k > 0:  # dE/du of this chunk's first step: the previous chunk's reverse scans read it
                for h in c.layers[1:]:
                    be.push(f"par_{h.name}_du_next", be.peek(f"par_{h.name}_du").reshape(B, C, h.size)[:, 0])
        return losses

    @classmethod
    def gradients(cls, compiled, x, mask, labels, targets, values, draw) -> dict:
        """:meth:`~.parallel.CompiledParallel.gradients` in chunks."""
        readout, B = compiled.layers[-1], compiled.network.batch_size
        truth = None
        if not compiled.compiler.readout.aggregated:
            truth = compiled.compiler.loss.check(B, readout.size, compiled.n_steps, labels, targets)
        out = compiled.forward(x, values, draw)
        run = compiled._chunks
        y = out[readout.name]["v"]
        err, loss = None, np.zeros(B)
        if compiled.compiler.readout.aggregated:
            loss, err, _ = compiled.compiler.readout.loss_and_error(compiled.compiler.loss, y, mask, labels, targets)
        losses = run.backward(mask, labels, truth, err)
        for part in losses:  # in the order of the steps
            loss = loss + part
        loss = np.asarray(loss, dtype=losses[0].dtype)
        return {"forward": out, "y": y, "loss": loss, "grads": compiled._gradients()}

    @classmethod
    def evaluate(cls, compiled, x, mask, labels, targets, draw) -> dict:
        """:meth:`~.parallel.CompiledParallel.evaluate` in chunks: the error kernel after each
        chunk's forward pass (per step), or the readout's host code over all of ``y``."""
        readout, B = compiled.layers[-1], compiled.network.batch_size
        if compiled.compiler.readout.aggregated:
            y = compiled.forward(x, values=False, draw=draw)[readout.name]["v"]
            loss = compiled.compiler.readout.loss_and_error(compiled.compiler.loss, y, mask, labels, targets)[0]
            return {"y": y, "loss": np.asarray(loss)}
        truth = compiled.compiler.loss.check(B, readout.size, compiled.n_steps, labels, targets)
        losses = []

        def error(k):
            compiled._chunks._feed(k, mask, labels, truth)
            compiled.backend.custom_update(compiled.n_forward)  # the error kernel: the first of the backward pass
            losses.append(compiled.backend.pull("par_loss").reshape(B))

        y = compiled.forward(x, values=False, draw=draw, after=error)[readout.name]["v"]
        loss = losses[0]
        for part in losses[1:]:
            loss = loss + part
        return {"y": y, "loss": np.asarray(loss)}

    @staticmethod
    def host_bytes(compiled) -> int:
        """Bytes the host keeps in a chunked pass: each chunk's boundary (the layers' states, the
        hidden layers' carried and sent values) and the readout's values of every step."""
        B, T, C = compiled.network.batch_size, compiled.n_steps, compiled.chunk
        item = 8 if compiled.network.precision == "double" else 4
        per_chunk = sum(len(compiled.states[h.name]) * h.size for h in compiled.layers)
        per_chunk += sum((len(compiled.compiler._carried()) + 1) * h.size for h in compiled.layers[:-1])
        return item * B * ((-(-T // C) - 1) * per_chunk + T * compiled.layers[-1].size)
