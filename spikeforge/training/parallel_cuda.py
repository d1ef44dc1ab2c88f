"""The time-parallel method's kernels for the device backends (``cuda``, and ``cuda-emu``, which
compiles the same .cu for the CPU): :class:`DeviceParallelCompiler`, which
:meth:`.ParallelCompiler.compile` hands a device backend's compilation to.

Every kernel is a custom update with one thread per element of its loop (``info["loop"]``, see
``templates/cuda/custom_update.cu.j2``): no shared memory, no barriers; the phases that need a
grid-wide order are kernels of their own, run one after the other. Per layer, forward:

* **input** ``u_t = W s_(t-1)``: one warp per (instance, step, 32 neurons): the warp reads
  the presynaptic values 32 at a time, finds the nonzero ones by a ballot and adds their
  weights in presynaptic order (the cpu kernel adds its senders in the same order: the same
  sum; the sender lists are a CPU optimisation, not kept here);
* **chunked scan** of ``x_t = A x_(t-1) + B u_t + c`` (no reset: linear). The steps are cut into
  chunks of ``L`` steps (the last one shorter when ``L`` does not divide T). (1) *local*: one
  thread per (instance, chunk, neuron) runs the simulation's printed update over its chunk,
  from the layer's initial state in chunk 0 and from 0 in the others; (2) *carry*: one thread
  per (instance, neuron) walks the chunks in order, ``X_k = x_local(end of k) + A^L X_(k-1)``,
  the true state at each chunk's end (``A^L`` computed once per thread); (3) *fix-up*: one
  thread per (instance, chunk > 0, neuron) adds ``A^(t - start + 1) X_(k-1)`` to each step
  (``y = A y`` step by step). Chunk 0 is the cpu's scan bit for bit; the others equal it to
  rounding (the same affine map, summed in another order);
* **spike rule** (:mod:`.spike_rules`, the cpu's lines and Philox counters): one thread per
  (instance, step, neuron) where the rule keeps no value across steps (``threshold``,
  ``bernoulli_sigmoid``, ``gumbel``). A rule that does and says how its values combine across
  spans of steps (``combine``: ``first_crossing``'s step of the first spike, a prefix-OR over
  time) runs chunk by chunk: each chunk from the values at t = 0, the chunks' values combined
  in order per (instance, neuron), each chunk again from its true start. A rule without
  ``combine`` runs one thread per (instance, neuron) over all the steps. The rate
  regulariser's spike count: per chunk, then the chunks added up per neuron.

Backward, from the readout down: the loss object's error code (one warp per instance, each
lane every 32nd step, the loss summed over the lanes); per layer the *drive* ``dE/dg_t``
(hidden layers: ``dE/dz_t = sum_post w du_(t+1)`` of the next layer, its weights read from a
transposed copy, times ``dz_t/dg_t``), one thread per (instance, step, neuron); a rule with
values carried through the reverse scan (``first_crossing``'s ``fastsnn`` gradient: running
sums over t) runs chunk by chunk like the forward rule when they combine across spans
(``reverse_combine``), else one thread per (instance, neuron) over the steps in reverse; then the adjoint
``lam_t = A^T lam_(t+1) + drive_t dg/dx``, chunked like the forward scan (the last chunk from
``lam_T = 0`` exact, the carry from the last chunk down, ``du_t = B . lam_t`` fixed up); the
readout bias's gradient as per-chunk sums added up per neuron; the weight gradient
``dW[b][pre][post] = sum_t du_t[post] s_(t-1)[pre]``, one warp per (instance, pre, 32 post)
finding the steps where ``pre`` sent by ballots over 32 steps at a time and summing in the
order of t (the cpu's order: the same sum). The optimiser steps are the cpu's
kernels (they carry their loop already).

The chunk length ``L``: ``compile(..., scan_chunk=L)`` (default ``ceil(sqrt(T))``, which balances the
sequential work of the local scan (L steps) and of the carry (T / L chunks)).
"""

from __future__ import annotations

import math

import sympy

from ..codegen.eprop import G
from ..codegen.ir import ArraySpec, KernelSpec, Line
from ..errors import NetworkError
from ..models.expressions import symbol
from ..models.variables import Constant
from .parallel import (
    ParallelCompiler,
    _indented,
    _par_array,
    _param_lines,
    _select_max,
    _weight_array,
    sent_at,
)


def _loop(count: int) -> dict:
    """One thread per element ``_e`` of ``count`` (the custom update template's loop)."""
    return {"loop": {"index": "_e", "count": int(count), "ctype": "size_t"}, "body": [], "once": []}


def _decode(*axes) -> list[Line]:
    """``_e`` split into indices, ``axes`` = (name, extent) outermost first (the last the
    fastest: neighbouring threads touch neighbouring elements)."""
    lines, inner = [], []
    for k, (name, extent) in enumerate(reversed(axes)):
        quotient = f"_e / ((size_t){' * '.join(inner)})" if inner else "_e"
        if k == len(axes) - 1:
            lines.append(Line(f"const uint32_t {name} = (uint32_t)({quotient});"))
        else:
            lines.append(Line(f"const uint32_t {name} = (uint32_t)(({quotient}) % ({extent}));"))
        inner.append(f"({extent})" if " " in extent else extent)
    return lines[::-1]


def chunk_length(T: int, chunk: int | None) -> int:
    """The chunk length of the scans over ``T`` steps (``chunk``, default ceil(sqrt(T)))."""
    if chunk is None:
        return max(1, math.isqrt(T - 1) + 1) if T > 1 else 1
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise NetworkError(f"scan_chunk must be a positive integer, got {chunk!r}")
    return min(chunk, T)


