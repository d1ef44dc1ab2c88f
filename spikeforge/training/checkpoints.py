"""Checkpoint files of the trainer: one ``.npz`` written atomically, read back only after
every field has been checked.

Contents (format 2):

* ``weight/<w>`` for ``w`` in ``w_in, w_rec, w_out, b_out``: the weights;
* ``adam/m_<w>``, ``adam/v_<w>``: Adam's moments (``v`` is never negative);
* ``feedback``: the random feedback matrix (``n_hidden x n_outputs``);
* ``meta``: UTF-8 JSON (a uint8 array) with ``version`` (2), ``epoch`` and ``step`` (the
  epochs completed and optimiser steps taken), ``rng`` (the shuffling generator's PCG64
  state), ``history`` (one log per completed epoch), ``network`` (the network's
  description: sizes, the hidden model's equations and every parameter value, see
  :mod:`.identity`) and ``training`` (batch size, batch reduction, Adam's constants and
  the weight clamp).

Every array must be there with the network's shape and float type and finite values;
``meta`` must hold exactly these keys with values of the right type, and ``network`` and
``training`` must equal the resuming trainer's. Anything else is a :class:`CheckpointError`
naming the file and the field. Temporary files left by a crash in the middle of writing
are deleted when a checkpoint is written or read (:mod:`spikeforge.fileio`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import SpikeforgeError
from ..fileio import atomic_savez, check_writable, remove_stale_temporaries
from .identity import canonical, first_difference, show

CHECKPOINT_VERSION = 2
META_KEYS = ("version", "epoch", "step", "rng", "history", "network", "training")


class CheckpointError(SpikeforgeError, ValueError):
    """A checkpoint is missing, corrupt or belongs to another network."""


def check_checkpoint_path(path) -> Path:
    """Refuse a checkpoint path that cannot be written, before any training is spent."""
    try:
        return check_writable(path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be written: {exc}") from None


def _finite_or_null(obj):
    """JSON has no NaN or inf: a non-finite float of a log is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


def write_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` (see the module's docstring) atomically to ``path``."""
    data = dict(arrays)
    text = json.dumps(_finite_or_null(meta), allow_nan=False)
    data["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
    return atomic_savez(path, data)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class _Reader:
    def __init__(self, path):
        self.path = Path(path)

    def fail(self, message: str):
        raise CheckpointError(f"checkpoint {str(self.path)!r}: {message}")

    def read(self) -> dict[str, np.ndarray]:
        remove_stale_temporaries(self.path)
        if self.path.is_dir():
            self.fail("is a folder, not a checkpoint file")
        try:
            f = np.load(self.path, allow_pickle=False)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {str(self.path)!r} does not exist") from None
        except Exception as exc:
            raise CheckpointError(f"checkpoint {str(self.path)!r} is not readable ({exc})") from None
        if not isinstance(f, np.lib.npyio.NpzFile):
            self.fail("is not readable (a single .npy array, not a checkpoint's .npz archive)")
        data = {}
        with f:
            for name in f.files:
                try:
                    data[name] = f[name]
                except Exception as exc:  # a damaged member: a zip, zlib or header error
                    self.fail(f"array '{name}' is not readable ({type(exc).__name__}: {exc})")
        return data

    def meta(self, data: dict) -> dict:
        """The checkpoint's ``meta`` object, decoded and checked key by key."""
        meta = self.decode_meta(data)
        version = meta.get("version")
        if version != CHECKPOINT_VERSION or isinstance(version, bool):
            self.fail(f"has format {show(version)}, this spikeforge reads format {CHECKPOINT_VERSION} "
                      "(train again, or resume with the spikeforge that wrote it)")
        for key in META_KEYS:
            if key not in meta:
                self.fail(f"meta: missing key '{key}'")
        extra = sorted(set(meta) - set(META_KEYS))
        if extra:
            self.fail(f"meta: unknown key '{extra[0]}' (keys: {', '.join(META_KEYS)})")
        for key in ("epoch", "step"):
            if not _is_count(meta[key]):
                self.fail(f"meta.{key} must be a non-negative integer, got {show(meta[key])}")
        self.check_history(meta["history"], meta["epoch"])
        try:
            if not isinstance(meta["rng"], dict):
                raise TypeError
            np.random.PCG64().state = meta["rng"]
        except Exception:
            self.fail(f"meta.rng is not the state of a PCG64 generator: {show(meta['rng'])}")
        return meta

    def decode_meta(self, data: dict) -> dict:
        """The JSON object stored as UTF-8 bytes in the array ``meta``."""
        if "meta" not in data:
            self.fail("missing array 'meta' (not a spikeforge checkpoint?)")
        raw = data["meta"]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            self.fail(f"'meta' must be a 1-D uint8 array of JSON text, got {raw.dtype} of shape {raw.shape}")
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except UnicodeDecodeError:
            self.fail("'meta' is not UTF-8 text")
        except json.JSONDecodeError as exc:
            self.fail(f"'meta' is not valid JSON ({exc})")
        if not isinstance(meta, dict):
            self.fail(f"'meta' must be a JSON object, got {type(meta).__name__}")
        return meta

    def check_history(self, history, epochs: int):
        """``meta.history``: one log (an object of finite numbers or nulls) per epoch trained."""
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            self.fail("meta.history must be a list of per-epoch logs (objects)")
        if len(history) != epochs:
            self.fail(f"meta.history has {len(history)} epoch logs but meta.epoch is {epochs}")
        for i, logs in enumerate(history):
            for k, v in logs.items():
                number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                if v is not None and not number:
                    self.fail(f"meta.history[{i}].{k} must be a finite number or null, got {show(v)}")

    def same(self, field: str, stored, expected, what: str):
        if not isinstance(stored, dict):
            self.fail(f"meta.{field} must be a JSON object, got {show(stored)}")
        diff = first_difference(stored, expected)
        if diff is not None:
            key, there, here = diff
            self.fail(f"belongs to {what}: {field}.{key} is {show(there)} in the checkpoint but {show(here)} here")

    def arrays(self, data: dict, expected: dict[str, tuple], dtype) -> dict[str, np.ndarray]:
        for name in expected:
            if name not in data:
                self.fail(f"missing array '{name}'")
        extra = sorted(set(data) - set(expected) - {"meta"})
        if extra:
            self.fail(f"unexpected array '{extra[0]}'")
        out = {}
        for name, shape in expected.items():
            arr = data[name]
            if arr.dtype != np.dtype(dtype):
                self.fail(f"array '{name}' has dtype {arr.dtype}, expected {np.dtype(dtype)} "
                          f"(the network's precision)")
            if arr.shape != tuple(shape):
                self.fail(f"array '{name}' has shape {arr.shape}, expected {tuple(shape)}")
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                self.fail(f"array '{name}' has {bad} non-finite values (NaN or inf)")
            if name.startswith("adam/v_") and np.any(arr < 0):
                self.fail(f"array '{name}' (Adam's second moment) has negative values")
            out[name] = arr
        return out


def read_checkpoint(path: str | os.PathLike, expected: dict[str, tuple], dtype, network: dict,
                    training: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and ``meta`` of the checkpoint at ``path``, every field checked: ``expected``
    maps each array's name to its shape, all of type ``dtype``; ``network`` and ``training``
    are the resuming trainer's descriptions. Raises :class:`CheckpointError`."""
    reader = _Reader(path)
    data = reader.read()
    meta = reader.meta(data)
    reader.same("network", meta["network"], canonical(network), "another network")
    reader.same("training", meta["training"], canonical(training), "a run with other training settings")
    return reader.arrays(data, expected, dtype), meta
