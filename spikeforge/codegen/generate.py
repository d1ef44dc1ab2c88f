"""Network → kernel specs (the IR every backend renders).

For each population one *neuron update* kernel (postsynaptic inputs, current sources,
integration, threshold, reset, traces); for each projection a *presynaptic update*
kernel (spike propagation and learning on presynaptic spikes) and, where the synapse
learns on postsynaptic spikes, a *postsynaptic learning* kernel; for each variable
shared across the batch but written per instance, a *batch reduction* kernel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import sympy

from .. import rng
from ..errors import ModelError, NetworkError
from ..models.expressions import ODE, Statement, rand_normal, rand_uniform, symbol
from ..models.neuron import INPUT_NAME, SpikeSourceArrayModel
from ..models.synapse import DELIVER_NAME, IN_SYN_NAME, neuron_ref
from ..models.variables import Constant, is_generated
from ..timed import ROW_TOLERANCE_STEPS
from .cprint import CPrinter, Hoister, literal
from .integrate import integrate
from .ir import Access, ArraySpec, KernelSpec, Line, NetworkSpec, param_array_name

log = logging.getLogger("spikeforge.codegen")

MAX_OWNER_ID = 0x7FFF


def stream_id(owner_id: int, call_site: int) -> int:
    return (owner_id << 16) | call_site


def init_stream_id(owner_id: int, var_index: int) -> int:
    return 0x80000000 | (owner_id << 16) | var_index


INDEX16_MAX_SIZE = 1 << 16  # populations this small have their neuron indices stored in 16 bits


class KernelWriter:
    """Collects constants, hoisted invariants and code lines for one kernel.

    Public for compilers that append kernels of their own to a :class:`NetworkSpec` (the
    training compiler): ``add_params`` and ``add_derived`` declare a model's parameters as
    constants (or per-element loads), ``expr`` prints a sympy expression with its
    loop-invariant parts hoisted, and ``finish_constants`` returns the constant lines."""

    def __init__(self, net, owner_id_for_random: int | None = None):
        self.precision = net.precision
        self.constants: list[Line] = []
        self.constant_names: set[str] = {"dt"}
        self.hoister = Hoister(self.constant_names)
        self.code: list[Line] = []
        self.on_spike: list[Line] = []
        self.random_owner = owner_id_for_random
        self.param_loads: list[Access] = []  # parameters read per element or per batch instance
        self.param_reads: list[str] = []  # arrays of dynamic parameters (read once per launch)
        self.element_lines: list[Line] = []  # derived values computed per element (not constants)

    # -- constants -------------------------------------------------------------------
    def add_params(self, params: dict[str, float], prefix: str, model_name: str, arrays: dict | None = None,
                   index: str = "neuron"):
        """Parameters as kernel constants: a number compiled in, or, for those in ``arrays``,
        read at run time: a dynamic one (one value) once per launch, among the constants; one
        given per element (``index``: ``neuron`` or ``syn``) or per batch instance as a local
        loaded with the element's variables (then it and whatever uses it are not constants)."""
        arrays = arrays or {}
        for name, value in params.items():
            c = prefix + name
            a = arrays.get(name)
            if a is None:
                self.constants.append(Line(f"const scalar {c} = {literal(value, self.precision)};",
                                           f"parameter {name} of {model_name}"))
                self.constant_names.add(c)
            elif a.size == 1 and not a.batched:
                self.constants.append(Line(f"const scalar {c} = _{a.name}[0];",
                                           f"parameter {name} of {model_name} (dynamic: set between runs)"))
                self.constant_names.add(c)
                self.param_reads.append(a.name)
            else:
                self.param_loads.append(Access(c, a.name, index if a.size > 1 else "shared", a.batched))
        self.hoister.invariant = {symbol(n) for n in self.constant_names}

    def add_derived(self, model, rename: dict, prefix: str, skip=()):
        for name, expr in model.derived.items():
            if name in skip:
                continue
            c = prefix + name
            e = expr.xreplace(rename)
            comment = f"derived: {name} = {model.derived_source[name]}"
            if self.is_constant(e):
                self.constants.append(Line(f"const scalar {c} = {self.printer().doprint(e)};", comment))
                self.constant_names.add(c)
            else:  # uses a parameter given per element or per batch instance
                self.add_element_line(Line(f"const scalar {c} = {self.expr(e)};", comment + " (per element)"))
            rename[symbol(name)] = symbol(c)
        self.hoister.invariant = {symbol(n) for n in self.constant_names}

    def add_element_line(self, line: Line):
        """A value computed per element from per-element parameters: in the update, and again
        where code runs apart from it (the CPU's reset pass)."""
        self.code.append(line)
        self.element_lines.append(line)

    def is_constant(self, e: sympy.Basic) -> bool:
        """Whether ``e`` is the same for every element and step (parameters, dt, constants)."""
        return not e.atoms(rand_uniform, rand_normal) and e.free_symbols <= self.hoister.invariant

    def add_constant(self, name: str, e: sympy.Basic, comment: str):
        self.constants.append(Line(f"const scalar {name} = {self.printer().doprint(e)};", comment))
        self.constant_names.add(name)
        self.hoister.invariant = {symbol(n) for n in self.constant_names}

    # -- printing ----------------------------------------------------------------------
    def printer(self, random_owner: int | None = None) -> CPrinter:
        owner = random_owner if random_owner is not None else self.random_owner
        suffix = "f" if self.precision == "float" else "d"

        def random_call(kind, site):
            if owner is None:
                raise ValueError("no random numbers here")
            stream = f"0x{stream_id(owner, site):08x}u"
            return f"sf_{kind}_{suffix}(_seed, _i, _b + _batch_offset, (uint32_t)_step, {stream})"

        return CPrinter(self.precision, random_call)

    def expr(self, e: sympy.Basic, random_owner=None) -> str:
        return self.printer(random_owner).doprint(self.hoister(e))

    def finish_constants(self) -> list[Line]:
        lines = list(self.constants)
        for name, e in self.hoister.definitions():
            lines.append(Line(f"const scalar {name} = {self.printer().doprint(e)};", "loop invariant"))
        return lines


_KernelWriter = KernelWriter  # the name the generator's own code uses


@dataclass
class HookLine:
    """One line a :class:`NeuronHook` adds: ``target = value;`` where ``value`` is a sympy
    expression of the model's names (printed by the kernel's writer, so that it shares the
    kernel's constants and hoisted invariants) or C text used as it is."""

    target: str
    value: object
    comment: str = ""


@dataclass
class NeuronHook:
    """Extra code a compiler adds to the neuron update of one population, without copying
    the generator: ``arrays`` it adds to the spec, ``loads`` (locals loaded from and stored to
    them with the neuron's variables), ``before`` lines at the start of the update (before
    any input is read) and ``after_threshold`` lines right after the threshold test
    (``_spike`` holds its outcome; the variables hold their values before the reset).
    ``writes`` names arrays the lines index themselves (``_<array>[...]``, e.g. one with
    delay slots), so that the kernel binds them."""

    arrays: list[ArraySpec] = field(default_factory=list)
    loads: list[Access] = field(default_factory=list)
    before: list[HookLine] = field(default_factory=list)
    after_threshold: list[HookLine] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


def _hook_lines(w: KernelWriter, lines: list[HookLine], rename: dict) -> list[Line]:
    out = []
    for h in lines:
        value = h.value if isinstance(h.value, str) else w.expr(sympy.sympify(h.value).xreplace(rename))
        out.append(Line(f"{h.target} = {value};", h.comment))
    return out


def rename_map(names, prefix) -> dict:
    return {symbol(n): symbol(prefix + n) for n in names}


def _local_decl(dtype: str) -> str:
    return {"scalar": "scalar", "int": "int32_t", "int32": "int32_t", "uint32": "uint32_t"}[dtype]


