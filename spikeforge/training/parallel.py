"""Time-parallel training of feed-forward stacks of layers with linear subthreshold
dynamics: the per-step linear map of a layer, derived, and :class:`ParallelCompiler`, whose
generated kernels run each layer over the whole sequence, forward and backward (BPTT by a
reverse scan), as custom updates of the network's own simulation.

A neuron whose subthreshold dynamics are linear, run without a reset, is a linear filter of
its input. One simulation step of a population (the postsynaptic model's ``apply`` code and
equations, then the neuron's equations integrated over ``dt`` and its ``sim_code``) is then

    x_t = A x_{t-1} + B u_t + c,

with ``x`` the state variables (the neuron's and its postsynaptic model's), ``u_t`` the input
delivered in step t (``in_syn``: the summed weights of the spikes that arrived) and ``A``, ``B``,
``c`` expressions of the parameters and ``dt``. :func:`derive_linear_step` takes them from the
integrator the simulation uses (:func:`spikeforge.codegen.integrate.integrate`; for linear
systems the exact one, the matrix exponential), so they are the simulation's own update,
differentiated, never a formula written for one model. The spikes come from ``g(x_t)``, the
threshold condition's ``lhs - rhs``, which must be affine in the state, by a spike rule
(:mod:`.spike_rules`: ``threshold``'s ``z_t = H(g(x_t))``, ``first_crossing``,
``bernoulli_sigmoid``, ``gumbel``), which also gives ``dz_t/dg_t`` for the reverse scan.

:func:`check_feed_forward` refuses recurrent projections: the method scans whole sequences
layer after layer, so a layer's input must be known for all steps before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from ..codegen.eprop import SURROGATES, G, default_scale, threshold_distance
from ..codegen.integrate import Integration, integrate, linear_parts
from ..codegen.ir import ArraySpec, KernelSpec, Line
from ..errors import MemoryLimitError, ModelError, NetworkError
from ..models.builtins import VALUE_INPUT
from ..models.expressions import ParseContext, parse_expression, symbol
from ..models.functions import RANDOM_FUNCTIONS
from ..models.neuron import INPUT_NAME, NeuronModel
from ..models.synapse import IN_SYN_NAME, PostsynapticModel
from ..models.variables import Constant
from ..rng import stream_id
from .objectives import HYPER_SIZE, Adam, Optimiser, make_loss, make_readout
from .parallel_chunks import ChunkedRun
from .spike_rules import DRAW_SITE, SpikeRule, make_spike_rule

#: The input of one step, ``u_t``: the postsynaptic model's delivered input (``in_syn``), or the
#: neuron's ``i_syn`` when no postsynaptic model is given.
U = symbol(IN_SYN_NAME)


def ps_state(name: str) -> str:
    """The name under which a postsynaptic model's state variable ``name`` is a state of the layer."""
    return f"_ps_{name}"


@dataclass
class LinearStep:
    """One simulation step of a layer as the affine map ``x_t = A x_{t-1} + B u_t + c`` (see the
    module's doc), in the model's parameter names and ``dt``."""

    model: str
    states: list[str]  # x: the neuron's state variables, then the postsynaptic model's (ps_state names)
    constants: list  # (name, expression): the integrator's constant temporaries, which A, B, c name
    A: sympy.Matrix  # dx_t/dx_{t-1}
    B: sympy.Matrix  # dx_t/du_t (a column)
    c: sympy.Matrix  # the constant part (e.g. v_rest (1 - exp(-dt/tau_m)))
    update: dict[str, sympy.Expr]  # x_t of each state as the simulation computes it, from x_{t-1} and u_t
    g: sympy.Expr | None  # threshold distance lhs - rhs in the state: z_t = H(g(x_t)); None: not spiking
    dg_dx: sympy.Matrix | None  # its gradient (constant: g is affine)
    neuron_integration: Integration | None  # the integrators the simulation prints, for the kernels
    ps_integration: Integration | None
    resets: list[str] = field(default_factory=list)  # variables the model's reset writes (not run here)
    refractory: str | None = None  # the model's refractory period (must be 0 where this step is used)

    def numeric(self, values: dict[str, float]) -> tuple:
        """``(A, B, c, dg_dx)`` as lists of float rows for parameter values ``values`` (with ``dt``);
        ``dg_dx`` None for a layer that does not spike."""
        subs = {symbol(k): v for k, v in values.items()}
        for name, e in self.constants:
            subs[symbol(name)] = e.xreplace(subs)
        out = []
        for m in (self.A, self.B, self.c, self.dg_dx):
            if m is None:
                out.append(None)
                continue
            e = m.xreplace(subs)
            if e.free_symbols:
                raise ModelError(f"no value for {', '.join(sorted(s.name for s in e.free_symbols))}", self.model,
                                 "params")
            out.append([[float(v) for v in row] for row in e.tolist()])
        return tuple(out)


def _nonlinear_reason(odes) -> str | None:
    """Why ``odes`` are not linear with constant coefficients (naming the first such equation), or None."""
    states = [symbol(o.var) for o in odes]
    if not odes or linear_parts(odes, states) is not None:
        return None
    for o in odes:
        if linear_parts([o], states) is None:
            return f"'{o.source}' is not linear with constant coefficients in the state"
    return "the equations are not linear with constant coefficients in the state"


def _partial_update_map(integ: Integration, prefix: str = "") -> tuple[dict, list]:
    """``integ``'s new values with its constant temporaries (those of parameters and dt only, e.g.
    the exact integrator's propagator entries) kept as named symbols (``prefix`` + their name):
    ``({var: new value}, [(name, expression)])``, the constants in the order they are computed."""
    env: dict = {}
    constants = []
    dynamic = {symbol(INPUT_NAME), symbol(IN_SYN_NAME), symbol("t"), *(symbol(v) for v in integ.new)}
    for name, expr in integ.assignments:
        e = expr.xreplace(env)
        if name in integ.new.values() or e.free_symbols & dynamic:
            env[symbol(name)] = e
        else:
            constants.append((prefix + name, e))
            env[symbol(name)] = symbol(prefix + name)
    return {var: env[symbol(tmp)] for var, tmp in integ.new.items()}, constants


def _run_statements(stmts, env: dict):
    """Apply ``stmts`` (``target = value``, in order) to ``env``, a map from symbols to expressions."""
    for st in stmts:
        env[symbol(st.target)] = st.value.xreplace(env)


def derive_linear_step(model: NeuronModel, postsynaptic: PostsynapticModel | None = None,
                       method: str | None = None, spiking: bool = True) -> LinearStep:
    """The affine step map of ``model`` fed through ``postsynaptic`` (None: ``u_t`` is ``i_syn``).
    ``spiking=False`` for a layer that does not spike (a readout): no threshold is derived.

    ``method`` forces the neuron's integrator (default: the model's, as the simulation does).
    Refused, naming the model and the reason: no threshold, dynamics that are not linear with
    constant coefficients, a threshold that is not affine in the state."""
    if spiking and model.threshold is None:
        raise ModelError("the parallel method needs a spiking model (a threshold)", model.name, "threshold")
    reason = _nonlinear_reason(model.odes)
    if reason is not None:
        raise ModelError(f"the parallel method needs linear subthreshold dynamics: {reason}", model.name, "equations")
    if postsynaptic is not None:
        reason = _nonlinear_reason(postsynaptic.odes)
        if reason is not None:
            raise ModelError(f"the parallel method needs linear synaptic dynamics: {reason}", postsynaptic.name,
                             "equations")
    neuron_states = list(model.vars)
    ps_states = list(postsynaptic.vars) if postsynaptic is not None else []
    clash = set(ps_states) & (set(model.vars) | set(model.params) | set(model.derived))
    if clash:
        raise ModelError(f"the parallel method needs distinct names: the postsynaptic model '{postsynaptic.name}' "
                         f"and the neuron model both name {', '.join(sorted(clash))}", model.name, "vars")
    states = neuron_states + [ps_state(s) for s in ps_states]
    x = [symbol(s) for s in states]

    # one step as the simulation runs it: inputs (postsynaptic apply, then its equations), the
    # neuron's equations, its sim_code
    env: dict = {symbol(s): symbol(s) for s in neuron_states}
    ps_integ, constants = None, []
    if postsynaptic is None:
        env[symbol(INPUT_NAME)] = U
    else:
        ps_env = {symbol(s): symbol(ps_state(s)) for s in ps_states}
        scope = {**env, **ps_env, symbol(INPUT_NAME): sympy.Integer(0), U: U}
        _run_statements(postsynaptic.parse_apply(neuron_states), scope)
        ps_integ = integrate(postsynaptic.odes, postsynaptic.name)
        ps_new, ps_consts = _partial_update_map(ps_integ, "_ps")
        constants += ps_consts
        for s in ps_states:
            scope[symbol(ps_state(s))] = ps_new[s].xreplace(scope) if s in ps_new else scope[symbol(s)]
        env = {**{symbol(s): scope[symbol(s)] for s in neuron_states},
               **{symbol(ps_state(s)): scope[symbol(ps_state(s))] for s in ps_states},
               symbol(INPUT_NAME): scope[symbol(INPUT_NAME)]}
    neuron_integ = None
    if model.odes:
        neuron_integ = integrate(model.odes, model.name, method or model.integrator)
        new_map, consts = _partial_update_map(neuron_integ)
        constants += consts
        new = {symbol(v): e.xreplace(env) for v, e in new_map.items()}
        env.update(new)
    _run_statements(model.sim_code, env)
    # derived parameters (e.g. kappa = exp(-dt / tau_m)) written out: A, B, c in params and dt only
    derived = {symbol(d): e for d, e in model.derived.items()}
    update = {s: env[symbol(s)].xreplace(derived) for s in states}
    constants = [(name, e.xreplace(derived)) for name, e in constants]

    new_vec = sympy.Matrix([update[s] for s in states])
    A = new_vec.jacobian(x)
    B = new_vec.jacobian([U])
    if any(sym in A.free_symbols | B.free_symbols for sym in [*x, U]):
        raise ModelError("the parallel method needs linear subthreshold dynamics: the step's update "
                         "(sim_code or input) is not linear in the state and the input", model.name, "sim_code")
    c = sympy.expand(new_vec - A * sympy.Matrix(x) - B * U)
    if not spiking:
        return LinearStep(model.name, states, constants, A, B, c, update, None, None, neuron_integ, ps_integ)
    g = threshold_distance(model).xreplace(derived)
    dg_dx = sympy.Matrix([g]).jacobian(x)
    if dg_dx.free_symbols & set(x) or g.has(symbol(INPUT_NAME)) or g.has(*RANDOM_FUNCTIONS):
        raise ModelError("the parallel method needs a deterministic threshold affine in the state variables",
                         model.name, "threshold")
    return LinearStep(model.name, states, constants, A, B, c, update, g, dg_dx, neuron_integ, ps_integ,
                      resets=[st.target for st in model.reset], refractory=model.refractory_source)


