"""The ``cuda`` backend: the generated kernels compiled to cubin by nvcc for the detected
GPU, state in device memory, kernels launched through pycuda.

Per-step host cost is kept small by capturing a block of steps into a CUDA graph (the
step counter lives in device memory, so a captured graph can be replayed as is) and
launching the graph; pycuda has no graph API, so the few driver calls for it go through
ctypes to the same driver and context pycuda uses.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

from ..codegen.ir import NetworkSpec
from ..errors import BackendUnavailableError, NetworkError
from . import memory
from .device import DeviceBackend

log = logging.getLogger("spikeforge.runtime")

GRAPH_STEPS = 100  # steps captured into one CUDA graph

_INSTALL = ("pip install pycuda, built against your CUDA toolkit (it needs the toolkit and an NVIDIA driver; "
            "`spikeforge doctor` prints the exact command, docs/install.md)")


def import_pycuda():
    """pycuda.driver, initialised, or a clear error saying what is missing."""
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the 'cuda' backend needs pycuda, which is not installed ({exc}). Install it with: {_INSTALL}. "
            "Without a GPU, use backend='cuda-emu' to run the same kernels on the CPU.") from None
    try:
        drv.init()
        count = drv.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError kinds
        raise BackendUnavailableError(
            f"the 'cuda' backend found no usable NVIDIA driver or GPU ({exc}). "
            "Use backend='cuda-emu' to run the same kernels on the CPU.") from None
    if count == 0:
        raise BackendUnavailableError("the 'cuda' backend found no CUDA GPU on this machine; "
                                      "use backend='cuda-emu' to run the same kernels on the CPU.")
    return drv


def gpu_arch(device: int = 0) -> str:
    """The CUDA architecture (``sm_XY``) of GPU ``device``, or a clear error if there is none."""
    drv = import_pycuda()
    _check_device(drv, device)
    major, minor = drv.Device(device).compute_capability()
    return f"sm_{major}{minor}"


def _check_device(drv, device: int):
    if not 0 <= device < drv.Device.count():
        raise BackendUnavailableError(f"CUDA device {device} does not exist ({drv.Device.count()} found)")


def state_bytes(spec: NetworkSpec, batch_size: int) -> int:
    """Bytes of device memory the network's state needs at ``batch_size``."""
    return memory.state_bytes(spec, batch_size)


def check_fits(spec: NetworkSpec, batch_size: int, free: int, total: int, device: str = "the GPU",
               extra_bytes: int = 0):
    """Raise MemoryLimitError before allocating anything if the state (plus ``extra_bytes``:
    recording buffers, the context) cannot fit in device memory. Returns the bytes needed."""
    return memory.check_device(spec, batch_size, free, total, device, extra_bytes)


