"""The e-prop training kernels on the CUDA backends: ``cuda-emu`` (the generated ``.cu``
compiled against the emulation header and run on the CPU) and ``cuda`` (pycuda).

Same interface as :class:`~spikeforge.training.runtime.EpropRuntime`; state lives in
"device" memory, one step is a fixed sequence of kernel launches (see the header of the
generated ``.cu``), and the step counter lives in device memory.
"""

from __future__ import annotations

import ctypes
import math
import socket
from types import SimpleNamespace

import numpy as np

from ..codegen.launch import Launch
from ..errors import BackendUnavailableError, NetworkError
from ..runtime import memory
from ..runtime.backends import get_backend
from .codegen import generate_training_kernel, per_neuron_names
from .model import EpropConfig
from .runtime import GRADS, WEIGHTS, check_batch, initial_weights

HEADER = ("step", "batch_size", "n_steps", "adam_t", "mean", "clamp", "reduced",  # uint64
          "lr", "beta1", "beta2", "eps", "lo", "hi", "gscale")                     # double
HEADER_WORDS = len(HEADER)
_FIRST_DOUBLE = HEADER.index("lr")
_SUMS = {"w_in": "gsum_in", "w_rec": "gsum_rec", "w_out": "gsum_out", "b_out": "gsum_b"}


def _plan(cfg: EpropConfig, readout_block: int) -> tuple[list[Launch], list[Launch], list[Launch], list[Launch]]:
    """Launches of one training step, of one evaluation step (forward pass only), the Adam
    launches and the batch-sum launches (one per weight, in WEIGHTS order)."""
    n_h, n_in, k = cfg.n_hidden, cfg.n_inputs, cfg.n_outputs

    def blocks(n, b=128):
        return max(1, math.ceil(n / b))

    step = [Launch("eprop_shift", blocks(n_h), 128, True, False),
            Launch("eprop_neurons", blocks(n_h), 128, True, False),
            Launch("eprop_readout", 1, readout_block, True, True),
            Launch("eprop_signal", blocks(n_h), 128, True, False)]
    for src, n_src in (("in", n_in), ("rec", n_h)) if cfg.recurrent else (("in", n_in),):
        step += [Launch(f"eprop_pre_{src}", blocks(n_src), 128, True, False),
                 Launch(f"eprop_syn_{src}", blocks(n_h * n_src), 128, True, False)]
    step.append(Launch("eprop_end_step", 1, 32, False, False))
    forward = [launch for launch in step
               if launch.name in ("eprop_shift", "eprop_neurons", "eprop_readout", "eprop_end_step")]
    sizes = {"w_in": n_h * n_in, "w_rec": n_h * n_h, "w_out": k * n_h, "b_out": k}
    adam = [Launch(f"eprop_adam_{w}", blocks(sizes[w], 256), 256, False, False) for w in WEIGHTS]
    sums = [Launch(f"eprop_sum_{w}", blocks(sizes[w], 256), 256, False, False) for w in WEIGHTS]
    return step, forward, adam, sums


class _EmuDevice:
    """cuda-emu: 'device memory' is host memory, kernels run through the emulation header."""

    def __init__(self, cfg, source, launches, threads):
        from ..runtime.build import build_and_load
        from ..runtime.cuda_emu import render_emu_source

        emu = render_emu_source(SimpleNamespace(name=cfg.name), source, launches, ctx_type="sf_eprop")
        self.lib, self.build = build_and_load(emu, name=f"{cfg.name}_eprop_emu",
                                              describe=f"e-prop kernels of '{cfg.name}' (cuda-emu)")
        self.lib.sf_emu_launch.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                           ctypes.c_void_p]
        self.lib.sf_emu_launch.restype = ctypes.c_int
        self.lib.sf_emu_set_num_threads.argtypes = [ctypes.c_int]
        if threads is not None:
            self.lib.sf_emu_set_num_threads(int(threads))
        self.index = {launch.name: i for i, launch in enumerate(launches)}
        self.memory: dict[int, np.ndarray] = {}

    def alloc(self, nbytes):
        buf = np.zeros(max(1, int(nbytes)) + 64, dtype=np.uint8)
        addr = (buf.ctypes.data + 63) // 64 * 64
        self.memory[addr] = buf
        return addr

    def free(self, addr):
        self.memory.pop(addr, None)

    def upload(self, addr, array):
        array = np.ascontiguousarray(array)
        ctypes.memmove(addr, array.ctypes.data, array.nbytes)

    def download(self, addr, array):
        ctypes.memmove(array.ctypes.data, addr, array.nbytes)

    def memset0(self, addr, nbytes):
        ctypes.memset(addr, 0, int(nbytes))

    def launch(self, launch, grid, ctx):
        if self.lib.sf_emu_launch(self.index[launch.name], grid[0], grid[1], launch.block, ctx) != 0:
            raise RuntimeError(f"cuda-emu: unknown kernel {launch.name}")

    def synchronise(self):
        pass


