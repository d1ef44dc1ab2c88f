"""The network schema: a YAML network file -> ``(Network, RunConfig)``.

:func:`load_network` parses the text (:mod:`spikeforge.frontend.lines`) and hands it to a
:class:`NetworkReader`, built on the public reader (:class:`spikeforge.frontend.reader.Reader`)
with the readers of projections (:mod:`spikeforge.frontend.projections`) and inputs
(:mod:`spikeforge.frontend.inputs`). The keys each mapping may have are the ``*_KEYS``
tables, which :mod:`spikeforge.schema` also reads. ``docs/yaml.md`` describes the format;
:mod:`spikeforge.config` is the stable entry point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ModelError, NetworkError
from ..models.neuron import SpikeSourceArrayModel
from ..network import Network, steps_for_duration
from ..runtime.backends import backend_names
from .inputs import InputReader
from .lines import LineDict, LineList, parse, plain, show, type_name
from .projections import ProjectionReader
from .reader import VALUE_KEYS

__all__ = [
    "RunConfig", "NetworkReader", "load_network", "load_file", "TOP_LEVEL_KEYS", "BACKENDS", "POPULATION_KEYS",
]

TOP_LEVEL_KEYS = (
    "name",
    "dt",
    "seed",
    "batch_size",
    "precision",
    "duration",
    "backend",
    "save",
    "models",
    "populations",
    "projections",
    "current_sources",
    "poisson_inputs",
)
BACKENDS = backend_names()  # the registered backends (spikeforge.runtime.backends)
POPULATION_KEYS = ("size", "model", "params", "init", "record", "spikes", "timed_inputs", *VALUE_KEYS)


@dataclass
class RunConfig:
    """How to run a network loaded from YAML (what ``spikeforge run`` does with it)."""

    duration: float | None = None  # ms; None when the file gives none
    record_spikes: list[str] = field(default_factory=list)
    record_vars: list[tuple[str, str]] = field(default_factory=list)
    #: population -> spikes for Simulation.set_spike_times: (times, ids) for every batch
    #: instance alike, or a list of batch_size (times, ids) pairs
    spike_inputs: dict[str, object] = field(default_factory=dict)
    backend: str = "cpu"
    save: Path | None = None
    filename: str | None = None

    def apply_inputs(self, sim) -> None:
        """Give a built simulation the spike inputs of the file's spike-source arrays."""
        for pop, spikes in self.spike_inputs.items():
            sim.set_spike_times(pop, spikes)


