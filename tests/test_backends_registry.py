"""One backend interface and a registry by name (spikeforge.runtime.backends): every backend
renders, builds and loads through it, and no other module dispatches on a backend's name."""

import ast
from pathlib import Path

import numpy as np
import pytest

from spikeforge import models as m
from spikeforge.codegen.generate import generate
from spikeforge.codegen.render import TARGETS
from spikeforge.errors import BackendUnavailableError
from spikeforge.network import Network
from spikeforge.runtime.backends import Artefact, Sources, backend_names, get_backend
from tests.conftest import gpu_available, nvcc_path

PACKAGE = Path(__file__).resolve().parents[1] / "spikeforge"
REGISTRY = PACKAGE / "runtime" / "backends.py"
NAMES = ("cpu", "cuda", "cuda-emu", "event")


def tiny_network(name="tiny"):
    """Ten LIF neurons resting above threshold (they fire on their own, the values set when the
    kernels are compiled), a Poisson input projected onto them, batch 2."""
    net = Network(name, dt=0.1, batch_size=2, seed=5)
    net.add_population("lif", 10, m.LIF, params=dict(v_rest=-45.0, v_th=-50.0, t_ref=2.0))
    net.add_population("inp", 6, m.POISSON, init={"rate": 200.0})
    net.add_projection("drive", "inp", "lif", m.STATIC, m.EXP_CURR, "dense", wu_init={"w": 3.0})
    net.record_spikes("lif")
    return net


def _tiny_name(backend: str) -> str:
    return f"tiny_{backend.replace('-', '_')}"  # one name per backend: the tests share its build


def test_the_registry_lists_the_backends_with_their_attributes():
    assert backend_names() == NAMES
    kinds = {name: (get_backend(name).target, get_backend(name).device, get_backend(name).gpu) for name in NAMES}
    assert kinds == {"cpu": ("cpu", False, False), "cuda": ("cuda", True, True), "cuda-emu": ("cuda", True, False),
                     "event": ("cpu", False, False)}
    assert [name for name in NAMES if get_backend(name).event_driven] == ["event"]
    for name in NAMES:
        backend = get_backend(name)
        assert backend.name == name and backend.target in TARGETS and backend.description


@pytest.mark.parametrize("ask", [
    lambda: get_backend("opencl"),
    lambda: tiny_network().generated_code("opencl"),
    lambda: tiny_network().kernels("opencl"),  # listed kernels without launch shapes, before the registry
    lambda: tiny_network().build(backend="opencl"),
])
def test_an_unknown_backend_is_one_clear_error_listing_the_registered_ones(ask):
    with pytest.raises(BackendUnavailableError,
                       match=r"^unknown backend 'opencl' \(available: cpu, cuda, cuda-emu, event\)$"):
        ask()


def test_the_trainer_refuses_an_unknown_backend_through_the_registry():
    from spikeforge.training.model import EpropConfig
    from spikeforge.training.trainer import Trainer

    with pytest.raises(BackendUnavailableError, match=r"unknown backend 'tpu' \(available: cpu, cuda, cuda-emu, event\)"
                       ):
        Trainer(EpropConfig(3, 4, 2, m.LIF), backend="tpu")


def _run(runtime, steps=200):
    runtime.initialise()
    runtime.run(steps)
    return runtime.pull("lif_v"), [runtime.spikes(0, b) for b in range(2)]


@pytest.mark.parametrize("name", ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow)])
def test_each_backend_renders_builds_and_loads_a_network_that_runs(name):
    net = tiny_network(_tiny_name(name))
    spec = generate(net)
    backend = get_backend(name)
    sources = backend.render(spec)
    assert isinstance(sources, Sources) and sources.text == net.generated_code(name)
    assert sources.text in sources.files.values()
    artefact = backend.build(sources)
    assert isinstance(artefact, Artefact) and artefact.build.path.is_file() and artefact.library is not None
    runtime = backend.load(artefact, spec, 2, threads=1)
    assert runtime.name == name and runtime.build is artefact.build
    v, spikes = _run(runtime)
    assert np.isfinite(v).all() and all(len(s) > 0 for s in spikes)
    # a Simulation of the network goes the same way: the same source, found in the cache
    sim = net.build(backend=name, threads=1)
    assert sim.from_cache and sim.backend.build.key == artefact.build.key
    assert sim.source == next(iter(sources.files.values()))


