"""The backends, registered by name, behind one small interface.

A backend turns a network's kernel specs (:class:`~spikeforge.codegen.ir.NetworkSpec`)
into a running simulation in three steps, each of which can be called on its own:

>>> backend = get_backend("cuda-emu")
>>> sources = backend.render(spec)                      # the text that is compiled
>>> artefact = backend.build(sources)                    # compiled, or taken from the cache
>>> runtime = backend.load(artefact, spec, batch_size)   # state allocated, ready to run

``backend.create(spec, batch_size, **options)`` runs the three and gives each option to
the step that takes it (``block_sizes`` to render, ``debug`` to the cuda-emu build,
``device`` to the cuda build and load, ``threads`` and ``batch_offset`` to load).

Every other module asks the registry (:func:`get_backend`, :func:`backend_names`) and
reads a backend's attributes instead of comparing its name: the template ``target`` the
code generator renders for, whether the state sits behind the device protocol
(``device``) and whether that device is a real GPU (``gpu``). Adding a backend is one
subclass of :class:`Backend` and one :func:`register` call here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import BackendUnavailableError

if TYPE_CHECKING:  # importing the IR loads sympy: too slow for `spikeforge --help`
    from ..codegen.ir import NetworkSpec


@dataclass(frozen=True)
class Sources:
    """What a backend renders for a network: ``files`` (file name -> text, the files
    ``spikeforge build`` writes) and ``text``, the one that is compiled (what
    ``Network.generated_code`` shows)."""

    backend: str
    spec: NetworkSpec
    files: dict[str, str]
    text: str
    block_sizes: dict | None = None  # CUDA threads per block by kernel, None = the defaults
    seconds: float = 0.0  # time spent rendering


@dataclass(frozen=True)
class Artefact:
    """A build: ``sources`` as compiled, the cache entry (``build.path``, ``build.from_cache``)
    and, once loaded, the shared ``library`` (cpu, cuda-emu)."""

    sources: Sources
    build: object  # spikeforge.runtime.build.BuildResult
    library: object | None = None  # ctypes.CDLL
    arch: str | None = None  # CUDA architecture (cuda)
    occupancy: list = field(default_factory=list)  # block sizes chosen by occupancy (cuda)


class Backend:
    """One way to run generated code. Subclasses set the attributes and the three steps."""

    name: str = ""
    #: The code generator's template target: "cpu" (C++) or "cuda" (the .cu kernels).
    target: str = "cpu"
    #: State lives behind the device protocol (alloc, upload, download, launch, synchronise)
    #: and kernels have launch shapes.
    device: bool = False
    #: Runs on an NVIDIA GPU (device memory is GPU memory, not host memory).
    gpu: bool = False
    #: Host bytes of one (empty) per-instance spike recorder (see runtime.memory).
    spike_recorder_bytes: int = 64
    #: A run may start from the warm-start cache (spikeforge.warm): the backend reads
    #: no more of the spec than its arrays, populations and recordings, and ``create`` takes
    #: the compiled text back as ``sources=`` (rendered again otherwise).
    warm_start: bool = False
    #: Runs without a time grid (exact event-driven): ``simulate`` returns its own simulation
    #: object, and the kernel-spec steps (render, build, load) do not apply.
    event_driven: bool = False
    description: str = ""

    def simulate(self, network, **options):
        """A running simulation of ``network`` on this backend (what ``Network.build`` returns)."""
        from .simulation import Simulation

        return Simulation(network, backend=self.name, **options)

    def render(self, spec: NetworkSpec, block_sizes: dict | None = None) -> Sources:
        raise NotImplementedError

    def render_kernel(self, spec: NetworkSpec, kernel) -> str:
        """One kernel of ``spec`` as this backend's templates write it."""
        from ..codegen.render import render_kernel

        return render_kernel(spec, kernel, self.target)

    def build(self, sources: Sources, **options) -> Artefact:
        raise NotImplementedError

    def load(self, artefact: Artefact, spec: NetworkSpec, batch_size: int, **options):
        raise NotImplementedError

    def create(self, spec: NetworkSpec, batch_size: int, **options):
        """render -> build -> load, with each option given to its step."""
        raise NotImplementedError

    def sources(self, spec: NetworkSpec, text: str) -> Sources:
        """The sources of ``spec`` as they were rendered (``text``), without rendering them
        (backends with ``warm_start``)."""
        raise NotImplementedError

    def describe(self, spec: NetworkSpec) -> str:
        """What is being built, for the 'compiling ...' line and build errors."""
        return f"network '{spec.name}' ({self.name})"

    def __repr__(self) -> str:
        return f"<backend {self.name!r}: {self.description}>"