def check_feed_forward(network, populations) -> list:
    """``populations`` (names) in an order where every projection among them goes forward;
    a projection that closes a cycle (a population onto itself, or back to an earlier one) is
    refused, naming it: the parallel method runs each layer over the whole sequence before the next."""
    pops = [network.populations[p] if isinstance(p, str) else p for p in populations]
    inside = {p.name for p in pops}
    edges = [q for q in network.projections.values() if q.pre.name in inside and q.post.name in inside]
    order: list = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(p, path):
        state[p.name] = 1
        for q in edges:
            if q.pre is not p:
                continue
            if state.get(q.post.name) == 1:
                cycle = " -> ".join([*path[path.index(q.post.name):], q.post.name])
                raise NetworkError(f"projection '{q.name}' from '{q.pre.name}' to '{q.post.name}' is recurrent "
                                   f"(cycle {cycle}): the parallel method trains feed-forward networks only")
            if q.post.name not in state:
                visit(q.post, [*path, q.post.name])
        state[p.name] = 2
        order.append(p)

    for p in pops:
        if p.name not in state:
            visit(p, [p.name])
    return order[::-1]


def check_layers(network, inputs, hidden, readout) -> None:
    """What :meth:`ParallelCompiler.compile` refuses about the stack's layers, without generating
    anything (a job file's loader runs it, so that the error points at the file's line): a
    recurrent projection, a layer whose dynamics are not linear (:func:`derive_linear_step`), a
    reset or refractory period, a projection the kernels do not take."""
    names = [hidden] if isinstance(hidden, str) else list(hidden)
    out = network.populations[readout]
    source = {inputs: None}
    for h in check_feed_forward(network, [inputs, *names, readout]):
        if h.name == inputs:
            continue
        q = ParallelCompiler._incoming(network, h, source)
        ParallelCompiler._check_layer(h, q, derive_linear_step(h.model, q.postsynaptic, spiking=h is not out))
        source[h.name] = None


# -- generated kernels (cpu): the forward pass over the whole sequence --------------------------

def _par_array(name, owner, var, size, comment, dtype="scalar") -> ArraySpec:
    """A per-instance array of the parallel method: (batch, T * N), zero-initialised."""
    return ArraySpec(name, owner, var, dtype, size, True, "parallel", Constant(0), comment=comment)


def input_array(inp) -> str:
    """The array of the input values of every step, laid out as the caller gives them: (steps,
    batch, inputs), so a pass copies them in without a transpose (a layer's values are kept per
    instance: (batch, steps, N))."""
    return f"par_{inp.name}_x"


def sent_at(pre_array: str, pre, t: str = "_t - 1") -> str:
    """The C offset of the values ``pre`` sent in step ``t`` of instance ``_b`` in ``pre_array``:
    the inputs' (steps, batch, inputs), a layer's (batch, steps, N)."""
    if pre_array == input_array(pre):
        return f"((size_t)({t}) * _B + _b) * N_pre"
    return f"((size_t)_b * T + {t}) * N_pre"


def push_steps(backend, name: str, x):
    """``x`` (steps, batch, inputs) into the backend's array ``name`` of that layout: one copy,
    converted as it goes, into the array itself where the backend lends it (no transpose)."""
    peek = getattr(backend, "peek", None)
    target = None if peek is None else peek(name)
    if target is not None and np.shares_memory(target, peek(name)):  # the array itself, not a copy
        np.copyto(target.reshape(x.shape), x, casting="unsafe")
    else:
        backend.push(name, np.ascontiguousarray(x).reshape(x.shape[1], -1))


#: how many steps ahead a scan asks for the values it will read (see :func:`_prefetch`)
PREFETCH_STEPS = 8


def _prefetch(array: str, offset: str, length: str, when: str, why: str) -> Line:
    """Ask for the ``length`` values at ``offset`` in ``array`` (a row of a later step) ahead of
    their use, when ``when`` holds: for the rows the hardware prefetcher does not follow (a
    reverse scan reads its steps' rows backwards; one instance's input rows lie a step of the
    batch apart)."""
    return Line(f"if ({when}) for (size_t _c = 0; _c < (size_t){length} * sizeof(scalar); _c += 64) "
                f"SF_PREFETCH((const char*)(_{array} + {offset}) + _c);", why)


def prefetch_inputs(pre_array: str, pre, ahead: int) -> list[Line]:
    """For the inputs' array (steps, batch, inputs), whose rows of one instance lie a whole step
    of the batch apart: the row sent in step ``t - 1 + ahead`` (``ahead`` < 0: an earlier step,
    for a reverse scan). None for a layer's array (one instance's rows are one stream)."""
    if pre_array != input_array(pre):
        return []
    t = f"_t - 1 + {ahead}u" if ahead > 0 else f"_t - 1 - {-ahead}u"
    when = f"_t - 1 + {ahead}u < T" if ahead > 0 else f"_t >= {1 - ahead}u"
    return [_prefetch(pre_array, sent_at(pre_array, pre, t), "N_pre", when,
                      "the inputs of a later step: one instance's rows lie a step of the batch apart")]


def _sender_arrays(h, T) -> list[ArraySpec]:
    """The senders of ``h``, listed once per pass (a hidden layer's by its forward scan, the
    inputs' by the first layer's input kernel): per instance the indices of its neurons with a
    nonzero value, step after step, each step's in neuron order (packed: room for all T N, but
    only the senders are written), and per step the end of its list."""
    return [_par_array(f"par_{h.name}_senders", h.name, "_par_senders", T * h.size,
                       "the neurons with a nonzero spike value, step after step, packed", "uint32"),
            _par_array(f"par_{h.name}_n_senders", h.name, "_par_n_senders", T,
                       "the senders of steps 0..t: where the list of step t ends", "uint32")]


def _list_senders(pre) -> list[Line]:
    """``_n`` and ``_list``: the inputs ``pre`` with a nonzero value in step ``_t - 1`` (``_s``),
    listed here, packed after the list of step ``_t - 2`` (for the gradient kernel to read)."""
    return [Line(f"uint32_t* const _all = _par_{pre}_senders + (size_t)_b * T * N_pre;",
                 f"the neurons of '{pre}' that sent in step t-1, listed once (the gradient reads them)"),
            Line(f"uint32_t* const _ends = _par_{pre}_n_senders + (size_t)_b * T;"),
            Line("const uint32_t _start = _t >= 2 ? _ends[_t - 2] : 0u;"),
            Line("const uint32_t _end = _start + sf_list_nonzero(_s, N_pre, _all + _start);",
                 "a value of 0 sends nothing (room: the list ends at most at (t-1) N_pre here)"),
            Line("_ends[_t - 1] = _end;", "(the last step's values reach no step: not listed)"),
            Line("const uint32_t _n = _end - _start;"),
            Line("const uint32_t* const _list = _all + _start;")]


def _value(binary: bool) -> Line:
    """The value ``_value`` of the sender ``_pre`` in step ``_t - 1``: its spike read from ``_s``,
    or 1 for a binary spike rule (the spikes not read again: ``w * 1`` is ``w``, the same sum)."""
    if binary:
        return Line("const scalar _value = (scalar)1;", "a spike of a binary rule is 1 (its array not read again)")
    return Line("const scalar _value = _s[_pre];")


def _listed(pre, listed: bool) -> tuple:
    return (f"par_{pre}_senders", f"par_{pre}_n_senders") if listed else ()


def _senders(pre) -> list[Line]:
    """``_n`` and ``_list``: the presynaptic neurons that sent in step ``_t - 1`` (a nonzero value,
    in neuron order), read from the list written once per pass (:func:`_sender_arrays`)."""
    return [Line(f"const uint32_t* const _ends = _par_{pre}_n_senders + (size_t)_b * T;",
                 f"the neurons of '{pre}' that sent in step t-1 (listed once per pass)"),
            Line("const uint32_t _start = _t >= 2 ? _ends[_t - 2] : 0u, _n = _ends[_t - 1] - _start;"),
            Line(f"const uint32_t* const _list = _par_{pre}_senders + (size_t)_b * T * N_pre + _start;")]


def _indented(lines: list[Line]) -> list[Line]:
    """``lines`` with the bodies of their braces indented (readable generated loops)."""
    out, depth = [], 0
    for line in lines:
        text = line.code.strip()
        if text.startswith("}"):
            depth -= 1
        out.append(Line("    " * depth + text if text else text, line.comment))
        depth += text.count("{") - text.count("}") + (1 if text.startswith("}") else 0)
    return out


def _param_arrays(spec, owner: str, part: str, names) -> dict:
    """The arrays of the parameters of ``owner`` read at run time (given per element or per
    instance, or dynamic), as the generator made them: {parameter: ArraySpec}."""
    from ..codegen.generate import param_array_name

    arrays = {a.name: a for a in spec.arrays}
    return {n: arrays[param_array_name(owner, part, n)] for n in names if param_array_name(owner, part, n) in arrays}


def _param_lines(w) -> list[Line]:
    """Loads of the parameters ``w`` reads per neuron or per instance, and the derived values
    computed from them (in the neuron loop: ``_b``, ``_i``, ``N``)."""
    index = {("neuron", True): "(size_t)_b * N + _i", ("neuron", False): "_i", ("shared", True): "_b",
             ("shared", False): "0"}
    lines = [Line(f"const scalar {a.local} = _{a.array}[{index[(a.index, a.batched)]}];",
                  "parameter given per neuron or per instance") for a in w.param_loads]
    return lines + list(w.element_lines)


def _instances(work: str) -> list[Line]:
    """The loop over the batch instances of a parallel kernel, on OpenMP threads when the kernel's
    work (``work``, a C expression: updates per instance) pays for a team. Each instance is
    computed by one thread in the order one thread computes it, so the results do not depend on
    the number of threads."""
    return [Line(f"#pragma omp parallel for schedule(dynamic, 1) if (_B > 1 && (double)_B * ({work}) >= "
                 "SF_PARALLEL_MIN_REDUCE)", "instances on threads: each one whole on one thread"),
            Line("for (uint32_t _b = 0; _b < _B; _b++) {"),
            Line("sf_flush_subnormals _ftz;", "subnormals flushed on this thread (see the model's header)")]


def _select_max(w, e: sympy.Expr) -> tuple[list[Line], sympy.Expr]:
    """``e`` with each ``Max(a, b)`` of a number ``a`` taken out into lines that select
    ``b > a ? b : a``: the value fmax gives (``a`` for a NaN ``b``, ``a`` when they are equal),
    without the library call that keeps a loop over neurons from being vectorised."""
    lines: list[Line] = []

    def select(m):
        a, b = m.args
        k = len(lines) // 2
        lines.extend([Line(f"const scalar _mx{k}_arg = {w.expr(b)};"),
                      Line(f"const scalar _mx{k} = _mx{k}_arg > {w.expr(a)} ? _mx{k}_arg : {w.expr(a)};",
                           "max, as fmax gives it")])
        return symbol(f"_mx{k}")
    e = e.replace(lambda x: isinstance(x, sympy.Max) and len(x.args) == 2 and x.args[0].is_number, select)
    return lines, e


# -- chunks: a sequence of T steps run as kernels of C steps, chunk after chunk ----------------