@pytest.mark.slow
def test_cpu_and_cuda_emu_agree_through_the_interface():
    results = {}
    for name in ("cpu", "cuda-emu"):
        spec = generate(tiny_network(_tiny_name(name)))
        backend = get_backend(name)
        results[name] = _run(backend.load(backend.build(backend.render(spec)), spec, 2))
    np.testing.assert_array_equal(results["cpu"][0], results["cuda-emu"][0])
    for a, b in zip(results["cpu"][1], results["cuda-emu"][1]):
        np.testing.assert_array_equal(a, b)


def test_a_build_without_loading_then_load():
    spec = generate(tiny_network(_tiny_name("cpu")))
    backend = get_backend("cpu")
    artefact = backend.build(backend.render(spec), load=False)
    assert artefact.library is None
    v, spikes = _run(backend.load(artefact, spec, 2))
    assert all(len(s) > 0 for s in spikes)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
def test_cuda_renders_and_builds_a_cubin_with_nvcc():
    net = tiny_network("tiny_cuda")
    spec = generate(net)
    backend = get_backend("cuda")
    sources = backend.render(spec)
    assert sources.text == net.generated_code("cuda") and list(sources.files) == ["tiny_cuda.cu"]
    artefact = backend.build(sources, arch="sm_80")  # no GPU needed with an explicit architecture
    assert artefact.arch == "sm_80" and artefact.build.path.name == "tiny_cuda.cubin"
    assert artefact.build.path.read_bytes()[:4] == b"\x7fELF"
    assert artefact.sources.block_sizes  # chosen by occupancy from ptxas's report
    if not gpu_available():
        with pytest.raises(BackendUnavailableError, match="cuda-emu"):
            backend.load(artefact, spec, 2)


# -- structure: backends are chosen through the registry ---------------------------------------
def _strings(node) -> list[str] | None:
    """The text of a string constant, or of a tuple, list, set or dict (keys) of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and items:
        if all(isinstance(x, ast.Constant) and isinstance(x.value, str) for x in items):
            return [x.value for x in items]
    return None


def _mentions_backend(node) -> bool:
    return any(isinstance(n, ast.Name) and "backend" in n.id.lower()
               or isinstance(n, ast.Attribute) and "backend" in n.attr.lower() for n in ast.walk(node))


def backend_dispatch(path: Path) -> list[str]:
    """Lines of ``path`` that compare a backend to a name written out (``backend == "cpu"``,
    ``name == "cuda-emu"``), or list the backends' names by hand (``("cpu", "cuda", "cuda-emu")``)."""
    found, where = {}, path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path.name
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literals = [s for side in sides if (s := _strings(side)) is not None]
            named = {v for values in literals for v in values} & set(NAMES)
            if named and ("cuda-emu" in named or any(_mentions_backend(s) for s in sides if _strings(s) is None)):
                found.setdefault(node.lineno, f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            values = _strings(node) or []
            if "cuda-emu" in values and len(set(values) & set(NAMES)) >= 2:
                found.setdefault(node.lineno, f"{where}:{node.lineno}: {ast.unparse(node)}")
    return [found[line] for line in sorted(found)]


def test_no_module_outside_the_registry_dispatches_on_a_backend_name():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) if path != REGISTRY for line in backend_dispatch(path)]
    assert found == []


def test_the_dispatch_check_sees_what_it_looks_for(tmp_path):
    """The check above finds each form the registry replaced (so its passing means something)."""
    sample = tmp_path / "dispatch_sample.py"
    sample.write_text('BACKENDS = ("cpu", "cuda", "cuda-emu")\n'
                      'def f(backend, args, name):\n'
                      '    if backend == "cpu": pass\n'
                      '    if args.backend != "cuda": pass\n'
                      '    if backend in ("cuda", "cuda-emu"): pass\n'
                      '    if name == "cuda-emu": pass\n'
                      '    if target == "cuda": pass\n'  # a template target is codegen's own notion: allowed
                      '    return {"cpu": 24, "cuda": 64, "cuda-emu": 64}\n')
    found = backend_dispatch(sample)
    assert [line.split(":")[1] for line in found] == ["1", "3", "4", "5", "6", "8"]
