"""Pictures of what a network did: spike rasters, population rates, training curves.

Needs matplotlib (``pip install 'spikeforge[plot]'``); it is imported only here, and
drawn with the non-interactive Agg backend, so it works without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SpikeforgeError
from .fileio import atomic_write


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpikeforgeError("plots need matplotlib: pip install 'spikeforge[plot]'") from None
    return plt


def _save(fig, path) -> Path:
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))


def plot_simulation(sim, path, max_instances: int = 4, bin_ms: float | None = None) -> Path:
    """One row per recorded population: the spike raster of each batch instance (up to
    ``max_instances`` columns) and, in the last column, the population rate over time."""
    plt = _pyplot()
    pops = [p["name"] for p in sim.spec.populations if p["record_spikes"]]
    if not pops:
        raise SpikeforgeError("nothing to plot: no population records its spikes")
    sizes = {p["name"]: p["size"] for p in sim.spec.populations}
    shown = min(sim.batch_size, max_instances)
    duration = max(sim.t, sim.dt)
    bin_ms = bin_ms or max(sim.dt, duration / 100)
    fig, axes = plt.subplots(len(pops), shown + 1, figsize=(3.2 * (shown + 1), 2.6 * len(pops)), squeeze=False,
                             constrained_layout=True)
    for row, pop in enumerate(pops):
        spikes = sim.spikes(pop)
        for b in range(shown):
            times, ids = spikes[b]
            ax = axes[row, b]
            ax.scatter(times, ids, s=0.5, c="k", marker=".", linewidths=0)
            ax.set_xlim(0, duration)
            ax.set_ylim(-0.5, sizes[pop] - 0.5)
            ax.set_title(f"{pop}, instance {b}", fontsize=9)
            ax.set_xlabel("time (ms)", fontsize=8)
            if b == 0:
                ax.set_ylabel("neuron", fontsize=8)
        edges = np.arange(0, duration + bin_ms, bin_ms)
        ax = axes[row, shown]
        for b in range(sim.batch_size):
            counts, _ = np.histogram(spikes[b][0], bins=edges)
            ax.plot(edges[:-1], counts / (sizes[pop] * bin_ms / 1000.0), lw=0.8, alpha=0.7)
        ax.set_title(f"{pop}: rate per instance", fontsize=9)
        ax.set_xlabel("time (ms)", fontsize=8)
        ax.set_ylabel("Hz", fontsize=8)
    fig.suptitle(f"{sim.network.name}: batch {sim.batch_size}, {duration:g} ms", fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_history(history: list[dict], path, title: str = "training") -> Path:
    """Loss and accuracy (or mse) per epoch, train and validation."""
    plt = _pyplot()
    if not history:
        raise SpikeforgeError("nothing to plot: no epochs were trained")
    epochs = [h["epoch"] for h in history]
    metric = "accuracy" if "train_accuracy" in history[0] else "mse"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3), constrained_layout=True)
    for ax, key in ((ax1, "loss"), (ax2, metric)):
        for split, style in (("train", "-o"), ("val", "--s")):
            if f"{split}_{key}" in history[0]:
                ax.plot(epochs, [h[f"{split}_{key}"] for h in history], style, ms=3,
                        label="test" if split == "val" else "train")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path