def emit_odes(w: _KernelWriter, odes: list[ODE], rename: dict, model_name: str, method, where: str,
               lines: list[Line], hold_if_refractory=False) -> str:
    """Integrate ``odes`` and append the update lines; returns the method used."""
    if not odes:
        return "none"
    integ = integrate(odes, model_name, method)

    def emit(integration, suffix=""):
        """Lines (or constants) for the temporaries; returns their C names."""
        names = {}
        for tmp, e in integration.assignments:
            ctmp = _temp_name(tmp, rename) + suffix
            e = e.xreplace({**rename, **names})
            if w.is_constant(e):  # e.g. the exact integrator's propagator: computed once, before the loop
                w.add_constant(ctmp, e, integration.notes.get(tmp, ""))
            else:
                lines.append(Line(f"const scalar {ctmp} = {w.expr(e)};", integration.notes.get(tmp, "")))
            names[symbol(tmp)] = symbol(ctmp)
        return names

    renamed_new = emit(integ)
    held = _held_updates(odes, integ, model_name) if hold_if_refractory else None
    if held is not None:
        lines.append(Line("", "while refractory, the held variables stand still: the others follow their "
                              "own equations with those values"))
        held_names = emit(held, "_held")
    for o in odes:
        var = rename.get(symbol(o.var), symbol(o.var)).name
        tmp = renamed_new[symbol(integ.new[o.var])].name
        if hold_if_refractory and o.unless_refractory:
            lines.append(Line(f"{var} = _refractory ? {var} : {tmp};", f"{o.source}  [{integ.method}]"))
        elif held is not None and o.var in held.new:
            held_tmp = held_names[symbol(held.new[o.var])].name
            lines.append(Line(f"{var} = _refractory ? {held_tmp} : {tmp};", f"{o.source}  [{integ.method}]"))
        else:
            lines.append(Line(f"{var} = {tmp};", f"{o.source}  [{integ.method}]"))
    return integ.method


def _held_updates(odes: list[ODE], integ, model_name: str):
    """The update of the variables not flagged ``(unless refractory)`` while the flagged ones are held,
    where it differs from their update in the whole system (an integrator that couples them, such as
    the exact one of a pair, moves them along with the held ones); None where it does not differ."""
    flagged = [o for o in odes if o.unless_refractory]
    free = [o for o in odes if not o.unless_refractory]
    if not flagged or not free:
        return None
    held = integrate(free, model_name, integ.method)  # the flagged variables are constants here
    whole, alone = integ.update_map(), held.update_map()
    if all(whole[o.var] == alone[o.var] for o in free):
        return None
    return held


def _temp_name(tmp: str, rename: dict) -> str:
    # _v_new of a prefixed model becomes _<prefix>v_new
    for old, new in rename.items():
        if tmp == f"_{old.name}_new":
            return f"_{new.name}_new"
        if tmp.endswith(f"_{old.name}") and tmp.startswith("_k"):
            return tmp[: -len(old.name)] + new.name
    # temporaries of the exact integrator, _<first variable>_<quantity>, e.g. _v_k12
    for old, new in rename.items():
        if tmp.startswith(f"_{old.name}_"):
            return f"_{new.name}_{tmp[len(old.name) + 2:]}"
    return tmp


class _NamedSubexpressions:
    """The subexpressions a kernel prints as ``const scalar`` lines, and which of them still hold:
    a statement that writes a variable one reads makes it stale, and later uses get its
    definition inline (the value at the point of use, as if the user had written it there)."""

    def __init__(self, model):
        self.sub = model.subexpressions
        self.printed: set[str] = set()
        self.stale: set[str] = set()

    def print_lines(self, w: _KernelWriter, exprs, rename: dict, lines: list[Line], prefix: str = ""):
        """One line per subexpression ``exprs`` need (with those they need), in dependency order."""
        for n in self.sub.needed(exprs):
            if n in self.printed:
                continue
            c = prefix + n
            e = self.use(self.sub.as_written[n]).xreplace(rename)
            lines.append(Line(f"const scalar {c} = {w.expr(e)};", f"subexpression {n} = {self.sub.source[n]}"))
            rename[symbol(n)] = symbol(c)
            self.printed.add(n)

    def use(self, e):
        """``e`` (as written) with the subexpressions not printed, or stale, inlined."""
        if not self.sub:
            return e
        return self.sub.inline(e, set(self.sub) - (self.printed - self.stale))

    def wrote(self, target: str):
        self.stale |= {n for n in self.printed if target in self.sub.reads(n)}


def _subexpression_comments(model, exprs, skip, lines: list[Line]):
    """For the subexpressions only the ODEs use: a comment line each (the integrator's update
    has them expanded, so that it sees the whole equations)."""
    for n in model.subexpressions.needed(exprs):
        if n not in skip:
            lines.append(Line("", f"subexpression {n} = {model.subexpressions.source[n]} "
                                  "(expanded into the integrator's update below)"))


def emit_statements(w: _KernelWriter, stmts: list[Statement], rename: dict, lines: list[Line], random_owner=None,
                     named: _NamedSubexpressions | None = None):
    for st in stmts:
        target = rename.get(symbol(st.target), symbol(st.target)).name
        value = (named.use(st.value) if named is not None else st.value).xreplace(rename)
        if named is not None:
            named.wrote(st.target)
        if st.op in ("+=", "-=") and (value - symbol(target)).free_symbols.isdisjoint({symbol(target)}):
            rhs = w.expr(sympy.expand(value - symbol(target)) if st.op == "+=" else
                         sympy.expand(symbol(target) - value), random_owner)
            lines.append(Line(f"{target} {st.op} {rhs};", st.source))
        else:
            lines.append(Line(f"{target} = {w.expr(value, random_owner)};", st.source))


def _statement_symbols(stmts) -> set:
    out = set()
    for st in stmts:
        out |= st.value.free_symbols
    return out


def _poisson_input_line(w: _KernelWriter, pi, dt: float, held: bool = False) -> Line:
    """``target += k * weight``, k ~ Poisson(n * rate * dt) from the input's own Philox streams;
    the sampler's constants are computed here once and printed as exact literals. ``held``: the
    target is flagged (unless refractory), so it is read-only while the neuron is refractory."""
    lam = pi.lam(dt)
    const = f"_poisson_{pi.name}"
    w.constants.append(Line(
        f"const sf_poisson_params {const} = {rng.poisson_setup(lam).c_initializer()};",
        f"poisson input '{pi.name}': lambda = n * rate * dt = {pi.n} * {pi.rate_hz:g} Hz * {dt:g} ms = {lam!r}"))
    # the method for this lambda, called directly: inversion has no branch, so the loop vectorises
    method = "inversion" if lam < rng.POISSON_INVERSION_MAX else "ptrs"
    draw = f"sf_poisson_{method}(_seed, _i, _b + _batch_offset, (uint32_t)_step, {pi.id}u, {const})"
    increment = f"(scalar){draw} * {literal(pi.weight, w.precision)}"
    comment = (f"poisson input '{pi.name}', after the threshold test and before the reset: "
               f"{pi.target} += k * {pi.weight!r}, k ~ Poisson(lambda) by {method}")
    if held:
        return Line(f"{pi.target} += _refractory ? (scalar)0 : {increment};",
                    comment + f"; none while refractory ({pi.target} is flagged unless refractory)")
    return Line(f"{pi.target} += {increment};", comment)


def _read_params(w: _KernelWriter, reads: list[str]) -> list[str]:
    """The arrays of dynamic parameters are read among the kernel's constants: ``reads`` with them."""
    return reads + sorted(set(w.param_reads))


def _written(stmts, odes=()) -> set[str]:
    return {s.target for s in stmts} | {o.var for o in odes}


