"""The plotting functions fit notebooks: they leave matplotlib's backend as the user set it,
return the Figure, draw into the axes given, and write a file only when given a path."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from spikeforge import plots  # noqa: E402
from spikeforge.networks import cuba_network  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    s = cuba_network(n=400, batch_size=2).build()  # as docs/inspecting.md builds it: one compile
    s.run(duration=60.0)
    yield s
    s.close()


@pytest.fixture
def svg_backend(monkeypatch):
    """A backend other than Agg, as a user (or Jupyter's inline backend) would have set it."""
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    return "svg"


def test_plots_leave_the_backend_alone_and_return_figures(sim, svg_backend, tmp_path):
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}, {"epoch": 2, "train_loss": 0.5,
                                                                        "train_accuracy": 0.75}]
    figures = [plots.plot_simulation(sim), plots.plot_raster(sim), plots.plot_rates(sim, "inh"),
               plots.plot_history(history)]
    assert all(isinstance(f, Figure) for f in figures)
    assert matplotlib.rcParams["backend"] == svg_backend
    assert list(tmp_path.iterdir()) == []  # no path, no file


def test_a_path_writes_the_file(sim, tmp_path):
    out = tmp_path / "raster.png"
    fig = plots.plot_raster(sim, "exc", path=out)
    assert isinstance(fig, Figure) and out.stat().st_size > 1000


def test_raster_colours_each_batch_instance(sim):
    fig = plots.plot_raster(sim, "exc")
    dots = fig.axes[0].collections
    assert len(dots) == sim.batch_size
    colours = {tuple(np.round(c.get_facecolor()[0], 3)) for c in dots}
    assert len(colours) == sim.batch_size
    for b, c in enumerate(dots):  # instance b's dots are instance b's spikes
        times, ids = sim.spikes("exc")[b]
        assert np.array_equal(c.get_offsets(), np.column_stack([times, ids]))


def test_rates_are_spikes_per_neuron_and_second(sim):
    fig = plots.plot_rates(sim, "exc", bin_ms=10.0)
    lines = fig.axes[0].lines
    assert len(lines) == sim.batch_size + 1  # each instance and the mean
    n = 320  # cuba_network(n=400): 80 % excitatory
    times, _ = sim.spikes("exc")[1]
    first_bin = np.count_nonzero(times < 10.0) / n / 0.010
    assert lines[1].get_ydata()[0] == pytest.approx(first_bin)
    assert np.allclose(lines[-1].get_ydata(), np.mean([ln.get_ydata() for ln in lines[:-1]], axis=0))


def test_plots_draw_into_the_axes_given(sim):
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plots.plot_raster(sim, "exc", ax=left) is fig
    assert plots.plot_rates(sim, "exc", ax=right) is fig
    assert len(fig.axes) == 2 and left.collections and right.lines
    grid = Figure().subplots(2, 3)  # exc and inh: 2 instances and the rates
    assert plots.plot_simulation(sim, ax=grid) is grid[0, 0].figure


def test_wrong_axes_are_named(sim):
    from spikeforge.errors import SpikeforgeError

    with pytest.raises(SpikeforgeError, match="2 x 3 axes"):
        plots.plot_simulation(sim, ax=Figure().subplots(1, 2))
