"""Data-parallel training across processes with MPI (mpi4py).

One process per device (or per CPU socket), launched by ``mpirun``/``mpiexec``/``srun``.
Every rank holds the same weights; each takes a disjoint shard of every global batch,
computes its gradients, and the ranks all-reduce them before the optimiser step, so the
weights stay identical. Without MPI (a plain ``python`` or ``spikeforge`` process) a
single-process stand-in is used and nothing changes.

Gradient all-reduce: each rank sums its shard's per-instance gradients, and the sums go
through one MPI all-reduce on the host together with the metrics (on the CUDA backends
they are copied from the device first).

Start-up: the ranks compare a hash of their job's description (the network, its
parameters and the trainer's settings, :meth:`Trainer.job_description`) before anything
is compiled, and at the start of ``fit`` a hash of the data and of the starting state
(weights, epoch, step: a resumed checkpoint). On a mismatch every rank raises
:class:`DistributedError` naming the first field that differs and its value on each rank.

Faults: an exception on any rank is reported as ``rank R: <error>`` and the whole job is
aborted (``MPI.Abort``); a rank that dies is detected by the launcher, which stops the
others; a rank that stops answering is detected by the collective timeout
(``SPIKEFORGE_MPI_TIMEOUT``, seconds, default 60), after which the job is aborted. While
rank 0 compiles the kernels the other ranks wait up to ``max(timeout,``
:data:`BUILD_TIMEOUT_S` ``)``, as a cold build may take minutes.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from ..errors import SpikeforgeError
from .identity import MISSING, digest, flatten, show

#: Seconds a rank waits in a collective before it declares the others hung or dead.
DEFAULT_TIMEOUT_S = 60.0
#: Seconds the other ranks wait for rank 0 to compile the kernels (at least the timeout).
BUILD_TIMEOUT_S = 1800.0

_MPI_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK", "SLURM_PROCID")


class DistributedError(SpikeforgeError, RuntimeError):
    """Something went wrong between ranks (a timeout, a mismatch)."""


def collective_timeout() -> float:
    """The collective timeout in seconds: ``SPIKEFORGE_MPI_TIMEOUT`` if set (a positive
    number), else :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get("SPIKEFORGE_MPI_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DistributedError(f"SPIKEFORGE_MPI_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


def check_same_job(comm, description: dict, what: str = "job configuration"):
    """Refuse to go on unless every rank has the same ``description`` (nested dicts of plain
    values): the ranks all-gather a SHA-256 of it; on a mismatch they gather the flattened
    descriptions and every rank raises :class:`DistributedError` naming the first field that
    differs, with its value on each rank."""
    if comm.size == 1:
        return
    digests = comm.allgather_digest(digest(description))
    if len(set(digests)) == 1:
        return
    everyone = comm.allgather(flatten(description))
    keys = list(everyone[0])
    for fields in everyone[1:]:
        keys += [k for k in fields if k not in keys]
    for key in keys:
        values = [fields.get(key, MISSING) for fields in everyone]
        if any(v != values[0] for v in values):
            per_rank = ", ".join(f"{show(v)} on rank {r}" for r, v in enumerate(values))
            raise DistributedError(f"the ranks disagree on their {what}: {key} is {per_rank}; every rank must "
                                   "run the same job (same files, options and data)")
    raise DistributedError(f"the ranks disagree on their {what} (their descriptions hash differently)")


class SingleProcess:
    """The communicator of a job that runs in one process."""

    rank = 0
    size = 1
    local_rank = 0

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    def barrier(self):
        pass

    def wait_for_build(self):
        pass

    def bcast(self, obj):
        return obj

    def allgather(self, obj):
        return [obj]

    def allgather_digest(self, data: bytes) -> list[bytes]:
        return [bytes(data)]

    def abort(self, message: str, code: int = 1):
        raise SystemExit(code)


class MpiCommunicator:
    """``MPI.COMM_WORLD`` with timeouts on the collectives spikeforge uses."""

    def __init__(self, comm=None, timeout: float | None = None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = local.Get_rank()
        local.Free()
        self.timeout = float(timeout) if timeout is not None else collective_timeout()
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise DistributedError(f"the collective timeout must be a positive number of seconds, got {timeout!r}")
        # Who is who: if a rank is killed, the launcher reports its PID; this table names the rank.
        import socket

        table = self.comm.allgather((self.rank, os.getpid(), socket.gethostname()))
        if self.rank == 0:
            print("spikeforge: MPI job of %d ranks (rank: pid@host): %s" % (
                self.size, ", ".join(f"{r}: {pid}@{host}" for r, pid, host in table)), file=sys.stderr, flush=True)

    def _wait(self, request, what: str):
        """Drive a non-blocking collective to completion (MPI makes progress inside Test)."""
        self.wait_for(request.Test, what)

    def wait_for(self, done, what: str, timeout: float | None = None):
        """Poll ``done()`` until it is true, aborting the job after ``timeout`` seconds (default:
        the collective timeout). Polls tightly at first, then backs off to 1 ms."""
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                self.abort(f"no answer from the other ranks within {timeout:g} s during {what} "
                           "(a rank hung or died; SPIKEFORGE_MPI_TIMEOUT sets the limit)")
            if now - start > 0.05:
                time.sleep(1e-3)

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(array, dtype=np.float64)
        recv = np.empty_like(send)
        self._wait(self.comm.Iallreduce(send, recv, op=self.MPI.SUM), "a gradient all-reduce")
        return recv

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "a barrier")

    def wait_for_build(self):
        """The barrier around rank 0's compilation of the kernels: a cold build may take
        longer than the collective timeout, so this one waits up to ``BUILD_TIMEOUT_S``."""
        request = self.comm.Ibarrier()
        self.wait_for(request.Test, "rank 0's build of the kernels", max(self.timeout, BUILD_TIMEOUT_S))

    def allgather_digest(self, data: bytes) -> list[bytes]:
        """Every rank's ``data`` (bytes of the same length on all ranks, e.g. a hash), with
        the collective timeout."""
        send = np.frombuffer(bytes(data), dtype=np.uint8).copy()
        recv = np.empty(self.size * send.size, dtype=np.uint8)
        self._wait(self.comm.Iallgather(send, recv), "the start-up comparison of the ranks' jobs")
        return [recv[r * send.size: (r + 1) * send.size].tobytes() for r in range(self.size)]

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, message: str, code: int = 1):
        os.write(2, f"spikeforge: rank {self.rank}: error: {message}\n".encode())
        time.sleep(0.5)  # let the launcher forward the message before it tears the job down
        self.comm.Abort(code)


def under_mpi() -> bool:
    """Whether this process was started by an MPI launcher with more than one rank."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "1") not in ("", "0", "1"):
            return True
    return False


def communicator(force: bool | None = None):
    """The job's communicator: MPI when launched with several ranks, else a single process."""
    if force is False or (force is None and not under_mpi()):
        return SingleProcess()
    try:
        return MpiCommunicator()
    except ImportError:
        raise DistributedError(
            "this process runs under an MPI launcher but mpi4py is not installed: "
            "pip install 'spikeforge[mpi]' (and an MPI, e.g. the 'mpich' wheel)") from None


def shard(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's part of a global batch (contiguous, as even as possible)."""
    return np.array_split(np.asarray(indices), size)[rank]


def pin_gpu(local_rank: int) -> int:
    """The GPU a rank uses: its rank on the node, modulo the GPUs it can see."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return local_rank % max(1, len([d for d in visible.split(",") if d.strip()]))
    return local_rank
