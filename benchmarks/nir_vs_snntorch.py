"""NIR between spikeforge and snnTorch: the same networks, spike for spike, both ways.

Three checks, each a network written by one side, exchanged as a NIR graph, run by the other:

1. **Recurrent network** (snnTorch -> spikeforge): 12 inputs -> 40 recurrent CubaLIF neurons
   (snnTorch ``RSynaptic``, all to all, its recurrent ``Linear`` with a bias) -> 7 ``Leaky``
   outputs, random weights. ``export_to_nir`` writes it; spikeforge imports it (``from_nir``,
   ``discretisation="euler"``, reset by subtraction, to zero and by subtraction a step later
   (``subtract_delayed``, snnTorch's default), batch of 100) and so does
   snnTorch (``import_from_nir``). 100 random input currents (uniform in [0, 1)) of 256 steps
   drive all of them; the hidden and output rasters, spikeforge's aligned by
   ``net.nir_import.steps_behind``, are compared entry by entry, and each trial's output class
   (argmax of the output membrane summed over the trial), in float32 and float64 (snnTorch's
   modules in double too). snnTorch 1.0's ``RSynaptic`` crashes with ``reset_delay=False`` (the
   reset in the step of the spike, NIR's definition) and cannot run in float64: the original
   runs with both repaired on the instance, and once as snnTorch runs it by default
   (``reset_delay=True``: the reset a step later). numpy models of the graph (NIR's reset,
   snnTorch's reset rule, the wiring of snnTorch's import) show which rule each side follows.
2. **Digits MLP** (snnTorch -> spikeforge): a ``Leaky`` MLP 64 -> 100 -> 10 (snnTorch's default
   reset: by subtraction, a step later) trained with BPTT for 2 epochs on scikit-learn's 8x8
   digits (each image a constant current for 25 steps), exported, run in spikeforge in one batch
   (``reset="subtract_delayed"``, and NIR's ``subtract`` next to a numpy model of it): the
   fraction of test samples whose 10 output spike counts are identical, both test accuracies
   (class: argmax of the counts).
3. **Export the other way** (spikeforge -> snnTorch): spikeforge's e-prop job
   examples/digits.yaml (latency-coded digits, 512 LIF, leaky readout) trained through the
   Trainer, ``to_nir(trainer)``, ``import_from_nir`` in snnTorch, test accuracy there against
   spikeforge's own. snnTorch's import steps every graph with dt = 1e-4 s, resets to zero and
   has no ``LI`` node (the readout): the script rescales the LIF's time constants so that
   snnTorch's step is spikeforge's, sets the reset back to subtraction (snnTorch's rule, and
   NIR's through a forward hook), writes the readout as ``y = kappa y + (1 - kappa)(W z + b)``
   and delays the input by the readout's steps behind.

Every convention difference met on the way is printed at the end (also in --json).

spikeforge runs in this interpreter (it needs scikit-learn for the digits), snnTorch in the
virtual environment ``benchmarks/.env-torch`` (see benchmarks/eprop_vs_snntorch.py), or the
interpreter ``--torch-python`` names; the two exchange .nir and .npz files in a temporary folder
(``--keep DIR`` keeps them). Without snnTorch there is nothing to compare: the script says so
and exits 1 (it is not in the smoke tests).

    python benchmarks/nir_vs_snntorch.py [--json out.json]   # ~2 min on 2 cores
    python benchmarks/nir_vs_snntorch.py --quick             # smoke run, ~30 s
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402  (only the standard library at module level)
    BenchmarkError,
    common_parser,
    describe_machine,
    finish_args,
    fmt,
    git_revision,
    machine_info,
    print_table,
    run_json,
    thread_env,
    write_json,
)

TORCH_PYTHON = HERE / ".env-torch" / "bin" / "python"
SNNTORCH_DT = 1e-4  # seconds: the time step snnTorch's export and import assume (hard-coded in snnTorch 1.0)
# the recurrent network
N_IN, N_REC, N_OUT = 12, 40, 7
ALPHA, BETA, BETA_OUT = 0.8, 0.9, 0.9  # snnTorch's syn and mem decay per step
# the digits MLP
MLP_HIDDEN, MLP_STEPS = 100, 25
TARGETS = {"f32": 99.9, "f64": 100.0, "argmax": 99.0, "accuracy_points": 1.0}


# =========================================================================== snnTorch side


def _torch_env(cfg):
    import torch

    torch.set_num_threads(cfg["threads"])
    return torch


def _patch_rsynaptic(module, mechanism: str, immediate: bool):
    """Two repairs to an snnTorch 1.0 ``RSynaptic`` instance (its class stays ``RSynaptic``, so
    the export still knows it). Its spikes are float32 in any dtype (the surrogate's forward
    returns ``.float()``), which its own float64 recurrent Linear refuses: they are cast to the
    input's dtype (0 and 1, exact). With ``immediate``, it resets in the step of its spike (NIR's
    definition): its own ``reset_delay=False`` path crashes with ``init_hidden=True`` (it divides
    the ``spk`` argument, None) and otherwise resets a local copy of ``mem``; this is
    ``Synaptic``'s code for it."""
    import types

    original = type(module).forward

    def forward(self, input_):
        spk = original(self, input_)  # built with reset_delay=True: its delayed reset is undone below
        self.spk = spk = spk.to(input_.dtype)
        if immediate:
            do_reset = spk / self.graded_spikes_factor - self.reset
            if mechanism == "subtract":
                self.mem = self.mem - do_reset * self.threshold
            else:
                self.mem = self.mem - do_reset * self.mem
        return spk

    module.forward = types.MethodType(forward, module)


def _recurrent_net(seed: int, reset: str, immediate: bool):
    import snntorch as snn
    import torch

    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(N_IN, N_REC)
            self.rsyn = snn.RSynaptic(alpha=ALPHA, beta=BETA, linear_features=N_REC, all_to_all=True,
                                      reset_mechanism=reset, init_hidden=True)  # reset_delay=True (see above)
            self.fc2 = torch.nn.Linear(N_REC, N_OUT)
            # per-neuron values: snnTorch's export gives a scalar Leaky no input type
            self.out = snn.Leaky(beta=torch.full((N_OUT,), BETA_OUT), threshold=torch.ones(N_OUT),
                                 reset_mechanism=reset, reset_delay=not immediate, init_hidden=True, output=True)

        def forward(self, x):
            hidden = self.rsyn(self.fc1(x))
            spk, mem = self.out(self.fc2(hidden))
            return hidden, spk, mem

    net = Net()
    with torch.no_grad():
        net.fc1.weight.normal_(0.0, 0.12)
        net.fc1.bias.normal_(0.0, 0.01)
        net.rsyn.recurrent.weight.normal_(0.0, 0.05)
        net.rsyn.recurrent.bias.normal_(0.0, 0.005)
        net.fc2.weight.normal_(0.0, 0.15)
        net.fc2.bias.normal_(0.0, 0.01)
    _patch_rsynaptic(net.rsyn, reset, immediate)
    return net


