"""Spike rules of the time-parallel method: how a layer's spikes come from its threshold
distance ``g_t`` (the threshold condition's ``lhs - rhs``, see :mod:`.parallel`), and the
derivative ``dz_t/dg_t`` its gradient uses.

Each rule is an object that brings its own code, as the losses of :mod:`.objectives` do: the
kernel builder prints the lines a rule gives and never asks for its name. A rule says

* ``draws``: how many uniform numbers it needs per neuron and step. The kernels draw them from
  the Philox streams (``templates/common/philox.h``; :func:`spikeforge.rng.uniform` is the numpy
  side): counter ``(neuron, batch instance, key step, stream_id(population id, DRAW_SITE + j))``,
  key step ``draw * T + t`` for the ``draw``-th forward pass of a compiled network (as a 32-bit
  word: it wraps after 2**32 steps drawn). The backward pass draws the same numbers again
  (counter based: nothing is stored).
* ``carried``: values kept per neuron and instance across the steps of the forward scan (their
  value at ``t = 0``); the forward code updates them, the gradient code reads their final value.
* ``combine``: for each carried value, how its value after two spans of steps follows from
  its value after the first (``{a}``) and its value after the second run on its own from the
  value at ``t = 0`` (``{b}``), a C expression. A rule that gives it for all its carried values
  runs chunk by chunk on the device backends (:mod:`.parallel_cuda`), else one thread per
  neuron over all the steps.
* ``reverse_combine``: the same for the reverse-carried values, a span of ``{n}`` steps
  after another (later) one: from their values after the span's last step (``{X_a}`` for a
  value ``X``) and those of the span run on its own from 0 (``{X_b}``).
* :meth:`SpikeRule.forward`: lines that set ``_z`` from ``_g`` (and the condition as the
  simulation prints it, so that ``threshold`` spikes are the simulation's bit for bit).
* ``carried_steps``: the carried values that are steps (``_t``): run in chunks, the kernels'
  ``_t`` counts the chunk's steps, and the host gives the reverse scan such a value as a step
  of the chunk it runs (below 0: an earlier chunk's; ``T``, the chunk's length: none).
* ``reverse_carried``: values kept per neuron and instance across the steps of the reverse scan
  (0 at ``t = T - 1``).
* :meth:`SpikeRule.gradient`: lines that set ``_psi = dz_t/dg_t`` from ``_g`` and ``_surrogate``
  (the compiler's surrogate at ``_g``); a rule whose spike at ``t`` depends on ``g`` at other
  steps may replace ``_dz`` (``dE/dz_t``, given) by what drives ``g_t``, then ``dE/dg_t = _dz _psi``.

Names in the code: ``_t`` the step, ``T`` the number of steps, ``_u0, _u1, ...`` the draws,
``_<carried>`` the carried values; ``p(expr)`` prints a sympy expression in the kernel's precision.
"""

from __future__ import annotations

import sympy

from ..codegen.ir import Line
from ..errors import NetworkError

#: The first call site of the spike rules' draws in a population's stream word (the model's own
#: random calls count up from 0; the rules' draws take the top of the 16-bit range).
DRAW_SITE = 0xFF00

_G, _U0, _U1 = sympy.symbols("_g _u0 _u1", real=True)


def _sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


class SpikeRule:
    """A spike rule: see the module's doc. Subclasses set ``name`` and override the code."""

    name = "rule"
    draws = 0
    carried: dict[str, str] = {}  # name -> its value at t = 0 (C expression)
    carried_steps: tuple[str, ...] = ()  # the carried values that are steps
    combine: dict[str, str] = {}  # name -> its value after two spans ({a}: after the first; {b}: the second's own)
    reverse_carried: tuple[str, ...] = ()
    reverse_combine: dict[str, str] = {}
    binary = True  # every z_t is 0 or 1 (the next layer adds a sender's weights as they are)

    def forward(self, cond: str, p) -> list[Line]:
        raise NotImplementedError

    def gradient(self, p) -> list[Line]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Threshold(SpikeRule):
    """``z_t = H(g_t)`` (ParaLIF-D; the simulation's threshold test); ``dz/dg``: the surrogate."""

    name = "threshold"

    def forward(self, cond, p):
        return [Line(f"_z = ({cond}) ? (scalar)1 : (scalar)0;", "threshold: z = H(g)")]

    def gradient(self, p):
        return [Line("_psi = _surrogate;", "dz/dg: the surrogate")]