def _chunk_lines(seq: int | None, T: int, last: bool = False) -> list[Line]:
    """In a kernel compiled for chunks of ``T`` steps of a sequence of ``seq`` steps (None: the
    whole sequence at once, no lines): ``_t0``, the chunk's first step in the sequence (the host
    writes it), and with ``last`` whether the chunk is the sequence's last."""
    if seq is None:
        return []
    lines = [Line("const uint32_t _t0 = _par_chunk[0];", f"the chunk's first step in the sequence of {seq} steps")]
    if last:
        lines.append(Line(f"const bool _last = _t0 + T >= {seq}u;",
                          "the sequence's last chunk (it may run past its end)"))
    return lines


def _chunk_reads(seq: int | None, pre: str | None = None) -> tuple:
    """The arrays a chunked kernel reads besides its own: the chunk's first step, and the values
    ``pre`` sent in the previous chunk's last step."""
    return () if seq is None else ("par_chunk", *((f"par_{pre}_last",) if pre else ()))


def _chunk_first_input(pre: str, w: str) -> list[Line]:
    """Step 0 of a chunk's input: ``u_0 = W s_(-1)`` from the values ``pre`` sent in the previous
    chunk's last step (``par_<pre>_last``), summed in neuron order as the lists of senders are."""
    return [Line("if (_t == 0) {", "a spike at t reaches its targets at t+1: u_0 = W s_(-1) (the previous chunk's)"),
            Line("if (_t0 == 0) continue;", "nothing arrives at the sequence's step 0"),
            Line(f"const scalar* const _s = _par_{pre}_last + (size_t)_b * N_pre;"),
            Line("for (uint32_t _pre = 0; _pre < N_pre; _pre++) {", "in neuron order, as the senders are listed"),
            Line("const scalar _value = _s[_pre];"),
            Line("if (_value == 0) continue;", "a value of 0 sends nothing"),
            Line(f"const scalar* const _w = _{w} + (size_t)_pre * N;"),
            Line("for (uint32_t _post = 0; _post < N; _post++) _u[_post] += _w[_post] * _value;"),
            Line("}"),
            Line("continue;"),
            Line("}")]


def _next_du_lines(after: str, n_after: int, seq: int | None) -> list[Line]:
    """The loop over the next layer's ``du_(t+1)`` in a hidden layer's reverse scan (opened here,
    closed by the caller): none at the sequence's last step; in a chunk's last step, the next
    chunk's first (``par_<after>_du_next``, the host keeps it)."""
    sum_order = "each neuron's sum in the order of post, as one neuron at a time would add"
    if seq is None:
        return [Line(f"if (_t + 1 < T) for (uint32_t _post = 0; _post < {n_after}u; _post++) {{", sum_order),
                Line(f"const scalar _d = _par_{after}_du[((size_t)_b * T + _t + 1) * {n_after}u + _post];")]
    return [Line(f"const scalar* const _du_next = _t + 1 < T ? _par_{after}_du + ((size_t)_b * T + _t + 1) * "
                 f"{n_after}u : _last ? nullptr : _par_{after}_du_next + (size_t)_b * {n_after}u;",
                 "du_(t+1): at the chunk's last step the next chunk's first (none after the sequence)"),
            Line(f"if (_du_next) for (uint32_t _post = 0; _post < {n_after}u; _post++) {{", sum_order),
            Line("const scalar _d = _du_next[_post];")]


def _chunk_arrays(inp, order, T) -> list[ArraySpec]:
    """The arrays of a chunked sequence: the chunk's first step, what each layer sent in the
    previous chunk's last step, and dE/du of each layer's next-chunk first step."""
    return [ArraySpec("par_chunk", inp.name, "_par_chunk", "uint32", 1, False, "parallel", Constant(0),
                      comment="the first step of the chunk the kernels run (chunks of T steps)"),
            *(_par_array(f"par_{p.name}_last", p.name, "_par_last", p.size,
                         "the values sent in the previous chunk's last step") for p in [inp, *order[:-1]]),
            *(_par_array(f"par_{h.name}_du_next", h.name, "_par_du_next", h.size,
                         "dE/du of the next chunk's first step") for h in order[1:])]


def _initial_arrays(spec, h, q, step) -> dict[str, str]:
    """Layer ``h``'s states -> the simulation's arrays the forward scan reads its initial value from
    (the postsynaptic model's with the projection ``q``)."""
    out = {}
    for v in step.states:
        owner, var = (q.name, v[len(ps_state("")):]) if v.startswith(ps_state("")) else (h.name, v)
        out[v] = next(a.name for a in spec.arrays if a.owner == owner and a.var == var and a.role == "state")
    return out


def _stepped_arrays(inp, order, steps) -> set[str]:
    """The arrays with values of every step (their size grows with the kernels' steps)."""
    names = {input_array(inp), f"par_{inp.name}_senders", f"par_{inp.name}_n_senders", "par_err"}
    for h in order:
        names |= {f"par_{h.name}_{v}" for v in [*steps[h.name].states, "u", "z", "du", "senders", "n_senders"]}
    return names


