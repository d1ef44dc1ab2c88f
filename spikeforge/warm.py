"""The warm-start cache: ``spikeforge run FILE.yaml`` from the file straight to the compiled
library, without sympy, the model parser or Jinja2.

A cold run reads the file, builds the models (sympy), generates the kernel specs, renders
the templates (Jinja2), compiles the source (or finds it in the compile cache), draws the
connectivity and computes the initial values. All of that is a function of the file's
content, the files it names, the spikeforge code, the compiler and the command-line options
that change the network; the warm-start cache keeps its result under a hash of exactly these:

* the file's parsed YAML, canonicalised (comments and layout do not count), its resolved
  path (relative ``file:`` names and the default network name depend on it) and the
  content of every file a ``file:`` key names;
* the spikeforge version and the text of its code and templates (built-in models, code
  generator, runtime), and which copies of sympy, Jinja2, numpy and PyYAML are installed;
* the backend, batch size and seed given on the command line;
* the compiler, its flags, the machine and CPU (:func:`spikeforge.runtime.build.toolchain_fingerprint`).

Layout, next to the compile cache (``cache_dir()``)::

    warm/<key[:2]>/<key>/
        entry.json      format, key, the compile-cache entry of the library, the spec the
                        runtime reads (arrays, populations, projections, recordings), the
                        network's facts and the run settings; arrays by reference
        arrays.npz      every array's contents: connectivity drawn on the host, recorded
                        neuron indices, parameters read at run time, initial values computed
                        on the host, spike inputs

An entry is written in a temporary directory and published with one ``os.rename``, like the
compile cache's. It is validated when read (format, key, the arrays' checksum, every array's
shape); a damaged or foreign entry is removed and the run takes the full path, which writes
it again. What is kept is what the full path computed, so a warm run gives the same results
bit for bit. Entries above :data:`MAX_STORED_BYTES` of arrays are not written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import SpikeforgeError
from .runtime.build import cache_dir, cached_source, toolchain_fingerprint

log = logging.getLogger("spikeforge.warm")

#: Bump whenever the layout of an entry or the meaning of the key changes.
WARM_FORMAT_VERSION = 1
#: Entries whose arrays take more bytes than this are not written (the full path runs).
MAX_STORED_BYTES = 256 << 20
_SOURCE_SUFFIXES = (".py", ".j2", ".h", ".json")
_ARRAY_FIELDS = ("name", "owner", "var", "dtype", "size", "batched", "role", "init_stream", "slots", "reduce",
                 "target", "comment")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the spikeforge version and of every source file and template of the package."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"spikeforge {__version__}\n".encode())
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in sorted(files):
            if name.endswith(_SOURCE_SUFFIXES):
                path = Path(folder, name)
                h.update(f"{path.relative_to(root).as_posix()}\n".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def library_fingerprint() -> list:
    """Which copies of the libraries the full path computes with (the code generator's sympy and
    Jinja2, numpy, the YAML parser), found without importing them: each package's ``__init__``
    file, its size and time, which an upgrade changes."""
    import importlib.util

    out = []
    for name in ("sympy", "jinja2", "numpy", "yaml"):
        try:
            origin = importlib.util.find_spec(name).origin
            st = os.stat(origin)
            out.append([name, origin, st.st_size, st.st_mtime_ns])
        except (AttributeError, ImportError, OSError, TypeError, ValueError):
            out.append([name, None])
    return out


def _canonical(node):
    """A parsed YAML tree as JSON-able data with one spelling per value (keys typed, sorted)."""
    if isinstance(node, dict):
        return {f"{type(k).__name__}:{k}": _canonical(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_canonical(v) for v in node]
    if isinstance(node, float):
        return {"float": repr(node)}  # repr round-trips; JSON would also read 1.0 back as 1
    if node is None or isinstance(node, (bool, int, str)):
        return node
    return {type(node).__name__: repr(node)}


def _named_files(node, base_dir: Path, out: dict) -> None:
    """sha256 of every file a ``file:`` key names (None where it cannot be read)."""
    if isinstance(node, dict):
        name = node.get("file")
        if isinstance(name, str):
            try:
                out[name] = hashlib.sha256((base_dir / name).read_bytes()).hexdigest()
            except OSError:
                out[name] = None
        for value in node.values():
            _named_files(value, base_dir, out)
    elif isinstance(node, list):
        for value in node:
            _named_files(value, base_dir, out)


def run_key(path, *, backend: str | None, batch_size: int | None, seed: int | None) -> str | None:
    """The warm-start key of ``spikeforge run path`` with these options; None when the file
    cannot be read or parsed (the full path reports why)."""
    import yaml

    try:
        path = Path(path).resolve()
        text = path.read_text(encoding="utf-8")
        tree = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    files: dict = {}
    _named_files(tree, path.parent, files)
    try:
        toolchain = toolchain_fingerprint()
    except Exception:  # no compiler: the full path says so
        return None
    blob = json.dumps([WARM_FORMAT_VERSION, code_fingerprint(), library_fingerprint(), toolchain, str(path),
                       _canonical(tree),
                       sorted(files.items()), backend, batch_size, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- descriptions


class _Unwritable(Exception):
    """A value with no canonical description (a callable, an object of the user's own class)."""


def normalise(value):
    """``value`` (what a user gives a model or a network: numbers, text, lists, mappings, numpy
    arrays, spikeforge's models and dataclasses) as canonical JSON-able data, every type
    spelled out (``1``, ``1.0``, ``True`` and ``np.float32(1)`` differ; mappings keep their
    order, which the generated code follows); arrays by their content's sha256. None when
    some part cannot be written down: such a value has no warm start."""
    try:
        return _norm(value)
    except (_Unwritable, RecursionError):
        return None


def _norm(v):  # noqa: C901  (one case per type)
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return {"int": str(v)}  # JSON would lose bits past 2**53 in other readers
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, np.generic) and not isinstance(v, (np.void, np.object_)):
        return {"np": v.dtype.str, "v": repr(v.item())}
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise _Unwritable("an array of objects")
        data = np.ascontiguousarray(v)
        return {"ndarray": data.dtype.str, "shape": list(data.shape),
                "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    if isinstance(v, (list, tuple)):
        return {type(v).__name__: [_norm(x) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[_norm(k), _norm(x)] for k, x in v.items()]}
    if isinstance(v, (set, frozenset)):
        return {"set": sorted((_norm(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True))}
    if isinstance(v, slice):
        return {"slice": [_norm(v.start), _norm(v.stop), _norm(v.step)]}
    if isinstance(v, range):
        return {"range": [v.start, v.stop, v.step]}
    cls = type(v)
    if not cls.__module__.startswith("spikeforge."):
        raise _Unwritable(cls.__qualname__)
    from .models.base import Model

    if isinstance(v, Model):
        if v.description is None:
            raise _Unwritable(f"model {v.name!r}")
        return {"model": v.description}
    if dataclasses.is_dataclass(v):
        return {"dataclass": f"{cls.__module__}.{cls.__qualname__}",
                "fields": [[f.name, _norm(getattr(v, f.name))] for f in dataclasses.fields(v)]}
    raise _Unwritable(cls.__qualname__)


def check_key(kind: str, description) -> str | None:
    """The key of a known-good mark: ``description`` (normalised) passed the checks of
    ``kind`` with this spikeforge and these libraries; None without a description."""
    if description is None:
        return None
    blob = json.dumps([WARM_FORMAT_VERSION, kind, code_fingerprint(), library_fingerprint(), description],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _mark_path(key: str) -> Path:
    return cache_dir() / "warm" / "checked" / key[:2] / key


def checked(key: str) -> bool:
    """Whether the description of ``key`` passed its checks before (see :func:`mark_checked`)."""
    if os.environ.get("SPIKEFORGE_WARM", "1") == "0":
        return False
    try:
        return _mark_path(key).is_file()
    except Exception:  # no cache: check again
        return False


def mark_checked(key: str) -> None:
    """Remember that the description of ``key`` passed its checks: the next time it is given,
    the checks (and the parse they need) wait until their result is used. Never raises."""
    try:
        path = _mark_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except Exception as exc:  # a read-only cache only costs the checks next time
        log.info("cannot write the known-good mark %s: %s", key, exc)


def build_key(state) -> str | None:
    """The warm-start key of ``Network.build``: ``state`` (the normalised description: every
    call that made the network, what it records, the settings and the backend) and the
    toolchain; None without a description or a compiler (the full path says why)."""
    if state is None:
        return None
    try:
        toolchain = toolchain_fingerprint()
    except Exception:  # no compiler: the full path says so
        return None
    blob = json.dumps([WARM_FORMAT_VERSION, "network build", state, toolchain], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def state_digest(value) -> str:
    """sha256 of what ``value`` holds (arrays by content, models by description, objects by
    their attributes): equal for equal states, to find an element changed in place. Unlike
    :func:`normalise` it takes anything; what it cannot read (a callable) counts by its type."""
    h = hashlib.sha256()
    _feed(h, value, set())
    return h.hexdigest()


def _feed(h, v, seen: set) -> None:  # noqa: C901  (one case per type)
    from .models.base import Model

    h.update(type(v).__qualname__.encode() + b"\0")
    if v is None or isinstance(v, (bool, int, float, str, np.generic)):
        h.update(repr(v).encode())
    elif isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v)
        h.update(f"{data.dtype.str}{data.shape}".encode())
        h.update(data.tobytes() if not data.dtype.hasobject else repr(data.tolist()).encode())
    elif isinstance(v, (list, tuple)):
        for x in v:
            _feed(h, x, seen)
    elif isinstance(v, dict):
        for k, x in v.items():
            _feed(h, k, seen)
            _feed(h, x, seen)
    elif isinstance(v, (set, frozenset)):
        h.update(repr(sorted(map(repr, v))).encode())
    elif isinstance(v, Model):
        h.update(json.dumps(v.description, sort_keys=True).encode() if v.description is not None
                 else f"{id(v)}".encode())
    elif type(v).__module__.startswith("sympy"):
        h.update(str(v).encode())
    elif callable(v) and not hasattr(v, "__dict__") or type(v).__name__ == "function":
        pass  # a callable (the synapse indices of a scope): its type is all that counts
    elif id(v) in seen:
        h.update(b"seen")
    elif hasattr(v, "__dict__"):
        seen.add(id(v))
        if getattr(v, "name", None) is not None and type(v).__name__ in ("Population", "Projection"):
            h.update(str(v.name).encode())  # an element inside another: its name
        else:
            for k in sorted(v.__dict__):
                if not k.startswith("_"):  # caches (SparseRows' columns) are not state
                    h.update(k.encode())
                    _feed(h, v.__dict__[k], seen)
    else:
        h.update(repr(v).encode())


# --------------------------------------------------------------------------- (un)packing


class _Packer:
    """JSON-able data with the numpy arrays taken out (into ``arrays``, by reference)."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def pack(self, value):
        if isinstance(value, np.ndarray):
            ref = f"a{len(self.arrays)}"
            self.arrays[ref] = np.ascontiguousarray(value)
            return {"__array__": ref, "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, tuple):
            return {"__tuple__": [self.pack(v) for v in value]}
        if isinstance(value, list):
            return [self.pack(v) for v in value]
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError("only string keys are stored")
            return {k: self.pack(v) for k, v in value.items()}
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store a {type(value).__name__}")


def _unpack(value, arrays):
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            array = arrays[value["__array__"]]
            if array.dtype.str != value["dtype"] or list(array.shape) != value["shape"]:
                raise ValueError(f"stored array {value['__array__']} is not the one written")
            return array
        if set(value) == {"__tuple__"}:
            return tuple(_unpack(v, arrays) for v in value["__tuple__"])
        return {k: _unpack(v, arrays) for k, v in value.items()}
    return value


def _spec_data(spec) -> dict:
    return {
        "name": spec.name, "precision": spec.precision, "dt": spec.dt, "seed": spec.seed,
        "arrays": [{**{f: getattr(a, f) for f in _ARRAY_FIELDS}, "data": a.data} for a in spec.arrays],
        "populations": spec.populations, "projections": spec.projections, "integrators": spec.integrators,
        "recorded_vars": spec.recorded_vars, "instances_independent": spec.instances_independent,
    }


@functools.lru_cache(maxsize=1)
def stored_spec_class():
    """A NetworkSpec read back from an entry: the runtime reads its arrays, populations and
    recordings; its ``kernels`` (which the library holds compiled) are generated again from
    the network (``_network``) when something reads them."""
    from .codegen.ir import NetworkSpec

    class StoredSpec(NetworkSpec):
        @property  # type: ignore[override]
        def kernels(self):
            d = self.__dict__
            if not d.get("_kernels") and d.get("_network") is not None:
                from .codegen.generate import generate

                d["_kernels"] = generate(d["_network"]).kernels
            return d.get("_kernels") or []

        @kernels.setter
        def kernels(self, value):
            self.__dict__["_kernels"] = value

    return StoredSpec


def _spec_from(data: dict, cls=None):
    """The NetworkSpec the runtime reads (no kernels: the library has them), checked."""
    from .codegen.ir import ArraySpec, NetworkSpec

    cls = cls or NetworkSpec
    arrays = []
    for a in data["arrays"]:
        array = ArraySpec(**{f: a[f] for f in _ARRAY_FIELDS}, data=a["data"])
        if not (isinstance(array.name, str) and isinstance(array.size, int) and isinstance(array.slots, int)
                and (array.data is None or isinstance(array.data, np.ndarray))):
            raise ValueError(f"array {array.name!r}: malformed")
        arrays.append(array)
    return cls(data["name"], data["precision"], float(data["dt"]), int(data["seed"]), arrays, [],
                       data["populations"], data["projections"], data["integrators"], data["recorded_vars"],
                       bool(data["instances_independent"]))


# --------------------------------------------------------------------------- what a hit gives


@dataclass
class StoredPopulation:
    name: str
    size: int
    record_spikes: bool


@dataclass
class StoredRunConfig:
    """The run settings of the file (as :class:`spikeforge.config.RunConfig`)."""

    duration: float | None
    backend: str
    save: Path | None
    spike_inputs: dict

    def apply_inputs(self, sim) -> None:
        for pop, spikes in self.spike_inputs.items():
            sim.set_spike_times(pop, spikes)


class StoredNetwork:
    """A network read back from the warm-start cache: what ``spikeforge run`` reads of a
    :class:`~spikeforge.network.Network`, and ``build`` from the stored spec and library.
    Anything else (the models, ``value_parts`` for ``set_param``) loads the file in full."""

    def __init__(self, facts: dict, spec, source: str, initial_values, path: str, options: dict, entry: Path):
        self.name, self.dt, self.seed = facts["name"], float(facts["dt"]), int(facts["seed"])
        self.precision, self.batch_size = facts["precision"], int(facts["batch_size"])
        self.populations = {p["name"]: StoredPopulation(p["name"], int(p["size"]), bool(p["record_spikes"]))
                            for p in facts["populations"]}
        self.projections = {name: name for name in facts["projections"]}
        self.recorded_vars = [tuple(r) for r in facts["recorded_vars"]]
        self.backend = facts["backend"]
        self.spec, self.source, self.initial_values = spec, source, initial_values
        self._path, self._options, self._full, self.entry = path, options, None, entry
        self.read_seconds = 0.0

    def full(self):
        """The network, loaded from its file (sympy and all)."""
        if self._full is None:
            from .config import load_file

            self._full, _ = load_file(self._path, **self._options)
            self._full._no_warm_start()  # the file's entry is this one
            for pop in self.populations.values():  # as the stored run recorded them
                if pop.record_spikes and not self._full.populations[pop.name].record_spikes:
                    self._full.record_spikes(pop.name)
        return self._full

    def value_parts(self):
        return self.full().value_parts()

    @property
    def timed_inputs(self):
        return self.full().timed_inputs

    def build(self, backend: str = "cpu", batch_size: int | None = None, **options):
        """A Simulation from the stored spec and library (as ``Network.build``)."""
        from .runtime.backends import get_backend
        from .runtime.simulation import Simulation

        if backend != self.backend or (batch_size is not None and batch_size != self.batch_size):
            return self.full().build(backend=backend, batch_size=batch_size, **options)
        sources = get_backend(backend).sources(self.spec, self.source)
        try:
            sim = Simulation(self, backend=backend, spec=self.spec, sources=sources,
                             initial_values=self.initial_values, **options)
        except SpikeforgeError:
            raise  # the user's or the machine's (memory, compiler): the full path would say the same
        except (RuntimeError, KeyError, IndexError, ValueError) as exc:  # the entry does not fit its library
            log.warning("warm-start entry %s does not fit its library (%s); removed, the next run writes it "
                        "again", self.entry, exc)
            _remove(self.entry)
            return self.full().build(backend=backend, **options)
        sim.build_seconds += self.read_seconds  # the key and the entry: part of the build
        return sim


# --------------------------------------------------------------------------- the cache



def _read_entry(text: str, entry: Path, key: str):
    """The data and the library source of an entry (``entry.json``'s ``text``), each checked
    against its checksum; None when the compile cache no longer has the library. Raises
    ValueError for an entry that is damaged or another key's."""
    meta = json.loads(text)
    if meta.get("format") != WARM_FORMAT_VERSION or meta.get("key") != key:
        raise ValueError("format or key mismatch")
    if _digest(meta["data"]) != meta["data_sha256"]:
        raise ValueError("the stored spec does not match its checksum")
    blob = (entry / "arrays.npz").read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["arrays_sha256"]:
        raise ValueError("arrays.npz does not match its checksum")
    source = cached_source(meta["library_key"])
    if source is None or hashlib.sha256(source.encode()).hexdigest() != meta["source_sha256"]:
        return None
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return _unpack(meta["data"], arrays), source


def _check_sizes(spec, params: dict, host_vars: list, batch_size: int) -> None:
    """Every stored value array has the size of its array in ``spec``."""
    by_name = {a.name: a for a in spec.arrays}
    for name, values in [*params.items(), *host_vars]:
        if np.asarray(values).size != int(np.prod(by_name[name].shape(batch_size))):
            raise ValueError(f"stored values of {name!r} have the wrong size")

class WarmStart:
    """The warm-start entry of one ``spikeforge run``: :meth:`load` on every run,
    :meth:`store` after a cold build."""

    def __init__(self, key: str, path, options: dict):
        self.key, self.path, self.options = key, str(path), options
        self.entry = cache_dir() / "warm" / key[:2] / key
        self.key_seconds = 0.0

    @classmethod
    def for_run(cls, path, *, backend: str | None, batch_size: int | None, seed: int | None) -> WarmStart | None:
        t0 = time.perf_counter()
        key = run_key(path, backend=backend, batch_size=batch_size, seed=seed)
        if key is None:
            return None
        warm = cls(key, path, {"batch_size": batch_size, "seed": seed})
        warm.key_seconds = time.perf_counter() - t0
        return warm

    def load(self) -> tuple[StoredNetwork, StoredRunConfig] | None:
        """The stored network and run settings; None on a miss (a bad entry is removed)."""
        t0 = time.perf_counter()
        try:
            text = (self.entry / "entry.json").read_text()
        except (OSError, UnicodeDecodeError):
            return None  # no entry: a miss
        try:
            found = self._read(text)
            if found is not None:
                found[0].read_seconds = time.perf_counter() - t0 + self.key_seconds
            return found
        except Exception as exc:  # anything wrong with the entry: the full path, never a wrong result
            log.warning("warm-start entry %s is damaged (%s); it will be written again", self.entry, exc)
            _remove(self.entry)
            return None

    def _read(self, text: str):
        found = _read_entry(text, self.entry, self.key)
        if found is None:
            return None  # the compile cache lost the library: a miss, not damage
        data, source = found
        facts, run = data["network"], data["run"]
        spec = _spec_from(data["spec"])
        params, host_vars = data["params"], [tuple(v) for v in data["vars"]]
        _check_sizes(spec, params, host_vars, int(facts["batch_size"]))
        net = StoredNetwork(facts, spec, source, (params, host_vars), self.path, self.options, self.entry)
        cfg = StoredRunConfig(run["duration"], run["backend"], None if run["save"] is None else Path(run["save"]),
                              run["spike_inputs"])
        return net, cfg

    def store(self, net, cfg, sim, backend: str) -> bool:
        """Keep what the cold run of ``net`` computed (``sim`` built with
        ``keep_initial_values=True``); False (and nothing written) where it cannot be kept.
        Never raises: a run does not fail for want of a warm start."""
        try:
            return self._store(net, cfg, sim, backend)
        except Exception as exc:
            log.warning("not kept for a warm start: %s", exc)
            return False

    def _store(self, net, cfg, sim, backend: str) -> bool:
        from .runtime.backends import get_backend

        if not get_backend(backend).warm_start or sim.initial_values is None or sim.spec.custom_updates:
            return False
        params, host_vars = sim.initial_values
        data = {
            "spec": _spec_data(sim.spec),
            "network": {"name": net.name, "dt": net.dt, "seed": int(net.seed), "precision": net.precision,
                        "batch_size": int(net.batch_size), "backend": backend,
                        "populations": [{"name": p.name, "size": int(p.size), "record_spikes": bool(p.record_spikes)}
                                        for p in net.populations.values()],
                        "projections": list(net.projections), "recorded_vars": [list(r) for r in net.recorded_vars]},
            "run": {"duration": cfg.duration, "backend": cfg.backend, "spike_inputs": dict(cfg.spike_inputs),
                    "save": None if cfg.save is None else str(cfg.save)},
            "params": params, "vars": [list(v) for v in host_vars],
        }
        packer = _Packer()
        try:
            packed = packer.pack(data)
        except TypeError as exc:
            log.info("not kept for a warm start: %s", exc)
            return False
        if sum(a.nbytes for a in packer.arrays.values()) > MAX_STORED_BYTES:
            log.info("not kept for a warm start: more than %d MiB of arrays", MAX_STORED_BYTES >> 20)
            return False
        try:
            self._publish(packed, packer.arrays, sim.backend.build.key, sim.source)
        except OSError as exc:  # a read-only cache only costs the full path next time
            log.info("cannot write the warm-start entry %s: %s", self.entry, exc)
            return False
        return True

    def _publish(self, packed, arrays, library_key: str, source: str) -> None:
        parent = self.entry.parent
        parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        blob = buffer.getvalue()
        meta = {"format": WARM_FORMAT_VERSION, "key": self.key, "library_key": library_key,
                "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
                "arrays_sha256": hashlib.sha256(blob).hexdigest(), "data_sha256": _digest(packed), "data": packed}
        if self.entry.exists():  # another run published it meanwhile (a damaged one was removed when read)
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"{self.key}.tmp-", dir=parent))
        try:
            (tmp / "arrays.npz").write_bytes(blob)
            (tmp / "entry.json").write_text(json.dumps(meta))
            os.rename(tmp, self.entry)  # atomic publish; fails if another run published first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.entry.exists():
                raise


@contextlib.contextmanager
def reemitted():
    """The warnings of the block, seen (the list it gives) and then issued as they were: a
    check that warns is not marked known-good (its warning is part of what it does)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield caught
        finally:
            seen = list(caught)
    for w in seen:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


#: The logger whose messages a build computes on the full path only (how each model is
#: integrated): kept with a network's entry and said again on a hit.
CODEGEN_LOGGER = "spikeforge.codegen"


@contextlib.contextmanager
def code_generator_log():
    """Every message of the code generator's logger in the block, as ``[level, text]`` (the
    list it gives), whatever the level set; the logger's handlers get what they would anyway."""
    logger = logging.getLogger(CODEGEN_LOGGER)
    said: list = []
    shown = logger.getEffectiveLevel()

    def keep(record: logging.LogRecord) -> bool:
        said.append([record.levelno, record.getMessage()])
        return record.levelno >= shown

    level = logger.level
    logger.addFilter(keep)
    logger.setLevel(logging.DEBUG)
    try:
        yield said
    finally:
        logger.setLevel(level)
        logger.removeFilter(keep)


class NetworkWarmStart(WarmStart):
    """The warm-start entry of one ``Network.build`` (a network made in Python): the spec the
    runtime reads, the compiled library and the values computed on the host, under
    :func:`build_key`. :meth:`simulation` on every build, :meth:`store` after a cold one."""

    def __init__(self, key: str):
        super().__init__(key, "", {})
        self._said: list = []

    def simulation(self, net, backend, options: dict):
        """A Simulation of ``net`` from the entry; None on a miss (a bad entry is removed)."""
        from .runtime.simulation import Simulation

        t0 = time.perf_counter()
        try:
            text = (self.entry / "entry.json").read_text()
        except (OSError, UnicodeDecodeError):
            return None
        try:
            spec, source, initial_values = self._read_network(text, net)
        except Exception as exc:  # anything wrong with the entry: the full path, never a wrong result
            log.warning("warm-start entry %s is damaged (%s); it will be written again", self.entry, exc)
            _remove(self.entry)
            return None
        if spec is None:
            return None
        codegen = logging.getLogger(CODEGEN_LOGGER)
        for level, text in self._said:
            codegen.log(int(level), "%s", text)
        sources = backend.sources(spec, source)
        try:
            sim = Simulation(net, backend=backend.name, spec=spec, sources=sources, initial_values=initial_values,
                             **options)
        except SpikeforgeError:
            raise  # the user's or the machine's (memory, compiler): the full path would say the same
        except (RuntimeError, KeyError, IndexError, ValueError) as exc:  # the entry does not fit its library
            log.warning("warm-start entry %s does not fit its library (%s); removed", self.entry, exc)
            _remove(self.entry)
            return None
        sim.build_seconds += time.perf_counter() - t0
        return sim

    def _read_network(self, text: str, net):
        found = _read_entry(text, self.entry, self.key)
        if found is None:
            return None, None, None  # the compile cache lost the library: a miss, not damage
        data, source = found
        spec = _spec_from(data["spec"], stored_spec_class())
        spec.__dict__["_network"] = net
        self._said = [(int(level), str(text)) for level, text in data.get("log", [])]
        if spec.name != net.name or int(data["batch_size"]) != int(net.batch_size):
            raise ValueError("the entry is of another network")
        params, host_vars = data["params"], [tuple(v) for v in data["vars"]]
        _check_sizes(spec, params, host_vars, int(net.batch_size))
        return spec, source, (params, host_vars)

    def store(self, sim, said=()) -> bool:
        """Keep what the cold build ``sim`` (made with ``keep_initial_values=True``) computed
        and what the code generator said (``[level, text]``); False (and nothing written) where
        it cannot be kept. Never raises."""
        try:
            if sim.initial_values is None or sim.spec.custom_updates:
                return False
            params, host_vars = sim.initial_values
            data = {"spec": _spec_data(sim.spec), "batch_size": int(sim.batch_size), "params": params,
                    "vars": [list(v) for v in host_vars], "log": [list(x) for x in said]}
            packer = _Packer()
            packed = packer.pack(data)
            if sum(a.nbytes for a in packer.arrays.values()) > MAX_STORED_BYTES:
                log.info("not kept for a warm start: more than %d MiB of arrays", MAX_STORED_BYTES >> 20)
                return False
            self._publish(packed, packer.arrays, sim.backend.build.key, sim.source)
            return True
        except Exception as exc:  # a run does not fail for want of a warm start
            log.info("not kept for a warm start: %s", exc)
            return False


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _remove(path: Path) -> None:
    """Remove a directory so that it vanishes at once (rename first, then delete)."""
    try:
        doomed = Path(tempfile.mkdtemp(prefix=path.name + ".del-", dir=path.parent))
        os.rename(path, doomed / "x")
    except OSError:  # gone already, or not ours to remove
        return
    shutil.rmtree(doomed, ignore_errors=True)


def clear() -> int:
    """Remove every warm-start entry (the compiled libraries stay); the number removed."""
    root = cache_dir() / "warm"
    count = sum(1 for _ in root.glob("*/*/entry.json")) if root.is_dir() else 0
    shutil.rmtree(root, ignore_errors=True)
    return count


__all__ = ["WarmStart", "NetworkWarmStart", "StoredNetwork", "StoredRunConfig", "code_fingerprint", "run_key", "clear",
           "normalise", "check_key", "checked", "mark_checked", "build_key", "state_digest",
           "WARM_FORMAT_VERSION", "MAX_STORED_BYTES"]
