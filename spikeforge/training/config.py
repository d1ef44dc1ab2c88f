"""Training jobs from YAML (``spikeforge train FILE.yaml``).

```yaml
name: digits
dt: 1.0                       # ms; the data is binned at this step
data:
  kind: digits                # evidence_accumulation | pattern_generation | digits | shd
  options: {encoding: latency}  # keyword arguments of the generator / loader
  n_samples: 1000             # generators with a size (evidence_accumulation, pattern_generation)
  test_fraction: 0.2          # held-out share, in [0, 1) (or, for shd: train: PATH, test: PATH)
  seed: 0
network:
  hidden: {model: lif_subtractive, size: 128, params: {tau_m: 20.0, v_th: 0.6, r_m: 10.0}}
  # a parameter may also vary over the hidden neurons: a list of `size` numbers, or
  # piecewise constant, e.g. ALIF's beta: {values: [0.0, 0.1], counts: [64, 64]} (LSNN)
  recurrent: true
  tau_out: 20.0               # readout time constant, ms
  feedback: symmetric         # or random (random e-prop)
  regularisation: {rate: 0.0, target_hz: 10.0}
training:
  epochs: 10
  batch_size: 32
  lr: 0.005
  lr_schedule: {kind: step, every: 10, factor: 0.5}   # optional: varies lr (see below)
  reduce: mean                # how per-instance gradients combine: mean | sum
  seed: 0
  init_scale: 1.0
  checkpoint: digits.ckpt.npz # optional; relative to this file
```
The loss follows the data: softmax cross-entropy over the readout window for
classification, mean squared error for regression (both reported as a mean per step of
the window: ln C at chance for C classes). User-defined neuron models can be
given under ``models:`` exactly as in network files (docs/yaml.md).

``training.lr_schedule`` (optional) varies the learning rate from ``training.lr``
(:mod:`spikeforge.training.schedules`; a run-time value: nothing recompiles):

* ``{kind: constant}``
* ``{kind: step, every: N, factor: F}``: ``lr * F ** (epoch // N)`` (epochs count from 0),
  ``0 < F <= 1``
* ``{kind: exponential, gamma: G, per: epoch}``: ``lr * G ** epoch`` (``per: step``:
  ``G ** steps taken``), ``0 < G <= 1``
* ``{kind: cosine, min_lr: 0.0}``: half a cosine from ``lr`` to ``min_lr`` over
  ``training.epochs`` (or ``--epochs``)
* any of them with ``warmup_steps: N``: a linear ramp over the first N optimiser steps
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MemoryLimitError, ModelError, NetworkError
from ..frontend import LineDict, Reader, parse, plain, show
from ..network import Network
from . import datasets, schedules
from .model import EpropConfig

DATA_KINDS = ("evidence_accumulation", "pattern_generation", "digits", "shd")
#: The keys of each mapping of a job file (docs/training.md, "The job file", lists them all).
JOB_KEYS = {
    "": ("name", "dt", "models", "data", "network", "training"),
    "data": ("kind", "options", "n_samples", "test_fraction", "seed", "train", "test"),
    "network": ("hidden", "recurrent", "tau_out", "feedback", "surrogate", "gamma", "regularisation", "precision"),
    "network.hidden": ("model", "size", "params"),
    "network.regularisation": ("rate", "target_hz"),
    "training": ("method", "epochs", "batch_size", "lr", "lr_schedule", "reduce", "seed", "init_scale", "checkpoint",
                 "clamp"),
}
#: A job whose ``network:`` is an ordinary network description (docs/yaml.md): the keys of its
#: ``training:`` section, which also names the roles of the network's populations and projections.
NETWORK_JOB_KEYS = {
    "training": ("inputs", "hidden", "readout", "trainable", "loss", "readout_output", "optimiser", "feedback",
                 "surrogate", "gamma", "regularisation", "spike", "chunk",
                 *(k for k in JOB_KEYS["training"] if k != "init_scale")),
    "training.optimiser": ("kind", "beta1", "beta2", "eps"),
    "training.regularisation": ("rate", "target_hz"),
}
OPTIMISERS = ("adam", "sgd")
#: training.method: e-prop (online, forward in time) or time-parallel BPTT (feed-forward networks)
METHODS = ("eprop", "parallel")
#: keys of e-prop's alone: refused, at their line, in a job of the parallel method
EPROP_ONLY = ("feedback",)
#: keys of the parallel method's alone: refused, at their line, in a job of e-prop (and why e-prop has none)
PARALLEL_ONLY = {"spike": "e-prop's spikes are the model's own threshold test",
                 "chunk": "e-prop runs forward in time, keeping no step's values"}
#: the keys of ``training.spike`` given as a mapping: ``rule`` and the options of the rules'
#: constructors (:mod:`.spike_rules`; :func:`spike_options` says which rule takes which)
SPIKE_KEYS = ("rule", "temperature", "gradient", "hard")
FEEDBACK = ("symmetric", "random")
#: For each kind of training.lr_schedule: its keys besides kind and warmup_steps, and those required.
SCHEDULE_KINDS = {
    "constant": ((), ()),
    "step": (("every", "factor"), ("every", "factor")),
    "exponential": (("gamma", "per"), ("gamma",)),
    "cosine": (("min_lr",), ()),
}


def spike_options(rule: str) -> tuple[str, ...]:
    """The options ``training.spike`` may give spike rule ``rule``: its constructor's keywords."""
    from .spike_rules import RULES

    init = RULES[rule].__init__
    if init is object.__init__:
        return ()
    return tuple(name for name, param in inspect.signature(init).parameters.items()
                 if name != "self" and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass
class TrainingJob:
    name: str
    config: EpropConfig | Network  # a Network: trainer_options name its roles and hold its compiler
    train: object
    test: object  # None when nothing is held out (test_fraction 0)
    trainer_options: dict
    epochs: int
    checkpoint: Path | None
    filename: str
    batch_size_line: int | None = None  # training.batch_size's line (of `training:` when left out)


class _TrainLoader(Reader):
    def data(self, top: LineDict, dt: float):
        node = self.get_mapping(top, "data", "")
        self.check_keys(node, JOB_KEYS["data"], "data", required=("kind",))
        kind = self.get_str(node, "kind", "data")
        if kind not in DATA_KINDS:
            self.fail(f"data.kind: unknown data set '{kind}' (known: {', '.join(DATA_KINDS)})",
                      self.vline(node, "kind"))
        options = dict(self.get_mapping(node, "options", "data"))
        options.setdefault("dt", dt)
        seed = self.get_int(node, "seed", "data", 0)
        if seed < 0:
            self.fail(f"data.seed: must be a non-negative integer, got {seed!r}", self.vline(node, "seed"))
        fraction = self.get_number(node, "test_fraction", "data", 0.2)
        if not 0 <= fraction < 1:
            self.fail(f"data.test_fraction: must be in [0, 1) (the share of the samples held out for testing), "
                      f"got {fraction!r}", self.vline(node, "test_fraction"))
        line = self.kline(node, "options") if "options" in node else self.kline(node, "kind")
        try:
            if kind == "shd":
                if "train" not in node:
                    self.fail("data: the shd data set needs 'train: PATH' (and optionally 'test: PATH')",
                              self.kline(node, "kind"))
                train = datasets.load_shd(self.base_dir / str(node["train"]), **options)
                test = datasets.load_shd(self.base_dir / str(node["test"]), **options) if "test" in node else None
                if test is None:
                    return self.split(node, train, fraction, seed)
                return train, test
            fn = getattr(datasets, kind)
            if "n_samples" in inspect.signature(fn).parameters:
                n = self.get_int(node, "n_samples", "data", 1000)
                if n < 1:
                    self.fail(f"data.n_samples: must be a positive integer, got {n!r}", self.vline(node, "n_samples"))
                full = fn(n, seed, **options)
            else:
                full = fn(seed, **options)
        except ConfigError:
            raise
        except (TypeError, ValueError, ImportError, OSError) as exc:
            raise ConfigError(f"data ({kind}): {exc}", self.filename, line) from None
        except (MemoryError, OverflowError) as exc:  # numpy refuses sizes beyond the machine before allocating
            raise MemoryLimitError(f"{self.filename}:{line}: data ({kind}): the data set does not fit in memory "
                                   f"({exc}); lower n_samples or the trial duration") from None
        return self.split(node, full, fraction, seed)

    def split(self, node: LineDict, full, fraction: float, seed: int):
        """(train, test) with ``fraction`` of the samples held out; test is None when none is."""
        train, test = full.split(1 - fraction, seed)
        if len(train) == 0:
            at = self.vline(node, "test_fraction") if "test_fraction" in node else self.kline(node, "kind")
            self.fail(f"data: no training samples: test_fraction {fraction!r} of {len(full)} samples holds out "
                      "all of them", at)
        return train, (test if len(test) else None)

    def hidden_params(self, hidden: LineDict, size) -> tuple[dict, LineDict]:
        """``network.hidden.params``: each value a number, a list of ``size`` numbers (one per
        hidden neuron) or ``{values: [...], counts: [...]}`` (piecewise constant: ``counts[k]``
        neurons take ``values[k]``, in order; the counts sum to ``size``)."""
        node = self.get_mapping(hidden, "params", "network.hidden")
        out = {}
        for key, value in node.items():
            where, line = f"network.hidden.params.{key}", self.vline(node, key)

            def numbers(v, what, at, integers=False):
                kind = "integers" if integers else "numbers"
                if not isinstance(v, list) or not v or any(
                        isinstance(x, bool) or not isinstance(x, int if integers else (int, float)) for x in v):
                    self.fail(f"{what}: expected a list of {kind}, got {show(v)}", at)
                return v

            if isinstance(value, dict):
                value = self.check_mapping(value, where, line)
                self.check_keys(value, ("values", "counts"), where, required=("values", "counts"))
                values = numbers(value["values"], f"{where}.values", self.vline(value, "values"))
                counts = numbers(value["counts"], f"{where}.counts", self.vline(value, "counts"), integers=True)
                if len(counts) != len(values) or min(counts) < 0:
                    self.fail(f"{where}.counts: expected {len(values)} non-negative integers (one per value), "
                              f"got {show(counts)}", self.vline(value, "counts"))
                if isinstance(size, int) and sum(counts) != size:
                    self.fail(f"{where}.counts: must sum to network.hidden.size = {size}, got {sum(counts)}",
                              self.vline(value, "counts"))
                out[key] = np.repeat(np.asarray(values, dtype=np.float64), counts)
            elif isinstance(value, list):
                numbers(value, where, line)
                if isinstance(size, int) and len(value) != size:
                    self.fail(f"{where}: expected one value per hidden neuron (network.hidden.size = {size}), "
                              f"got {len(value)}", line)
                out[key] = list(value)
            else:
                out[key] = value  # a single value: checked with the model's parameters
        return out, node

    def network(self, top: LineDict, name: str, dt: float, n_in: int, n_out: int, loss: str) -> EpropConfig:
        node = self.get_mapping(top, "network", "")
        self.check_keys(node, JOB_KEYS["network"], "network", required=("hidden",))
        hidden = self.get_mapping(node, "hidden", "network")
        self.check_keys(hidden, JOB_KEYS["network.hidden"], "network.hidden", required=("model", "size"))
        model = self.resolve_model(hidden["model"], "neuron", "network.hidden.model", self.vline(hidden, "model"))
        reg = self.get_mapping(node, "regularisation", "network")
        self.check_keys(reg, JOB_KEYS["network.regularisation"], "network.regularisation")
        recurrent = node.get("recurrent", True)
        if not isinstance(recurrent, bool):
            self.fail("network.recurrent: expected true or false", self.vline(node, "recurrent"))
        size = self.get_int(hidden, "size", "network.hidden")
        if "params" in hidden:  # values with units ("20 ms") in the units the model computes in
            hidden["params"] = self.with_units(self.get_mapping(hidden, "params", "network.hidden"),
                                               "network.hidden.params", model)
        params, params_node = self.hidden_params(hidden, size)

        def locate(err):  # an error about one hidden parameter: the line of its value
            return next((self.vline(params_node, k) for k in params_node if f"'{k}'" in str(err)), None)

        with self.building(self.kline(top, "network"), locate):
            return EpropConfig(
                n_in, size, n_out, model, params, recurrent=recurrent,
                tau_out=self.get_number(node, "tau_out", "network", 20.0, positive=True, unit="ms"), dt=dt, loss=loss,
                feedback=self.get_str(node, "feedback", "network", "symmetric"),
                surrogate=self.get_str(node, "surrogate", "network", "triangular"),
                gamma=self.get_number(node, "gamma", "network", 0.3),
                reg_rate=self.get_number(reg, "rate", "network.regularisation", 0.0),
                reg_target_hz=self.get_number(reg, "target_hz", "network.regularisation", 10.0, unit="Hz"),
                precision=self.get_str(node, "precision", "network", "float"), name=name,
            )

    def lr_schedule(self, training: LineDict, lr: float, epochs: int):
        """``training.lr`` as given, or the schedule ``training.lr_schedule`` builds from it."""
        if training.get("lr_schedule") is None:
            return lr
        where = "training.lr_schedule"
        node = self.get_mapping(training, "lr_schedule", "training")
        every_key = ("kind", *dict.fromkeys(k for keys, _ in SCHEDULE_KINDS.values() for k in keys), "warmup_steps")
        self.check_keys(node, every_key, where, required=("kind",))
        kind = self.get_str(node, "kind", where)
        if kind not in SCHEDULE_KINDS:
            self.fail(f"{where}.kind: unknown schedule '{kind}' (known: {', '.join(SCHEDULE_KINDS)})",
                      self.vline(node, "kind"))
        keys, required = SCHEDULE_KINDS[kind]
        self.check_keys(node, ("kind", *keys, "warmup_steps"), f"{where} (kind {kind})", required=required)

        def fraction(key):  # a factor in (0, 1]
            value = self.get_number(node, key, where, positive=True)
            if value > 1:
                self.fail(f"{where}.{key}: must be at most 1 (a decay), got {value!r}", self.vline(node, key))
            return value

        def count(key, default, least):
            value = self.get_int(node, key, where, default)
            if value < least:
                what = "positive" if least > 0 else "non-negative"
                self.fail(f"{where}.{key}: must be a {what} integer, got {value!r}", self.vline(node, key))
            return value

        with self.building(self.kline(training, "lr_schedule")):
            if kind == "constant":
                schedule = schedules.Constant(lr)
            elif kind == "step":
                schedule = schedules.StepDecay(lr, every=count("every", None, 1), factor=fraction("factor"))
            elif kind == "exponential":
                per = self.get_str(node, "per", where, "epoch")
                if per not in ("epoch", "step"):
                    self.fail(f"{where}.per: expected epoch or step, got '{per}'", self.vline(node, "per"))
                schedule = schedules.ExponentialDecay(lr, gamma=fraction("gamma"), per=per)
            else:
                min_lr = self.get_number(node, "min_lr", where, 0.0)
                if not 0 <= min_lr <= lr:
                    self.fail(f"{where}.min_lr: must be in [0, training.lr = {lr!r}], got {min_lr!r}",
                              self.vline(node, "min_lr"))
                if epochs < 1:
                    self.fail(f"{where}: kind cosine runs over training.epochs, which must be positive "
                              f"(got {epochs!r})", self.vline(training, "epochs"))
                schedule = schedules.CosineDecay(lr, epochs=epochs, min_lr=min_lr)
            warmup = count("warmup_steps", 0, 0)
            if warmup:
                schedule = schedules.Warmup(schedule, steps=warmup)
        return schedule

    def described_network(self, top: LineDict, name: str, dt: float, train) -> Network:
        """``network:`` as an ordinary network description (docs/yaml.md), read by the network
        schema's reader with this file's models; its dt is the job's."""
        from ..frontend.network import NetworkReader

        node = self.get_mapping(top, "network", "")
        if "dt" in node and self.get_number(node, "dt", "network", positive=True, unit="ms") != dt:
            self.fail(f"network.dt: must equal the job's dt ({dt!r} ms: the data is binned at it); leave it out",
                      self.vline(node, "dt"))
        for key in ("batch_size", "duration"):
            if key in node:
                self.fail(f"network.{key}: set by the training job (training.batch_size, the data's trials); "
                          "leave it out", self.kline(node, key))
        node.setdefault("name", name)
        node.setdefault("dt", dt)
        reader = NetworkReader(self.filename, self.base_dir, name)
        reader.user_models = self.user_models
        net, _ = reader.load(node)
        return net

    def role_names(self, net: Network, node: LineDict, train) -> tuple:
        """``training``'s inputs, hidden, readout and trainable, each checked against the
        network (populations and projections it has) and the data (inputs and readout sizes):
        ``(inputs, hidden as a list, readout, trainable)``."""

        def population(key):
            value = self.get_str(node, key, "training")
            if value not in net.populations:
                self.fail(f"training.{key}: no population '{value}' in network.populations "
                          f"({', '.join(net.populations)})", self.vline(node, key))
            return value

        inputs, readout = population("inputs"), population("readout")
        hidden = node["hidden"] if isinstance(node["hidden"], list) else [node["hidden"]]
        for h in hidden:
            if h not in net.populations:
                self.fail(f"training.hidden: no population {show(h)} in network.populations "
                          f"({', '.join(net.populations)})", self.vline(node, "hidden"))
        trainable = node["trainable"]
        if not isinstance(trainable, list) or not all(isinstance(t, str) for t in trainable):
            self.fail(f"training.trainable: expected a list of projection names (and '<readout>.bias'), got "
                      f"{show(trainable)}", self.vline(node, "trainable"))
        for t in trainable:
            if t not in net.projections and t != f"{readout}.bias":
                self.fail(f"training.trainable: no projection '{t}' in network.projections "
                          f"({', '.join(net.projections)}; the readout's bias is '{readout}.bias')",
                          self.vline(node, "trainable"))
        for what, pop, n in (("inputs", inputs, train.n_inputs), ("readout", readout, train.n_outputs)):
            if net.populations[pop].size != n:
                self.fail(f"training.{what}: population '{pop}' has {net.populations[pop].size} neurons, the data "
                          f"{n} {'input channels' if what == 'inputs' else 'outputs/classes'}", self.vline(node, what))
        return inputs, hidden, readout, trainable

    def roles(self, net: Network, node: LineDict, train, loss: str) -> dict:
        """The trainer's options that name the network's roles and build its compiler."""
        from .compiler import EpropCompiler
        from .objectives import READOUTS, SGD, Adam, RandomFeedback, SymmetricFeedback

        keys = NETWORK_JOB_KEYS
        self.check_keys(node, keys["training"], "training", required=("inputs", "hidden", "readout", "trainable"))
        inputs, hidden, readout, trainable = self.role_names(net, node, train)
        given = self.get_str(node, "loss", "training", loss)
        if given not in ("xent", "mse"):
            self.fail(f"training.loss: expected xent or mse, got '{given}'", self.vline(node, "loss"))
        if given != loss:
            self.fail(f"training.loss: the data is a {train.task} task, whose loss is {loss}", self.vline(node, "loss"))
        output = self.get_str(node, "readout_output", "training", "per_step")
        if output not in READOUTS:
            self.fail(f"training.readout_output: expected {', '.join(READOUTS)}, got '{output}'",
                      self.vline(node, "readout_output"))
        method = self.method(node)
        for key, why in PARALLEL_ONLY.items():
            if key in node and method != "parallel":
                self.fail(f"training.{key}: the parallel method's setting (training.method: parallel); {why}: "
                          "leave it out", self.kline(node, key))
        opt = self.get_mapping(node, "optimiser", "training")
        self.check_keys(opt, keys["training.optimiser"], "training.optimiser")
        kind = self.get_str(opt, "kind", "training.optimiser", "adam")
        if kind not in OPTIMISERS:
            self.fail(f"training.optimiser.kind: expected {' or '.join(OPTIMISERS)}, got '{kind}'",
                      self.vline(opt, "kind"))
        feedback = node.get("feedback", "symmetric")
        choices = feedback if isinstance(feedback, dict) else {None: feedback}
        for pop, fb in choices.items():
            if fb not in FEEDBACK or (pop is not None and pop not in hidden):
                self.fail("training.feedback: expected symmetric, random or {hidden population: symmetric | random}, "
                          f"got {show(plain(feedback))}", self.vline(node, "feedback"))
        reg = self.get_mapping(node, "regularisation", "training")
        self.check_keys(reg, keys["training.regularisation"], "training.regularisation")

        def make_feedback(fb):
            return RandomFeedback() if fb == "random" else SymmetricFeedback()

        with self.building(self.kline(node, "optimiser") if "optimiser" in node else node.line):
            optimiser = SGD() if kind == "sgd" else Adam(
                beta1=self.get_number(opt, "beta1", "training.optimiser", 0.9),
                beta2=self.get_number(opt, "beta2", "training.optimiser", 0.999),
                eps=self.get_number(opt, "eps", "training.optimiser", 1e-8, positive=True))
        if method == "parallel":
            compiler = self.parallel_compiler(net, node, loss, optimiser, output, (inputs, *hidden, readout), reg)
            return {"compiler": compiler, "inputs": inputs, "hidden": hidden if len(hidden) > 1 else hidden[0],
                    "readout": readout, "trainable": list(trainable)}
        with self.building(self.kline(node, "inputs")):
            compiler = EpropCompiler(
                loss=loss, optimiser=optimiser, readout=output,
                feedback=({k: make_feedback(v) for k, v in feedback.items()} if isinstance(feedback, dict)
                          else make_feedback(feedback)),
                surrogate=self.get_str(node, "surrogate", "training", "triangular"),
                gamma=self.get_number(node, "gamma", "training", 0.3),
                reg_rate=self.get_number(reg, "rate", "training.regularisation", 0.0),
                reg_target_hz=self.get_number(reg, "target_hz", "training.regularisation", 10.0, unit="Hz"))
        return {"compiler": compiler, "inputs": inputs, "hidden": hidden if len(hidden) > 1 else hidden[0],
                "readout": readout, "trainable": list(trainable)}

    def method(self, node: LineDict) -> str:
        """``training.method``: eprop (the default) or parallel."""
        method = self.get_str(node, "method", "training", "eprop")
        if method not in METHODS:
            self.fail(f"training.method: expected {' or '.join(METHODS)}, got '{method}'", self.vline(node, "method"))
        return method

    def spike_rule(self, node: LineDict):
        """``training.spike``: a rule's name, or ``{rule: NAME, <its options>}`` (the keywords of
        its constructor in :mod:`.spike_rules`); the rule object."""
        from .spike_rules import RULES

        where = "training.spike"
        value = node.get("spike", "threshold")
        if isinstance(value, dict):
            spec = self.get_mapping(node, "spike", "training")
            self.check_keys(spec, SPIKE_KEYS, where, required=("rule",))
            name, at = self.get_str(spec, "rule", where), self.vline(spec, "rule")
        else:
            spec, name = {}, self.get_str(node, "spike", "training", "threshold")
            at = self.vline(node, "spike") if "spike" in node else node.line
        if name not in RULES:
            self.fail(f"{where}: unknown spike rule '{name}' (known: {', '.join(RULES)})", at)
        allowed, options = spike_options(name), {}
        for key in spec:
            if key == "rule":
                continue
            if key not in allowed:
                self.fail(f"{where}.{key}: the {name} rule takes no {key} (its options: "
                          f"{', '.join(allowed) or 'none'})", self.kline(spec, key))
            if key == "temperature":
                options[key] = self.get_number(spec, key, where)
            elif key == "hard":
                if not isinstance(spec[key], bool):
                    self.fail(f"{where}.hard: expected true or false, got {show(plain(spec[key]))}",
                              self.vline(spec, key))
                options[key] = spec[key]
            else:
                options[key] = self.get_str(spec, key, where)
        try:
            return RULES[name](**options)
        except NetworkError as err:
            key = next((k for k in options if f"{k} must" in str(err)), None)  # the option the rule refused
            self.fail(f"{where}{'.' + key if key else ''}: {err}", self.vline(spec, key) if key else at)

    def regulariser(self, reg: LineDict) -> dict:
        """``training.regularisation`` of the parallel method: ParallelCompiler's reg_rate and reg_target_hz."""
        out = {}
        for key, name, default, unit in (("rate", "reg_rate", 0.0, None), ("target_hz", "reg_target_hz", 10.0, "Hz")):
            value = self.get_number(reg, key, "training.regularisation", default, unit=unit)
            if not 0 <= value < float("inf"):
                self.fail(f"training.regularisation.{key}: must be a finite number >= 0, got {value!r}",
                          self.vline(reg, key))
            out[name] = value
        return out

    def parallel_compiler(self, net: Network, node: LineDict, loss: str, optimiser, output: str, stack,
                          reg: LineDict):
        """The time-parallel method's compiler (its spike rule ``training.spike``, its rate
        regulariser ``training.regularisation``); what it cannot train refused at its line: e-prop's
        own keys, a recurrent projection (its line under network.projections), a layer's model
        whose dynamics are not linear or that resets (the line of the model's field under models:,
        or of the population of a built-in model)."""
        from .parallel import ParallelCompiler, check_layers

        for key in EPROP_ONLY:
            if key in node:
                self.fail(f"training.{key}: e-prop's setting; the parallel method (training.method) computes "
                          "exact gradients by backpropagation through time: leave it out", self.kline(node, key))
        projections = self.get_mapping(self._network_node, "projections", "network")

        populations = self.get_mapping(self._network_node, "populations", "network")

        def locate(err):  # a model's field, a projection or a population named in the error: its line;
            if isinstance(err, ModelError):  # else the key named
                found = self.user_model_line(err.model, err.field, str(err)) or next(
                    (self.kline(populations, p) for p in stack if net.populations[p].model.name == err.model), None)
                if found:
                    return found
            found = next((self.kline(projections, q) for q in projections if f"'{q}'" in str(err)), None)
            found = found or next((self.kline(populations, p) for p in stack if f"population '{p}'" in str(err)),
                                  None)
            return found or next((self.vline(node, k) for k in ("surrogate", "gamma") if k in node and
                                  str(err).startswith(k)), None)

        spike, regulariser = self.spike_rule(node), self.regulariser(reg)
        chunk = node.get("chunk")
        if chunk != "auto":
            chunk = self.get_int(node, "chunk", "training")
            if chunk is not None and chunk < 1:
                self.fail(f"training.chunk: must be a positive number of steps or auto, got {chunk}",
                          self.vline(node, "chunk"))
        with self.building(self.vline(node, "method"), locate):
            check_layers(net, stack[0], list(stack[1:-1]), stack[-1])
            return ParallelCompiler(loss=loss, optimiser=optimiser, readout=output, spike=spike, **regulariser,
                                    chunk=chunk, surrogate=self.get_str(node, "surrogate", "training", "triangular"),
                                    gamma=self.get_number(node, "gamma", "training", 0.3))

    def job(self, top) -> TrainingJob:
        top = self.check_mapping(top, "the file", 1)
        self.check_keys(top, JOB_KEYS[""], "the file", required=("data", "network"))
        name = self.get_str(top, "name", "", self.default_name, identifier=True)
        dt = self.get_number(top, "dt", "", 1.0, positive=True, unit="ms")
        self.load_models(top)
        train, test = self.data(top, dt)
        loss = "xent" if train.task == "classification" else "mse"
        node = self.get_mapping(top, "training", "")
        described = "populations" in self.get_mapping(top, "network", "")
        if described:  # an ordinary network and the roles of its parts
            self._network_node = self.get_mapping(top, "network", "")
            cfg = self.described_network(top, name, dt, train)
            roles = self.roles(cfg, node, train, loss)
        else:
            cfg, roles = self.network(top, name, dt, train.n_inputs, train.n_outputs, loss), {}
            self.check_keys(node, JOB_KEYS["training"], "training")
            if self.method(node) == "parallel":
                self.fail("training.method: the parallel method trains a network description (network.populations "
                          "and network.projections, with training.inputs, hidden, readout and trainable)",
                          self.vline(node, "method"))
        lr = self.get_number(node, "lr", "training", 1e-3)
        if lr < 0:
            self.fail(f"training.lr: must not be negative, got {lr!r}", self.vline(node, "lr"))
        if lr == 0:
            self.fail("training.lr: must be positive (a learning rate of 0 learns nothing)", self.vline(node, "lr"))
        epochs = self.get_int(node, "epochs", "training", 10)
        if epochs < 1:
            self.fail(f"training.epochs: must be a positive integer, got {epochs!r}", self.vline(node, "epochs"))
        for key in ("batch_size",):
            if key in node and self.get_int(node, key, "training") < 1:
                self.fail(f"training.{key}: must be a positive integer, got {node[key]!r}", self.vline(node, key))
        options = {
            "batch_size": self.get_int(node, "batch_size", "training", 32),
            "lr": self.lr_schedule(node, lr, epochs),
            "reduce": self.get_str(node, "reduce", "training", "mean"),
            "seed": self.get_int(node, "seed", "training", 0),
            "init_scale": self.get_number(node, "init_scale", "training", 1.0, positive=True),
        }
        if options["reduce"] not in ("mean", "sum"):
            self.fail(f"training.reduce: expected mean or sum, got '{options['reduce']}'", self.vline(node, "reduce"))
        if options["seed"] < 0:
            self.fail(f"training.seed: must be a non-negative integer, got {options['seed']!r}",
                      self.vline(node, "seed"))
        if "clamp" in node:
            clamp = node["clamp"]
            if not (isinstance(clamp, list) and len(clamp) == 2
                    and all(isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c)
                            for c in clamp) and clamp[0] < clamp[1]):
                self.fail(f"training.clamp: expected [low, high], two finite numbers with low < high, got "
                          f"{show(clamp)}", self.vline(node, "clamp"))
            options["clamp"] = tuple(clamp)
        ckpt = self.get_str(node, "checkpoint", "training")
        if described:
            options.pop("init_scale")
        options.update(roles)
        return TrainingJob(name, cfg, train, test, options, epochs, self.base_dir / ckpt if ckpt else None,
                           self.filename, self.vline(node, "batch_size") if "batch_size" in node else
                           self.kline(top, "training"))


def load_training(path) -> TrainingJob:
    """Read a training job from the YAML file at ``path`` (errors name the file and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", str(path)) from None
    stem = path.stem if path.stem.isidentifier() else "eprop"
    loader = _TrainLoader(str(path), path.resolve().parent, stem)
    return loader.job(parse(text, str(path)))
