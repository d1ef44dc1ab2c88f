"""Pictures of what a network did: spike rasters, population rates, training curves.

Needs matplotlib (``pip install 'spikeforge[plot]'``), imported only here. Every function
draws with matplotlib's object-oriented API and never touches the backend or pyplot's
list of open figures: it returns the :class:`~matplotlib.figure.Figure` (a notebook shows
it as the cell's result), draws into the ``ax=`` you give it, and saves to ``path`` only
if you pass one.

Examples:
    >>> from spikeforge import cuba_network, plot_raster, plot_rates
    >>> sim = cuba_network(n=400, batch_size=2).build()
    >>> _ = sim.run(duration=50.0)
    >>> fig = plot_raster(sim, "exc")          # one colour per batch instance
    >>> fig = plot_rates(sim, "exc", ax=fig.axes[0].twinx())   # on the same axes' twin
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import SpikeforgeError
from .fileio import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .runtime.simulation import Simulation

__all__ = ["plot_simulation", "plot_raster", "plot_rates", "plot_history"]


def _new_figure(**kw: Any) -> Figure:
    """A Figure of its own (not registered with pyplot, so the backend and the user's open
    figures are left alone)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SpikeforgeError("plots need matplotlib: pip install 'spikeforge[plot]'") from None
    return Figure(**kw)


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is None:
        return
    fmt = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))


def _spiking_populations(sim: Simulation) -> list[str]:
    return [p["name"] for p in sim.spec.populations if p["record_spikes"]]


def _population(sim: Simulation, population: str | None) -> str:
    pops = _spiking_populations(sim)
    if population is None:
        if not pops:
            raise SpikeforgeError("nothing to plot: no population records its spikes")
        return pops[0]
    return population


def _root_figure(ax: Axes) -> Figure:
    """The Figure holding ``ax`` (the top one, where ``ax`` sits in a SubFigure)."""
    fig = ax.figure
    return getattr(fig, "figure", None) or fig  # type: ignore[return-value]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _root_figure(ax), ax
    fig = _new_figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _duration(sim: Simulation) -> float:
    return float(max(sim.t, sim.dt))


