"""What a training job *is*, as plain JSON-ready data: the network (sizes, the hidden
model's equations, every parameter value) and the trainer's settings.

Two uses: a checkpoint records the network's description and refuses to resume another
network; the ranks of an MPI job compare a hash of the whole job's description at
start-up and refuse to train different jobs. :func:`first_difference` names the first
field where two descriptions differ, as a dotted path (``network.n_hidden``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from .model import EpropConfig


def _plain(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return float(v) if isinstance(v, float) or hasattr(v, "__float__") else str(v)


def describe_model(model) -> dict:
    """The hidden neuron model's definition: its equations as parsed (sympy's canonical
    text), threshold, reset, refractoriness, derived parameters and initial values."""
    return {
        "name": model.name,
        "odes": {o.var: str(o.rhs) for o in model.odes},
        "threshold": str(model.threshold),
        "reset": [f"{s.target} = {s.value}" for s in model.reset],
        "derived": {d: str(e) for d, e in model.derived.items()},
        "refractory": None if model.refractory is None else str(model.refractory),
        "integrator": model.integrator,
        "vars": {name: str(v.init) for name, v in model.vars.items()},
    }


def describe_network(cfg: EpropConfig) -> dict:
    """Everything that decides what the network computes and how its gradients are
    formed (not its name: that only names the compiled kernel)."""
    return {
        "n_inputs": cfg.n_inputs, "n_hidden": cfg.n_hidden, "n_outputs": cfg.n_outputs,
        "recurrent": cfg.recurrent, "dt": float(cfg.dt), "tau_out": float(cfg.tau_out), "loss": cfg.loss,
        "feedback": cfg.feedback, "surrogate": cfg.surrogate, "gamma": float(cfg.gamma),
        "reg_rate": float(cfg.reg_rate), "reg_target_hz": float(cfg.reg_target_hz), "precision": cfg.precision,
        "model": describe_model(cfg.hidden_model),
        "params": {k: float(v) for k, v in sorted(cfg.params.items())},
        "per_neuron_params": {k: [float(x) for x in v] for k, v in sorted(cfg.per_neuron_params.items())},
    }


def describe_schedule(lr) -> object:
    """A learning rate or schedule as data: a number, a schedule's class and fields, or the
    name of another callable."""
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return float(lr)
    if dataclasses.is_dataclass(lr) and not isinstance(lr, type):
        fields = {f.name: describe_schedule(getattr(lr, f.name)) if f.name == "schedule" else
                  _plain(getattr(lr, f.name)) for f in dataclasses.fields(lr)}
        return {"kind": type(lr).__name__, **fields}
    return f"{getattr(lr, '__module__', '?')}.{getattr(lr, '__qualname__', type(lr).__qualname__)}"


def canonical(obj) -> object:
    """``obj`` as JSON would give it back (tuples become lists, keys strings; order kept)."""
    return json.loads(json.dumps(obj, default=str))


def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts as one dict of dotted paths (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``);
    lists and other values are leaves."""
    out = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


MISSING = "(missing)"


def first_difference(a: dict, b: dict) -> tuple[str, object, object] | None:
    """The first dotted field where the descriptions ``a`` and ``b`` differ, in ``a``'s
    order (then ``b``'s extra fields), with both values; None when they are equal."""
    fa, fb = flatten(canonical(a)), flatten(canonical(b))
    keys = [*fa, *(k for k in fb if k not in fa)]
    # the training method first (a description without one is e-prop's): it explains the rest
    keys.sort(key=lambda k: not k.endswith("compiler.method"))
    for key in keys:
        default = "eprop" if key.endswith("compiler.method") else MISSING
        va, vb = fa.get(key, default), fb.get(key, default)
        if va != vb:
            return key, va, vb
    return None


def digest(obj) -> bytes:
    """SHA-256 of the canonical JSON text of ``obj``."""
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True).encode()).digest()


def show(value, limit: int = 60) -> str:
    """A value for an error message, shortened."""
    text = json.dumps(value) if not isinstance(value, str) or value == MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _values(v):
    arr = np.asarray(v) if not isinstance(v, str) else None
    if arr is None or arr.dtype == object:
        return str(v)
    return float(arr) if arr.ndim == 0 else [float(x) for x in arr.ravel()]


def describe_network_job(network, compiler, inputs, hidden, readout, trainable) -> dict:
    """A network trained by the compiler: every population (size, model, parameter values),
    every projection (ends, models, connectivity, delay, parameter values), the roles the
    compiler gives them and the compiler's settings (not the network's name)."""
    def pop(p):
        return {"size": p.size, "model": describe_model(p.model) if p.model.spiking else p.model.name,
                "params": {k: _values(v) for k, v in sorted(p.params.items())}}

    def proj(q):
        return {"pre": q.pre.name, "post": q.post.name, "weight_update": q.weight_update.name,
                "postsynaptic": q.postsynaptic.name, "connectivity": q.connectivity.kind,
                "synapses": int(q.n_synapses), "delay_steps": int(q.delay_steps or 0),
                "params": {k: _values(v) for k, v in sorted({**q.wu_params, **q.ps_params}.items())}}

    described = {
        "dt": float(network.dt), "precision": network.precision, "seed": int(network.seed),
        "populations": {name: pop(p) for name, p in network.populations.items()},
        "projections": {name: proj(q) for name, q in network.projections.items()},
        "roles": {"inputs": inputs, "hidden": hidden, "readout": readout, "trainable": list(trainable)},
        "compiler": _describe_compiler(compiler),
    }
    readout_kind = getattr(compiler, "readout", None)
    if readout_kind is not None and readout_kind.aggregated:  # per step: as before readouts were named
        described["compiler"]["readout"] = readout_kind.name
    return described


def _describe_compiler(compiler) -> dict:
    """The training method's settings. E-prop's carry no ``method`` key (as before there was a
    second method: its checkpoints keep loading); the time-parallel method's say
    ``method: parallel``, so a checkpoint of one method is refused by a job of the other."""
    from .parallel import ParallelCompiler

    if isinstance(compiler, ParallelCompiler):
        return {"method": "parallel", "loss": compiler.loss.name, "optimiser": compiler.optimiser.name,
                "surrogate": str(compiler.surrogate), "gamma": compiler.gamma, "spike": compiler.spike.describe(),
                "reg_rate": compiler.reg_rate, "reg_target_hz": compiler.reg_target_hz}
    feedback = compiler.feedback
    return {"loss": compiler.loss.name, "optimiser": compiler.optimiser.name,
            "feedback": ({k: f.name for k, f in feedback.items()} if isinstance(feedback, dict) else feedback.name),
            "surrogate": str(compiler.surrogate), "gamma": compiler.gamma, "reg_rate": compiler.reg_rate,
            "reg_target_hz": compiler.reg_target_hz}
