"""The CPU backend: generated C++ (OpenMP over the batch), built into a shared library by
the system C++ compiler, state in numpy arrays the library works on in place."""

from __future__ import annotations

import ctypes
import mmap
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..codegen.ir import NetworkSpec

_NP = {"double": np.float64, "int32": np.int32, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8}

PAGE = 4096            # bytes: the span of the L1 data cache's set index on x86 and ARM cores
LINE = 64              # bytes per cache line
COLOUR_STEP = 5        # lines between the starts of consecutive arrays (odd: 64 distinct colours)


class StateArena:
    """The memory of a simulation's state arrays: one anonymous mapping, carved into arrays.

    * **Colouring.** A step walks a dozen arrays in lockstep at equal indices (v[i], refrac[i],
      x[i], in_syn[i] ...). Arrays that each start on a page boundary (as large numpy arrays do)
      put those elements at addresses equal modulo 4 KiB, which share one L1 set: more streams
      than the cache has ways evict each other every few elements. Array k starts
      ``(k * COLOUR_STEP) % 64`` lines into a page, so each stream gets its own sets.

    Arrays are numpy views on the mapping, C-contiguous, zeroed; the arena stays alive as long
    as any of them (numpy keeps the buffer's owner)."""

    def __init__(self, sizes: list[int]):
        self.offsets = []
        end = 0
        for k, nbytes in enumerate(sizes):
            colour = (k * COLOUR_STEP % (PAGE // LINE)) * LINE
            start = -(-end // PAGE) * PAGE + colour  # the next page, then this array's colour
            self.offsets.append(start)
            end = start + max(int(nbytes), 0)
        self.nbytes = -(-max(end, 1) // PAGE) * PAGE
        self.buffer = mmap.mmap(-1, self.nbytes)  # anonymous, zero-filled, page aligned
        self.bytes = np.frombuffer(self.buffer, dtype=np.uint8)

    def array(self, k: int, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        start = self.offsets[k]
        return self.bytes[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def numpy_dtype(dtype: str, precision: str):
    if dtype == "scalar":
        return np.float32 if precision == "float" else np.float64
    return _NP[dtype]


class GeneratedContext:
    """Owns the context a generated library made with ``sf_create``; frees it once."""

    def close(self):
        if getattr(self, "ctx", None):
            self.lib.sf_destroy(self.ctx)
            self.ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class CpuBackend(GeneratedContext):
    """Owns the compiled library and one simulation context."""

    name = "cpu"

    def __init__(self, spec: NetworkSpec, batch_size: int, artefact, threads: int | None = None,
                 batch_offset: int = 0):
        """``artefact``: the loaded library (spikeforge.runtime.backends.Artefact)."""
        self.spec = spec
        self.batch_size = batch_size
        self.source, self.codegen_seconds = artefact.sources.text, artefact.sources.seconds
        self.lib, self.build = artefact.library, artefact.build
        self._declare()
        if threads is not None:
            self.lib.sf_set_num_threads(int(threads))
        self.ctx = ctypes.c_void_p(self.lib.sf_create(batch_size, batch_offset, ctypes.c_uint64(spec.seed)))
        if self.lib.sf_num_arrays() != len(spec.arrays):
            raise RuntimeError("generated library does not match its spec (array count)")
        self.arrays: dict[str, np.ndarray] = {}
        dtypes = [np.dtype(numpy_dtype(a.dtype, spec.precision)) for a in spec.arrays]
        # state in a coloured arena; arrays the network gives (connectivity) are used as they are
        arena = StateArena([0 if a.data is not None else
                            int(np.prod(a.shape(batch_size), dtype=np.int64)) * dt.itemsize
                            for a, dt in zip(spec.arrays, dtypes)])
        for index, a in enumerate(spec.arrays):
            if a.data is not None:
                arr = np.ascontiguousarray(a.data, dtype=dtypes[index])
            else:
                arr = arena.array(index, a.shape(batch_size), dtypes[index])
            self._bind(index, a.name, arr)

    def _declare(self):
        L = self.lib
        vp, u64, u32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
        L.sf_create.restype = vp
        L.sf_create.argtypes = [u32, u32, u64]
        L.sf_destroy.argtypes = [vp]
        L.sf_bind.argtypes = [vp, ctypes.c_int, vp]
        L.sf_bind.restype = ctypes.c_int
        L.sf_initialise_state.argtypes = [vp]
        L.sf_run.argtypes = [vp, u64]
        L.sf_get_step.argtypes = [vp]
        L.sf_get_step.restype = u64
        L.sf_set_step.argtypes = [vp, u64]
        L.sf_spike_count.argtypes = [vp, ctypes.c_int, u32]
        L.sf_spike_count.restype = u64
        L.sf_spike_copy.argtypes = [vp, ctypes.c_int, u32, vp]
        L.sf_spike_clear.argtypes = [vp]
        L.sf_set_var_recording.argtypes = [vp, ctypes.c_int, vp, u64]
        L.sf_var_recorded.argtypes = [vp]
        L.sf_var_recorded.restype = u64
        L.sf_set_num_threads.argtypes = [ctypes.c_int]
        L.sf_set_num_threads.restype = ctypes.c_int
        L.sf_custom_update.argtypes = [vp, ctypes.c_int]
        L.sf_custom_update.restype = ctypes.c_int

    def _bind(self, index: int, name: str, arr: np.ndarray):
        self.arrays[name] = arr
        if self.lib.sf_bind(self.ctx, index, arr.ctypes.data) != 0:
            raise RuntimeError(f"cannot bind array {name}")

    # -- the backend interface -------------------------------------------------------------
    def initialise(self):
        self.lib.sf_initialise_state(self.ctx)
        self.lib.sf_spike_clear(self.ctx)

    def run(self, n_steps: int):
        self.lib.sf_run(self.ctx, int(n_steps))

    def custom_update(self, index: int):
        """Run custom update ``index`` of the spec (outside the step loop)."""
        if self.lib.sf_custom_update(self.ctx, int(index)) != 0:
            raise RuntimeError(f"the generated library has no custom update {index}")

    @property
    def step(self) -> int:
        return int(self.lib.sf_get_step(self.ctx))

    @step.setter
    def step(self, value: int):
        self.lib.sf_set_step(self.ctx, int(value))

    def pull(self, name: str) -> np.ndarray:
        return self.arrays[name].copy()

    def peek(self, name: str) -> np.ndarray:
        """The array itself, not a copy: to read between runs without copying."""
        return self.arrays[name]

    def push(self, name: str, values: np.ndarray):
        self.arrays[name][...] = values

    def replace(self, name: str, values: np.ndarray):
        """Give an array a new size (spike source times)."""
        index = [a.name for a in self.spec.arrays].index(name)
        self._bind(index, name, np.ascontiguousarray(values))

    def spikes(self, rec_index: int, b: int) -> np.ndarray:
        n = int(self.lib.sf_spike_count(self.ctx, rec_index, b))
        out = np.empty(2 * n, dtype=np.uint32)
        if n:
            self.lib.sf_spike_copy(self.ctx, rec_index, b, out.ctypes.data)
        return out.reshape(n, 2)

    def clear_spikes(self):
        self.lib.sf_spike_clear(self.ctx)

    def set_var_recording(self, buffers: list[np.ndarray | None], capacity: int):
        self._var_buffers = buffers  # keep alive while the library writes into them
        for k, buf in enumerate(buffers):
            self.lib.sf_set_var_recording(self.ctx, k, None if buf is None else buf.ctypes.data, capacity)

    def var_recorded(self) -> int:
        return int(self.lib.sf_var_recorded(self.ctx))

