"""The intermediate form between the models and the templates: kernel specs.

Everything here is plain data. Code snippets are backend-neutral C: they read and write
*locals* (``v``, ``w``...) that the templates load from and store to the arrays, so the
same spec renders into a C++ loop or a CUDA thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the models load sympy: a spec read back from the warm-start cache needs none
    from ..models.variables import Initializer


def param_array_name(owner: str, part: str, name: str) -> str:
    """The array of a parameter read at run time (``exc_p_c``; ``proj_ps_p_tau`` for a
    projection's postsynaptic parameter)."""
    return f"{owner}_{'ps_' if part == 'postsynaptic' else ''}p_{name}"


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
    """A kernel for one population or projection, rendered by ``templates/<backend>/<template>``.

    The arrays a kernel touches are typed fields, never found in ``info``:

    - ``loads``: array elements loaded into locals (and stored back when written);
    - ``reads`` / ``writes``: every array the kernel reads / writes. The constructor takes the
      arrays beyond the loads and adds the loads' (a written load with a delta array writes the
      delta), so after construction they hold the whole sorted set;
    - ``arrays``: the arrays the template names by role (``spk``, ``spk_cnt``, ``flags``,
      ``row_start``...), role -> array name; a family of arrays (one per state variable, say)
      is a role -> {key: array name} mapping, given only where the kernel uses it. Each
      template declares the roles it uses in its first line (``{#- uses: spk, spk_cnt, ptr? -#}``,
      see :mod:`.render`).

    ``info`` holds the template's other facts only: sizes, flags, code parts and loop
    descriptions (it may mention arrays inside such descriptions, e.g. the summed variables,
    when those arrays are also in ``reads`` or ``writes``)."""

    name: str
    kind: str  # neuron_update | presynaptic_update | postsynaptic_learning | batch_reduction | ...
    target: str
    template: str
    description: str
    constants: list[Line] = field(default_factory=list)  # parameters and hoisted invariants
    loads: list[Access] = field(default_factory=list)
    code: list[Line] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # template facts that are not arrays (sizes, flags, code parts)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    arrays: dict[str, str | dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        for key in ("reads", "writes", "arrays"):
            if key in self.info:
                raise ValueError(f"kernel '{self.name}': info['{key}'] is an array list; give it as "
                                 f"KernelSpec({key}=...)")
        self.reads = tuple(sorted({a.array for a in self.loads} | set(self.reads)))
        self.writes = tuple(sorted({a.delta or a.array for a in self.loads if a.write} | set(self.writes)))

    def role_arrays(self, roles) -> list[str]:
        """The arrays of ``roles`` (each a role of :attr:`arrays`), families flattened."""
        out = []
        for role in roles:
            value = self.arrays[role]
            out += list(value.values()) if isinstance(value, dict) else [value]
        return out


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
