"""The kernel contract for arrays: a kernel spec names the arrays it touches in typed fields
(loads, reads, writes, and the arrays its template names by role), each kernel template
declares the roles it uses in its first line, rendering checks one against the other, and
the pointers a kernel gets are the arrays its body uses, no more and no fewer."""

import re
from importlib import resources

import numpy as np
import pytest

from spikeforge.codegen.generate import generate
from spikeforge.codegen.ir import KernelSpec
from spikeforge.codegen.render import TARGETS, declaration, parse_declaration, render_kernel, render_network
from spikeforge.models import builtins as m
from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, SCALED, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.models.synapse import WeightUpdateModel
from spikeforge.network import FixedProbability, FromList, Network
from spikeforge.training.compiler import EpropCompiler

TEMPLATES = resources.files("spikeforge") / "templates"
# templates that are not kernel templates: the translation units and the CUDA emulation's
# driver, the kernel bases, the connectivity builder, the old e-prop path's kernel, the two
# parts the CUDA eligibility kernel includes (its declaration is eprop_eligibility's), and the
# event backend's translation unit (one heap loop over the whole network, no kernel specs)
NOT_KERNELS = {"model", "kernel_base", "connectivity", "eprop_trial", "emu_driver", "eprop_presynaptic",
               "eprop_synapses", "event"}


def _kernel_templates():
    out = []
    for target, t in TARGETS.items():
        for f in sorted((TEMPLATES / target).iterdir()):
            if f.name.endswith(t.suffix) and f.name[: -len(t.suffix)] not in NOT_KERNELS:
                out.append((target, f.name[: -len(t.suffix)]))
    return out


def test_every_kernel_template_declares_its_roles_and_the_targets_agree():
    kinds = {}
    for target, name in _kernel_templates():
        d = declaration(f"{target}/{name}{TARGETS[target].suffix}")
        kinds.setdefault(name, {})[target] = set(d.roles) | set(d.ignored)
    assert set(kinds) >= {"neuron_update", "synapse_update", "synapse_dynamics", "batch_reduction",
                          "custom_update", "eprop_step", "eprop_eligibility"}
    for name, by_target in kinds.items():  # one spec renders for every target: same roles known
        assert set(by_target) == set(TARGETS), name
        assert len({frozenset(r) for r in by_target.values()}) == 1, name
    cuda = declaration("cuda/neuron_update.cu.j2")
    assert "flags" in cuda.ignored and "flags" not in cuda.roles  # CUDA gathers spikes in shared memory
    assert "flags" in declaration("cpu/neuron_update.cpp.j2").required


def test_a_malformed_declaration_is_refused_with_the_template_named():
    d = parse_declaration("x/t.j2", "{#- uses: spk, ptr?; ignores: flags -#}")
    assert (d.required, d.optional, d.ignored) == (("spk",), ("ptr",), ("flags",))
    assert parse_declaration("x/t.j2", "{#- uses: -#}").roles == ()
    for bad in ("{% extends 'cpu/kernel_base.cpp.j2' %}", "{#- uses: spk,ptr -#}", "{#- uses spk -#}",
                "{#- uses: spk, spk -#}", "{#- uses: spk; ignores: spk -#}", "{#- uses: spk?? -#}"):
        with pytest.raises(ValueError, match=r"template x/t\.j2"):
            parse_declaration("x/t.j2", bad)


# -- networks covering the kernel kinds and their variants -----------------------------------------
ACC = NeuronModel("accumulator", vars={"v": 0.0})
GAP = WeightUpdateModel("gap_junction", params={"w": 0.1}, summed={"Igap": "w * (v_pre - v_post)"})
GAP_NEURON = NeuronModel("gap_neuron", params={"tau": 10.0}, vars={"v": 0.0, "Igap": 0.0},
                         equations="dv/dt = (1.2 - v + Igap) / tau", threshold="v > 1", reset="v = 0",
                         integrator="exact")


