"""The network description: populations, projections and current sources.

A :class:`Network` knows nothing about backends or training. ``Network.build()`` hands
it to the code generator and a backend and returns a running
:class:`~spikeforge.runtime.simulation.Simulation`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import keyword
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NetworkError
from .models.base import Model
from .models.neuron import NeuronModel
from .models.synapse import CurrentSourceModel, PostsynapticModel, WeightUpdateModel
from .models.variables import Var
from .recording import VarRecording, check_every, neuron_selection
from .timed import TimedArray, make_timed_array, steps_for_duration

if TYPE_CHECKING:  # the runtime and the value binding (sympy) load only when needed
    from .runtime.simulation import Simulation
    from .values import ValueSpecs


def _value_specs():
    from .values import ValueSpecs

    return ValueSpecs()

PRECISIONS = ("float", "double")
#: Neuron, batch and synapse indices are uint32 in the generated code.
MAX_INDEX = 2**32 - 1
#: Poisson inputs count events per step in uint32: a mean far below 2**32.
MAX_POISSON_MEAN = 1e9

_CXX_RESERVED = {
    "auto", "bool", "break", "case", "char", "class", "const", "continue", "default", "delete", "do",
    "double", "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "new",
    "operator", "private", "public", "register", "return", "short", "signed", "sizeof", "static",
    "struct", "switch", "template", "this", "typedef", "union", "unsigned", "void", "volatile", "while",
    "ctx", "scalar",
}


def check_identifier(name, what: str, in_code: bool = True) -> str:
    """A name users give; ``in_code``: it also names variables of the generated code."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
        raise NetworkError(f"{what} name {name!r} is not a valid identifier (letters, digits, '_')")
    if in_code and name in _CXX_RESERVED:
        raise NetworkError(f"{what} name {name!r} is reserved in generated code; choose another")
    return name


