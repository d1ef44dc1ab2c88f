"""Synapse models: a weight-update part (what happens on spikes) and a postsynaptic part
(how the delivered input reaches the target neuron)."""

from __future__ import annotations

import dataclasses
import re

from ..errors import ModelError, NetworkError
from .base import Model, _check_name
from .neuron import INPUT_NAME
from .variables import make_vars

#: What a weight-update model adds to, to send input to the postsynaptic neuron.
DELIVER_NAME = "post_input"
#: What a postsynaptic model reads: the input delivered to the neuron since last step.
IN_SYN_NAME = "in_syn"
#: Synapse code names a variable of the pre- or postsynaptic neuron as ``<name>_pre`` /
#: ``<name>_post`` (Brian2's convention), e.g. ``v_post``.
_NEURON_REF = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*?)_(pre|post)\b")


def neuron_ref(name: str) -> tuple[str, str] | None:
    """``("pre", "v")`` for ``v_pre``, ``("post", "v")`` for ``v_post``, else None."""
    m = _NEURON_REF.fullmatch(name)
    return (m.group(2), m.group(1)) if m else None


def _texts(spec) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [str(x) for x in spec.values()]
    if isinstance(spec, (list, tuple)):
        return [str(x) for x in spec]
    return [str(spec)]


class WeightUpdateModel(Model):
    """Synapse dynamics on pre- and postsynaptic spikes.

    * ``vars``: per-synapse variables (e.g. the weight ``w``); by default shared across the
      batch. A shared variable written on spikes must declare ``reduce`` (sum, mean, max).
    * ``pre_vars`` / ``post_vars``: per-neuron traces on the pre/post side (per batch
      instance), with ODEs in ``pre_equations`` / ``post_equations`` (integrated exactly)
      and updates on the neuron's own spike in ``on_pre_spike`` / ``on_post_spike``.
    * ``on_pre``: statements per synapse when a presynaptic spike arrives; ``post_input += w``
      delivers input to the postsynaptic neuron. Or named pathways, a mapping name ->
      statements (``{"up": "post_input += w", "down": "w -= 0.01"}``): each pathway is its own
      code with its own delay (the projection's ``delay`` then maps pathway names to delays);
      pathways that fire on the same step run in the order written.
    * ``on_post``: statements per synapse when the postsynaptic neuron spikes.
    * ``equations``: ODEs of per-synapse variables, integrated every step for every synapse
      (e.g. NMDA gating ``ds/dt = -s/tau_decay + alpha*x*(1 - s)``); such a variable is per
      batch instance.
    * ``summed``: postsynaptic neuron variable -> expression per synapse (Brian2's
      ``(summed)``): every step, before the neuron update, the variable of each postsynaptic
      neuron is set to the sum of the expression over its incoming synapses, e.g. a gap
      junction ``{"Igap": "w*(v_pre - v_post)"}``.
    * ``subexpressions``: named expressions the other fields use by name (see
      :mod:`spikeforge.models.subexpressions`).

    The per-synapse fields (``on_pre``, ``on_post``, ``equations``, ``summed`` and the
    subexpressions) may read any variable of the pre- or postsynaptic neuron as
    ``<name>_pre`` / ``<name>_post`` (``v_pre``, ``v_post``); the names are checked against
    the neuron models when the projection is made (:func:`check_projection`).

    Examples:
        >>> from spikeforge import WeightUpdateModel
        >>> gap = WeightUpdateModel("gap_junction", params={"w": 0.02}, summed={"Igap": "w * (v_pre - v_post)"})
        >>> gap.name
        'gap_junction'
    """

    kind = "weight_update"

    def _parse(
        self,
        name,
        params=None,
        vars=None,
        pre_vars=None,
        post_vars=None,
        pre_equations=None,
        post_equations=None,
        on_pre_spike=None,
        on_post_spike=None,
        on_pre=None,
        on_post=None,
        derived=None,
        subexpressions=None,
        units=None,
        equations=None,
        summed=None,
    ):
        from .expressions import parse_odes, parse_statements

        super()._parse(name, params, derived, vars, var_defaults={"per_element": True, "batched": False})
        self.pre_vars = make_vars(pre_vars, name, "pre_vars", per_element=True, batched=True)
        self.post_vars = make_vars(post_vars, name, "post_vars", per_element=True, batched=True)
        names = [*self.vars, *self.pre_vars, *self.post_vars]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ModelError(f"variable(s) {', '.join(sorted(dup))} defined twice", name, "vars")
        for v in [*self.pre_vars.values(), *self.post_vars.values()]:
            if not v.batched or not v.per_element:
                raise ModelError(f"trace '{v.name}' must be per neuron and batched", name, "pre_vars")
        trace_names = set(self.pre_vars) | set(self.post_vars)
        own = self.constant_names() | set(self.vars) | trace_names | set(subexpressions or ())
        #: names of the form <name>_pre / <name>_post that per-synapse code may read (the pre- and
        #: postsynaptic neurons' variables; checked against the neuron models by check_projection)
        self.neuron_names = sorted({m.group(0) for text in _texts(on_pre) + _texts(on_post) + _texts(equations)
                                    + _texts(summed) + _texts(subexpressions) for m in _NEURON_REF.finditer(text)}
                                   - own)
        self.add_subexpressions(subexpressions, extra=self.neuron_names,
                                taken={n: "a trace" for n in trace_names})
        self.pre_odes = self.expanded("pre_equations", parse_odes(
            pre_equations, self.context(trace_names, False), "pre_equations", trace_names))
        self.post_odes = self.expanded("post_equations", parse_odes(
            post_equations, self.context(trace_names, False), "post_equations", trace_names))
        for odes, side, allowed in ((self.pre_odes, "pre", self.pre_vars), (self.post_odes, "post", self.post_vars)):
            for o in odes:
                if o.var not in allowed:
                    raise ModelError(f"'{o.source}' must be about a {side}-synaptic trace", name, f"{side}_equations")
        ctx = self.context(trace_names)
        self.on_pre_spike = self.expanded(
            "on_pre_spike", parse_statements(on_pre_spike, ctx, "on_pre_spike", set(self.pre_vars)))
        self.on_post_spike = self.expanded(
            "on_post_spike", parse_statements(on_post_spike, ctx, "on_post_spike", set(self.post_vars)))
        ctx_pre = self.context(trace_names | {DELIVER_NAME} | set(self.neuron_names))
        #: named pathways of on_pre (name -> statements, in the order written); empty when on_pre is
        #: one piece of code. ``on_pre`` then holds every pathway's statements, one after another.
        self.pathways = self._parse_pathways(on_pre, ctx_pre)
        if self.pathways:
            self.on_pre = [st for stmts in self.pathways.values() for st in stmts]
        else:
            self.on_pre = self.expanded(
                "on_pre", parse_statements(on_pre, ctx_pre, "on_pre", set(self.vars) | {DELIVER_NAME}))
        if isinstance(on_post, dict):
            raise ModelError("named pathways are for on_pre only; give on_post as statements (the code run on "
                             "postsynaptic spikes, which have no delay)", name, "on_post")
        ctx_syn = self.context(trace_names | set(self.neuron_names))
        self.on_post = self.expanded("on_post", parse_statements(on_post, ctx_syn, "on_post", set(self.vars)))
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context(set(self.neuron_names), False), "equations", set(self.vars)))
        self._per_instance_ode_vars()
        self.summed = self._parse_summed(summed, self.context(set(self.neuron_names), False))
        for path, stmts in (self.pathways or {None: self.on_pre}).items():
            for st in stmts:
                if st.target == DELIVER_NAME and st.op != "+=":
                    raise ModelError(f"'{st.source}': input is delivered with '{DELIVER_NAME} += ...'", name,
                                     self.pre_field(path))
        self.source = {"on_pre": on_pre, "on_post": on_post, "equations": equations}
        self.summed_source = {k: str(v).strip() for k, v in (summed or {}).items()} if isinstance(summed, dict) \
            else {}
        self.declare_units(units)

    @staticmethod
    def pre_field(pathway: str | None) -> str:
        """The field name of a pathway's code (``on_pre.up``), or ``on_pre`` for plain code."""
        return "on_pre" if pathway is None else f"on_pre.{pathway}"

    def _parse_pathways(self, spec, ctx) -> dict:
        """``on_pre`` given as named pathways (Brian2's ``on_pre={'up': ..., 'down': ...}``):
        name -> parsed statements (subexpressions substituted), in the order written."""
        from .expressions import parse_statements, split_lines

        if not isinstance(spec, dict):
            return {}
        if not spec:
            raise ModelError("no pathways: give on_pre as statements, or as a mapping pathway name -> "
                             "statements", self.name, "on_pre")
        out = {}
        for path, text in spec.items():
            _check_name(path, self.name, "on_pre", "pathway")
            where = self.pre_field(path)
            if not isinstance(text, (str, list, tuple)):
                raise ModelError(f"pathway '{path}': expected statements (text), got {type(text).__name__}",
                                 self.name, where)
            if not split_lines(text):
                raise ModelError(f"pathway '{path}' has no code (expected statements such as "
                                 f"'{DELIVER_NAME} += w')", self.name, where)
            out[path] = self.expanded(where, parse_statements(text, ctx, where, set(self.vars) | {DELIVER_NAME}))
        return out

    def _per_instance_ode_vars(self):
        """A variable with a per-synapse equation evolves in every batch instance: it is made per
        batch instance; one declared shared across synapses or with a batch reduction is refused."""
        for o in self.odes:
            v = self.vars[o.var]
            if not v.per_element or v.reduce is not None:
                raise ModelError(f"variable '{o.var}' has a per-synapse equation, so it must be per synapse and "
                                 "per batch instance (no reduce)", self.name, "equations")
            self.vars[o.var] = dataclasses.replace(v, batched=True)

    def _parse_summed(self, spec, ctx) -> dict:
        """``summed``: postsynaptic neuron variable -> expression per synapse (parsed, expanded)."""
        from .expressions import parse_expression

        if spec is None:
            return {}
        if not isinstance(spec, dict):
            raise ModelError(f"summed: expected a mapping postsynaptic variable -> expression, got "
                             f"{type(spec).__name__}", self.name, "summed")
        out = {}
        for target, text in spec.items():
            where = f"summed.{target}"
            if not isinstance(target, str) or not target.isidentifier():
                raise ModelError(f"summed: '{target}' is not a variable name", self.name, "summed")
            if neuron_ref(target) is not None:
                raise ModelError(f"name the postsynaptic neuron's variable without '_post' "
                                 f"('{neuron_ref(target)[1]}', not '{target}')", self.name, where)
            if isinstance(text, bool) or not isinstance(text, (str, int, float)):
                raise ModelError(f"expected an expression, got {type(text).__name__}", self.name, where)
            parsed = parse_expression(text, ctx, where)
            self.as_written[where] = parsed
            out[target] = self.subexpressions.expand(parsed)
        return out

    def neuron_reads(self) -> dict[str, str]:
        """The neuron variables the per-synapse fields read, each with the first field that
        reads it: ``{"v_post": "summed.Igap", "v_pre": "on_pre"}``."""
        pre_fields = [(self.pre_field(p), [s.value for s in stmts])
                      for p, stmts in (self.pathways or {None: self.on_pre}).items()]
        fields = [*pre_fields, ("on_post", [s.value for s in self.on_post]),
                  ("equations", [o.rhs for o in self.odes]),
                  *((f"summed.{t}", [e]) for t, e in self.summed.items())]
        out: dict[str, str] = {}
        for field_name, exprs in fields:
            for e in exprs:
                for s in sorted(e.free_symbols, key=lambda x: x.name):
                    if s.name in self.neuron_names and s.name not in out:
                        out[s.name] = field_name
        return out

    @property
    def has_dynamics(self) -> bool:
        """Whether the projection runs a per-step synapse kernel (per-synapse ODEs or summed variables)."""
        return bool(self.odes or self.summed)

    @property
    def delivers(self) -> bool:
        return any(st.target == DELIVER_NAME for st in self.on_pre)

    @property
    def plastic_vars(self) -> set[str]:
        return {st.target for st in [*self.on_pre, *self.on_post]} & set(self.vars)