class NetworkReader(ProjectionReader, InputReader):
    """Reads a network file: its top-level settings, models, populations (with their recording
    and inputs), projections, current sources and Poisson inputs."""

    def load(self, top, batch_size=None, seed=None) -> tuple[Network, RunConfig]:
        """The network and run configuration the parsed file ``top`` describes (``batch_size``
        and ``seed``, when given, override the file's)."""
        if top is None:
            self.fail("the file is empty; expected a mapping with at least 'populations'", 1)
        top = self.check_mapping(top, "top level", 1, "a mapping with keys such as name, dt, populations")
        self.check_keys(top, TOP_LEVEL_KEYS, "top level", required=("populations",))
        name = self.get_str(top, "name", "", default=self.default_name, identifier=True)
        dt = self.get_number(top, "dt", "", default=0.1, positive=True, unit="ms")
        file_seed = self.get_int(top, "seed", "", default=0)
        file_batch = self.get_int(top, "batch_size", "", default=1)
        precision = self.get_str(top, "precision", "", default="float")
        duration = self.get_number(top, "duration", "", default=None, positive=True, unit="ms")
        if duration is not None:
            with self.building(self.vline(top, "duration")):
                steps_for_duration(duration, dt)
        backend = self.get_str(top, "backend", "", default="cpu")
        if backend not in BACKENDS:
            self.fail(
                f"backend: unknown backend '{backend}' (allowed: {', '.join(BACKENDS)})", self.vline(top, "backend")
            )
        save = self.get_str(top, "save", "", default=None)
        if batch_size is not None:
            Network._check_batch(batch_size)
        hints = [
            (r"\bdt\b", "dt"),
            (r"batch_size", "batch_size"),
            (r"\bseed\b", "seed"),
            (r"precision", "precision"),
            (r"network name", "name"),
        ]
        with self.building(1, lambda err: self.hint_line(str(err), top, hints)):
            net = Network(
                name,
                dt=dt,
                batch_size=int(batch_size) if batch_size is not None else file_batch,
                seed=int(seed) if seed is not None else file_seed,
                precision=precision,
            )
        cfg = RunConfig(
            duration=None if duration is None else float(duration),
            backend=backend,
            save=None if save is None else self.base_dir / save,
            filename=self.filename,
        )
        self.load_models(top)
        self.load_populations(top, net, cfg)
        self.load_projections(top, net)
        self.load_current_sources(top, net)
        self.load_poisson_inputs(top, net)
        return net, cfg

    def load_populations(self, top, net: Network, cfg: RunConfig):
        """Add the ``populations:`` of ``top`` to ``net`` (what they record and their spike
        inputs go to ``cfg``)."""
        pops = self.get_mapping(top, "populations", "")
        if not pops:
            self.fail("populations: a network needs at least one population", self.vline(top, "populations"))
        for name, node in pops.items():
            where = f"populations.{name}"
            line = self.kline(pops, name)
            node = self.check_mapping(node, where, self.vline(pops, name), "a mapping with size and model")
            self.check_keys(node, POPULATION_KEYS, where, required=("size", "model"))
            model = self.resolve_model(node["model"], "neuron", f"{where}.model", self.vline(node, "model"))
            params = self.with_units(self.get_mapping(node, "params", where), f"{where}.params", model)
            init = self.with_units(self.get_mapping(node, "init", where), f"{where}.init", model)
            record, record_lines, record_opts = self.record_list(node, where)
            if "rate" in record and "rate" not in model.vars:  # a variable named rate keeps its meaning
                record = ["population_rate" if r == "rate" else r for r in record]
                record_lines["population_rate"] = record_lines.pop("rate")
                record_opts["population_rate"] = record_opts.pop("rate")
            is_ssa = isinstance(model, SpikeSourceArrayModel)
            if "spikes" in node and not is_ssa:
                self.fail(
                    f"{where}.spikes: spike times can only be given to a spike_source_array population "
                    f"(model here: '{model.name}')",
                    self.kline(node, "spikes"),
                )
            for what in ("spikes", "population_rate"):
                if what in record and not model.spiking:
                    self.fail(
                        f"{where}.record: population '{name}' does not spike (model '{model.name}' has no "
                        f"threshold); record its variables instead",
                        record_lines[what],
                    )

            def locate(err, node=node):
                if isinstance(err, ModelError):
                    return self.use_line(node, err)
                return self.hint_line(str(err), node, [(r"\bsize\b", "size"), (r"\bmodel\b", "model")])

            with self.building(line, locate):
                net.add_population(
                    name,
                    node["size"],
                    model,
                    params=plain(params),
                    init=plain(init),
                    record_spikes="spikes" in record,
                    **self.value_options(node, where),
                )
            for what in record:
                self.record_options(net, name, what, record_opts[what], where, record_lines[what])
                if what == "spikes":
                    cfg.record_spikes.append(name)
                elif what != "population_rate":
                    cfg.record_vars.append((name, what))
            if "timed_inputs" in node:
                self.timed_inputs(node, where, net, name)
            if "spikes" in node:
                cfg.spike_inputs[name] = self.spike_input(
                    node, where, net.populations[name].size, net.batch_size
                )

    def record_list(self, node, where):
        """``record:`` as (names, line of each, options of each): a list of names (``spikes``,
        ``rate``, variables), a mapping name -> options (``{neurons: ..., every: k}``, or
        true/null for everything), or a list mixing names and one-key such mappings."""
        if "record" not in node or node["record"] is None:
            return [], {}, {}
        value = node["record"]
        line = self.vline(node, "record")
        expected = "a list of 'spikes', 'rate' and/or variable names, or a mapping of them to options"
        if isinstance(value, str):
            items = [(value, line, None)]
        elif isinstance(value, LineDict):
            items = [(k, self.kline(value, k), value[k]) for k in value]
        elif isinstance(value, LineList):
            items = []
            for item, item_line in zip(value, value.item_lines, strict=True):
                if isinstance(item, LineDict) and len(item) == 1:
                    (k, v), = item.items()
                    items.append((k, self.kline(item, k), v))
                else:
                    items.append((item, item_line, None))
        else:
            self.fail(f"{where}.record: expected {expected}, got {type_name(value)} {show(value)}", line)
        out, out_lines, options = [], {}, {}
        for item, item_line, opts in items:
            if not isinstance(item, str) or not item.isidentifier():
                self.fail(
                    f"{where}.record: expected 'spikes', 'rate' or a variable name, got {type_name(item)} "
                    f"{show(item)}",
                    item_line,
                )
            if opts is True:
                opts = None
            if opts is False:
                continue
            if opts is not None:
                opts = self.check_mapping(opts, f"{where}.record.{item}", item_line,
                                          "a mapping with neurons and/or every (or true)")
                self.check_keys(opts, () if item == "population_rate" else ("neurons",) if item == "spikes"
                                else ("neurons", "every"), f"{where}.record.{item}")
            if item not in out_lines:
                out.append(item)
                out_lines[item] = item_line
                options[item] = opts
        return out, out_lines, options

    def record_options(self, net: Network, name: str, what: str, opts, where: str, line: int):
        """Apply one ``record:`` entry of population ``name`` (``what``: spikes, a variable or
        the population rate) with its options; errors carry the line of the option at fault."""
        opts = opts or {}
        if what == "population_rate" and opts:
            key = next(iter(opts))
            self.fail(f"{where}.record.rate: the population rate counts every neuron at every step; "
                      f"it takes no {key}", self.kline(opts, key))
        kwargs = {}
        for key in ("neurons", "every"):
            if key in opts:
                kwargs[key] = plain(opts[key])
        try:
            if what == "spikes":
                net.record_spikes(name, **kwargs)
            elif what == "population_rate":
                net.record_rate(name)
            else:
                net.record_var(name, what, **kwargs)
        except NetworkError as err:  # "<what the network calls it>: <problem>" -> the file's field and line
            problem = str(err).split(": ", 1)[-1]
            key = "every" if "every" in problem and "every" in opts else "neurons" if "neurons" in opts else None
            self.fail(f"{where}.record.{what}{'.' + key if key else ''}: {problem}",
                      self.vline(opts, key) if key else line)


