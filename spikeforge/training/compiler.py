"""e-prop as a compiler over an ordinary :class:`~spikeforge.network.Network`.

The network does not know it is trained. :meth:`EpropCompiler.compile` names its input,
hidden and readout populations and the trainable projections, and returns a
:class:`CompiledEprop`: the network's own kernel specs (from :func:`codegen.generate.generate`)
with, for the hidden and input populations, a :class:`~spikeforge.codegen.generate.NeuronHook`
(the state e-prop needs from the previous step) and, after the simulation kernels of each
step, these kernels:

1. ``eprop_error``: the loss object's code: readout error ``err_k`` and loss of this step (for a
   readout that aggregates over the window, :class:`~.objectives.ErrorTable`'s: ``err_k`` read
   from a table the host computed after a forward pass, see :meth:`CompiledEprop.run_batch`);
2. ``eprop_readout_gradient``: ``dW_out += err (1 - kappa) zbar``, ``db += err (1 - kappa) bbar``
   with ``zbar = kappa zbar + z_{t-1}``, ``bbar = kappa bbar + 1``;
3. ``eprop_learning_signal``: per hidden population with trainable projections into it,
   ``L_j = sum_k B_jk err_k`` (its feedback object's ``B``), plus the firing-rate regularisation;
4. ``eprop_eligibility_<projection>``: per trainable projection into the hidden layer, the
   eligibility vector ``eps_t = D(h_{t-1}) eps_{t-1} + c s_{t-1-d}`` (``d`` the synapse's delay; from
   :func:`codegen.eprop.derive` for the hidden model), ``e_t = psi_t dg/dh . eps_t`` and
   ``dW += L_t (1 - kappa) ebar_{t-1}``, ``ebar = kappa ebar + e``;

and, outside the step loop (``custom_updates``), one optimiser step per trainable array
over its per-instance gradients. Timing is the simulation's: a spike at step t reaches its
targets at t+1.

What it takes: hidden populations of any spiking models with dense or sparse (stored)
trainable projections into them, with or without a delay (one for the projection, or one per
synapse: then every eligibility component is kept per synapse), from a ``value_input`` population
and from hidden populations; a ``leaky_readout`` readout fed by dense projections from hidden
populations; a learning signal per hidden population through its own feedback; every backend
of the registry (cpu, cuda, cuda-emu: the CUDA kernels give each hidden neuron, synapse and
trainable element its own thread, with the cpu's arithmetic order).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import sympy

from ..codegen.cprint import code_names
from ..codegen.eprop import PSI, Z, derive
from ..codegen.generate import HookLine, KernelWriter, NeuronHook, generate, param_array_name
from ..codegen.ir import Access, ArraySpec, KernelSpec, Line
from ..errors import NetworkError
from ..models.builtins import VALUE_INPUT
from ..models.expressions import symbol
from ..models.synapse import DELIVER_NAME
from ..models.variables import Constant
from ..timed import TimedArray
from .datasets import SpikeRaster
from .objectives import HYPER_SIZE, Adam, Loss, Optimiser, make_feedback, make_loss, make_readout

#: Steps of a trial's input the kernels hold at a time: a longer trial's input is converted to
#: the kernels' precision and handed over in parts of this many steps, so the memory a trial
#: needs beside the caller's array does not grow with its length.
INPUT_CHUNK_STEPS = 256

@dataclass
class _Plan:
    """What :meth:`EpropCompiler.compile` resolved from the names it was given."""

    inputs: object
    hidden: list  # the hidden populations, in the network's order
    readout: object
    readout_projections: list  # trainable, from hidden populations to the readout
    hidden_projections: list  # trainable, into hidden populations
    train_bias: bool
    n_steps: int
    kappa: float
    dt: float
    feedback: dict  # hidden population (that learns) -> its Feedback

    @property
    def learning(self) -> list:
        """The hidden populations with trainable projections into them: they need learning signals."""
        return [h for h in self.hidden if any(q.post is h for q in self.hidden_projections)]

    def readout_projection(self, hidden):
        """The trainable projection from ``hidden`` to the readout, or None."""
        return next((q for q in self.readout_projections if q.pre is hidden), None)


def _zero(name, owner, var, size, batched=True, slots=1, comment="") -> ArraySpec:
    return ArraySpec(name, owner, var, "scalar", size, batched, "eprop", Constant(0), slots=slots, comment=comment)



def _trace_code(deriv, states, D, c, dg, ref, coef=lambda expr: f"({expr})") -> tuple[dict[str, str], str]:
    """The printed recursion of every eligibility component, ``eps_t = D eps_t-1 + c s``, and
    the trace ``e = psi (dg/dh . eps)``, from the printed factors ``D``, ``c`` and ``dg``;
    ``ref(component, old)`` names a component's previous (``old``) or new value, ``coef`` a
    factor."""
    n = len(states)
    recursion = {}
    for a, s in enumerate(states):
        terms = [f"{coef(D[a][b])} * {ref(states[b], True)}" for b in range(n) if deriv.D[a, b] != 0]
        if deriv.c[a] != 0:
            terms.append(f"{coef(c[a])} * _s")
        recursion[s] = " + ".join(terms) or "(scalar)0"
    trace = "_psi_j * (" + " + ".join(f"{coef(dg[a])} * {ref(s, False)}" for a, s in enumerate(states)) + ")"
    return recursion, trace


def _block_fill(spec, q) -> str:
    """The per-instance count of the steps an eligibility kernel has gathered in its block."""
    name = f"{q.name}_eprop_blk_fill"
    spec.arrays.append(ArraySpec(name, q.name, "_eprop_blk_fill", "uint32", 1, True, "eprop", Constant(0),
                                 comment="e-prop: steps gathered since the synapses' last update"))
    return name


def _learning_step_start(K: int, n_h: int, what: str) -> list[Line]:
    """The first lines of a kernel that learns from the readout error: the sizes, nothing to do
    when only evaluating, and this instance's errors ``_err``."""
    return [
        Line(f"const uint32_t K = {K}u, N = {n_h}u;", "readout and hidden neurons"),
        Line("(void)K; (void)N;"),
        Line("if (!_eprop_learn[0]) return;", f"evaluation: no {what}"),
        Line("const scalar* const _err = _eprop_err + (size_t)_b * K;"),
    ]

def _loop(index: str, count: int) -> dict:
    """A kernel's loop over elements (``info["loop"]``): the cpu templates write it as a
    ``for`` over ``index``, the CUDA ones give each element its own thread; ``info["body"]``
    is the code of one element, ``info["once"]`` code run once per instance beside it (it must
    not touch what the body touches)."""
    return {"index": index, "count": int(count), "ctype": "size_t" if index == "_k" else "uint32_t"}


def _scalar_literal(value: float) -> str:
    return f"(scalar){value!r}"


