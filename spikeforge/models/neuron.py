"""Neuron models: ODEs, a threshold condition, a reset and an optional refractory period."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ModelError
from .base import Model

#: The name of the summed synaptic (and current-source) input a neuron model reads.
INPUT_NAME = "i_syn"


class NeuronModel(Model):
    """A neuron model written as equations.

    Examples:
        >>> from spikeforge import NeuronModel
        >>> lif = NeuronModel(
        ...     "lif",
        ...     params={"tau_m": 20.0, "v_rest": -65.0, "v_reset": -65.0, "v_th": -50.0, "t_ref": 2.0},
        ...     vars={"v": -65.0},
        ...     equations="dv/dt = (v_rest - v + i_syn) / tau_m  (unless refractory)",
        ...     threshold="v > v_th",
        ...     reset="v = v_reset",
        ...     refractory="t_ref",
        ... )
        >>> lif.spiking
        True

    ``i_syn`` is the sum of all postsynaptic currents and current sources reaching the
    neuron this step; ``t`` and ``dt`` are the time and time step in ms.  An ODE flagged
    ``(unless refractory)`` is held still while the neuron is refractory; the threshold is
    never crossed while refractory.  ``integrator`` forces an integration method
    (``exact``, ``exponential_euler``, ``euler``, ``rk4``); by default the first that
    applies is chosen, in that order.

    ``subexpressions`` names expressions of the state that the other fields use by name,
    e.g. ``{"alpha_m": "0.32 * 4 / exprel((13 - v + VT) / 4)"}``: evaluated per neuron and
    step (see :mod:`spikeforge.models.subexpressions`).
    """

    kind = "neuron"
    unit_inputs = (INPUT_NAME,)

    def _parse(  # type: ignore[override]  # its own fields; Model._parse takes the shared ones
        self,
        name: str,
        params: dict[str, Any] | Sequence[str] | None = None,
        vars: dict[str, Any] | None = None,
        equations: str | list[str] | None = None,
        threshold: str | None = None,
        reset: str | list[str] | None = None,
        refractory: str | float | None = None,
        derived: dict[str, str] | None = None,
        integrator: str | None = None,
        sim_code: str | list[str] | None = None,
        subexpressions: dict[str, str] | None = None,
        units: dict[str, str] | None = None,
    ) -> None:
        from .expressions import parse_expression, parse_odes, parse_statements, symbol

        super()._parse(name, params, derived, vars, var_defaults={"per_element": True, "batched": True})
        if INPUT_NAME in self.vars or INPUT_NAME in self.params:
            raise ModelError(f"'{INPUT_NAME}' is reserved for the synaptic input", name, "vars")
        self.add_subexpressions(subexpressions, extra=[INPUT_NAME])
        ctx = self.context(extra=[INPUT_NAME])
        self.odes = self.expanded("equations", parse_odes(
            equations, self.context(extra=[INPUT_NAME], random_allowed=False), state=set(self.vars)))
        self.equations_source = equations
        # Statements run every step after integration (e.g. input spike generators' state).
        self.sim_code = self.expanded("sim_code", parse_statements(sim_code, ctx, "sim_code", set(self.vars)))
        self.threshold = None
        if threshold is not None:
            self.threshold = self.expanded("threshold", parse_expression(threshold, ctx, "threshold", condition=True))
        self.threshold_source = threshold
        self.reset = self.expanded("reset", parse_statements(reset, ctx, "reset", set(self.vars)))
        if self.reset and self.threshold is None:
            raise ModelError("a reset needs a threshold", name, "reset")
        for st in self.reset:  # the reset runs apart from the update (on the CPU, a pass of its own)
            if symbol(INPUT_NAME) in st.value.free_symbols:
                raise ModelError(f"'{st.source}': the reset cannot read '{INPUT_NAME}' (directly or through a "
                                 f"subexpression); keep the input in a variable in sim_code", name, "reset")
        self.refractory = None
        self.refractory_source = refractory
        if refractory is not None:
            if self.threshold is None:
                raise ModelError("a refractory period needs a threshold", name, "refractory")
            rctx = self.context(random_allowed=False)
            rctx.known = self.constant_names()
            self.refractory = parse_expression(refractory, rctx, "refractory")
        self.integrator = integrator
        if integrator is not None and integrator not in ("exact", "exponential_euler", "euler", "rk4"):
            raise ModelError(
                f"unknown integrator {integrator!r} (exact, exponential_euler, euler, rk4)", name, "integrator"
            )
        flagged = [o.var for o in self.odes if o.unless_refractory]
        if flagged and self.refractory is None:
            raise ModelError(
                f"'{flagged[0]}' is flagged (unless refractory) but the model has no refractory period",
                name,
                "equations",
            )
        for v in self.vars.values():
            if not v.batched and v.name in {o.var for o in self.odes}:
                raise ModelError(f"variable '{v.name}' has an ODE, so it must be batched", name, "vars")
        self.declare_units(units)

    @property
    def spiking(self) -> bool:
        if self.__dict__.get("_pending"):  # known without parsing
            return self.__dict__["_arguments"].get("threshold") is not None
        return self.threshold is not None


class SpikeSourceArrayModel(NeuronModel):
    """Emits spikes at times given per neuron and per batch instance (see
    :meth:`spikeforge.runtime.simulation.Simulation.set_spike_times`)."""

    def _parse(self, name="spike_source_array"):
        Model._parse(self, name)
        self.odes = []
        self.sim_code = []
        self.threshold = True  # spikes come from the arrays
        self.threshold_source = "t >= next spike time"
        self.equations_source = None
        self.reset = []
        self.refractory = None
        self.refractory_source = None
        self.integrator = None

    @property
    def spiking(self) -> bool:
        return True