class PostsynapticModel(Model):
    """How the input delivered by a projection acts on the postsynaptic neuron.

    ``apply`` runs in the neuron update, before integration: it reads ``in_syn`` (the input
    delivered since the last step, then cleared) and may update the model's own variables,
    add to ``i_syn``, or change a neuron variable directly (``v += in_syn`` is a delta
    synapse).  ``equations`` (the model's own ODEs, e.g. an exponential decay) are
    integrated after the neuron update.

    Examples:
        >>> from spikeforge import PostsynapticModel
        >>> alpha = PostsynapticModel("exp_decay", params={"tau": 5.0}, vars={"x": 0.0},
        ...                           equations="dx/dt = -x / tau", apply="i_syn += x")
        >>> sorted(alpha.params)
        ['tau']
    """

    kind = "postsynaptic"
    unit_inputs = (IN_SYN_NAME,)

    def _parse(self, name, params=None, vars=None, equations=None, apply=None, derived=None, subexpressions=None,
               units=None):
        from .expressions import parse_odes

        super()._parse(name, params, derived, vars, var_defaults={"per_element": True, "batched": True})
        self.declare_units(units)
        self.add_subexpressions(subexpressions, extra=[IN_SYN_NAME])
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context([IN_SYN_NAME], False), state=set(self.vars)))
        self.apply_source = apply
        self.equations_source = equations

    def parse_apply(self, neuron_vars, as_written=False):
        """The ``apply`` statements, checked against the target neuron's variables (with the
        model's subexpressions substituted, unless ``as_written``)."""
        from .expressions import parse_statements

        allowed = set(self.vars) | {INPUT_NAME} | set(neuron_vars)
        ctx = self.context([IN_SYN_NAME, INPUT_NAME, *neuron_vars])
        stmts = parse_statements(self.apply_source, ctx, "apply", allowed)
        return stmts if as_written else self.subexpressions.expand_statements(stmts)


