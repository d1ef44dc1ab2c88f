"""Synapse models: a weight-update part (what happens on spikes) and a postsynaptic part
(how the delivered input reaches the target neuron)."""

from __future__ import annotations

from ..errors import ModelError
from .base import Model
from .expressions import parse_odes, parse_statements
from .neuron import INPUT_NAME
from .variables import make_vars

#: What a weight-update model adds to, to send input to the postsynaptic neuron.
DELIVER_NAME = "post_input"
#: What a postsynaptic model reads: the input delivered to the neuron since last step.
IN_SYN_NAME = "in_syn"


class WeightUpdateModel(Model):
    """Synapse dynamics on pre- and postsynaptic spikes.

    * ``vars``: per-synapse variables (e.g. the weight ``w``); by default shared across the
      batch. A shared variable written on spikes must declare ``reduce`` (sum, mean, max).
    * ``pre_vars`` / ``post_vars``: per-neuron traces on the pre/post side (per batch
      instance), with ODEs in ``pre_equations`` / ``post_equations`` (integrated exactly)
      and updates on the neuron's own spike in ``on_pre_spike`` / ``on_post_spike``.
    * ``on_pre``: statements per synapse when a presynaptic spike arrives; ``post_input += w``
      delivers input to the postsynaptic neuron.
    * ``on_post``: statements per synapse when the postsynaptic neuron spikes.
    * ``subexpressions``: named expressions the other fields use by name (see
      :mod:`spikeforge.models.subexpressions`).
    """

    kind = "weight_update"

    def __init__(
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
    ):
        super().__init__(name, params, derived, vars, var_defaults={"per_element": True, "batched": False})
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
        self.add_subexpressions(subexpressions, taken={n: "a trace" for n in trace_names})
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
        ctx_pre = self.context(trace_names | {DELIVER_NAME})
        self.on_pre = self.expanded(
            "on_pre", parse_statements(on_pre, ctx_pre, "on_pre", set(self.vars) | {DELIVER_NAME}))
        self.on_post = self.expanded("on_post", parse_statements(on_post, ctx, "on_post", set(self.vars)))
        for st in self.on_pre:
            if st.target == DELIVER_NAME and st.op != "+=":
                raise ModelError(f"'{st.source}': input is delivered with '{DELIVER_NAME} += ...'", name, "on_pre")
        self.source = {"on_pre": on_pre, "on_post": on_post}
        self.declare_units(units)

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
    """

    kind = "postsynaptic"
    unit_inputs = (IN_SYN_NAME,)

    def __init__(self, name, params=None, vars=None, equations=None, apply=None, derived=None, subexpressions=None,
                 units=None):
        super().__init__(name, params, derived, vars, var_defaults={"per_element": True, "batched": True})
        self.declare_units(units)
        self.add_subexpressions(subexpressions, extra=[IN_SYN_NAME])
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context([IN_SYN_NAME], False), state=set(self.vars)))
        self.apply_source = apply
        self.equations_source = equations

    def parse_apply(self, neuron_vars, as_written=False):
        """The ``apply`` statements, checked against the target neuron's variables (with the
        model's subexpressions substituted, unless ``as_written``)."""
        allowed = set(self.vars) | {INPUT_NAME} | set(neuron_vars)
        ctx = self.context([IN_SYN_NAME, INPUT_NAME, *neuron_vars])
        stmts = parse_statements(self.apply_source, ctx, "apply", allowed)
        return stmts if as_written else self.subexpressions.expand_statements(stmts)


class CurrentSourceModel(Model):
    """Input added to ``i_syn`` of every neuron of a population, each step.

    ``current`` is an expression (it may draw ``rand_normal()`` for noise); ``equations``
    evolve the source's own variables.
    """

    kind = "current_source"

    def __init__(self, name, params=None, vars=None, current="0", equations=None, derived=None,
                 subexpressions=None, units=None):
        super().__init__(name, params, derived, vars, var_defaults={"per_element": True, "batched": True})
        self.declare_units(units)
        from .expressions import parse_expression

        self.add_subexpressions(subexpressions)
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context(random_allowed=False), state=set(self.vars)))
        self.current = self.expanded("current", parse_expression(current, self.context(), "current"))
        self.current_source = current