@dataclass
class _NeuronContext:
    """What the emitters of one neuron update share: the population, its model, the kernel's
    writer (constants, code, the code run on a spike), the loads, and the names in scope."""

    p: object
    m: object
    w: KernelWriter
    arrays: dict
    timed: dict  # parameters that follow a timed array -> (values, timing) arrays
    timed_loads: list[Line]
    hook: NeuronHook | None
    incoming: list = field(default_factory=list)
    outgoing: list = field(default_factory=list)
    poisson_inputs: list = field(default_factory=list)
    loads: list[Access] = field(default_factory=list)
    rename: dict = field(default_factory=dict)  # model names -> C names (derived values, subexpressions)
    ps_written: set[str] = field(default_factory=set)  # variables the postsynaptic models write
    drained: list[str] = field(default_factory=list)  # dendritic delay buffers emptied (per-synapse delays)
    # the template writes the refractory countdown and the threshold test between these parts of the code
    update_start: int = 0  # code[:update_start]: inputs; code[update_start:threshold_at]: the model's update
    threshold_at: int = 0  # code[threshold_at:]: after the threshold test (hook lines, Poisson inputs)
    threshold: dict | None = None  # {"condition": C text, "source": as written}
    reset: list[Line] = field(default_factory=list)  # on a spike, before the refractory period starts

    @property
    def code(self) -> list[Line]:
        return self.w.code

    @property
    def on_spike(self) -> list[Line]:
        return self.w.on_spike

    @property
    def is_ssa(self) -> bool:
        return isinstance(self.m, SpikeSourceArrayModel)

    @property
    def held_by_flag(self) -> set[str]:
        """Variables flagged (unless refractory): read-only while refractory."""
        return {o.var for o in self.m.odes if o.unless_refractory} if self.m.refractory is not None else set()