class CurrentSourceModel(Model):
    """Input added to ``i_syn`` of every neuron of a population, each step.

    ``current`` is an expression (it may draw ``rand_normal()`` for noise); ``equations``
    evolve the source's own variables.

    Examples:
        >>> from spikeforge import CurrentSourceModel
        >>> noise = CurrentSourceModel("drive", params={"mu": 0.3, "sigma": 0.1}, current="mu + sigma * rand_normal()")
        >>> noise.name
        'drive'
    """

    kind = "current_source"

    def _parse(self, name, params=None, vars=None, current="0", equations=None, derived=None,
               subexpressions=None, units=None):
        from .expressions import parse_expression, parse_odes

        super()._parse(name, params, derived, vars, var_defaults={"per_element": True, "batched": True})
        self.declare_units(units)

        self.add_subexpressions(subexpressions)
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context(random_allowed=False), state=set(self.vars)))
        self.current = self.expanded("current", parse_expression(current, self.context(), "current"))
        self.current_source = current


def check_projection(wu: WeightUpdateModel, pre, post, projections, where: str) -> None:
    """Check what a weight-update model reads and sums against the neurons a projection
    connects (``pre``/``post``: populations; ``projections``: those already in the network).

    Refused: ``<name>_pre`` / ``<name>_post`` naming no variable of that neuron model; a summed
    variable that is not a variable of the postsynaptic model, or one its own code computes
    (an ODE state, written by the reset or sim_code), or one shared across neurons or batch
    instances; two projections summing into the same variable (Brian2 refuses it too: give
    each projection its own variable and add them in the neuron's equations)."""
    for name, field_name in wu.neuron_reads().items():
        side, var = neuron_ref(name)
        pop = pre if side == "pre" else post
        if var not in pop.vars:
            raise ModelError(f"'{name}': the {side}synaptic neuron model '{pop.model.name}' of {where} has no "
                             f"variable '{var}' (variables: {', '.join(pop.vars) or 'none'})", wu.name, field_name)
    m = post.model
    computed = {o.var for o in m.odes} | {s.target for s in [*m.reset, *m.sim_code]}
    for target in wu.summed:
        field_name = f"summed.{target}"
        if target not in post.vars:
            raise ModelError(f"summed variable '{target}': the postsynaptic neuron model '{m.name}' of {where} has "
                             f"no variable '{target}' (variables: {', '.join(post.vars) or 'none'}; declare it "
                             f"there, e.g. '{target}: 0', and use it in the equations)", wu.name, field_name)
        if target in computed:
            raise ModelError(f"summed variable '{target}' is computed by the neuron model '{m.name}' itself (a "
                             "differential equation, the reset or sim_code); a summed variable must be a plain "
                             "variable the synapses set", wu.name, field_name)
        v = post.vars[target]
        if not v.per_element or not v.batched:
            raise ModelError(f"summed variable '{target}' of neuron model '{m.name}' must be per neuron and per "
                             "batch instance", wu.name, field_name)
        for q in projections:
            if q.post is post and target in q.weight_update.summed:
                raise NetworkError(f"{where}: projection '{q.name}' already sums into '{post.name}.{target}'; two "
                                   "projections cannot sum into one variable (give each its own, e.g. "
                                   f"'{target}_2', and add them in the neuron's equations)")