def _timed_render(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class _Cpu(Backend):
    name = "cpu"
    target = "cpu"
    spike_recorder_bytes = 24  # a std::vector per instance
    warm_start = True
    description = "generated C++ (OpenMP over the batch), built by the system C++ compiler"

    def render(self, spec, block_sizes=None):
        from ..codegen.render import render_network

        text, seconds = _timed_render(lambda: render_network(spec, self.target))
        return Sources(self.name, spec, {f"{spec.name}.cpp": text}, text, None, seconds)

    def build(self, sources, *, load: bool = True, flags=None, describe: str | None = None):
        from .build import build_and_load, build_shared_library

        kw = dict(name=sources.spec.name, flags=flags, describe=describe or self.describe(sources.spec))
        if load:
            library, result = build_and_load(sources.text, **kw)
            return Artefact(sources, result, library)
        return Artefact(sources, build_shared_library(sources.text, **kw))

    def load(self, artefact, spec, batch_size, **options):
        from .cpu import CpuBackend

        return CpuBackend(spec, batch_size, _loaded(artefact), **options)

    def create(self, spec, batch_size, **options):
        options.pop("block_sizes", None)  # no CUDA blocks here
        sources = options.pop("sources", None) or self.render(spec)
        return self.load(self.build(sources), spec, batch_size, **options)

    def sources(self, spec, text: str) -> Sources:
        """The sources of ``spec`` as they were rendered (``text``), without rendering them."""
        return Sources(self.name, spec, {f"{spec.name}.cpp": text}, text)


class _CudaEmu(Backend):
    name = "cuda-emu"
    target = "cuda"
    device = True
    description = "the CUDA kernels, unchanged, built by the C++ compiler against an emulation header; runs on the CPU"

    def render(self, spec, block_sizes=None):
        from ..codegen.launch import plan
        from ..codegen.render import render_network
        from .cuda_emu import render_emu_source

        def both():
            cu = render_network(spec, self.target, block_sizes)  # the .cu text, as the GPU gets it
            return cu, render_emu_source(spec, cu, plan(spec, block_sizes))

        (cu, emu), seconds = _timed_render(both)
        return Sources(self.name, spec, {f"{spec.name}.cu": cu, f"{spec.name}_emu.cpp": emu}, emu, block_sizes,
                       seconds)

    def build(self, sources, *, load: bool = True, debug: bool = False, describe: str | None = None):
        from .build import build_and_load, build_shared_library, debug_flags

        kw = dict(name=f"{sources.spec.name}_emu", flags=debug_flags() if debug else None,
                  describe=describe or self.describe(sources.spec))
        if load:
            library, result = build_and_load(sources.text, **kw)
            return Artefact(sources, result, library)
        return Artefact(sources, build_shared_library(sources.text, **kw))

    def load(self, artefact, spec, batch_size, **options):
        from .cuda_emu import CudaEmuBackend

        return CudaEmuBackend(spec, batch_size, _loaded(artefact), **options)

    def create(self, spec, batch_size, **options):
        sources = self.render(spec, options.pop("block_sizes", None))
        artefact = self.build(sources, debug=options.pop("debug", False))
        return self.load(artefact, spec, batch_size, **options)


class _Cuda(Backend):
    name = "cuda"
    target = "cuda"
    device = True
    gpu = True
    description = "the CUDA kernels compiled to cubin by nvcc, launched through pycuda on an NVIDIA GPU"

    def render(self, spec, block_sizes=None):
        from ..codegen.render import render_network

        text, seconds = _timed_render(lambda: render_network(spec, self.target, block_sizes))
        return Sources(self.name, spec, {f"{spec.name}.cu": text}, text, block_sizes, seconds)

    def build(self, sources, *, arch: str | None = None, device: int = 0, nvcc: str | None = None,
              describe: str | None = None):
        """Compile for ``arch`` (default: the architecture of GPU ``device``, which needs
        pycuda and the GPU; with an ``arch``, only nvcc). Without block sizes in
        ``sources`` they are chosen by occupancy, which may render the kernels again."""
        from .nvcc import build_network_cubin

        if arch is None:
            from .cuda import gpu_arch

            arch = gpu_arch(device)
        spec = sources.spec
        text, result, block_sizes, occupancy = build_network_cubin(
            spec, arch, sources.block_sizes, name=spec.name, nvcc=nvcc, source=sources.text,
            describe=describe or f"network '{spec.name}' (cuda, {arch})")
        if text != sources.text:
            sources = replace(sources, files={f"{spec.name}.cu": text}, text=text)
        return Artefact(replace(sources, block_sizes=block_sizes or None), result, None, arch, occupancy)

    def load(self, artefact, spec, batch_size, **options):
        from .cuda import CudaBackend

        return CudaBackend(spec, batch_size, artefact, **options)

    def create(self, spec, batch_size, **options):
        options.pop("threads", None)  # the GPU has no CPU threads to set
        device = options.get("device", 0)
        artefact = self.build(self.render(spec, options.pop("block_sizes", None)), device=device)
        return self.load(artefact, spec, batch_size, **options)


class _Event(Backend):
    name = "event"
    target = "cpu"
    event_driven = True
    description = ("exact event-driven simulation (no time grid): a heap of next spike times, the flow solved in "
                   "closed form; generated C++, OpenMP over the batch")

    def simulate(self, network, **options):
        from .event import EventSimulation

        return EventSimulation(network, **options)

    def _not_here(self, *args, **kwargs):
        from ..errors import NetworkError

        raise NetworkError("backend 'event' simulates a network without kernel specs or time steps: build it with "
                           "net.build(backend='event') (docs/backends.md, 'The event backend')")

    render = build = load = create = sources = _not_here


def _loaded(artefact: Artefact) -> Artefact:
    """``artefact`` with its shared library loaded (a build made with ``load=False``)."""
    if artefact.library is not None:
        return artefact
    from .build import load_library

    return replace(artefact, library=load_library(artefact.build.path))


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make ``backend`` available by its name (a later one of the same name replaces it)."""
    if not backend.name or not backend.target:  # target: a key of spikeforge.codegen.render.TARGETS
        raise ValueError(f"a backend needs a name and a template target, got {backend!r}")
    _REGISTRY[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, in registration order.

    Examples:
        >>> from spikeforge import backend_names
        >>> "cpu" in backend_names() and "cuda-emu" in backend_names()
        True
    """
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend called ``name``, or BackendUnavailableError listing the available ones.

    Examples:
        >>> from spikeforge import get_backend
        >>> emu = get_backend("cuda-emu")
        >>> emu.device, emu.gpu, emu.target          # behind the device protocol, on the CPU
        (True, False, 'cuda')
    """
    backend = _REGISTRY.get(name) if isinstance(name, str) else None
    if backend is None:
        raise BackendUnavailableError(f"unknown backend {name!r} (available: {', '.join(_REGISTRY)})")
    return backend


for _backend in (_Cpu(), _Cuda(), _CudaEmu(), _Event()):
    register(_backend)
