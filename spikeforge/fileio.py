"""Writing files so that a crash never leaves half of one: write a temporary file next
to the target, flush it to disk, then rename it over the target in one step.

A process killed while writing (SIGKILL, a power cut) leaves its temporary file behind.
The temporary file's name says who wrote it, ``<target>.<pid>@<host>.<random>.tmp``, so
that the next write of the same target (and :func:`remove_stale_temporaries`) can delete
the ones whose writer is gone: on this host, a process that no longer exists; from
another host (a shared file system), or without a writer in the name, files untouched
for :data:`FOREIGN_STALE_AFTER_S` seconds.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Age (seconds since the last write) after which a temporary file whose writer cannot be
#: checked (another host, or no writer in its name) counts as left by a crash.
FOREIGN_STALE_AFTER_S = 3600.0


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def _temporary_prefix(path: Path) -> str:
    return f"{path.name}.{os.getpid()}@{_host()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _is_stale(tmp: Path, target_name: str, now: float) -> bool:
    middle = tmp.name[len(target_name) + 1: -len(".tmp")]  # "<pid>@<host>.<random>" (or an older "<random>")
    writer = middle.rsplit(".", 1)[0] if "." in middle else ""
    pid, _, host = writer.partition("@")
    if pid.isdigit() and host == _host():
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    try:
        return now - tmp.stat().st_mtime > FOREIGN_STALE_AFTER_S
    except FileNotFoundError:
        return False


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers of ``path`` which crashed left next to it;
    returns the paths deleted. Files of writers still running are kept."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f"{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    now = time.time()
    for tmp in candidates:
        if tmp.is_file() and _is_stale(tmp, path.name, now):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # gone already, or not ours to delete: leave it
                pass
    return removed


def glob_escape(name: str) -> str:
    """``name`` with the glob wildcards ``*?[`` matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def atomic_write(path: str | os.PathLike, write: Callable) -> Path:
    """Call ``write(file)`` on a temporary binary file, then publish it as ``path``.
    Temporary files of crashed earlier writes of ``path`` are deleted first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Make sure ``path`` can be written (its folder exists or can be created, a file can be
    created there, and ``path`` is not a folder) by creating and deleting a temporary
    file next to it. Raises :class:`OSError` with a message saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{path.parent} is not a folder") from None
    except OSError as exc:
        raise OSError(f"cannot create the folder {path.parent} ({exc.strerror or exc})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is not writable")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise OSError(f"cannot create files in {path.parent} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)
    return path


def atomic_savez(path: str | os.PathLike, arrays: dict) -> Path:
    """``np.savez`` to ``path``, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> Path:
    data = text if isinstance(text, bytes) else text.encode()
    return atomic_write(path, lambda f: f.write(data))