class _CudaDevice:
    """cuda: pycuda on a GPU."""

    def __init__(self, cfg, source, launches, threads, device=0):
        from ..runtime.cuda import import_pycuda

        drv = import_pycuda()
        self.drv = drv
        device = device % drv.Device.count()  # one rank per GPU, by local rank
        self.context = drv.Device(device).retain_primary_context()
        self.context.push()
        self.allocs = {}
        try:
            self._setup(cfg, source, launches, device)
        except BaseException:
            self.close()
            raise

    def _setup(self, cfg, source, launches, device):
        from ..runtime.nvcc import build_cubin

        drv = self.drv
        self.name = cfg.name
        major, minor = drv.Device(device).compute_capability()
        self.identity = (socket.gethostname(), drv.Device(device).pci_bus_id())
        self.build = build_cubin(source, f"sm_{major}{minor}", name=f"{cfg.name}_eprop",
                                 describe=f"e-prop kernels of '{cfg.name}'")
        module = drv.module_from_buffer(self.build.path.read_bytes())
        self.functions = {}
        for launch in launches:
            fn = module.get_function(launch.name)
            fn.prepare("P")
            self.functions[launch.name] = fn
        self.stream = drv.Stream()
        self._done = drv.Event(drv.event_flags.BLOCKING_SYNC | drv.event_flags.DISABLE_TIMING)

    def alloc(self, nbytes):
        mem = self.drv.mem_alloc(max(1, int(nbytes)))
        self.allocs[int(mem)] = mem
        return int(mem)

    def free(self, addr):
        mem = self.allocs.pop(addr, None)
        if mem is not None:
            mem.free()

    def upload(self, addr, array):
        self.drv.memcpy_htod(addr, np.ascontiguousarray(array))

    def download(self, addr, array):
        self.drv.memcpy_dtoh(array, addr)

    def memset0(self, addr, nbytes):
        self.drv.memset_d8(addr, 0, int(nbytes))

    def launch(self, launch, grid, ctx):
        self.functions[launch.name].prepared_async_call(grid, (launch.block, 1, 1), self.stream, ctx)

    def synchronise(self):
        self._done.record(self.stream)
        self._done.synchronize()  # blocks the host thread instead of spinning

    def free_memory(self) -> tuple[int, int, str]:
        """(free bytes, total bytes, name) of the GPU."""
        free, total = self.drv.mem_get_info()
        return free, total, self.drv.Context.get_device().name()

    def close(self):
        for addr in list(self.allocs):
            self.free(addr)
        if getattr(self, "context", None) is not None:
            self.context.pop()
            self.context = None


