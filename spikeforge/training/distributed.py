"""Data-parallel training across processes with MPI (mpi4py).

One process per device (or per CPU socket), launched by ``mpirun``/``mpiexec``/``srun``.
Every rank holds the same weights; each takes a disjoint shard of every global batch,
computes its gradients, and the ranks all-reduce them before the optimiser step, so the
weights stay identical. Without MPI (a plain ``python`` or ``spikeforge`` process) a
single-process stand-in is used and nothing changes.

Faults: an exception on any rank is reported as ``rank R: <error>`` and the whole job is
aborted (``MPI.Abort``); a rank that dies is detected by the launcher, which stops the
others; a rank that stops answering is detected by the collective timeout
(``SPIKEFORGE_MPI_TIMEOUT``, seconds, default 600), after which the job is aborted.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..errors import SpikeforgeError

_MPI_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK", "SLURM_PROCID")


class DistributedError(SpikeforgeError, RuntimeError):
    """Something went wrong between ranks (a timeout, a mismatch)."""


class SingleProcess:
    """The communicator of a job that runs in one process."""

    rank = 0
    size = 1
    local_rank = 0

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    def barrier(self):
        pass

    def bcast(self, obj):
        return obj

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
        self.timeout = float(timeout if timeout is not None else os.environ.get("SPIKEFORGE_MPI_TIMEOUT", 600))
        # Who is who: if a rank is killed, the launcher reports its PID; this table names the rank.
        import socket

        table = self.comm.allgather((self.rank, os.getpid(), socket.gethostname()))
        if self.rank == 0:
            print("spikeforge: MPI job of %d ranks (rank: pid@host): %s" % (
                self.size, ", ".join(f"{r}: {pid}@{host}" for r, pid, host in table)), file=sys.stderr, flush=True)

    def _wait(self, request, what: str):
        """Drive a non-blocking collective to completion (MPI makes progress inside Test),
        giving up after the timeout. Polls tightly at first, then backs off to 1 ms."""
        start = time.monotonic()
        deadline = start + self.timeout
        while not request.Test():
            now = time.monotonic()
            if now > deadline:
                self.abort(f"no answer from the other ranks within {self.timeout:g} s during {what} "
                           "(a rank hung or died)")
            if now - start > 0.05:
                time.sleep(1e-3)

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(array, dtype=np.float64)
        recv = np.empty_like(send)
        self._wait(self.comm.Iallreduce(send, recv, op=self.MPI.SUM), "a gradient all-reduce")
        return recv

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "a barrier")

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

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
