"""The intermediate form between the models and the templates: kernel specs.

Everything here is plain data. Code snippets are backend-neutral C: they read and write
*locals* (``v``, ``w``...) that the templates load from and store to the arrays, so the
same spec renders into a C++ loop or a CUDA thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.variables import Initializer


@dataclass
class ArraySpec:
    """One array of the simulation state. Its numpy shape is
    ``([slots] if slots > 1) + ([batch] if batched) + [size]``."""

    name: str  # C identifier, unique in the network (e.g. "exc_v")
    owner: str  # population or projection
    var: str  # the variable's name in its model (or a role name)
    dtype: str  # "scalar", "int32" or "uint32"
    size: int
    batched: bool
    role: str  # state | in_syn | trace | refractory | spike_count | spikes | connectivity | delta | input
    init: Initializer | None = None
    init_stream: int = 0
    slots: int = 1
    reduce: str | None = None  # for role "delta": how instances are combined
    target: str | None = None  # for role "delta": the shared array it updates
    comment: str = ""
    data: object = None  # fixed contents (connectivity), set by the generator

    def shape(self, batch_size: int) -> tuple[int, ...]:
        shape: tuple[int, ...] = (self.size,)
        if self.batched:
            shape = (batch_size, *shape)
        if self.slots > 1:
            shape = (self.slots, *shape)
        return shape


@dataclass
class Access:
    """A local variable loaded from (and maybe stored back to) an array element.

    ``index`` says which element: ``neuron`` (this neuron), ``pre``/``post`` (the pre- or
    postsynaptic neuron of this synapse), ``syn`` (this synapse) or ``shared`` (one
    value per array, or per batch instance if batched)."""

    local: str
    array: str
    index: str
    batched: bool
    dtype: str = "scalar"
    write: bool = False
    delta: str | None = None  # for a shared variable written per instance: its delta array


@dataclass
class Line:
    """One line of generated code; ``comment`` says which equation it came from."""

    code: str
    comment: str = ""


@dataclass
class KernelSpec:
    """A kernel for one population or projection, rendered by ``templates/<backend>/<template>``."""

    name: str
    kind: str  # neuron_update | presynaptic_update | postsynaptic_learning | batch_reduction
    target: str
    template: str
    description: str
    constants: list[Line] = field(default_factory=list)  # parameters and hoisted invariants
    loads: list[Access] = field(default_factory=list)
    code: list[Line] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # template-specific facts (sizes, arrays, flags)

    @property
    def reads(self) -> list[str]:
        return sorted({a.array for a in self.loads} | set(self.info.get("reads", ())))

    @property
    def writes(self) -> list[str]:
        out = {a.delta or a.array for a in self.loads if a.write}
        return sorted(out | set(self.info.get("writes", ())))


@dataclass
class NetworkSpec:
    """Everything a backend needs: arrays, kernels (in step order) and network facts."""

    name: str
    precision: str
    dt: float
    seed: int
    arrays: list[ArraySpec]
    kernels: list[KernelSpec]
    populations: list[dict]  # name, size, id, queue slots, recorded, spike source info
    projections: list[dict]
    integrators: dict[str, str]  # "population" -> method
    recorded_vars: list[dict] = field(default_factory=list)
    # True when no kernel writes an array shared across the batch (no batch reduction):
    # then the batch instances never meet and the CPU run loop may run each on its own
    instances_independent: bool = False
    # Kernels run outside the step loop, when the runtime asks (``custom_update(index)``):
    # a training compiler's batch reductions and optimiser steps, between trials
    custom_updates: list[KernelSpec] = field(default_factory=list)

    def array(self, name: str) -> ArraySpec:
        for a in self.arrays:
            if a.name == name:
                return a
        raise KeyError(name)