def _simulation_networks():
    a = Network("refractory", dt=0.1)
    a.add_population("src", 4, m.POISSON, init={"rate": 200.0})
    a.add_population("p", 3, m.LIF, params={"t_ref": 2.0})
    a.add_projection("sp", "src", "p", m.STATIC, m.EXP_CURR, "dense", wu_init={"w": 1.0})

    b = Network("stdp_batched", dt=0.1, batch_size=2)  # spike source arrays, traces, batch reductions
    b.add_population("pre", 5, m.SPIKE_SOURCE_ARRAY)
    b.add_population("post", 3, m.SPIKE_SOURCE_ARRAY)
    b.add_projection("dense", "pre", "post", m.stdp("sum"), m.EXP_CURR, "dense",
                     wu_params=dict(a_plus=0.01, a_minus=0.012, w_min=-1.0, w_max=1.0), wu_init={"w": 0.5})
    b.add_projection("sparse", "pre", "post", m.stdp("mean"), m.EXP_CURR, FromList([0, 1, 4], [2, 0, 1]),
                     wu_params=dict(a_plus=0.01, a_minus=0.012, w_min=-1.0, w_max=1.0), wu_init={"w": 0.5})

    c = Network("summed", dt=0.1)  # synapse dynamics, dense and sparse
    c.add_population("n", 6, GAP_NEURON)
    c.add_population("o", 6, GAP_NEURON)
    c.add_projection("gd", "n", "n", GAP, m.delta_curr("v"), "dense")
    c.add_projection("gs", "o", "o", GAP, m.delta_curr("v"), FixedProbability(0.5))

    d = Network("delays", dt=0.1, seed=5)  # dendritic delays, procedural rows, a projection delay
    d.add_population("a", 20, m.POISSON, init={"rate": 300.0})
    d.add_population("b", 10, ACC)
    d.add_projection("den", "a", "b", m.STATIC, m.delta_curr("v"), FromList([0, 3, 7, 9], [1, 2, 3, 4]),
                     wu_init={"w": 1.0}, delay="0.1*i + 0.2")
    d.add_projection("proc", "a", "b", m.STATIC_CONSTANT, m.delta_curr("v"), FixedProbability(0.5, procedural=True),
                     wu_params={"w": 1.0})
    d.add_projection("late", "a", "b", m.STATIC, m.delta_curr("v"), FixedProbability(0.3), wu_init={"w": 1.0},
                     delay=0.5)
    return [generate(n) for n in (a, b, c, d)]


@pytest.fixture(scope="module")
def training_spec():
    """A network compiled for e-prop (built for real, as training builds it): error, readout
    gradient with the bias, learning signal, eligibility (dense and sparse), optimiser steps.
    Three specs: step by step (block_steps=1, as a device backend compiles it: rendered for every
    target), with the CPU's blocks of steps (rendered for the cpu), and an ALIF layer in blocks
    (its adaptation component per synapse: the dense projection's steps in registers)."""
    def compiled(model, params, block_steps):
        rng = np.random.default_rng(0)
        net = Network("trained", dt=1.0, batch_size=2, precision="double")
        net.add_population("inp", 4, VALUE_INPUT)
        net.add_population("hid", 5, model, params)
        net.add_population("out", 2, LEAKY_READOUT, dict(tau_m=15.0, bias=[0.0, 0.1]))
        net.add_projection("inp_hid", "inp", "hid", SCALED, ONE_STEP_CURR, wu_init={"w": rng.normal(size=20)})
        net.add_projection("hid_hid", "hid", "hid", m.STATIC, ONE_STEP_CURR, FixedProbability(0.5),
                           wu_init={"w": 0.1})
        net.add_projection("hid_out", "hid", "out", m.STATIC, ONE_STEP_CURR, wu_init={"w": rng.normal(size=10)})
        return EpropCompiler(loss="xent", block_steps=block_steps).compile(
            net, inputs="inp", hidden="hid", readout="out", trainable=["inp_hid", "hid_hid", "hid_out", "out.bias"],
            n_steps=5).spec

    lif = (m.LIF_SUBTRACTIVE, dict(tau_m=10.0, v_th=0.6))
    alif = (m.ALIF, dict(tau_m=10.0, tau_a=30.0, v_th=0.6, beta={"values": [0.0, 0.4], "counts": [2, 3]},
                         t_ref=0.0))
    specs = [compiled(*lif, 1), compiled(*lif, 16), compiled(*alif, 16)]
    assert any(k.info.get("block") for k in specs[1].kernels)
    assert any(k.info.get("register_block") for k in specs[2].kernels)
    return specs


