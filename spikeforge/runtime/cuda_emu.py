"""The ``cuda-emu`` backend: the generated CUDA kernels, unchanged, compiled by the
system C++ compiler against ``sf_cuda_emu.h`` and run on the CPU.

It exists so that every CUDA kernel runs for real where there is no GPU (CI, laptops),
and so that a generated kernel can be debugged with gdb or valgrind. "Device memory" is
ordinary host memory here; the host logic (context struct, launch plan, chunked
recording) is the same code as the ``cuda`` backend's.
"""

from __future__ import annotations

import ctypes
from importlib import resources

import numpy as np

from ..codegen.ir import NetworkSpec
from ..codegen.render import environment
from .device import DeviceBackend


def emu_header() -> str:
    return (resources.files("spikeforge") / "templates" / "cuda" / "sf_cuda_emu.h").read_text()


def render_emu_source(spec: NetworkSpec, cu_source: str, launches, ctx_type: str = "sf_context") -> str:
    """The driver that compiles ``cu_source`` unchanged for the CPU, with a launch wrapper
    per kernel; ``ctx_type`` is the struct the kernels take a pointer to."""
    template = environment().get_template("cuda/emu_driver.cpp.j2")
    return template.render(spec=spec, cu_source=cu_source, emu_header=emu_header(), launches=launches,
                           ctx_type=ctx_type)


class CudaEmuBackend(DeviceBackend):
    name = "cuda-emu"

    def __init__(self, spec: NetworkSpec, batch_size: int, artefact, threads: int | None = None,
                 batch_offset: int = 0):
        """``artefact``: the loaded emulation library (spikeforge.runtime.backends.Artefact)."""
        super().__init__(spec, batch_size, batch_offset, artefact.sources.block_sizes)
        self.source = artefact.sources.files[f"{spec.name}.cu"]  # the .cu text, as the GPU gets it
        self.emu_source = artefact.sources.text
        self.codegen_seconds = artefact.sources.seconds
        self.lib, self.build = artefact.library, artefact.build
        L = self.lib
        L.sf_emu_launch.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        L.sf_emu_launch.restype = ctypes.c_int
        L.sf_emu_set_num_threads.argtypes = [ctypes.c_int]
        L.sf_emu_set_num_threads.restype = ctypes.c_int
        if threads is not None:
            L.sf_emu_set_num_threads(int(threads))
        self._index = {launch.name: k for k, launch in enumerate(self.launches)}
        self._memory: dict[int, np.ndarray] = {}
        self._allocate_all()

    # -- "device" memory is host memory -------------------------------------------------------
    def _alloc(self, nbytes: int) -> int:
        buf = np.zeros(max(1, int(nbytes)) + 64, dtype=np.uint8)
        addr = buf.ctypes.data
        aligned = (addr + 63) // 64 * 64  # like cudaMalloc, well aligned
        self._memory[aligned] = buf
        return aligned

    def _free(self, addr: int):
        self._memory.pop(addr, None)

    def _upload(self, addr: int, array: np.ndarray):
        array = np.ascontiguousarray(array)
        ctypes.memmove(addr, array.ctypes.data, array.nbytes)

    def _download(self, addr: int, array: np.ndarray):
        ctypes.memmove(array.ctypes.data, addr, array.nbytes)

    def _memset0(self, addr: int, nbytes: int):
        ctypes.memset(addr, 0, int(nbytes))

    def _launch(self, launch, grid, block):
        status = self.lib.sf_emu_launch(self._index[launch.name], grid[0], grid[1], block, self.ctx_ptr)
        if status != 0:
            raise RuntimeError(f"cuda-emu: unknown kernel {launch.name}")

    def _synchronise(self):
        pass

    def close(self):
        self._memory = {}