def plot_raster(sim: Simulation, population: str | None = None, *, ax: Axes | None = None,
                path: str | Path | None = None, max_instances: int | None = None,
                marker_size: float = 2.0) -> Figure:
    """The spike raster of ``population`` (default: the first that records its spikes),
    all batch instances on one axes, one colour per instance (with a legend).

    Args:
        sim: a simulation that has run.
        population: which population.
        ax: draw into these axes (default: a new figure).
        path: also save the figure there (format from the suffix).
        max_instances: draw only the first instances (default: all).
        marker_size: the dots' size, in points squared.

    Returns:
        The Figure drawn into.

    Examples:
        >>> from spikeforge import cuba_network, plot_raster
        >>> sim = cuba_network(n=400, batch_size=3).build()
        >>> _ = sim.run(duration=50.0)
        >>> fig = plot_raster(sim, "exc")
        >>> len(fig.axes[0].collections)          # one scatter per instance
        3
    """
    pop = _population(sim, population)
    spikes = sim.spikes(pop)
    shown = len(spikes) if max_instances is None else min(len(spikes), max_instances)
    fig, ax = _axes(ax, (6.0, 3.2))
    colours = _instance_colours(shown)
    for b in range(shown):
        times, ids = spikes[b]
        ax.scatter(times, ids, s=marker_size, color=colours[b], marker=".", linewidths=0, label=f"instance {b}")
    ax.set_xlim(0, _duration(sim))
    size = next(p["size"] for p in sim.spec.populations if p["name"] == pop)
    ax.set_ylim(-0.5, size - 0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(f"{pop} neuron")
    ax.set_title(f"{pop}: spikes by batch instance", fontsize=10)
    if shown > 1:
        ax.legend(fontsize=7, markerscale=4, loc="upper right", frameon=True)
    _save(fig, path)
    return fig


def _instance_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def _rates(sim: Simulation, pop: str, bin_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts in ms, rates in Hz per neuron with shape (bins, batch)) from the recorded
    spikes of ``pop``, or from its recorded population rate where its spikes are not kept."""
    duration = _duration(sim)
    if pop not in _spiking_populations(sim):
        rate = sim.population_rate(pop)  # (steps, batch): raises, naming what is recorded, if absent
        per_bin = max(1, int(round(bin_ms / sim.dt)))
        n = rate.shape[0] // per_bin
        binned = rate[: n * per_bin].reshape(n, per_bin, -1).mean(axis=1)
        return np.arange(n) * per_bin * sim.dt, binned
    edges = np.arange(0.0, duration + bin_ms, bin_ms)
    n_neurons = len(sim.recorded_indices(pop))
    rates = np.stack([np.histogram(times, bins=edges)[0] for times, _ in sim.spikes(pop)], axis=1)
    return edges[:-1], rates / (n_neurons * bin_ms / 1000.0)


def plot_rates(sim: Simulation, population: str | None = None, *, bin_ms: float | None = None,
               ax: Axes | None = None, path: str | Path | None = None, mean: bool = True) -> Figure:
    """The population rate of ``population`` over time (Hz per neuron, in bins of
    ``bin_ms``): one line per batch instance and, with ``mean``, their mean in black.

    Uses the recorded spikes, or the recorded population rate (``Network.record_rate``) of
    a population whose spikes are not kept.

    Args:
        sim: a simulation that has run.
        population: which population (default: the first that records its spikes).
        bin_ms: bin width in ms (default: a hundredth of the run, at least one step).
        ax: draw into these axes (default: a new figure).
        path: also save the figure there.
        mean: also draw the mean over the batch.

    Returns:
        The Figure drawn into.

    Examples:
        >>> from spikeforge import cuba_network, plot_rates
        >>> sim = cuba_network(n=400, batch_size=2).build()
        >>> _ = sim.run(duration=50.0)
        >>> fig = plot_rates(sim, "exc", bin_ms=5.0)
        >>> len(fig.axes[0].lines)                # two instances and their mean
        3
    """
    pop = _population(sim, population)
    bin_ms = bin_ms or max(sim.dt, _duration(sim) / 100)
    starts, rates = _rates(sim, pop, bin_ms)
    fig, ax = _axes(ax, (6.0, 2.8))
    colours = _instance_colours(rates.shape[1])
    for b in range(rates.shape[1]):
        ax.plot(starts, rates[:, b], lw=0.8, alpha=0.75, color=colours[b], label=f"instance {b}")
    if mean and rates.shape[1] > 1:
        ax.plot(starts, rates.mean(axis=1), lw=1.5, color="k", label="mean")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("rate (Hz per neuron)")
    ax.set_title(f"{pop}: population rate, {bin_ms:g} ms bins", fontsize=10)
    if rates.shape[1] > 1:
        ax.legend(fontsize=7, loc="upper right")
    _save(fig, path)
    return fig


def plot_simulation(sim: Simulation, path: str | Path | None = None, max_instances: int = 4,
                    bin_ms: float | None = None, *, ax: Any = None) -> Figure:
    """One row per population that records its spikes: the raster of each batch instance
    (up to ``max_instances`` columns) and, in the last column, each instance's population
    rate (what ``spikeforge run --plot`` draws).

    Args:
        sim: a simulation that has run.
        path: also save the figure there.
        max_instances: at most this many raster columns.
        bin_ms: bin width of the rates (default: a hundredth of the run).
        ax: a 2-D array of axes to draw into, one row per population and one column per
            instance shown plus one (default: a new figure).

    Returns:
        The Figure drawn into.

    Examples:
        >>> from spikeforge import cuba_network, plot_simulation
        >>> sim = cuba_network(n=400, batch_size=2).build()
        >>> _ = sim.run(duration=50.0)
        >>> fig = plot_simulation(sim)
        >>> len(fig.axes)                         # exc and inh: 2 rasters and the rates each
        6
    """
    pops = _spiking_populations(sim)
    if not pops:
        raise SpikeforgeError("nothing to plot: no population records its spikes")
    sizes = {p["name"]: p["size"] for p in sim.spec.populations}
    shown = min(sim.batch_size, max_instances)
    duration = _duration(sim)
    bin_ms = bin_ms or max(sim.dt, duration / 100)
    if ax is None:
        fig = _new_figure(figsize=(3.2 * (shown + 1), 2.6 * len(pops)), layout="constrained")
        axes = np.asarray(fig.subplots(len(pops), shown + 1, squeeze=False))
    else:
        axes = np.asarray(ax, dtype=object)
        if axes.shape != (len(pops), shown + 1):
            raise SpikeforgeError(f"plot_simulation: ax= needs {len(pops)} x {shown + 1} axes (populations x "
                                  f"instances shown + 1), got shape {axes.shape}")
        fig = _root_figure(axes[0, 0])
    for row, pop in enumerate(pops):
        spikes = sim.spikes(pop)
        for b in range(shown):
            times, ids = spikes[b]
            a = axes[row, b]
            a.scatter(times, ids, s=0.5, c="k", marker=".", linewidths=0)
            a.set_xlim(0, duration)
            a.set_ylim(-0.5, sizes[pop] - 0.5)
            a.set_title(f"{pop}, instance {b}", fontsize=9)
            a.set_xlabel("time (ms)", fontsize=8)
            if b == 0:
                a.set_ylabel("neuron", fontsize=8)
        plot_rates(sim, pop, bin_ms=bin_ms, ax=axes[row, shown], mean=False)
        a = axes[row, shown]
        a.set_title(f"{pop}: rate per instance", fontsize=9)
        a.set_xlabel("time (ms)", fontsize=8)
        a.set_ylabel("Hz", fontsize=8)
        if a.get_legend() is not None:
            a.get_legend().remove()
    fig.suptitle(f"{sim.network.name}: batch {sim.batch_size}, {duration:g} ms", fontsize=10)
    _save(fig, path)
    return fig


def plot_history(history: Sequence[dict], path: str | Path | None = None, title: str = "training", *,
                 ax: Sequence[Axes] | None = None) -> Figure:
    """Loss and accuracy (or mse) per epoch, train and validation (``Trainer.fit``'s
    history; what ``spikeforge train --plot`` draws).

    Args:
        history: one dict per epoch, with ``epoch`` and ``train_loss``, ``val_loss``, ...
        path: also save the figure there.
        title: the figure's title.
        ax: two axes to draw the loss and the metric into (default: a new figure).

    Returns:
        The Figure drawn into.

    Examples:
        >>> from spikeforge import plot_history
        >>> history = [{"epoch": 1, "train_loss": 2.1, "train_accuracy": 0.3, "val_loss": 2.0},
        ...            {"epoch": 2, "train_loss": 1.4, "train_accuracy": 0.6, "val_loss": 1.5}]
        >>> fig = plot_history(history, title="digits")
        >>> [a.get_ylabel() for a in fig.axes]
        ['loss', 'accuracy']
    """
    if not history:
        raise SpikeforgeError("nothing to plot: no epochs were trained")
    if ax is None:
        fig = _new_figure(figsize=(8, 3), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
    else:
        if len(ax) != 2:
            raise SpikeforgeError(f"plot_history: ax= needs two axes (loss, metric), got {len(ax)}")
        ax1, ax2 = ax
        fig = _root_figure(ax1)
    epochs = [h["epoch"] for h in history]
    metric = "accuracy" if "train_accuracy" in history[0] else "mse"
    for a, key in ((ax1, "loss"), (ax2, metric)):
        for split, style in (("train", "-o"), ("val", "--s")):
            if f"{split}_{key}" in history[0]:
                a.plot(epochs, [h[f"{split}_{key}"] for h in history], style, ms=3,
                       label="test" if split == "val" else "train")
        a.set_xlabel("epoch")
        a.set_ylabel(key)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return fig
