"""Memory estimates, checked before anything big is allocated.

Every place that is about to allocate memory in proportion to what the user asked for
(connectivity being drawn, a simulation's state, a recording, a training batch) lists
what it needs as :class:`Need` items and calls :func:`check`. If the total does not fit
in the memory available, :class:`~spikeforge.errors.MemoryLimitError` names the largest
item, in one line, instead of a numpy ``MemoryError``, a C++ ``std::bad_alloc`` or the
kernel's OOM killer half-way through.

Available memory is, for the host, ``MemAvailable`` of ``/proc/meminfo``, lowered to
what the process's cgroup still allows when it has a memory limit; for a GPU, its free
memory. ``SPIKEFORGE_MEMORY_LIMIT`` replaces the host figure (``2GiB``, ``500MB``,
``1e9``; ``none`` turns the host check off).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MemoryLimitError, NetworkError, ResourceError

ENV_LIMIT = "SPIKEFORGE_MEMORY_LIMIT"

#: Peak bytes per synapse while from-list connectivity is sorted in numpy: int64 pre, post,
#: key and sort order, the sorted copies and the uint32 result; per presynaptic neuron add 16.
GENERATION_BYTES_PER_SYNAPSE = 56
GENERATION_BYTES_PER_ROW = 16
#: The same for connectivity drawn by the generated C++ builder (spikeforge.connectivity):
#: the builder's uint32 rows (with vector growth up to 2x) and the numpy copy, or, for
#: fixed in-degree, its column buffer and the rows; fixed total holds 8-byte keys (16 with
#: growth) while it draws, hence 16 in all; per row a count and a row start (8).
DRAWN_BYTES_PER_SYNAPSE = 16
DRAWN_BYTES_PER_ROW = 8
#: Sparse connectivity is indexed with uint32 in the generated code.
MAX_SYNAPSES = 2**32 - 1

_ITEMSIZE = {"uint8": 1, "uint16": 2, "int32": 4, "uint32": 4, "double": 8}
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}
_OFF = ("none", "off", "unlimited")


@dataclass(frozen=True)
class Need:
    """``nbytes`` of memory for ``what`` (e.g. "projection 'ee' connectivity")."""

    what: str
    nbytes: int


# --------------------------------------------------------------------------- sizes


def parse_bytes(text: str) -> int:
    """``"2GiB"`` -> 2147483648. Units K/M/G/T (and KiB...) are powers of 1024, kB/MB/GB/TB
    powers of 1000; a plain number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size such as '2GiB', '500MB' or '1e9'")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 7.3e12 -> '6.6 TiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