POINTER = re.compile(r"^\s*[\w]+\* __restrict__ const _(\w+) = ctx->\1;$", re.M)
IDENTIFIER = re.compile(r"\b_([A-Za-z]\w*)")


def _check_pointers_are_the_arrays_used(spec, targets=TARGETS):
    names = {a.name for a in spec.arrays}
    kinds = set()
    for k in [*spec.kernels, *spec.custom_updates]:
        kinds.add(k.template)
        for target in targets:
            text = render_kernel(spec, k, target)
            pointers = set(POINTER.findall(text))
            used = {n for n in IDENTIFIER.findall(POINTER.sub("", text)) if n in names}
            if target == "cuda" and k.kind == "neuron_update" and not k.info["spike_condition"]:
                # a population that never spikes: the CPU's update writes its spike count (0) each
                # step, the CUDA one leaves it to the kernel that starts the step (one spec, both)
                used.add(k.arrays["spk_cnt"])
            assert pointers == used, (k.name, target, "unused:", pointers - used, "undeclared:", used - pointers)
            assert set(k.writes) <= pointers and set(k.reads) <= pointers, (k.name, target)
    return kinds


def test_the_pointers_of_every_kernel_are_exactly_the_arrays_its_body_uses(training_spec):
    kinds = set()
    for spec in _simulation_networks():
        kinds |= _check_pointers_are_the_arrays_used(spec)
    kinds |= _check_pointers_are_the_arrays_used(training_spec[0])
    kinds |= _check_pointers_are_the_arrays_used(training_spec[1], ["cpu"])
    kinds |= _check_pointers_are_the_arrays_used(training_spec[2], ["cpu"])
    assert kinds == {name for _, name in _kernel_templates()}  # every kernel template was rendered


def _neuron(spec, name):
    return next(k for k in spec.kernels if k.name == f"neuron_update_{name}")


def test_a_spec_without_a_declared_role_names_kernel_template_and_role():
    spec = _simulation_networks()[0]
    del _neuron(spec, "p").arrays["spk_cnt"]
    for target, template in (("cpu", "cpu/neuron_update.cpp.j2"), ("cuda", "cuda/neuron_update.cu.j2")):
        with pytest.raises(ValueError, match=rf"kernel 'neuron_update_p' \(template {re.escape(template)}\): the "
                                             r"template uses the array role 'spk_cnt', which the kernel spec does not"):
            render_network(spec, target)


def test_a_spec_with_a_role_the_template_does_not_declare_is_refused():
    spec = _simulation_networks()[0]
    k = next(k for k in spec.kernels if k.kind == "presynaptic_update")
    k.arrays["flags"] = _neuron(spec, "p").arrays["flags"]  # a network array; no role of synapse templates
    with pytest.raises(ValueError, match=r"kernel 'presynaptic_update_sp' \(template cpu/synapse_update\.cpp\.j2\): "
                                         r"the kernel spec gives the array role 'flags', which the template does not"):
        render_network(spec, "cpu")


def test_the_cuda_neuron_update_takes_no_flag_pointer_the_cpu_one_does():
    spec = _simulation_networks()[0]
    k = _neuron(spec, "p")
    flags = k.arrays["flags"]
    assert f"ctx->{flags};" in render_kernel(spec, k, "cpu")
    assert flags not in render_kernel(spec, k, "cuda")


def test_array_lists_belong_in_the_typed_fields_not_in_info():
    with pytest.raises(ValueError, match=r"kernel 'k': info\['reads'\] is an array list; give it as KernelSpec"):
        KernelSpec("k", "custom", "x", "custom_update", "", info={"reads": ["a"]})
    k = KernelSpec("k", "custom", "x", "custom_update", "", reads=("b", "a"), writes=("c",))
    assert (k.reads, k.writes) == (("a", "b"), ("c",))
