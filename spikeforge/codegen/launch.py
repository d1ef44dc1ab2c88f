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
    # a training compiler's kernels (see spikeforge.training.compiler)
    "eprop_error": 32,  # one thread per batch instance does the few outputs' loss
    "eprop_readout_gradient": 128,  # one thread per hidden neuron
    "eprop_learning_signal": 128,  # one thread per hidden neuron
    "eprop_eligibility": 256,  # one thread per synapse (and per presynaptic neuron first)
    "optimiser_step": 256,  # a custom update: one thread per trainable element
    # the time-parallel method's kernels (see spikeforge.training.parallel_cuda)
    "parallel_input": 128,  # one warp per (instance, step, 32 neurons)
    "parallel_forward": 128,  # per (instance, chunk, neuron), (instance, step, neuron) or (instance, neuron)
    "parallel_adjoint": 128,
    "parallel_error": 32,  # one warp per batch instance
    "parallel_gradient": 128,  # one warp per (instance, pre, 32 post)
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
    phase: str = "step"  # "init", "step" or "custom" (run when the runtime asks, outside the steps)
    grid_x_per_batch: bool = False  # grid_x is ceil(batch / block) (sf_begin_step)


def _ceil(a: int, b: int) -> int:
    return max(1, -(-a // b))


def kernel_rows(k: KernelSpec) -> int:
    """Threads a kernel needs per batch instance (before rounding up to whole blocks)."""
    info = k.info
    if k.template in ("eprop_step", "custom_update"):  # one thread per element of the loop, or one in all
        return int(info["loop"]["count"]) if info.get("loop") else 1
    if k.kind == "eprop_eligibility":  # one thread per synapse
        return int(info["n_syn"])
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
    if k.template == "custom_update":  # once over the whole array, the batch summed inside
        # (info["barriers"]: the code uses barriers or warp collectives)
        return Launch(k.name, grid, block, False, bool(k.info.get("barriers")), "custom")
    barriers = k.kind == "neuron_update" and bool(k.info["spike_condition"])
    return Launch(k.name, grid, block, True, barriers)


def presynaptic_launch(k: KernelSpec, main: Launch) -> Launch | None:
    """The first launch of an e-prop eligibility kernel with components kept per presynaptic
    neuron: one thread per presynaptic neuron updates them before the synapses read them."""
    if k.kind != "eprop_eligibility" or not k.info["per_presynaptic"]:
        return None
    return Launch(f"{k.name}_presynaptic", _ceil(int(k.info["n_pre"]), main.block), main.block, True, False)


def kernel_launches(k: KernelSpec, block_sizes: dict | None = None) -> list[Launch]:
    """The launches of one kernel spec, in order (most have one)."""
    main = kernel_launch(k, block_sizes)
    first = presynaptic_launch(k, main)
    return [first, main] if first else [main]


def plan(spec: NetworkSpec, block_sizes: dict | None = None) -> list[Launch]:
    """Every launch: the initialisation kernels, one step's kernels in order, then the
    custom updates (phase "custom", each launched on its own)."""
    out = [Launch(f"init_{a.name}", _ceil(a.size, 256), 256, a.batched, False, "init")
           for a in spec.arrays if a.init is not None]
    out.append(Launch("sf_begin_step", 1, 64, False, False, grid_x_per_batch=True))
    out += [launch for k in spec.kernels for launch in kernel_launches(k, block_sizes)]
    out.append(Launch("sf_end_step", 1, RECORD_BLOCK, False, True))
    out += [kernel_launch(k, block_sizes) for k in spec.custom_updates]
    return out