class DeviceParallelCompiler(ParallelCompiler):
    """:class:`.ParallelCompiler` with the kernels of the device backends (see the module's doc).

    Each phase that needs more than one kernel (the chunked scans) appends its leading kernels
    to ``spec.custom_updates`` and returns the last one, which the caller appends: the order of
    the custom updates is the order in which they run."""

    device_kernels = True
    gradient_in_scan = False  # a kernel per weight gradient: one warp per (instance, pre, 32 post)
    spikes_as_lists = False  # the spikes' array: the next layer's warps read it (no lists of senders)

    def __init__(self, compiler: ParallelCompiler):  # the same settings (a copy, as the compiler has them)
        self.__dict__.update(compiler.__dict__)

    def compile(self, network, inputs, hidden, readout, n_steps, trainable=None, backend: str = "cuda",
                scan_chunk: int | None = None, **backend_options):
        """As :meth:`.ParallelCompiler.compile`; ``scan_chunk``: the scans' chunk length (steps).
        A long sequence run in chunks of its steps (``ParallelCompiler(chunk=)``) is the cpu
        kernels' so far: refused here (``chunk="auto"`` runs the whole sequence)."""
        if self.chunk not in (None, "auto"):
            raise NetworkError(f"chunk={self.chunk}: a sequence in chunks runs on the cpu backend only so far "
                               f"(backend '{backend}'; its scans are chunked inside: scan_chunk=)")
        self.chunk = None
        if isinstance(n_steps, int) and not isinstance(n_steps, bool) and n_steps >= 1:
            self._L = chunk_length(n_steps, scan_chunk)
        self._B = network.batch_size
        return super().compile(network, inputs, hidden, readout, n_steps, trainable, backend, **backend_options)

    @staticmethod
    def _sender_arrays(h, T):
        return []  # the device kernels read the spikes densely (the lists are a cpu optimisation)

    # -- helpers ----------------------------------------------------------------------------

    def _chunks(self, T) -> tuple[int, int]:
        L = self._L
        return L, -(-T // L)

    def _spec(self, name, kind, owner, description, w, code, count, reads, writes) -> KernelSpec:
        return KernelSpec(name, kind, owner, "custom_update", description,
                          w.finish_constants() if w is not None else [], [], _indented(code), _loop(count),
                          reads=(*reads, *((a.array for a in w.param_loads) if w else ()),
                                 *(w.param_reads if w else ())), writes=tuple(writes))

    @staticmethod
    def _matrix_power(w, step, L) -> list[Line]:
        """``_P = A^L`` (row-major, nx x nx), computed once by the thread."""
        nx = len(step.states)
        entries = ", ".join(w.expr(step.A[r, c]) for r in range(nx) for c in range(nx))
        return [Line(f"const scalar _A[{nx * nx}] = {{{entries}}};", "A = dx_t/dx_(t-1), row-major"),
                Line(f"scalar _P[{nx * nx}];", f"A^L, L = {L}"),
                Line(f"for (uint32_t _r = 0; _r < {nx * nx}u; _r++) _P[_r] = _r % {nx + 1}u == 0 ? "
                     "(scalar)1 : (scalar)0;"),
                Line(f"for (uint32_t _l = 0; _l < {L}u; _l++) {{"),
                Line(f"scalar _Q[{nx * nx}];"),
                Line(f"for (uint32_t _r = 0; _r < {nx}u; _r++) for (uint32_t _c = 0; _c < {nx}u; _c++) {{"),
                Line("scalar _s = 0;"),
                Line(f"for (uint32_t _m = 0; _m < {nx}u; _m++) _s += _A[_r * {nx}u + _m] * _P[_m * {nx}u + _c];"),
                Line(f"_Q[_r * {nx}u + _c] = _s;"),
                Line("}"),
                Line(f"for (uint32_t _r = 0; _r < {nx * nx}u; _r++) _P[_r] = _Q[_r];"),
                Line("}")]

    @staticmethod
    def _apply(w, step, y, transpose: bool) -> list[Line]:
        """``y = A y`` (or ``A^T y``) on the locals ``y`` (symbols), printed from A."""
        nx = len(step.states)
        A = step.A.T if transpose else step.A
        new = [sum((A[r, c] * y[c] for c in range(nx)), sympy.Integer(0)) for r in range(nx)]
        return ([Line(f"const scalar {y[r].name}_new = {w.expr(new[r])};",
                      ("y = A^T y" if transpose else "y = A y") if r == 0 else "") for r in range(nx)]
                + [Line(f"{y[r].name} = {y[r].name}_new;") for r in range(nx)])

    # -- forward --------------------------------------------------------------------------------

    def _input_kernel(self, spec, q, pre_array, T, listed, binary=False, seq=None):  # (seq: always None here)
        """u_t = W s_(t-1): one warp per (instance, step, 32 neurons). The warp reads the
        presynaptic values 32 at a time (coalesced), finds the nonzero ones (a ballot) and each
        lane adds their weights, in presynaptic order: the cpu kernel's sum over its senders,
        term for term."""
        n_pre, n = q.pre.size, q.post.size
        w, u = _weight_array(spec, q), f"par_{q.post.name}_u"
        nw = -(-n // 32) * 32
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, N_pre = {n_pre}u, NW = {nw}u;",
                     "NW: the neurons rounded up to whole warps"),
                *_decode(("_b", "_B"), ("_t", "T"), ("_post", "NW")),
                Line("const uint32_t _lane = _post % 32u;"),
                Line("scalar _u = 0;", "u_t: the input delivered in step t (nothing arrives at t = 0)"),
                Line("if (_t > 0) {", "(the same for the whole warp)"),
                Line(f"const scalar* const _s = _{pre_array} + {sent_at(pre_array, q.pre)};",
                     "the values sent in step t-1"),
                Line("for (uint32_t _p0 = 0; _p0 < N_pre; _p0 += 32u) {", "32 presynaptic neurons at a time"),
                Line("const scalar _mine = _p0 + _lane < N_pre ? _s[_p0 + _lane] : (scalar)0;"),
                Line("uint32_t _sent = __ballot_sync(0xffffffffu, _mine != 0);", "a value of 0 sends nothing"),
                Line("while (_sent != 0u) {", "the senders in neuron order"),
                Line("const uint32_t _k = (uint32_t)__ffs((int)_sent) - 1u;"),
                Line("_sent &= _sent - 1u;"),
                Line("const scalar _value = __shfl_sync(0xffffffffu, _mine, (int)_k);"),
                Line(f"if (_post < N) _u += _{w}[(size_t)(_p0 + _k) * N + _post] * _value;",
                     f"u_t = W s_(t-1): {q.weight_update.name} on_pre (w times the spike's value)"),
                Line("}"), Line("}"), Line("}"),
                Line(f"if (_post < N) _{u}[((size_t)_b * T + _t) * N + _post] = _u;")]
        k = self._spec(f"parallel_input_{q.post.name}", "parallel_input", q.post.name,
                       f"parallel: the input of '{q.post.name}' through '{q.name}' at every step", None, code,
                       self._B * T * nw, (w, pre_array), (u,))
        k.info["barriers"] = True  # warp collectives
        return k

    def _forward_kernel(self, network, spec, h, q, step, arrays, T, spiking=True, seq=None):
        L, C = self._chunks(T)
        kernels = [self._local_scan(network, spec, h, q, step, arrays, T)]
        scratch = [f"par_{h.name}_xc{j}" for j in range(len(step.states))]
        if C > 1:
            for j, a in enumerate(scratch):
                spec.arrays.append(_par_array(a, h.name, f"_par_xc{j}", C * h.size,
                                              f"state {step.states[j]} at the end of each chunk (the carry)"))
            kernels += [self._forward_carry(network, spec, h, q, step, arrays, scratch, T),
                        self._forward_fixup(network, spec, h, q, step, arrays, scratch, T)]
        if spiking:
            kernels += self._spike_kernels(network, spec, h, q, step, arrays, T)
            if self.reg_rate > 0 and (self._chunked_rule() or not self.spike.carried):  # (else counted there)
                kernels += self._count_kernels(spec, h, T)
        spec.custom_updates += kernels[:-1]
        return kernels[-1]

    def _local_scan(self, network, spec, h, q, step, arrays, T):
        """(1) each chunk scanned on its own: the simulation's printed update, from the initial
        state in chunk 0 and from 0 in the others."""
        L, C = self._chunks(T)
        n = h.size
        w, update, local, init, _ = self._printed_update(network, spec, h, q)
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_c", "C"), ("_i", "N")),
                Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;", "the chunk's steps"),
                *(Line(f"scalar {name} = _c == 0 ? _{init[state]}[(size_t)_b * N + _i] : (scalar)0;",
                       "x_(start-1): the initial value in chunk 0, else 0 (the carry is added later)")
                  for state, name in local.items()),
                *_param_lines(w),
                Line("for (uint32_t _t = _t0; _t < _t1; _t++) {"),
                Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                *update,
                *(Line(f"_{arrays[state]}[_o] = {name};") for state, name in local.items()),
                Line("}")]
        return self._spec(f"parallel_forward_{h.name}", "parallel_forward", h.name,
                          f"parallel: the states of '{h.name}' at every step, each chunk of {L} steps scanned "
                          "on its own (x_t = A x_(t-1) + B u_t + c)", w, code, self._B * C * n,
                          (f"par_{h.name}_u", *init.values()), arrays.values())

    def _forward_carry(self, network, spec, h, q, step, arrays, scratch, T):
        """(2) the true state at each chunk's end: X_k = x_local(end of k) + A^L X_(k-1), in chunk order."""
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        nx, n = len(step.states), h.size
        y = [symbol(f"_y{j}") for j in range(nx)]
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_i", "N")),
                Line("(void)T;"),
                *_param_lines(w), *self._matrix_power(w, step, L),
                *(Line(f"scalar {y[j].name} = _{arrays[s]}[((size_t)_b * T + L - 1) * N + _i];",
                       "chunk 0 ends in its true state" if j == 0 else "") for j, s in enumerate(step.states)),
                *(Line(f"_{a}[((size_t)_b * C) * N + _i] = {y[j].name};") for j, a in enumerate(scratch)),
                Line("for (uint32_t _c = 1; _c + 1 < C; _c++) {", "(the last chunk's end carries nothing)"),
                Line("const size_t _o = ((size_t)_b * T + (_c + 1) * L - 1) * N + _i;", "the chunk's last step"),
                *(Line(f"const scalar {y[j].name}_new = _{arrays[s]}[_o] + "
                       + " + ".join(f"_P[{j * nx + c}] * {y[c].name}" for c in range(nx)) + ";",
                       "X_c = x_local + A^L X_(c-1)" if j == 0 else "") for j, s in enumerate(step.states)),
                *(Line(f"{y[j].name} = {y[j].name}_new;") for j in range(nx)),
                *(Line(f"_{a}[((size_t)_b * C + _c) * N + _i] = {y[j].name};") for j, a in enumerate(scratch)),
                Line("}")]
        return self._spec(f"parallel_forward_carry_{h.name}", "parallel_forward", h.name,
                          f"parallel: the state of '{h.name}' at the end of each chunk (the scan's carry)", w, code,
                          self._B * n, arrays.values(), scratch)

    def _forward_fixup(self, network, spec, h, q, step, arrays, scratch, T):
        """(3) x_t += A^(t - start + 1) X_(k-1) in every chunk k > 0."""
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        nx, n = len(step.states), h.size
        y = [symbol(f"_y{j}") for j in range(nx)]
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_k", "C - 1"), ("_i", "N")),
                Line("const uint32_t _c = _k + 1, _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;",
                     "chunks 1 .. C-1"),
                *_param_lines(w),
                *(Line(f"scalar {y[j].name} = _{a}[((size_t)_b * C + _c - 1) * N + _i];",
                       "X_(c-1): the true state before the chunk" if j == 0 else "") for j, a in enumerate(scratch)),
                Line("for (uint32_t _t = _t0; _t < _t1; _t++) {"),
                Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                *self._apply(w, step, y, transpose=False),
                *(Line(f"_{arrays[s]}[_o] += {y[j].name};", "x_t = x_local,t + A^(t-start+1) X_(c-1)" if j == 0
                       else "") for j, s in enumerate(step.states)),
                Line("}")]
        return self._spec(f"parallel_forward_fixup_{h.name}", "parallel_forward", h.name,
                          f"parallel: the carry of '{h.name}' added to every step of chunks 1 and later", w, code,
                          self._B * (C - 1) * n, scratch, arrays.values())

    def _chunked_rule(self) -> bool:
        """Whether the rule's carried values combine across spans of steps (``combine``): then its
        spikes are found chunk by chunk, else by one thread per neuron over all the steps."""
        combine = getattr(self.spike, "combine", {})
        return bool(self.spike.carried) and all(c in combine for c in self.spike.carried)

    def _spike_kernels(self, network, spec, h, q, step, arrays, T) -> list[KernelSpec]:
        """The spike rule from the states the scan wrote. A rule without carried values: one thread
        per (instance, step, neuron). One whose carried values combine (``combine``, e.g.
        first_crossing's step of the first spike, a prefix-OR over time): (1) each chunk runs the
        rule from the values at t = 0, (2) one thread per (instance, neuron) combines the
        chunks' values in order into the values at each chunk's start, (3) each chunk runs the
        rule again from those and writes the spikes. Otherwise one thread per (instance, neuron)
        over all the steps in order (with the rate regulariser's count)."""
        m, n = h.model, h.size
        L, C = self._chunks(T)
        w, rename = self._linear_writer(network, spec, h, q, step, derived=True)
        chunked = self._chunked_rule()
        # the rule's carried values, with the spike count when the rule runs per neuron over all steps
        carried = dict(self.spike.carried) if chunked else (self._carried() if self.spike.carried else {})
        in_g = [v for v in step.states if symbol(v) in step.g.free_symbols or symbol(v) in m.threshold.free_symbols]
        cond = w.expr(m.threshold.xreplace(rename))

        def body(store: bool) -> list[Line]:
            return [Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                    *(Line(f"const scalar {v} = _{arrays[v]}[_o];") for v in in_g),
                    Line(f"const scalar _g = {w.expr(step.g)};", f"threshold distance: {m.threshold_source}"),
                    *self._draw_lines(w, h), Line("scalar _z;"),
                    *self.spike.forward(cond, w.expr),
                    *([Line("_count += _z;", "spikes so far (the rate regulariser)")] if "count" in carried else []),
                    Line("(void)_g;"),
                    *([Line(f"_par_{h.name}_z[_o] = _z;", f"spike rule {self.spike.describe()}")] if store else
                      [Line("(void)_z;")])]

        head = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"), Line("(void)T; (void)L; (void)C;")]
        reads, z = [arrays[v] for v in in_g], f"par_{h.name}_z"
        what = f"parallel: the spikes ({self.spike.name}) of '{h.name}'"
        if not carried:
            code = [*head, *_decode(("_b", "_B"), ("_t", "T"), ("_i", "N")), *_param_lines(w), *body(True)]
            return [self._spec(f"parallel_spikes_{h.name}", "parallel_forward", h.name, f"{what} at every step", w,
                               code, self._B * T * n, reads, (z,))]
        if not chunked:
            code = [*head, *_decode(("_b", "_B"), ("_i", "N")), *_param_lines(w),
                    *(Line(f"scalar _{c} = {init0};", f"{c} (carried through the steps)")
                      for c, init0 in carried.items()),
                    Line("for (uint32_t _t = 0; _t < T; _t++) {", "in order: the rule carries values"),
                    *body(True), Line("}"),
                    *(Line(f"_par_{h.name}_{c}[(size_t)_b * N + _i] = _{c};") for c in carried)]
            return [self._spec(f"parallel_spikes_{h.name}", "parallel_forward", h.name, f"{what} at every step", w,
                               code, self._B * n, reads, (z, *(f"par_{h.name}_{c}" for c in carried)))]
        parts = {c: f"par_{h.name}_{c}_chunks" for c in carried}
        for c, a in parts.items():
            spec.arrays.append(_par_array(a, h.name, f"_par_{c}_chunks", C * n,
                                          f"{c} of the spike rule at each chunk's start"))
        chunk_of = [*_decode(("_b", "_B"), ("_c", "C"), ("_i", "N")),
                    Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;", "the chunk's steps")]
        local = [*head, *chunk_of, *_param_lines(w),
                 *(Line(f"scalar _{c} = {init0};", f"{c} from its value at t = 0") for c, init0 in carried.items()),
                 Line("for (uint32_t _t = _t0; _t < _t1; _t++) {"), *body(False), Line("}"),
                 *(Line(f"_{parts[c]}[_e] = _{c};", f"{c} after the chunk, run on its own") for c in carried)]
        w2, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        combine = [Line(f"const uint32_t T = {T}u, N = {n}u, C = {C}u;"), Line("(void)T;"),
                   *_decode(("_b", "_B"), ("_i", "N")),
                   *(Line(f"scalar _{c} = {init0};", f"{c} at t = 0") for c, init0 in carried.items()),
                   Line("for (uint32_t _c = 0; _c < C; _c++) {", "the chunks in order"),
                   Line("const size_t _k = ((size_t)_b * C + _c) * N + _i;"),
                   *(Line(f"const scalar _{c}_chunk = _{parts[c]}[_k];") for c in carried),
                   *(Line(f"_{parts[c]}[_k] = _{c};", f"{c} at the chunk's start") for c in carried),
                   *(Line(f"_{c} = {self.spike.combine[c].format(a=f'_{c}', b=f'_{c}_chunk')};",
                          f"{c} after the chunk") for c in carried),
                   Line("}"),
                   *(Line(f"_par_{h.name}_{c}[_e] = _{c};", f"{c} after the sequence") for c in carried)]
        spikes = [*head, *chunk_of, *_param_lines(w),
                  *(Line(f"scalar _{c} = _{parts[c]}[_e];", f"{c} at the chunk's start") for c in carried),
                  Line("for (uint32_t _t = _t0; _t < _t1; _t++) {"), *body(True), Line("}")]
        return [self._spec(f"parallel_spike_chunks_{h.name}", "parallel_forward", h.name,
                           f"{what}: the rule's values after each chunk, run on its own", w, local,
                           self._B * C * n, reads, tuple(parts.values())),
                self._spec(f"parallel_spike_carry_{h.name}", "parallel_forward", h.name,
                           f"{what}: the rule's values at each chunk's start", w2, combine, self._B * n,
                           tuple(parts.values()), (*parts.values(), *(f"par_{h.name}_{c}" for c in carried))),
                self._spec(f"parallel_spikes_{h.name}", "parallel_forward", h.name, f"{what} at every step", w,
                           spikes, self._B * C * n, (*reads, *parts.values()), (z,))]

    def _count_kernels(self, spec, h, T) -> list[KernelSpec]:
        """The rate regulariser's spike count of each neuron: per chunk, then the chunks in order."""
        L, C = self._chunks(T)
        n, part = h.size, f"par_{h.name}_countc"
        spec.arrays.append(_par_array(part, h.name, "_par_countc", C * n, "the spikes of each chunk"))
        chunks = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                  *_decode(("_b", "_B"), ("_c", "C"), ("_i", "N")),
                  Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;"),
                  Line("scalar _count = 0;"),
                  Line(f"for (uint32_t _t = _t0; _t < _t1; _t++) _count += _par_{h.name}_z[((size_t)_b * T + _t) * N "
                       "+ _i];", "in the order of t"),
                  Line(f"_{part}[_e] = _count;")]
        total = [Line(f"const uint32_t N = {n}u, C = {C}u;"),
                 *_decode(("_b", "_B"), ("_i", "N")),
                 Line("scalar _count = 0;"),
                 Line(f"for (uint32_t _c = 0; _c < C; _c++) _count += _{part}[((size_t)_b * C + _c) * N + _i];"),
                 Line(f"_par_{h.name}_count[_e] = _count;", "spikes over the sequence (the rate regulariser)")]
        return [self._spec(f"parallel_count_chunks_{h.name}", "parallel_forward", h.name,
                           f"parallel: the spikes of '{h.name}' in each chunk", None, chunks, self._B * C * n,
                           (f"par_{h.name}_z",), (part,)),
                self._spec(f"parallel_count_{h.name}", "parallel_forward", h.name,
                           f"parallel: the spikes of '{h.name}' over the sequence", None, total, self._B * n,
                           (part,), (f"par_{h.name}_count",))]

    # -- backward -------------------------------------------------------------------------------

    def _error_kernel(self, spec, out, T):
        """The loss object's code at every step: one warp per instance, its lanes taking every
        32nd step (err_t written per step), the instance's loss summed over the lanes by warp
        shuffles (a fixed order: the same sum every run; equal to the cpu's sum to rounding)."""
        k = super()._error_kernel(spec, out, T)  # the arrays, reads and writes of the cpu's kernel
        K = out.size
        code = [Line(f"const uint32_t T = {T}u, K = {K}u;"),
                Line("const uint32_t _b = (uint32_t)(_e / 32u), _lane = (uint32_t)(_e % 32u);",
                     "one warp per instance (whole warps: 32 threads each)"),
                Line("scalar _loss = 0;", "this lane's part of the loss"),
                Line("for (uint32_t _t = _lane; _t < T; _t += 32u) {"),
                Line("const uint64_t _step = _t;", "the step whose values the loss code reads"),
                Line(f"const scalar* const _y = _par_{out.name}_v + ((size_t)_b * T + _t) * K;", "y_t = v_t"),
                Line("scalar* const _err = _par_err + ((size_t)_b * T + _t) * K;"),
                Line("const scalar _mask = _eprop_mask[_t];"),
                Line("(void)_step;"),
                Line("{"), *self.loss.code(), Line("}"),
                Line("}"),
                Line("for (uint32_t _d = 16u; _d > 0u; _d /= 2u) _loss += __shfl_down_sync(0xffffffffu, _loss, _d);",
                     "the lanes' parts summed (a tree over the warp)"),
                Line("if (_lane == 0u) _par_loss[_b] = _loss;")]
        return KernelSpec(k.name, k.kind, k.target, "custom_update", k.description, [], [], _indented(code),
                          {**_loop(self._B * 32), "barriers": True}, reads=k.reads, writes=k.writes)

    def _drive_lines(self, network, w, h, step, q_after, T, store=True) -> tuple[list[Line], list[str]]:
        """dE/dg_t of a hidden neuron at step _t: dE/dz_t (the next layer's du_(t+1) through its
        weights, the rate regulariser) times dz_t/dg_t (the spike rule's gradient lines)."""
        m, a, n_after = h.model, q_after.post, q_after.post.size
        in_g = [v for v in step.states if symbol(v) in step.g.free_symbols]
        psi_lines, psi = _select_max(w, self._psi(network, m, G))
        lines = [Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                 Line("scalar _dz = 0;", f"dE/dz_t = sum_post w du_(t+1) of '{a.name}' (a spike at t arrives at t+1)"),
                 Line(f"if (_t + 1 < T) for (uint32_t _post = 0; _post < {n_after}u; _post++) "
                      f"_dz += _W[(size_t)_post * N + _i] * "
                      f"_par_{a.name}_du[((size_t)_b * T + _t + 1) * {n_after}u + _post];", "in the order of post"),
                 *(Line(f"const scalar {v} = _par_{h.name}_{v}[_o];") for v in in_g),
                 Line(f"const scalar _g = {w.expr(step.g)};", f"threshold distance: {m.threshold_source}"),
                 *psi_lines,
                 Line(f"const scalar _surrogate = {w.expr(psi)};", f"surrogate dz/dg ({self.surrogate})"),
                 *[line for line in self._rate_lines(T, network.dt) if "_par_loss" not in line.code],
                 *self._draw_lines(w, h),
                 Line("scalar _psi;"), *self.spike.gradient(w.expr),
                 Line("(void)_surrogate;"),
                 Line(f"_par_{h.name}_drive[_o] = _dz * _psi;", "dE/dg_t") if store else Line("(void)_psi;")]
        return lines, [f"par_{h.name}_{v}" for v in in_g]

    def _transpose_kernel(self, spec, q) -> KernelSpec:
        """The weights of ``q`` as [post][pre] (the drive kernel reads them along pre)."""
        wa, wt = _weight_array(spec, q), f"par_{q.name}_wt"
        n_pre, n = q.pre.size, q.post.size
        spec.arrays.append(ArraySpec(wt, q.name, "_par_wt", "scalar", n_pre * n, False, "parallel", Constant(0),
                                     comment="the weights transposed: [post][pre]"))
        code = [Line(f"const uint32_t N = {n}u, N_pre = {n_pre}u;"),
                *_decode(("_post", "N"), ("_pre", "N_pre")),
                Line(f"_{wt}[_e] = _{wa}[(size_t)_pre * N + _post];")]
        return self._spec(f"parallel_transpose_{q.name}", "parallel_adjoint", q.name,
                          f"parallel: the weights of '{q.name}' transposed", None, code, n_pre * n, (wa,), (wt,))

    def _chunked_reverse_rule(self) -> bool:
        """Whether the rule's reverse-carried values combine across spans (``reverse_combine``)."""
        combine = getattr(self.spike, "reverse_combine", {})
        return bool(self.spike.reverse_carried) and all(c in combine for c in self.spike.reverse_carried)

    def _drive_kernels(self, network, spec, h, q, step, q_after, T) -> list[KernelSpec]:
        """dE/dg_t of hidden layer ``h`` at every step, before its reverse scan: one thread per
        (instance, step, neuron); for a rule with values carried through the reverse scan that
        combine across spans (``reverse_combine``: the fastsnn gradient's running sums), (1) each
        chunk from the values 0 after its last step, (2) the chunks' values combined from the
        last chunk down per (instance, neuron), (3) each chunk again from its true values, writing
        the drive; without ``reverse_combine``, one thread per (instance, neuron) over the steps."""
        n = h.size
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        body, reads = self._drive_lines(network, w, h, step, q_after, T)
        carried = list(self._carried())
        wt = f"par_{q_after.name}_wt"
        head = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"), Line("(void)L; (void)C;"),
                Line(f"const scalar* const _W = _{wt};",
                     f"the weights onto '{q_after.post.name}' transposed: [post][neuron] (neighbouring threads, "
                     "neighbouring neurons)")]
        loads = [Line(f"const scalar _{c} = _par_{h.name}_{c}[(size_t)_b * N + _i];", f"{c} after the forward scan")
                 for c in carried]
        back = self.spike.reverse_carried
        drive = f"par_{h.name}_drive"
        all_reads = (wt, f"par_{q_after.post.name}_du", *reads, *(f"par_{h.name}_{c}" for c in carried))
        what = f"parallel: dE/dg_t of '{h.name}'"
        if not back:
            code = [*head, *_decode(("_b", "_B"), ("_t", "T"), ("_i", "N")), *_param_lines(w), *loads, *body]
            return [self._spec(f"parallel_drive_{h.name}", "parallel_adjoint", h.name,
                               f"{what} at every step (the reverse scan's input)", w, code, self._B * T * n,
                               all_reads, (drive,))]
        finals = tuple(f"par_{h.name}_{c}" for c in back)
        if not self._chunked_reverse_rule():
            code = [*head, *_decode(("_b", "_B"), ("_i", "N")), *_param_lines(w), *loads,
                    *(Line(f"scalar _{c} = 0;", f"{c} (carried through the reverse scan)") for c in back),
                    Line("for (uint32_t _t = T; _t-- > 0;) {", "t = T-1 down to 0: the rule carries values"),
                    *body, Line("}"),
                    *(Line(f"_par_{h.name}_{c}[(size_t)_b * N + _i] = _{c};") for c in back)]
            return [self._spec(f"parallel_drive_{h.name}", "parallel_adjoint", h.name,
                               f"{what} at every step (the reverse scan's input)", w, code, self._B * n, all_reads,
                               (drive, *finals))]
        parts = {c: f"par_{h.name}_{c}_chunks" for c in back}
        for c, a in parts.items():
            spec.arrays.append(_par_array(a, h.name, f"_par_{c}_chunks", C * n,
                                          f"{c} of the spike rule's gradient after each chunk's last step"))
        chunk_of = [*_decode(("_b", "_B"), ("_c", "C"), ("_i", "N")),
                    Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;", "the chunk's steps")]
        silent, _ = self._drive_lines(network, w, h, step, q_after, T, store=False)
        local = [*head, *chunk_of, *_param_lines(w), *loads,
                 *(Line(f"scalar _{c} = 0;", f"{c} from 0 after the chunk") for c in back),
                 Line("for (uint32_t _t = _t1; _t-- > _t0;) {"), *silent, Line("}"),
                 *(Line(f"_{parts[c]}[_e] = _{c};", f"{c} at the chunk's first step, run on its own") for c in back)]
        names = {"n": "(scalar)_n", **{f"{c}_a": f"_{c}" for c in back}, **{f"{c}_b": f"_{c}_chunk" for c in back}}
        combine = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                   *_decode(("_b", "_B"), ("_i", "N")),
                   *(Line(f"scalar _{c} = 0;", f"{c} after the last step") for c in back),
                   Line("for (uint32_t _c = C; _c-- > 0;) {", "the chunks from the last down"),
                   Line("const size_t _k = ((size_t)_b * C + _c) * N + _i;"),
                   Line("const uint32_t _n = _c * L + L < T ? L : T - _c * L;", "the chunk's steps"),
                   *(Line(f"const scalar _{c}_chunk = _{parts[c]}[_k];") for c in back),
                   *(Line(f"_{parts[c]}[_k] = _{c};", f"{c} after the chunk's last step") for c in back),
                   *(Line(f"const scalar _{c}_new = {self.spike.reverse_combine[c].format(**names)};",
                          f"{c} at the chunk's first step") for c in back),
                   *(Line(f"_{c} = _{c}_new;") for c in back),
                   Line("}"),
                   *(Line(f"_par_{h.name}_{c}[_e] = _{c};", f"{c} at t = 0") for c in back)]
        again = [*head, *chunk_of, *_param_lines(w), *loads,
                 *(Line(f"scalar _{c} = _{parts[c]}[_e];", f"{c} after the chunk's last step") for c in back),
                 Line("for (uint32_t _t = _t1; _t-- > _t0;) {"), *body, Line("}")]
        return [self._spec(f"parallel_drive_chunks_{h.name}", "parallel_adjoint", h.name,
                           f"{what}: the rule's reverse values over each chunk, run on its own", w, local,
                           self._B * C * n, all_reads, tuple(parts.values())),
                self._spec(f"parallel_drive_carry_{h.name}", "parallel_adjoint", h.name,
                           f"{what}: the rule's reverse values after each chunk", None, combine, self._B * n,
                           tuple(parts.values()), (*parts.values(), *finals)),
                self._spec(f"parallel_drive_{h.name}", "parallel_adjoint", h.name,
                           f"{what} at every step (the reverse scan's input)", w, again, self._B * C * n,
                           (*all_reads, *parts.values()), (drive,))]

    def _adjoint_kernel(self, network, spec, h, q, step, q_after, T, seq=None, gradient=None, keep_du=True):
        # (gradient: None, keep_du: True: the gradient kernels read du)
        L, C = self._chunks(T)
        n, nx = h.size, len(step.states)
        readout = step.g is None
        if not readout:
            spec.arrays.append(_par_array(f"par_{h.name}_drive", h.name, "_par_drive", T * n,
                                          "dE/dg_t of every step (the reverse scan's input)"))
            spec.custom_updates += [self._transpose_kernel(spec, q_after),
                                    *self._drive_kernels(network, spec, h, q, step, q_after, T)]
            if self.reg_rate > 0:
                spec.custom_updates.append(self._rate_loss_kernel(network, h, T))
        lamc = [f"par_{h.name}_lamc{j}" for j in range(nx)]
        for j, a in enumerate(lamc):
            spec.arrays.append(_par_array(a, h.name, f"_par_lamc{j}", C * n,
                                          f"adjoint component {j} at the start of each chunk (the carry)"))
        bias = readout and "bias" in h.params
        gbc = f"par_{h.name}_gbc"
        if bias:
            spec.arrays.append(_par_array(gbc, h.name, "_par_gbc", C * n, "the bias gradient's sum over each chunk"))
        kernels = [self._reverse_local(network, spec, h, q, step, lamc, gbc if bias else None, T)]
        if C > 1:
            kernels += [self._reverse_carry(network, spec, h, q, step, lamc, T),
                        self._reverse_fixup(network, spec, h, q, step, lamc, gbc if bias else None, T)]
        if bias:
            kernels.append(self._bias_sum(h, gbc, T))
        spec.custom_updates += kernels[:-1]
        return kernels[-1]

    def _rate_loss_kernel(self, network, h, T):
        """The rate regulariser's terms of each instance's loss (neuron order, as the cpu adds them)."""
        lines = [line for line in self._rate_lines(T, network.dt) if "_par_loss" in line.code or "_dr =" in line.code]
        code = [Line(f"const uint32_t T = {T}u, N = {h.size}u;"),
                Line("const uint32_t _b = (uint32_t)_e;", "one thread per instance"),
                Line("for (uint32_t _i = 0; _i < N; _i++) {"),
                Line(f"const scalar _count = _par_{h.name}_count[(size_t)_b * N + _i];"),
                Line("const uint32_t _t = T - 1;", "the step where the loss term is added"),
                *lines, Line("}")]
        return self._spec(f"parallel_rate_loss_{h.name}", "parallel_adjoint", h.name,
                          f"parallel: the rate regulariser's loss of '{h.name}'", None, code, self._B,
                          (f"par_{h.name}_count",), ("par_loss",))

    def _lambda_update(self, w, step, readout):
        """lam_t = A^T lam_(t+1) + drive_t dg/dx, du_t = B . lam_t (symbols _lam<j>)."""
        nx = len(step.states)
        lam = [symbol(f"_lam{j}") for j in range(nx)]
        e = [int(j == 0) for j in range(nx)] if readout else list(step.dg_dx)
        new = [sum((step.A[i, j] * lam[i] for i in range(nx)), sympy.Integer(0)) + e[j] * symbol("_drive")
               for j in range(nx)]
        return lam, new

    def _reverse_local(self, network, spec, h, q, step, lamc, gbc, T):
        """(1) each chunk's reverse scan on its own, from lam = 0 after its last step (exact for the
        last chunk: lam_T = 0)."""
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        n, nx = h.size, len(step.states)
        readout = step.g is None
        lam, new = self._lambda_update(w, step, readout)
        news = {x: symbol(f"{x.name}_new") for x in lam}
        du = sum((step.B[j] * news[lam[j]] for j in range(nx)), sympy.Integer(0))
        drive = "_par_err[_o]" if readout else f"_par_{h.name}_drive[_o]"
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_c", "C"), ("_i", "N")),
                Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L < T ? _t0 + L : T;", "the chunk's steps"),
                *_param_lines(w),
                *(Line(f"scalar {x.name} = 0;", "lam after the chunk: 0 (the carry is added later)" if j == 0 else "")
                  for j, x in enumerate(lam)),
                *([Line("scalar _gb = 0;", "dE/dbias over the chunk: sum_t dc/dbias . lam_t")] if gbc else []),
                Line("for (uint32_t _t = _t1; _t-- > _t0;) {", "the chunk's steps in reverse"),
                Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                Line(f"const scalar _drive = {drive};", "dE/dy_t, y_t = v_t" if readout else "dE/dg_t"),
                *(Line(f"const scalar {x.name}_new = {w.expr(new[j])};",
                       "lam_t = A^T lam_(t+1) + drive_t dg/dx" if j == 0 else "") for j, x in enumerate(lam)),
                *(Line(f"{x.name} = {x.name}_new;") for x in lam),
                Line(f"_par_{h.name}_du[_o] = {w.expr(du)};", "du_t = B . lam_t (the chunk's part)")]
        if gbc:
            dc = step.c.diff(symbol("bias"))
            gb = sum((dc[j] * lam[j] for j in range(nx)), sympy.Integer(0))
            code.append(Line(f"_gb += {w.expr(gb)};"))
        code += [Line("}"),
                 *(Line(f"_{a}[((size_t)_b * C + _c) * N + _i] = {x.name};", "lam at the chunk's start (local)")
                   for x, a in zip(lam, lamc)),
                 *([Line(f"_{gbc}[((size_t)_b * C + _c) * N + _i] = _gb;")] if gbc else [])]
        reads = ("par_err",) if readout else (f"par_{h.name}_drive",)
        return self._spec(f"parallel_adjoint_{h.name}", "parallel_adjoint", h.name,
                          f"parallel: the reverse (adjoint) scan of '{h.name}', each chunk of {L} steps on its own",
                          w, code, self._B * C * n, reads, (f"par_{h.name}_du", *lamc, *([gbc] if gbc else [])))

    def _reverse_carry(self, network, spec, h, q, step, lamc, T):
        """(2) the true lam at each chunk's start, from the last chunk down: Lam_c = lam_local,c +
        (A^T)^L Lam_(c+1), written over the local values."""
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        n, nx = h.size, len(step.states)
        y = [f"_y{j}" for j in range(nx)]
        code = [Line(f"const uint32_t N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_i", "N")),
                Line("(void)L;"),
                *_param_lines(w), *self._matrix_power(w, step, L),
                *(Line(f"scalar {y[j]} = _{a}[((size_t)_b * C + C - 1) * N + _i];",
                       "the last chunk starts from its true lam" if j == 0 else "") for j, a in enumerate(lamc)),
                Line("for (uint32_t _c = C - 1; _c-- > 1;) {", "(chunk 0's start carries nothing)"),
                Line("const size_t _o = ((size_t)_b * C + _c) * N + _i;"),
                *(Line(f"const scalar {y[j]}_new = _{a}[_o] + " + " + ".join(f"_P[{c * nx + j}] * {y[c]}"
                                                                             for c in range(nx)) + ";",
                       "Lam_c = lam_local,c + (A^L)^T Lam_(c+1)" if j == 0 else "") for j, a in enumerate(lamc)),
                *(Line(f"{y[j]} = {y[j]}_new;") for j in range(nx)),
                *(Line(f"_{a}[_o] = {y[j]};") for j, a in enumerate(lamc)),
                Line("}")]
        return self._spec(f"parallel_adjoint_carry_{h.name}", "parallel_adjoint", h.name,
                          f"parallel: the adjoint of '{h.name}' at the start of each chunk (the reverse carry)", w,
                          code, self._B * n, lamc, lamc)

    def _reverse_fixup(self, network, spec, h, q, step, lamc, gbc, T):
        """(3) du_t += B . (A^T)^(end - t) Lam_(c+1) in every chunk c < C - 1 (and the bias sums)."""
        L, C = self._chunks(T)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        n, nx = h.size, len(step.states)
        y = [symbol(f"_y{j}") for j in range(nx)]
        du = sum((step.B[j] * y[j] for j in range(nx)), sympy.Integer(0))
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, L = {L}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_c", "C - 1"), ("_i", "N")),
                Line("const uint32_t _t0 = _c * L, _t1 = _t0 + L;", "chunks 0 .. C-2 (whole)"),
                *_param_lines(w),
                *(Line(f"scalar {y[j].name} = _{a}[((size_t)_b * C + _c + 1) * N + _i];",
                       "Lam_(c+1): the true lam after the chunk" if j == 0 else "") for j, a in enumerate(lamc)),
                *([Line("scalar _gb = 0;")] if gbc else []),
                Line("for (uint32_t _t = _t1; _t-- > _t0;) {"),
                Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;"),
                *self._apply(w, step, y, transpose=True),
                Line(f"_par_{h.name}_du[_o] += {w.expr(du)};", "du_t = B . lam_t: the carry's part")]
        if gbc:
            dc = step.c.diff(symbol("bias"))
            code.append(Line(f"_gb += {w.expr(sum((dc[j] * y[j] for j in range(nx)), sympy.Integer(0)))};"))
        code += [Line("}"), *([Line(f"_{gbc}[((size_t)_b * C + _c) * N + _i] += _gb;")] if gbc else [])]
        return self._spec(f"parallel_adjoint_fixup_{h.name}", "parallel_adjoint", h.name,
                          f"parallel: the reverse carry of '{h.name}' added to du_t in chunks 0 .. C-2", w, code,
                          self._B * (C - 1) * n, lamc, (f"par_{h.name}_du", *([gbc] if gbc else [])))

    def _bias_sum(self, h, gbc, T):
        """dE/dbias: the chunks' sums added up, last chunk first (as t descends)."""
        L, C = self._chunks(T)
        n = h.size
        code = [Line(f"const uint32_t N = {n}u, C = {C}u;"),
                *_decode(("_b", "_B"), ("_i", "N")),
                Line("scalar _sum = 0;"),
                Line(f"for (uint32_t _c = C; _c-- > 0;) _sum += _{gbc}[((size_t)_b * C + _c) * N + _i];"),
                Line(f"_par_{h.name}_grad_bias[_e] = _sum;", "dE/dbias = sum_t dc/dbias . lam_t")]
        return self._spec(f"parallel_bias_gradient_{h.name}", "parallel_adjoint", h.name,
                          f"parallel: the gradient of the bias of '{h.name}'", None, code, self._B * n, (gbc,),
                          (f"par_{h.name}_grad_bias",))

    def _gradient_kernel(self, spec, q, pre_array, grad, T, binary=False, seq=None):
        """dW[pre][post] = sum_t du_t[post] s_(t-1)[pre]: one warp per (instance, pre, 32
        postsynaptic neurons). The warp reads the presynaptic values of 32 steps at a time, from
        the last steps down, finds the nonzero ones (a ballot) and each lane adds their terms in
        the order of t descending: the cpu's sum (in its reverse scan), term for term."""
        n_pre, n = q.pre.size, q.post.size
        du = f"par_{q.post.name}_du"
        nw = -(-n // 32) * 32
        code = [Line(f"const uint32_t T = {T}u, N = {n}u, N_pre = {n_pre}u, NW = {nw}u;",
                     "NW: the neurons rounded up to whole warps"),
                *_decode(("_b", "_B"), ("_pre", "N_pre"), ("_post", "NW")),
                Line("const uint32_t _lane = _post % 32u;"),
                Line("scalar _sum = 0;"),
                Line("for (uint32_t _blk = (T + 30u) / 32u; _blk-- > 0;) {",
                     "dW = sum_t du_t s_(t-1)^T, t = 1..T-1 32 steps at a time, t descending"),
                Line("const uint32_t _t0 = 1u + 32u * _blk, _tl = _t0 + _lane;"),
                Line(f"const scalar _mine = _tl < T ? _{pre_array}[{sent_at(pre_array, q.pre, '_tl - 1')} + _pre] : "
                     "(scalar)0;"),
                Line("uint32_t _sent = __ballot_sync(0xffffffffu, _mine != 0);", "a value of 0 sends nothing"),
                Line("while (_sent != 0u) {", "the latest step first"),
                Line("const uint32_t _k = 31u - (uint32_t)__clz((int)_sent);"),
                Line("_sent &= ~(1u << _k);"),
                Line("const scalar _value = __shfl_sync(0xffffffffu, _mine, (int)_k);"),
                Line(f"if (_post < N) _sum += _{du}[((size_t)_b * T + _t0 + _k) * N + _post] * _value;"),
                Line("}"), Line("}"),
                Line(f"if (_post < N) _{grad}[((size_t)_b * N_pre + _pre) * N + _post] = _sum;")]
        k = self._spec(f"parallel_gradient_{q.name}", "parallel_gradient", q.name,
                       f"parallel: the gradient of the weights of '{q.name}'", None, code, self._B * n_pre * nw,
                       (du, pre_array), (grad,))
        k.info["barriers"] = True  # warp collectives
        return k


def device_compiler(compiler: ParallelCompiler) -> DeviceParallelCompiler:
    """``compiler``'s settings with the device backends' kernels."""
    return DeviceParallelCompiler(compiler)
