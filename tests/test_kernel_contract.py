"""The neuron update's contract between generator and templates: the generator gives the model's
code in parts, the templates (templates/common/neuron.j2) write the refractory countdown, the
threshold test and the start of the refractory period between them, for cpu and cuda alike."""

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import render_network
from spikeforge.network import Network

MECHANICS = ("_refrac = _refrac > 0 ? _refrac - 1 : 0;", "const bool _refractory = _refrac > 0;",
             "_refrac = _refrac_steps;")


def _network():
    net = Network("contract", dt=0.1)
    net.add_population("src", 4, m.POISSON, init={"rate": 200.0})
    net.add_population("p", 3, m.LIF, params={"t_ref": 2.0})
    net.add_projection("sp", "src", "p", m.STATIC, m.EXP_CURR, "dense", wu_init={"w": 1.0})
    return net


def _neuron_kernel(spec, name):
    return next(k for k in spec.kernels if k.name == f"neuron_update_{name}")


def test_the_generator_gives_the_model_code_in_parts_and_no_mechanics():
    k = _neuron_kernel(generate(_network()), "p")
    assert k.info["refractory"] == {"source": "t_ref"}
    assert k.info["threshold"] == {"condition": "!_refractory && (v > v_th)", "source": "v > v_th"}
    inputs, dynamics = [line.code for line in k.code], [line.code for line in k.info["dynamics"]]
    assert "sp_in_syn = 0;" in inputs and not any(c.startswith("v = ") for c in inputs)
    assert any(c.startswith("v = _refractory ? v : ") for c in dynamics)  # the integrated equation
    assert [line.code for line in k.info["reset"]] == ["v = v_reset;"]
    every_line = [line.code for part in (k.code, k.info["dynamics"], k.info["after_threshold"], k.info["reset"],
                                         k.info["on_spike"]) for line in part]
    assert not any(c.startswith(MECHANICS) or c.startswith("const bool _spike") for c in every_line)
    # a population without refractoriness or threshold: nothing to write
    src = _neuron_kernel(generate(_network()), "src")
    assert src.info["refractory"] is None


def test_the_templates_write_the_mechanics_in_the_kernel_order():
    spec = generate(_network())
    for target in ("cpu", "cuda"):
        text = render_network(spec, target)
        body = text[text.index("neuron_update_p"):]
        order = [body.index("sp_in_syn = 0;"), body.index(MECHANICS[0]), body.index(MECHANICS[1]),
                 body.index("v = _refractory ? v : "),
                 body.index("const bool _spike = !_refractory && (v > v_th);  // threshold: v > v_th"),
                 body.index("v = v_reset;  // reset: v = v_reset"),
                 body.index(MECHANICS[2] + "  // refractory for t_ref, this step the first")]
        assert order == sorted(order), target
        assert text.count(MECHANICS[0]) == 1, target  # only the refractory population counts down


def test_the_mechanics_come_from_the_templates_not_the_model_code():
    """With the model's parts emptied, the templates still write the mechanics, in order."""
    spec = generate(_network())
    k = _neuron_kernel(spec, "p")
    k.code = []
    for part in ("dynamics", "after_threshold", "reset", "on_spike"):
        k.info[part] = []
    for target in ("cpu", "cuda"):
        text = render_network(spec, target)
        body = text[text.index("neuron_update_p"):]
        order = [body.index(MECHANICS[0]), body.index(MECHANICS[1]),
                 body.index("const bool _spike = !_refractory && (v > v_th);"), body.index(MECHANICS[2])]
        assert order == sorted(order), target