class DeviceEpropRuntime:
    def __init__(self, cfg: EpropConfig, backend: str = "cuda-emu", seed: int = 0, threads: int | None = None,
                 init_scale: float = 1.0, device: int = 0):
        chosen = get_backend(backend)
        if not chosen.device:
            raise BackendUnavailableError(f"the e-prop device runtime runs on a device backend, not {backend!r}")
        self.cfg = cfg
        self.kernel = generate_training_kernel(cfg, chosen.target)
        self.source = self.kernel.source
        if not chosen.gpu:  # its "device" memory is host memory
            memory.check_eprop(cfg, self.kernel.layout)
        readout_block = max(32, 1 << (cfg.n_outputs - 1).bit_length())
        self.step_launches, self.forward_launches, self.adam_launches, self.sum_launches = _plan(cfg, readout_block)
        launches = self.step_launches + self.adam_launches + self.sum_launches
        self.device = (_CudaDevice(cfg, self.source, launches, threads, device) if chosen.gpu
                       else _EmuDevice(cfg, self.source, launches, threads))
        self.build = self.device.build
        if chosen.gpu:
            self._check_memory()
        self.dtype = np.float32 if cfg.precision == "float" else np.float64
        self.layout = self.kernel.layout
        self.ptr: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        self._shape = (0, 0)
        self.ctx_host = np.zeros(HEADER_WORDS + len(self.layout), dtype=np.uint64)
        self.ctx = self.device.alloc(self.ctx_host.nbytes)
        weights, self.feedback = initial_weights(cfg, seed, init_scale, self.dtype)
        for name, _, shape in self.layout:
            if "T" not in shape and "B" not in shape:
                self._allocate(name, shape)
        self.set_weights(weights)
        self.set_feedback(self.feedback)
        for name in per_neuron_names(cfg):  # per-neuron parameters: values in arrays, not in the source
            self._push(f"p_{name}", cfg.per_neuron_params[name])

    # -- memory ------------------------------------------------------------------------------
    def _check_memory(self, T=None, B=None, freed=0):
        """MemoryLimitError unless the weights (no T, B) or a batch's arrays fit: in GPU
        memory on ``cuda``, in host memory on ``cuda-emu``."""
        gpu = getattr(self.device, "free_memory", None)
        if gpu is None:
            memory.check_eprop(self.cfg, self.kernel.layout, T, B, freed=freed)
            return
        free, total, name = gpu()
        memory.check_eprop(self.cfg, self.kernel.layout, T, B, freed=freed, available=free,
                           source=f"free on {name}, of {memory.format_bytes(total)}", of="GPU memory")

    def _dtype(self, name):
        return np.int32 if name == "labels" else np.float64 if name.startswith("gsum_") else self.dtype

    def _nbytes(self, name, shape=None):
        """Bytes of array ``name`` at ``shape`` (default: its allocated shape)."""
        return int(np.prod(self.shapes[name] if shape is None else shape)) * np.dtype(self._dtype(name)).itemsize

    def _allocate(self, name, shape):
        if name in self.ptr:
            self.device.free(self.ptr[name])
        nbytes = self._nbytes(name, shape)
        self.ptr[name] = self.device.alloc(nbytes)
        self.shapes[name] = tuple(shape)
        self.device.memset0(self.ptr[name], nbytes)
        self.ctx_host[HEADER_WORDS + [n for n, _, _ in self.layout].index(name)] = self.ptr[name]

    def _pull(self, name):
        out = np.zeros(self.shapes[name], dtype=self._dtype(name))
        self.device.download(self.ptr[name], out)
        return out

    def _push(self, name, values):
        self.device.upload(self.ptr[name], np.ascontiguousarray(values, dtype=self._dtype(name)))

    def _header(self, **fields):
        doubles = self.ctx_host[:HEADER_WORDS].view(np.float64)
        for k, v in fields.items():
            i = HEADER.index(k)
            if i >= _FIRST_DOUBLE:
                doubles[i] = v
            else:
                self.ctx_host[i] = v
        self.device.upload(self.ctx, self.ctx_host)

    def _size_batch(self, T, B):
        if self._shape == (T, B):
            return
        per_batch = [(n, tuple(T if d == "T" else B if d == "B" else d for d in shape))
                     for n, _, shape in self.layout if "T" in shape or "B" in shape]
        # check before allocating (what the old size held is freed first)
        self._check_memory(T, B, freed=sum(self._nbytes(n) for n, _ in per_batch if n in self.shapes))
        for name, shape in per_batch:
            self._allocate(name, shape)
        self._shape = (T, B)

    # -- the runtime interface ------------------------------------------------------------------
    def set_weights(self, weights: dict):
        from .runtime import EpropRuntime

        current = self.get_weights() if all(w in self.ptr for w in WEIGHTS) and hasattr(self, "_ready") else None
        merged = dict(current or {})
        merged.update({k: np.asarray(v) for k, v in weights.items()})
        EpropRuntime._check_weights(self.cfg, merged)
        w_rec = np.array(merged["w_rec"], dtype=self.dtype)
        np.fill_diagonal(w_rec, 0.0)
        merged["w_rec"] = w_rec
        for name, value in merged.items():
            self._push(name, value)
        self._ready = True

    def set_feedback(self, feedback):
        self.feedback = np.asarray(feedback, dtype=self.dtype)
        self._push("feedback", self.feedback)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {w: self._pull(w) for w in WEIGHTS}

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self.get_weights()

    def weight_shape(self, name: str) -> tuple:
        return self.shapes[name]

    def set_gradient(self, name: str, gradient: np.ndarray):
        """Set the reduced (all-reduced) gradient of weight ``name`` for :meth:`apply_reduced`."""
        self._push(_SUMS[name], np.asarray(gradient, dtype=np.float64).reshape(self.shapes[_SUMS[name]]))

    def _sum_launch(self):
        """Sum each weight's per-instance gradients of the last batch over the batch, on the device."""
        self._header(batch_size=self._shape[1])
        for launch in self.sum_launches:
            self.device.launch(launch, (launch.grid_x, 1), self.ctx)
        self.device.synchronise()

    def gradient_sums(self) -> dict[str, np.ndarray]:
        """float64 gradients of the last batch, summed over its instances (on the device; only
        the sums cross to the host)."""
        self._sum_launch()
        return {w: self._pull(s) for w, s in _SUMS.items()}

    def device_gradient_sums(self, zero: bool = False) -> list[tuple[int, int]]:
        """Like :meth:`gradient_sums` but the sums stay on the device: ``(address, count)`` of
        each float64 buffer (WEIGHTS order), for an all-reduce in place (NCCL). ``zero``: a rank
        without samples in this batch contributes zeros."""
        if zero:
            for s in _SUMS.values():
                self.device.memset0(self.ptr[s], self._nbytes(s))
        else:
            self._sum_launch()
        return [(self.ptr[s], int(np.prod(self.shapes[s]))) for s in _SUMS.values()]

    def moments(self) -> dict[str, np.ndarray]:
        return {f"{k}_{w}": self._pull(f"{k}_{w}") for w in WEIGHTS for k in ("m", "v")}

    def set_moments(self, moments: dict):
        for name, value in moments.items():
            self._push(name, value)

    def run_batch(self, x, mask, labels=None, targets=None, *, learn: bool = True, grads: bool = True) -> dict:
        """See :meth:`EpropRuntime.run_batch`."""
        x, mask, labels, targets = check_batch(self.cfg, x, mask, labels, targets, self.dtype)
        T, B = x.shape[:2]
        self._size_batch(T, B)
        for name, _, shape in self.layout:  # fresh trial state and zero gradients
            if ("B" in shape or "T" in shape) and name not in ("x", "mask", "labels", "targets"):
                self.device.memset0(self.ptr[name], self._nbytes(name))
        self._push("x", x)
        self._push("mask", mask)
        if self.cfg.loss == "xent":
            self._push("labels", labels)
        else:
            self._push("targets", targets)
        self._header(step=0, batch_size=B, n_steps=T)
        launches = self.step_launches if learn else self.forward_launches
        grids = [(launch, (launch.grid_x, B if launch.batched else 1)) for launch in launches]
        for _ in range(T):
            for launch, grid in grids:
                self.device.launch(launch, grid, self.ctx)
        self.device.synchronise()
        out = {"y": self._pull("y"), "loss": self._pull("loss"), "hidden_spikes": self._pull("hidden_spikes")}
        if learn and grads:
            out["grads"] = {w: self._pull(g) for w, g in GRADS.items()}
        return out

    def apply_gradients(self, index, batch, mean, lr, beta1, beta2, eps, t, clamp):
        """Reduce weight ``index``'s gradients over the batch and take one Adam step."""
        if not 1 <= batch <= self._shape[1]:
            raise NetworkError(f"apply_gradients: batch {batch} but the last batch had {self._shape[1]} instances")
        self._adam(index, lr, beta1, beta2, eps, t, clamp, batch_size=batch, mean=int(mean), reduced=0, gscale=1.0)

    def apply_reduced(self, index, scale, lr, beta1, beta2, eps, t, clamp):
        """One Adam step of weight ``index`` from its all-reduced gradient sum times ``scale``."""
        self._adam(index, lr, beta1, beta2, eps, t, clamp, batch_size=1, mean=0, reduced=1, gscale=float(scale))

    def _adam(self, index, lr, beta1, beta2, eps, t, clamp, **fields):
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        self._header(adam_t=t, clamp=int(clamp is not None), lr=lr, beta1=beta1, beta2=beta2, eps=eps, lo=lo, hi=hi,
                     **fields)
        launch = self.adam_launches[index]
        self.device.launch(launch, (launch.grid_x, 1), self.ctx)
        self.device.synchronise()

    def device_identity(self) -> tuple:
        """(host, PCI bus id) of the GPU this runtime uses; (host, "emu") on cuda-emu."""
        return getattr(self.device, "identity", (socket.gethostname(), "emu"))

    def close(self):
        """Free the device memory (and, on a GPU, release the context)."""
        device = getattr(self, "device", None)
        if device is not None and hasattr(device, "close"):
            device.close()
        self.device = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
