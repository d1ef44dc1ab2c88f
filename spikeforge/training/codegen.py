"""Generate the e-prop training kernel of an :class:`EpropConfig`.

The hidden neuron's update, threshold and reset are printed from its equations exactly as
for simulation; the eligibility recursion, the trace and the pseudo-derivative are printed
from :func:`spikeforge.codegen.eprop.derive`. Components of the eligibility vector that do
not depend on the postsynaptic neuron are kept per presynaptic neuron, the others per
synapse.

Per-neuron parameters (``EpropConfig.per_neuron_params``) are not constants: each lives in
an array ``p_<name>`` (one value per hidden neuron) and is loaded into a local of the same
name wherever the postsynaptic neuron ``_j`` is known (the neuron update, the per-synapse
eligibility recursion), and nothing that mentions it is hoisted out of those loops. Their
values are not part of the source: changing them never recompiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import sympy

from .. import __version__
from ..codegen.eprop import PSI, Z, derive
from ..codegen.generate import _emit_odes, _emit_statements, _KernelWriter
from ..codegen.ir import Line
from ..codegen.render import TARGETS, environment, philox_header
from ..models.expressions import symbol
from .model import EpropConfig, check_per_neuron_params, check_surrogate_scale


def array_layout(cfg: EpropConfig, deriv, target: str = "cpu") -> list[tuple[str, str, tuple]]:
    """(name, dtype, shape) of every array; ``B`` and ``T`` are filled in at run time."""
    n_in, n_h, k = cfg.n_inputs, cfg.n_hidden, cfg.n_outputs
    out = [
        ("w_in", "scalar", (n_h, n_in)),
        ("w_rec", "scalar", (n_h, n_h)),
        ("w_out", "scalar", (k, n_h)),
        ("b_out", "scalar", (k,)),
        ("feedback", "scalar", (n_h, k)),
        *((f"p_{p}", "scalar", (n_h,)) for p in per_neuron_names(cfg)),  # per-neuron parameters
        ("x", "scalar", ("T", "B", n_in)),
        ("labels", "int32", ("B",)),
        ("targets", "scalar", ("T", "B", k)),
        ("mask", "scalar", ("T",)),
        ("y", "scalar", ("T", "B", k)),
        ("hidden_spikes", "scalar", ("B", n_h)),
        ("loss", "scalar", ("B",)),
        ("g_in", "scalar", ("B", n_h, n_in)),
        ("g_rec", "scalar", ("B", n_h, n_h)),
        ("g_out", "scalar", ("B", k, n_h)),
        ("g_b", "scalar", ("B", k)),
    ]
    for w, shape in (("w_in", (n_h, n_in)), ("w_rec", (n_h, n_h)), ("w_out", (k, n_h)), ("b_out", (k,))):
        out += [(f"m_{w}", "scalar", shape), (f"v_{w}", "scalar", shape)]  # Adam moments
    for s in deriv.states:
        out.append((f"h_{s}", "scalar", ("B", n_h)))
        out.append((f"hpre_{s}", "scalar", ("B", n_h)))
        out.append((f"hprev_{s}", "scalar", ("B", n_h)))
    for v, _ in cfg.hidden_model.vars.items():
        if v not in deriv.states:
            out.append((f"h_{v}", "scalar", ("B", n_h)))
    out += [("z", "scalar", ("B", n_h)), ("zprev", "scalar", ("B", n_h)), ("psi", "scalar", ("B", n_h)),
            ("psiprev", "scalar", ("B", n_h)), ("zbar", "scalar", ("B", n_h)), ("yval", "scalar", ("B", k))]
    for src, n_src in (("in", n_in), ("rec", n_h)):
        for s in deriv.per_presynaptic:
            out.append((f"eps_{src}_{s}", "scalar", ("B", n_src)))
        for s in deriv.per_synapse:
            out.append((f"eps_{src}_{s}", "scalar", ("B", n_h, n_src)))
        out.append((f"ebar_{src}", "scalar", ("B", n_h, n_src)))
        if target == "cuda":
            for s in deriv.per_presynaptic:  # the previous step's values, for the per-synapse kernel
                out.append((f"eps_old_{src}_{s}", "scalar", ("B", n_src)))
    if target == "cuda":
        out += [("bbar", "scalar", ("B",)), ("err", "scalar", ("B", k)), ("L", "scalar", ("B", n_h))]
        # gradients summed over the batch, for the all-reduce across ranks
        out += [("gsum_in", "double", (n_h, n_in)), ("gsum_rec", "double", (n_h, n_h)),
                ("gsum_out", "double", (k, n_h)), ("gsum_b", "double", (k,))]
    return out


def initial_values(model) -> dict[str, float]:
    """The hidden state at the start of every trial: each variable's constant initial value (0
    for a variable without one)."""
    return {name: getattr(var.init, "value", 0) for name, var in model.vars.items()}


def per_neuron_names(cfg: EpropConfig) -> list[str]:
    """The hidden layer's per-neuron parameters, in the model's order."""
    return [p for p in cfg.hidden_model.params if p in cfg.per_neuron_params]


def _per_neuron_loads(names: list[str], exprs) -> list[Line]:
    """Loads of the per-neuron parameters that ``exprs`` use, for the neuron ``_j``."""
    used = {x.name for e in exprs for x in sympy.sympify(e).free_symbols}
    return [Line(f"const scalar {p} = ctx->p_{p}[_j];", "per-neuron parameter") for p in names if p in used]


@dataclass
class EpropKernel:
    cfg: EpropConfig
    deriv: object
    source: str
    layout: list


def generate_training_kernel(cfg: EpropConfig, target: str = "cpu") -> EpropKernel:
    """The training kernel source for the template ``target`` (a backend's ``target``): ``cpu``
    (C++) or ``cuda`` (kernels shared by the ``cuda`` and ``cuda-emu`` runtimes)."""
    m = cfg.hidden_model
    deriv = derive(m, cfg.params, surrogate=cfg.surrogate, gamma=cfg.gamma)
    check_surrogate_scale(cfg, deriv)
    w = _KernelWriter(SimpleNamespace(precision=cfg.precision))
    w.add_params(cfg.params, "", m.name)
    w.add_derived(m, {}, "")
    update: list[Line] = []
    method = _emit_odes(w, m.odes, {}, m.name, m.integrator, "hidden", update)
    _emit_statements(w, m.sim_code, {}, update)
    g_text = w.expr(deriv.g)
    spike_text = w.expr(m.threshold)
    psi_text = w.expr(deriv.psi.xreplace({symbol("_g"): symbol("_g")}))
    reset: list[Line] = []
    _emit_statements(w, m.reset, {}, reset)
    # eligibility recursion: D evaluated at the previous step's pre-reset state, spike, psi
    prev = {symbol(s): symbol(f"_prev_{s}") for s in deriv.states}
    prev[PSI] = symbol("_psi_prev")
    prev[Z] = symbol("_z_prev")
    n = len(deriv.states)
    D = [[w.expr(sympy.sympify(deriv.D[a, b]).xreplace(prev)) for b in range(n)] for a in range(n)]
    Dzero = [[deriv.D[a, b] == 0 for b in range(n)] for a in range(n)]
    c = [w.expr(sympy.sympify(deriv.c[a]).xreplace(prev)) for a in range(n)]
    czero = [deriv.c[a] == 0 for a in range(n)]  # such terms are left out of the generated recursion
    dg = [w.expr(deriv.dz_dh[a]) for a in range(n)]
    # per-neuron parameters: loaded where the postsynaptic neuron _j is known, never constants
    per_neuron = per_neuron_names(cfg)
    check_per_neuron_params(cfg, deriv)
    constants = w.finish_constants()
    # (they are not invariant for the Hoister, and check_per_neuron_params refused derived
    # parameters using them: the constants, computed outside any neuron loop, never do)
    assert not {x.name for _, e in w.hoister.definitions() for x in e.free_symbols} & set(per_neuron)
    neuron_exprs = ([o.rhs for o in m.odes] + [st.value for st in m.sim_code + m.reset]
                    + [m.threshold, deriv.g, deriv.psi])
    synapse_exprs = list(deriv.dz_dh) + [deriv.c[idx] for idx in range(n) if deriv.states[idx] in deriv.per_synapse]
    synapse_exprs += [deriv.D[a, b] for a in range(n) if deriv.states[a] in deriv.per_synapse for b in range(n)]
    neuron_loads = _per_neuron_loads(per_neuron, neuron_exprs)
    synapse_loads = _per_neuron_loads(per_neuron, synapse_exprs)
    env = environment()
    template = env.get_template(f"{target}/eprop_trial{TARGETS[target].suffix}")
    layout = array_layout(cfg, deriv, target)
    source = template.render(
        cfg=cfg, deriv=deriv, version=__version__, philox=philox_header(), constants=constants,
        per_neuron=per_neuron, neuron_loads=neuron_loads, synapse_loads=synapse_loads,
        update=update, reset=reset, g=g_text, spike=spike_text, psi=psi_text, D=D, Dzero=Dzero, c=c, czero=czero, dg=dg,
        layout=layout, initial=initial_values(m),
        method=method, kappa=repr(cfg.kappa), states=deriv.states,
        other_vars=[v for v in m.vars if v not in deriv.states], idx={s: k for k, s in enumerate(deriv.states)},
        equations=[o.source for o in m.odes], threshold=m.threshold_source,
        reset_source=[st.source for st in m.reset], readout_block=max(32, 1 << (cfg.n_outputs - 1).bit_length()),
    )
    return EpropKernel(cfg, deriv, source, layout)