# --------------------------------------------------------------------------- available memory


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other POSIX systems
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _inactive_file(stat: Path, key: str) -> int:
    """Reclaimable page cache the cgroup's usage counts (it does not stop an allocation)."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_available(cgroup_file: Path = Path("/proc/self/cgroup"),
                      mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the process's cgroup still allows (limit - usage + inactive page cache), from
    cgroup v2 (``memory.max``) or v1 (``memory/memory.limit_in_bytes``); None without a limit."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2
            files = ("memory.max", "memory.current", "memory.stat", "inactive_file")
            dirs = [mount / rel, mount]
        elif "memory" in controllers.split(","):  # cgroup v1
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")
            dirs = [mount / "memory" / rel, mount / "memory"]
        else:
            continue
        for d in dirs:  # inside a container the cgroup's own directory is often the root
            limit, usage = _read_int(d / files[0]), _read_int(d / files[1])
            if limit is None or usage is None:
                continue
            if limit < 2**60:  # v1 writes a huge number for "no limit"
                free = max(0, limit - usage + _inactive_file(d / files[2], files[3]))
                best = free if best is None else min(best, free)
            break
    return best


def host_available() -> tuple[int | None, str]:
    """(bytes of host memory available, where the figure comes from); (None, why) when
    there is nothing to check against."""
    env = os.environ.get(ENV_LIMIT, "").strip()
    if env:
        if env.lower() in _OFF:
            return None, f"{ENV_LIMIT}={env}"
        try:
            return parse_bytes(env), f"{ENV_LIMIT}={env}"
        except ValueError as exc:
            raise ResourceError(f"{ENV_LIMIT}: {exc} (or 'none' to turn the memory check off)") from None
    now = time.monotonic()
    if _machine_reading and now - _machine_reading[0] < _READING_TTL_S:
        return _machine_reading[1]
    free = _meminfo_available()
    cgroup = _cgroup_available()
    if cgroup is not None and (free is None or cgroup < free):
        reading = cgroup, "the memory limit of this process's cgroup"
    elif free is None:
        reading = None, "unknown"
    else:
        reading = free, "MemAvailable"
    _machine_reading[:] = [now, reading]
    return reading


#: The machine's reading is kept this long: a run of many short ``Simulation.run`` calls
#: reads /proc and the cgroup files once, not once per call.
_READING_TTL_S = 0.5
_machine_reading: list = []


# --------------------------------------------------------------------------- the check


def check(needs: list[Need], *, context: str, available: int | None = None, source: str | None = None,
          of: str = "host memory", advice: str = "") -> int:
    """Total bytes of ``needs``; raises MemoryLimitError, naming the largest need, if the
    total exceeds ``available`` (default: :func:`host_available`)."""
    needs = [n for n in needs if n.nbytes > 0]
    total = sum(n.nbytes for n in needs)
    if not needs:
        return 0
    if available is None and source is None:
        available, source = host_available()
    if available is None or total <= available or not needs:
        return total
    largest = max(needs, key=lambda n: n.nbytes)
    share = f" (the largest part of {format_bytes(total)} in all)" if len(needs) > 1 else ""
    where = f" ({source})" if source else ""
    raise MemoryLimitError(
        f"{context}: {largest.what} needs {format_bytes(largest.nbytes)}{share}, but only "
        f"{format_bytes(available)} of {of} are available{where}"
        + (f"; {advice}" if advice else "")
        + (f"; if the estimate is wrong, set {ENV_LIMIT}" if of == "host memory" else ""))


# --------------------------------------------------------------------------- networks


def connectivity_needs(name: str, n_pre: int, n_synapses: float, drawn: bool = True) -> list[Need]:
    """Peak host memory while the synapses of projection ``name`` are drawn (``drawn``: by
    the generated builder) or sorted from a list in numpy."""
    per_synapse, per_row = ((DRAWN_BYTES_PER_SYNAPSE, DRAWN_BYTES_PER_ROW) if drawn
                            else (GENERATION_BYTES_PER_SYNAPSE, GENERATION_BYTES_PER_ROW))
    nbytes = int(n_synapses * per_synapse + n_pre * per_row)
    return [Need(f"projection '{name}' connectivity ({n_synapses:.3g} synapses)", nbytes)]


def check_connectivity(network: str, name: str, n_pre: int, n_synapses: float, drawn: bool = True):
    """Before drawing ``n_synapses`` (expected count) synapses of projection ``name``."""
    if n_synapses > MAX_SYNAPSES:
        raise NetworkError(
            f"projection '{name}': about {n_synapses:.3g} synapses, more than the {MAX_SYNAPSES} that sparse "
            "connectivity can index; lower the connection probability or the population sizes")
    check(connectivity_needs(name, n_pre, n_synapses, drawn), context=f"network '{network}'",
          advice="lower the connection probability or the population sizes")


def _itemsize(dtype: str, precision: str) -> int:
    return _ITEMSIZE.get(dtype, 8 if precision == "double" else 4)


def _owner_kinds(spec) -> dict[str, str]:
    kinds = {p["name"]: "population" for p in spec.populations}
    kinds.update({q["name"]: "projection" for q in spec.projections})
    return kinds


def array_nbytes(a, spec, batch_size: int) -> int:
    """Bytes of one array of ``spec`` at ``batch_size``."""
    shape = a.data.shape if a.data is not None else a.shape(batch_size)
    return int(np.prod(shape, dtype=object)) * _itemsize(a.dtype, spec.precision)


def state_needs(spec, batch_size: int, include_fixed: bool = True) -> list[Need]:
    """The arrays of ``spec``, summed by owner and part (state, connectivity, delay buffer);
    ``include_fixed=False`` leaves out arrays whose contents already exist (connectivity
    the cpu backend uses in place)."""
    kinds = _owner_kinds(spec)
    parts: dict[str, int] = {}
    for a in spec.arrays:
        if a.data is not None and not include_fixed:
            continue
        if a.role == "connectivity":
            part = "connectivity"
        elif a.role in ("spikes", "spike_count") and a.slots > 1:
            part = f"spike delay buffer ({a.slots} steps)"
        elif a.role == "dendritic_delay":
            part = f"dendritic delay buffer ({a.slots} steps)"
        elif a.role == "parallel":
            part = "time-parallel training values (every step of a batch)"
        else:
            part = "state"
        what = f"{kinds.get(a.owner, 'current source')} '{a.owner}' {part}"
        parts[what] = parts.get(what, 0) + array_nbytes(a, spec, batch_size)
    return [Need(what, n) for what, n in parts.items()]


def state_bytes(spec, batch_size: int) -> int:
    """Bytes of all the arrays of ``spec`` at ``batch_size`` (what a device backend allocates)."""
    return sum(n.nbytes for n in state_needs(spec, batch_size))


def device_buffer_bytes(spec, batch_size: int) -> int:
    """Device bytes besides the state: chunked recording buffers and the context."""
    from .device import HEADER, RECORD_CHUNK, var_chunk_rows

    recorded = [p for p in spec.populations if p["record_spikes"]]
    scalar = 8 if spec.precision == "double" else 4
    total = sum(RECORD_CHUNK * batch_size * ((p["size"] + 31) // 32) * 4 for p in recorded)
    total += sum(var_chunk_rows(r, RECORD_CHUNK) * (batch_size if r["batched"] else 1) * r["n"] * scalar
                 for r in spec.recorded_vars)
    return total + 8 * (len(HEADER) + len(spec.arrays) + len(recorded) + len(spec.recorded_vars))


def host_needs(spec, batch_size: int, backend: str) -> list[Need]:
    """Host memory a Simulation of ``spec`` allocates on ``backend`` when it is created."""
    from .backends import get_backend

    chosen = get_backend(backend)
    needs = []
    if not chosen.device:  # the state is numpy arrays (fixed ones, e.g. connectivity, exist already)
        needs += state_needs(spec, batch_size, include_fixed=False)
    elif not chosen.gpu:  # "device" memory is host memory
        needs += state_needs(spec, batch_size)
        needs.append(Need("recording buffers", device_buffer_bytes(spec, batch_size)))
    # a std::vector per instance on the cpu backend, a Python list (and its slot) on the device backends
    per_instance = chosen.spike_recorder_bytes
    for p in spec.populations:
        if p["record_spikes"]:
            needs.append(Need(f"population '{p['name']}' spike recorders ({batch_size} instances)",
                              per_instance * batch_size))
    return needs


def check_simulation(spec, batch_size: int, backend: str):
    """Before a Simulation of ``spec`` allocates its state on ``backend``."""
    check(host_needs(spec, batch_size, backend), context=f"network '{spec.name}' at batch size {batch_size}",
          advice="reduce the batch size, the population sizes, the delays or the recorded populations")


def recording_bytes(spec, batch_size: int, steps: int, r: dict, first_step: int = 0) -> int:
    """Bytes of the host buffer of recording ``r`` (a spec.recorded_vars entry) over ``steps``
    steps from ``first_step``: the steps it keeps (every ``every``-th) x its recorded elements."""
    from ..recording import rows_between

    scalar = 8 if spec.precision == "double" else 4
    rows = rows_between(first_step, first_step + steps, r["every"])
    return rows * (batch_size if r["batched"] else 1) * r["n"] * scalar


def check_recording(spec, batch_size: int, steps: int, recorded_vars: list[dict], first_step: int = 0):
    """Before buffers for ``steps`` steps of the recorded variables (and population rates) are
    allocated; a recording of a subset of neurons or every k-th step counts only what it keeps."""
    needs = [Need(f"recording {r['population']}.{r['var']} for {steps} steps",
                  recording_bytes(spec, batch_size, steps, r, first_step)) for r in recorded_vars]
    check(needs, context=f"network '{spec.name}'",
          advice="record fewer variables or run in shorter pieces, saving each")


def check_device(spec, batch_size: int, free: int, total: int, device: str, extra_bytes: int = 0) -> int:
    """Before a device backend allocates the state (plus ``extra_bytes``) in GPU memory."""
    needs = state_needs(spec, batch_size) + [Need("recording buffers and context", int(extra_bytes))]
    return check(needs, context=f"network '{spec.name}' at batch size {batch_size}", available=int(free),
                 source=f"free on {device}, of {format_bytes(total)}", of="GPU memory",
                 advice="reduce the batch size or the network, or record fewer populations")
