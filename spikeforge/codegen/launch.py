"""Launch shapes of the CUDA kernels: grid, block, batch axis, barriers.

Used both to render the kernels (block sizes are compile-time constants there: shared
arrays and ``__launch_bounds__``) and by the runtimes that launch them (``cuda`` through
pycuda, ``cuda-emu`` through the emulation wrappers), so the two always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetworkError
from .ir import KernelSpec, NetworkSpec

#: Default threads per block by kernel kind; 128 keeps several blocks resident per SM
#: for register-heavy neuron models, 256 suits the simple reduction and init kernels.
DEFAULT_BLOCK = {
    "neuron_update": 128,
    "presynaptic_update": 128,
    "postsynaptic_learning": 128,
    "synapse_dynamics": 128,
    "batch_reduction": 256,
}
RECORD_BLOCK = 256


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``grid_x`` blocks (times the batch size on y if ``batched``)."""

    name: str
    grid_x: int
    block: int
    batched: bool
    barriers: bool
    phase: str = "step"  # "init" or "step"
    grid_x_per_batch: bool = False  # grid_x is ceil(batch / block) (sf_begin_step)


def _ceil(a: int, b: int) -> int:
    return max(1, -(-a // b))


def kernel_rows(k: KernelSpec) -> int:
    """Threads a kernel needs per batch instance (before rounding up to whole blocks)."""
    info = k.info
    if k.kind in ("neuron_update", "batch_reduction"):
        return int(info["size"])
    if k.kind == "synapse_dynamics":  # one thread per postsynaptic neuron
        return int(info["n_post"])
    if info["connectivity"] == "dense":
        return int(info["n_post"] if info["which"] == "on_pre" else info["n_pre"])
    # sparse: one thread per possible spike of the source population
    return int(info["n_pre"] if info["which"] == "on_pre" else info["n_post"])


def kernel_launch(k: KernelSpec, block_sizes: dict | None = None) -> Launch:
    block_sizes = block_sizes or {}
    block = int(block_sizes.get(k.name, block_sizes.get(k.kind, DEFAULT_BLOCK[k.kind])))
    if block < 32 or block > 1024 or block % 32:
        raise NetworkError(f"block size for {k.name} must be a multiple of 32 in [32, 1024], got {block}")
    grid = _ceil(kernel_rows(k), block)
    if k.kind == "batch_reduction":
        return Launch(k.name, grid, block, False, False)
    barriers = k.kind == "neuron_update" and bool(k.info["spike_condition"])
    return Launch(k.name, grid, block, True, barriers)


def plan(spec: NetworkSpec, block_sizes: dict | None = None) -> list[Launch]:
    """Every launch: the initialisation kernels, then one step's kernels in order."""
    out = [Launch(f"init_{a.name}", _ceil(a.size, 256), 256, a.batched, False, "init")
           for a in spec.arrays if a.init is not None]
    out.append(Launch("sf_begin_step", 1, 64, False, False, grid_x_per_batch=True))
    out += [kernel_launch(k, block_sizes) for k in spec.kernels]
    out.append(Launch("sf_end_step", 1, RECORD_BLOCK, False, True))
    return out
