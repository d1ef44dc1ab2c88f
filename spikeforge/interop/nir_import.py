"""NIR graphs as spikeforge networks (docs/interop.md, "Import").

NIR (the Neuromorphic Intermediate Representation) writes a spiking network as a graph of
continuous-time primitives. Each neuron node (``LIF``, ``CubaLIF``, ``LI``, ``CubaLI``,
``IF``, ``I``, and the stateless ``Threshold``) becomes a population of a
:class:`~spikeforge.models.neuron.NeuronModel` whose ODEs are the primitive's definition, with
one parameter value per neuron where the node's arrays differ between neurons. The nodes
between two neuron nodes (``Affine``, ``Linear``, ``Scale``, ``Delay``, ``Flatten``,
``Conv1d``/``Conv2d``, ``SumPool2d``/``AvgPool2d``) are multiplied out into one projection:
its weights, connectivity and delays. An ``Affine``'s bias becomes the parameter ``bias`` of
the target's model, a constant added to its input from the step the graph's input first
reaches it. ``Input`` nodes become ``value_input`` populations, ``Output`` nodes name the
readout, and a graph nested in the graph is flattened into it.

NIR leaves the time step, the unit of time and the reset to the simulator: the import takes
them as arguments and says which it assumed (:attr:`NirImport.assumed`, logged at INFO).
A graph that spikeforge exported names them in its metadata (``source: spikeforge``, ``dt``,
each node's ``spikeforge_reset``, ``spikeforge_postsynaptic`` and ``spikeforge_update``): the
import then takes spikeforge's conventions back (its dt and resets, ``exp_curr`` synapses for an
exp_curr CubaLIF, leaky_readout's exact step, an LI and its Threshold as one population that
spikes without a reset, biases from the first step), so that the network
imported runs step for step as the one exported.

The import builds a plain plan first (:class:`NirPlan`: the mapping that a YAML network file
holds), and both the :class:`~spikeforge.network.Network` and the YAML text are made from it,
so ``spikeforge import-nir`` writes exactly the network that :func:`from_nir` returns.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import NetworkError
from ..models import builtins
from ..models.neuron import NeuronModel
from ..network import Network, check_identifier

log = logging.getLogger("spikeforge.interop.nir")

#: ms per unit of NIR time (NIR's time constants and delays are in this unit; spikeforge's in ms).
TIME_UNITS = {"s": 1e3, "ms": 1.0, "us": 1e-3}
DISCRETISATIONS = ("exact", "euler")
#: what a spiking neuron's membrane does after a spike
RESETS = {
    "to_value": "v = v_reset",      # NIR's definition: v = v_reset where z = 1
    "zero": "v = 0",
    "subtract": "v -= v_threshold",  # snnTorch's reset by subtraction, in the step of the spike
    "subtract_delayed": "reset_due = 1",  # snnTorch's default: subtracted with the next step's update
}
#: ``subtract_delayed``: the threshold a spike subtracts, taken off with the next step's update,
#: as snnTorch's default neurons do (``reset_delay=True``: ``mem = beta mem + I - theta z_prev``);
#: ``reset_due`` (a state) remembers the spike. Not NIR's reset (in the step of the spike), which
#: this differs from by ``(1 - beta) theta`` after each spike.
SUBTRACT_DELAYED = "subtract_delayed"
_DELAYED_SUBTRACTION = ("v = v - reset_due * v_threshold   # the last step's spike subtracts the threshold now "
                        "(reset_delay)\nreset_due = 0")
#: the reset of a node that spikeforge exported with ``spikeforge_reset: subtract`` (``v -= x``,
#: written as ``v_reset = v_threshold - x``): ``v -= v_threshold - v_reset`` takes ``x`` back
SUBTRACT_TO_RESET = "subtract_to_reset"
_RESET_CODE = {**RESETS, SUBTRACT_TO_RESET: "v -= v_threshold - v_reset"}
#: spikeforge_reset (the export's metadata) -> the reset that inverts it
_METADATA_RESETS = {"value": "to_value", "subtract": SUBTRACT_TO_RESET}
NEURON_PRIMITIVES = ("LIF", "CubaLIF", "LI", "CubaLI", "IF", "I", "Threshold")
#: nodes that multiply their input by a matrix (they mix channels)
MIXING_PRIMITIVES = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d")
#: nodes that keep each channel apart (Scale is a diagonal weight)
CHANNEL_PRIMITIVES = ("Scale", "Delay", "Flatten", "Identity")
#: the most entries of the matrix a convolution or pooling node is written out as
MAX_MATRIX = 20_000_000
SUPPORTED = ("Input", "Output", *NEURON_PRIMITIVES, *MIXING_PRIMITIVES, *CHANNEL_PRIMITIVES)

# -- the neuron models: NIR's equations, written for spikeforge ---------------------------------
# Times are in ms (NIR's, times TIME_UNITS[time_unit]); i_syn is the summed input of the step
# (the outputs of the projections into the neuron), ``bias`` the sum of the Affine biases on the
# way to it, held constant.

_MODELS = {
    "LIF": dict(
        params=["tau", "r", "v_leak", "v_threshold", "v_reset"],
        vars={"v": 0.0},
        equations="dv/dt = ((v_leak - v) + r * (i_syn + bias)) / tau   # NIR LIF: tau dv/dt = (v_leak - v) + R I",
    ),
    "LI": dict(
        params=["tau", "r", "v_leak"],
        vars={"v": 0.0},
        equations="dv/dt = ((v_leak - v) + r * (i_syn + bias)) / tau   # NIR LI: tau dv/dt = (v_leak - v) + R I",
    ),
    "CubaLIF": dict(
        params=["tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"],
        vars={"v": 0.0, "current": 0.0},
        equations="dcurrent/dt = (w_in * (i_syn + bias) - current) / tau_syn   # NIR: tau_syn dI/dt = -I + w_in S\n"
                  "dv/dt = ((v_leak - v) + r * current) / tau_mem   # NIR: tau_mem dv/dt = (v_leak - v) + R I",
    ),
    "CubaLI": dict(
        params=["tau_syn", "tau_mem", "r", "v_leak", "w_in"],
        vars={"v": 0.0, "current": 0.0},
        equations="dcurrent/dt = (w_in * (i_syn + bias) - current) / tau_syn   # NIR: tau_syn dI/dt = -I + w_in S\n"
                  "dv/dt = ((v_leak - v) + r * current) / tau_mem   # NIR: tau_mem dv/dt = (v_leak - v) + R I",
    ),
    "IF": dict(
        params=["r", "v_threshold", "v_reset"],
        vars={"v": 0.0},
        equations="dv/dt = r * (i_syn + bias)   # NIR IF: dv/dt = R I (r per ms)",
    ),
    "I": dict(
        params=["r"],
        vars={"v": 0.0},
        equations="dv/dt = r * (i_syn + bias)   # NIR I: dv/dt = R I (r per ms)",
    ),
    "Threshold": dict(  # no state: the step's input, and a spike where it is above the threshold
        params=["threshold"],
        vars={"y": 0.0},
        sim_code="y = i_syn + bias   # NIR Threshold: z = H(x - threshold), x its input",
    ),
}
#: NIR fields that are times (multiplied by the ms per time unit) and rates (divided by it)
_TIMES = ("tau", "tau_syn", "tau_mem")
_RATES_OF = {"IF": ("r",), "I": ("r",)}
#: the field whose shape is the node's shape
_SHAPE_FIELD = {"LIF": "tau", "LI": "tau", "CubaLIF": "tau_mem", "CubaLI": "tau_mem", "IF": "r", "I": "r",
                "Threshold": "threshold"}

READOUT_MODEL = "nir_readout"
READOUT_SPEC = dict(
    kind="neuron",
    params={"bias": 0.0},
    vars={"y": 0.0},
    sim_code="y = i_syn + bias   # an NIR Output read through weights: the weighted input of the step",
)


#: LIF and LI written as their exact step, as spikeforge's leaky_readout is (a node spikeforge
#: exported from such a model, metadata ``spikeforge_update: exact_step``): the same solution as
#: the exact integrator's, in the arithmetic of the model exported
_EXACT_STEP = dict(
    derived={"kappa": "exp(-dt / tau)"},
    sim_code="v = kappa * v + (1 - kappa) * (v_leak + r * (i_syn + bias))   # the exact step of "
             "tau dv/dt = (v_leak - v) + R I",
)


def model_name(primitive: str) -> str:
    return f"nir_{primitive.lower()}"


#: euler mode's step of CubaLIF's and CubaLI's v, run after the current's Euler step: v steps from
#: the new current (as snnTorch's Synaptic does, ``mem = beta mem + syn`` with this step's syn), so
#: v sees the input of its step and a recurrent CubaLIF's spikes return after one step, as in
#: snnTorch's RSynaptic (an Euler step of both from the start of the step would take two)
_CUBA_EULER_V = "v = v + dt / tau_mem * ((v_leak - v) + r * current)   # NIR: tau_mem dv/dt = (v_leak - v) + R I, " \
                "an Euler step from this step's I"


def model_spec(primitive: str, reset: str, discretisation: str, exact_step: bool = False) -> dict:
    """The NeuronModel arguments (the YAML ``models:`` entry) of a NIR neuron primitive
    (``exact_step``: a LIF or LI written as its exact step)."""
    m = _MODELS[primitive]
    params = [p for p in m["params"] if p != "v_reset" or reset in ("to_value", SUBTRACT_TO_RESET)]
    spec = dict(kind="neuron", params={**dict.fromkeys(params), "bias": 0.0}, vars=dict(m["vars"]))
    if "sim_code" in m:
        spec["sim_code"] = m["sim_code"]
        spec["threshold"] = "y > threshold"
        return spec
    if exact_step:
        spec.update(_EXACT_STEP)
    elif discretisation == "euler" and primitive in ("CubaLIF", "CubaLI"):  # the current first, then v
        spec.update(equations=m["equations"].splitlines()[0], integrator="euler", sim_code=_CUBA_EULER_V)
    else:
        spec.update(equations=m["equations"], integrator=discretisation)
    if "v_threshold" in m["params"]:
        spec["threshold"] = "v > v_threshold"
        spec["reset"] = _RESET_CODE[reset]
        if reset == SUBTRACT_DELAYED:  # after the step's update, before the threshold test
            spec["vars"]["reset_due"] = 0.0
            spec["sim_code"] = "\n".join(filter(None, [spec.get("sim_code"), _DELAYED_SUBTRACTION]))
    return spec


# -- the plan ------------------------------------------------------------------------------------


@dataclass
class NirImport:
    """What an import did: the conventions it assumed (NIR leaves them to the simulator), the
    population of each NIR node, the ``value_input`` population of each ``Input``, what each
    ``Output`` reads (population, variable) and how many steps behind the Inputs it is
    (``steps_behind``: its step ``n + k`` is step ``n`` of a simulator that passes spikes on
    within the step)."""

    assumed: dict
    populations: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    steps_behind: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        a = self.assumed
        text = (f"NIR import assumed dt = {a['dt']:g} {a['time_unit']} ({a['dt_ms']:g} ms), times in "
                f"{a['time_unit']}, discretisation {a['discretisation']}, reset {a['reset']}, "
                f"initial state 0, one step per projection")
        if a.get("conventions") == "spikeforge":
            text += ("; spikeforge's conventions (the graph's metadata): each node's reset, exp_curr synapses, "
                     "biases from the first step")
        return text


@dataclass
class NirPlan:
    """A network as the plain mapping of a YAML network file (numpy arrays where lists go)."""

    network: dict
    info: NirImport


def _fail(node: str, primitive: str, message: str):
    raise NetworkError(f"NIR node '{node}' ({primitive}): {message}")


def _identifier(name: str, taken: set) -> str:
    """A population/projection name for ``name``: letters, digits and '_', unique."""
    base = re.sub(r"\W", "_", str(name)).strip("_") or "node"
    try:
        check_identifier(base, "NIR node")
        if base.lower().startswith("sf_"):
            raise NetworkError(base)
    except NetworkError:  # a keyword, a C++ name or a leading digit
        base = f"n_{base}"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def _finite(node, primitive, name, value) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(node, primitive, f"field '{name}' must hold numbers, got {value!r}")
    bad = ~np.isfinite(a)
    if bad.any():
        k = int(np.flatnonzero(bad.ravel())[0])
        _fail(node, primitive, f"field '{name}' is not finite ({float(a.ravel()[k])!r} at index {k})")
    return a


def _compact(values: np.ndarray):
    """One number where every neuron has the same value, else the array."""
    flat = values.ravel()
    return float(flat[0]) if flat.size and np.all(flat == flat[0]) else flat


@dataclass
class _Path:
    """A signal on its way from a population (or an Affine's bias) through weight nodes:
    ``matrix`` (channels x sources; 1-D: its diagonal, while no node has mixed the channels),
    the delays (ms) per source and per channel, and one for all."""

    matrix: np.ndarray
    pre_delay: np.ndarray
    chan_delay: np.ndarray
    delay: float = 0.0
    mixed: bool = False
    weighted: bool = False

    @property
    def channels(self) -> int:
        return self.matrix.shape[0]

    def times(self, w: np.ndarray) -> np.ndarray:
        """The matrix of ``w`` applied after this path."""
        return w @ self.matrix if self.matrix.ndim == 2 else w * self.matrix[None, :]

    def scaled(self, s: np.ndarray) -> np.ndarray:
        """The matrix with each channel scaled by ``s`` (one value, or one per channel)."""
        return self.matrix * (s[:, None] if self.matrix.ndim == 2 and s.size > 1 else s)


@dataclass
class _Passage:
    """The Input or Output of a nested graph, once flattened into its parent: the signal passes."""

    node: object


def _kind(node) -> str:
    return "Identity" if isinstance(node, _Passage) else type(node).__name__


def _flattened(graph, prefix=""):
    """The nodes and edges of ``graph`` with every nested NIRGraph written into it: its nodes as
    ``<graph>.<node>``, its Inputs and Outputs as passages the edges into and out of it use."""
    nodes, edges = {}, []
    inner_io = {}  # nested graph -> ([its Inputs], [its Outputs]), as flattened names
    for name, node in graph.nodes.items():
        if type(node).__name__ == "NIRGraph":
            sub_nodes, sub_edges = _flattened(node, f"{prefix}{name}.")
            for sub, inner in sub_nodes.items():  # its own Inputs and Outputs (deeper ones are passages)
                nodes[sub] = _Passage(inner) if _kind(inner) in ("Input", "Output") else inner
            edges += sub_edges
            inner_io[name] = tuple([f"{name}.{n}" for n, x in node.nodes.items() if type(x).__name__ == kind]
                                   for kind in ("Input", "Output"))
        else:
            nodes[prefix + name] = node
    for src, dst in graph.edges:
        srcs = inner_io[src][1] if src in inner_io else [src]
        dsts = inner_io[dst][0] if dst in inner_io else [dst]
        edges += [(prefix + a, prefix + b) for a in srcs for b in dsts]
    return nodes, edges


class _Importer:
    """One import: the graph's nodes (flattened, in a fixed order) and edges, and the plan it fills."""

    def __init__(self, graph, dt, time_unit, discretisation, reset, batch_size, precision, name, spikeforge=False):
        self.scale = TIME_UNITS[time_unit]
        self.time_unit = time_unit
        self.dt_ms = dt * self.scale
        self.reset = reset  # None: each node's from spikeforge's metadata
        self.discretisation = discretisation
        self.spikeforge = spikeforge  # the graph is spikeforge's export: invert its conventions
        self.exp_syn: dict = {}  # Cuba node exported from exp_curr -> its synapse (tau_syn, weight factor, w_in)
        self.merged: dict = {}  # Threshold node -> the LI it spikes for (spikeforge's spiking model without reset)
        self.nodes, edges = _flattened(graph)
        self.out_edges = {n: [] for n in self.nodes}
        self.in_edges = {n: [] for n in self.nodes}
        for src, dst in edges:
            for end in (src, dst):
                if end not in self.nodes:
                    raise NetworkError(f"NIR edge '{src}' -> '{dst}': no node named '{end}'")
            self.out_edges[src].append(dst)
            self.in_edges[dst].append(src)
        self.nodes = self._ordered()
        self.info = NirImport(assumed=dict(dt=dt, dt_ms=self.dt_ms, time_unit=time_unit,
                                           discretisation=discretisation,
                                           reset=reset or "per node (spikeforge_reset)", initial_state=0.0,
                                           conventions="spikeforge" if spikeforge else "nir"))
        self.net = dict(name=name, dt=self.dt_ms, batch_size=batch_size, precision=precision, models={},
                        populations={}, projections={})
        self.names: set = set()
        self.pop_of: dict = {}  # NIR node -> population name
        self.node_bias: dict = {}  # neuron or Output node -> the Affine biases that reach it, summed
        self.read_node: dict = {}  # Output -> the node whose population it reads

    def _ordered(self) -> dict:
        """The nodes breadth first from the inputs, each node's successors by name: the same
        order whatever order a file or a dict gave them in."""
        for edges in self.out_edges.values():
            edges.sort()
        order = sorted(n for n, node in self.nodes.items() if _kind(node) == "Input")
        seen = set(order)
        for n in order:  # grows while it is walked
            for m in self.out_edges[n]:
                if m not in seen:
                    seen.add(m)
                    order.append(m)
        order += sorted(set(self.nodes) - seen)
        return {n: self.nodes[n] for n in order}

    def kind(self, name) -> str:
        return _kind(self.nodes[name])

    # -- nodes -> populations -----------------------------------------------------------------
    def run(self) -> NirPlan:
        self._populations()
        links = []
        for src in list(self.pop_of):
            for dst, path in self._walk(src, self._source_path(src), ()):
                if self.merged.get(dst) != src:  # an LI and its Threshold are one population
                    links.append((src, dst, path))
        self._check_cycles(links)
        for name, node in self.nodes.items():
            if _kind(node) in ("Affine", "Conv1d", "Conv2d"):
                self._bias(name, node)
        outputs = [n for n, node in self.nodes.items() if _kind(node) == "Output"]
        for src, dst, path in links:
            if dst in outputs:
                continue
            self._projection(src, dst, path)
        for out in outputs:
            self._output(out, [(s, p) for s, d, p in links if d == out])
        depth = self._depths(links)
        depth.update({thr: depth[li] for thr, li in self.merged.items() if li in depth})
        self.info.steps_behind = {out: depth[node] for out, node in self.read_node.items() if node in depth}
        for node, b in self.node_bias.items():
            if node in self.pop_of and np.any(b != 0):
                if node in self.exp_syn:  # NIR's constant input b of a Cuba neuron: a current w_in b, held
                    b = b * self.exp_syn[node]["w_in"]
                # spikeforge's own timing: a bias is there from the first step
                self._set_bias(self.pop_of[node], b, 0 if self.spikeforge else depth.get(node, 0))
        if not self.info.outputs:
            self.info.notes.append("the graph has no Output node: nothing is recorded")
        return NirPlan(self.net, self.info)

    def _spiking_li(self, name, node) -> str | None:
        """The LI (or CubaLI) a Threshold node spikes for, where spikeforge exported a spiking
        model without a reset as the two (metadata ``spikeforge_reset: none``), else None."""
        meta = getattr(node, "metadata", None) or {}
        if not self.spikeforge or meta.get("spikeforge_reset") != "none" or len(self.in_edges[name]) != 1:
            return None
        li = self.in_edges[name][0]
        return li if self.kind(li) in ("LI", "CubaLI") and self.out_edges[li] == [name] else None

    def _populations(self):
        for name, node in self.nodes.items():
            if _kind(node) == "Threshold" and self._spiking_li(name, node):
                self.merged[name] = self._spiking_li(name, node)
        for name, node in self.nodes.items():
            kind = _kind(node)
            if kind not in SUPPORTED:
                _fail(name, kind, f"primitive not supported (supported: {', '.join(SUPPORTED)})")
            if kind == "Input":
                self._input(name, node)
            elif name in self.merged:
                continue
            elif kind in NEURON_PRIMITIVES:
                self._neuron(name, node, kind)
            elif kind == "Output" and self.out_edges[name]:
                _fail(name, kind, f"an Output has no outgoing edges (it has one to '{self.out_edges[name][0]}')")
        for thr, li in self.merged.items():
            self.pop_of[thr] = self.info.populations[thr] = self.pop_of[li]

    def _input(self, name, node):
        shape = node.input_type.get("input")
        if shape is None:
            _fail(name, "Input", "the input has no shape")
        if self.in_edges[name]:
            _fail(name, "Input", f"an Input has no incoming edges (it has one from '{self.in_edges[name][0]}')")
        pop = _identifier(name, self.names)
        self.net["populations"][pop] = dict(size=int(np.prod(shape)), model="value_input", params={})
        self.pop_of[name] = pop
        self.info.inputs[name] = pop
        self.info.populations[name] = pop

    def _reset_of(self, node) -> str:
        """The reset of a node: the one asked for, else spikeforge's (its metadata), else NIR's."""
        if self.reset is not None:
            return self.reset
        meta = getattr(node, "metadata", None) or {}
        return _METADATA_RESETS.get(meta.get("spikeforge_reset"), "to_value")

    def _neuron(self, name, node, kind):
        shape_field = _SHAPE_FIELD[kind]
        size = int(np.asarray(getattr(node, shape_field)).size)
        reset = self._reset_of(node)
        params = {}
        for f in _MODELS[kind]["params"]:
            values = _finite(name, kind, f, getattr(node, f))
            if values.size not in (1, size):
                _fail(name, kind, f"field '{f}' has {values.size} values, '{shape_field}' {size}")
            values = np.broadcast_to(values.ravel(), (size,)).astype(np.float64)
            if f in _TIMES:
                if np.any(values <= 0):
                    _fail(name, kind, f"field '{f}' must be positive (time constants), got {values.min()!r}")
                values = values * self.scale
                if values.min() < self.dt_ms:
                    self.info.notes.append(f"node '{name}': {f} = {values.min() / self.scale:g} {self.time_unit} is "
                                           f"shorter than dt (is dt in {self.time_unit}?)")
            if f in _RATES_OF.get(kind, ()):
                values = values / self.scale
            if f == "v_reset" and reset not in ("to_value", SUBTRACT_TO_RESET):
                if np.any(values != 0):
                    self.info.notes.append(f"node '{name}': v_reset is not used (reset '{reset}')")
                continue
            params[f] = values
        meta = (getattr(node, "metadata", None) or {}) if self.spikeforge else {}
        if kind in ("CubaLIF", "CubaLI") and meta.get("spikeforge_postsynaptic") == "exp_curr":
            kind, params = self._exp_curr_neuron(name, kind, params)
        params = {f: _compact(v) for f, v in params.items()}
        step = kind in ("LIF", "LI") and self.discretisation == "exact" \
            and meta.get("spikeforge_update") == "exact_step"
        spec = model_spec(kind, reset, self.discretisation, step)
        mname = model_name(kind) + ("_step" if step else "") + {SUBTRACT_TO_RESET: "_subtract",
                                                                  SUBTRACT_DELAYED: "_delayed"}.get(reset, "")
        threshold = next((t for t, li in self.merged.items() if li == name), None)
        if threshold is not None:  # spikes while v > the Threshold's threshold, no reset
            values = _finite(threshold, "Threshold", "threshold", self.nodes[threshold].threshold).ravel()
            if values.size not in (1, size):
                _fail(threshold, "Threshold", f"field 'threshold' has {values.size} values, '{name}' {size} neurons")
            params["v_threshold"] = _compact(np.broadcast_to(values, (size,)).astype(np.float64))
            spec["params"] = {**{p: None for p in spec["params"] if p != "bias"}, "v_threshold": None, "bias": 0.0}
            spec["threshold"] = "v > v_threshold"
            mname += "_threshold"
        self.net["models"].setdefault(mname, spec)
        pop = _identifier(name, self.names)
        self.net["populations"][pop] = dict(size=size, model=mname, params=params)
        self.pop_of[name] = pop
        self.info.populations[name] = pop

    def _exp_curr_neuron(self, name, kind, params) -> tuple:
        """A CubaLIF/CubaLI that spikeforge exported from ``exp_curr`` synapses, taken back: a
        LIF/LI (``tau = tau_mem``) whose projections are ``exp_curr`` of ``tau_syn`` again.
        The export wrote ``w_in = 1 / (1 - exp(-dt / tau_syn))`` so that a one-step input ``w``
        raises ``I`` by ``w``; ``exp_curr``'s jump is that, ``w_in w (1 - exp(-dt / tau_syn))``,
        which is ``w`` itself at the export's ``dt`` (the weights are not touched then)."""
        tau_syn, w_in = params.pop("tau_syn"), params.pop("w_in")
        factor = w_in * -np.expm1(-self.dt_ms / tau_syn)
        factor[np.abs(factor - 1.0) <= 1e-9] = 1.0
        if np.any(factor != 1.0):
            self.info.notes.append(f"node '{name}': w_in is not the export's for dt = {self.dt_ms:g} ms: its "
                                   "exp_curr weights are scaled by w_in (1 - exp(-dt / tau_syn))")
        self.exp_syn[name] = dict(tau_syn=tau_syn, factor=factor, w_in=w_in)
        params["tau"] = params.pop("tau_mem")
        plain = "LIF" if kind == "CubaLIF" else "LI"
        return plain, {f: params[f] for f in _MODELS[plain]["params"] if f in params}

    def _size(self, name) -> int:
        return self.net["populations"][self.pop_of[name]]["size"]

    def _spiking(self, name) -> bool:
        kind = self.kind(name)
        return kind in ("Input", "Threshold") or "v_threshold" in _MODELS[kind]["params"] \
            or name in self.merged.values()

    # -- edges -> paths -------------------------------------------------------------------------
    def _source_path(self, name) -> _Path:
        n = self._size(name)
        return _Path(np.ones(n), np.zeros(n), np.zeros(n))

    def _walk(self, start, path, stack):
        """(target node, path) of every way from ``start`` to a population or an Output."""
        for dst in self.out_edges[start]:
            kind = self.kind(dst)
            if kind == "Input":
                _fail(dst, kind, f"an Input has no incoming edges (it has one from '{start}')")
            if dst in self.pop_of or kind == "Output":
                yield dst, path
                continue
            if dst in stack:
                _fail(dst, kind, "a cycle through weight nodes alone ("
                      + " -> ".join([*stack[stack.index(dst):], dst]) + ") has no neuron to hold its state")
            yield from self._walk(dst, self._apply(start, dst, path), (*stack, dst))

    def _apply(self, src, name, path) -> _Path:
        node, kind = self.nodes[name], self.kind(name)
        channels = path.channels
        if kind in ("Flatten", "Identity"):
            return path
        if kind == "Delay":
            d = _finite(name, kind, "delay", node.delay).ravel() * self.scale
            if d.size not in (1, channels):
                _fail(name, kind, f"edge '{src}' -> '{name}': {channels} channels arrive, the delay has {d.size}")
            if np.any(d < 0):
                _fail(name, kind, "field 'delay' must not be negative")
            return _Path(path.matrix, path.pre_delay, path.chan_delay + d, path.delay, path.mixed, path.weighted)
        if kind == "Scale":
            s = _finite(name, kind, "scale", node.scale).ravel()
            if s.size not in (1, channels):
                _fail(name, kind, f"edge '{src}' -> '{name}': {channels} channels arrive, the scale has {s.size}")
            return _Path(path.scaled(s), path.pre_delay, path.chan_delay, path.delay, path.mixed, True)
        matrix = self._matrix(src, name, node, kind, channels)
        pre_delay, delay = path.pre_delay, path.delay
        if not path.mixed:  # the delays so far are per source
            pre_delay = path.chan_delay if path.matrix.ndim == 1 else pre_delay
        elif np.any(path.chan_delay != path.chan_delay[0]):
            _fail(name, kind, "channels delayed by different amounts are mixed again after a weight node; "
                  "spikeforge gives one delay per synapse")
        else:
            delay += float(path.chan_delay[0])
        return _Path(path.times(matrix), pre_delay, np.zeros(matrix.shape[0]), delay, True, True)

    def _matrix(self, src, name, node, kind, channels) -> np.ndarray:
        if kind in ("Affine", "Linear"):
            w = _finite(name, kind, "weight", node.weight)
            if w.ndim != 2:
                _fail(name, kind, f"field 'weight' has shape {w.shape}; only 2-D (out, in) weights are supported")
        elif kind in ("Conv1d", "Conv2d"):
            w = conv_matrix(name, kind, node, _finite(name, kind, "weight", node.weight))
        else:
            w = pool_matrix(name, kind, node, channels)
        if w.shape[1] != channels:
            _fail(name, kind, f"edge '{src}' -> '{name}': '{src}' gives {channels} values, '{name}' takes "
                  f"{w.shape[1]} (weight shape (out, in) = {w.shape})")
        return w

    def _bias(self, name, node):
        kind = self.kind(name)
        b = _finite(name, kind, "bias", node.bias).ravel()
        if kind != "Affine":  # a convolution's bias: one per output channel
            out = self._matrix("?", name, node, kind, int(np.prod(conv_input_shape(name, kind, node)))).shape[0]
            b = np.repeat(b, out // max(b.size, 1)) if b.size else np.zeros(out)
        if not np.any(b):
            return
        start = _Path(b[:, None], np.zeros(1), np.zeros(b.size))
        for dst, path in self._walk(name, start, (name,)):
            if dst in self.pop_of and path.channels != self._size(dst):
                _fail(dst, self.kind(dst), f"'{name}' gives {path.channels} values, '{dst}' has "
                      f"{self._size(dst)} neurons")
            self.node_bias[dst] = self.node_bias.get(dst, 0.0) + path.matrix[:, 0]

    def _check_cycles(self, links):
        """A cycle must pass through a weight node: refuse one made of plain edges."""
        plain = {}
        for src, dst, path in links:
            if not path.weighted and dst in self.pop_of:
                plain.setdefault(src, []).append(dst)
        state = {}

        def visit(n, trail):
            state[n] = 1
            for m in plain.get(n, ()):
                if state.get(m) == 1:
                    cycle = " -> ".join([*trail[trail.index(m):], m])
                    _fail(m, self.kind(m), f"a cycle ({cycle}) has no weight node (Affine, Linear, Scale, Conv) on "
                          "it; spikeforge carries a recurrent edge by a projection, one step later")
                if state.get(m) is None:
                    visit(m, [*trail, m])
            state[n] = 2

        for n in list(plain):
            if state.get(n) is None:
                visit(n, [n])

    # -- paths -> projections -------------------------------------------------------------------
    def _projection(self, src, dst, path, post=None):
        pre, post = self.pop_of[src], post or self.pop_of[dst]
        n_post = self.net["populations"][post]["size"]
        w = path.matrix
        if path.channels != n_post:
            _fail(dst, self.kind(dst), f"edge from '{src}': {path.channels} values arrive, the node has {n_post} "
                  "neurons")
        if not self._spiking(src):
            _fail(src, self.kind(src), f"it feeds '{dst}', but it does not spike; spikeforge projections carry "
                  "spikes (read a non-spiking node through an Output)")
        postsynaptic = "one_step_curr"
        if dst in self.exp_syn:  # spikeforge's exp_curr, taken back
            syn = self.exp_syn[dst]
            postsynaptic = {"model": "exp_curr", "params": {"tau_syn": _compact(syn["tau_syn"])}}
            if np.any(syn["factor"] != 1.0):
                w = w * (syn["factor"][:, None] if w.ndim == 2 else syn["factor"])
        if w.ndim == 2:
            delays = path.pre_delay[None, :] + path.chan_delay[:, None] + path.delay  # (post, pre)
            nz = np.nonzero(w.T)
            if len(nz[0]) < 0.5 * w.size:
                conn = {"from_list": {"pre": nz[0], "post": nz[1]}}
                weights, delays = w.T[nz], delays.T[nz]
            else:
                conn, weights, delays = "dense", w.T.ravel(), delays.T.ravel()
        else:  # channel by channel: neuron i to neuron i
            conn, weights, delays = "one_to_one", w, path.chan_delay + path.delay
        if np.any(np.abs(delays / self.dt_ms - np.round(delays / self.dt_ms)) > 1e-6):
            _fail(dst, self.kind(dst), f"a delay on the edge from '{src}' is not a multiple of dt = {self.dt_ms:g} ms")
        name = _identifier(f"{pre}_to_{post}", self.names)
        wu = "scaled" if self.kind(src) == "Input" else "static"
        proj = dict(pre=pre, post=post, connectivity=conn,
                    weight_update=dict(model=wu, init={"w": _compact(weights)}), postsynaptic=postsynaptic)
        d = _compact(delays)
        if not isinstance(d, float) or d:
            proj["delay"] = d
        self.net["projections"][name] = proj

    def _output(self, out, incoming):
        if not incoming:
            self.info.notes.append(f"Output '{out}' has no incoming edge")
            return
        direct = [s for s, p in incoming if not p.weighted and not p.mixed]
        if len(direct) == 1 and len(incoming) == 1:
            src = direct[0]
            pop = self.pop_of[src]
            entry = self.net["populations"][pop]
            if self.kind(src) == "Input":
                _fail(out, "Output", f"it reads the Input '{src}' directly; there is nothing to simulate")
            var = "y" if self.kind(src) == "Threshold" and src not in self.merged else "v"
            entry["record"] = (["spikes"] if self._spiking(src) else []) + [var]
            self.info.outputs[out] = (pop, "spikes" if self._spiking(src) else "v")
            self.read_node[out] = src
            return
        size = incoming[0][1].channels
        pop = _identifier(out, self.names)
        self.net["models"].setdefault(READOUT_MODEL, dict(READOUT_SPEC))
        self.net["populations"][pop] = dict(size=size, model=READOUT_MODEL, params={}, record=["y"])
        self.pop_of[out] = pop
        self.info.populations[out] = pop
        for src, path in incoming:
            self._projection(src, out, path, post=pop)
        self.info.outputs[out] = (pop, "y")
        self.read_node[out] = out

    def _depths(self, links) -> dict:
        """The steps from the Inputs to each node: the shortest way, one step per projection."""
        depth = {n: 0 for n in self.info.inputs}
        frontier = set(depth)
        while frontier:
            changed = set()
            for src, dst, _ in links:
                src = self.merged.get(src, src)  # a merged Threshold is its LI's population
                d = depth.get(src, -1) + 1 if src in frontier else -1
                if dst in self.pop_of and d >= 0 and d < depth.get(dst, d + 1):
                    depth[dst] = d
                    changed.add(dst)
            frontier = changed
        return depth

    def _set_bias(self, pop, bias, depth):
        """The population's ``bias``: from step ``depth`` on (its steps behind the Inputs), so that
        step n + depth is step n of a simulator that passes inputs on within the step; before it a
        timed input holds it at 0."""
        entry = self.net["populations"][pop]
        if depth == 0:
            entry["params"]["bias"] = _compact(bias)
            return
        value = _compact(bias)
        rows = np.zeros((depth + 1,) if isinstance(value, float) else (depth + 1, bias.size))
        rows[depth] = value
        entry["timed_inputs"] = {"bias": {"values": rows, "dt": self.dt_ms}}


# -- convolutions and pooling as matrices ----------------------------------------------------------


def _pair(x, name, kind, field_name):
    a = np.atleast_1d(np.asarray(x)).astype(np.int64).ravel()
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2:
        _fail(name, kind, f"field '{field_name}' must be one or two numbers, got {x!r}")
    return a


def _conv2d(name, kind, weight, in_shape, stride, padding, dilation, groups) -> np.ndarray:
    """The matrix (out, in) of a 2-D convolution over a (C_in, H, W) input, C order, as PyTorch
    computes it (cross-correlation; padding 'same' pads dilation * (k - 1) // 2 before)."""
    c_out, c_in_group, kh, kw = weight.shape
    c_in, h, w = (int(v) for v in in_shape)
    if groups < 1 or c_in % groups or c_out % groups or c_in // groups != c_in_group:
        _fail(name, kind, f"weight shape {weight.shape} does not fit {c_in} input channels in {groups} group(s)")
    k = np.array([kh, kw])
    if isinstance(padding, str):
        if padding == "same" and np.any(stride != 1):
            _fail(name, kind, "padding 'same' needs stride 1")
        padding = dilation * (k - 1) // 2 if padding == "same" else np.zeros(2, dtype=np.int64)
    out_hw = (np.array([h, w]) + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    if np.any(out_hw < 1):
        _fail(name, kind, f"the input {tuple(in_shape)} is smaller than the kernel")
    oh, ow = (int(v) for v in out_hw)
    if c_out * oh * ow * c_in * h * w > MAX_MATRIX:
        _fail(name, kind, f"as a matrix it is {c_out * oh * ow} x {c_in * h * w}, more than the {MAX_MATRIX:.0e} "
              "entries an import expands a convolution into")
    m = np.zeros((c_out * oh * ow, c_in * h * w))
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    per_group = c_out // groups
    for co in range(c_out):
        g = co // per_group
        for cl in range(c_in_group):
            ci = g * c_in_group + cl
            for ky in range(kh):
                for kx in range(kw):
                    iy = oy * stride[0] - padding[0] + ky * dilation[0]
                    ix = ox * stride[1] - padding[1] + kx * dilation[1]
                    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    rows = co * oh * ow + (oy * ow + ox)[ok]
                    cols = ci * h * w + iy[ok] * w + ix[ok]
                    np.add.at(m, (rows, cols), weight[co, cl, ky, kx])
    return m


def conv_input_shape(name, kind, node) -> tuple:
    """(C_in, spatial...) of a convolution: its ``input_shape`` and the weight's channels per group."""
    if node.input_shape is None:
        _fail(name, kind, "the input shape is not known (give input_shape)")
    spatial = tuple(int(v) for v in np.atleast_1d(node.input_shape))
    return (int(np.shape(node.weight)[1]) * int(node.groups), *spatial)


def conv_matrix(name, kind, node, weight) -> np.ndarray:
    """A Conv1d's or Conv2d's weights as the matrix of the projection it becomes."""
    shape = conv_input_shape(name, kind, node)
    if kind == "Conv1d":  # a 2-D convolution over an input of height 1
        weight = weight[:, :, None, :]
        shape = (shape[0], 1, shape[1])
        stride, dilation = (np.array([1, int(np.ravel(node.stride)[0])]),
                            np.array([1, int(np.ravel(node.dilation)[0])]))
        padding = node.padding if isinstance(node.padding, str) else np.array([0, int(np.ravel(node.padding)[0])])
    else:
        stride = _pair(node.stride, name, kind, "stride")
        dilation = _pair(node.dilation, name, kind, "dilation")
        padding = node.padding if isinstance(node.padding, str) else _pair(node.padding, name, kind, "padding")
    return _conv2d(name, kind, weight, shape, stride, padding, dilation, int(node.groups))


def pool_matrix(name, kind, node, channels) -> np.ndarray:
    """SumPool2d (ones) and AvgPool2d (ones / kernel area, padding counted) as a matrix."""
    shape = node.input_type.get("input")
    if shape is None or len(shape) != 3:
        _fail(name, kind, "the input shape (C, H, W) is not known (build the graph with type_check to infer it)")
    k = _pair(node.kernel_size, name, kind, "kernel_size")
    c = int(shape[0])
    weight = np.zeros((c, 1, int(k[0]), int(k[1])))
    weight[:] = 1.0 / (k[0] * k[1]) if kind == "AvgPool2d" else 1.0
    return _conv2d(name, kind, weight, shape, _pair(node.stride, name, kind, "stride"),
                   _pair(node.padding, name, kind, "padding"), np.ones(2, dtype=np.int64), c)


# -- public entry points --------------------------------------------------------------------------


def _check_options(time_unit, discretisation, reset):
    if time_unit not in TIME_UNITS:
        raise NetworkError(f"from_nir: unknown time_unit {time_unit!r} ({', '.join(TIME_UNITS)})")
    if discretisation not in DISCRETISATIONS:
        raise NetworkError(f"from_nir: unknown discretisation {discretisation!r} ({', '.join(DISCRETISATIONS)})")
    if reset is not None and reset not in RESETS:
        raise NetworkError(f"from_nir: unknown reset {reset!r} ({', '.join(RESETS)})")


def _check_dt(dt):
    if dt is None:
        raise NetworkError("from_nir: dt is required (NIR leaves the time step to the simulator): give dt in "
                           "time_unit, e.g. dt=1e-3 with time_unit='s'")
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not math.isfinite(dt) or dt <= 0:
        raise NetworkError(f"from_nir: dt must be a positive number (in time_unit), got {dt!r}")


def spikeforge_dt(graph) -> float | None:
    """The time step (s) that spikeforge's export wrote into a graph's metadata, or None (a graph
    from elsewhere)."""
    meta = getattr(graph, "metadata", None) or {}
    if meta.get("source") != "spikeforge":
        return None
    try:
        dt = float(np.asarray(meta.get("dt"), dtype=np.float64).ravel()[0])
    except (TypeError, ValueError, IndexError):
        return None
    return dt if math.isfinite(dt) and dt > 0 else None


def read_graph(path_or_graph):
    """A ``nir.NIRGraph`` from a graph or the path of a ``.nir`` file."""
    try:
        import nir
    except ImportError:  # pragma: no cover - nir is in the test extras
        raise NetworkError("NIR import needs the package nir (pip install 'spikeforge[nir]')") from None
    if isinstance(path_or_graph, nir.NIRGraph):
        return path_or_graph
    if isinstance(path_or_graph, nir.NIRNode):
        raise NetworkError(f"from_nir: expected a NIRGraph or a .nir file, got a single {type(path_or_graph).__name__} "
                           "node (nir.NIRGraph.from_list(node) makes it a graph)")
    try:
        return nir.read(str(path_or_graph))
    except FileNotFoundError:
        raise NetworkError(f"{path_or_graph}: no such file") from None
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as exc:  # nir's checks are asserts
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NetworkError(f"{path_or_graph}: cannot read a NIR graph: {why}") from None


def nir_plan(path_or_graph, dt=None, time_unit="s", discretisation="exact", reset=None, batch_size=1,
             precision="float", name="nir", spikeforge_metadata=True) -> NirPlan:
    """The plan (a YAML network mapping and the :class:`NirImport` record) of a NIR graph."""
    _check_options(time_unit, discretisation, reset)
    graph = read_graph(path_or_graph)
    exported_dt = spikeforge_dt(graph) if spikeforge_metadata else None
    spikeforge = exported_dt is not None
    if dt is None and spikeforge:
        dt = exported_dt * TIME_UNITS["s"] / TIME_UNITS[time_unit]
    _check_dt(dt)
    if reset is None and not spikeforge:
        reset = "to_value"
    plan = _Importer(graph, float(dt), time_unit, discretisation, reset, batch_size, precision, name,
                     spikeforge).run()
    if spikeforge and not math.isclose(plan.info.assumed["dt_ms"], exported_dt * TIME_UNITS["s"], rel_tol=1e-9):
        plan.info.notes.append(f"dt = {plan.info.assumed['dt_ms']:g} ms, the graph was exported with "
                               f"{exported_dt * TIME_UNITS['s']:g} ms")
    log.info(plan.info.summary())
    for note in plan.info.notes:
        log.info("NIR import: %s", note)
    return plan


def network_from_plan(plan: NirPlan) -> Network:
    """Build the plan's network through the Python API; ``network.nir_import`` is its record."""
    spec = plan.network
    net = Network(spec["name"], dt=spec["dt"], batch_size=spec["batch_size"], precision=spec["precision"])
    models = {name: NeuronModel(name, **{k: v for k, v in m.items() if k != "kind"})
              for name, m in spec["models"].items()}
    models["value_input"] = builtins.VALUE_INPUT
    for name, p in spec["populations"].items():
        net.add_population(name, p["size"], models[p["model"]], params=p["params"])
        for param, timed in p.get("timed_inputs", {}).items():
            net.add_timed_input(name, param, timed["values"], timed["dt"])
        for what in p.get("record", ()):
            if what == "spikes":
                net.record_spikes(name)
            else:
                net.record_var(name, what)
    for name, q in spec["projections"].items():
        conn = q["connectivity"]
        if isinstance(conn, dict):
            conn = {"from_list": {k: tuple(int(i) for i in v) for k, v in conn["from_list"].items()}}
        ps = q["postsynaptic"] if isinstance(q["postsynaptic"], dict) else {"model": q["postsynaptic"]}
        net.add_projection(name, q["pre"], q["post"], builtins.WEIGHT_UPDATES[q["weight_update"]["model"]],
                           builtins.POSTSYNAPTIC[ps["model"]], conn, wu_init=q["weight_update"]["init"],
                           ps_params=ps.get("params"), delay=q.get("delay", 0.0))
    net.nir_import = plan.info
    return net


def from_nir(path_or_graph, dt=None, *, time_unit="s", discretisation="exact", reset=None, batch_size=1,
             precision="float", name="nir", spikeforge_metadata=True) -> Network:
    """A spikeforge :class:`~spikeforge.network.Network` from a NIR graph (or a ``.nir`` file).

    ``dt`` is the time step in ``time_unit`` (``s``, ``ms`` or ``us``; the unit of the graph's
    time constants and delays), required but for a graph spikeforge exported (its metadata
    holds its dt). ``discretisation``: ``exact`` (the ODEs' exact solution with the input held
    over a step) or ``euler`` (forward Euler, ``v += dt/tau * (...)``, as snnTorch and Norse
    step; a CubaLIF's current first, then v from the new current, as snnTorch's Synaptic).
    ``reset``: ``to_value`` (``v = v_reset``, NIR's definition), ``zero`` (``v = 0``),
    ``subtract`` (``v -= v_threshold``) or ``subtract_delayed`` (the threshold taken off with the
    next step's update, as snnTorch's default neurons, ``reset_delay=True``, do); None (the
    default): ``to_value``, or for a graph spikeforge exported each node's own (its metadata).

    A graph spikeforge exported (metadata ``source: spikeforge``) imports with spikeforge's
    conventions unless ``spikeforge_metadata=False``: its dt, each node's reset, ``exp_curr``
    synapses where its Cuba neurons came from them, an LI and its Threshold as one population
    (a model spiking without a reset), and biases from the first step; the
    network then runs step for step as the one exported. The returned network's
    ``nir_import`` (:class:`NirImport`) names what was assumed, the population of every node,
    the inputs and the readouts. See docs/interop.md, "Import".

    Examples:
        >>> from spikeforge import LIF, SPIKE_SOURCE_ARRAY, STATIC, EXP_CURR, Network, from_nir, to_nir
        >>> net = Network("demo", dt=0.5)
        >>> _ = net.add_population("inp", 3, SPIKE_SOURCE_ARRAY)
        >>> _ = net.add_population("exc", 4, LIF)
        >>> _ = net.add_projection("inp_exc", "inp", "exc", STATIC, EXP_CURR, wu_init={"w": 0.5})
        >>> back = from_nir(to_nir(net))        # the dt comes back from the graph's metadata
        >>> back.dt, sum(p.size for p in back.populations.values())
        (0.5, 7)
    """
    return network_from_plan(nir_plan(path_or_graph, dt, time_unit, discretisation, reset, batch_size,
                                      precision, name, spikeforge_metadata))


# -- YAML -------------------------------------------------------------------------------------------


def _number(x) -> str:
    """A number as YAML 1.1 reads it back exactly (PyYAML's floats need a '.': 1.0e-05)."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    text = repr(float(x))
    return text.replace("e", ".0e") if "e" in text and "." not in text else text


class _Flow(str):
    """An array already written as a YAML flow list: ``[0.5, 1.0, 2.0]`` (a 2-D array as rows)."""

    @classmethod
    def of(cls, a: np.ndarray) -> _Flow:
        if a.ndim > 1:
            return cls("[" + ", ".join(cls.of(row) for row in a) + "]")
        return cls("[" + ", ".join(_number(v) for v in a.tolist()) + "]")


def _plain(x):
    """The plan with numpy values made YAML's: numbers, and arrays as :class:`_Flow` text."""
    if isinstance(x, np.ndarray):
        return _Flow.of(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def plan_yaml(plan: NirPlan, source: str = "") -> str:
    """The plan as a YAML network file (docs/yaml.md) that loads back into the same network."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def literal(dumper, text):  # equations spelled out as blocks
        style = "|" if "\n" in text else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    def flow_list(dumper, items):  # arrays on one line
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=True)

    flows = []

    def placeholder(dumper, flow):  # a long array: a token here, its text after the dump (fast)
        flows.append(flow)
        return dumper.represent_scalar("tag:yaml.org,2002:str", f"__flow{len(flows) - 1}__", style=None)

    _Dumper.add_representer(str, literal)
    _Dumper.add_representer(list, flow_list)
    _Dumper.add_representer(_Flow, placeholder)
    spec = _plain(plan.network)
    head = [f"# Imported from NIR{' (' + source + ')' if source else ''} by spikeforge import-nir.",
            f"# {plan.info.summary()}.",
            "# Each Input is a value_input population: give it values with timed_inputs: {x: ...}."]
    head += [f"# Input '{k}': population {v}" for k, v in plan.info.inputs.items()]
    behind = plan.info.steps_behind
    head += [f"# Output '{k}': {p}.{v}" + (f", {behind[k]} steps behind the inputs" if k in behind else "")
             for k, (p, v) in plan.info.outputs.items()]
    head += [f"# Note: {n}" for n in plan.info.notes]
    text = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, width=1 << 30)
    text = re.sub(r"__flow(\d+)__", lambda m: flows[int(m.group(1))], text)
    return "\n".join(head) + "\n" + text