def _is_path_like(x) -> bool:
    if isinstance(x, os.PathLike):
        return True
    if isinstance(x, str) and "\n" not in x and x.strip():
        return x.endswith((".yaml", ".yml")) or os.path.isfile(x)
    return False


def load_network(
    path_or_text, *, batch_size: int | None = None, filename: str | None = None, seed: int | None = None
) -> tuple[Network, RunConfig]:
    """Build the network a YAML file (a path) or YAML text describes.

    ``path_or_text`` is a path (``os.PathLike``, or a one-line string ending in ``.yaml`` /
    ``.yml`` or naming an existing file) or YAML text. ``filename`` names text in error
    messages (and its folder is where relative ``file:`` paths are looked up; default the
    current directory). ``batch_size`` and ``seed`` override the file's values.
    Returns the network and a :class:`RunConfig`.

    Examples:
        >>> from spikeforge import load_network
        >>> net, cfg = load_network('''
        ... name: tiny
        ... dt: 0.1
        ... duration: 10
        ... populations:
        ...   p: {size: 10, model: lif, record: [spikes]}
        ... ''')
        >>> net.populations["p"].size, cfg.duration
        (10, 10.0)
    """
    if _is_path_like(path_or_text):
        path = Path(path_or_text)
        shown = filename or str(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("no such file", shown) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the file: {exc}", shown) from None
        base_dir = path.resolve().parent
        stem = path.stem
    elif isinstance(path_or_text, str):
        text = path_or_text
        shown = filename or "<string>"
        base_dir = Path(filename).resolve().parent if filename else Path.cwd()
        stem = Path(filename).stem if filename else ""
    else:
        raise TypeError(f"expected a path or YAML text, got {type(path_or_text).__name__}")
    default_name = stem if stem.isidentifier() and not stem.startswith("_") else "network"
    loader = NetworkReader(shown, base_dir, default_name)
    return loader.load(parse(text, shown), batch_size=batch_size, seed=seed)


def load_file(path, *, batch_size: int | None = None, seed: int | None = None) -> tuple[Network, RunConfig]:
    """Build the network of the YAML file at ``path``; see :func:`load_network`.

    Examples:
        >>> from spikeforge import load_file
        >>> net, cfg = load_file("examples/cuba.yaml", batch_size=2)   # from the repository's root
        >>> net.name, net.batch_size, cfg.duration
        ('cuba', 2, 1000.0)
    """
    return load_network(Path(path), batch_size=batch_size, seed=seed, filename=str(path))