class FirstCrossing(SpikeRule):
    """Each neuron fires at most once, at its first threshold crossing (Taylor et al., single
    spike): the spikes of the same neuron with an infinite refractory period.

    Gradient ``"surrogate"``: ``dz_t/dg_t`` the surrogate at the steps up to and including the
    first spike, 0 after it (the dependence of later steps on the spike's time is not followed).
    ``"fastsnn"``: FastSNN's formulation (Taylor et al.), ``s_t = H(g_t)`` with the surrogate as
    its derivative, ``b_t = sum_(t' <= t) sum_(t'' <= t') s_t''``, ``z_t = f(b_t)``, ``f(b) =
    relu(b (1 - b) + 1) b`` (1 at ``b = 1``, the first crossing, else 0), differentiated as
    autograd does: ``f'(b_t)`` is 1 before the first spike and 0 from it on, so ``dE/dg_t =
    psi_t sum_(t <= t' < first) (t' - t + 1) dE/dz_t'``, two running sums of the reverse scan."""

    name = "first_crossing"
    carried = {"first": "(scalar)T"}  # the step of the first spike (T: none yet)
    carried_steps = ("first",)
    combine = {"first": "{a} == (scalar)T ? {b} : {a}"}  # the first span's first spike, else the second's
    GRADIENTS = ("surrogate", "fastsnn")

    def __init__(self, gradient: str = "surrogate"):
        if gradient not in self.GRADIENTS:
            raise NetworkError(f"first_crossing: gradient must be one of {', '.join(self.GRADIENTS)}, "
                               f"got {gradient!r}")
        self.gradient_kind = gradient
        self.reverse_carried = ("S", "C") if gradient == "fastsnn" else ()
        # over a span of n steps from S_a, C_a (after it): S = S_a + S_span, C = C_a + n S_a + C_span
        self.reverse_combine = {"S": "{S_a} + {S_b}", "C": "{C_a} + {n} * {S_a} + {C_b}"} if self.reverse_carried \
            else {}

    def describe(self):
        return f"first_crossing(gradient={self.gradient_kind})"

    def forward(self, cond, p):
        return [Line(f"_z = (_first == (scalar)T && ({cond})) ? (scalar)1 : (scalar)0;",
                     "first crossing: a spike at the first threshold crossing only"),
                Line("if (_z != 0) _first = (scalar)_t;")]

    def gradient(self, p):
        if self.gradient_kind == "fastsnn":
            return [Line("_S += (scalar)_t < _first ? _dz : (scalar)0;",
                         "S_t = sum_(t <= t' < first) dE/dz_t' (f'(b_t') = 1 before the first spike, 0 from it)"),
                    Line("_C += _S;", "C_t = sum_(t <= t' < first) (t' - t + 1) dE/dz_t' = C_(t+1) + S_t"),
                    Line("_dz = _C;", "what drives g_t: dE/ds_t"),
                    Line("_psi = _surrogate;", "ds/dg: the surrogate")]
        return [Line("_psi = (scalar)_t <= _first ? _surrogate : (scalar)0;",
                     "dz/dg: the surrogate up to the first spike, 0 after it")]