class _Graphs:
    """Stream capture → instantiate → launch, through the driver API."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            self.lib = None

    def capture(self, stream_handle: int, record) -> int | None:
        if self.lib is None:
            return None
        L, s = self.lib, ctypes.c_void_p(stream_handle)
        if L.cuStreamBeginCapture_v2(s, ctypes.c_int(1)) != 0:  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
            return None
        try:
            record()
        finally:
            graph = ctypes.c_void_p()
            status = L.cuStreamEndCapture(s, ctypes.byref(graph))
        if status != 0:
            return None
        exec_ = ctypes.c_void_p()
        if L.cuGraphInstantiateWithFlags(ctypes.byref(exec_), graph, ctypes.c_ulonglong(0)) != 0:
            L.cuGraphDestroy(graph)
            return None
        L.cuGraphDestroy(graph)
        return exec_.value

    def launch(self, exec_: int, stream_handle: int):
        status = self.lib.cuGraphLaunch(ctypes.c_void_p(exec_), ctypes.c_void_p(stream_handle))
        if status != 0:
            raise RuntimeError(f"cuGraphLaunch failed with CUDA error {status}")

    def destroy(self, exec_: int):
        if self.lib is not None and exec_:
            self.lib.cuGraphExecDestroy(ctypes.c_void_p(exec_))


class CudaBackend(DeviceBackend):
    name = "cuda"

    def __init__(self, spec: NetworkSpec, batch_size: int, artefact, batch_offset: int = 0, device: int = 0,
                 use_graphs: bool = True):
        """``artefact``: the cubin (spikeforge.runtime.backends.Artefact) built for this GPU."""
        drv = import_pycuda()
        # launch the block sizes that were compiled (given, or chosen by occupancy)
        super().__init__(spec, batch_size, batch_offset, artefact.sources.block_sizes)
        self.drv = drv
        _check_device(drv, device)
        self.device = drv.Device(device)
        self.context = self.device.retain_primary_context()
        self.context.push()
        try:
            self._setup(spec, artefact, use_graphs)
        except BaseException:
            self.close()  # pops the context and frees what was allocated
            raise

    def _setup(self, spec, artefact, use_graphs):
        drv = self.drv
        self.arch = artefact.arch
        self.source, self.build = artefact.sources.text, artefact.build
        self.block_sizes, self.occupancy = artefact.sources.block_sizes or {}, artefact.occupancy
        self.codegen_seconds = artefact.sources.seconds
        self.module = drv.module_from_buffer(self.build.path.read_bytes())
        self.functions = {}
        for launch in self.launches:
            fn = self.module.get_function(launch.name)
            fn.prepare("P")
            self.functions[launch.name] = fn
        self.stream = drv.Stream()
        # waiting for the GPU blocks the host thread instead of spinning on a core
        self._done = drv.Event(drv.event_flags.BLOCKING_SYNC | drv.event_flags.DISABLE_TIMING)
        self._allocs: dict[int, object] = {}
        self._check_memory()
        try:
            self._allocate_all()
        except drv.MemoryError as exc:
            raise NetworkError(f"network '{spec.name}': out of GPU memory on {self.device.name()} while allocating "
                               f"its state at batch size {self.batch_size} ({exc})") from None
        self.graphs = _Graphs() if use_graphs else None
        if self.graphs is not None:
            self.step_granularity = GRAPH_STEPS  # whole graphs per chunk of a run
        self._graph_cache: dict[int, int | None] = {}

    # -- memory --------------------------------------------------------------------------
    def _check_memory(self):
        free, total = self.drv.mem_get_info()
        check_fits(self.spec, self.batch_size, free, total, self.device.name(), self.buffer_bytes())

    def _alloc(self, nbytes: int) -> int:
        mem = self.drv.mem_alloc(max(1, int(nbytes)))
        self._allocs[int(mem)] = mem
        return int(mem)

    def _free(self, addr: int):
        mem = self._allocs.pop(addr, None)
        if mem is not None:
            mem.free()

    def _upload(self, addr: int, array: np.ndarray):
        self.drv.memcpy_htod(addr, np.ascontiguousarray(array))

    def _download(self, addr: int, array: np.ndarray):
        self.drv.memcpy_dtoh(array, addr)

    def _memset0(self, addr: int, nbytes: int):
        self.drv.memset_d8(addr, 0, int(nbytes))

    def _launch(self, launch, grid, block):
        self.functions[launch.name].prepared_async_call(grid, (block, 1, 1), self.stream, self.ctx_ptr)

    def _synchronise(self):
        self._done.record(self.stream)
        self._done.synchronize()

    def _run_steps(self, n: int):
        if self.graphs is None:
            return super()._run_steps(n)
        done = 0
        while done < n:
            size = GRAPH_STEPS if n - done >= GRAPH_STEPS else 1
            exec_ = self._graph(size)
            if exec_ is None:  # capture not available: plain launches
                super()._run_steps(n - done)
                return
            self.graphs.launch(exec_, self.stream.handle)
            done += size

    def _graph(self, steps: int):
        if steps not in self._graph_cache:
            self._graph_cache[steps] = self.graphs.capture(
                self.stream.handle, lambda: DeviceBackend._run_steps(self, steps))
            if self._graph_cache[steps] is None:
                log.info("CUDA graph capture unavailable; launching kernels one by one")
        return self._graph_cache[steps]

    def close(self):
        if getattr(self, "graphs", None):
            for exec_ in self._graph_cache.values():
                self.graphs.destroy(exec_)
            self._graph_cache = {}
        for addr in list(getattr(self, "_allocs", {})):
            self._free(addr)
        if getattr(self, "context", None) is not None:
            self.context.pop()
            self.context = None
