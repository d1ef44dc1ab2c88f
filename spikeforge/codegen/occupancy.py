"""Occupancy-based block sizes for the CUDA kernels.

The theoretical occupancy of a kernel (resident warps per multiprocessor over the most it
can hold) follows from its registers per thread and shared memory per block, which
``ptxas -v`` reports when the kernels are compiled, and from the limits of the target
architecture. For each kernel the block size is the candidate with the highest
occupancy; a candidate larger than the kernel's rows (neurons, or pre/post elements) only
launches idle warps and is not considered; ties keep the default. Explicit
``block_sizes`` always win.

Registers are measured at the default block size; ``__launch_bounds__`` at another size
may change them a little, which this choice ignores (a kernel whose registers do not fit a
candidate's block is not offered that candidate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .ir import NetworkSpec
from .launch import DEFAULT_BLOCK, kernel_rows

CANDIDATES = (64, 128, 256, 512)


@dataclass(frozen=True)
class ArchLimits:
    max_threads_sm: int
    max_blocks_sm: int
    registers_sm: int = 65536
    shared_sm: int = 49152
    warp_register_unit: int = 256  # registers are allocated per warp in units of this


#: Per-multiprocessor limits by compute capability (CUDA C programming guide, "Compute
#: Capabilities" table); shared memory: the most a multiprocessor can give to blocks.
ARCH = {
    "sm_70": ArchLimits(2048, 32, shared_sm=96 * 1024),
    "sm_75": ArchLimits(1024, 16, shared_sm=64 * 1024),
    "sm_80": ArchLimits(2048, 32, shared_sm=164 * 1024),
    "sm_86": ArchLimits(1536, 16, shared_sm=100 * 1024),
    "sm_87": ArchLimits(2048, 32, shared_sm=164 * 1024),
    "sm_89": ArchLimits(1536, 24, shared_sm=100 * 1024),
    "sm_90": ArchLimits(2048, 32, shared_sm=228 * 1024),
}


def limits(arch: str) -> ArchLimits:
    """The limits of ``arch``; newer architectures than the table get sm_90's."""
    if arch in ARCH:
        return ARCH[arch]
    number = int(re.sub(r"\D", "", arch) or 0)
    return ARCH["sm_90"] if number >= 90 else ARCH["sm_80"]


def occupancy(block: int, registers: int, shared_bytes: int, arch: str) -> float:
    """Theoretical occupancy (0..1) of blocks of ``block`` threads using ``registers`` per
    thread and ``shared_bytes`` of shared memory per block."""
    lim = limits(arch)
    warps = -(-block // 32)
    max_warps = lim.max_threads_sm // 32
    per_warp = -(-max(registers, 1) * 32 // lim.warp_register_unit) * lim.warp_register_unit
    by_registers = lim.registers_sm // (per_warp * warps)
    by_threads = lim.max_threads_sm // (warps * 32)
    by_shared = lim.shared_sm // shared_bytes if shared_bytes else lim.max_blocks_sm
    blocks = min(by_registers, by_threads, by_shared, lim.max_blocks_sm)
    return min(1.0, blocks * warps / max_warps)


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(log: str) -> dict[str, tuple[int, int]]:
    """``{kernel: (registers per thread, static shared bytes per block)}`` from ``ptxas -v``."""
    out, current = {}, None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            continue
        m = _USED.search(line)
        if m and current is not None:
            out[current] = (int(m.group(1)), int(m.group(2) or 0))
            current = None
    return out


def choose_block_sizes(spec: NetworkSpec, usage: dict[str, tuple[int, int]], arch: str,
                       fixed: dict | None = None) -> tuple[dict[str, int], list[dict]]:
    """Block size per kernel from ``usage`` (measured at the default block sizes); returns
    (the sizes, one report row per kernel: name, default, chosen, occupancies)."""
    fixed = dict(fixed or {})
    sizes, report = {}, []
    for k in spec.kernels:
        default = DEFAULT_BLOCK[k.kind]
        if k.name in fixed or k.kind in fixed or k.name not in usage:
            continue
        registers, shared = usage[k.name]
        per_thread_shared = shared / default  # the kernels' shared arrays have one slot per thread
        rows = kernel_rows(k)
        options = {}
        for block in CANDIDATES:
            if block > default and block > -(-rows // 32) * 32:
                continue  # more threads than rows: idle warps
            if registers * block > limits(arch).registers_sm:
                continue
            options[block] = occupancy(block, registers, int(round(per_thread_shared * block)), arch)
        if not options:
            continue
        best = max(options.values())
        tied = sorted(b for b, o in options.items() if o >= best - 1e-9)
        covering = [b for b in tied if b >= rows]
        if rows < default and covering:
            chosen = min(covering)  # a small population: the fewest idle threads
        elif default in tied:
            chosen = default
        else:  # the best block nearest the default
            chosen = min(tied, key=lambda b: (abs(b.bit_length() - default.bit_length()), b))
        sizes[k.name] = chosen
        report.append({"kernel": k.name, "registers": registers, "shared_bytes": shared, "rows": rows,
                       "default": default, "chosen": chosen, "occupancy": options})
    return sizes, report