# -- connectivity -----------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """All-to-all: synapse (i, j) at index ``i * n_post + j``.

    Examples:
        >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Dense, Network
        >>> net = Network("demo", dt=0.1)
        >>> a, b = net.add_population("a", 3, LIF), net.add_population("b", 4, LIF)
        >>> net.add_projection("ab", "a", "b", STATIC_CONSTANT, DELTA_CURR, Dense(), {"w": 0.5}).n_synapses
        12
    """

    kind = "dense"


@dataclass(frozen=True)
class OneToOne:
    """Neuron i to neuron i (needs equal sizes).

    Examples:
        >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network, OneToOne
        >>> net = Network("demo", dt=0.1)
        >>> a, b = net.add_population("a", 5, LIF), net.add_population("b", 5, LIF)
        >>> net.add_projection("ab", "a", "b", STATIC_CONSTANT, DELTA_CURR, OneToOne(), {"w": 0.5}).n_synapses
        5
    """

    kind = "one_to_one"


@dataclass(frozen=True)
class FixedProbability:
    """Each pair is connected independently with probability ``p``: stored as ragged rows,
    or, ``procedural``, never stored: each spike's row is drawn again from the same Philox
    numbers (the same synapses as stored; docs/models.md, "Procedural connectivity").

    Examples:
        >>> from spikeforge import FixedProbability
        >>> FixedProbability(0.02).kind, FixedProbability(0.02, procedural=True).kind
        ('sparse', 'procedural')
    """

    p: float
    allow_autapses: bool = True
    procedural: bool = False

    def __post_init__(self):
        if not (isinstance(self.p, (int, float)) and 0.0 <= self.p <= 1.0):
            raise NetworkError(f"connection probability must be in [0, 1], got {self.p!r}")
        if not isinstance(self.procedural, bool):
            raise NetworkError(f"connectivity.fixed_probability.procedural: expected true or false, got "
                               f"{self.procedural!r}")

    @property
    def kind(self) -> str:
        return "procedural" if self.procedural else "sparse"


@dataclass(frozen=True)
class FromList:
    """Explicit synapses ``pre[k] -> post[k]`` (stored as ragged rows, sorted by pre).

    Examples:
        >>> from spikeforge import DELTA_CURR, LIF, STATIC, FromList, Network
        >>> net = Network("demo", dt=0.1)
        >>> a, b = net.add_population("a", 3, LIF), net.add_population("b", 3, LIF)
        >>> proj = net.add_projection("ab", "a", "b", STATIC, DELTA_CURR, FromList([0, 0, 2], [1, 2, 0]),
        ...                           wu_init={"w": [0.5, 0.25, 1.0]})
        >>> proj.n_synapses
        3
    """

    pre: tuple
    post: tuple
    kind = "sparse"


def make_connectivity(spec):
    """A connectivity object from what a user gives: ``"dense"``, ``"one_to_one"``, an
    object, or a mapping (docs/models.md, "Connectivity")."""
    from .connectivity import FixedInDegree, FixedOutDegree, FixedTotal, FromExpressions

    if isinstance(spec, (Dense, OneToOne, FixedProbability, FromList, FixedInDegree, FixedOutDegree, FixedTotal,
                         FromExpressions)):
        return spec
    if isinstance(spec, str) and spec in ("dense", "all_to_all") or spec is None:
        return Dense()
    if spec == "one_to_one":
        return OneToOne()
    if isinstance(spec, dict) and spec and set(spec) <= {"condition", "probability", "params", "allow_autapses"} \
            and set(spec) & {"condition", "probability"}:
        return FromExpressions(spec.get("condition"), spec.get("probability"), spec.get("params") or {},
                               spec.get("allow_autapses", True))
    if isinstance(spec, dict) and len(spec) == 1:
        (k, v), = spec.items()
        if k == "fixed_probability":
            if isinstance(v, dict):
                return FixedProbability(v.get("p"), bool(v.get("allow_autapses", True)), v.get("procedural", False))
            return FixedProbability(v)
        if k == "from_list":
            return FromList(tuple(v["pre"]), tuple(v["post"]))
        counted = {"fixed_in_degree": (FixedInDegree, "k"), "fixed_out_degree": (FixedOutDegree, "k"),
                   "fixed_total": (FixedTotal, "n")}
        if k in counted:
            cls, arg = counted[k]
            if isinstance(v, dict):
                unknown = sorted(set(v) - {arg, "allow_autapses"})
                if unknown or arg not in v:
                    raise NetworkError(f"connectivity.{k}: expected {{{arg}: .., allow_autapses: ..}}, got {v!r}")
                return cls(v[arg], v.get("allow_autapses", True))
            return cls(v)
    raise NetworkError(
        f"unknown connectivity {spec!r} (dense, one_to_one, {{fixed_probability: p}}, "
        "{from_list: {pre: [...], post: [...]}}, {condition: ..., probability: ..., params: {...}}, "
        "{fixed_in_degree: k}, {fixed_out_degree: k}, {fixed_total: n})"
    )


class SparseRows:
    """Ragged rows (CSR); the column view needed for learning on postsynaptic spikes is
    built on first use."""

    def __init__(self, row_start: np.ndarray, post_ind: np.ndarray, n_post: int):
        self.row_start = row_start  # (n_pre + 1,) uint32
        self.post_ind = post_ind  # (S,) uint32, sorted within each row
        self.n_post = n_post
        self._columns = None

    @property
    def n_synapses(self) -> int:
        return int(self.post_ind.size)

    @property
    def pre_ind(self) -> np.ndarray:
        return np.repeat(np.arange(self.row_start.size - 1, dtype=np.uint32), np.diff(self.row_start))

    def _column_view(self):
        if self._columns is None:
            col_syn = np.argsort(self.post_ind, kind="stable").astype(np.uint32)  # rows stay in pre order
            col_start = np.zeros(self.n_post + 1, dtype=np.uint32)
            np.cumsum(np.bincount(self.post_ind, minlength=self.n_post), out=col_start[1:])
            self._columns = (col_start, col_syn)
        return self._columns

    @property
    def col_start(self) -> np.ndarray:  # (n_post + 1,)
        return self._column_view()[0]

    @property
    def col_syn(self) -> np.ndarray:  # (S,) synapse indices of each column, by pre
        return self._column_view()[1]


def _rows_from_pairs(pre, post, n_pre, n_post, order=None) -> SparseRows:
    """CSR of the pairs; ``order`` may be a stable argsort of ``pre * n_post + post``."""
    if pre.size > MAX_INDEX:  # row starts and synapse indices are uint32
        raise NetworkError(f"{pre.size} synapses in one projection, more than the {MAX_INDEX} it can index")
    if order is None:
        order = np.argsort(pre.astype(np.int64) * n_post + post, kind="stable")
    pre, post = pre[order], post[order]
    row_start = np.zeros(n_pre + 1, dtype=np.uint32)
    np.cumsum(np.bincount(pre, minlength=n_pre), out=row_start[1:])
    return SparseRows(row_start, post.astype(np.uint32), n_post)


def check_procedural(proj, where: str):
    """Procedural connectivity keeps nothing per synapse: static weights only."""
    wu = proj.weight_update
    per_synapse = [n for n, v in proj.wu_vars.items() if v.per_element]
    if per_synapse or wu.on_post or wu.has_dynamics:
        what = (f"per-synapse variable(s) {', '.join(per_synapse)}" if per_synapse
                else "code on postsynaptic spikes" if wu.on_post else "per-step synapse dynamics")
        raise NetworkError(f"{where}: procedural connectivity stores nothing per synapse, but weight update "
                           f"'{wu.name}' has {what}; use a weight given as a parameter (e.g. static_constant) or "
                           "stored connectivity")
    if proj.pre.size > MAX_INDEX or proj.post.size > MAX_INDEX:
        raise NetworkError(f"{where}: procedural connectivity indexes neurons with uint32")


def synapse_indices(proj) -> dict[str, np.ndarray]:
    """The presynaptic (``i``) and postsynaptic (``j``) neuron of every synapse, in synapse order."""
    kind, n_post = proj.connectivity.kind, proj.post.size
    if kind == "dense":
        k = np.arange(proj.pre.size * n_post, dtype=np.int64)
        return {"i": k // n_post, "j": k % n_post}
    if kind == "one_to_one":
        k = np.arange(proj.pre.size, dtype=np.int64)
        return {"i": k, "j": k}
    return {"i": proj.rows.pre_ind, "j": proj.rows.post_ind}


# -- network elements -------------------------------------------------------------------


class _Element:
    """What populations, projections, current sources and Poisson inputs share: an element made
    by a call that passed its checks before (see ``Network._warm_step``) waits for its values
    (bound parameters, variables, connectivity) until one of them is read; reading any of
    them makes (binds) every waiting element of its network, in the order they were added."""

    def __getattr__(self, attr: str):
        d = self.__dict__
        if attr.startswith("__") or not d.get("_warm_pending"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        d["_warm_net"]._materialise()
        return getattr(self, attr)

    def __setattr__(self, attr: str, value) -> None:
        if self.__dict__.get("_warm_pending") and attr != "record_spikes":
            self.__dict__["_warm_net"]._materialise()  # what is set replaces a made value
        object.__setattr__(self, attr, value)


@dataclass
class Population(_Element):
    name: str
    size: int
    model: NeuronModel
    params: dict[str, float]
    vars: dict[str, Var]
    record_spikes: bool = False
    id: int = 0
    #: how each parameter is given: compiled in, per neuron, dynamic or per batch instance
    values: ValueSpecs = field(default_factory=_value_specs)


@dataclass
class Projection(_Element):
    name: str
    pre: Population
    post: Population
    connectivity: Any  # Dense, OneToOne, FixedProbability, ... (see make_connectivity)
    weight_update: WeightUpdateModel
    wu_params: dict[str, float]
    wu_vars: dict[str, Var]
    wu_pre_vars: dict[str, Var]
    wu_post_vars: dict[str, Var]
    postsynaptic: PostsynapticModel
    ps_params: dict[str, float]
    ps_vars: dict[str, Var]
    delay_steps: int = 0
    id: int = 0
    rows: SparseRows | None = None
    #: how each weight-update / postsynaptic parameter is given (see spikeforge.values)
    wu_values: ValueSpecs = field(default_factory=_value_specs)
    ps_values: ValueSpecs = field(default_factory=_value_specs)
    #: named pathways given their own delays (``delay={"up": 1.0, "down": 3.0}``): pathway -> steps
    #: added to ``delay_steps``; empty when one delay holds for every pathway
    pathway_delay_steps: dict[str, int] = field(default_factory=dict)
    #: per-synapse (dendritic) delays in steps, one per synapse, or None (see spikeforge.delays)
    synapse_delay_steps: np.ndarray | None = None
    #: slots of the dendritic delay buffer (the largest allowed per-synapse delay + 1)
    dendritic_slots: int = 0

    def pre_delays(self) -> dict[str | None, int]:
        """The delay in steps of each piece of on_pre code: ``{pathway: steps}`` in the order
        written, or ``{None: steps}`` for plain on_pre code."""
        paths = self.weight_update.pathways or {None: None}
        return {p: self.delay_steps + self.pathway_delay_steps.get(p, 0) for p in paths}

    @property
    def n_synapses(self) -> int:
        kind = self.connectivity.kind
        if kind == "dense":
            return self.pre.size * self.post.size
        if kind == "one_to_one":
            return self.pre.size
        if kind == "procedural":  # never drawn as a whole: the expected count
            return round(self.connectivity.p * self.pre.size * self.post.size)
        assert self.rows is not None, f"projection '{self.name}': connectivity not drawn yet"
        return self.rows.n_synapses


@dataclass
class CurrentSource(_Element):
    name: str
    population: Population
    model: CurrentSourceModel
    params: dict[str, float]
    vars: dict[str, Var]
    id: int = 0
    values: ValueSpecs = field(default_factory=_value_specs)


@dataclass
class PoissonInput(_Element):
    """External Poisson drive (Brian2's PoissonInput): each neuron of ``population`` receives
    the events of ``n`` independent Poisson sources of ``rate_hz`` each; every event adds
    ``weight`` to the neuron's variable ``target``. Per step a neuron gets Poisson(lam) events,
    ``lam = n * rate_hz * dt / 1000`` (dt in ms), drawn from the Philox streams of ``id``."""

    name: str
    population: Population
    target: str
    n: int
    rate_hz: float
    weight: float
    id: int = 0

    def lam(self, dt: float) -> float:
        """The mean number of events per neuron and step of ``dt`` ms."""
        return self.n * self.rate_hz * dt * 1e-3


# A waiting element reads its values through _Element.__getattr__, so the dataclasses' defaults
# must not be class attributes (their __init__ keeps them).
for _cls in (Population, Projection, CurrentSource, PoissonInput):
    for _f in dataclasses.fields(_cls):
        if _f.name in _cls.__dict__:
            delattr(_cls, _f.name)


#: Simulation options a warm start keeps apart from the key: they change how the loaded
#: library runs, not what it is or what it computes.
_WARM_OPTIONS = frozenset({"threads", "on_nonfinite", "check_every", "progress"})


def _described(method):
    """A call that adds to the network, checked once: the first time its description (the
    call and everything before it) is given, it runs in full and, when it succeeds, leaves a
    known-good mark; the next time, the element it makes waits for its values (see
    :class:`_Element`), so that a warm start never parses or binds."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        given = dict(arguments.arguments)
        given.pop("self")
        key, good = self._warm_step(method.__name__, given)
        if good:
            element = self._defer(method.__name__, args, kwargs, given)
        else:
            from .warm import reemitted

            with reemitted() as caught:
                element = method(self, *args, **kwargs)
            element.__dict__["_warm_net"] = self
            element.__dict__["_warm_digest"] = _element_digest(element)
            if caught:  # a call that warns runs in full every time: the warning is part of what it does
                key = None
                self.__dict__["_warm_key"] = None
        self._warm_passed(key, good)
        return element

    return wrapper


def _element_digest(element) -> str:
    """What an element holds (values, connectivity, ...), to find it changed in place."""
    from .warm import state_digest

    return state_digest({k: v for k, v in element.__dict__.items()
                         if not k.startswith("_warm") and k != "record_spikes"})


def _by_name(value):
    return value.name if isinstance(value, _Element) else value


@dataclass
class Network:
    """A spiking network: ``dt`` in ms, ``batch_size`` independent instances, one ``seed``.

    Examples:
        >>> from spikeforge import LIF, Network
        >>> net = Network("demo", dt=0.1, batch_size=4, seed=1)
        >>> exc = net.add_population("exc", 100, LIF, params={"v_th": -50.0})
        >>> exc.size, net.batch_size
        (100, 4)
    """

    name: str = "network"
    dt: float = 0.1
    batch_size: int = 1
    seed: int = 0
    precision: str = "float"
    populations: dict[str, Population] = field(default_factory=dict)
    projections: dict[str, Projection] = field(default_factory=dict)
    current_sources: dict[str, CurrentSource] = field(default_factory=dict)
    poisson_inputs: dict[str, PoissonInput] = field(default_factory=dict)
    recorded_vars: list[tuple[str, str]] = field(default_factory=list)
    #: (population, var) -> what of it is recorded (neurons, every); see spikeforge.recording
    var_recordings: dict = field(default_factory=dict)
    #: population -> the neurons whose spikes are recorded (absent: all of them)
    spike_neurons: dict = field(default_factory=dict)
    #: populations whose spike count per step and batch instance is recorded (population rate)
    recorded_rates: list[str] = field(default_factory=list)
    #: (population, parameter) -> TimedArray: parameters that follow an array over time
    timed_inputs: dict = field(default_factory=dict)

    def __post_init__(self):
        check_identifier(self.name, "network", in_code=False)
        if not isinstance(self.dt, (int, float)) or not math.isfinite(self.dt) or self.dt <= 0:
            raise NetworkError(f"dt must be a positive number of ms, got {self.dt!r}")
        self.dt = float(self.dt)
        self._check_batch(self.batch_size)
        if not isinstance(self.seed, (int, np.integer)) or not 0 <= int(self.seed) < 2**64:
            raise NetworkError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise NetworkError(f"precision must be 'float' or 'double', got {self.precision!r}")
        from . import warm

        empty = not any((self.populations, self.projections, self.current_sources, self.poisson_inputs,
                         self.recorded_vars, self.var_recordings, self.spike_neurons, self.recorded_rates,
                         self.timed_inputs))
        # the key of the description so far (None: no warm start), and the calls waiting to run
        self.__dict__["_warm_key"] = warm.check_key("network", warm.normalise(
            [self.name, self.dt, int(self.batch_size), int(self.seed), self.precision]) if empty else None)
        self.__dict__["_warm_calls"] = []

    def __copy__(self):
        """A shallow copy, every element made; the copy has no warm start."""
        self._materialise()
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__["_warm_key"], new.__dict__["_warm_calls"] = None, []
        return new

    # -- the warm start (spikeforge.warm) -------------------------------------------------
    def _no_warm_start(self) -> None:
        """Build this network in full, keeping no entry (``spikeforge run`` keeps its own)."""
        self.__dict__["_warm_key"] = None

    def _settings(self) -> tuple:
        return self.name, self.dt, self.batch_size, self.seed, self.precision

    def _warm_step(self, call: str, arguments: dict) -> tuple[str | None, bool]:
        """The key of the description with this call added, and whether it passed its checks
        before; (None, False) once something cannot be described. A call run in full makes
        the elements waiting before it first."""
        from . import warm

        chain = self.__dict__.get("_warm_key")
        key = None
        if chain is not None:
            desc = warm.normalise([call, [self.name, self.dt, int(self.batch_size), int(self.seed), self.precision],
                                   {k: _by_name(v) for k, v in arguments.items()}])
            key = warm.check_key("network call", [chain, desc]) if desc is not None else None
        good = key is not None and warm.checked(key)
        if key is None:
            self.__dict__["_warm_key"] = None
        if not good:
            self._materialise()
        return key, good

    def _warm_passed(self, key: str | None, good: bool) -> None:
        """The call of ``key`` passed its checks (or is known to)."""
        if key is not None:
            from . import warm

            if not good:
                warm.mark_checked(key)
            self.__dict__["_warm_key"] = key

    def _defer(self, call: str, args: tuple, kwargs: dict, given: dict):
        """The element of a call known to pass its checks, its values made later (see _Element)."""
        where = f"{call.removeprefix('add_').replace('_', ' ')} '{given['name']}'"
        cls: type[_Element]
        target: dict[str, Any]
        if call == "add_population":
            cls, target = Population, self.populations
            fields = {"size": int(given["size"]), "model": given["model"],
                      "record_spikes": bool(given["record_spikes"])}
        elif call == "add_projection":
            cls, target = Projection, self.projections
            fields = {"pre": self._population(given["pre"], where), "post": self._population(given["post"], where),
                      "connectivity": make_connectivity(given["connectivity"]),
                      "weight_update": given["weight_update"], "postsynaptic": given["postsynaptic"]}
        elif call == "add_current_source":
            cls, target = CurrentSource, self.current_sources
            fields = {"population": self._population(given["population"], where), "model": given["model"]}
        else:
            cls, target = PoissonInput, self.poisson_inputs
            fields = {"population": self._population(given["population"], where), "target": given["target"],
                      "n": int(given["n"]), "rate_hz": float(given["rate_hz"]), "weight": float(given["weight"])}
        element: Any = cls.__new__(cls)
        element.__dict__.update(name=given["name"], id=self._next_id(), **fields, _warm_net=self, _warm_pending=True)
        target[element.name] = element
        self.__dict__["_warm_calls"].append((element, call, args, kwargs, self._settings()))
        return element

    def _element_dicts(self) -> dict[str, dict]:
        return {"populations": self.populations, "projections": self.projections,
                "current_sources": self.current_sources, "poisson_inputs": self.poisson_inputs}

    def _materialise(self) -> None:
        """Run the calls whose elements wait, in the order they were made, as they were made
        (the network's settings then), into the same element objects."""
        d = self.__dict__
        calls = [c for c in d.get("_warm_calls") or () if c[0].__dict__.get("_warm_pending")]
        if not calls:
            return
        d["_warm_calls"] = []
        waiting = {id(c[0]): c for c in calls}
        dicts = self._element_dicts()
        entries = sorted(((e.id, kind, e) for kind, dd in dicts.items() for e in dd.values()), key=lambda x: x[0])
        saved = self._settings()
        done: set[int] = set()
        for dd in dicts.values():
            dd.clear()
        try:
            for _, kind, element in entries:
                call = waiting.get(id(element))
                if call is not None:
                    _, name, args, kwargs, settings = call
                    self.name, self.dt, self.batch_size, self.seed, self.precision = settings
                    made = getattr(type(self), name).__wrapped__(self, *args, **kwargs)
                    ed = element.__dict__
                    ed["_warm_pending"] = False
                    for k, v in made.__dict__.items():
                        ed.setdefault(k, v)  # what was set on the waiting element stays (record_spikes)
                    ed["_warm_digest"] = _element_digest(element)
                    done.add(id(element))
                dicts[kind][element.name] = element
        except BaseException:
            for dd in dicts.values():
                dd.clear()
            for _, kind, element in entries:
                dicts[kind][element.name] = element
            d["_warm_calls"] = [c for c in calls if id(c[0]) not in done]
            raise
        finally:
            self.name, self.dt, self.batch_size, self.seed, self.precision = saved

    def _warm_build_key(self, backend: str) -> str | None:
        """The warm-start key of building this network now on ``backend``: the description
        (every call, in order), what is recorded, the settings and the toolchain; None when
        the network is not only what its calls made (an element changed in place, state set
        from outside)."""
        from . import warm

        d = self.__dict__
        if d.get("_warm_key") is None or set(d) - _NETWORK_FIELDS - {"_warm_key", "_warm_calls"}:
            return None
        dicts = self._element_dicts()
        for dd in dicts.values():
            for element in dd.values():
                ed = element.__dict__
                if ed.get("_warm_net") is not self:
                    return None
                if not ed.get("_warm_pending") and ed.get("_warm_digest") != _element_digest(element):
                    return None
        state = warm.normalise([
            d["_warm_key"], backend, [self.name, self.dt, int(self.batch_size), int(self.seed), self.precision],
            {kind: list(dd) for kind, dd in dicts.items()},
            {p.name: bool(p.record_spikes) for p in self.populations.values()},
            self.recorded_vars, self.var_recordings, self.spike_neurons, self.recorded_rates, self.timed_inputs])
        return warm.build_key(state)

    @staticmethod
    def _check_batch(b):
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise NetworkError(f"batch_size must be a positive integer, got {b!r}")
        if b > MAX_INDEX:  # batch indices are uint32 in the generated code
            raise NetworkError(f"batch_size {b} is more than the {MAX_INDEX} instances a network can run")

    # -- building the description --------------------------------------------------------
    def _unique(self, name, what):
        check_identifier(name, what)
        if (name in self.populations or name in self.projections or name in self.current_sources
                or name in self.poisson_inputs):
            raise NetworkError(f"{what} name '{name}' is already used in network '{self.name}'")

    def _population(self, pop, what) -> Population:
        if isinstance(pop, Population):
            pop = pop.name
        if pop not in self.populations:
            known = ", ".join(self.populations) or "none"
            raise NetworkError(f"{what}: unknown population '{pop}' (populations: {known})")
        return self.populations[pop]

    @_described
    def add_population(self, name: str, size: int, model: NeuronModel, params: dict | None = None,
                       init: dict | None = None, record_spikes: bool = False, *, dynamic: Sequence[str] | None = None,
                       batch_values: dict | None = None, draws: dict | None = None) -> Population:
        """Add ``size`` neurons of ``model``; ``init`` maps variables to initialisers.

        A parameter is a number (compiled in), or one value per neuron: a list or array,
        ``{values, counts}``, ``{uniform: [lo, hi]}``, ``{normal: [mean, sd]}`` or an
        expression of ``i``, ``N``, ``rand()``, ``randn()``, other parameters and the named
        per-neuron ``draws`` (``{"r": "rand()"}``). ``dynamic`` names parameters that
        ``Simulation.set_param`` may change between runs; ``batch_values`` gives a parameter
        one value per batch instance. An initialiser may also be an expression of
        parameters, draws and other variables (``"b*v"``), a list or ``{values, counts}``.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> exc = net.add_population("exc", 80, LIF, params={"v_th": -50.0},
            ...                          init={"v": {"uniform": [-65.0, -50.0]}})
            >>> exc.size
            80
        """
        self._unique(name, "population")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise NetworkError(f"population '{name}': size must be a positive integer, got {size!r}")
        if size > MAX_INDEX:  # neuron indices are uint32 in the generated code
            raise NetworkError(f"population '{name}': size {size} is more than the {MAX_INDEX} neurons a "
                               "population can hold")
        if not isinstance(model, NeuronModel):
            raise NetworkError(f"population '{name}': model must be a NeuronModel, got {model!r}")
        from .models.evaluate import ElementScope
        from .values import bind_var_inits

        where = f"population '{name}'"
        pop_id = self._next_id()
        scope = ElementScope(int(size), pop_id, counts={"N": int(size)})
        bound, specs = self._bind_values(model, params, where, scope, dynamic, batch_values, draws)
        pop = Population(
            name, int(size), model, bound, model.bind_vars(init, where), bool(record_spikes), id=pop_id,
            values=specs,
        )
        bind_var_inits(model, pop.vars, specs, where)
        self.populations[name] = pop
        return pop

    @_described
    def add_projection(
        self,
        name: str,
        pre: str,
        post: str,
        weight_update: WeightUpdateModel,
        postsynaptic: PostsynapticModel,
        connectivity: Any = "dense",
        wu_params: dict | None = None,
        wu_init: dict | None = None,
        ps_params: dict | None = None,
        ps_init: dict | None = None,
        delay: float | dict | Any = 0.0,
        *,
        wu_dynamic: Sequence[str] | None = None,
        wu_batch_values: dict | None = None,
        wu_draws: dict | None = None,
        ps_dynamic: Sequence[str] | None = None,
        ps_batch_values: dict | None = None,
        ps_draws: dict | None = None,
        max_delay: float | None = None,
    ) -> Projection:
        """Connect ``pre`` to ``post``. ``delay`` (ms, a multiple of dt) holds every spike
        for that long before it is delivered; for a weight-update model with named pathways it
        may map each pathway to its own delay (``{"up": 1.0, "down": 3.0}``).

        Weight-update parameters may be given per synapse (expressions of ``i``, ``j``,
        ``N``, ``N_pre``, ``N_post``...), postsynaptic ones per postsynaptic neuron, and
        either may be dynamic or per batch instance, as for populations.

        ``delay`` may also be one value per synapse (a list or array, ``{values, counts}``,
        ``{uniform: ...}`` or an expression such as ``"1 + 4*rand()"``, in ms, rounded to the
        nearest step): the input each synapse delivers waits in a dendritic buffer of
        ``max_delay`` ms (default: the largest delay); see :mod:`spikeforge.delays`.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF)
            >>> ee = net.add_projection("ee", "exc", "exc", STATIC_CONSTANT, DELTA_CURR, {"fixed_probability": 0.1},
            ...                         wu_params={"w": 0.5}, delay=1.0)
            >>> ee.delay_steps
            10
        """
        self._unique(name, "projection")
        where = f"projection '{name}'"
        pre_pop = self._population(pre, f"{where}, pre")
        post_pop = self._population(post, f"{where}, post")
        if not isinstance(weight_update, WeightUpdateModel):
            raise NetworkError(f"{where}: weight_update must be a WeightUpdateModel, got {weight_update!r}")
        if not isinstance(postsynaptic, PostsynapticModel):
            raise NetworkError(f"{where}: postsynaptic must be a PostsynapticModel, got {postsynaptic!r}")
        if not pre_pop.model.spiking:
            raise NetworkError(f"{where}: presynaptic population '{pre_pop.name}' does not spike (no threshold)")
        try:
            conn = make_connectivity(connectivity)
        except NetworkError as exc:
            raise NetworkError(f"{where}: {exc}") from None
        if conn.kind == "one_to_one" and pre_pop.size != post_pop.size:
            raise NetworkError(
                f"{where}: one_to_one needs equal sizes, got {pre_pop.size} and {post_pop.size}"
            )
        from .delays import check_delay_options, is_per_synapse

        pathway_delays = isinstance(delay, dict) and bool(weight_update.pathways) and set(delay) <= set(
            weight_update.pathways)  # {up: 1, down: 3}: one delay per named pathway, even one named 'values'
        per_synapse_delay = delay if is_per_synapse(delay) and not pathway_delays else None
        check_delay_options(per_synapse_delay, max_delay, weight_update, wu_dynamic, where)
        if per_synapse_delay is not None:
            delay = 0.0  # the spike reaches the synapses at once; each synapse's input waits its own delay
        pathway_steps = {}
        if isinstance(delay, dict):  # one delay per named pathway
            pathway_steps = {p: self._delay_steps(d, f"{where}: delay.{p}") for p, d in
                             self._pathway_delays(delay, weight_update, where).items()}
            delay = 0.0
        steps = self._delay_steps(delay, f"{where}: delay")
        ps_init = ps_init or {}
        wu_init = dict(wu_init or {})
        wu_all = {**weight_update.vars, **weight_update.pre_vars, **weight_update.post_vars}
        unknown = sorted(set(wu_init) - set(wu_all))
        if unknown:
            raise NetworkError(
                f"{where}: cannot initialise unknown weight-update variable(s) {', '.join(unknown)} "
                f"(variables: {', '.join(sorted(wu_all)) or 'none'})"
            )
        from .models.variables import make_initializer

        def bound(vars_):
            return {
                n: v.with_init(make_initializer(wu_init[n], weight_update.name, f"init.{n}")) if n in wu_init else v
                for n, v in vars_.items()
            }

        # Postsynaptic 'apply' code may touch the target neuron's variables: check it now.
        postsynaptic.parse_apply(list(post_pop.model.vars))
        from .models.synapse import check_projection  # v_pre / v_post and summed variables

        check_projection(weight_update, pre_pop, post_pop, self.projections.values(), where)
        clash = set(postsynaptic.vars) & set(post_pop.model.vars)
        if clash:
            raise NetworkError(
                f"{where}: postsynaptic variable(s) {', '.join(sorted(clash))} clash with variables of "
                f"neuron model '{post_pop.model.name}'"
            )
        from .models.evaluate import POSTSYNAPTIC_STREAM_BASE, ElementScope
        from .values import bind_var_inits

        proj_id = self._next_id()
        ps_scope = ElementScope(post_pop.size, proj_id, counts={"N": post_pop.size},
                                stream_base=POSTSYNAPTIC_STREAM_BASE)
        ps_bound, ps_specs = self._bind_values(postsynaptic, ps_params, where, ps_scope, ps_dynamic,
                                               ps_batch_values, ps_draws)
        proj = Projection(
            name, pre_pop, post_pop, conn, weight_update,
            {}, bound(weight_update.vars), bound(weight_update.pre_vars), bound(weight_update.post_vars),
            postsynaptic, ps_bound, postsynaptic.bind_vars(ps_init, where),
            delay_steps=int(steps), id=proj_id, ps_values=ps_specs, pathway_delay_steps=pathway_steps,
        )
        if conn.kind == "sparse":
            proj.rows = self._sparse_rows(proj)
        if conn.kind == "procedural":
            check_procedural(proj, where)
        indices = ("i", "j") if conn.kind != "procedural" else ()  # procedural: no synapse has an index
        wu_scope = ElementScope(proj.n_synapses, proj_id, indices, lambda: synapse_indices(proj),
                                {"N": proj.n_synapses, "N_pre": pre_pop.size, "N_post": post_pop.size})
        proj.wu_params, proj.wu_values = self._bind_values(weight_update, wu_params, where, wu_scope, wu_dynamic,
                                                           wu_batch_values, wu_draws)
        if conn.kind == "procedural" and "element" in proj.wu_values.kinds.values():
            raise NetworkError(f"{where}: values per synapse need stored connectivity; procedural connectivity "
                               "keeps nothing per synapse")
        bind_var_inits(weight_update, proj.wu_vars, proj.wu_values, where)
        bind_var_inits(weight_update, {**proj.wu_pre_vars, **proj.wu_post_vars}, proj.wu_values, where, traces=True)
        bind_var_inits(postsynaptic, proj.ps_vars, proj.ps_values, where)
        if per_synapse_delay is not None:
            from .delays import synapse_delays

            proj.synapse_delay_steps, proj.dendritic_slots = synapse_delays(
                per_synapse_delay, max_delay, where=where, n_synapses=proj.n_synapses, dt=self.dt, seed=int(self.seed),
                procedural=conn.kind == "procedural",
                scope_of=lambda base: ElementScope(proj.n_synapses, proj_id, ("i", "j"), lambda: synapse_indices(proj),
                                                   {"N": proj.n_synapses, "N_pre": pre_pop.size,
                                                    "N_post": post_pop.size}, stream_base=base))
        self.projections[name] = proj
        return proj

    def _delay_steps(self, delay, what: str) -> int:
        """A delay in ms as a whole number of steps (``what``: "projection 'p': delay")."""
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not math.isfinite(delay):
            raise NetworkError(f"{what} must be a number of ms, got {delay!r}")
        if delay < 0:
            raise NetworkError(f"{what} must not be negative, got {delay} ms")
        steps = round(delay / self.dt)
        if abs(steps * self.dt - delay) > 1e-6 * max(1.0, delay):
            raise NetworkError(f"{what} {delay} ms is not a multiple of dt = {self.dt} ms")
        if steps >= MAX_INDEX:  # delay slots are uint32 in the generated code
            raise NetworkError(f"{what} {delay:g} ms is {steps} steps, more than the {MAX_INDEX - 1} "
                               "a projection can hold")
        return steps

    @staticmethod
    def _pathway_delays(delay: dict, wu: WeightUpdateModel, where: str) -> dict:
        """``delay`` given per pathway: every named pathway of ``wu`` has exactly one entry
        (returned in the order the pathways are written)."""
        paths = list(wu.pathways)
        if not paths:
            raise NetworkError(f"{where}: delay is a mapping, but the on_pre code of '{wu.name}' has no named "
                               "pathways; give one delay in ms")
        unknown = [p for p in delay if p not in wu.pathways]
        if unknown:
            raise NetworkError(f"{where}: delay.{unknown[0]}: '{unknown[0]}' is not a pathway of '{wu.name}' "
                               f"(pathways: {', '.join(paths)})")
        missing = [p for p in paths if p not in delay]
        if missing:
            raise NetworkError(f"{where}: delay.{missing[0]}: pathway '{missing[0]}' of '{wu.name}' has no delay; "
                               f"give every pathway one (e.g. '{missing[0]}: 0')")
        return {p: delay[p] for p in paths}

    @_described
    def add_current_source(self, name: str, population: str, model: CurrentSourceModel, params: dict | None = None,
                           init: dict | None = None, *, dynamic: Sequence[str] | None = None,
                           batch_values: dict | None = None, draws: dict | None = None) -> CurrentSource:
        """Inject ``model``'s current into ``population``; parameters as for populations.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> from spikeforge import CurrentSourceModel
            >>> _ = net.add_population("exc", 80, LIF)
            >>> drive = CurrentSourceModel("drive", params={"mu": 16.0, "sigma": 2.0},
            ...                            current="mu + sigma * rand_normal()")
            >>> cs = net.add_current_source("noise", "exc", drive)
        """
        self._unique(name, "current source")
        pop = self._population(population, f"current source '{name}'")
        if not isinstance(model, CurrentSourceModel):
            raise NetworkError(f"current source '{name}': model must be a CurrentSourceModel, got {model!r}")
        from .models.evaluate import ElementScope
        from .values import bind_var_inits

        where = f"current source '{name}'"
        cs_id = self._next_id()
        scope = ElementScope(pop.size, cs_id, counts={"N": pop.size})
        bound, specs = self._bind_values(model, params, where, scope, dynamic, batch_values, draws)
        cs = CurrentSource(name, pop, model, bound, model.bind_vars(init, where), id=cs_id, values=specs)
        bind_var_inits(model, cs.vars, specs, where)
        self.current_sources[name] = cs
        return cs

    @_described
    def add_poisson_input(self, name: str, population: str, target: str, n: int, rate_hz: float,
                          weight: float) -> PoissonInput:
        """External Poisson drive (Brian2's ``PoissonInput``): at every step, each neuron of
        ``population`` gets k ~ Poisson(n * rate_hz * dt) events and ``k * weight`` is added to
        its variable ``target`` (after the threshold test, before the reset; see docs/models.md).
        ``n`` sources of ``rate_hz`` Hz each; ``weight`` in the unit of ``target``.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF)
            >>> drive = net.add_poisson_input("ext", "exc", "v", n=1000, rate_hz=2.0, weight=0.1)
        """
        self._unique(name, "poisson input")
        where = f"poisson input '{name}'"
        pop = self._population(population, where)
        variables = [v for v, var in pop.vars.items() if var.per_element and var.dtype != "int"]
        if target not in pop.vars:
            raise NetworkError(f"{where}: population '{pop.name}' (model '{pop.model.name}') has no variable "
                               f"{target!r} (variables: {', '.join(variables) or 'none'})")
        var = pop.vars[target]
        if not var.per_element or var.dtype == "int":
            raise NetworkError(f"{where}: target '{target}' must be a real-valued variable per neuron "
                               f"(variables: {', '.join(variables) or 'none'})")
        if not var.batched:
            raise NetworkError(f"{where}: target '{target}' is shared across the batch; the input writes it, so "
                               "it must be batched")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_INDEX:
            raise NetworkError(f"{where}: n (the number of sources) must be a positive integer of at most "
                               f"{MAX_INDEX}, got {n!r}")
        for field_name, value in (("rate", rate_hz), ("weight", weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise NetworkError(f"{where}: {field_name} must be a finite number, got {value!r}")
        if rate_hz < 0:
            raise NetworkError(f"{where}: rate must not be negative, got {rate_hz!r} Hz")
        pi = PoissonInput(name, pop, target, int(n), float(rate_hz), float(weight), id=self._next_id())
        lam = pi.lam(self.dt)
        if lam > MAX_POISSON_MEAN:
            raise NetworkError(f"{where}: n * rate * dt = {lam:g} events per step, more than the "
                               f"{MAX_POISSON_MEAN:g} a draw can count")
        self.poisson_inputs[name] = pi
        return pi

    def record_spikes(self, *populations: str, neurons: Any = None) -> None:
        """Record the spikes of ``populations``; ``neurons`` keeps only those neurons (a list
        of indices, a slice or ``{start, stop, step}``; see :func:`spikeforge.recording.neuron_selection`).

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF)
            >>> net.record_spikes("exc", neurons={"step": 10})      # every 10th neuron
        """
        for p in populations:
            pop = self._population(p, "record spikes")
            if not pop.model.spiking:
                raise NetworkError(f"record spikes: population '{pop.name}' does not spike (model "
                                   f"'{pop.model.name}' has no threshold)")
            pop.record_spikes = True
            selection = neuron_selection(neurons, pop.size, f"record spikes of '{pop.name}'")
            if selection is None:
                self.spike_neurons.pop(pop.name, None)
            else:
                self.spike_neurons[pop.name] = selection

    def record_var(self, population: str, var: str, neurons: Any = None, every: int = 1) -> None:
        """Record ``var`` of ``population`` (all batch instances): ``neurons`` (default all; a
        list of indices, a slice or ``{start, stop, step}``) at the steps ``n`` with
        ``n % every == 0``.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF)
            >>> net.record_var("exc", "v", neurons=[0, 1, 2], every=10)   # 3 neurons, every ms
        """
        pop = self._population(population, "record var")
        key, good = self._warm_step("record_var", {"population": pop.name, "var": var, "neurons": neurons,
                                                   "every": every})
        if not good and var not in pop.vars:  # good: known to pass without reading the variables
            raise NetworkError(
                f"record var: population '{pop.name}' has no variable '{var}' "
                f"(variables: {', '.join(pop.vars) or 'none'})"
            )
        where = f"record var '{pop.name}.{var}'"
        selection = neuron_selection(neurons, pop.size, where)
        if not good and selection is not None and not pop.vars[var].per_element:
            raise NetworkError(f"{where}: the variable has one value for the population; it has no neurons "
                               "to choose")
        self.var_recordings[(pop.name, var)] = VarRecording(pop.name, var, selection, check_every(every, where))
        if (pop.name, var) not in self.recorded_vars:
            self.recorded_vars.append((pop.name, var))
        self._warm_passed(key, good)

    def record_rate(self, *populations: str) -> None:
        """Record the number of spikes of each population per step and batch instance
        (``Simulation.population_rate`` turns it into Hz); no spike is stored.

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF)
            >>> net.record_rate("exc")          # then Simulation.population_rate("exc")
        """
        for p in populations:
            pop = self._population(p, "record rate")
            if not pop.model.spiking:
                raise NetworkError(f"record rate: population '{pop.name}' does not spike (model "
                                   f"'{pop.model.name}' has no threshold)")
            if pop.name not in self.recorded_rates:
                self.recorded_rates.append(pop.name)

    def add_timed_input(self, population, param: str, values, dt: float | None = None):
        """Make parameter ``param`` of ``population``'s model follow ``values`` over time,
        one row every ``dt`` ms (Brian2's TimedArray convention; see :mod:`spikeforge.timed`).
        ``values`` may be a :class:`~spikeforge.timed.TimedArray` (then no ``dt``).

        Examples:
            >>> from spikeforge import DELTA_CURR, LIF, STATIC_CONSTANT, Network
            >>> net = Network("demo", dt=0.1, batch_size=2)
            >>> _ = net.add_population("exc", 80, LIF, dynamic=["v_rest"])
            >>> net.add_timed_input("exc", "v_rest", [-65.0, -55.0, -65.0], dt=50.0)   # one value every 50 ms
            TimedArray(values=array([[-65.],
                   [-55.],
                   [-65.]]), dt=50.0)
        """
        pop = self._population(population, "timed input")
        where = f"population '{pop.name}': timed input '{param}'"
        if param not in pop.params:
            raise NetworkError(f"{where}: model '{pop.model.name}' has no parameter '{param}' "
                               f"(parameters: {', '.join(pop.params) or 'none'})")
        used_by = [d for d, e in pop.model.derived.items() if any(s.name == param for s in e.free_symbols)]
        if used_by:
            raise NetworkError(f"{where}: derived parameter '{used_by[0]}' of model '{pop.model.name}' is "
                               "computed from it once, so it cannot change over time; use it in the equations")
        if pop.model.refractory is not None and any(s.name == param for s in pop.model.refractory.free_symbols):
            raise NetworkError(f"{where}: the refractory period depends on it; it cannot change over time")
        try:
            array = values if dt is None else TimedArray(values, dt)
            array = make_timed_array(array, where)
        except NetworkError as exc:
            raise NetworkError(f"{where}: {str(exc).removeprefix('timed array: ')}") from None
        array.check_for(pop.size, self.batch_size, where)
        self.timed_inputs[(pop.name, param)] = array
        return array

    def _bind_values(self, model, params, where, scope, dynamic, batch_values, draws):
        from .values import bind_values

        return bind_values(model, params, where, scope, dt=self.dt, batch_size=self.batch_size, seed=int(self.seed),
                           dynamic=dynamic, batch_values=batch_values, draws=draws)

    def value_parts(self):
        """Every model in its place, with how its parameters are given: (owner, part, model,
        bound params, ValueSpecs, variables), part being neuron, weight_update, postsynaptic
        or current_source."""
        for p in self.populations.values():
            yield p.name, "neuron", p.model, p.params, p.values, p.vars
        for q in self.projections.values():
            yield q.name, "weight_update", q.weight_update, q.wu_params, q.wu_values, q.wu_vars
            yield q.name, "postsynaptic", q.postsynaptic, q.ps_params, q.ps_values, q.ps_vars
        for c in self.current_sources.values():
            yield c.name, "current_source", c.model, c.params, c.values, c.vars

    def _next_id(self) -> int:
        return len(self.populations) + len(self.projections) + len(self.current_sources) + len(self.poisson_inputs)

    def _sparse_rows(self, proj: Projection) -> SparseRows:
        """Ragged rows of a sparse projection: from_list here, every drawn kind in generated
        C++ (:mod:`spikeforge.connectivity`), after the memory check."""
        from .connectivity import draw_rows
        from .runtime.memory import check_connectivity  # refuse before anything big is allocated

        conn = proj.connectivity
        n_pre, n_post = proj.pre.size, proj.post.size
        if isinstance(conn, FromList):
            check_connectivity(self.name, proj.name, n_pre, len(conn.pre), drawn=False)
            pre = np.asarray(conn.pre, dtype=np.int64)
            post = np.asarray(conn.post, dtype=np.int64)
            if pre.shape != post.shape or pre.ndim != 1:
                raise NetworkError(f"projection '{proj.name}': from_list needs pre and post lists of equal length")
            if pre.size and (pre.min() < 0 or pre.max() >= n_pre or post.min() < 0 or post.max() >= n_post):
                raise NetworkError(f"projection '{proj.name}': from_list has neuron ids out of range")
            return _rows_from_pairs(pre, post, n_pre, n_post)
        row_start, post = draw_rows(
            conn, n_pre, n_post, int(self.seed), proj.id, f"projection '{proj.name}'",
            check_memory=lambda n: check_connectivity(self.name, proj.name, n_pre, n))
        return SparseRows(row_start, post, n_post)

    # -- reading the generated code -------------------------------------------------------
    def generated_code(self, backend: str = "cpu", kernel: str | None = None) -> str:
        """The code spikeforge generates for this network: the whole translation unit, or
        one kernel (``kernel`` = its name, e.g. ``neuron_update_exc``).

        Examples:
            >>> from spikeforge import cuba_network
            >>> code = cuba_network(n=400).generated_code("cpu", kernel="neuron_update_exc")
            >>> "v_th" in code
            True
        """
        from .codegen.generate import generate
        from .runtime.backends import get_backend

        chosen = get_backend(backend)
        spec = generate(self)
        if kernel is None:
            return chosen.render(spec).text
        names = [k.name for k in spec.kernels]
        if kernel not in names:
            raise NetworkError(f"no kernel named '{kernel}' (kernels: {', '.join(names)})")
        return chosen.render_kernel(spec, spec.kernels[names.index(kernel)])

    def kernels(self, backend: str = "cpu") -> list[dict]:
        """What each generated kernel does: name, kind, target, the arrays it reads and
        writes (with their dimensions) and, for the CUDA backends, its launch shape.

        Examples:
            >>> from spikeforge import cuba_network
            >>> kernels = cuba_network(n=400).kernels("cuda")
            >>> sorted(kernels[0])[:4]
            ['description', 'kind', 'launch', 'name']
        """
        from .codegen.generate import generate
        from .codegen.launch import kernel_launch
        from .runtime.backends import get_backend

        with_launch = get_backend(backend).device
        spec = generate(self)
        out = []
        for k in spec.kernels:
            def dims(name):
                a = spec.array(name)
                what = ("per element" if a.size > 1 else "one value") + (
                    ", per batch instance" if a.batched else ", shared by the batch")
                return {"array": name, "dims": what, "shape": list(a.shape(self.batch_size))}

            entry: dict[str, Any] = {"name": k.name, "kind": k.kind, "target": k.target, "description": k.description,
                     "reads": [dims(n) for n in k.reads], "writes": [dims(n) for n in k.writes]}
            if with_launch:
                launch = kernel_launch(k)
                entry["launch"] = {"grid": [launch.grid_x, self.batch_size if launch.batched else 1],
                                   "block": launch.block, "barriers": launch.barriers}
            out.append(entry)
        return out

    # -- running -------------------------------------------------------------------------
    def build(self, backend: str = "cpu", batch_size: int | None = None, **options: Any) -> Simulation:
        """Generate, compile (or load from the cache) and return a ready Simulation.

        Examples:
            >>> from spikeforge import cuba_network
            >>> sim = cuba_network(n=400).build(backend="cpu", threads=1)
            >>> sim.batch_size, sim.step
            (1, 0)
        """
        from .runtime.backends import get_backend

        chosen = get_backend(backend)  # an unknown name is refused before anything is built
        if batch_size is not None:
            self._check_batch(batch_size)
            self.batch_size = int(batch_size)
        warm_start = None
        if chosen.warm_start and not set(options) - _WARM_OPTIONS:
            key = self._warm_build_key(chosen.name)
            if key is not None:
                from .warm import NetworkWarmStart

                warm_start = NetworkWarmStart(key)
                sim = warm_start.simulation(self, chosen, options)
                if sim is not None:
                    return sim
                options = {**options, "keep_initial_values": True}
        from .warm import code_generator_log, reemitted

        with reemitted() as caught, code_generator_log() as said:
            sim = chosen.simulate(self, **options)
        if warm_start is not None:
            if not caught:  # a build that warns is built in full every time
                warm_start.store(sim, said)
            sim.initial_values = None  # kept for the entry only
        return sim


_NETWORK_FIELDS = frozenset(f.name for f in dataclasses.fields(Network))

__all__ = [
    "Network", "Population", "Projection", "CurrentSource", "PoissonInput", "Dense", "OneToOne", "FixedProbability",
    "FromList", "Model", "steps_for_duration",
]