class BernoulliSigmoid(SpikeRule):
    """SPSN-SB: ``z_t ~ Bernoulli(p_t)``, ``p_t = sigmoid(g_t / temperature)``, drawn as
    ``z_t = [u_t < p_t]``. Gradient ``"straight_through"``: ``dz/dp = 1``, so ``dz/dg = p (1 - p) /
    temperature``; ``"spsn"``: SPSN's ``dz/dp = p`` (their code's Eq. 19), ``dz/dg = p^2 (1 - p) /
    temperature``."""

    name = "bernoulli_sigmoid"
    draws = 1
    GRADIENTS = ("straight_through", "spsn")

    def __init__(self, temperature: float = 1.0, gradient: str = "straight_through"):
        self.temperature = _positive(temperature, "temperature")
        if gradient not in self.GRADIENTS:
            raise NetworkError(f"bernoulli_sigmoid: gradient must be one of {', '.join(self.GRADIENTS)}, "
                               f"got {gradient!r}")
        self.gradient_kind = gradient

    def _p(self, p):
        return Line(f"const scalar _p = {p(_sigmoid(_G / sympy.Float(self.temperature)))};",
                    f"p = sigmoid(g / {self.temperature!r})")

    def forward(self, cond, p):
        return [self._p(p), Line("_z = _u0 < _p ? (scalar)1 : (scalar)0;", "z ~ Bernoulli(p)")]

    def gradient(self, p):
        scale = p(1 / sympy.Float(self.temperature))
        factor = "_p * " if self.gradient_kind == "spsn" else ""
        return [self._p(p), Line(f"_psi = {factor}_p * (1 - _p) * {scale};",
                                 f"dz/dg ({self.gradient_kind})")]

    def describe(self):
        return f"bernoulli_sigmoid(temperature={self.temperature!r}, gradient={self.gradient_kind})"


class Gumbel(SpikeRule):
    """Gumbel-softmax over the two classes (spike, none) with logits ``(g, -g)``, as SPSN-GS:
    ``y_t = sigmoid((2 g_t + G0 - G1) / temperature)``, ``G_k = -log(-log(u_k))``; ``hard``:
    ``z_t = [y_t > 1/2]`` with the straight-through gradient ``dz/dg = dy/dg = 2 y (1 - y) /
    temperature``; otherwise ``z_t = y_t`` (real values) with that exact gradient."""

    name = "gumbel"
    draws = 2

    def __init__(self, temperature: float = 1.0, hard: bool = True):
        self.temperature = _positive(temperature, "temperature")
        self.hard = bool(hard)
        self.binary = self.hard  # soft: z_t = y_t, real values

    def _y(self, p) -> list[Line]:
        g0, g1, a = sympy.symbols("_G0 _G1 _a", real=True)
        return [Line(f"const scalar _G0 = {p(-sympy.log(-sympy.log(_U0)))}, _G1 = {p(-sympy.log(-sympy.log(_U1)))};",
                     "Gumbel noise G = -log(-log(u))"),
                Line(f"const scalar _a = {p((2 * _G + g0 - g1) / sympy.Float(self.temperature))};",
                     f"(2 g + G0 - G1) / {self.temperature!r}"),
                Line(f"const scalar _y = {p(_sigmoid(a))};", "y = sigmoid(a): the spike's softmax weight")]

    def forward(self, cond, p):
        z = "_y > (scalar)0.5 ? (scalar)1 : (scalar)0" if self.hard else "_y"
        return [*self._y(p), Line(f"_z = {z};", "hard: z = [y > 1/2]" if self.hard else "soft: z = y")]

    def gradient(self, p):
        return [*self._y(p), Line(f"_psi = _y * (1 - _y) * {p(2 / sympy.Float(self.temperature))};",
                                 "dz/dg = dy/dg" + (" (straight through)" if self.hard else ""))]

    def describe(self):
        return f"gumbel(temperature={self.temperature!r}, hard={self.hard})"


def _positive(value, what) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise NetworkError(f"spike rule: {what} must be a positive number, got {value!r}")
    return v


RULES = {r.name: r for r in (Threshold, FirstCrossing, BernoulliSigmoid, Gumbel)}


def make_spike_rule(rule) -> SpikeRule:
    """A :class:`SpikeRule` from itself or its name (with its default settings)."""
    if isinstance(rule, SpikeRule):
        return rule
    if isinstance(rule, str) and rule in RULES:
        return RULES[rule]()
    raise NetworkError(f"spike rule must be one of {', '.join(RULES)} or a SpikeRule object, got {rule!r}")