def _chunk_fits(spec, batch_size, backend, stepped: set[str], T) -> int | None:
    """The longest chunk (below ``T`` steps) that fits in the host memory available, with a
    tenth to spare for the chunks' boundary states; 0: none; None: unknown."""
    from ..runtime import memory

    per_step = sum(memory.array_nbytes(a, spec, batch_size) for a in spec.arrays if a.name in stepped) / T
    total = sum(n.nbytes for n in memory.host_needs(spec, batch_size, backend))
    available, _ = memory.host_available()
    if available is None or per_step == 0:
        return None
    return max(0, min(T - 1, int(0.9 * (available - (total - per_step * T)) // per_step)))


def _check_chunk_host(compiled):
    """What the host keeps of a pass in chunks, checked before a pass allocates it (the compiled
    network closed if it does not fit)."""
    from ..runtime import memory

    if not compiled.chunked:
        return
    try:
        memory.check([memory.Need("the chunks' boundary states and the readout's values (host)",
                                  ChunkedRun.host_bytes(compiled))],
                     context=f"network '{compiled.network.name}' in chunks of {compiled.chunk} steps",
                     advice="use longer chunks")
    except MemoryLimitError:
        compiled.close()
        raise


def _chunk_advice(fits: int | None) -> str:
    """The memory check's advice: chunks (of ``fits`` steps)."""
    how = "ParallelCompiler(chunk=...), or training.chunk in a job"
    if fits is None:
        return f"run the sequence in chunks ({how})"
    if fits < 1:
        return "it does not fit even in chunks of one step: reduce the batch size or the layers"
    return (f"chunks of {fits} steps fit ({how}: the backward pass then recomputes each chunk's "
            "forward pass from its boundary state)")


def _weight_array(spec, q) -> str:
    return next(a.name for a in spec.arrays if a.owner == q.name and a.var == "w" and a.role == "state")


class ParallelCompiler:
    """Compiles a feed-forward network for time-parallel training (see
    docs/training.md, "Time-parallel training").

    The kernels on their own, for a network ``net``, inputs ``x`` (steps, batch, inputs), a
    readout ``mask`` and ``labels`` (the example below trains through a Trainer instead):

    >>> compiled = ParallelCompiler(loss="xent", optimiser=Adam(lr=1e-3)).compile(  # doctest: +SKIP
    ...     net, inputs="inp", hidden=["h1", "h2"], readout="out", n_steps=100)
    >>> result = compiled.gradients(x, mask, labels=labels)  # doctest: +SKIP
    >>> compiled.apply_gradients()  # doctest: +SKIP

    Kernels run outside the step loop (``custom_updates``), once per batch over all ``n_steps``
    steps. Forward, per layer: the input of every step from the previous layer's spikes
    (``u_t = W s_{t-1}``, the synapses' sum in their order), then the scan of the layer's own
    update (the simulation's printed code, so float for float the same values) and the spike
    rule ``spike`` (a name or a :class:`~.spike_rules.SpikeRule`). Backward, from the readout
    down: the reverse (adjoint) scan and the gradients of the weights (and of the readout bias),
    after the loss object's code (``err_t = dE/dy_t``, as e-prop runs it, per step over the
    mask). Then one optimiser step per trainable array. ``reg_rate``, ``reg_target_hz``: the
    firing-rate regulariser of the hidden layers (see docs/training.md). ``chunk``: run sequences
    longer than that many steps in chunks (:mod:`.parallel_chunks`; memory O(chunk B N), the
    same gradients), ``"auto"``: in chunks only when the whole sequence does not fit in memory.

    Examples:
        >>> import numpy as np
        >>> from spikeforge import Adam, Network, NeuronModel, ParallelCompiler, Trainer
        >>> from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
        >>> paralif = NeuronModel("paralif", params={"tau_m": 10.0, "v_th": 0.5}, vars={"v": 0.0},
        ...                       equations="dv/dt = (i_syn - v) / tau_m", threshold="v > v_th")   # no reset
        >>> net = Network("tiny_ff", dt=1.0)
        >>> _ = net.add_population("inp", 4, VALUE_INPUT)
        >>> _ = net.add_population("h1", 8, paralif)
        >>> _ = net.add_population("out", 2, LEAKY_READOUT, {"tau_m": 20.0, "bias": [0.0, 0.0]})
        >>> _ = net.add_projection("inp_h1", "inp", "h1", SCALED, ONE_STEP_CURR, wu_init={"w": "randn() / sqrt(N_pre)"})
        >>> _ = net.add_projection("h1_out", "h1", "out", STATIC, ONE_STEP_CURR, wu_init={"w": "randn() / sqrt(N_pre)"})
        >>> trainer = Trainer(net, compiler=ParallelCompiler(loss="xent", optimiser=Adam(lr=1e-3)), inputs="inp",
        ...                   hidden=["h1"], readout="out", trainable=["inp_h1", "h1_out"], batch_size=2)
        >>> pairs = [(np.full((20, 4), float(c)), c) for c in (0, 1)]    # (steps x inputs, class)
        >>> history = trainer.fit(pairs, epochs=1, progress=False)       # feed-forward: no recurrent projection
        >>> len(history)
        1
    """

    device_kernels = False  # True for the device backends' kernels (parallel_cuda.DeviceParallelCompiler)
    _sender_arrays = staticmethod(_sender_arrays)

    #: a binary spike rule's spikes kept as the lists of the senders alone (the forward scan
    #: lists them from one step's values; no array of T B N zeros and ones is written)
    spikes_as_lists = True
    #: the weight gradients summed inside the reverse scans (the step's du_t still in the cache), not
    #: by kernels of their own that read every du_t back
    gradient_in_scan = True

    def __init__(self, loss="xent", optimiser: Optimiser | None = None, surrogate: str = "triangular",
                 gamma: float = 0.3, spike: str | SpikeRule = "threshold", reg_rate: float = 0.0,
                 reg_target_hz: float = 10.0, readout="per_step", chunk: int | None = None):
        self.loss = make_loss(loss)  # per step over the mask window, as e-prop's per_step readout
        # a readout that aggregates over the window: its error table comes from the host after the
        # forward pass (the whole sequence is known then), in place of the error kernel's
        self.readout = make_readout(readout)
        self.optimiser = optimiser if optimiser is not None else Adam()
        if not isinstance(self.optimiser, Optimiser):
            raise NetworkError(f"optimiser must be an Optimiser (Adam, SGD), got {optimiser!r}")
        if surrogate not in SURROGATES:
            raise NetworkError(f"surrogate must be one of {', '.join(SURROGATES)}, got {surrogate!r}")
        self.surrogate, self.gamma = surrogate, float(gamma)
        self.spike = make_spike_rule(spike)  # the hidden layers' spike rule (spike_rules.py)
        for name, v in (("reg_rate", reg_rate), ("reg_target_hz", reg_target_hz)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < float("inf"):
                raise NetworkError(f"{name} must be a finite number >= 0, got {v!r}")
        # the firing-rate regulariser: E += reg_rate / 2 sum_(hidden neurons) (r - r*)^2 per instance,
        # r the neuron's mean spikes per step over the sequence, r* = reg_target_hz dt / 1000
        self.reg_rate, self.reg_target_hz = float(reg_rate), float(reg_target_hz)
        # a sequence longer than ``chunk`` steps runs in chunks of that many (kernels compiled for
        # them; memory O(chunk B N) plus the chunks' boundary states), backward by recomputing each
        # chunk's forward pass from its boundary state; None: the whole sequence at once; "auto":
        # the whole sequence when it fits in memory, else the longest chunk that fits
        if chunk not in (None, "auto") and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer))
                                           or chunk < 1):
            raise NetworkError(f"chunk must be a positive integer (steps), 'auto' or None, got {chunk!r}")
        self.chunk = chunk if chunk in (None, "auto") else int(chunk)

    def _carried(self) -> dict[str, str]:
        """Values kept per hidden neuron and instance across the forward scan (name -> value at t = 0):
        the spike rule's, and the spike count of the rate regulariser."""
        return {**self.spike.carried, **({"count": "(scalar)0"} if self.reg_rate > 0 else {})}

    def compile(self, network, inputs, hidden, readout, n_steps, trainable=None, backend: str = "cpu",
                **backend_options):
        """``trainable``: the projections of the stack and ``"<readout>.bias"`` the optimiser
        steps (default: every projection, and the bias when it is given one value per neuron).
        A device backend (``cuda``, ``cuda-emu``) gets the kernels of :mod:`.parallel_cuda`
        (chunked scans; ``scan_chunk=`` their chunk length)."""
        from ..codegen.generate import generate

        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise NetworkError(f"n_steps must be a positive integer, got {n_steps!r}")
        from ..runtime.backends import get_backend

        if get_backend(backend).device and not self.device_kernels:  # (an unknown name: the registry's error)
            from .parallel_cuda import device_compiler  # the kernels of the device backends

            return device_compiler(self).compile(network, inputs, hidden, readout, n_steps, trainable, backend,
                                                 **backend_options)
        names = [hidden] if isinstance(hidden, str) else list(hidden)
        for name in [inputs, *names, readout]:
            if name not in network.populations:
                raise NetworkError(f"no population '{name}' (populations: {', '.join(network.populations)})")
        inp = network.populations[inputs]
        if inp.model is not VALUE_INPUT:
            raise NetworkError(f"inputs: population '{inp.name}' must use the value_input model, "
                               f"not '{inp.model.name}'")
        out = network.populations[readout]
        if out.model.name != "leaky_readout":
            raise NetworkError(f"readout: population '{out.name}' must use the leaky_readout model, not "
                               f"'{out.model.name}'")
        order = [p for p in check_feed_forward(network, [inputs, *names, readout]) if p is not inp]
        if order[-1] is not out:
            raise NetworkError(f"readout: population '{out.name}' must come after every hidden layer")
        spec = generate(network)
        # kernels of T steps: the whole sequence, or a chunk of it (seq: the sequence's length then)
        T = n_steps if self.chunk in (None, "auto") else min(self.chunk, n_steps)
        seq = None if T == n_steps else n_steps
        if seq is not None:
            spec.arrays += _chunk_arrays(inp, order, T)
        spec.arrays.append(_par_array(input_array(inp), inp.name, "_par_x", T * inp.size,
                                      "the input values of every step, (steps, batch, inputs)"))
        spec.arrays += self._sender_arrays(inp, T)  # listed by the first layer's input kernel
        source = {inp.name: input_array(inp)}
        steps = {}
        for h in order:
            q = self._incoming(network, h, source)
            step = derive_linear_step(h.model, q.postsynaptic, spiking=h is not out)
            self._check_layer(h, q, step)
            arrays = {v: f"par_{h.name}_{v}" for v in step.states}
            spec.arrays += self._forward_arrays(h, arrays, T, spiking=h is not out)
            spec.custom_updates.append(self._input_kernel(spec, q, source[q.pre.name], T, q.pre is not inp,
                                                          q.pre is not inp and self.spike.binary, seq))
            spec.custom_updates.append(self._forward_kernel(network, spec, h, q, step, arrays, T,
                                                            spiking=h is not out, seq=seq))
            steps[h.name] = step
            if h is not out:
                source[h.name] = f"par_{h.name}_z"
        n_forward = len(spec.custom_updates)
        self._backward(network, spec, order, steps, source, T, seq)
        n_backward = len(spec.custom_updates)
        self._optimiser_updates(network, spec, order, source, trainable)
        states = {name: step.states for name, step in steps.items()}
        try:
            compiled = CompiledParallel(self, network, spec, inp, order, n_steps, (n_forward, n_backward), states,
                                        backend, chunk=T, **backend_options)
        except MemoryLimitError as exc:
            fits = _chunk_fits(spec, network.batch_size, backend, _stepped_arrays(inp, order, steps), T)
            return self._in_chunks_that_fit(exc, fits, network, (inputs, hidden, readout, n_steps, trainable, backend),
                                            backend_options)
        compiled.initial_arrays = {h.name: _initial_arrays(spec, h, self._incoming(network, h, source),
                                                           steps[h.name]) for h in order}
        _check_chunk_host(compiled)
        return compiled

    def _in_chunks_that_fit(self, exc, fits, network, args, options):
        """After the memory check refused to compile: with ``chunk="auto"``, compiled in chunks of
        ``fits`` steps, the longest that fit; else the refusal, saying how long a chunk fits."""
        if self.chunk == "auto" and fits:
            self.chunk = fits
            try:
                return self.compile(network, *args, **options)
            finally:
                self.chunk = "auto"
        raise MemoryLimitError(f"{exc}; {_chunk_advice(fits)}") from None

    def _optimiser_updates(self, network, spec, order, source, trainable):
        """One optimiser step per trainable array over its per-instance gradients (the optimiser
        objects' code, as for e-prop)."""
        spec.arrays.append(ArraySpec("eprop_optimiser", "eprop", "optimiser", "double", HYPER_SIZE, False,
                                     "eprop_data", comment="the optimiser's hyperparameters for its next step"))
        out = order[-1]
        bias = _param_arrays(spec, out.name, "neuron", ["bias"]).get("bias")
        trained = [(q.name, _weight_array(spec, q), f"{q.name}_par_grad", q.pre.size * q.post.size)
                   for q in (self._incoming(network, h, source) for h in order)]
        per_neuron = bias is not None and bias.size == out.size and not bias.batched
        if per_neuron:
            trained.append((out.name, bias.name, f"par_{out.name}_grad_bias", out.size))
        if trainable is not None:
            names = [trainable] if isinstance(trainable, str) else list(trainable)
            known = {name for name, *_ in trained if name != out.name} | {f"{out.name}.bias"}
            for name in names:
                if name not in known:
                    raise NetworkError(f"trainable: '{name}' is not a projection of the stack nor the readout's "
                                       f"bias (choose from {', '.join(sorted(known))})")
            if f"{out.name}.bias" in names and not per_neuron:
                raise NetworkError(f"readout '{out.name}': to train its bias, give 'bias' one value per neuron")
            trained = [t for t in trained if (f"{out.name}.bias" if t[0] == out.name else t[0]) in names]
        for owner, target, grad, size in trained:
            state = self.optimiser.arrays(owner, target, size)
            spec.arrays += state
            spec.custom_updates.append(KernelSpec(
                f"optimiser_{target}", "optimiser_step", owner, "custom_update",
                f"{self.optimiser.name} step of {target} from its gradients summed over the batch",
                [], [], self.optimiser.code(target, grad, size),
                {"loop": {"index": "_k", "count": size, "ctype": "size_t"},
                 "body": self.optimiser.body(target, grad, size), "once": []},
                reads=(grad, "eprop_optimiser", *(a.name for a in state)), writes=(target, *(a.name for a in state))))

    def _backward(self, network, spec, order, steps, source, T, seq=None):
        """The adjoint scans from the readout down, each with its projection's gradient (summed
        inside the scan, or by a kernel after it: see ``gradient_in_scan``)."""
        for k in range(len(order) - 1, -1, -1):
            h = order[k]
            q = self._incoming(network, h, source)
            keep_du = k > 0 or not self.gradient_in_scan  # (read by the reverse scan below, or a gradient kernel)
            if keep_du:
                spec.arrays.append(_par_array(f"par_{h.name}_du", h.name, "_par_du", T * h.size,
                                              "dE/du_t: the loss's gradient by the input of every step"))
            if k == len(order) - 1:
                spec.arrays.append(_par_array("par_err", h.name, "_par_err", T * h.size, "dE/dy_t of every step"))
                spec.custom_updates.append(self._error_kernel(spec, h, T))
                if "bias" in h.params:
                    spec.arrays.append(_par_array(f"par_{h.name}_grad_bias", h.name, "_par_grad_bias", h.size,
                                                  "gradient of the bias, per batch instance"))
            after = None if k == len(order) - 1 else order[k + 1]
            q_after = None if after is None else self._incoming(network, after, source)
            g = f"{q.name}_par_grad"
            gradient = (q, source[q.pre.name], g, q.pre.name in steps and self.spike.binary)
            spec.custom_updates.append(self._adjoint_kernel(network, spec, h, q, steps[h.name], q_after, T, seq,
                                                            gradient if self.gradient_in_scan else None, keep_du))
            for j in range(len(steps[h.name].states)):
                spec.arrays.append(_par_array(f"par_{h.name}_lam{j}", h.name, f"_par_lam{j}", h.size,
                                              f"adjoint component {j} of the step after (reverse scan)"))
            if k < len(order) - 1:
                for c in self.spike.reverse_carried:
                    spec.arrays.append(_par_array(f"par_{h.name}_{c}", h.name, f"_par_{c}", h.size,
                                                  f"{c}: carried through the reverse scan (spike rule "
                                                  f"{self.spike.name})"))
            spec.arrays.append(_par_array(g, q.name, "_par_grad", q.pre.size * h.size,
                                          "gradient of w, per batch instance"))
            if not self.gradient_in_scan:
                spec.custom_updates.append(self._gradient_kernel(spec, q, gradient[1], g, T, gradient[3], seq))

    @staticmethod
    def _incoming(network, h, source):
        """The one projection into ``h``, from the inputs or an earlier layer."""
        incoming = [q for q in network.projections.values() if q.post is h]
        if len(incoming) != 1 or incoming[0].pre.name not in source:
            raise NetworkError(f"hidden: population '{h.name}' must have one projection into it, from the inputs "
                               f"or an earlier hidden layer (has: {', '.join(q.name for q in incoming) or 'none'})")
        return incoming[0]

    @staticmethod
    def _check_layer(h, q, step: LinearStep):
        if step.resets:
            raise ModelError(f"population '{h.name}': the parallel method's spike rules run without a reset, "
                             f"and the model resets {', '.join(step.resets)}", h.model.name, "reset")
        if step.refractory is not None:
            raise ModelError(f"population '{h.name}': the parallel method has no refractory period",
                             h.model.name, "refractory")
        if q.weight_update.name not in ("static", "scaled"):
            raise NetworkError(f"projection '{q.name}': the parallel method takes static or scaled weights "
                               f"(not {q.weight_update.name})")
        clash = set(q.postsynaptic.params) & (set(h.model.params) | set(h.model.vars) | set(h.model.derived))
        if clash:
            raise NetworkError(f"projection '{q.name}': its postsynaptic model '{q.postsynaptic.name}' and the "
                               f"neuron model '{h.model.name}' both name {', '.join(sorted(clash))}")
        if q.connectivity.kind != "dense" or q.delay_steps != 0:
            raise NetworkError(f"projection '{q.name}': the parallel method takes dense projections without delay")

    @staticmethod
    def _input_kernel(spec, q, pre_array, T, listed: bool, binary: bool, seq: int | None = None) -> KernelSpec:
        """u_t = W s_(t-1) at every step, event-driven: per step the presynaptic neurons with a
        nonzero value are listed (read from the list the forward scan of ``pre`` wrote, when
        ``listed``; else, for the inputs, listed here, for the gradient kernel too), then each
        one's weight row is added (times its value, or as it is for a ``binary`` spike rule: its
        spikes are 1), in neuron order: every u_t[post] sums its terms in the order
        of the simulation's synapse update (the spikes in neuron order), so the values are the same float for float.
        ``seq``: the sequence's length when it runs in chunks of T steps (see :func:`_chunk_lines`)."""
        n_pre, n = q.pre.size, q.post.size
        w, u = _weight_array(spec, q), f"par_{q.post.name}_u"
        first = [Line("if (_t == 0) continue;", "a spike at t reaches its targets at t+1: nothing arrives at 0")]
        if seq is not None:
            first = _chunk_first_input(q.pre.name, w)
        code = [
            Line(f"const uint32_t T = {T}u, N = {n}u, N_pre = {n_pre}u;"),
            *_chunk_lines(seq, T),
            *_instances("(double)T * (N_pre + N)"),
            Line("for (uint32_t _t = 0; _t < T; _t++) {"),
            Line(f"scalar* const _u = _{u} + ((size_t)_b * T + _t) * N;", "u_t: the input delivered in step t"),
            Line("for (uint32_t _post = 0; _post < N; _post++) _u[_post] = 0;"),
            *first,
            *prefetch_inputs(pre_array, q.pre, PREFETCH_STEPS),
            *([] if binary else [Line(f"const scalar* const _s = _{pre_array} + {sent_at(pre_array, q.pre)};",
                                           "the values sent in step t-1")]),
            *(_senders(q.pre.name) if listed else _list_senders(q.pre.name)),
            Line("for (uint32_t _k = 0; _k < _n; _k++) {", "in the order of the spikes (neuron order)"),
            Line("const uint32_t _pre = _list[_k];"),
            _value(binary),
            Line(f"const scalar* const _w = _{w} + (size_t)_pre * N;"),
            Line("for (uint32_t _post = 0; _post < N; _post++) _u[_post] += _w[_post] * _value;",
                 f"u_t = W s_(t-1): {q.weight_update.name} on_pre (w times the spike's value), summed as in_syn"),
            Line("}"), Line("}"), Line("}"),
        ]
        return KernelSpec(f"parallel_input_{q.post.name}", "parallel_input", q.post.name, "custom_update",
                          f"parallel: the input of '{q.post.name}' through '{q.name}' at every step", [], [],
                          _indented(code), {"loop": None, "body": [], "once": []},
                          reads=(w, *([] if binary else [pre_array]), *_listed(q.pre.name, listed),
                                 *_chunk_reads(seq, q.pre.name)),
                          writes=(u, *_listed(q.pre.name, not listed)))

    def _draw_lines(self, w, h) -> list[Line]:
        """The spike rule's uniform numbers of neuron ``_i``, instance ``_b``, step ``_t`` (Philox,
        key step ``_step + _t``: the runtime sets ``_step`` to ``draw * T`` for the draw-th pass)."""
        suffix = "f" if w.precision == "float" else "d"
        return [Line(f"const scalar _u{j} = sf_uniform_{suffix}(_seed, _i, _b + _batch_offset, (uint32_t)(_step + _t), "
                     f"0x{stream_id(h.id, DRAW_SITE + j):08x}u);",
                     f"draw {j} of the spike rule (population {h.id}, call site 0x{DRAW_SITE + j:04x})")
                for j in range(self.spike.draws)]

    @staticmethod
    def _printed_update(network, spec, h, q):
        """One step of ``h`` printed as the simulation prints it: the postsynaptic model (its apply
        code and equations, its names prefixed by the projection's), then the neuron's equations
        and sim_code, reading the step's input from ``_par_<h>_u[_o]``. Returns the writer, the
        lines, the states' local names (the neuron's variables, then the postsynaptic model's,
        named as in the simulation) and the arrays of their initial values."""
        from ..codegen.generate import KernelWriter, emit_odes, emit_statements, rename_map

        m, ps, pre = h.model, q.postsynaptic, f"{q.name}_"
        w = KernelWriter(network)
        w.add_params(dict(h.params), "", m.name, _param_arrays(spec, h.name, "neuron", h.params))
        rename: dict = {}
        w.add_derived(m, rename, "")
        ps_rename = rename_map([*q.ps_params, *ps.vars, IN_SYN_NAME], pre)
        w.add_params(dict(q.ps_params), pre, ps.name, _param_arrays(spec, q.name, "postsynaptic", q.ps_params))
        w.add_derived(ps, ps_rename, pre)
        update: list[Line] = [Line(f"scalar {INPUT_NAME} = 0;", "summed synaptic input of this step"),
                              Line(f"scalar {pre}{IN_SYN_NAME} = _par_{h.name}_u[_o];", "u_t, delivered in this step"),
                              Line("", f"input from projection '{q.name}' ({ps.name}): {ps.apply_source}")]
        emit_statements(w, ps.parse_apply(list(m.vars)), ps_rename, update)
        emit_odes(w, ps.odes, ps_rename, ps.name, None, q.name, update)
        emit_odes(w, m.odes, rename, m.name, m.integrator, h.name, update)
        emit_statements(w, m.sim_code, rename, update)
        local = {**{v: v for v in m.vars}, **{ps_state(v): pre + v for v in ps.vars}}
        init = {a.var: a.name for a in spec.arrays if a.owner == h.name and a.role == "state" and a.var in m.vars}
        init.update({ps_state(a.var): a.name for a in spec.arrays
                     if a.owner == q.name and a.role == "state" and a.var in ps.vars})
        return w, update, local, init, rename

    def _forward_arrays(self, h, arrays: dict, T: int, spiking: bool) -> list[ArraySpec]:
        """The arrays of layer ``h``'s forward pass: its states (``arrays``) and input at every
        step, and for a hidden layer its spikes, their lists and what the scan carries."""
        out = [*(_par_array(a, h.name, f"_par_{v}", T * h.size, f"{v} at every step") for v, a in arrays.items()),
               _par_array(f"par_{h.name}_u", h.name, "_par_u", T * h.size, "input delivered at every step")]
        if not spiking:
            return out
        if not self._spikes_listed_only():
            out.append(_par_array(f"par_{h.name}_z", h.name, "_par_z", T * h.size, "spikes at every step"))
        return [*out, *self._sender_arrays(h, T),
                *(_par_array(f"par_{h.name}_{c}", h.name, f"_par_{c}", h.size,
                             f"{c}: carried through the forward scan (spike rule {self.spike.name})")
                  for c in self._carried())]

    def _spikes_listed_only(self) -> bool:
        """Whether the hidden layers' spikes are kept as the lists of their senders alone."""
        return self.spike.binary and self.spikes_as_lists

    def _forward_kernel(self, network, spec, h, q, step, arrays, T, spiking=True, seq=None) -> KernelSpec:
        """The scan of ``h``'s step over all steps, printed as the simulation prints it: the
        postsynaptic model (its apply code and equations, its names prefixed by the projection's),
        the neuron's equations and sim_code, and the threshold test."""
        m, ps, n, pre = h.model, q.postsynaptic, h.size, f"{q.name}_"
        w, update, local, init, rename = self._printed_update(network, spec, h, q)
        listed_only = spiking and self._spikes_listed_only()
        code = [Line(f"const uint32_t T = {T}u, N = {n}u;"),
                *_instances("(double)T * N"),
                Line("for (uint32_t _t = 0; _t < T; _t++) {"),
                Line("for (uint32_t _i = 0; _i < N; _i++) {", "the neurons of one step: contiguous in memory"),
                Line("const size_t _o = ((size_t)_b * T + _t) * N + _i;")]
        for state, name in local.items():
            code.append(Line(f"scalar {name} = _t == 0 ? _{init[state]}[(size_t)_b * N + _i] : "
                             f"_{arrays[state]}[_o - N];", "x_(t-1) (the initial value at t = 0)"))
        code += [*_param_lines(w), *update,
                 *(Line(f"_{arrays[state]}[_o] = {name};") for state, name in local.items())]
        carried = self._carried() if spiking else {}
        if spiking:
            cond = w.expr(m.threshold.xreplace(rename))
            g = step.g.xreplace({symbol(ps_state(v)): symbol(pre + v) for v in ps.vars})
            start = "_t == 0" if seq is None else "_t == 0 && _t0 == 0"  # (a later chunk: the value so far)
            at = next(k for k, line in enumerate(code) if line.code.startswith("const size_t _o = ")) + 1
            code[at:at] = [Line(f"scalar _{c} = {start} ? {init0} : _par_{h.name}_{c}[(size_t)_b * N + _i];",
                              f"{c} (carried through the scan)") for c, init0 in carried.items()]
            code += [Line(f"const scalar _g = {w.expr(g)};", f"threshold distance: {m.threshold_source}"),
                     *self._draw_lines(w, h), Line("scalar _z;"),
                     *self.spike.forward(cond, w.expr),
                     *([Line("_count += _z;", "spikes so far (the rate regulariser)")] if self.reg_rate > 0 else []),
                     Line("(void)_g;"),
                     *(Line(f"_par_{h.name}_{c}[(size_t)_b * N + _i] = _{c};") for c in carried),
                     Line("_zs[_i] = _z;" if listed_only else f"_par_{h.name}_z[_o] = _z;",
                          f"spike rule {self.spike.describe()}")]
        code.append(Line("}"))
        if spiking:  # (a loop of its own: the neuron loop above stays free to be vectorised)
            zt = "_zs.data()" if listed_only else f"_par_{h.name}_z + ((size_t)_b * T + _t) * N"
            code += [Line("{", "the senders of step t, listed once for the next layer's input and gradient"),
                     Line(f"const scalar* const _zt = {zt};"),
                     Line(f"uint32_t* const _list = _par_{h.name}_senders + (size_t)_b * T * N;",
                          "packed: each step's list after the last one's"),
                     Line(f"uint32_t* const _ends = _par_{h.name}_n_senders + (size_t)_b * T;"),
                     Line("const uint32_t _n = _t == 0 ? 0u : _ends[_t - 1];",
                          "(at most t N: room for N more in the list)"),
                     Line("_ends[_t] = _n + sf_list_nonzero(_zt, N, _list + _n);",
                          "a value of 0 sends nothing (any other value, binary or not, is listed)"),
                     Line("}")]
        code += [Line("}"), Line("}")]
        if listed_only:  # one step's spikes, listed and not kept
            at = next(i for i, line in enumerate(code) if line.code.startswith("for (uint32_t _t = 0;"))
            code.insert(at, Line("std::vector<scalar> _zs(N);",
                                 "the spikes of one step (kept as the list of the senders alone: 0 or 1)"))
        code[1:1] = _chunk_lines(seq if carried else None, T)
        return KernelSpec(f"parallel_forward_{h.name}", "parallel_forward", h.name, "custom_update",
                          f"parallel: the states and spikes ({self.spike.name}) of '{h.name}' at every step",
                          w.finish_constants(), [], _indented(code), {"loop": None, "body": [], "once": []},
                          reads=(f"par_{h.name}_u", *init.values(), *(a.array for a in w.param_loads),
                                 *w.param_reads, *_chunk_reads(seq if carried else None)),
                          writes=(*arrays.values(),
                                  *([*([] if listed_only else [f"par_{h.name}_z"]), *_listed(h.name, True)]
                                    if spiking else []),
                                  *(f"par_{h.name}_{c}" for c in carried)))

    def _psi(self, network, model, g: sympy.Expr) -> sympy.Expr:
        """The surrogate dz/dg at the threshold distance ``g`` (the e-prop code's shapes and width)."""
        ctx = ParseContext(model.name, set(model.params) | set(model.derived) | {"dt", "gamma", "scale", "_g"},
                           random_allowed=False)
        scale = default_scale(model)
        scale_expr = parse_expression(scale, ctx, "scale") if isinstance(scale, str) else sympy.Float(scale)
        psi = parse_expression(SURROGATES[self.surrogate], ctx, "surrogate")
        return psi.xreplace({symbol("gamma"): sympy.Float(self.gamma), symbol("scale"): scale_expr, G: g})

    def _rate_lines(self, T, dt, seq=None) -> list[Line]:
        """The rate regulariser in the reverse scan of a hidden layer: dE/dz_t += reg_rate (r - r*) / T,
        and (once per neuron, at t = T-1) its term of the instance's loss. ``seq``: the sequence's
        length when it runs in chunks (``_count`` then the whole sequence's, the steps past its end
        left out)."""
        if self.reg_rate == 0:
            return []
        target = self.reg_target_hz * dt / 1000.0  # spikes per step
        reg = f"(scalar){self.reg_rate!r}"
        steps, inside, last = "(scalar)T", "", "_t + 1 == T"
        if seq is not None:
            steps, inside, last = f"(scalar){seq}u", f"if (_t0 + _t < {seq}u) ", f"_t0 + _t + 1 == {seq}u"
        return [Line(f"const scalar _dr = _count / {steps} - (scalar){target!r};",
                     f"r - r*: mean spikes per step vs {self.reg_target_hz:g} Hz"),
                Line(f"{inside}_dz += {reg} * _dr / {steps};", "dE/dz_t of the rate regulariser"),
                Line(f"if ({last}) _par_loss[_b] += (scalar)0.5 * {reg} * _dr * _dr;",
                     "its term of the loss")]

    @staticmethod
    def _linear_writer(network, spec, h, q, step, derived: bool):
        """A writer in the derivation's names (the postsynaptic parameters unprefixed, the
        integrator's propagator constants), as the adjoint kernel's; ``derived``: with the
        neuron's derived parameters (for its threshold condition)."""
        from ..codegen.generate import KernelWriter

        m = h.model
        w = KernelWriter(network)
        w.add_params(dict(h.params), "", m.name, _param_arrays(spec, h.name, "neuron", h.params))
        rename: dict = {}
        if derived:
            w.add_derived(m, rename, "")
        w.add_params(dict(q.ps_params), "", q.postsynaptic.name, _param_arrays(spec, q.name, "postsynaptic",
                                                                                 q.ps_params))
        for name, e in step.constants:  # the integrator's propagator: constant unless a parameter is per neuron
            if w.is_constant(e):
                w.add_constant(name, e, "the integrator's propagator (as in the forward update)")
            else:
                w.add_element_line(Line(f"const scalar {name} = {w.expr(e)};", "the integrator's propagator"))
        return w, rename

    def _adjoint_kernel(self, network, spec, h, q, step: LinearStep, q_after, T, seq=None,
                        gradient=None, keep_du: bool = True) -> KernelSpec:
        """The reverse scan lam_t = A^T lam_{t+1} + drive_t, du_t = B . lam_t of layer ``h``: driven by
        the readout error (readout) or by dE/dz_t psi_t dg/dx (hidden: dE/dz_t = W^T du_{t+1} of the
        next layer). ``gradient`` = (projection, its presynaptic values' array, gradient array,
        binary): the projection's weight gradient summed in the scan (:meth:`_gradient_lines`);
        without ``keep_du`` (no other kernel reads them) each step's du_t is not kept."""
        m, n, nx = h.model, h.size, len(step.states)
        w, _ = self._linear_writer(network, spec, h, q, step, derived=False)
        lam = [symbol(f"_lam{j}") for j in range(nx)]
        drive = symbol("_drive")
        readout = step.g is None
        e = [int(j == 0) for j in range(nx)] if readout else list(step.dg_dx)
        new_lam = [sum((step.A[i, j] * lam[i] for i in range(nx)), sympy.Integer(0)) + e[j] * drive
                   for j in range(nx)]
        du = sum((step.B[j] * lam[j] for j in range(nx)), sympy.Integer(0))
        reads, writes = [], [f"par_{h.name}_du"] if keep_du else []
        scratch = [f"par_{h.name}_lam{j}" for j in range(nx)]
        writes += scratch
        readout_bias = readout and "bias" in h.params
        # lam_T = 0 (and the bias gradient's sum starts at 0): the scratch zeroed before the scan
        zero = [f"_{a}" for a in scratch] + ([f"_par_{h.name}_grad_bias"] if readout_bias else [])
        code = [Line(f"const uint32_t T = {T}u, N = {n}u;"), *_chunk_lines(seq, T, last=True)]
        if not readout:
            a, n_after = q_after.post, q_after.post.size
            wa = _weight_array(spec, q_after)
            code += [Line(f"std::vector<scalar> _wt((size_t){n_after}u * N);",
                          f"the weights onto '{a.name}' transposed: [post][neuron], contiguous in the neuron"),
                     Line(f"for (uint32_t _i = 0; _i < N; _i++) for (uint32_t _post = 0; _post < {n_after}u; "
                          f"_post++) _wt[(size_t)_post * N + _i] = _{wa}[(size_t)_i * {n_after}u + _post];")]
        code += [*_instances("(double)T * N"),
                 *(Line(f"{'' if seq is None else 'if (_last) '}for (uint32_t _i = 0; _i < N; _i++) "
                        f"{z}[(size_t)_b * N + _i] = 0;",
                        ("lam_T = 0" if seq is None else "lam_T = 0 (else lam of the next chunk's first step)")
                        if k == 0 else "") for k, z in enumerate(zero))]
        if not readout:
            code += [Line("std::vector<scalar> _dzv(N);",
                          f"dE/dz_t = sum_post w du_(t+1) of '{a.name}' (a spike at t arrives at t+1)"),
                     Line("for (uint32_t _t = T; _t-- > 0;) {", "t = T-1 down to 0"),
                     Line("for (uint32_t _i = 0; _i < N; _i++) _dzv[_i] = 0;"),
                     *_next_du_lines(a.name, n_after, seq),
                     Line("const scalar* const _wr = _wt.data() + (size_t)_post * N;"),
                     Line("for (uint32_t _i = 0; _i < N; _i++) _dzv[_i] += _wr[_i] * _d;",
                          "vectorised over the neurons"),
                     Line("}")]
        else:
            code.append(Line("for (uint32_t _t = T; _t-- > 0;) {", "t = T-1 down to 0"))
        code += [*self._reverse_prefetch(h, step, q_after),
                 Line("for (uint32_t _i = 0; _i < N; _i++) {", "the neurons of one step: contiguous in memory"),
                 Line("const size_t _o = ((size_t)_b * T + _t) * N + _i, _n = (size_t)_b * N + _i;"),
                 *(Line(f"const scalar {x.name} = _{a}[_n];", "lam_(t+1)" if j == 0 else "")
                   for j, (x, a) in enumerate(zip(lam, scratch))),
                 *_param_lines(w)]
        bias = readout_bias
        if bias:
            writes.append(f"par_{h.name}_grad_bias")
        if readout:
            code.append(Line("const scalar _drive = _par_err[_o];", "dE/dy_t, y_t = v_t"))
            reads.append("par_err")
        else:
            in_g = [v for v in step.states if symbol(v) in step.g.free_symbols]
            psi_lines, psi = _select_max(w, self._psi(network, m, G))
            reads += [wa, f"par_{a.name}_du", *(f"par_{h.name}_{v}" for v in in_g),
                      *([f"par_{a.name}_du_next"] if seq is not None else [])]
            code += [Line("scalar _dz = _dzv[_i];", "dE/dz_t (summed over the next layer before the scan)"),
                     *(Line(f"const scalar {v} = _par_{h.name}_{v}[_o];") for v in in_g),
                     Line(f"const scalar _g = {w.expr(step.g)};", f"threshold distance: {m.threshold_source}"),
                     *psi_lines,
                     Line(f"const scalar _surrogate = {w.expr(psi)};",
                          f"surrogate dz/dg ({self.surrogate})"),
                     *(Line(f"const scalar _{c} = _par_{h.name}_{c}[_n];", f"{c} after the forward scan")
                       for c in self._carried()),
                     *self._rate_lines(T, network.dt, seq),
                     *(Line(f"scalar _{c} = _t + 1 == T{'' if seq is None else ' && _last'} ? 0 : "
                            f"_par_{h.name}_{c}[_n];",
                            f"{c} (carried through the reverse scan)") for c in self.spike.reverse_carried),
                     *self._draw_lines(w, h),
                     Line("scalar _psi;"), *self.spike.gradient(w.expr),
                     Line("(void)_surrogate;"),
                     *(Line(f"_par_{h.name}_{c}[_n] = _{c};") for c in self.spike.reverse_carried),
                     Line("const scalar _drive = _dz * _psi;", "dE/dg_t")]
            writes += [f"par_{h.name}_{c}" for c in self.spike.reverse_carried]
            reads += [f"par_{h.name}_{c}" for c in self._carried()]
            if self.reg_rate > 0:
                writes.append("par_loss")
        for j, x in enumerate(lam):
            code.append(Line(f"const scalar {x.name}_new = {w.expr(new_lam[j])};",
                             "lam_t = A^T lam_(t+1) + drive_t dg/dx" if j == 0 else ""))
        code += [Line(f"_{a}[_n] = {x.name}_new;") for x, a in zip(lam, scratch)]
        new_syms = {x: symbol(f"{x.name}_new") for x in lam}
        code.append(Line(f"{f'_par_{h.name}_du[_o]' if keep_du else '_dus[_i]'} = {w.expr(du.xreplace(new_syms))};",
                         "du_t = B . lam_t"))
        if bias:
            dc = step.c.diff(symbol("bias"))
            gb = sum((dc[j] * new_syms[lam[j]] for j in range(nx)), sympy.Integer(0))
            code += [Line(f"scalar* const _gbias = _par_{h.name}_grad_bias + _n;",
                          "dE/dbias = sum_t dc/dbias . lam_t (t descending)"),
                     Line(f"*_gbias = *_gbias + {w.expr(gb)};")]
        code.append(Line("}"))
        if gradient is not None:
            g_lines, g_reads, g_writes = self._gradient_lines(*gradient, seq, keep_du)
            pre = gradient[0].pre
            code[1:1] = [Line(f"const uint32_t N_pre = {pre.size}u;", f"the neurons of '{pre.name}'")]
            at = next(i for i, line in enumerate(code) if line.code.startswith("for (uint32_t _t = T;"))
            code[at:at] = g_lines[0]  # the sum's start, before the scan
            if not keep_du:
                code.insert(at, Line("std::vector<scalar> _dus(N);", "du_t of one step (no other kernel reads it)"))
            code += g_lines[1]
            reads += g_reads
            writes += g_writes
        code += [Line("}"), Line("}")]
        return KernelSpec(f"parallel_adjoint_{h.name}", "parallel_adjoint", h.name, "custom_update",
                          f"parallel: the reverse (adjoint) scan of '{h.name}'", w.finish_constants(), [],
                          _indented(code),
                          {"loop": None, "body": [], "once": []},
                          reads=(*reads, *(a.array for a in w.param_loads), *w.param_reads, *_chunk_reads(seq)),
                          writes=tuple(writes))

    @staticmethod
    def _reverse_prefetch(h, step: LinearStep, q_after) -> list[Line]:
        """The rows a reverse scan reads at step t, asked for ``PREFETCH_STEPS`` steps ahead (it
        reads them backwards): the readout's errors; a hidden layer's states in its threshold
        distance and the next layer's du_(t+1)."""
        d, why = PREFETCH_STEPS, "the rows of an earlier step (the scan runs backwards)"
        row = f"((size_t)_b * T + _t - {d}u) * N"
        if step.g is None:
            return [_prefetch("par_err", row, "N", f"_t >= {d}u", why)]
        in_g = [v for v in step.states if symbol(v) in step.g.free_symbols]
        n_after = q_after.post.size
        return [*(_prefetch(f"par_{h.name}_{v}", row, "N", f"_t >= {d}u", why) for v in in_g),
                _prefetch(f"par_{q_after.post.name}_du", f"((size_t)_b * T + _t + 1 - {d}u) * {n_after}u",
                          f"{n_after}u", f"_t + 1 >= {d}u", "")]

    @staticmethod
    def _gradient_lines(q, pre_array, grad, binary: bool, seq: int | None, keep_du: bool = True) -> tuple:
        """The weight gradient dW[pre][post] = sum_t du_t[post] s_(t-1)[pre] of ``q`` inside its
        layer's reverse scan, the step's du_t just computed: ([the sum's start], [the terms of step
        t], reads, writes). Only the steps where ``pre`` sent add to its row (the list of its senders);
        each element sums in the scan's order, t descending (in chunks: the last chunk first, each
        chunk's step 0 with the previous chunk's last values, so the same order)."""
        du = f"_par_{q.post.name}_du + ((size_t)_b * T + _t) * N" if keep_du else "_dus.data()"
        zero = "for (size_t _k = 0; _k < (size_t)N_pre * N; _k++) _gw[_k] = 0;"
        start = [Line(f"scalar* const _gw = _{grad} + (size_t)_b * N_pre * N;",
                      f"dW of '{q.name}' = sum_t du_t s_(t-1)^T, t descending"),
                 Line(zero if seq is None else f"if (_last) {zero}",
                      "the sum starts at 0" if seq is None else "the sum starts at 0 at the sequence's last chunk")]
        terms = [Line("{", "dW += du_t s_(t-1)^T: the senders of step t-1"),
                 Line(f"const scalar* const _du = {du};", "du_t")]
        if seq is not None:
            terms += [Line("if (_t == 0) {", "step 0: the values of the previous chunk's last step"),
                      Line("if (_t0 > 0) for (uint32_t _pre = 0; _pre < N_pre; _pre++) {"),
                      Line(f"const scalar _value = _par_{q.pre.name}_last[(size_t)_b * N_pre + _pre];"),
                      Line("if (_value == 0) continue;", "a value of 0 sends nothing"),
                      Line("scalar* const _row = _gw + (size_t)_pre * N;"),
                      Line("for (uint32_t _post = 0; _post < N; _post++) _row[_post] += _du[_post] * _value;"),
                      Line("}"),
                      Line("} else {")]
        else:
            terms.append(Line("if (_t > 0) {", "(nothing is sent before step 0)"))
        terms += prefetch_inputs(pre_array, q.pre, -PREFETCH_STEPS)
        terms += [*([] if binary else [Line(f"const scalar* const _s = _{pre_array} + {sent_at(pre_array, q.pre)};",
                                            "the values sent in step t-1")]),
                  *_senders(q.pre.name),
                  Line("for (uint32_t _k = 0; _k < _n; _k++) {"),
                  Line("const uint32_t _pre = _list[_k];"),
                  _value(binary),
                  Line("scalar* const _row = _gw + (size_t)_pre * N;"),
                  Line("for (uint32_t _post = 0; _post < N; _post++) _row[_post] += _du[_post] * _value;"),
                  Line("}"), Line("}"), Line("}")]
        reads = [*([] if binary else [pre_array]), *_listed(q.pre.name, True),
                 *([f"par_{q.pre.name}_last"] if seq is not None else [])]
        return (start, terms), reads, [grad]

    def _error_kernel(self, spec, out, T) -> KernelSpec:
        """The loss object's code (as e-prop's error kernel runs it) at every step: ``err_t = dE/dy_t``
        and each instance's loss, from the readout values ``y_t = v_t``."""
        K = out.size
        loss_arrays = self.loss.arrays(K, T)
        spec.arrays += [
            ArraySpec("eprop_mask", "eprop", "mask", "scalar", T, False, "eprop_data",
                      comment="weight of each step in the loss"),
            _par_array("par_loss", out.name, "_par_loss", 1, "the loss of each batch instance"),
            *loss_arrays]
        code = [Line(f"const uint32_t T = {T}u, K = {K}u;"),
                *_instances("(double)T * K"),
                Line("scalar _loss = 0;"),
                Line("for (uint32_t _t = 0; _t < T; _t++) {"),
                Line("const uint64_t _step = _t;", "the step whose values the loss code reads"),
                Line(f"const scalar* const _y = _par_{out.name}_v + ((size_t)_b * T + _t) * K;", "y_t = v_t"),
                Line("scalar* const _err = _par_err + ((size_t)_b * T + _t) * K;"),
                Line("const scalar _mask = _eprop_mask[_t];"),
                *([Line("if (_mask == 0) {", "outside the loss's window: no error, no loss"),
                   Line("for (uint32_t _k = 0; _k < K; _k++) _err[_k] = 0;"),
                   Line("continue;"),
                   Line("}")] if self.loss.masked else []),
                Line("(void)_step;"),
                Line("{"), *self.loss.code(), Line("}"),
                Line("}"),
                Line("_par_loss[_b] = _loss;"),
                Line("}")]
        return KernelSpec(f"parallel_error_{out.name}", "parallel_error", out.name, "custom_update",
                          f"parallel: the readout error and loss ({self.loss.name}) of '{out.name}' at every step",
                          [], [], _indented(code), {"loop": None, "body": [], "once": []},
                          reads=(f"par_{out.name}_v", "eprop_mask", *(a.name for a in loss_arrays)),
                          writes=("par_err", "par_loss"))


def spike_values(c, h, first: int = 0, stop: int | None = None) -> np.ndarray:
    """The spikes of hidden layer ``h`` of ``c`` at the kernels' steps ``first`` to ``stop`` (default:
    all) of the last pass, (batch, steps, N): the array the forward scan wrote, or (a binary rule's
    spikes kept as lists alone) ones where the lists of the senders put them."""
    B, T, name = c.network.batch_size, c.chunk, f"par_{h.name}_z"
    stop = T if stop is None else stop
    read = getattr(c.backend, "peek", c.backend.pull)
    if any(a.name == name for a in c.spec.arrays):
        return read(name).reshape(B, T, h.size)[:, first:stop]
    z = np.zeros((B, stop - first, h.size), dtype=np.float32 if c.spec.precision == "float" else np.float64)
    lists = read(f"par_{h.name}_senders").reshape(B, T * h.size)
    ends = read(f"par_{h.name}_n_senders").reshape(B, T).astype(np.int64)
    for b in range(B):
        start = ends[b, first - 1] if first else 0
        steps = np.repeat(np.arange(stop - first), np.diff(ends[b, first:stop], prepend=start))
        z[b, steps, lists[b, start: ends[b, stop - 1]]] = 1
    return z


def spike_counts(c, h, stop: int | None = None) -> np.ndarray:
    """Each instance's spikes per neuron of hidden layer ``h`` over the kernels' steps before
    ``stop`` (default: all), (B, N): for a binary spike rule counted from the lists of the senders
    (only their used part is read), else the sum of the spike values."""
    B, T = c.network.batch_size, c.chunk
    stop = T if stop is None else stop
    if not c.compiler.spike.binary or not any(a.name == f"par_{h.name}_senders" for a in c.spec.arrays):
        return spike_values(c, h, 0, stop).sum(axis=1)  # (the device kernels keep no lists)
    read = getattr(c.backend, "peek", c.backend.pull)  # (no copy where the backend can lend its array)
    lists = read(f"par_{h.name}_senders").reshape(B, T * h.size)
    ends = read(f"par_{h.name}_n_senders").reshape(B, T)[:, stop - 1]
    dtype = np.float32 if c.spec.precision == "float" else np.float64  # (as the spikes' sum)
    return np.stack([np.bincount(lists[b, :ends[b]], minlength=h.size) for b in range(B)]).astype(dtype)


class CompiledParallel:
    """A network compiled by :class:`ParallelCompiler`: a simulation whose custom updates run the
    parallel kernels (the first ``n_forward`` the forward pass, the others the backward pass)."""

    def __init__(self, compiler, network, spec, inputs, layers, n_steps, counts, states, backend="cpu",
                 chunk: int | None = None, **backend_options):
        from ..runtime.simulation import Simulation

        self.network, self.spec, self.inputs, self.layers, self.n_steps = network, spec, inputs, layers, n_steps
        self.compiler = compiler
        self.n_forward, self.n_backward = counts  # custom updates: [0, n_forward) forward, then backward, optimiser
        self.states = states  # per layer, its state variables
        self.steps_taken = 0
        # the kernels' steps: the whole sequence, or chunks of it (see ChunkedRun)
        self.chunk = n_steps if chunk is None else int(chunk)
        self.chunked = self.chunk < n_steps
        self.initial_arrays: dict = {}  # per layer, state -> the simulation's array of its initial value
        self._chunks = None  # the last chunked pass (ChunkedRun)
        self.draws = 0  # forward passes so far: the spike rule's random numbers of pass k use key steps k T + t
        self._initial_state = False  # whether the simulation's state is its initial state (see forward)
        self.weight_arrays = [u.name[len("optimiser_"):] for u in spec.custom_updates[self.n_backward:]]
        self.simulation = Simulation(network, backend=backend, spec=spec, on_nonfinite="ignore", progress=False,
                                     **backend_options)
        self.backend = self.simulation.backend

    def memory(self) -> dict[str, int]:
        """Bytes of the values the method keeps for every step (O(T B N)), per population or
        projection, at this network's batch size (the memory check counts them before allocating).
        Run in chunks, the arrays hold one chunk's steps (O(C B N)), and ``"chunk boundaries"``
        counts what the host keeps besides: each chunk's boundary state and the readout's values
        of every step (O(T/C B N + T B K))."""
        from ..runtime.memory import array_nbytes

        out: dict[str, int] = {}
        for a in self.spec.arrays:
            if a.role == "parallel":
                out[a.owner] = out.get(a.owner, 0) + array_nbytes(a, self.spec, self.network.batch_size)
        if self.chunked:
            out["chunk boundaries"] = ChunkedRun.host_bytes(self)
        return out

    def _pull_steps(self, name, n):
        T, B = self.chunk, self.network.batch_size
        return self.backend.pull(name).reshape(B, T, n).transpose(1, 0, 2)

    def forward(self, x, values: bool = True, draw: int | None = None, *, after=None) -> dict:
        """Inputs ``x`` (steps, batch, inputs) -> per layer (hidden and readout) {state: (steps,
        batch, N)} with the input ``u`` and, for the hidden layers, the spikes ``z`` (the states of a
        postsynaptic model are named ``_ps_<variable>``); without ``values``, the readout's ``v`` only.

        ``draw``: which random numbers a stochastic spike rule uses (key steps ``draw * T + t`` of
        the Philox streams); default: one more than the last pass's, starting at 0. ``after(k)``:
        run in chunks, called once chunk ``k`` ran forward (its values in the arrays)."""
        T, B = self.n_steps, self.network.batch_size
        x = np.asarray(x)
        if x.shape != (T, B, self.inputs.size):
            raise NetworkError(f"inputs: expected shape {(T, B, self.inputs.size)}, got {x.shape}")
        if not self._initial_state:
            # the initial state x_-1 (the reset reloads the initial weights: keep them). Once is
            # enough: the kernels never write the simulation's state arrays, and write every
            # value they keep for each step before reading it.
            kept = {name: self.backend.pull(name) for name in self.weight_arrays}
            self.simulation.reset()
            for name, value in kept.items():
                self.backend.push(name, value)
            self._initial_state = True
            self._x0 = {a: self.backend.pull(a) for arrays in self.initial_arrays.values() for a in arrays.values()}
        if self.chunked:  # (its chunks overwrite the initial state: pushed back at the first)
            self._chunks = ChunkedRun(self, x, self._next_draw(draw))
            return self._chunks.forward(values, after)
        self._push_inputs(x)
        draw = self._next_draw(draw)
        self.backend.step = draw * T  # the kernels' _step: the key step of t = 0
        for index in range(self.n_forward):
            self.backend.custom_update(index)
        if not values:  # the readout's values only
            out_pop = self.layers[-1]
            return {out_pop.name: {"v": self._pull_steps(f"par_{out_pop.name}_v", out_pop.size)}}
        out = {}
        for h in self.layers:
            out[h.name] = {v: self._pull_steps(f"par_{h.name}_{v}", h.size) for v in [*self.states[h.name], "u"]}
            if h is not self.layers[-1]:
                out[h.name]["z"] = spike_values(self, h).transpose(1, 0, 2).copy()
        return out

    def _next_draw(self, draw) -> int:
        """The pass's draw (default: one more than the last pass's), counted."""
        draw = self.draws if draw is None else draw
        if isinstance(draw, bool) or not isinstance(draw, (int, np.integer)) or draw < 0:
            raise NetworkError(f"draw must be an integer >= 0, got {draw!r}")
        self.draws = int(draw) + 1
        return int(draw)

    def spike_values(self, h, first: int = 0, stop: int | None = None) -> np.ndarray:
        """Hidden layer ``h``'s spikes at the steps ``first`` to ``stop`` of the last pass's kernels
        (batch, steps, N)."""
        return spike_values(self, h, first, stop)

    def spike_counts_of(self, h, stop: int | None = None) -> np.ndarray:
        """Hidden layer ``h``'s spikes per instance and neuron over the last pass's kernels' steps
        before ``stop`` (batch, N)."""
        return spike_counts(self, h, stop)

    def spike_counts(self) -> list[np.ndarray]:
        """Per hidden layer, each instance's spikes of each neuron (batch, N) over the last pass."""
        if self.chunked:
            return list(self._chunks.counts.values())
        return [spike_counts(self, h) for h in self.layers[:-1]]

    def evaluate(self, x, mask, labels=None, targets=None, draw: int | None = None) -> dict:
        """The forward pass and each instance's loss (no backward pass): ``y`` and ``loss``."""
        T, B, readout = self.n_steps, self.network.batch_size, self.layers[-1]
        mask = self._checked_mask(mask)
        if self.chunked:
            return ChunkedRun.evaluate(self, x, mask, labels, targets, draw)
        self.compiler.loss.feed(self.backend, B, readout.size, T, labels, targets)
        self.backend.push("eprop_mask", mask)
        y = self.forward(x, values=False, draw=draw)[readout.name]["v"]
        if self.compiler.readout.aggregated:
            loss = self.compiler.readout.loss_and_error(self.compiler.loss, y, mask, labels, targets)[0]
        else:
            self.backend.custom_update(self.n_forward)  # the error kernel: the first of the backward pass
            loss = self.backend.pull("par_loss").reshape(B)
        return {"y": y, "loss": np.asarray(loss)}

    def _checked_mask(self, mask) -> np.ndarray:
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != (self.n_steps,) or not np.all(np.isfinite(mask)):
            raise NetworkError(f"mask must be {self.n_steps} finite numbers, got shape {mask.shape}")
        return mask

    def _push_inputs(self, x):
        """``x`` (steps, batch, inputs) into the kernels' array, which has the same layout: one copy,
        converted to the network's precision as it goes (straight into the backend's array where
        the backend lends it)."""
        push_steps(self.backend, input_array(self.inputs), x)

    def gradients(self, x, mask, labels=None, targets=None, values: bool = False, draw: int | None = None) -> dict:
        """One batch forward and backward, the loss over the window ``mask`` (steps,) against
        ``labels`` (batch,) or ``targets`` (steps, batch, readout): ``y`` (the readout's v), the
        per-instance ``loss`` and gradients {projection: (batch, pre, post), readout.bias: (batch,
        K)}, and under ``forward`` the readout's values (with ``values``, those of every layer, as
        :meth:`forward` gives them)."""
        T, B = self.n_steps, self.network.batch_size
        readout = self.layers[-1]
        mask = self._checked_mask(mask)
        if self.chunked:
            return ChunkedRun.gradients(self, x, mask, labels, targets, values, draw)
        self.compiler.loss.feed(self.backend, B, readout.size, T, labels, targets)
        self.backend.push("eprop_mask", mask)
        out = self.forward(x, values, draw)
        y = out[readout.name]["v"]
        first = self.n_forward if not self.compiler.readout.aggregated else self._aggregated_error(y, mask, labels,
                                                                                                   targets)
        for index in range(first, self.n_backward):
            self.backend.custom_update(index)
        return {"forward": out, "y": y, "loss": self.backend.pull("par_loss").reshape(B), "grads": self._gradients()}

    def _gradients(self) -> dict:
        """The per-instance gradients the backward pass left: {projection: (batch, pre, post),
        readout.bias: (batch, K)}."""
        B, readout = self.network.batch_size, self.layers[-1]
        grads = {}
        for q in self.network.projections.values():
            if q.post in self.layers:
                grads[q.name] = self.backend.pull(f"{q.name}_par_grad").reshape(B, q.pre.size, q.post.size)
        if "bias" in readout.params:
            grads[f"{readout.name}.bias"] = self.backend.pull(f"par_{readout.name}_grad_bias").reshape(B, -1)
        return grads

    def apply_gradients(self, *, mean: bool = False, clamp: tuple | None = None, lr: float | None = None):
        """One optimiser step on every projection's weights from the last :meth:`gradients`, summed
        over the batch (or averaged: ``mean``); ``clamp`` = (lo, hi) bounds the weights; ``lr``
        replaces the optimiser's learning rate for this step. (The readout bias is not trained yet.)"""
        self.steps_taken += 1
        for index in range(self.n_backward, len(self.spec.custom_updates)):
            hyper = self.compiler.optimiser.hyper(self.steps_taken, self.network.batch_size, mean, clamp)
            if lr is not None:
                hyper[0] = lr
            self.backend.push("eprop_optimiser", hyper)
            self.backend.custom_update(index)

    def _aggregated_error(self, y, mask, labels, targets) -> int:
        """For a readout that aggregates over the window: the loss of each instance and the error
        of every step (``err_t = dLoss/doutput doutput/dy_t``, the readout object's host code)
        written in place of the error kernel's; the index of the first backward kernel after it."""
        B = self.network.batch_size
        loss, err, _ = self.compiler.readout.loss_and_error(self.compiler.loss, y, mask, labels, targets)
        self.backend.push("par_err", np.ascontiguousarray(err.transpose(1, 0, 2)).reshape(B, -1))
        self.backend.push("par_loss", np.asarray(loss, dtype=np.float64).reshape(B, 1))
        return self.n_forward + 1  # the error kernel comes first in the backward pass

    def close(self):
        self.simulation.close()