class EpropCompiler:
    """Compiles a network for e-prop training (Bellec et al. 2020) on any registered backend.

    The kernels on their own, for a network ``net``, inputs ``x`` (steps, batch, inputs), a
    readout ``mask`` and ``labels`` (the example below trains through a Trainer instead):

    >>> compiled = EpropCompiler(loss="xent", optimiser=Adam(lr=1e-3)).compile(  # doctest: +SKIP
    ...     net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"],
    ...     n_steps=100)
    >>> result = compiled.run_batch(x, mask, labels=labels)  # doctest: +SKIP
    >>> compiled.apply_gradients()  # doctest: +SKIP

    Examples:
        >>> import numpy as np
        >>> from spikeforge import LIF_SUBTRACTIVE, Adam, EpropCompiler, Network, Trainer
        >>> from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, STATIC, VALUE_INPUT
        >>> net = Network("tiny", dt=1.0)
        >>> _ = net.add_population("inp", 4, VALUE_INPUT)
        >>> _ = net.add_population("hid", 8, LIF_SUBTRACTIVE, {"v_th": 0.6, "r_m": 10.0})
        >>> _ = net.add_population("out", 2, LEAKY_READOUT, {"tau_m": 20.0, "bias": [0.0, 0.0]})
        >>> for name, pre, post, wu in (("inp_hid", "inp", "hid", SCALED), ("hid_hid", "hid", "hid", STATIC),
        ...                             ("hid_out", "hid", "out", STATIC)):
        ...     _ = net.add_projection(name, pre, post, wu, ONE_STEP_CURR, wu_init={"w": "randn() / sqrt(N_pre)"})
        >>> trainer = Trainer(net, compiler=EpropCompiler(loss="xent", optimiser=Adam(lr=1e-3)), inputs="inp",
        ...                   hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out"], batch_size=2)
        >>> pairs = [(np.full((20, 4), float(c)), c) for c in (0, 1)]    # (steps x inputs, class)
        >>> history = trainer.fit(pairs, epochs=1, progress=False)
        >>> len(history)
        1
    """

    def __init__(self, loss="xent", optimiser: Optimiser | None = None, feedback="symmetric",
                 surrogate: str = "triangular", gamma: float = 0.3, reg_rate: float = 0.0,
                 reg_target_hz: float = 10.0, readout="per_step", block_steps: int = 16):
        self.loss = make_loss(loss)
        # what the loss is of: y at every step of the window, or its sum, mean, max or last value
        self.readout = make_readout(readout)
        self.optimiser = optimiser if optimiser is not None else Adam()
        if not isinstance(self.optimiser, Optimiser):
            raise NetworkError(f"optimiser must be an Optimiser (Adam, SGD), got {optimiser!r}")
        # one Feedback for every hidden population, or {population: feedback}
        self.feedback = ({k: make_feedback(v) for k, v in feedback.items()} if isinstance(feedback, dict)
                         else make_feedback(feedback))
        self.surrogate = surrogate
        for name, v in (("gamma", gamma), ("reg_rate", reg_rate), ("reg_target_hz", reg_target_hz)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise NetworkError(f"{name} must be a finite non-negative number, got {v!r}")
        self.gamma, self.reg_rate, self.reg_target_hz = float(gamma), float(reg_rate), float(reg_target_hz)
        # CPU backends: steps an eligibility kernel gathers before it visits the synapses (1: every step)
        if isinstance(block_steps, bool) or not isinstance(block_steps, int) or not 1 <= block_steps <= 64:
            raise NetworkError(f"block_steps must be an integer from 1 to 64, got {block_steps!r}")
        self.block_steps = block_steps

    @property
    def kernel_loss(self) -> Loss:
        """The loss object whose code the error kernel runs: the loss itself for a per-step
        readout, the error table for one that aggregates over the window."""
        return self.readout.kernel_loss(self.loss)

    # -- resolving names --------------------------------------------------------------------
    def _plan(self, network, inputs, hidden, readout, trainable, n_steps) -> _Plan:
        """The roles of ``network``'s parts resolved and checked: populations, ``n_steps``,
        trainable projections, parameter values and each learning population's feedback."""
        inp, hid, out = self._plan_populations(network, inputs, hidden, readout)
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise NetworkError(f"n_steps must be a positive integer, got {n_steps!r}")
        projections, train_bias = self._plan_trainable(network, trainable, inp, hid, out)
        into_readout = self._plan_into_readout(projections, inp, hid, out)
        self._check_plan_values(hid, out, train_bias)
        kappa = math.exp(-network.dt / float(out.params["tau_m"]))
        plan = _Plan(inp, hid, out, into_readout, [q for q in projections if q.post in hid], train_bias, n_steps,
                     kappa, network.dt, {})
        self._plan_feedback(plan)
        return plan

    @staticmethod
    def _population(network, name, what):
        """The population ``name`` of ``network``; ``what``: the option that named it."""
        if name not in network.populations:
            raise NetworkError(f"{what}: no population '{name}' (populations: {', '.join(network.populations)})")
        return network.populations[name]

    def _plan_populations(self, network, inputs, hidden, readout) -> tuple:
        """``(inputs, hidden populations in the network's order, readout)``, each of the model
        its role needs: value_input, spiking models, leaky_readout."""
        inp, out = self._population(network, inputs, "inputs"), self._population(network, readout, "readout")
        names = [hidden] if isinstance(hidden, str) else list(hidden)
        if not names or len(set(names)) != len(names):
            raise NetworkError(f"hidden: name one population or several distinct ones, got {hidden!r}")
        hid = [self._population(network, name, "hidden") for name in names]
        hid.sort(key=lambda h: list(network.populations).index(h.name))
        if inp.model is not VALUE_INPUT:
            raise NetworkError(f"inputs: population '{inp.name}' must use the value_input model, not "
                               f"'{inp.model.name}'")
        if out.model.name != "leaky_readout":
            raise NetworkError(f"readout: population '{out.name}' must use the leaky_readout model, not "
                               f"'{out.model.name}'")
        for h in hid:
            if not h.model.spiking:
                raise NetworkError(f"hidden: population '{h.name}' ({h.model.name}) does not spike")
        return inp, hid, out

    @staticmethod
    def _plan_trainable(network, trainable, inp, hid, out) -> tuple:
        """``(the trainable projections, whether the readout bias trains)``: each projection
        stored (dense or sparse), from the input or a hidden population, into a hidden
        population or the readout, through one_step_curr."""
        bias = f"{out.name}.bias"
        train_bias = bias in list(trainable)
        projections = []
        for name in trainable:
            if name == bias:
                continue
            if name not in network.projections:
                raise NetworkError(f"trainable: no projection '{name}' (projections: "
                                   f"{', '.join(network.projections)}; the readout bias is '{bias}')")
            projections.append(network.projections[name])
        hidden_names = ", ".join(f"'{h.name}'" for h in hid)
        for q in projections:
            if q.connectivity.kind not in ("dense", "sparse"):
                raise NetworkError(f"trainable projection '{q.name}': the training compiler takes dense or "
                                   f"sparse (stored) projections, not {q.connectivity.kind}")
            if q.post not in hid and q.post is not out:
                raise NetworkError(f"trainable projection '{q.name}' ends at '{q.post.name}'; it must end at a "
                                   f"hidden population ({hidden_names}) or the readout '{out.name}'")
            if q.pre is not inp and q.pre not in hid:
                raise NetworkError(f"trainable projection '{q.name}' starts at '{q.pre.name}'; trainable projections "
                                   f"start at '{inp.name}' or a hidden population ({hidden_names})")
            if q.postsynaptic.name != "one_step_curr":
                raise NetworkError(f"trainable projection '{q.name}': postsynaptic model must be one_step_curr, "
                                   f"not '{q.postsynaptic.name}'")
        return projections, train_bias

    @staticmethod
    def _plan_into_readout(projections, inp, hid, out) -> list:
        """The trainable projections into the readout: at least one, each dense, without
        delay, from a hidden population, and no two from the same one."""
        hidden_names = ", ".join(f"'{h.name}'" for h in hid)
        into_readout = [q for q in projections if q.post is out]
        if not into_readout:
            raise NetworkError(f"trainable: name a projection from a hidden population ({hidden_names}) to the "
                               f"readout '{out.name}'")
        for q in into_readout:
            if q.pre is inp:
                raise NetworkError(f"trainable projection '{q.name}': the readout learns from hidden populations "
                                   f"({hidden_names}), not from the input '{inp.name}'")
            if q.connectivity.kind != "dense" or q.delay_steps or q.synapse_delay_steps is not None:
                raise NetworkError(f"trainable projection '{q.name}': the projection to the readout must be dense "
                                   "and without delay (delay: 0, not per synapse) in the training compiler")
            if sum(r.pre is q.pre for r in into_readout) > 1:
                raise NetworkError(f"trainable: two projections from '{q.pre.name}' to the readout '{out.name}'")
        return into_readout

    @staticmethod
    def _check_plan_values(hid, out, train_bias):
        """Parameters of the hidden populations and the readout may be of any kind (numbers,
        one value per neuron, dynamic, one value per batch instance; the hidden ones are checked
        against the eligibility factors in :meth:`_check_per_neuron`); a trained bias is one per
        neuron; the readout's tau_m is one number, compiled in (the kernels' kappa)."""
        if train_bias and out.values.kind("bias") != "element":
            raise NetworkError(f"readout '{out.name}': to train its bias, give 'bias' one value per neuron "
                               f"(e.g. [0.0] * {out.size})")
        kind = out.values.kind("tau_m")
        if kind != "constant":
            what = {"element": "one value per neuron", "batch": "one value per batch instance"}.get(kind, kind)
            raise NetworkError(f"readout '{out.name}': parameter 'tau_m' is {what}, but the training compiler "
                               "compiles kappa = exp(-dt / tau_m) into its kernels: give tau_m one number")

    def _plan_feedback(self, plan: _Plan):
        """Each learning hidden population's feedback into ``plan.feedback``; symmetric
        feedback needs the population's projection to the readout."""
        for h in plan.learning:
            fb = self.feedback.get(h.name) if isinstance(self.feedback, dict) else self.feedback
            if fb is None:
                raise NetworkError(f"feedback: no feedback given for the hidden population '{h.name}'")
            if fb.needs_readout_projection and plan.readout_projection(h) is None:
                raise NetworkError(f"hidden population '{h.name}': {fb.name} feedback sends the error back through "
                                   f"its projection to the readout, and it has none; use random feedback")
            plan.feedback[h.name] = fb

    # -- compiling ----------------------------------------------------------------------------
    def compile(self, network, *, inputs: str, hidden: str | list[str], readout: str, trainable, n_steps: int,
                threads: int | None = None, backend: str = "cpu", **backend_options) -> CompiledEprop:
        """The network compiled for training on trials of ``n_steps`` steps (see the module
        docstring): ``inputs``, ``hidden`` (one name or several) and ``readout`` name
        populations, ``trainable`` projections (and ``"<readout>.bias"``). ``backend``: a name
        from the backend registry (cpu, cuda, cuda-emu); ``backend_options`` go to it."""
        from ..runtime.backends import get_backend

        get_backend(backend)  # an unknown name is refused before anything is generated
        plan = self._plan(network, inputs, hidden, readout, trainable, n_steps)
        net = copy.copy(network)  # the caller's network stays as it was: the input array is ours
        net.timed_inputs = dict(network.timed_inputs)
        # the input array of the kernels holds INPUT_CHUNK_STEPS steps; a longer trial is fed in parts
        net.timed_inputs[(plan.inputs.name, "x")] = TimedArray(
            np.zeros((min(n_steps, INPUT_CHUNK_STEPS), network.batch_size, plan.inputs.size)), network.dt)
        derivs = {}  # per hidden population that learns: its model's e-prop factors
        for h in plan.learning:
            derivs[h.name] = derive(h.model, self._constants(h), surrogate=self.surrogate, gamma=self.gamma)
            self._check_per_neuron(h, derivs[h.name])
            self._check_hidden_values(h, plan.dt, derivs[h.name])
        hooks = self._hooks(plan, derivs)
        spec = generate(net, hooks)
        # a CPU backend gathers the eligibility work of several steps (see _blocked_trace)
        blocks = self.block_steps > 1 and not get_backend(backend).device
        gradients = self._append(net, spec, plan, derivs, blocks=blocks)
        compiled = CompiledEprop(self, net, spec, plan, gradients, threads, backend, **backend_options)
        compiled.derivations = derivs  # for the checks of set_param
        return compiled

    @staticmethod
    def _constants(hid) -> dict:
        return {k: v for k, v in hid.params.items() if hid.values.kind(k) == "constant"}

    @staticmethod
    def _check_hidden_values(hid, dt, deriv, current: dict | None = None):
        """As for ``EpropConfig``: the traces model no refractoriness, so only a period of 0
        trains the model as it simulates; the surrogate's width must be positive (a negative
        one flips the sign of every gradient through the hidden layer). Checked for every
        batch instance; ``current``: the parameters' values now (name -> a number, or an
        array per neuron or per instance; default: the network's)."""
        from types import SimpleNamespace

        from .model import hidden_values

        m = hid.model
        kinds = {k: hid.values.kind(k) for k in hid.params}
        values = current if current is not None else {
            k: hid.values.batch[k] if kinds[k] == "batch" else v for k, v in hid.params.items()}
        per_neuron = {k: np.asarray(values[k], dtype=float) for k in kinds if kinds[k] == "element"}
        per_instance = [k for k in kinds if kinds[k] == "batch"]
        # each distinct combination of the per-instance values (one row if there are none)
        rows = np.unique(np.stack([np.ravel(values[k]) for k in per_instance], axis=1), axis=0) if per_instance \
            else np.zeros((1, 0))
        where = f"hidden population '{hid.name}' ({m.name})"
        for row in rows:
            params = {k: float(v) for k, v in values.items() if kinds[k] in ("constant", "dynamic")}
            layer = SimpleNamespace(hidden_model=m, dt=dt, per_neuron_params=per_neuron,
                                    params=params | dict(zip(per_instance, map(float, row))))
            if m.refractory is not None:
                period = hidden_values(layer, m.refractory)
                if not np.all(np.isfinite(period)) or np.any(period != 0):
                    raise NetworkError(f"{where}: e-prop does not model refractoriness, but the refractory period "
                                       f"'{m.refractory_source}' is {float(np.nanmax(np.abs(period))):g} ms; set it "
                                       "to 0")
            scale = hidden_values(layer, deriv.scale)
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise NetworkError(f"{where}: the surrogate's scale '{deriv.scale}' must be positive, got "
                                   f"{float(np.nanmin(scale)):g}")

    @staticmethod
    def _check_per_neuron(hid, deriv):
        """Per-neuron parameters are loaded where the postsynaptic neuron is known: not in a
        derived parameter, nor in an eligibility component kept per presynaptic neuron. (Values
        per batch instance may: that component is kept per presynaptic neuron of each instance.)"""
        m = hid.model
        names = {k for k, kind in hid.values.kinds.items() if kind == "element"}
        for d, expr in m.derived.items():
            used = sorted(names & {s.name for s in expr.free_symbols})
            if used:
                raise NetworkError(f"hidden population '{hid.name}' ({m.name}): parameter '{used[0]}' has one value "
                                   f"per neuron, but the derived parameter '{d}' uses it; give it one value (or "
                                   "one per batch instance)")
        n = len(deriv.states)
        for s in deriv.per_presynaptic:
            a = deriv.states.index(s)
            used = sorted(names & {x.name for f in [deriv.c[a], *(deriv.D[a, b] for b in range(n))]
                                   for x in f.free_symbols})
            if used:
                raise NetworkError(f"hidden population '{hid.name}' ({m.name}): parameter '{used[0]}' has one value "
                                   f"per neuron, but the eligibility component of '{s}' is kept per presynaptic "
                                   "neuron; give it one value (or one per batch instance)")

    @staticmethod
    def _signal(q) -> sympy.Expr:
        """What a presynaptic spike of ``q`` delivers per unit weight, d(post_input)/dw, in the
        presynaptic neuron's names: 1 for ``post_input += w``, ``value`` for ``w * value_pre``."""
        delivered = [st for st in q.weight_update.on_pre if st.target == DELIVER_NAME]
        if len(delivered) != 1 or "w" not in q.wu_vars:
            raise NetworkError(f"trainable projection '{q.name}' ({q.weight_update.name}): the weight update must "
                               "have a weight 'w' and add to post_input once on a presynaptic spike")
        ds = sympy.diff(delivered[0].value - symbol(DELIVER_NAME), symbol("w"))
        pre = {s: symbol(s.name[:-4]) for s in ds.free_symbols if s.name.endswith("_pre")}
        if ds.has(symbol("w")) or set(ds.free_symbols) - set(pre):
            raise NetworkError(f"trainable projection '{q.name}': its input must be linear in 'w' and read only "
                               f"presynaptic variables, got d(post_input)/dw = {ds}")
        if any(q.pathway_delay_steps.values()):
            raise NetworkError(f"trainable projection '{q.name}': delay: one delay per named pathway "
                               f"({', '.join(q.pathway_delay_steps)}); the training compiler takes one delay for the "
                               "projection or one per synapse")
        if q.delay_steps and pre:
            raise NetworkError(f"trainable projection '{q.name}' has a delay, but its input reads presynaptic "
                               f"variables ({', '.join(sorted(str(x) for x in pre))}) when the spike is delivered, "
                               "not when it was sent; use a synapse whose input is the weight alone (static)")
        return ds.xreplace(pre)

    @staticmethod
    def longest_delay(q) -> int:
        """The longest delay in steps of a synapse of ``q``: its projection-wide delay, plus
        the largest its per-synapse delays may be (the dendritic buffer's slots - 1)."""
        per_synapse = q.dendritic_slots - 1 if q.synapse_delay_steps is not None else 0
        return q.delay_steps + per_synapse

    @staticmethod
    def signal_slots(plan, population: str) -> int:
        """Steps of presynaptic signal kept for ``population``: its trainable projections'
        longest delay + 2 (at step t, s_t is written before s_{t-1-delay} is read)."""
        projections = [*plan.hidden_projections, *plan.readout_projections]
        delays = [EpropCompiler.longest_delay(q) for q in projections if q.pre.name == population]
        return max(delays) + 2

    @staticmethod
    def _signal_at(plan, population: str, delay: int, n: int) -> str:
        """C text: the start of ``population``'s signal s_{t-1-delay} for batch instance _b."""
        slots = EpropCompiler.signal_slots(plan, population)
        return (f"_{population}_eprop_s_hist + ((size_t)((_step + {slots - 1 - delay}u) % {slots}u) * _B + _b) * "
                f"{n}u")

    def _hooks(self, plan, derivs) -> dict[str, NeuronHook]:
        hooks: dict[str, NeuronHook] = {}

        def hook(pop) -> NeuronHook:
            return hooks.setdefault(pop.name, NeuronHook())

        def state(pop, var, comment):
            name = f"{pop.name}_eprop_{var}"
            h = hook(pop)
            h.arrays.append(_zero(name, pop.name, f"_eprop_{var}", pop.size, comment=comment))
            h.loads.append(Access(f"_eprop_{var}", name, "neuron", True, "scalar", True))
            return f"_eprop_{var}"

        # the presynaptic signal s (what a spike delivers per unit weight) and its previous value
        signals: dict[str, sympy.Expr] = {}
        for q in [*plan.hidden_projections, *plan.readout_projections]:
            s = self._signal(q)
            if q.pre.name in signals and signals[q.pre.name] != s:
                raise NetworkError(f"trainable projections from '{q.pre.name}' deliver different signals per unit "
                                   f"weight ({signals[q.pre.name]} and {s})")
            signals[q.pre.name] = s
        # kept for the longest delay: s_{t-1-d} is read at step t after s_t was written
        for name, s in signals.items():
            pop = next(p for p in [plan.inputs, *plan.hidden] if p.name == name)
            slots = self.signal_slots(plan, name)
            hist = f"{pop.name}_eprop_s_hist"
            h = hook(pop)
            h.arrays.append(_zero(hist, pop.name, "_eprop_s_hist", pop.size, slots=slots,
                                  comment=f"e-prop: presynaptic signal s of the last {slots} steps [step % {slots}]"))
            h.writes.append(hist)
            h.after_threshold += [
                HookLine("scalar _eprop_s", s, f"e-prop: presynaptic signal per unit weight, {s}"),
                HookLine("_eprop_s", "_spike ? _eprop_s : (scalar)0", "e-prop: nothing without a spike"),
                HookLine(f"_{hist}[((size_t)(_step % {slots}u) * _B + _b) * {pop.size}u + _i]", "_eprop_s",
                         "e-prop: kept for the projections' delays")]
        for hid in plan.hidden:
            count = state(hid, "count", "e-prop: spikes of this trial")
            hook(hid).after_threshold.append(
                HookLine(count, f"{count} + (_spike ? (scalar)1 : (scalar)0)", "e-prop: spike count of the trial"))
        # the learning hidden neurons' state of the previous step, pseudo-derivative and spike
        for hid in plan.learning:
            deriv, h = derivs[hid.name], hook(hid)
            for var in ("z", "psi"):
                cur = state(hid, var, f"e-prop: {var} of this step")
                prev = state(hid, f"{var}_prev", f"e-prop: {var} of the previous step")
                h.before.append(HookLine(prev, cur, f"e-prop: {var}_(t-1)"))
            for s in deriv.states:
                cur = state(hid, f"{s}_pre", f"e-prop: {s} before the reset, this step")
                prev = state(hid, f"{s}_prev", f"e-prop: {s} before the reset, previous step")
                h.before.append(HookLine(prev, cur, f"e-prop: {s} before the reset at t-1"))
            h.after_threshold += [
                HookLine("const scalar _g", deriv.g, "e-prop: distance to threshold"),
                *self._psi_lines(deriv.psi),
                HookLine("_eprop_z", "_spike ? (scalar)1 : (scalar)0", "e-prop: spike"),
                *(HookLine(f"_eprop_{s}_pre", symbol(s), f"e-prop: {s} before the reset") for s in deriv.states),
            ]
        return hooks

    @staticmethod
    def _psi_lines(psi: sympy.Expr) -> list[HookLine]:
        """The lines that compute the pseudo-derivative: each ``Max(a, b)`` of a number ``a`` (the
        triangular surrogate's ``max(0, ...)``) taken out as a select ``b > a ? b : a``, the value
        fmax gives (``a`` for a NaN ``b``), without the library call that keeps the neuron loop
        from being vectorised."""
        lines: list[HookLine] = []

        def select(mx):
            a, b = mx.args
            k = len(lines) // 2
            arg, name = f"_eprop_mx{k}_arg", f"_eprop_mx{k}"
            low = f"(scalar){float(a)!r}"
            lines.extend([HookLine(f"const scalar {arg}", b, "e-prop: argument of a max"),
                          HookLine(f"const scalar {name}", f"{arg} > {low} ? {arg} : {low}",
                                   "e-prop: the max, as fmax gives it")])
            return symbol(name)
        psi = psi.replace(lambda x: isinstance(x, sympy.Max) and len(x.args) == 2 and x.args[0].is_number, select)
        return [*lines, HookLine("_eprop_psi", psi, "e-prop: pseudo-derivative dz/dg")]

    # -- kernels appended to the spec ----------------------------------------------------------
    def _append(self, net, spec, plan, derivs, blocks: bool = False) -> dict[str, str]:
        """Add the training arrays, kernels and custom updates to ``spec``; returns the gradient
        array of each trainable array. ``blocks``: eligibility kernels may work in blocks of
        steps where the model allows it (see :meth:`_blocked_trace`)."""
        out = plan.readout
        K, T = out.size, plan.n_steps
        kappa = Line(f"const scalar _kappa = {_scalar_literal(plan.kappa)};",
                     f"kappa = exp(-dt / tau_m) of the readout '{out.name}'")
        arrays = [
            _zero("eprop_err", out.name, "_eprop_err", K, comment="readout error of this step"),
            _zero("eprop_loss", out.name, "_eprop_loss", 1, comment="loss of this trial"),
            _zero("eprop_y", out.name, "_eprop_y", K, slots=T, comment="readout values [step][batch][neuron]"),
            ArraySpec("eprop_mask", "eprop", "mask", "scalar", T, False, "eprop_data",
                      comment="weight of each step in the loss"),
            ArraySpec("eprop_learn", "eprop", "learn", "uint32", 1, False, "eprop_data", data=np.ones(1, np.uint32),
                      comment="1: traces and gradients; 0: the forward pass only"),
            ArraySpec("eprop_optimiser", "eprop", "optimiser", "double", HYPER_SIZE, False, "eprop_data",
                      comment="the optimiser's hyperparameters for its next step"),
            _zero("eprop_bbar", out.name, "_eprop_bbar", 1, comment="filtered constant input of the bias"),
            *self.kernel_loss.arrays(K, T),
        ]
        for q in plan.readout_projections:
            arrays.append(_zero(f"{q.name}_eprop_zbar", q.name, "_eprop_zbar", q.pre.size,
                                comment="filtered spikes of the hidden population"))
        for h in plan.learning:
            arrays.append(_zero(f"{h.name}_eprop_L", h.name, "_eprop_L", h.size,
                                comment="learning signal of this step"))
            arrays += plan.feedback[h.name].arrays(h.name, h.size, K)
        grads = {}  # trainable array -> its per-instance gradient array
        for q in [*plan.hidden_projections, *plan.readout_projections]:
            g = _zero(f"{q.name}_eprop_grad", q.name, "_eprop_grad", q.n_synapses,
                      comment="gradient of w, per batch instance")
            arrays.append(g)
            grads[f"{q.name}_w"] = g
        if plan.train_bias:
            g = _zero(f"{out.name}_eprop_grad_bias", out.name, "_eprop_grad_bias", K,
                      comment="gradient of the bias, per batch instance")
            arrays.append(g)
            grads[param_array_name(out.name, "neuron", "bias")] = g
        for a in arrays:
            spec.arrays.append(a)
        kernels = [self._error_kernel(plan, kappa)]
        kernels += [self._readout_kernel(plan, kappa, q, plan.train_bias and k == 0)
                    for k, q in enumerate(plan.readout_projections)]
        kernels += [self._signal_kernel(plan, h) for h in plan.learning]
        for q in plan.hidden_projections:
            kernels.append(self._eligibility_kernel(net, spec, plan, derivs[q.post.name], q, kappa, blocks))
        spec.kernels += kernels
        for target, g in grads.items():
            owner = spec.array(target).owner
            size = spec.array(target).size
            for a in self.optimiser.arrays(owner, target, size):
                spec.arrays.append(a)
            spec.custom_updates.append(KernelSpec(
                f"optimiser_{target}", "optimiser_step", owner, "custom_update",
                f"{self.optimiser.name} step of {target} from its gradients summed over the batch",
                [], [], self.optimiser.code(target, g.name, size),
                {"loop": _loop("_k", size), "body": self.optimiser.body(target, g.name, size), "once": []},
                reads=(g.name, "eprop_optimiser", *(a.name for a in self.optimiser.arrays(owner, target, size))),
                writes=(target, *(a.name for a in self.optimiser.arrays(owner, target, size)))))
        names = {a.name: a for a in spec.arrays}
        spec.instances_independent = all(names[n].batched for k in spec.kernels for n in k.writes)
        return {t: g.name for t, g in grads.items()}

    def _error_kernel(self, plan, kappa) -> KernelSpec:
        out, K, loss = plan.readout, plan.readout.size, self.kernel_loss
        code = [
            Line(f"const uint32_t K = {K}u;", "readout neurons"),
            Line(f"if (_step >= {plan.n_steps}u) return;", "past the trial"),
            Line(f"const scalar* const _y = _{out.name}_v + (size_t)_b * K;", "readout values y_t"),
            Line("scalar* const _err = _eprop_err + (size_t)_b * K;"),
            Line("const scalar _mask = _eprop_mask[_step];"),
            Line("scalar _loss = _eprop_loss[_b];"),
            Line("for (uint32_t _k = 0; _k < K; _k++) _eprop_y[((size_t)_step * _B + _b) * K + _k] = _y[_k];",
                 "kept for the caller"),
            Line("{"), *loss.code(), Line("}"),
            Line("_eprop_loss[_b] = _loss;"),
        ]
        reads = [f"{out.name}_v", "eprop_mask", *(a.name for a in loss.arrays(K, plan.n_steps))]
        return KernelSpec(f"eprop_error_{out.name}", "eprop_error", out.name, "eprop_step",
                          f"e-prop: readout error and loss ({loss.name}) of '{out.name}'", [], [], code,
                          {"work": K, "loop": None, "body": [], "once": []}, reads=tuple(reads),
                          writes=("eprop_err", "eprop_loss", "eprop_y"))

    def _readout_kernel(self, plan, kappa, qo, with_bias: bool) -> KernelSpec:
        hid, out = qo.pre, plan.readout
        K, n_h = out.size, hid.size
        code = [
            *_learning_step_start(K, n_h, "gradients"),
            Line(f"const scalar* const _zprev = {self._signal_at(plan, hid.name, 0, n_h)};", "z_{t-1}"),
            Line(f"scalar* const _zbar = _{qo.name}_eprop_zbar + (size_t)_b * N;"),
            Line(f"scalar* const _g_w = _{qo.name}_eprop_grad + (size_t)_b * N * K;"),
            # outside the loss's window every error is zero and the gradient keeps its value (a
            # term err (1 - kappa) zbar is then a signed zero, zbar >= 0 finite): one test per step,
            # so that the loop over the neurons has no branch in it
            Line("bool _errs = false;"),
            Line("for (uint32_t _k = 0; _k < K; _k++) _errs |= _err[_k] != 0;", "an error at this step?"),
        ]
        # per hidden neuron _j: its filtered spikes and its row of the gradient
        body = [
            Line("_zbar[_j] = _kappa * _zbar[_j] + _zprev[_j];", "zbar = kappa zbar + z_{t-1}"),
            Line("if (_errs) {"),
            Line("    for (uint32_t _k = 0; _k < K; _k++)"),
            Line("        _g_w[(size_t)_j * K + _k] += _err[_k] * (1 - _kappa) * _zbar[_j];",
                 "dW_out += err (1 - kappa) zbar"),
            Line("}"),
        ]
        once, writes = [], [f"{qo.name}_eprop_grad", f"{qo.name}_eprop_zbar"]
        if with_bias:  # once per instance: the bias gradient does not touch the weights'
            once = [Line("_eprop_bbar[_b] = _kappa * _eprop_bbar[_b] + 1;", "bbar = kappa bbar + 1"),
                    Line("const scalar _bbar = _eprop_bbar[_b];"),
                    Line("if (_errs) {"),
                    Line("    for (uint32_t _k = 0; _k < K; _k++)"),
                    Line(f"        _{out.name}_eprop_grad_bias[(size_t)_b * K + _k] += _err[_k] * (1 - _kappa) * "
                         "_bbar;", "db += err (1 - kappa) bbar"),
                    Line("}")]
            writes += ["eprop_bbar", f"{out.name}_eprop_grad_bias"]
        return KernelSpec(f"eprop_readout_gradient_{qo.name}", "eprop_readout_gradient", qo.name, "eprop_step",
                          f"e-prop: exact gradients of the readout weights '{qo.name}'"
                          + (f" and of the bias of '{out.name}'" if with_bias else ""), [kappa], [], code,
                          {"work": K * n_h, "loop": _loop("_j", n_h), "body": body, "once": once},
                          reads=("eprop_learn", "eprop_err", f"{hid.name}_eprop_s_hist"), writes=tuple(writes))

    def _signal_kernel(self, plan, hid) -> KernelSpec:
        out, qo, feedback = plan.readout, plan.readout_projection(hid), plan.feedback[hid.name]
        K, n_h = out.size, hid.size
        code = [
            *_learning_step_start(K, n_h, "learning signals"),
            Line(f"scalar* const _L = _{hid.name}_eprop_L + (size_t)_b * N;"),
        ]
        # per hidden neuron _j; the sum over the readout in the order k = 0, 1, ... on every backend
        body = [
            Line("scalar _l = 0;"),
            Line(f"for (uint32_t _k = 0; _k < K; _k++) _l += {feedback.matrix(hid.name, qo and qo.name)} * "
                 "_err[_k];", f"L_j = sum_k B_jk err_k ({feedback.name} feedback)"),
        ]
        reads = ["eprop_learn", "eprop_err", *feedback.reads(hid.name, qo and qo.name)]
        if self.reg_rate > 0:
            target = self.reg_target_hz * plan.dt / 1000.0  # spikes per step
            body.append(Line(
                f"_l += (scalar){self.reg_rate!r} * (_{hid.name}_eprop_count[(size_t)_b * N + _j] / "
                f"(scalar)(_step + 1) - (scalar){target!r});",
                f"firing-rate regularisation towards {self.reg_target_hz:g} Hz"))
            reads.append(f"{hid.name}_eprop_count")
        body.append(Line("_L[_j] = _l;"))
        return KernelSpec(f"eprop_learning_signal_{hid.name}", "eprop_learning_signal", hid.name, "eprop_step",
                          f"e-prop: learning signals of '{hid.name}' from the readout error", [], [], code,
                          {"work": K * n_h, "loop": _loop("_j", n_h), "body": body, "once": []}, reads=tuple(reads),
                          writes=(f"{hid.name}_eprop_L",))

    def _eligibility_kernel(self, net, spec, plan, deriv, q, kappa, blocks: bool = False) -> KernelSpec:
        hid, m = q.post, q.post.model
        w = KernelWriter(net)
        per_neuron = [k for k in hid.params if hid.values.kind(k) == "element"]
        instance_lines, instance_reads = self._instance_params(w, spec, hid)
        dynamic = {k: spec.array(param_array_name(hid.name, "neuron", k)) for k in hid.params
                   if hid.values.kind(k) == "dynamic"}  # read once per launch, among the constants
        w.add_params({k: v for k, v in hid.params.items() if hid.values.kind(k) in ("constant", "dynamic")}, "",
                     m.name, dynamic)
        fixed = len(w.constants)  # the parameters' lines; then the derived values and invariants
        w.add_derived(m, {}, "")
        prev = {symbol(s): symbol(f"_prev_{s}") for s in deriv.states}
        prev[PSI] = symbol("_psi_prev")
        prev[Z] = symbol("_z_prev")
        states, n = deriv.states, len(deriv.states)
        D = [[w.expr(sympy.sympify(deriv.D[a, b]).xreplace(prev)) for b in range(n)] for a in range(n)]
        c = [w.expr(sympy.sympify(deriv.c[a]).xreplace(prev)) for a in range(n)]
        dg = [w.expr(deriv.dz_dh[a]) for a in range(n)]
        # per-synapse delays: each synapse reads its own s_t-1-d, so no component is shared by
        # the synapses of a presynaptic neuron; every one is kept per synapse (same arithmetic)
        per_synapse_delays = q.synapse_delay_steps is not None
        per_pre = [] if per_synapse_delays else list(deriv.per_presynaptic)
        per_syn = list(states) if per_synapse_delays else list(deriv.per_synapse)

        def ref(s, old):  # an eligibility component: this step's or the previous step's value
            if s in per_syn:
                return f"_old_{s}" if old else f"_eps_{s}[_k]"
            return f"_oldp_{s}[_i]" if old else f"_eps_{s}[_i]"

        recursion, trace = _trace_code(deriv, states, D, c, dg, ref)
        used = set()
        for a in range(n):
            if states[a] in per_syn:
                used |= {x.name for e in [deriv.c[a], *(deriv.D[a, b] for b in range(n))] for x in e.free_symbols}
            used |= {x.name for x in deriv.dz_dh[a].free_symbols}
        post_params = [(p, param_array_name(hid.name, "neuron", p)) for p in per_neuron if p in used]
        pre_arrays = {s: f"{q.name}_eprop_eps_{s}" for s in states}
        new = []
        for s in per_pre:
            new.append(_zero(pre_arrays[s], q.name, f"_eprop_eps_{s}", q.pre.size,
                             comment=f"eligibility component of {s}, per presynaptic neuron"))
            new.append(_zero(f"{q.name}_eprop_eps_old_{s}", q.name, f"_eprop_eps_old_{s}", q.pre.size,
                             comment=f"eligibility component of {s} at the previous step"))
        for s in per_syn:
            new.append(_zero(pre_arrays[s], q.name, f"_eprop_eps_{s}", q.n_synapses,
                             comment=f"eligibility component of {s}, per synapse"))
        new.append(_zero(f"{q.name}_eprop_ebar", q.name, "_eprop_ebar", q.n_synapses,
                         comment="filtered eligibility trace"))
        spec.arrays += new
        arrays = {
            "s_hist": f"{q.pre.name}_eprop_s_hist", "grad": f"{q.name}_eprop_grad", "ebar": f"{q.name}_eprop_ebar",
            "eps": pre_arrays, "eps_old": {s: f"{q.name}_eprop_eps_old_{s}" for s in per_pre},
            "psi": f"{hid.name}_eprop_psi", "psi_prev": f"{hid.name}_eprop_psi_prev",
            "z_prev": f"{hid.name}_eprop_z_prev", "L": f"{hid.name}_eprop_L",
            "h_prev": {s: f"{hid.name}_eprop_{s}_prev" for s in states},
        }
        reads = ["eprop_learn", arrays["s_hist"], arrays["psi"], arrays["psi_prev"], arrays["z_prev"], arrays["L"],
                 *arrays["h_prev"].values(), *(a for _, a in post_params), *sorted(set(w.param_reads)),
                 *instance_reads]
        writes = [arrays["grad"], arrays["ebar"], *pre_arrays.values(), *arrays["eps_old"].values()]
        info = {
            "n_pre": q.pre.size, "n_post": hid.size, "n_syn": q.n_synapses, "work": q.n_synapses,
            "states": states,
            "per_presynaptic": per_pre, "per_synapse": per_syn, "recursion": recursion,
            "trace": trace, "post_params": post_params, "no_autapses": q.pre is q.post,
            "sparse": q.rows is not None, "delay": q.delay_steps,
            "s_prev": self._signal_at(plan, q.pre.name, q.delay_steps, q.pre.size), "block": None,
        }
        if per_synapse_delays:
            slots = self.signal_slots(plan, q.pre.name)
            arrays["syn_delay"] = f"{q.name}_syn_delay"
            info.update(s_syn=(
                f"_{arrays['s_hist']}[((size_t)((_step + {slots - 1}u - _d) % {slots}u) * _B + _b) * {q.pre.size}u"
                " + _i]"))
            reads.append(arrays["syn_delay"])
        if q.rows is not None:
            arrays.update(row_start=f"{q.name}_row_start", post_ind=f"{q.name}_post_ind")
            reads += [arrays["row_start"], arrays["post_ind"]]
        info["register_block"] = None
        if blocks and not per_synapse_delays:  # in blocks of steps
            if not per_syn and q.rows is None and not (used & set(per_neuron)):
                info["block"] = self._blocked_trace(spec, plan, q, hid, states, dg, arrays, writes)
                loaded = set()
            else:
                info["register_block"] = self._register_block(spec, plan, q, hid, states, D, c, dg, deriv,
                                                              per_pre, per_syn, arrays, writes, post_params)
                loaded = {a for _, a in info["register_block"]["neuron_loads"]}
            # the traces then read, of the previous step's state, spike and psi, what the
            # coefficients name (the factorised trace: nothing)
            unread = {arrays["psi_prev"], arrays["z_prev"], *arrays["h_prev"].values()} - loaded
            reads = [r for r in reads if r not in unread]
        header = [Line("", f"{s}: eps_t = {recursion[s]}") for s in states]
        delay = f"{q.delay_steps} + per synapse" if per_synapse_delays else q.delay_steps
        constants = w.finish_constants()
        if instance_lines:  # values of a batch instance: loaded, and what is computed from them, once _b is known
            constants, instance_lines = constants[:fixed], instance_lines + constants[fixed:]
        info["instance_lines"] = instance_lines
        description = (f"e-prop eligibility traces and gradient of '{q.name}' ({q.pre.name} -> {hid.name}, "
                       f"{m.name}, delay {delay}): eps_t = D(h_t-1) eps_t-1 + c s_t-1-delay, "
                       f"e_t = psi_t dg/dh . eps_t, "
                       f"dW += L_t (1 - kappa) ebar_t-1; per presynaptic neuron: "
                       f"{', '.join(per_pre) or '-'}; per synapse: {', '.join(per_syn) or '-'}")
        return KernelSpec(f"eprop_eligibility_{q.name}", "eprop_eligibility", q.name, "eprop_eligibility",
                          description, [*constants, kappa, *header], [], [], info, reads=tuple(reads),
                          writes=tuple(writes), arrays=arrays)

    def _blocked_trace(self, spec, plan, q, hid, states, dg, arrays, writes) -> dict:
        """The trace of a dense projection whose eligibility components all live per presynaptic
        neuron, with dg/dh the same for every neuron, factorises: ``e_ij,t = psi_j,t E_i,t`` with
        ``E_i = dg/dh . eps_i``. Then the synapses need not be visited every step. The kernel keeps
        ``psi_j``, ``L_j`` and ``E_i`` of up to S steps and, after the S-th (or the trial's last),
        updates each synapse once for the n steps gathered since ``ebar_0``:

            ebar_n = kappa^n ebar_0 + sum_s kappa^(n-1-s) psi_s E_s
            dW    += (1 - kappa) (ebar_0 C + sum_s psi_s M_s E_s)

        with ``C = sum_s kappa^s L_s`` and ``M_s = sum_{s' > s} kappa^(s'-1-s) L_s'`` (per
        postsynaptic neuron, from ``M_(n-1) = 0``, ``M_(s-1) = L_s + kappa M_s``; ``C = M_(-1)``):
        the same sums as step by step, in another order. Blocks whose learning signals are all
        zero (outside the loss's window) update the filtered traces alone; each synapse is read
        and written once per block, and its work is S products that stay in registers."""
        S, n_pre, n_post = self.block_steps, q.pre.size, hid.size
        names = {"blk_E": (S * n_pre, "E_i = dg/dh . eps_i of the steps gathered"),
                 "blk_psi": (S * n_post, "psi_j of the steps gathered (then kappa^(n-1-s) psi_j)"),
                 "blk_L": (S * n_post, "L_j of the steps gathered (then psi_j M_j)"),
                 "blk_C": (n_post, "C_j = sum_s kappa^s L_j,s of the block")}
        for role, (size, comment) in names.items():
            arrays[role] = f"{q.name}_eprop_{role}"
            spec.arrays.append(_zero(arrays[role], q.name, f"_eprop_{role}", size, comment=f"e-prop: {comment}"))
        arrays["blk_fill"] = _block_fill(spec, q)
        writes += [arrays[r] for r in ("blk_E", "blk_psi", "blk_L", "blk_C", "blk_fill")]
        powers = ", ".join(_scalar_literal(plan.kappa ** m) for m in range(S + 1))
        E = " + ".join(f"({dg[a]}) * _eps_{s}[_i]" for a, s in enumerate(states) if dg[a] not in ("0", "(scalar)0"))
        return {"steps": S, "E": E or "(scalar)0", "last": plan.n_steps - 1, "powers": powers}

    def _register_block(self, spec, plan, q, hid, states, D, c, dg, deriv, per_pre, per_syn, arrays, writes,
                        post_params) -> dict:
        """A projection whose trace does not factorise (components per synapse, such as ALIF's
        adaptation; or sparse rows): the synapses still need not be read and written every step. Each step
        the kernel keeps, for up to S steps, what the recursion reads: per postsynaptic neuron
        psi, ``L (1 - kappa)`` and the coefficients that depend on the neuron (computed once per
        neuron, not once per synapse); per presynaptic neuron its components and signal. Then
        it runs the S steps of every synapse at once, its components, filtered trace and
        gradient in registers: the step-by-step kernel's arithmetic in the same order, so the
        same numbers bit for bit, with each synapse read and written once per block instead of
        every step."""
        S, n_pre, n_post = self.block_steps, q.pre.size, hid.size

        def reg(s, old):  # an eligibility component held in a register (per synapse) or read from the block
            if s in per_syn:
                return f"_old_{s}" if old else f"_x_{s}"
            return f"_po_{s}" if old else f"_pn_{s}"

        neuron_locals = {"_psi_prev": arrays["psi_prev"], "_z_prev": arrays["z_prev"],
                         **{f"_prev_{s}": arrays["h_prev"][s] for s in states}}
        per_neuron = set(neuron_locals) | {name for name, _ in post_params}
        coefs: dict[str, str] = {}  # a coefficient that depends on the neuron -> its local

        def coef(expr: str) -> str:
            if not code_names(expr) & per_neuron:
                return f"({expr})"  # a constant of the kernel
            return coefs.setdefault(expr, f"_c{len(coefs)}")

        recursion, trace = _trace_code(deriv, states, D, c, dg, reg, coef)
        recursion = {s: code for s, code in recursion.items() if s in per_syn}  # the rest come from the block
        named = code_names(" ".join([*recursion.values(), trace, *coefs]))
        # per presynaptic neuron and step: (the local, the expression the per-neuron loop has)
        pre = [(f"_po_{s}", f"_oldp_{s}[_i]") for s in per_pre if f"_po_{s}" in named]
        pre += [(f"_pn_{s}", f"_eps_{s}[_i]") for s in per_pre if f"_pn_{s}" in named]
        if "_s" in named:
            pre.append(("_s", "_s"))

        def block_array(local, size, what):
            name = f"{q.name}_eprop_blk{local}"
            spec.arrays.append(_zero(name, q.name, f"_eprop_blk{local}", S * size,
                                     comment=f"e-prop: {what} in the steps gathered"))
            return name

        post = [("_psi_j", block_array("_psi_j", n_post, "psi of each postsynaptic neuron")),
                ("_lk", block_array("_lk", n_post, "L (1 - kappa) of each postsynaptic neuron"))]
        post += [(local, block_array(local, n_post, f"{expr} of each postsynaptic neuron"))
                 for expr, local in coefs.items()]
        arrays["blk_post"] = dict(post)
        arrays["blk_pre"] = {local: block_array(local, n_pre, f"{local} of each presynaptic neuron")
                             for local, _ in pre}
        arrays["blk_fill"] = _block_fill(spec, q)
        writes += [*arrays["blk_post"].values(), *arrays["blk_pre"].values(), arrays["blk_fill"]]
        used = code_names(" ".join(coefs))
        T = plan.n_steps
        return {"steps": S, "last": T - 1, "tail": T - S * ((T - 1) // S), "recursion": recursion, "trace": trace,
                "neuron_loads": [(local, array) for local, array in neuron_locals.items() if local in used],
                "coefs": [(local, expr, arrays["blk_post"][local]) for expr, local in coefs.items()],
                "post": post, "pre": [(local, expr, arrays["blk_pre"][local]) for local, expr in pre]}

    @staticmethod
    def _instance_params(w, spec, hid) -> tuple[list[Line], list[str]]:
        """The parameters of ``hid`` given one value per batch instance, declared to ``w`` as
        constants of the kernel (their derived values and the invariants computed from them
        are hoisted as for a number) whose lines load this instance's value: ``(those lines,
        the arrays they read)``. The templates write them where the instance ``_b`` is known."""
        lines, reads = [], []
        for k in hid.params:
            if hid.values.kind(k) == "batch":
                array = param_array_name(hid.name, "neuron", k)
                w.add_params({k: 0.0}, "", hid.model.name)
                w.constants.pop()  # not compiled in: loaded per instance
                lines.append(Line(f"const scalar {k} = _{array}[_b];",
                                  f"parameter {k} of {hid.model.name}: one value per batch instance"))
                reads.append(spec.array(array).name)
        return lines, reads


class CompiledEprop:
    """A network compiled for e-prop: its :class:`~spikeforge.runtime.simulation.Simulation`
    (the network's kernels plus the training kernels) and what runs a minibatch and an
    optimiser step."""

    def __init__(self, compiler: EpropCompiler, network, spec, plan: _Plan, gradients: dict[str, str], threads=None,
                 backend: str = "cpu", **backend_options):
        from ..runtime.simulation import Simulation

        self.compiler, self.network, self.spec, self.plan = compiler, network, spec, plan
        # as compiled: the readout and the loss object whose code the error kernel runs
        self.readout, self.kernel_loss = compiler.readout, compiler.kernel_loss
        self.batch_size = int(network.batch_size)
        self.simulation = Simulation(network, backend=backend, threads=threads, spec=spec, on_nonfinite="ignore",
                                     progress=False, **backend_options)
        self.backend = self.simulation.backend
        from ..runtime.backends import get_backend

        # the state in host memory (not a device's): the input part is written into it in place
        self._host_state = not get_backend(backend).device
        # a part of a trial (up to INPUT_CHUNK_STEPS steps, the input the kernels hold) in one
        # call of the generated run loop: the planner's first chunks (1, 4, 16, ... steps, sized
        # to keep Ctrl-C responsive in long simulations) would each enter the run loop and pay for
        # a thread team, and chunks that short run step by step, every kernel of every step on its
        # own team. A part is one thread team, each thread running whole instances (a device
        # backend that replays graphs keeps its own chunks).
        if getattr(self.backend, "step_granularity", 1) == 1:
            self.simulation.chunk_steps = min(plan.n_steps, INPUT_CHUNK_STEPS)
        # the input of one part, in the kernels' precision (run_batch reads the caller's array in
        # place): a device backend's staging array; a host backend's part is written into its state
        self._part_steps = min(plan.n_steps, INPUT_CHUNK_STEPS)
        self._input_part = None if self._host_state else np.zeros(
            (self._part_steps, self.batch_size, plan.inputs.size),
            dtype=np.float32 if network.precision == "float" else np.float64)
        self.gradient_arrays = dict(gradients)  # trainable array -> its per-instance gradients
        self.steps_taken = 0
        self.derivations: dict = {}  # learning hidden population -> its model's e-prop factors

    @property
    def source(self) -> str:
        return self.simulation.source

    def _trainable_values(self) -> dict[str, np.ndarray]:
        return {name: self.backend.pull(name) for name in self.gradient_arrays}

    def weights(self) -> dict[str, np.ndarray]:
        """The trainable arrays by array name (``<projection>_w`` in [pre][post] order, ``<readout>_p_bias``)."""
        return self._trainable_values()

    def set_weights(self, values: dict[str, np.ndarray]):
        """Set trainable arrays (names as :meth:`weights` gives them)."""
        for name, v in values.items():
            if name not in self.gradient_arrays:
                raise NetworkError(f"'{name}' is not trainable (trainable: {', '.join(self.gradient_arrays)})")
            shape = self.backend.peek(name).shape
            arr = np.asarray(v, dtype=float)
            if arr.size != int(np.prod(shape)) or not np.all(np.isfinite(arr)):
                raise NetworkError(f"'{name}': expected {int(np.prod(shape))} finite values, got shape {arr.shape}")
            self.backend.push(name, arr.reshape(shape))

    def set_param(self, owner: str, name: str, value, part: str | None = None):
        """Change a parameter read at run time (dynamic, one value per batch instance or per
        element) for the next batches, without recompiling: as
        :meth:`~spikeforge.runtime.simulation.Simulation.set_param`, and for a learning hidden
        population with the compiler's checks (no refractory period, a positive surrogate
        width); a refused value leaves the parameter as it was."""
        sim = self.simulation
        before = sim.get_param(owner, name, part)
        sim.set_param(owner, name, value, part)
        hid = next((h for h in self.plan.learning if h.name == owner), None)
        if hid is None:
            return
        try:
            EpropCompiler._check_hidden_values(hid, self.plan.dt, self.derivations[owner],
                                               {k: sim.get_param(owner, k) for k in hid.params})
        except NetworkError:
            sim.set_param(owner, name, before, part)
            raise

    def run_batch(self, x, mask, labels=None, targets=None, *, learn: bool = True) -> dict:
        """One trial per batch instance: ``x`` (steps, batch, inputs) drives the input
        population (step t's values reach the hidden layer at t + 1). Returns the readout
        values ``y`` (steps, batch, readout), the losses, the spike counts of the hidden
        populations (batch, their neurons side by side in the order of ``hidden``), each
        trial's ``output`` (batch, readout: see :class:`~.objectives.Readout`) and, when
        learning, the per-instance gradients by trainable array (leading axis: batch).

        With a readout that aggregates over the window, ``dLoss/dy_t`` is known only once the
        trial is over: the trial runs forward first (no traces), the host computes the output,
        the loss and ``err_t`` of every step, and, when learning, the trial runs again with
        them (the same inputs, initial state and random numbers: the same trajectory, checked
        bit for bit)."""
        p, T, B = self.plan, self.plan.n_steps, self.batch_size
        # read in place, a part at a time (_trial): no copy of the whole sequence (a SpikeRaster
        # is binned part by part)
        if not isinstance(x, SpikeRaster):
            x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            x = np.asarray(x, dtype=float)
        if x.shape != (T, B, p.inputs.size):
            raise NetworkError(f"inputs must have shape {(T, B, p.inputs.size)}, got {x.shape}")
        mask = np.asarray(mask, dtype=float)
        if mask.shape != (T,):
            raise NetworkError(f"mask must have shape ({T},), got {mask.shape}")
        finite = isinstance(x, SpikeRaster) or all(  # a SpikeRaster holds spike counts, finite by construction
            np.isfinite(x[t:t + INPUT_CHUNK_STEPS]).all() for t in range(0, T, INPUT_CHUNK_STEPS))
        if not (finite and np.all(np.isfinite(mask))):
            raise NetworkError("inputs and mask must be finite")
        readout, K = self.readout, p.readout.size
        if not readout.aggregated:
            out = self._trial(x, mask, learn, labels, targets)
            out["output"] = readout.output(out["y"], mask)
            return out
        forward = self._trial(x, mask, False, None, np.zeros((T, B, K)))
        loss, err, output = readout.loss_and_error(self.compiler.loss, forward["y"], mask, labels, targets)
        out = self._trial(x, mask, True, None, err) if learn else forward
        if learn and out["y"].tobytes() != forward["y"].tobytes():
            raise RuntimeError(f"readout '{p.readout.name}': the learning pass's readout differs from the forward "
                               "pass's (the trial must run the same twice: no state may survive a reset)")
        out.update(loss=loss.astype(out["y"].dtype), output=output)
        return out

    def _trial(self, x, mask, learn: bool, labels, targets) -> dict:
        """Run one trial from the initial state; the kernel loss is fed ``labels`` and ``targets``."""
        p, T, B = self.plan, self.plan.n_steps, self.batch_size
        kept = self._trainable_values()  # the reset reloads the network's initial values
        sim = self.simulation
        sim.reset()
        for name, v in kept.items():
            self.backend.push(name, v)
        self.backend.push("eprop_mask", mask)
        self.backend.push("eprop_learn", np.array([int(bool(learn))], dtype=np.uint32))
        self.kernel_loss.feed(self.backend, B, p.readout.size, T, labels, targets)
        # the input in parts of up to INPUT_CHUNK_STEPS steps, each converted into the one array
        # the kernels read (timing: one step per row, the rows held, the first row's step)
        name = p.inputs.name
        # a backend whose state is host memory is written into directly (one conversion, no copy)
        part = self.backend.peek(f"{name}_x_timed") if self._host_state else self._input_part
        for t0 in range(0, T, self._part_steps):
            n = min(self._part_steps, T - t0)
            part[:n] = x[t0:t0 + n]
            if not self._host_state:
                self.backend.push(f"{name}_x_timed", part)
            self.backend.push(f"{name}_x_timing", np.array([1.0, float(n), float(t0)]))
            sim.run(steps=n)
        counts = [self.backend.pull(f"{h.name}_eprop_count") for h in p.hidden]
        out = {"y": self.backend.pull("eprop_y"), "loss": self.backend.pull("eprop_loss").reshape(B),
               "hidden_spikes": np.concatenate(counts, axis=1)}
        if learn:
            out["grads"] = {name: self.backend.pull(g) for name, g in self.gradient_arrays.items()}
        return out

    def apply_gradients(self, *, mean: bool = False, clamp: tuple | dict | None = None, batch: int | None = None,
                        lr: float | None = None, step: int | None = None):
        """One optimiser step on every trainable array from the gradients of the first ``batch``
        instances of the last batch (default: all), summed (or averaged: ``mean``); ``clamp`` =
        (lo, hi) bounds every trainable array, or {array name: (lo, hi)} those named. ``lr``
        replaces the optimiser's learning rate for this step and ``step`` the count of steps
        taken (this one included): run-time values, never compiled in."""
        self.steps_taken = self.steps_taken + 1 if step is None else int(step)
        batch = self.batch_size if batch is None else int(batch)
        if not 1 <= batch <= self.batch_size:
            raise NetworkError(f"apply_gradients: batch {batch}, but the network runs {self.batch_size} instances")
        for index, update in enumerate(self.spec.custom_updates):
            target = update.name[len("optimiser_"):]
            bounds = clamp.get(target) if isinstance(clamp, dict) else clamp
            hyper = self.compiler.optimiser.hyper(self.steps_taken, batch, mean, bounds)
            if lr is not None:
                hyper[0] = lr  # every optimiser keeps its learning rate first
            self.backend.push("eprop_optimiser", hyper)
            self.backend.custom_update(index)

    def close(self):
        self.simulation.close()
