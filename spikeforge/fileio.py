"""Writing files so that a crash never leaves half of one: write a temporary file next
to the target, flush it to disk, then rename it over the target in one step."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable) -> Path:
    """Call ``write(file)`` on a temporary binary file, then publish it as ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
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


def atomic_savez(path: str | os.PathLike, arrays: dict) -> Path:
    """``np.savez`` to ``path``, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> Path:
    data = text if isinstance(text, bytes) else text.encode()
    return atomic_write(path, lambda f: f.write(data))
