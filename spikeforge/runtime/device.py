"""Host logic shared by the two runtimes of the generated CUDA kernels.

``cuda`` (pycuda on a GPU) and ``cuda-emu`` (the same kernels compiled by g++ against
``sf_cuda_emu.h``) differ only in how memory is allocated and copied and how a kernel
is launched; everything else (the context struct, the launch plan, chunked recording)
is here, so every CI run of ``cuda-emu`` also exercises the host side of ``cuda``.
"""

from __future__ import annotations

import numpy as np

from ..codegen.ir import NetworkSpec
from ..codegen.launch import Launch, plan
from ..recording import rows_between
from .cpu import numpy_dtype

#: Words of the context header, before the array pointers (see templates/cuda/model.cu.j2).
HEADER = ("seed", "step", "batch_size", "batch_offset", "rec_first_step", "rec_capacity")
#: Steps recorded on the device between two pulls of the recording buffers.
RECORD_CHUNK = 1000


def decode_spike_bits(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, instance, neuron) of every set bit of a (steps, batch, words) uint32 spike
    bitmask (bit k of word w: neuron 32 w + k), in (step, instance, neuron) order. Only the
    non-zero words are unpacked, so the cost follows the spikes, not steps x neurons."""
    s, b, w = np.nonzero(bits)
    flags = np.unpackbits(bits[s, b, w].view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
    k, bit = np.nonzero(flags)
    return s[k], b[k], w[k] * 32 + bit


def var_chunk_rows(r: dict, chunk: int) -> int:
    """Rows the device buffer of recording ``r`` needs for ``chunk`` steps."""
    return -(-chunk // r["every"])


class DeviceBackend:
    """Base of the ``cuda`` and ``cuda-emu`` backends.

    Subclasses provide ``_alloc(nbytes) -> int`` (a device address), ``_free(addr)``,
    ``_upload(addr, array)``, ``_download(addr, array)``, ``_memset0(addr, nbytes)``,
    ``_launch(launch, grid, block)`` and ``_synchronise()``.
    """

    name = "device"
    #: Chunks of a run (Simulation.run) are kept multiples of this many steps.
    step_granularity = 1

    def __init__(self, spec: NetworkSpec, batch_size: int, batch_offset: int = 0, block_sizes=None):
        self.spec = spec
        self.batch_size = batch_size
        self.batch_offset = batch_offset
        self._set_launches(block_sizes)
        self._step = 0
        self.recorded_pops = [p for p in spec.populations if p["record_spikes"]]
        self._spike_lists = {p["name"]: [[] for _ in range(batch_size)] for p in self.recorded_pops}
        self._var_buffers: list[np.ndarray | None] = []
        self._var_capacity = 0
        self._var_count = 0
        self._rec_first = 0
        self._spike_keep = {}  # population -> which neurons' spikes are kept (a subset recorded)
        for p in self.recorded_pops:
            if p.get("spike_rec_neurons") is not None:
                keep = np.zeros(p["size"], dtype=bool)
                keep[p["spike_rec_neurons"]] = True
                self._spike_keep[p["name"]] = keep

    def _set_launches(self, block_sizes):
        self.launches = plan(self.spec, block_sizes)
        self.step_launches = [launch for launch in self.launches if launch.phase == "step"]
        self.init_launches = [launch for launch in self.launches if launch.phase == "init"]
        #: The spec's custom updates (e.g. a training compiler's optimiser steps), by index.
        self.custom_launches = [launch for launch in self.launches if launch.phase == "custom"]

    # -- memory ------------------------------------------------------------------------
    def buffer_bytes(self) -> int:
        """Device bytes besides the model state: the recording buffers and the context."""
        from .memory import device_buffer_bytes

        return device_buffer_bytes(self.spec, self.batch_size)

    def _allocate_all(self):
        self.ptr: dict[str, int] = {}
        self.host_shape: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for a in self.spec.arrays:
            shape = a.data.shape if a.data is not None else a.shape(self.batch_size)
            dtype = np.dtype(numpy_dtype(a.dtype, self.spec.precision))
            self.host_shape[a.name] = shape
            self.dtypes[a.name] = dtype
            self.ptr[a.name] = self._alloc(max(1, int(np.prod(shape))) * dtype.itemsize)
        self.chunk = RECORD_CHUNK
        self.rec_ptr: dict[str, int] = {}
        for p in self.recorded_pops:
            words = (p["size"] + 31) // 32
            self.rec_ptr[p["name"]] = self._alloc(self.chunk * self.batch_size * words * 4)
        self.var_rec_ptr = [self._alloc(var_chunk_rows(r, self.chunk) * self._var_elements(r) * self._scalar.itemsize)
                            for r in self.spec.recorded_vars]
        n_words = len(HEADER) + len(self.spec.arrays) + len(self.recorded_pops) + len(self.spec.recorded_vars)
        self.ctx_host = np.zeros(n_words, dtype=np.uint64)
        self.ctx_ptr = self._alloc(self.ctx_host.nbytes)
        self._fill_context()

    @property
    def _scalar(self) -> np.dtype:
        return np.dtype(np.float32 if self.spec.precision == "float" else np.float64)

    def _var_elements(self, r) -> int:
        """Values of one recorded step: recorded elements, times the batch if batched."""
        return (self.batch_size if r["batched"] else 1) * r["n"]

    def _fill_context(self):
        c = self.ctx_host
        c[0], c[1] = self.spec.seed, self._step
        c[2], c[3] = self.batch_size, self.batch_offset
        c[4], c[5] = self._step, 0
        k = len(HEADER)
        for a in self.spec.arrays:
            c[k] = self.ptr[a.name]
            k += 1
        for p in self.recorded_pops:
            c[k] = self.rec_ptr[p["name"]]
            k += 1
        for addr in self.var_rec_ptr:
            c[k] = addr
            k += 1
        self._upload(self.ctx_ptr, c)

    def _set_header(self, **fields):
        self.ctx_host[1] = self._step
        for name, value in fields.items():
            self.ctx_host[HEADER.index(name)] = value
        self._upload(self.ctx_ptr, self.ctx_host[: len(HEADER)])

    # -- the backend interface ------------------------------------------------------------
    def initialise(self):
        """The arrays with an initialiser back to their initial values (the rest, e.g. an
        optimiser's moments or values pushed since, keep theirs, as on the cpu backend); the
        first call also loads every array's data or zeros."""
        if not getattr(self, "_state_loaded", False):
            for a in self.spec.arrays:
                n = max(1, int(np.prod(self.host_shape[a.name]))) * self.dtypes[a.name].itemsize
                if a.data is not None:
                    self._upload(self.ptr[a.name], np.ascontiguousarray(a.data, dtype=self.dtypes[a.name]))
                else:
                    self._memset0(self.ptr[a.name], n)
            self._state_loaded = True
        self._step = 0
        self._set_header(step=0, rec_first_step=0, rec_capacity=0)
        for launch in self.init_launches:
            self._launch(launch, (launch.grid_x, self.batch_size if launch.batched else 1), launch.block)
        self._synchronise()
        self.clear_spikes()

    def _grid(self, launch: Launch) -> tuple[int, int]:
        if launch.grid_x_per_batch:
            return (max(1, -(-self.batch_size // launch.block)), 1)
        return (launch.grid_x, self.batch_size if launch.batched else 1)

    def run(self, n_steps: int):
        done = 0
        while done < n_steps:
            chunk = min(self.chunk, n_steps - done)
            recording = bool(self.recorded_pops) or self._var_capacity > self._var_count
            if recording:
                for p in self.recorded_pops:
                    words = (p["size"] + 31) // 32
                    self._memset0(self.rec_ptr[p["name"]], chunk * self.batch_size * words * 4)
                self._set_header(rec_first_step=self._step, rec_capacity=chunk)
            self._run_steps(chunk)
            self._synchronise()
            if recording:
                self._pull_recordings(chunk)
            self._step += chunk
            done += chunk

    def _run_steps(self, n: int):
        """Launch ``n`` steps (subclasses may replay a captured graph instead)."""
        grids = [(launch, self._grid(launch)) for launch in self.step_launches]
        for _ in range(n):
            for launch, grid in grids:
                self._launch(launch, grid, launch.block)

    def custom_update(self, index: int):
        """Run custom update ``index`` of the spec (outside the step loop) and wait for it."""
        if not 0 <= int(index) < len(self.custom_launches):
            raise RuntimeError(f"the generated kernels have no custom update {index}")
        launch = self.custom_launches[int(index)]
        self._launch(launch, self._grid(launch), launch.block)
        self._synchronise()

    def _pull_recordings(self, chunk: int):
        for p in self.recorded_pops:
            words = (p["size"] + 31) // 32
            bits = np.zeros((chunk, self.batch_size, words), dtype=np.uint32)
            self._download(self.rec_ptr[p["name"]], bits)
            steps, batch, ids = decode_spike_bits(bits)
            keep = self._spike_keep.get(p["name"])
            if keep is not None:
                chosen = keep[ids]
                steps, batch, ids = steps[chosen], batch[chosen], ids[chosen]
            lists = self._spike_lists[p["name"]]
            order = np.argsort(batch, kind="stable")  # per instance, still in (step, id) order
            bounds = np.searchsorted(batch[order], np.arange(self.batch_size + 1))
            for b in np.nonzero(np.diff(bounds))[0]:
                sel = order[bounds[b]: bounds[b + 1]]
                lists[b].append(np.stack([steps[sel] + self._step, ids[sel]], axis=1).astype(np.uint32))
        room = self._var_capacity - self._var_count
        n = min(chunk, room)
        for k, r in enumerate(self.spec.recorded_vars):
            buf = self._var_buffers[k] if k < len(self._var_buffers) else None
            if buf is None or room <= 0:
                continue
            every = r["every"]
            rows = rows_between(self._step, self._step + n, every)  # recorded steps of this chunk kept
            if not rows:
                continue
            tmp = np.zeros((rows_between(self._step, self._step + chunk, every), self._var_elements(r)),
                           dtype=self._scalar)
            self._download(self.var_rec_ptr[k], tmp)
            offset = rows_between(self._rec_first, self._step, every)
            buf.reshape(buf.shape[0], -1)[offset: offset + rows] = tmp[:rows]
        if self.spec.recorded_vars and self._var_buffers:
            self._var_count = min(self._var_capacity, self._var_count + chunk)

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value: int):
        self._step = int(value)
        self._set_header(step=self._step)

    def pull(self, name: str) -> np.ndarray:
        out = np.zeros(self.host_shape[name], dtype=self.dtypes[name])
        self._download(self.ptr[name], out)
        return out

    peek = pull  # reading device memory always copies

    def push(self, name: str, values):
        arr = np.ascontiguousarray(np.broadcast_to(values, self.host_shape[name]), dtype=self.dtypes[name])
        self._upload(self.ptr[name], arr)

    def replace(self, name: str, values: np.ndarray):
        values = np.ascontiguousarray(values, dtype=self.dtypes[name])
        self._free(self.ptr[name])
        self.ptr[name] = self._alloc(max(1, values.size) * values.itemsize)
        self.host_shape[name] = values.shape
        self._upload(self.ptr[name], values)
        self._fill_context()

    def spikes(self, rec_index: int, b: int) -> np.ndarray:
        chunks = self._spike_lists[self.recorded_pops[rec_index]["name"]][b]
        if not chunks:
            return np.zeros((0, 2), dtype=np.uint32)
        return np.concatenate(chunks, axis=0)

    def clear_spikes(self):
        for lists in self._spike_lists.values():
            for b in range(self.batch_size):
                lists[b] = []

    def set_var_recording(self, buffers, capacity: int):
        """Record the next ``capacity`` steps into ``buffers`` (one per spec.recorded_vars entry,
        of as many rows as that recording keeps in those steps)."""
        self._var_buffers = list(buffers)
        self._var_capacity = capacity
        self._var_count = 0
        self._rec_first = self._step

    def var_recorded(self) -> int:
        return self._var_count