def _reset(net):
    """Zero every snnTorch neuron's state (its ``spk`` too: ``RSynaptic.reset_mem`` keeps it)."""
    import snntorch as snn
    import torch

    for m in net.modules():
        if isinstance(m, snn.SpikingNeuron):
            m.reset_mem()
            if isinstance(getattr(m, "spk", None), torch.Tensor):
                m.spk = torch.zeros_like(m.spk)


def _run_original(net, x, dtype):
    import torch

    net = net.to(dtype)
    _reset(net)
    hid, spk, mem = [], [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            h, s, m = net(torch.from_numpy(x[t]).to(dtype))
            hid.append(h.numpy() > 0)
            spk.append(s.numpy() > 0)
            mem.append(m.numpy().copy())
    import numpy as np

    return np.array(hid), np.array(spk), np.array(mem)


def _run_reimported(graph, x, dtype):
    """snnTorch's own import of ``graph`` (a GraphModule from nirtorch): its hidden and output
    spikes (forward hooks) and the output membrane."""
    import numpy as np
    import snntorch as snn
    import torch
    from snntorch.import_nir import import_from_nir

    module = import_from_nir(graph).to(dtype)
    cuba = [m for m in module.modules() if isinstance(m, (snn.Synaptic, snn.RSynaptic))][0]
    leaky = [m for m in module.modules() if isinstance(m, snn.Leaky)][0]
    seen = {}

    def hook(mod, args, out):  # keep the hidden spikes, in the module's dtype (snnTorch's are float32)
        spk = (out[0] if isinstance(out, tuple) else out).to(dtype)
        seen["hid"] = spk
        return (spk, *out[1:]) if isinstance(out, tuple) else spk

    cuba.register_forward_hook(hook)
    hid, spk, mem = [], [], []
    state = None
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = module(torch.from_numpy(x[t]).to(dtype), state)
            out = out[0] if isinstance(out, tuple) else out
            hid.append(seen["hid"].numpy() > 0)
            spk.append(out.numpy() > 0)
            mem.append(leaky.mem.numpy().copy())
    return np.array(hid), np.array(spk), np.array(mem), {
        "cuba_class": type(cuba).__name__, "cuba_reset": cuba.reset_mechanism, "cuba_reset_delay": cuba.reset_delay,
        "leaky_reset": leaky.reset_mechanism, "leaky_threshold": float(np.ravel(leaky.threshold.numpy())[0]),
        "leaky_beta": float(np.ravel(leaky.beta.numpy())[0])}


def _in_float64(graph):
    """snnTorch's export of the float64 network: the float32 one's weights (exact in float64) and
    its LIF/CubaLIF fields recomputed from beta and alpha in float64, as export_to_nir does."""
    import nir
    import numpy as np

    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            beta = np.float64(np.float32(BETA_OUT))
            node.tau = np.full_like(node.tau, SNNTORCH_DT / (1 - beta), dtype=np.float64)
            node.r = node.tau / SNNTORCH_DT
        elif isinstance(node, nir.CubaLIF):
            alpha, beta = np.float64(np.float32(ALPHA)), np.float64(np.float32(BETA))
            node.tau_syn = np.full_like(node.tau_syn, SNNTORCH_DT / (1 - alpha), dtype=np.float64)
            node.tau_mem = np.full_like(node.tau_mem, SNNTORCH_DT / (1 - beta), dtype=np.float64)
            node.r = node.tau_mem / SNNTORCH_DT
            node.w_in = node.tau_syn / SNNTORCH_DT
        for name in ("weight", "bias"):
            if hasattr(node, name):
                setattr(node, name, np.asarray(getattr(node, name), dtype=np.float64))


def torch_recurrent(cfg: dict, work: Path) -> dict:
    """Part 1, snnTorch's side: export, the original's rasters and the reimported one's."""
    import copy

    import nir
    import numpy as np
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    x = np.load(work / "recurrent_input.npz")["x"]  # (steps, batch, N_IN) float64
    out = {"snntorch": snn.__version__, "torch": torch.__version__, "nir": nir.__version__, "graphs": {}}
    for dtype_name, dtype in (("f32", torch.float32), ("f64", torch.float64)):
        xd = x.astype(np.float32) if dtype is torch.float32 else x
        graph = export_to_nir(_recurrent_net(cfg["seed"], "subtract", True), torch.zeros(N_IN))
        if dtype is torch.float64:  # traced in float32 (a float64 network's spikes are float32: the trace
            _in_float64(graph)      # breaks); its time constants recomputed in float64 by the export's formulas
        nir.write(work / f"recurrent_{dtype_name}.nir", graph)
        out["graphs"][dtype_name] = {k: type(v).__name__ for k, v in graph.nodes.items()}
        lif = graph.nodes["rsyn.lif"]
        out["exported_cubalif"] = {k: float(np.ravel(getattr(lif, k))[0]) for k in
                                   ("tau_syn", "tau_mem", "r", "w_in", "v_threshold", "v_reset", "v_leak")}
        arrays = {}
        for reset, immediate in (("subtract", True), ("zero", True), ("subtract", False)):
            key = f"{reset}_{'now' if immediate else 'delayed'}"
            h, s, m = _run_original(_recurrent_net(cfg["seed"], reset, immediate), xd, dtype)
            arrays.update({f"{key}_hid": h, f"{key}_spk": s, f"{key}_mem": m})
        # the graph as exported: read back from the file (nodes in another order), nirtorch 2.6 fails on it
        h, s, m, info = _run_reimported(copy.deepcopy(graph), xd, dtype)
        arrays.update(reimport_hid=h, reimport_spk=s, reimport_mem=m)
        out["reimport"] = info
        np.savez_compressed(work / f"recurrent_snntorch_{dtype_name}.npz", **arrays)
    return out


def torch_mlp(cfg: dict, work: Path) -> dict:
    """Part 2, snnTorch's side: train the Leaky MLP, export it, its test spike counts."""
    import nir
    import numpy as np
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from snntorch.export_nir import export_to_nir

    d = np.load(work / "digits.npz")
    xtr, ytr, xte, yte = (torch.from_numpy(d[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    torch.manual_seed(cfg["seed"])
    grad = surrogate.fast_sigmoid(slope=25)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, MLP_HIDDEN),
        snn.Leaky(beta=torch.full((MLP_HIDDEN,), 0.9), threshold=torch.ones(MLP_HIDDEN), spike_grad=grad,
                  reset_mechanism="subtract", init_hidden=True),  # snnTorch's default reset: a step later
        torch.nn.Linear(MLP_HIDDEN, 10),
        snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), spike_grad=grad,
                  reset_mechanism="subtract", init_hidden=True, output=True),
    )

    def counts(xb):
        _reset(net)
        total = 0
        for _ in range(MLP_STEPS):
            spk, _ = net(xb)
            total = total + spk
        return total

    opt = torch.optim.Adam(net.parameters(), lr=cfg["mlp_lr"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    t0 = time.perf_counter()
    for _ in range(cfg["mlp_epochs"]):
        order = torch.randperm(len(xtr), generator=gen)
        for k in range(0, len(xtr), 32):
            idx = order[k:k + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(counts(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        c = counts(xte).numpy()
    graph = export_to_nir(net, torch.zeros(64))
    nir.write(work / "mlp.nir", graph)
    np.savez_compressed(work / "mlp_snntorch.npz", counts=c)
    return {"train_seconds": train_s, "accuracy": float((c.argmax(1) == d["y_test"]).mean()),
            "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()}}


#: part 3's ways of running spikeforge's graph in snnTorch: as imported; with its time constants
#: rescaled to snnTorch's step; and its reset set back to subtraction, by snnTorch's rule or by
#: NIR's (a forward hook), in float32 and float64
DIGITS_MODES = ("as_imported", "dt_matched", "dt_matched_subtract", "dt_matched_nir_subtract",
                "dt_matched_nir_subtract_f64")


def torch_import_digits(cfg: dict, work: Path) -> dict:
    """Part 3, snnTorch's side: import spikeforge's trained digits network, test accuracy."""
    import nir
    import numpy as np
    import snntorch as snn
    import torch
    from snntorch.import_nir import import_from_nir

    graph = nir.read(work / "digits_spikeforge.nir")
    d = np.load(work / "digits_test_raster.npz")
    x, labels, mask, shift = d["x"], d["y"], d["mask"], int(d["shift"])
    dt_s = float(graph.metadata["dt"])
    out = {"graph_dt_s": dt_s, "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()}}
    readout = [k for k, v in graph.nodes.items() if isinstance(v, (nir.LI, nir.CubaLI))]
    li = graph.nodes[readout[0]]
    kappa = float(np.exp(-dt_s / np.ravel(li.tau)[0]))
    # snnTorch's import has no LI: the readout (LI and its Output) is left out of the graph it
    # imports and computed below as a Leaky without reset (y = kappa y + (1 - kappa) (W z + b))
    into_li = [s for s, t in graph.edges if t == readout[0]][0]
    affine = graph.nodes[into_li]
    hidden_nodes = [k for k, v in graph.nodes.items() if isinstance(v, nir.LIF)]
    lif = graph.nodes[hidden_nodes[0]]
    results = {}
    for mode in DIGITS_MODES:
        nodes = {k: v for k, v in graph.nodes.items() if k not in (readout[0], into_li)
                 and not isinstance(v, nir.Output)}
        nodes["hidden_output"] = nir.Output(output_type=np.array([lif.tau.size]))
        if mode != "as_imported":  # snnTorch steps 1e-4 s: time constants such that 1 - 1e-4 / tau' = exp(-dt / tau)
            decay = np.exp(-dt_s / np.asarray(lif.tau, dtype=np.float64))
            tau = SNNTORCH_DT / (1.0 - decay)
            nodes[hidden_nodes[0]] = nir.LIF(tau=tau, r=lif.r, v_leak=lif.v_leak, v_threshold=lif.v_threshold,
                                             v_reset=lif.v_reset)
        edges = [(s, t) for s, t in graph.edges if t not in (into_li, readout[0]) and s != readout[0]
                 and not isinstance(graph.nodes[t], nir.Output)]
        edges.append((hidden_nodes[0], "hidden_output"))
        module = import_from_nir(nir.NIRGraph(nodes=nodes, edges=edges))
        leaky = [m for m in module.modules() if isinstance(m, snn.Leaky)][0]
        info = {"beta": float(np.ravel(leaky.beta.detach().numpy())[0]),
                "threshold": float(np.ravel(leaky.threshold.detach().numpy())[0]), "reset": leaky.reset_mechanism}
        if mode == "dt_matched_subtract":  # spikeforge's LIF subtracts the threshold: snnTorch's rule
            leaky.reset_mechanism = "subtract"
            leaky.state_function = leaky._base_sub  # the setter leaves the update it chose at construction
            info["reset"] = "subtract"
        elif mode.startswith("dt_matched_nir_subtract"):  # NIR's: v -= theta in the step of the spike, no more
            leaky.reset_mechanism = "none"
            leaky.state_function = leaky._base_int
            leaky.register_forward_hook(lambda mod, args, spk: setattr(mod, "mem", mod.mem - spk * mod.threshold))
            info["reset"] = "subtract (NIR's)"
        dtype = torch.float64 if mode.endswith("f64") else torch.float32
        module = module.to(dtype)
        fc = torch.nn.Linear(affine.weight.shape[1], affine.weight.shape[0]).to(dtype)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(np.asarray(affine.weight, dtype=np.float64)))
            fc.bias.copy_(torch.from_numpy(np.asarray(affine.bias, dtype=np.float64)))
        steps = x.shape[0]
        y = torch.zeros(x.shape[1], affine.weight.shape[0], dtype=dtype)
        total = torch.zeros_like(y)
        state, spikes = None, 0.0
        with torch.no_grad():
            for t in range(steps):
                # the input delayed by the readout's steps behind: snnTorch's step t is spikeforge's
                xt = torch.from_numpy(x[t - shift]) if t >= shift else torch.zeros(x.shape[1], x.shape[2])
                z, state = module(xt.to(dtype), state)
                z = (z[0] if isinstance(z, tuple) else z).to(dtype)
                spikes += float(z.sum())
                y = kappa * y + (1 - kappa) * fc(z)
                if mask[t]:
                    total += y
        pred = total.numpy().argmax(1)
        info.update(accuracy=float((pred == labels).mean()),
                    hidden_rate_hz=spikes / (x.shape[1] * lif.tau.size * steps * dt_s))
        np.save(work / f"digits_snntorch_pred_{mode}.npy", pred)
        results[mode] = info
    out["modes"] = results
    return out


def torch_worker(cfg: dict) -> dict:
    _torch_env(cfg)
    work = Path(cfg["work"])
    if cfg["stage"] == "export":
        return {"recurrent": torch_recurrent(cfg, work), "mlp": torch_mlp(cfg, work)}
    return {"digits": torch_import_digits(cfg, work)}


# =========================================================================== spikeforge side


def _raster(sim, pop, size, steps, batch, dt):
    import numpy as np

    r = np.zeros((steps, batch, size), dtype=bool)
    for b, (times, ids) in enumerate(sim.spikes(pop)):
        k = np.rint(times / dt).astype(np.int64)
        ok = k < steps
        r[k[ok], b, ids[ok]] = True
    return r


def spikeforge_recurrent(work: Path, x, precision: str, reset: str) -> dict:
    """Part 1, spikeforge's side: import the exported graph, run the 100 inputs in one batch."""
    import numpy as np

    from spikeforge.interop.nir import from_nir

    tag = "f32" if precision == "float" else "f64"
    steps, batch, _ = x.shape
    net = from_nir(work / f"recurrent_{tag}.nir", dt=SNNTORCH_DT, discretisation="euler", reset=reset,
                   batch_size=batch, precision=precision, name=f"nir_rec_{tag}_{reset}")
    info = net.nir_import
    behind = info.steps_behind["output"]
    hidden, out = info.populations["rsyn.lif"], info.outputs["output"][0]
    inp = info.inputs["input"]
    values = np.zeros((steps + behind + 1, batch, N_IN))
    values[:steps] = x
    net.add_timed_input(inp, "x", values, dt=net.dt)
    net.record_spikes(hidden)
    t0 = time.perf_counter()
    sim = net.build()
    build_s = time.perf_counter() - t0
    sim.run(steps=steps + behind)
    mem = sim.recorded(out, "v")
    total = steps + behind
    return {"hid": _raster(sim, hidden, N_REC, total, batch, net.dt), "spk": _raster(sim, out, N_OUT, total, batch,
                                                                                      net.dt),
            "mem": mem, "behind": behind, "build_s": build_s, "summary": info.summary(), "notes": list(info.notes)}


def _agreement(a, b) -> float:
    import numpy as np

    return float(np.mean(a == b) * 100.0)


# --------------------------------------------------------------------------- numpy references


def _layer(node, dt: float) -> dict:
    """A LIF or CubaLIF node as the factors of its Euler step at ``dt`` (NIR's equations)."""
    import nir
    import numpy as np

    f = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    if isinstance(node, nir.CubaLIF):
        return {"a_syn": 1 - dt / f(node.tau_syn), "g_syn": dt / f(node.tau_syn) * f(node.w_in),
                "a_mem": 1 - dt / f(node.tau_mem), "g_mem": dt / f(node.tau_mem) * f(node.r),
                "theta": f(node.v_threshold)}
    return {"a_mem": 1 - dt / f(node.tau), "g_mem": dt / f(node.tau) * f(node.r), "theta": f(node.v_threshold)}


def numpy_chain(layers, x, rule: str, rec=None, rec_into_input=False):
    """A same-step simulator of Affine -> LIF/CubaLIF chains in float64: ``layers`` is a list of
    (W, b, factors); ``rec`` (W, b) a recurrent Affine on the first layer, its spikes of the step
    before; the current first, then v from it; ``rule``: ``nir_subtract`` (v -= theta in the step
    of the spike), ``zero`` (v = 0 there), ``snntorch_subtract`` (snnTorch's reset_delay=False:
    a membrane still above theta after the subtraction is reduced again with the next step's update
    and must then exceed theta to spike, the step after that undoing it where it does not);
    ``rec_into_input``: the recurrent weights applied to the layer's input as well (the wiring
    of snnTorch's import_from_nir). Returns each layer's spikes (steps, batch, n) and the last
    layer's membrane."""
    import numpy as np

    batch = x.shape[1]
    state = [{"syn": np.zeros((batch, w.shape[0])), "v": np.zeros((batch, w.shape[0])),
              "z": np.zeros((batch, w.shape[0]))} for w, _, _ in layers]
    spikes = [[] for _ in layers]
    mem = []
    for t in range(x.shape[0]):
        inp = x[t]
        for k, (w, b, f) in enumerate(layers):
            st = state[k]
            current = inp @ w.T + b
            if k == 0 and rec is not None:
                current = ((st["z"] + current) @ rec[0].T if rec_into_input else current + st["z"] @ rec[0].T) + rec[1]
            if "a_syn" in f:
                st["syn"] = f["a_syn"] * st["syn"] + f["g_syn"] * current
                current = st["syn"]
            r = (st["v"] > f["theta"]).astype(np.float64) if rule == "snntorch_subtract" else 0.0
            m = f["a_mem"] * st["v"] + f["g_mem"] * current - r * f["theta"]
            z = (m > f["theta"]).astype(np.float64)
            if rule == "zero":
                m = m * (1 - z)
            else:
                m = m - (z - r) * f["theta"]
            st["v"], st["z"] = m, z
            spikes[k].append(z > 0)
            inp = z
        mem.append(state[-1]["v"].copy())
    return [np.array(s) for s in spikes], np.array(mem)


def numpy_recurrent(graph, x, rule: str, rec_into_input=False):
    """The exported recurrent network (fc1, rsyn.lif + rsyn.w_rec, fc2, out) by :func:`numpy_chain`."""
    import numpy as np

    n = graph.nodes
    layers = [(np.asarray(n["fc1"].weight, np.float64), np.asarray(n["fc1"].bias, np.float64),
               _layer(n["rsyn.lif"], SNNTORCH_DT)),
              (np.asarray(n["fc2"].weight, np.float64), np.asarray(n["fc2"].bias, np.float64),
               _layer(n["out"], SNNTORCH_DT))]
    rec = (np.asarray(n["rsyn.w_rec"].weight, np.float64), np.asarray(n["rsyn.w_rec"].bias, np.float64))
    (hid, spk), mem = numpy_chain(layers, x, rule, rec, rec_into_input)
    return hid, spk, mem


def _compare(hid, spk, mem, r_hid, r_spk, r_mem, h_shift, o_shift) -> dict:
    import numpy as np

    first = np.flatnonzero((hid != r_hid).any(axis=(1, 2)))
    return {"hidden_agree_pct": _agreement(hid, r_hid), "output_agree_pct": _agreement(spk, r_spk),
            "argmax_agree_pct": float(np.mean(mem.sum(0).argmax(1) == r_mem.sum(0).argmax(1)) * 100.0),
            "max_mem_diff": float(np.max(np.abs(mem - r_mem))),
            "first_hidden_difference_step": int(first[0]) if first.size else None,
            "hidden_shift": h_shift, "output_shift": o_shift,
            "hidden_rate": float(r_hid.mean()), "output_rate": float(r_spk.mean())}


#: part 1's comparisons: (name, what is compared, against what). Sides: spikeforge_<reset>,
#: snntorch_<reset>_<now|delayed> (the original), reimport (snnTorch's import_from_nir),
#: numpy_<rule> (numpy_chain on the exported graph), numpy_reimport (its wiring)
RECURRENT_ROWS = [
    ("spikeforge vs snnTorch (subtract, reset in the spike's step)", "spikeforge_subtract", "snntorch_subtract_now"),
    ("spikeforge vs snnTorch (zero reset, in the spike's step)", "spikeforge_zero", "snntorch_zero_now"),
    ("spikeforge (subtract_delayed) vs snnTorch default (subtract, reset a step later)",
     "spikeforge_subtract_delayed", "snntorch_subtract_delayed"),
    ("spikeforge (subtract) vs snnTorch default (subtract, reset a step later)", "spikeforge_subtract",
     "snntorch_subtract_delayed"),
    ("spikeforge (subtract) vs numpy, NIR's reset", "spikeforge_subtract", "numpy_nir_subtract"),
    ("numpy, snnTorch's subtract rule vs snnTorch (subtract)", "numpy_snntorch_subtract", "snntorch_subtract_now"),
    ("snnTorch reimported vs snnTorch (subtract)", "reimport", "snntorch_subtract_now"),
    ("snnTorch reimported vs snnTorch (zero reset)", "reimport", "snntorch_zero_now"),
    ("snnTorch reimported vs numpy, W_rec also on the input", "reimport", "numpy_reimport"),
]


def compare_recurrent(work: Path, x) -> dict:
    """Part 1: every side's rasters (spikeforge's aligned by steps_behind), compared as RECURRENT_ROWS says."""
    import nir
    import numpy as np

    steps = x.shape[0]
    rows = {}
    for tag, precision in (("f32", "float"), ("f64", "double")):
        ref = np.load(work / f"recurrent_snntorch_{tag}.npz")
        graph = nir.read(work / f"recurrent_{tag}.nir")
        xt = x.astype(np.float32).astype(np.float64) if tag == "f32" else x
        sides = {f"snntorch_{k[:-4]}": (ref[f"{k[:-4]}_hid"], ref[f"{k[:-4]}_spk"], ref[f"{k[:-4]}_mem"], 0, 0)
                 for k in ref.files if k.endswith("_hid") and not k.startswith("reimport")}
        sides["reimport"] = (ref["reimport_hid"], ref["reimport_spk"], ref["reimport_mem"], 0, 0)
        for rule in ("nir_subtract", "snntorch_subtract"):
            sides[f"numpy_{rule}"] = (*numpy_recurrent(graph, xt, rule), 0, 0)
        sides["numpy_reimport"] = (*numpy_recurrent(graph, xt, "zero", rec_into_input=True), 0, 0)
        for reset in ("subtract", "zero", "subtract_delayed"):
            got = spikeforge_recurrent(work, x, precision, reset)
            o = got["behind"]
            h = o - 1  # the output is one projection after the hidden layer
            sides[f"spikeforge_{reset}"] = (got["hid"][h:h + steps], got["spk"][o:o + steps],
                                            got["mem"][o:o + steps], h, o)
            rows.setdefault("_import", {})[tag] = {"summary": got["summary"], "notes": got["notes"]}
        for name, a, b in RECURRENT_ROWS:
            hid, spk, mem, h, o = sides[a]
            rows.setdefault(name, {})[tag] = _compare(hid, spk, mem, *sides[b][:3], h, o)
    return rows


def spikeforge_mlp(work: Path, x_test, y_test) -> dict:
    """Part 2: the exported MLP in spikeforge, the test set in one batch of constant currents,
    with snnTorch's default reset (``subtract_delayed``) and with NIR's (``subtract``, next to a
    numpy model of it)."""
    import nir
    import numpy as np

    from spikeforge.interop.nir import from_nir

    ref = np.load(work / "mlp_snntorch.npz")["counts"]
    n = x_test.shape[0]
    sides, behind, summary = {"snntorch": ref}, None, None
    for reset in ("subtract_delayed", "subtract"):
        net = from_nir(work / "mlp.nir", dt=SNNTORCH_DT, discretisation="euler", reset=reset, batch_size=n,
                       precision="float", name=f"nir_mlp_{reset}")
        info = net.nir_import
        (out_name, (out_pop, _)), = info.outputs.items()
        behind, summary = info.steps_behind[out_name], info.summary()
        (inp,) = info.inputs.values()
        values = np.zeros((MLP_STEPS + behind + 1, n, 64))
        values[:MLP_STEPS] = x_test[None]
        net.add_timed_input(inp, "x", values, dt=net.dt)
        sim = net.build()
        sim.run(steps=MLP_STEPS + behind)
        sides[f"spikeforge_{reset}"] = _raster(sim, out_pop, 10, MLP_STEPS + behind, n, net.dt)[behind:].sum(0)
    graph = nir.read(work / "mlp.nir")
    layers = [(np.asarray(graph.nodes[a].weight, np.float64), np.asarray(graph.nodes[a].bias, np.float64),
               _layer(graph.nodes[b], SNNTORCH_DT)) for a, b in (("0", "1"), ("2", "3"))]
    xs = np.repeat(x_test.astype(np.float64)[None], MLP_STEPS, axis=0)
    sides["numpy_nir_subtract"] = numpy_chain(layers, xs, "nir_subtract")[0][-1].sum(0)
    out = {"n_test": n, "steps_behind": behind, "summary": summary, "pairs": {},
           "accuracy": {k: float((c.argmax(1) == y_test).mean()) for k, c in sides.items()},
           "output_spikes": {k: int(c.sum()) for k, c in sides.items()}}
    for name, a, b in MLP_ROWS:
        out["pairs"][name] = {"identical_counts_pct": float(np.all(sides[a] == sides[b], axis=1).mean() * 100.0),
                              "class_agree_pct": float(np.mean(sides[a].argmax(1) == sides[b].argmax(1)) * 100.0),
                              "accuracy_a": out["accuracy"][a], "accuracy_b": out["accuracy"][b]}
    return out


MLP_ROWS = [("spikeforge (subtract_delayed) vs snnTorch (its default reset)", "spikeforge_subtract_delayed",
             "snntorch"),
            ("spikeforge (subtract, NIR's reset) vs snnTorch", "spikeforge_subtract", "snntorch"),
            ("spikeforge (subtract) vs numpy, NIR's reset", "spikeforge_subtract", "numpy_nir_subtract")]


def spikeforge_digits(work: Path, epochs: int, threads: int) -> dict:
    """Part 3, spikeforge's side: train examples/digits.yaml, export, the test raster."""
    import numpy as np

    from spikeforge.interop.nir import from_nir, to_nir
    from spikeforge.training.config import load_training
    from spikeforge.training.trainer import Trainer

    job = load_training(HERE.parent / "examples" / "digits.yaml")
    options = dict(job.trainer_options)
    options["threads"] = threads
    trainer = Trainer(job.config, **options)
    t0 = time.perf_counter()
    trainer.fit(job.train, epochs=epochs, progress=False)
    train_s = time.perf_counter() - t0
    ev = trainer.evaluate(job.test)
    pred = trainer.predict(job.test)
    graph = to_nir(trainer)
    import nir

    nir.write(work / "digits_spikeforge.nir", graph)
    x, y, mask = job.test.to_dense()
    # the readout is two projections from the input: its step n + 2 is a same-step simulator's step n
    probe = from_nir(graph, dt=float(graph.metadata["dt"]), discretisation="exact")
    (shift,) = probe.nir_import.steps_behind.values()
    np.savez_compressed(work / "digits_test_raster.npz", x=x, y=y, mask=mask, shift=shift)
    np.save(work / "digits_spikeforge_pred.npy", pred)
    return {"epochs": epochs, "train_seconds": train_s, "accuracy": float(ev["accuracy"]),
            "accuracy_from_predict": float(np.mean(pred == y)), "n_test": int(len(y)), "readout_shift": int(shift),
            "dt_s": float(graph.metadata["dt"]), "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
            "hidden": {k: (float(np.ravel(getattr(v, "tau", [np.nan]))[0]), float(np.ravel(v.r)[0]),
                           float(np.ravel(v.v_threshold)[0]), float(np.ravel(v.v_reset)[0]),
                           v.metadata.get("spikeforge_reset"))
                       for k, v in graph.nodes.items() if isinstance(v, nir.LIF)}}


def digits_data(seed: int):
    """scikit-learn's digits, pixels / 16, split 80/20."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    n_test = len(order) // 5
    x = (d.data / 16.0).astype(np.float32)
    te, tr = order[:n_test], order[n_test:]
    return x[tr], d.target[tr].astype(np.int64), x[te], d.target[te].astype(np.int64)


# =========================================================================== driver

CONVENTIONS = [
    ("time step", "snnTorch 1.0 writes and reads every graph with dt = 1e-4 s, hard-coded (tau = dt / (1 - beta) "
                  "on export, beta = 1 - dt / tau on import); the graph holds no dt. Import its graphs with "
                  "from_nir(dt=1e-4). A spikeforge graph (its dt in the metadata: 1 ms for digits.yaml) needs its "
                  "tau rescaled to tau' = 1e-4 / (1 - exp(-dt / tau)) before snnTorch's import, or snnTorch decays "
                  "by 1 - 1e-4 / tau a step (0.995 instead of 0.951 for 20 ms at 1 ms) and the network is silent."),
    ("units", "NIR times are seconds on both sides; voltages and weights are plain numbers. snnTorch writes "
              "r = tau / dt (r dt / tau = 1: the input is added to v unscaled) and, for CubaLIF, w_in = tau_syn / "
              "dt (w_in dt / tau_syn = 1); spikeforge writes r in its model's units (r_m = 10 for digits.yaml), "
              "which snnTorch's import folds into the threshold (v_threshold / (r dt / tau)) instead of scaling "
              "the input."),
    ("discretisation", "snnTorch steps v = beta v + I, the forward Euler step of NIR's LIF at dt = 1e-4: "
                       "from_nir(discretisation='euler'). spikeforge's own LIF is integrated exactly "
                       "(v = exp(-dt / tau) v + ...), matched on snnTorch's side by the tau rescaling above."),
    ("Synaptic order", "snnTorch's Synaptic/RSynaptic feed v this step's new syn (syn = alpha syn + I; mem = beta "
                       "mem + syn); from_nir's euler mode now does the same (before this benchmark it stepped both "
                       "from the start of the step: a recurrent CubaLIF's loop took two steps, another network)."),
    ("reset", "NIR resets to v_reset in the step of the spike. snnTorch's export writes v_reset = 0 whatever "
              "its reset_mechanism, and nothing about the reset's timing; its import always builds "
              "reset_mechanism='zero', reset_delay=False. Import snnTorch graphs with the reset the network "
              "used (from_nir(reset='subtract_delayed') for snnTorch's default). spikeforge's lif_subtractive exports "
              "v_reset = v_th - v_th = 0 with metadata spikeforge_reset: subtract, which snnTorch ignores: "
              "set the imported Leaky back to subtraction (reset_mechanism and state_function: the setter "
              "leaves the update chosen at construction)."),
    ("reset timing", "snnTorch defaults to reset_delay=True: the reset is applied with the next step's update "
                     "(v = beta v + I - theta z_prev, or v = 0 for that whole step with 'zero'), which NIR cannot "
                     "express; only reset_delay=False is NIR's reset in the step of the spike. Import a network "
                     "of snnTorch's default neurons with from_nir(reset='subtract_delayed'), which takes the "
                     "threshold off with the next step's update as snnTorch does ('zero' a step later gives the "
                     "same spikes as 'zero' now)."),
    ("subtract rule", "snnTorch's reset by subtraction with reset_delay=False is not NIR's when v stays above "
                      "theta after the subtraction (v was above 2 theta): the next step's update subtracts theta "
                      "again and the spike test is then v - theta > theta, the same step undoing that subtraction "
                      "where no spike follows. spikeforge's reset='subtract' is NIR's (v -= theta in the step of "
                      "the spike); a numpy model of each rule reproduces its side bit for bit."),
    ("RSynaptic", "snnTorch 1.0's RSynaptic(reset_delay=False) crashes with init_hidden=True (it divides its spk "
                  "argument, None) and otherwise resets a local copy of mem; its spikes are float32 in any dtype "
                  "(the surrogate returns .float()), which its own float64 recurrent Linear refuses. The benchmark "
                  "repairs the instance (Synaptic's reset code, spikes cast to the input's dtype); a float64 "
                  "network cannot be traced by export_to_nir either, so its graph is the float32 trace with tau, r "
                  "and w_in recomputed in float64 by the export's formulas."),
    ("snnTorch's import of a recurrent layer", "import_from_nir wraps LIF/CubaLIF + W_rec into a subgraph whose "
                                              "input edge goes into W_rec, not into the neuron: the layer gets "
                                              "W_rec (z_prev + I) + b_rec instead of I + W_rec z_prev + b_rec, a "
                                              "different network (a numpy model of that wiring reproduces it bit "
                                              "for bit). nirtorch runs it as a GraphModule of Synaptic + Linear "
                                              "(no RSynaptic)."),
    ("reading files", "snnTorch's import_from_nir (nirtorch 2.6) fails on the recurrent graph read back by "
                      "nir.read ('GraphModule' object has no attribute 'items': nir.read returns the nodes in "
                      "another order); it imports the graph object export_to_nir returned. spikeforge imports both."),
    ("timing", "snnTorch passes spikes on within the step; spikeforge takes one step per projection "
               "(recurrent ones too), so a population L projections from the inputs runs L steps behind "
               "(net.nir_import.steps_behind per Output); give spikeforge steps_behind extra input rows (zeros) "
               "and steps. The other way, delay snnTorch's input by the readout's steps behind (2 for digits.yaml) "
               "so that its step n is spikeforge's step n."),
    ("bias timing", "An Affine bias acts in snnTorch from step 0; from_nir switches it on in the step the inputs "
                    "first reach the population (a timed input), so biased layers line up from the first step; "
                    "RSynaptic's recurrent Linear's bias is such a bias."),
    ("types", "snnTorch's export gives a Leaky with a scalar beta and threshold no input type, and "
              "nir.NIRGraph.infer_types fails: give per-neuron tensors. export_to_nir wants an unbatched sample "
              "(shape (n_in,))."),
    ("readout", "snnTorch's import has no LI (nor CubaLI): a spikeforge readout (Affine -> LI) is written in "
                "torch as y = kappa y + (1 - kappa) (W z + b), kappa = exp(-dt / tau), its class the argmax of y "
                "summed over the readout window, as spikeforge's Trainer."),
]


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100, help="random inputs of the recurrent network (default 100)")
    parser.add_argument("--steps", type=int, default=256, help="their steps (default 256)")
    parser.add_argument("--mlp-epochs", type=int, default=2, help="epochs of the snnTorch digits MLP (default 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of examples/digits.yaml (default: the job's, 40)")
    parser.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the exchanged files in DIR")
    parser.add_argument("--torch-python", default=str(TORCH_PYTHON), help="the interpreter with torch and snntorch")
    args = finish_args(parser.parse_args(argv))
    if args.quick:
        args.batch, args.steps, args.mlp_epochs, args.epochs = 8, 40, 1, 1
    import numpy as np

    info = machine_info()
    print(describe_machine(info))
    if not Path(args.torch_python).exists():
        print(f"\n{args.torch_python} not found: nothing to compare against (see the docstring)")
        return 1
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nir-vs-snntorch-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": info, "git": git_revision(), "args": vars(args), "loadavg_start": os.getloadavg(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.steps, args.batch, N_IN))
    np.savez(work / "recurrent_input.npz", x=x)
    x_tr, y_tr, x_te, y_te = digits_data(args.seed)
    np.savez(work / "digits.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    cfg = {"work": str(work), "threads": args.threads, "seed": args.seed, "mlp_epochs": args.mlp_epochs,
           "mlp_lr": 5e-3}
    cmd = [args.torch_python, str(Path(__file__).resolve()), "--worker-torch"]
    env = thread_env(args.threads)
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        t0 = time.perf_counter()
        exported = run_json(cmd + [json.dumps(dict(cfg, stage="export"))], env=env, timeout=3600)
        print(f"\nsnnTorch side (export, originals, reimport, MLP training): {time.perf_counter() - t0:.0f} s")
    except BenchmarkError as exc:
        print(f"\nsnnTorch side failed: {exc}")
        return 1
    rec = exported["recurrent"]
    results["versions"] = {"snntorch": rec["snntorch"], "torch": rec["torch"], "nir": rec["nir"]}
    print(f"snnTorch {rec['snntorch']}, torch {rec['torch']}, nir {rec['nir']}; exported nodes: {rec['graphs']['f32']}")
    print(f"exported CubaLIF (first neuron): {rec['exported_cubalif']}")
    print(f"snnTorch's reimport built: {rec['reimport']}")

    # ---- 1. recurrent
    results["recurrent"] = compare_recurrent(work, x)
    imp = results["recurrent"].pop("_import")
    print(f"spikeforge import: {imp['f32']['summary']}")
    for note in imp["f32"]["notes"]:
        print(f"  note: {note}")
    rows = []
    for name, by in results["recurrent"].items():
        for tag in ("f32", "f64"):
            r = by[tag]
            rows.append([name, tag, f"{r['hidden_shift']}/{r['output_shift']}", f"{r['hidden_agree_pct']:.3f}",
                         f"{r['output_agree_pct']:.3f}", f"{r['argmax_agree_pct']:.1f}", fmt(r["max_mem_diff"]),
                         r["first_hidden_difference_step"] if r["first_hidden_difference_step"] is not None else "-"])
    ref = results["recurrent"][RECURRENT_ROWS[0][0]]["f32"]
    print_table(["comparison", "precision", "shift hid/out", "hidden agree %", "output agree %", "argmax agree %",
                 "max |dv| out", "first hidden diff step"], rows,
                title=f"1. {N_IN} -> {N_REC} RSynaptic (all to all) -> {N_OUT} Leaky, {args.batch} random inputs x "
                      f"{args.steps} steps (hidden active in {ref['hidden_rate'] * 100:.1f} % of entries, output "
                      f"{ref['output_rate'] * 100:.1f} %)")

    # ---- 2. MLP
    results["mlp"] = m = spikeforge_mlp(work, x_te, y_te)
    m["train_seconds"] = exported["mlp"]["train_seconds"]
    rows = [[name, f"{r['identical_counts_pct']:.2f}", f"{r['class_agree_pct']:.2f}", f"{r['accuracy_a'] * 100:.2f} %",
             f"{r['accuracy_b'] * 100:.2f} %"] for name, r in m["pairs"].items()]
    print_table(["comparison", "identical output counts %", "class agree %", "accuracy (first)", "accuracy (second)"],
                rows,
                title=f"2. snnTorch Leaky MLP 64 -> {MLP_HIDDEN} -> 10 (its default reset: subtract, a step later), "
                      f"{args.mlp_epochs} epochs BPTT on digits (constant current, {MLP_STEPS} steps), "
                      f"{m['n_test']} test digits in spikeforge (euler, float, {m['steps_behind']} steps "
                      f"behind); output spikes {m['output_spikes']}")

    # ---- 3. spikeforge -> snnTorch
    epochs = args.epochs
    if epochs is None:
        from spikeforge.training.config import load_training

        epochs = load_training(HERE.parent / "examples" / "digits.yaml").epochs
    t0 = time.perf_counter()
    results["digits"] = dg = spikeforge_digits(work, epochs, args.threads)
    print(f"\nexamples/digits.yaml: {epochs} epochs in {time.perf_counter() - t0:.0f} s, test accuracy "
          f"{dg['accuracy'] * 100:.2f} %; exported {dg['nodes']}; LIF (tau s, r, threshold, v_reset, reset): "
          f"{dg['hidden']}")
    try:
        imported = run_json(cmd + [json.dumps(dict(cfg, stage="import"))], env=env, timeout=3600)["digits"]
    except BenchmarkError as exc:
        print(f"\nsnnTorch import failed: {exc}")
        return 1
    results["digits"]["snntorch"] = imported
    sf_pred = np.load(work / "digits_spikeforge_pred.npy")
    rows = []
    for mode, r in imported["modes"].items():
        pred = np.load(work / f"digits_snntorch_pred_{mode}.npy")
        r["prediction_agree_pct"] = float(np.mean(pred == sf_pred) * 100.0)
        rows.append([mode, f"{r['beta']:.6f}", f"{r['threshold']:.5g}", r["reset"], f"{r['accuracy'] * 100:.2f} %",
                     f"{(r['accuracy'] - dg['accuracy']) * 100:+.2f}", f"{r['prediction_agree_pct']:.2f}",
                     fmt(r["hidden_rate_hz"])])
    print_table(["snnTorch import", "beta", "threshold", "reset", "accuracy", "vs spikeforge (points)",
                 "class agree %", "hidden Hz"], rows,
                title=f"3. spikeforge e-prop digits ({dg['n_test']} test digits, spikeforge {dg['accuracy'] * 100:.2f} "
                      f"%) -> to_nir -> snnTorch import_from_nir (input delayed {dg['readout_shift']} steps)")

    # ---- verdicts
    verdicts = []
    for tag, target in (("f32", TARGETS["f32"]), ("f64", TARGETS["f64"])):
        for name in (RECURRENT_ROWS[k][0] for k in (0, 1, 2, 6, 7)):
            r = results["recurrent"][name][tag]
            verdicts.append((f"1. {name}, {tag}: hidden agreement {r['hidden_agree_pct']:.3f} % "
                             f"(target >= {target:g} %)", r["hidden_agree_pct"] >= target))
            verdicts.append((f"1. {name}, {tag}: argmax agreement {r['argmax_agree_pct']:.1f} % (target >= 99 %)",
                             r["argmax_agree_pct"] >= TARGETS["argmax"]))
    p = m["pairs"][MLP_ROWS[0][0]]
    verdicts.append((f"2. MLP: identical output counts {p['identical_counts_pct']:.2f} % (target 100 %)",
                     p["identical_counts_pct"] == 100.0))
    verdicts.append((f"2. MLP: accuracy spikeforge {p['accuracy_a'] * 100:.2f} %, snnTorch {p['accuracy_b'] * 100:.2f} "
                     "% (target: the same)", p["accuracy_a"] == p["accuracy_b"]))
    best = imported["modes"]["dt_matched_nir_subtract"]
    verdicts.append((f"3. digits in snnTorch {best['accuracy'] * 100:.2f} % vs spikeforge {dg['accuracy'] * 100:.2f} % "
                     "(within 1 point)", abs(best["accuracy"] - dg["accuracy"]) * 100 <= TARGETS["accuracy_points"]))
    results["verdicts"] = [{"target": t, "met": ok} for t, ok in verdicts]
    print("\nVerdicts:")
    for t, ok in verdicts:
        print(f"  {'met    ' if ok else 'NOT met'}  {t}")
    results["conventions"] = dict(CONVENTIONS)
    print("\nConventions (spikeforge <-> snnTorch " + rec["snntorch"] + ", torch " + rec["torch"] + ", nir "
          + rec["nir"] + "):")
    for k, v in CONVENTIONS:
        print(f"  * {k}: {v}")
    results["loadavg_end"] = os.getloadavg()
    print(f"\nload average {results['loadavg_start'][0]:.2f} at the start, {results['loadavg_end'][0]:.2f} at the end")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker-torch":
        print(json.dumps(torch_worker(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    sys.exit(main())
