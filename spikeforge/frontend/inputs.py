"""Inputs in a network file: spike times and timed inputs of populations, current sources
and Poisson inputs.

Part of the network schema (:mod:`spikeforge.frontend.network`), on the public reader
(:class:`spikeforge.frontend.reader.Reader`).
"""

from __future__ import annotations

import numpy as np

from .. import units as _units
from ..errors import ModelError, NetworkError
from ..network import Network
from .lines import LineDict, copy_lines, dotted, plain, show, type_name
from .reader import VALUE_KEYS, Reader

__all__ = ["InputReader", "TIMED_INPUT_KEYS", "SPIKES_KEYS", "CURRENT_SOURCE_KEYS", "POISSON_INPUT_KEYS"]

TIMED_INPUT_KEYS = ("file", "key", "values", "dt")
CURRENT_SOURCE_KEYS = ("population", "model", "params", "init", *VALUE_KEYS)
POISSON_INPUT_KEYS = ("population", "target", "n", "rate", "weight")
SPIKES_KEYS = ("times", "ids", "batch", "file")


class InputReader(Reader):
    """Reads the inputs of a network file (see the module's docstring)."""

    def timed_inputs(self, node, where, net: Network, pop: str):
        """``timed_inputs: {param: {file: x.npz, key: name, dt: ms}}`` (or ``{values: [...], dt: ms}``):
        parameters that follow an array over time (see spikeforge.timed)."""
        where = f"{where}.timed_inputs"
        inputs = self.check_mapping(node["timed_inputs"], where, self.vline(node, "timed_inputs"),
                                    "a mapping of parameter names to {file, key, dt}")
        for param, spec in inputs.items():
            at = f"{where}.{param}"
            spec = self.check_mapping(spec, at, self.vline(inputs, param), "a mapping with file, key and dt")
            self.check_keys(spec, TIMED_INPUT_KEYS, at, required=("dt",))
            dt = self.get_number(spec, "dt", at, positive=True, unit="ms")
            if ("file" in spec) == ("values" in spec):
                self.fail(f"{at}: give either file (with key) or values", self.kline(inputs, param))
            if "values" in spec:
                if "key" in spec:
                    self.fail(f"{at}.key: key goes with file, not with values", self.kline(spec, "key"))
                values_line = self.vline(spec, "values")
                try:
                    values = np.asarray(plain(spec["values"]), dtype=np.float64)
                except (TypeError, ValueError):
                    self.fail(f"{at}.values: expected a list (or nested lists) of numbers", values_line)
            else:
                if "key" not in spec:
                    self.fail(f"{at}: file needs key, the name of the array in the .npz", self.kline(inputs, param))
                rel = self.get_str(spec, "file", at)
                key = self.get_str(spec, "key", at)
                path = self.base_dir / rel
                values_line = self.vline(spec, "key")
                try:
                    with np.load(path, allow_pickle=False) as data:
                        names = list(data.files)
                        values = np.asarray(data[key]) if key in names else None
                except FileNotFoundError:
                    self.fail(f"{at}.file: no such file {str(path)!r} (relative paths are relative to the YAML "
                              "file)", self.vline(spec, "file"))
                except (OSError, ValueError) as exc:
                    self.fail(f"{at}.file: cannot read {str(path)!r} as .npz: {exc}", self.vline(spec, "file"))
                if values is None:
                    self.fail(f"{at}.key: {str(path)!r} has no array {key!r} (arrays: "
                              f"{', '.join(sorted(names)) or 'none'})", values_line)
                if values.dtype.kind not in "iuf":
                    self.fail(f"{at}.key: array {key!r} holds {values.dtype}, not numbers", values_line)
            with self.building(values_line):
                net.add_timed_input(pop, param, values, dt)

    def spike_input(self, node, where, size: int, batch_size: int):
        """The ``spikes:`` of a spike-source array population of ``size`` neurons: ``(times, ids)``
        for every batch instance alike, or one such pair per batch instance when a batch is given."""
        where = f"{where}.spikes"
        spikes = self.check_mapping(
            node["spikes"], where, self.vline(node, "spikes"), "a mapping with times and ids, or with file"
        )
        self.check_keys(spikes, SPIKES_KEYS, where)
        if "file" in spikes:
            times, ids, batch, lines = self.spikes_from_file(spikes, where)
        else:
            times, ids, batch, lines = self.spikes_from_lists(spikes, where)
        times = np.asarray(times)
        if times.dtype.kind not in "iuf" or times.ndim != 1 or not np.all(np.isfinite(times)):
            self.fail(f"{where}.times: expected a 1-d list of finite numbers (ms)", lines["times"])
        if times.size and times.min() < 0:
            self.fail(f"{where}.times: spike times must not be negative, got {times.min()}", lines["times"])
        for key, arr, hi in (("ids", ids, size), ("batch", batch, batch_size)):
            if arr is None:
                continue
            if arr.ndim != 1 or arr.shape != times.shape:
                self.fail(
                    f"{dotted(where, key)}: expected {times.size} entries (one per spike time), got {arr.size}",
                    lines[key],
                )
            if arr.size and (
                arr.dtype.kind not in "iuf"
                or not np.all(arr == np.round(arr))
                or arr.min() < 0
                or arr.max() >= hi
            ):
                what = "neuron ids" if key == "ids" else "batch instances"
                self.fail(f"{where}.{key}: {what} must be integers in [0, {hi})", lines[key])
        times = times.astype(np.float64)
        ids = ids.astype(np.int64)
        if batch is None:
            return (times, ids)
        batch = batch.astype(np.int64)
        return [(times[batch == b], ids[batch == b]) for b in range(batch_size)]

    def spikes_from_file(self, spikes: LineDict, where: str):
        """``{file: x.npz}``: its arrays times, ids and batch (None when absent), and the line
        errors about each point at."""
        extra = [k for k in spikes if k != "file"]
        if extra:
            self.fail(
                f"{where}: give either file or times/ids/batch, not both", self.kline(spikes, extra[0])
            )
        rel = self.get_str(spikes, "file", where)
        path = self.base_dir / rel
        line = self.vline(spikes, "file")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except FileNotFoundError:
            self.fail(
                f"{where}.file: no such file {str(path)!r} "
                "(relative paths are relative to the YAML file)",
                line,
            )
        except (OSError, ValueError) as exc:
            self.fail(f"{where}.file: cannot read {str(path)!r} as .npz: {exc}", line)
        missing = [k for k in ("times", "ids") if k not in arrays]
        if missing:
            self.fail(
                f"{where}.file: {str(path)!r} has no array(s) {', '.join(missing)} "
                f"(arrays: {', '.join(sorted(arrays)) or 'none'}; "
                "expected times, ids and optional batch)",
                line,
            )
        lines = {"times": line, "ids": line, "batch": line}
        return arrays["times"], arrays["ids"], arrays.get("batch"), lines

    def spikes_from_lists(self, spikes: LineDict, where: str):
        """``{times: [...], ids: [...], batch: [...]}``: the arrays (batch None when absent; times
        in ms, values with units converted) and the line of each."""
        self.check_keys(spikes, SPIKES_KEYS, where, required=("times", "ids"))
        lines = {k: self.vline(spikes, k) for k in ("times", "ids", "batch")}
        for k in ("times", "ids", "batch"):
            if k in spikes and not isinstance(spikes[k], list):
                self.fail(
                    f"{where}.{k}: expected a list, got {type_name(spikes[k])} {show(spikes[k])}",
                    lines[k],
                )
        times = plain(self.unit_value(spikes, "times", where, "ms"))  # values with units: to ms
        try:
            times = np.asarray(times, dtype=float)
        except (TypeError, ValueError):
            self.fail(f"{where}.times: expected a list of numbers (ms)", lines["times"])
        ids = np.asarray(plain(spikes["ids"]))
        batch = np.asarray(plain(spikes["batch"])) if "batch" in spikes else None
        return times, ids, batch, lines

    def get_population(self, node, where: str, net: Network) -> str:
        """The ``population`` key of ``node``: the name of a population of ``net``."""
        pop = self.get_str(node, "population", where)
        if pop not in net.populations:
            self.fail(
                f"{where}.population: unknown population '{pop}' (populations: {', '.join(net.populations)})",
                self.vline(node, "population"),
            )
        return pop

    def _entries(self, top, section: str, net: Network, keys, required: tuple):
        """The checked entries of the ``section:`` mapping of ``top``, each a mapping with the
        ``keys`` allowed (``required`` among them) and a ``population`` of ``net``: yields
        ``(name, node, where, line, population)``."""
        entries = self.get_mapping(top, section, "")
        for name, node in entries.items():
            where = f"{section}.{name}"
            node = self.check_mapping(node, where, self.vline(entries, name), f"a mapping with {_listed(required)}")
            self.check_keys(node, keys, where, required=required)
            yield name, node, where, self.kline(entries, name), self.get_population(node, where, net)

    def load_current_sources(self, top, net: Network):
        """Add the ``current_sources:`` of ``top`` to ``net``."""
        entries = self._entries(top, "current_sources", net, CURRENT_SOURCE_KEYS, ("population", "model"))
        for name, node, where, line, pop in entries:
            model = self.resolve_model(
                node["model"], "current_source", f"{where}.model", self.vline(node, "model")
            )
            target = net.populations[pop].model
            params = self.with_units(self.get_mapping(node, "params", where), f"{where}.params", model, target=target)
            init = self.with_units(self.get_mapping(node, "init", where), f"{where}.init", model, target=target)

            def locate(err, node=node):
                if isinstance(err, ModelError):
                    return self.use_line(node, err)
                return None

            with self.building(line, locate):
                net.add_current_source(name, pop, model, params=plain(params), init=plain(init),
                                       **self.value_options(node, where))

    def load_poisson_inputs(self, top, net: Network):
        """Add the ``poisson_inputs:`` of ``top`` to ``net``."""
        required = ("population", "target", "n", "rate", "weight")
        for name, node, where, line, pop in self._entries(top, "poisson_inputs", net, POISSON_INPUT_KEYS, required):
            target = self.get_str(node, "target", where)
            node = copy_lines(node)  # values with units: rate in Hz, weight in the unit of the target
            node["rate"] = self.unit_value(node, "rate", where, "Hz")
            model = net.populations[pop].model
            if target not in model.vars:
                self.fail(f"{where}.target: population '{pop}' (model '{model.name}') has no variable "
                          f"'{target}' (variables: {', '.join(model.vars) or 'none'})", self.vline(node, "target"))

            def weight_in_target_unit(text, at_line, model=model, target=target, where=where):
                try:
                    return _units.convert_for(text, model, target)
                except _units.UnitError as err:
                    self.fail(f"{where}.weight: {err}", at_line)

            node["weight"] = self.map_quantities(node["weight"], f"{where}.weight", self.vline(node, "weight"),
                                                 weight_in_target_unit)
            n = self.get_int(node, "n", where)
            if n < 1:
                self.fail(f"{where}.n: the number of sources must be a positive integer, got {n!r}",
                          self.vline(node, "n"))
            rate = self.get_number(node, "rate", where)
            if rate < 0:
                self.fail(f"{where}.rate: must not be negative, got {rate!r} Hz", self.vline(node, "rate"))
            weight = self.get_number(node, "weight", where)

            try:
                net.add_poisson_input(name, pop, target, n, rate, weight)
            except NetworkError as err:  # name the field it is about, at its line
                message = str(err).removeprefix(f"poisson input '{name}': ")
                key = "target" if "target" in message or "variable" in message else \
                    "rate" if "n * rate" in message else "n" if message.startswith("n (") else None
                if key is None:
                    self.fail(f"{where}: {message}", line)
                self.fail(f"{where}.{key}: {message}", self.vline(node, key))


def _listed(names) -> str:
    """``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