class Generator:
    def __init__(self, network, hooks: dict[str, NeuronHook] | None = None):
        self.net = network
        self.hooks = dict(hooks or {})
        self.arrays: list[ArraySpec] = []
        self.kernels: list[KernelSpec] = []
        self.integrators: dict[str, str] = {}
        self._names: set[str] = set()

    # -- arrays ------------------------------------------------------------------------
    def add_array(self, a: ArraySpec) -> ArraySpec:
        if a.name in self._names:
            raise NetworkError(
                f"two arrays of the generated code would both be named '{a.name}'; rename "
                f"'{a.owner}' or its variable"
            )
        self._names.add(a.name)
        self.arrays.append(a)
        return a

    def add_vars(self, owner: str, owner_id: int, vars_, size: int, role="state") -> dict[str, ArraySpec]:
        out = {}
        for k, (name, v) in enumerate(vars_.items()):
            out[name] = self.add_array(ArraySpec(
                name=f"{owner}_{name}", owner=owner, var=name,
                dtype="int32" if v.dtype == "int" else "scalar",
                size=size if v.per_element else 1, batched=v.batched, role=role,
                init=v.init if is_generated(v.init) else None,  # else computed by the runtime
                init_stream=init_stream_id(owner_id, k),
                comment=f"{'per element' if v.per_element else 'shared'}, "
                        f"{'per batch instance' if v.batched else 'shared across the batch'}",
            ))
        return out

    def add_param_arrays(self):
        """An array for every parameter read at run time (per element, dynamic, per batch
        instance): ``self.params[(owner, part)][name]``. Their values are never in the code."""
        self.params: dict[tuple[str, str], dict[str, ArraySpec]] = {}
        for owner, part, model, _, specs, _ in self.net.value_parts():
            out = self.params[(owner, part)] = {}
            for name, kind in specs.kinds.items():
                if kind == "batch" and len(specs.batch[name]) != self.net.batch_size:
                    raise NetworkError(f"'{owner}': batch_values of '{name}' has {len(specs.batch[name])} values "
                                       f"but the batch size is {self.net.batch_size}")
                what = {"element": "one value per element", "dynamic": "dynamic: set between runs",
                        "batch": "one value per batch instance"}[kind]
                out[name] = self.add_array(ArraySpec(
                    param_array_name(owner, part, name), owner, name, "scalar",
                    specs.scope.size if kind == "element" else 1, kind == "batch", "param", None,
                    comment=f"parameter {name} of {model.name}: {what} (loaded at run time)"))

    # -- whole network -------------------------------------------------------------------
    def run(self) -> NetworkSpec:
        net = self.net
        self.add_param_arrays()
        self.check_owner_ids()
        slots = {p: 1 for p in net.populations}
        for q in net.projections.values():
            slots[q.pre.name] = max(slots[q.pre.name], max(q.pre_delays().values()) + 1)
        pop_arrays = {p.name: self.population_arrays(p, slots[p.name]) for p in net.populations.values()}
        pops_info = [self.population_info(p, slots[p.name], pop_arrays[p.name]) for p in net.populations.values()]
        proj_arrays = {q.name: self.projection_arrays(q) for q in net.projections.values()}
        for name, hook in self.hooks.items():
            if name not in net.populations:
                raise NetworkError(f"a neuron hook names an unknown population '{name}'")
            for a in hook.arrays:
                self.add_array(a)
        cs_arrays = {c.name: self.add_vars(c.name, c.id, c.vars, c.population.size)
                     for c in net.current_sources.values()}
        for q in net.projections.values():  # summed variables are set before the neuron updates read them
            if q.weight_update.has_dynamics:
                self.kernels.append(self.synapse_dynamics_kernel(q, proj_arrays))
        for p in net.populations.values():
            self.kernels.append(self.neuron_kernel(p, slots[p.name], pop_arrays, proj_arrays, cs_arrays))
        for q in net.projections.values():  # named pathways one after another, in the order written
            for pathway in q.pre_delays():
                self.kernels.append(self.synapse_kernel(q, slots, proj_arrays, "on_pre", pathway))
        for q in net.projections.values():
            if q.weight_update.on_post:
                self.kernels.append(self.synapse_kernel(q, slots, proj_arrays, "on_post"))
        for a in list(self.arrays):
            if a.role == "delta":
                self.kernels.append(self.reduction_kernel(a))
        self.check_kernel_names()
        recorded = self.recordings(pop_arrays)
        projs_info = [{
            "name": q.name, "pre": q.pre.name, "post": q.post.name, "id": q.id,
            "connectivity": q.connectivity.kind, "n_synapses": q.n_synapses, "delay_steps": q.delay_steps,
        } for q in net.projections.values()]
        return NetworkSpec(net.name, net.precision, net.dt, int(net.seed), self.arrays, self.kernels,
                           pops_info, projs_info, self.integrators, recorded,
                           instances_independent=self.instances_independent())

    def check_owner_ids(self):
        """Owner ids key the random streams (15 bits of the stream id)."""
        net = self.net
        for obj in [*net.populations.values(), *net.projections.values(), *net.current_sources.values(),
                    *net.poisson_inputs.values()]:
            if obj.id > MAX_OWNER_ID:
                raise NetworkError("too many populations, projections, current sources and poisson inputs "
                                   "(at most 32767)")

    def population_info(self, p, slots: int, arrays: dict) -> dict:
        """The facts about population ``p`` the runtime needs (``NetworkSpec.populations``)."""
        return {
            "name": p.name, "size": p.size, "id": p.id, "slots": slots,
            "record_spikes": p.record_spikes, "model": p.model.name,
            "spike_source_array": isinstance(p.model, SpikeSourceArrayModel),
            "spike_rec_mask": arrays["spike_rec_mask"].name if "spike_rec_mask" in arrays else None,
            "spike_rec_neurons": self.net.spike_neurons.get(p.name) if p.record_spikes else None,
        }

    def check_kernel_names(self):
        """Kernel names are function names: a pathway ``c`` of projection ``a_b`` and a projection
        ``a_b_c`` would both give ``presynaptic_update_a_b_c``."""
        seen = {}
        for k in self.kernels:
            if k.name in seen:
                raise NetworkError(f"two kernels of the generated code would both be named '{k.name}' (of "
                                   f"'{seen[k.name]}' and of '{k.target}'); rename a projection or a pathway")
            seen[k.name] = k.target

    def instances_independent(self) -> bool:
        """Whether every array a kernel writes is per batch instance. Then instance b's step
        reads and writes only instance b's data (shared arrays are read-only: connectivity,
        constant weights), so instances may run apart; a weight shared and learned across the
        batch (its batch reduction writes the shared array) couples them at every step."""
        by_name = {a.name: a for a in self.arrays}
        return all(by_name[name].batched for k in self.kernels for name in k.writes)

    def recordings(self, pop_arrays) -> list[dict]:
        """The variable and population-rate recordings, in the order of their buffers.

        Each entry: ``kind`` ("var" or "rate"), ``population``, ``var``, the ``array`` copied
        from, ``batched``, ``size`` (elements of that array per instance), ``every`` (steps
        ``n % every == 0`` are kept), ``neurons`` (the array of recorded indices, or None for
        all) and ``n`` (values per instance and step). A rate entry copies the population's
        spike count of the step (``array`` = its spike counts, ``slots`` its queue length)."""
        net = self.net
        out = []
        for pop, var in net.recorded_vars:
            arr = pop_arrays[pop]["vars"][var]
            rec = net.var_recordings.get((pop, var))
            every = rec.every if rec is not None else 1
            neurons = None if rec is None else rec.neurons
            entry = {"kind": "var", "index": len(out), "population": pop, "var": var, "array": arr.name,
                     "batched": arr.batched, "size": arr.size, "every": every, "neurons": None,
                     "n": arr.size}
            if neurons is not None:
                idx = self.add_array(ArraySpec(
                    f"{pop}_{var}_rec_neurons", pop, f"_{var}_rec_neurons", "uint32", int(neurons.size), False,
                    "recording", None, comment=f"the neurons whose {var} is recorded",
                    data=neurons.astype(np.uint32)))
                entry.update(neurons=idx.name, n=int(neurons.size))
            out.append(entry)
        for pop in net.recorded_rates:
            arrays = pop_arrays[pop]
            out.append({"kind": "rate", "index": len(out), "population": pop, "var": "spike count",
                        "array": arrays["spk_cnt"].name, "slots": arrays["spk_cnt"].slots, "batched": True,
                        "size": 1, "every": 1, "neurons": None, "n": 1,
                        "population_size": net.populations[pop].size})
        return out

    def population_arrays(self, p, slots):
        out = {"vars": self.add_vars(p.name, p.id, p.vars, p.size)}
        if p.model.refractory is not None:
            out["refrac"] = self.add_array(ArraySpec(
                f"{p.name}_refrac", p.name, "_refrac", "int32", p.size, True, "refractory",
                Constant(0), comment="steps of the refractory period left, the spike's step counted"))
        out["spk_cnt"] = self.add_array(ArraySpec(
            f"{p.name}_spk_cnt", p.name, "_spk_cnt", "uint32", 1, True, "spike_count", Constant(0), slots=slots,
            comment="spike counts per delay slot and batch instance"))
        out["spk"] = self.add_array(ArraySpec(
            f"{p.name}_spk", p.name, "_spk", "uint32", p.size, True, "spikes", Constant(0), slots=slots,
            comment="ids of the neurons that spiked, per delay slot and batch instance"))
        if p.record_spikes and p.name in self.net.spike_neurons:
            mask = np.zeros(p.size, dtype=np.uint8)
            mask[self.net.spike_neurons[p.name]] = 1
            out["spike_rec_mask"] = self.add_array(ArraySpec(
                f"{p.name}_spike_rec_mask", p.name, "_spike_rec_mask", "uint8", p.size, False, "recording", None,
                comment="1 for the neurons whose spikes are recorded", data=mask))
        for param, ta in self.net.timed_inputs.items():
            if param[0] != p.name:
                continue
            where = f"population '{p.name}': timed input '{param[1]}'"
            ta.check_for(p.size, self.net.batch_size, where)
            out[("timed", param[1])] = (
                self.add_array(ArraySpec(
                    f"{p.name}_{param[1]}_timed", p.name, f"_{param[1]}_timed", "scalar", ta.width, ta.batched,
                    "timed_input", None, comment=f"timed input {param[1]}: [row]{'[batch]' if ta.batched else ''}"
                    f"[{'neuron' if ta.width > 1 else 'one value'}]", data=ta.values)),
                self.add_array(ArraySpec(
                    f"{p.name}_{param[1]}_timing", p.name, f"_{param[1]}_timing", "double", 3, False,
                    "timed_input", None,
                    comment=f"timed input {param[1]}: steps per row, rows held, the first row's index",
                    data=ta.timing(self.net.dt))))
        out["flags"] = self.add_array(ArraySpec(
            f"{p.name}_spiked", p.name, "_spiked", "uint8", (p.size + 63) // 64 * 64, True, "scratch", Constant(0),
            comment="which neurons crossed threshold this step (scratch)"))
        if isinstance(p.model, SpikeSourceArrayModel):
            for role in ("start", "end", "ptr"):
                out[role] = self.add_array(ArraySpec(
                    f"{p.name}_ss_{role}", p.name, f"_ss_{role}", "uint32", p.size, True, "input", Constant(0),
                    comment=f"spike source array: {role} index into the spike times"))
            out["times"] = self.add_array(ArraySpec(
                f"{p.name}_ss_times", p.name, "_ss_times", "scalar", 1, False, "input", Constant(0),
                comment="spike source array: spike times (ms), grouped by batch instance and neuron"))
        return out

    def folded_input(self, q) -> str | None:
        """The postsynaptic variable that delivered input can go into directly, or None.

        A postsynaptic model whose ``apply`` starts with ``x += in_syn`` (``x`` its own variable,
        ``in_syn`` read nowhere else) needs no separate ``in_syn`` array: the synapse kernels add
        to ``x`` and the neuron update skips the statement. That is 8 bytes less per neuron and
        step to read and write (CUBA's ``exp_curr``: 48 -> 32 bytes per neuron-step). The sum is
        the same, rounded in another order (``x + (w1 + w2)`` becomes ``(x + w1) + w2``), and
        between steps ``x`` already holds the input on its way. Not done for per-synapse delays
        (the input waits in a dendritic buffer), in a training network (its kernels read
        ``in_syn``) or for dense connectivity (the GPU kernel sums a neuron's input before adding
        it, so cpu and cuda would round differently)."""
        if self.hooks or q.synapse_delay_steps is not None or q.connectivity.kind == "dense":
            return None
        ps = q.postsynaptic
        stmts = ps.parse_apply(list(q.post.model.vars), as_written=True)
        if not stmts:
            return None
        first, in_syn = stmts[0], symbol(IN_SYN_NAME)
        if (first.op != "+=" or first.target not in ps.vars
                or sympy.expand(first.value - symbol(first.target)) != in_syn):
            return None
        if any(in_syn in st.value.free_symbols for st in stmts[1:]):
            return None
        if any(in_syn in ode.rhs.free_symbols for ode in ps.odes):
            return None
        return first.target

    def projection_arrays(self, q):
        wu = q.weight_update
        n_syn = q.n_synapses
        out = {"syn": self.add_vars(q.name, q.id, q.wu_vars, n_syn)}
        written = wu.plastic_vars
        out["delta"] = {}
        for name in sorted(written):
            var = q.wu_vars[name]
            if not var.batched:
                if var.reduce is None:
                    raise ModelError(
                        f"variable '{name}' is shared across the batch but written on spikes "
                        "(per batch instance); declare how instances combine with reduce: sum, mean or max, "
                        "or make it batched",
                        wu.name, "vars")
                src = out["syn"][name]
                out["delta"][name] = self.add_array(ArraySpec(
                    f"{q.name}_{name}_delta", q.name, f"_{name}_delta", "scalar", src.size, True, "delta",
                    Constant(0), reduce=var.reduce, target=src.name,
                    comment=f"per-instance changes of {name}, combined by '{var.reduce}' each step"))
        n_pre, n_post = q.pre.size, q.post.size
        base = len(q.wu_vars)
        out["pre"] = {}
        for k, (name, v) in enumerate(q.wu_pre_vars.items()):
            out["pre"][name] = self.add_array(ArraySpec(
                f"{q.name}_{name}", q.name, name, "scalar", n_pre, True, "trace", v.init,
                init_stream_id(q.id, base + k), comment="presynaptic trace"))
        base += len(q.wu_pre_vars)
        out["post"] = {}
        for k, (name, v) in enumerate(q.wu_post_vars.items()):
            out["post"][name] = self.add_array(ArraySpec(
                f"{q.name}_{name}", q.name, name, "scalar", n_post, True, "trace", v.init,
                init_stream_id(q.id, base + k), comment="postsynaptic trace"))
        base += len(q.wu_post_vars)
        out["ps"] = {}
        for k, (name, v) in enumerate(q.ps_vars.items()):
            out["ps"][name] = self.add_array(ArraySpec(
                f"{q.name}_{name}", q.name, name, "scalar", n_post, True, "state", v.init,
                init_stream_id(q.id, base + k), comment=f"postsynaptic model {q.postsynaptic.name}"))
        folded = self.folded_input(q)
        if folded is not None:  # the synapse kernels add into the postsynaptic variable itself
            out["in_syn"], out["folded"] = out["ps"][folded], folded
        else:
            out["in_syn"] = self.add_array(ArraySpec(
                f"{q.name}_in_syn", q.name, IN_SYN_NAME, "scalar", n_post, True, "in_syn", Constant(0),
                comment="input delivered to each postsynaptic neuron since the last step"))
        if q.synapse_delay_steps is not None:  # per-synapse delays (spikeforge.delays)
            steps = q.synapse_delay_steps
            out["syn_delay"] = self.add_array(ArraySpec(
                f"{q.name}_syn_delay", q.name, "_syn_delay", "uint8" if steps.dtype == np.uint8 else "uint32",
                n_syn, False, "connectivity", None, data=steps,
                comment="delay of each synapse in steps (its input waits that long in the dendritic buffer)"))
            out["den"] = self.add_array(ArraySpec(
                f"{q.name}_den", q.name, "_den", "scalar", n_post, True, "dendritic_delay", Constant(0),
                slots=q.dendritic_slots,
                comment=f"dendritic delay buffer: input due at each of the next {q.dendritic_slots} steps"))
        if q.rows is not None:
            r = q.rows
            parts = [("row_start", r.row_start), ("post_ind", r.post_ind)]
            if q.weight_update.on_post or q.weight_update.has_dynamics:  # these walk columns (per post neuron)
                parts += [("col_start", r.col_start), ("col_syn", r.col_syn), ("pre_ind", r.pre_ind)]
            # neuron indices in 16 bits where the population they index has at most 65,536 neurons:
            # half the bytes of every row read (a spike's targets; the columns of learning rules)
            narrow = {"post_ind": n_post <= INDEX16_MAX_SIZE, "pre_ind": n_pre <= INDEX16_MAX_SIZE}
            for nm, data in parts:
                dtype = "uint16" if narrow.get(nm) else "uint32"
                a = self.add_array(ArraySpec(
                    f"{q.name}_{nm}", q.name, f"_{nm}", dtype, int(data.size), False, "connectivity", None,
                    comment=f"sparse connectivity: {nm}{' (16-bit)' if dtype == 'uint16' else ''}",
                    data=data.astype(np.uint16) if dtype == "uint16" else data))
                out[nm] = a
        return out

    # -- kernels -------------------------------------------------------------------------
    def neuron_kernel(self, p, slots, pop_arrays, proj_arrays, cs_arrays) -> KernelSpec:
        """The neuron update of population ``p``, emitted part by part in the order the code runs:
        parameters and loads, the hook's first lines, inputs (postsynaptic models, current
        sources), the refractory countdown, the model's equations and code, the traces of learning
        synapses, the threshold test, Poisson inputs, and the reset (the code run on a spike)."""
        k = self.neuron_context(p, pop_arrays)
        self.emit_hook_before(k)
        held = self.emit_input_start(k)
        for q in k.incoming:
            self.emit_postsynaptic(k, q, proj_arrays[q.name])
        for c in self.net.current_sources.values():
            if c.population is p:
                self.emit_current_source(k, c, cs_arrays[c.name])
        self.emit_input_end(k, held)
        self.emit_refractory(k)
        named, threshold = self.emit_dynamics(k)
        self.emit_traces(k, proj_arrays)
        spike_cond = self.emit_threshold(k, named, threshold)
        for pi in k.poisson_inputs:  # after the threshold test, before the reset (Brian2's schedule)
            k.code.append(_poisson_input_line(k.w, pi, self.net.dt, pi.target in k.held_by_flag))
        self.emit_reset(k)
        return self.neuron_spec(k, slots, spike_cond)

    def neuron_context(self, p, pop_arrays) -> _NeuronContext:
        """The writer of ``p``'s neuron update with the model's parameters (those following a
        timed array read per step) and derived values declared, and the loads of its variables
        and refractory counter."""
        net, m = self.net, p.model
        w = _KernelWriter(net, owner_id_for_random=p.id)
        arrays = pop_arrays[p.name]
        timed = {name: arrays[("timed", name)] for (pop, name) in net.timed_inputs if pop == p.name}
        w.add_params({k: v for k, v in p.params.items() if k not in timed}, "", m.name, self.params[(p.name, "neuron")])
        k = _NeuronContext(p, m, w, arrays, timed, self.timed_input_lines(w, timed), self.hooks.get(p.name),
                           incoming=[q for q in net.projections.values() if q.post is p],
                           outgoing=[q for q in net.projections.values() if q.pre is p],
                           poisson_inputs=[pi for pi in net.poisson_inputs.values() if pi.population is p])
        k.code.extend(k.timed_loads)
        w.add_derived(m, k.rename, "")
        for q in k.incoming:
            k.ps_written |= {s.target for s in q.postsynaptic.parse_apply(list(m.vars))}
        written = _written([*m.reset, *m.sim_code], m.odes) | k.ps_written | {pi.target for pi in k.poisson_inputs}
        for name, v in p.vars.items():
            a = arrays["vars"][name]
            if name in written and not v.batched:
                raise ModelError(
                    f"variable '{name}' is written by the neuron update, so it must be batched", m.name, "vars")
            k.loads.append(Access(name, a.name, "neuron" if v.per_element else "shared", v.batched,
                                  a.dtype, name in written))
        if "refrac" in arrays:
            k.loads.append(Access("_refrac", arrays["refrac"].name, "neuron", True, "int32", True))
        return k

    @staticmethod
    def emit_hook_before(k: _NeuronContext):
        """A compiler's neuron hook: its loads, and its lines at the start of the update."""
        if k.hook is not None:
            k.loads += k.hook.loads
            k.code.extend(_hook_lines(k.w, k.hook.before, k.rename))

    @staticmethod
    def emit_input_start(k: _NeuronContext) -> list[str]:
        """The summed input set to 0, and the values before any input of the variables that are
        read-only while refractory and that inputs write; returns their names."""
        m = k.m
        k.code.append(Line(f"scalar {INPUT_NAME} = 0;", "summed synaptic input of this step"))
        # Brian2's convention: a variable flagged (unless refractory) is read-only while the neuron is
        # refractory, for inputs too. Input delivered in the previous step is kept from it when the
        # neuron was refractory in that step (_refrac, not yet counted down, is still above 0).
        held = sorted({o.var for o in m.odes if o.unless_refractory} & k.ps_written) if m.refractory is not None else []
        for name in held:
            k.code.append(Line(f"const scalar _{name}_before_input = {name};",
                               f"{name} is read-only while refractory (unless refractory)"))
        return held

    @staticmethod
    def emit_input_end(k: _NeuronContext, held: list[str]):
        """Input that reached a variable read-only while refractory is dropped when refractory."""
        for name in held:
            k.code.append(Line(f"{name} = _refrac > 0 ? _{name}_before_input : {name};",
                               "input that arrived while refractory is lost"))

    def emit_postsynaptic(self, k: _NeuronContext, q, pa: dict):
        """The postsynaptic model of incoming projection ``q``: its state, the input delivered
        (from ``in_syn``, or from the due slot of the dendritic buffer with per-synapse delays),
        its apply code and its equations."""
        w, code, ps, pre = k.w, k.code, q.postsynaptic, f"{q.name}_"
        rename = rename_map([*q.ps_params, *ps.vars, IN_SYN_NAME], pre)
        w.add_params(q.ps_params, pre, ps.name, self.params[(q.name, "postsynaptic")])
        w.add_derived(ps, rename, pre)
        for name in ps.vars:
            k.loads.append(Access(pre + name, pa["ps"][name].name, "neuron", True, "scalar", True))
        folded = pa.get("folded")
        if "den" not in pa and folded is None:  # (with per-synapse delays: from the dendritic buffer)
            k.loads.append(Access(pre + IN_SYN_NAME, pa["in_syn"].name, "neuron", True, "scalar", True))
        code.append(Line("", f"input from projection '{q.name}' ({ps.name}): {ps.apply_source}"))
        if "den" in pa:  # per-synapse delays: the slot of the dendritic buffer that is due
            den, n_slots, due = pa["den"].name, q.dendritic_slots, f"_dueslot{q.id}"
            w.constants.append(Line(f"const uint32_t {due} = (uint32_t)((_step + {n_slots - 1}u) % {n_slots}u);",
                                    f"dendritic buffer slot of '{q.name}' filled for this step"))
            cell = f"_{den}[((size_t){due} * _B + _b) * {k.p.size}u + _i]"
            code.append(Line(f"scalar {pre}{IN_SYN_NAME} = {cell};",
                             "input of the synapses whose per-synapse delay ends now"))
            code.append(Line(f"{cell} = 0;", "dendritic buffer slot emptied for reuse"))
            k.drained.append(den)
        apply, named_ps = ps.parse_apply(list(k.m.vars), as_written=True), _NamedSubexpressions(ps)
        if folded is not None:
            code.append(Line("", f"{apply[0].source}: done by the synapse kernels, which add to {pre}{folded} "
                                 "directly"))
            apply = apply[1:]
        named_ps.print_lines(w, [st.value for st in apply], rename, code, prefix=pre)
        emit_statements(w, apply, rename, code, q.id, named=named_ps)
        if folded is None:
            code.append(Line(f"{pre}{IN_SYN_NAME} = 0;", "delivered input consumed"))
        _subexpression_comments(ps, [o.rhs for o in ps.as_written.get("equations", [])], named_ps.printed, code)
        method = emit_odes(w, ps.odes, rename, ps.name, None, q.name, code)
        if ps.odes:
            self.integrators[f"{q.name} ({ps.name})"] = method

    def emit_current_source(self, k: _NeuronContext, c, cs_arrays: dict):
        """Current source ``c``: its state, its current added to the summed input, its equations."""
        w, code, model, pre = k.w, k.code, c.model, f"{c.name}_"
        rename = rename_map([*c.params, *model.vars], pre)
        w.add_params(c.params, pre, model.name, self.params[(c.name, "current_source")])
        w.add_derived(model, rename, pre)
        for name in model.vars:
            k.loads.append(Access(pre + name, cs_arrays[name].name, "neuron", True, "scalar", True))
        named_cs = _NamedSubexpressions(model)
        current = model.as_written.get("current", model.current)
        named_cs.print_lines(w, [current], rename, code, prefix=pre)
        code.append(Line(f"{INPUT_NAME} += {w.expr(named_cs.use(current).xreplace(rename), c.id)};",
                         f"current source '{c.name}' ({model.name}): {model.current_source}"))
        _subexpression_comments(model, [o.rhs for o in model.as_written.get("equations", [])],
                                named_cs.printed, code)
        emit_odes(w, model.odes, rename, model.name, None, c.name, code)

    @staticmethod
    def emit_refractory(k: _NeuronContext):
        """The refractory period in steps (a constant, or a value per element); the countdown
        (``_refrac``, ``_refractory``) is the template's, after the inputs."""
        m, w = k.m, k.w
        if m.refractory is None:
            k.update_start = len(k.code)
            return
        # Brian2's convention: refractory while fewer than _refrac_steps steps have passed since the
        # spike; the period in steps is rounded down, a period within dt/1000 below a multiple of dt
        # counting as that multiple (so 2 ms at dt = 0.1 ms is 20 steps in float and double alike).
        period = m.refractory.xreplace(k.rename) / symbol("dt") + sympy.Float(1e-3)
        comment = f"refractory period {m.refractory_source} in steps, rounded down"
        if w.is_constant(period):
            w.constants.append(Line(f"const int32_t _refrac_steps = (int32_t)({w.printer().doprint(period)});",
                                    comment))
        else:  # a period per neuron or per batch instance
            text = w.printer().doprint(period)  # as the constant is printed: the same rounding
            w.add_element_line(Line(f"const int32_t _refrac_steps = (int32_t)({text});", comment))
        k.update_start = len(k.code)  # the template counts down _refrac and sets _refractory here

    def emit_dynamics(self, k: _NeuronContext):
        """The model's equations (integrated) and its code after them; returns the named
        subexpressions printed and the threshold as written (both for the threshold test)."""
        m, p = k.m, k.p
        # Subexpressions: the integrator's update has them expanded; the code after it (sim_code,
        # threshold) names them, each computed once per neuron from the integrated values.
        as_written = m.as_written
        sim_code = as_written.get("sim_code", m.sim_code)
        threshold = as_written.get("threshold", m.threshold)
        after_update = [st.value for st in sim_code] + ([threshold] if m.threshold is not None and not k.is_ssa else [])
        named = _NamedSubexpressions(m)
        _subexpression_comments(m, [o.rhs for o in as_written.get("equations", [])],
                                m.subexpressions.needed(after_update), k.code)
        if m.odes:
            self.integrators[p.name] = emit_odes(k.w, m.odes, k.rename, m.name, m.integrator, p.name, k.code,
                                                  hold_if_refractory=m.refractory is not None)
        named.print_lines(k.w, after_update, k.rename, k.code)
        emit_statements(k.w, sim_code, k.rename, k.code, named=named)
        return named, threshold

    def emit_traces(self, k: _NeuronContext, proj_arrays):
        """Pre- and postsynaptic traces of learning synapses, which live with the neurons: their
        equations in the update, their spike code on this population's spikes."""
        trace_blocks = [(q, "pre", q.wu_pre_vars, q.weight_update.pre_odes, q.weight_update.on_pre_spike)
                        for q in k.outgoing] + \
                       [(q, "post", q.wu_post_vars, q.weight_update.post_odes, q.weight_update.on_post_spike)
                        for q in k.incoming]
        declared = set()  # a recurrent projection appears on both sides: declare its constants once
        for q, side, tvars, odes, spike_code in trace_blocks:
            if not tvars:
                continue
            wu, w, pre = q.weight_update, k.w, f"{q.name}_"
            rename = rename_map([*q.wu_params, *tvars], pre)
            per_synapse = self.check_trace_params(q, odes, spike_code)
            if q.name not in declared:
                w.add_params({n: v for n, v in q.wu_params.items() if n not in per_synapse}, pre, wu.name,
                             self.params[(q.name, "weight_update")])
                w.add_derived(wu, rename, pre, skip=per_synapse)
                declared.add(q.name)
            else:
                rename.update({symbol(d): symbol(pre + d) for d in wu.derived})
            for name in tvars:
                k.loads.append(Access(pre + name, proj_arrays[q.name][side][name].name, "neuron", True, "scalar",
                                      True))
            emit_odes(w, odes, rename, wu.name, None, q.name, k.code)
            emit_statements(w, spike_code, rename, k.on_spike, q.id)

    @staticmethod
    def emit_threshold(k: _NeuronContext, named: _NamedSubexpressions, threshold) -> str | None:
        """The threshold condition (never while refractory; the template declares ``_spike``) and
        the hook's lines after the test; returns the spike condition the template tests (None for
        a population that never spikes)."""
        m, hook = k.m, k.hook
        k.threshold_at = len(k.code)
        if k.is_ssa:
            spike_cond = "_ssfire"
        elif m.threshold is not None:
            cond = k.w.expr(named.use(threshold).xreplace(k.rename))
            if m.refractory is not None:
                cond = f"!_refractory && ({cond})"
            k.threshold = {"condition": cond, "source": m.threshold_source}
            spike_cond = "_spike"
            if hook is not None:
                k.code.extend(_hook_lines(k.w, hook.after_threshold, k.rename))
        else:
            spike_cond = None
        if hook is not None and hook.after_threshold and spike_cond != "_spike":
            raise NetworkError(f"population '{k.p.name}' ({m.name}): a neuron hook adds code after the threshold "
                               "test, and the model has no threshold condition")
        return spike_cond

    @staticmethod
    def emit_reset(k: _NeuronContext):
        """The reset, run on a spike before the refractory period starts (the template's) and the
        traces' spike code; with what it reads recomputed, as it runs apart from the update."""
        m, reset_lines = k.m, k.reset
        reset = m.as_written.get("reset", m.reset)
        named_reset = _NamedSubexpressions(m)  # the reset runs apart from the update (CPU: a second pass)
        named_reset.print_lines(k.w, [st.value for st in reset], k.rename, reset_lines)
        first_reset = len(reset_lines)
        emit_statements(k.w, reset, k.rename, reset_lines, named=named_reset)
        if m.reset:
            reset_lines[first_reset].comment = "reset: " + reset_lines[first_reset].comment
        if any(symbol(name) in _statement_symbols(m.reset) for name in k.timed):
            reset_lines[:0] = k.timed_loads  # the reset runs apart from the update (CPU: a second pass)

    def neuron_spec(self, k: _NeuronContext, slots: int, spike_cond: str | None) -> KernelSpec:
        """The kernel spec: the code in its parts (``code``: the inputs; ``info``: ``dynamics``,
        ``after_threshold``, ``reset`` and ``on_spike``, the traces' spike code), the mechanics the
        template writes between them (``refractory``, ``threshold``), and the arrays read and
        written beyond the loads."""
        p, arrays, w, m = k.p, k.arrays, k.w, k.m
        refractory = {"source": m.refractory_source} if m.refractory is not None else None
        if w.element_lines and (k.reset or refractory or k.on_spike):  # the CPU's reset pass runs apart
            k.reset[:0] = [Line(line.code, line.comment) for line in w.element_lines]
        info = {
            "size": p.size, "slots": slots, "spike_condition": spike_cond,
            "dynamics": k.code[k.update_start:k.threshold_at], "after_threshold": k.code[k.threshold_at:],
            "refractory": refractory, "threshold": k.threshold, "reset": k.reset, "on_spike": k.on_spike,
            "flags_stride": arrays["flags"].size,
            "spike_source_array": k.is_ssa, "record_spikes": p.record_spikes, "population_id": p.id,
            # timed inputs with one row per instance: (array, row local, values per row), whose
            # next row the CPU asks for a step ahead (an instance's rows lie the batch apart)
            "timed_rows": [(values.name, f"_{name}_row", values.size) for name, (values, _) in k.timed.items()
                           if values.batched],
        }
        # the spike count is written every step (the CPU's pass 2 counts, CUDA's adds); the spikes
        # only by a population that can spike
        spiking = ("spk", "spk_cnt") if spike_cond else ("spk_cnt",)
        roles = {n: arrays[n].name for n in (*spiking, "flags")}
        reads, writes = [], [*(arrays[n].name for n in spiking), *k.drained]
        if k.hook is not None:
            writes += k.hook.writes
        if k.timed:
            reads = [a.name for pair in k.timed.values() for a in pair]
        if k.is_ssa:
            roles.update({n: arrays[n].name for n in ("end", "ptr", "times")})
            reads += [arrays[n].name for n in ("end", "ptr", "times")]
            writes.append(arrays["ptr"].name)
        description = (f"neuron update of population '{p.name}' ({p.size} x {k.m.name}; "
                       f"integrator: {self.integrators.get(p.name, 'none')})")
        return KernelSpec(f"neuron_update_{p.name}", "neuron_update", p.name, "neuron_update", description,
                          w.finish_constants(), w.param_loads + k.loads, k.code[:k.update_start], info,
                          reads=tuple(_read_params(w, reads)), writes=tuple(writes), arrays=roles)

    @staticmethod
    def check_trace_params(q, odes, spike_code):
        """Pre- and postsynaptic traces run per neuron: they cannot read a parameter given per synapse."""
        per_synapse = {n for n, kind in q.wu_values.kinds.items() if kind == "element"}
        for d, e in q.weight_update.derived.items():  # with the derived parameters that use them
            if {s.name for s in e.free_symbols} & per_synapse:
                per_synapse.add(d)
        if not per_synapse:
            return per_synapse
        used = {s.name for o in odes for s in o.rhs.free_symbols} | {s.name for s in _statement_symbols(spike_code)}
        for d, e in q.weight_update.derived.items():
            if d in used:
                used |= {s.name for s in e.free_symbols}
        bad = sorted(used & per_synapse)
        if bad:
            raise NetworkError(f"projection '{q.name}': parameter '{bad[0]}' is given per synapse, but the pre- or "
                               "postsynaptic trace code (run per neuron) uses it")
        return per_synapse

    @staticmethod
    def timed_input_lines(w: _KernelWriter, timed: dict) -> list[Line]:
        """Parameters that follow a timed array: the row of this step (once per kernel, among
        the constants) and the value of this neuron and instance (a local of the update)."""
        lines = []
        for name, (values, timing) in timed.items():
            t = f"_{timing.name}"
            w.constants.append(Line(
                f"const double _{name}_at = ((double)_step + {ROW_TOLERANCE_STEPS!r}) / {t}[0] - {t}[2];",
                f"timed input {name}: t / array dt, in rows, counted from the first row held"))
            w.constants.append(Line(
                f"const uint64_t _{name}_row = _{name}_at < {t}[1] - 1.0 ? "
                f"(_{name}_at > 0.0 ? (uint64_t)_{name}_at : 0u) : (uint64_t){t}[1] - 1u;",
                f"timed input {name}: row floor(t / array dt), the last after the end"))
            row = f"(size_t)_{name}_row * _B + _b" if values.batched else f"(size_t)_{name}_row"
            column = "_i" if values.size > 1 else "0"
            lines.append(Line(f"const scalar {name} = _{values.name}[({row}) * {values.size}u + {column}];",
                              f"timed input: parameter {name} at this step"))
        return lines

    def synapse_kernel(self, q, slots, proj_arrays, which, pathway=None) -> KernelSpec:
        """The code of ``q`` on presynaptic (``which`` = "on_pre"; of one named ``pathway``, if
        the model has them) or postsynaptic spikes."""
        net, wu = self.net, q.weight_update
        pa = proj_arrays[q.name]
        w = _KernelWriter(net, owner_id_for_random=q.id)
        w.add_params(q.wu_params, "", wu.name, self.params[(q.name, "weight_update")], index="syn")
        w.add_derived(wu, {}, "")
        field_name = wu.pre_field(pathway) if which == "on_pre" else which
        stmts = wu.pathways[pathway] if pathway is not None else wu.on_pre if which == "on_pre" else wu.on_post
        written = {s.target for s in stmts}
        loads = []
        for name, v in q.wu_vars.items():
            a = pa["syn"][name]
            write = name in written
            delta = pa["delta"][name].name if write and not v.batched else None
            loads.append(Access(name, a.name, "syn" if v.per_element else "shared", v.batched, a.dtype,
                                write, delta))
        for name in q.wu_pre_vars:
            loads.append(Access(name, pa["pre"][name].name, "pre", True))
        for name in q.wu_post_vars:
            loads.append(Access(name, pa["post"][name].name, "post", True))
        loads += self.neuron_loads(q, _statement_symbols(stmts))
        code = w.code
        delivers = any(s.target == DELIVER_NAME for s in stmts)
        if delivers:
            code.append(Line(f"scalar {DELIVER_NAME} = 0;", "input this synapse delivers"))
        named, rename = _NamedSubexpressions(wu), {}
        stmts = wu.as_written.get(field_name, stmts)
        named.print_lines(w, [st.value for st in stmts], rename, code)
        emit_statements(w, stmts, rename, code, named=named)
        src = wu.source[which] if pathway is None else wu.source[which][pathway]
        source_pop = q.pre if which == "on_pre" else q.post
        delay_steps = q.pre_delays()[pathway] if which == "on_pre" else 0
        info = {
            "connectivity": q.connectivity.kind, "n_pre": q.pre.size, "n_post": q.post.size,
            "n_synapses": q.n_synapses, "delay_steps": delay_steps,
            "slots": slots[source_pop.name], "delivers": delivers, "which": which,
        }
        roles = {"spk": f"{source_pop.name}_spk", "spk_cnt": f"{source_pop.name}_spk_cnt"}
        reads, writes = [roles["spk"], roles["spk_cnt"]], []
        if q.rows is not None:  # the rows of each presynaptic neuron, or the columns of each postsynaptic one
            needed = ("row_start", "post_ind") if which == "on_pre" else ("col_start", "col_syn", "pre_ind")
            roles.update({k: pa[k].name for k in needed})
            reads += [pa[k].name for k in needed]
        if q.connectivity.kind == "procedural":  # rows drawn again at each spike
            from ..connectivity import procedural_info

            info.update(procedural_info(q, self.net.seed))
        if delivers and "den" not in pa:
            roles["in_syn"] = pa["in_syn"].name
            writes = [pa["in_syn"].name]
        if delivers and "den" in pa:  # per-synapse delays: the input waits in the dendritic buffer
            roles.update(dendritic=pa["den"].name, syn_delay=pa["syn_delay"].name)
            info["dendritic_slots"] = q.dendritic_slots
            reads.append(pa["syn_delay"].name)
            writes = [pa["den"].name]
        kind = "presynaptic_update" if which == "on_pre" else "postsynaptic_learning"
        spikes = "presynaptic" if which == "on_pre" else "postsynaptic"
        if pathway is None:
            description = (f"{spikes} spikes of projection '{q.name}' ({q.pre.name} -> {q.post.name}, "
                           f"{q.connectivity.kind}, {wu.name}"
                           f"{f', delay {delay_steps} steps' if delay_steps else ''})")
        else:
            order = list(wu.pathways)
            description = (f"{spikes} spikes of projection '{q.name}', pathway '{pathway}' ({order.index(pathway) + 1} "
                           f"of {len(order)}: {', '.join(order)}; {q.pre.name} -> {q.post.name}, "
                           f"{q.connectivity.kind}, {wu.name}, delay {delay_steps} steps)")
        if isinstance(src, str):
            description += "; " + " | ".join(line.strip() for line in src.strip().splitlines())
        name = f"{kind}_{q.name}" if pathway is None else f"{kind}_{q.name}_{pathway}"
        return KernelSpec(name, kind, q.name, "synapse_update", description, w.finish_constants(),
                          w.param_loads + loads, code, info, reads=tuple(_read_params(w, reads)), writes=tuple(writes),
                          arrays=roles)

    def neuron_loads(self, q, symbols) -> list[Access]:
        """Locals ``v_pre``, ``v_post``... for the neuron variables per-synapse code reads
        (``symbols``: what it mentions), loaded from the pre- or postsynaptic population."""
        by_name = {a.name: a for a in self.arrays}
        out = []
        for name in sorted({s.name for s in symbols} & set(q.weight_update.neuron_names)):
            side, var = neuron_ref(name)
            a = by_name[f"{(q.pre if side == 'pre' else q.post).name}_{var}"]
            out.append(Access(name, a.name, side if a.size > 1 else "shared", a.batched, a.dtype))
        return out

    def synapse_dynamics_kernel(self, q, proj_arrays) -> KernelSpec:
        """Per-step synapse code of a projection: for each postsynaptic neuron, its incoming
        synapses in a fixed order (presynaptic index), each adding its summed expressions to the
        neuron's sums and then integrating its equations; the sums are stored in the neuron's
        variables. Everything reads the state at the start of the step (after the last step's
        updates, resets and spike deliveries)."""
        net, wu = self.net, q.weight_update
        pa = proj_arrays[q.name]
        w = _KernelWriter(net, owner_id_for_random=q.id)
        w.add_params(q.wu_params, "", wu.name, self.params[(q.name, "weight_update")], index="syn")
        w.add_derived(wu, {}, "")
        ode_vars = {o.var for o in wu.odes}
        loads = []
        for name, v in q.wu_vars.items():
            a = pa["syn"][name]
            loads.append(Access(name, a.name, "syn" if v.per_element else "shared", v.batched, a.dtype,
                                name in ode_vars))
        for name in q.wu_pre_vars:
            loads.append(Access(name, pa["pre"][name].name, "pre", True))
        for name in q.wu_post_vars:
            loads.append(Access(name, pa["post"][name].name, "post", True))
        exprs = [*wu.summed.values(), *(o.rhs for o in wu.odes)]
        loads += self.neuron_loads(q, set().union(*(e.free_symbols for e in exprs)))
        code = w.code
        named, rename = _NamedSubexpressions(wu), {}
        summed_as_written = {t: wu.as_written.get(f"summed.{t}", e) for t, e in wu.summed.items()}
        named.print_lines(w, list(summed_as_written.values()), rename, code)
        by_name = {a.name: a for a in self.arrays}
        summed = []
        for target, e in summed_as_written.items():
            acc = f"_sum_{target}"
            code.append(Line(f"{acc} += {w.expr(named.use(e).xreplace(rename))};",
                             f"summed: {q.post.name}.{target} = sum over incoming synapses of "
                             f"{wu.summed_source[target]}"))
            summed.append({"local": acc, "var": target, "array": by_name[f"{q.post.name}_{target}"].name})
        _subexpression_comments(wu, [o.rhs for o in wu.as_written.get("equations", [])], named.printed, code)
        if wu.odes:
            self.integrators[f"{q.name} ({wu.name}, per synapse)"] = emit_odes(
                w, wu.odes, {}, wu.name, None, q.name, code)
        info = {
            "connectivity": q.connectivity.kind, "n_pre": q.pre.size, "n_post": q.post.size,
            "n_synapses": q.n_synapses, "summed": summed,
        }
        roles, reads = {}, []
        if q.rows is not None:
            roles = {k: pa[k].name for k in ("col_start", "col_syn", "pre_ind")}
            reads = list(roles.values())
        parts = ([f"equations: {' | '.join(o.source for o in wu.odes)}"] if wu.odes else []) + \
            [f"{t}_post = {wu.summed_source[t]} (summed)" for t in wu.summed]
        description = (f"synapse dynamics of projection '{q.name}' ({q.pre.name} -> {q.post.name}, "
                       f"{q.connectivity.kind}, {wu.name}): " + "; ".join(parts))
        return KernelSpec(f"synapse_dynamics_{q.name}", "synapse_dynamics", q.name, "synapse_dynamics",
                          description, w.finish_constants(), w.param_loads + loads, code, info,
                          reads=tuple(_read_params(w, reads)), writes=tuple(s["array"] for s in summed), arrays=roles)

    def reduction_kernel(self, delta: ArraySpec) -> KernelSpec:
        return KernelSpec(
            f"batch_reduce_{delta.name}", "batch_reduction", delta.owner, "batch_reduction",
            f"combine the per-instance changes of {delta.target} across the batch ({delta.reduce})",
            [], [], [], {"size": delta.size, "reduce": delta.reduce},
            writes=(delta.target, delta.name), arrays={"delta": delta.name, "target": delta.target},
        )


def generate(network, hooks: dict[str, NeuronHook] | None = None) -> NetworkSpec:
    """Turn a :class:`~spikeforge.network.Network` into kernel specs; ``hooks`` (population
    name -> :class:`NeuronHook`) add a compiler's code to neuron updates."""
    return Generator(network, hooks).run()


__all__ = ["HookLine", "KernelWriter", "NeuronHook", "generate", "rand_normal", "rand_uniform"]
