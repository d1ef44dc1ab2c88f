"""spikeforge.training.datasets: the container, the generated tasks, digits and the SHD reader."""

import sys

import numpy as np
import pytest

from spikeforge.training.datasets import (
    DenseBatch,
    SpikeDataset,
    SpikeSample,
    digits,
    evidence_accumulation,
    load_shd,
    normalized_mse,
    pattern_generation,
)


def small(**kw):
    """3 samples, 4 inputs, 10 ms; sample 1 is empty."""
    meta = dict(n_inputs=4, n_outputs=3, duration=10.0, dt=1.0, labels=[0, 2, 1])
    meta.update(kw)
    return SpikeDataset([5.0, 1.0, 9.5, 0.0, 3.0], [2, 1, 3, 0, 0], [0, 3, 3, 5], **meta)


def same(a, b):
    return (
        len(a) == len(b)
        and all(np.array_equal(x.times, y.times) and np.array_equal(x.ids, y.ids) for x, y in zip(a, b))
        and np.array_equal(a.labels, b.labels)
    )


# --------------------------------------------------------------------------- container


def test_construction_sorts_and_exposes_samples():
    ds = small()
    assert len(ds) == 3 and ds.n_steps == 10 and ds.readout_window == (0.0, 10.0)
    s = ds[0]
    assert isinstance(s, SpikeSample)
    assert s.times.tolist() == [1.0, 5.0, 9.5] and s.ids.tolist() == [1, 2, 3] and s.label == 0
    assert s.times.dtype == np.float64 and s.ids.dtype == np.int64 and s.target is None
    assert len(ds[1]) == 0 and ds[-1].label == 1 and ds[2].times.tolist() == [0.0, 3.0]
    assert ds.spike_counts.tolist() == [3, 0, 2]
    with pytest.raises(ValueError):  # read-only views: the data set cannot be corrupted through a sample
        s.times[0] = 7.0
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]


def test_indexing_with_slices_lists_and_masks():
    ds = small()
    sub = ds[1:]
    assert isinstance(sub, SpikeDataset) and len(sub) == 2 and sub.labels.tolist() == [2, 1]
    assert sub[1].times.tolist() == [0.0, 3.0]
    assert ds[[2, 0, 2]].labels.tolist() == [1, 0, 1]
    assert ds[np.array([True, False, True])].labels.tolist() == [0, 1]
    assert len(ds[[]]) == 0
    assert [s.label for s in ds] == [0, 2, 1]
    with pytest.raises(IndexError):
        ds[[0, 5]]


def test_validation_messages():
    with pytest.raises(ValueError, match=r"input channel 4 is out of range \[0, n_inputs=4\).*sample 0, spike 1"):
        SpikeDataset([1.0, 2.0], [0, 4], [0, 2], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match="input channel -1"):
        SpikeDataset([1.0], [-1], [0, 1], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match=r"outside \[0, duration=10.0\).*sample 1, spike 0"):
        SpikeDataset([1.0, 10.0], [0, 0], [0, 1, 2], n_inputs=4, n_outputs=2, duration=10, labels=[0, 1])
    with pytest.raises(ValueError, match="outside"):
        SpikeDataset([-0.5], [0], [0, 1], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match="not finite"):
        SpikeDataset([np.nan], [0], [0, 1], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match="offsets"):
        SpikeDataset([1.0, 2.0], [0, 0], [0, 1], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match="non-decreasing"):
        SpikeDataset([1.0, 2.0], [0, 0], [0, 2, 1, 2], n_inputs=4, n_outputs=2, duration=10, labels=[0, 0, 0])
    with pytest.raises(ValueError, match="times has 2 spikes but ids has 1"):
        SpikeDataset([1.0, 2.0], [0], [0, 2], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match="ids must be integers"):
        SpikeDataset([1.0], [0.5], [0, 1], n_inputs=4, n_outputs=2, duration=10, labels=[0])
    with pytest.raises(ValueError, match=r"label 2 of sample 0 is outside \[0, n_outputs=2\)"):
        SpikeDataset([], [], [0, 0], n_inputs=4, n_outputs=2, duration=10, labels=[2])
    with pytest.raises(ValueError, match="1 labels for 2 samples"):
        SpikeDataset([], [], [0, 0, 0], n_inputs=4, n_outputs=2, duration=10, labels=[1])
    with pytest.raises(ValueError, match="needs labels"):
        SpikeDataset([], [], [0, 0], n_inputs=4, n_outputs=2, duration=10)
    with pytest.raises(ValueError, match="task must be one of"):
        small(task="ranking")
    with pytest.raises(ValueError, match="readout_window"):
        small(readout_window=(5.0, 11.0))
    with pytest.raises(ValueError, match="contains no step"):
        small(readout_window=(5.2, 5.9))
    with pytest.raises(ValueError, match="dt must be"):
        small(dt=0)
    with pytest.raises(ValueError, match="n_inputs must be a positive integer"):
        small(n_inputs=0)
    with pytest.raises(ValueError, match=r"targets have shape \(1, 5, 2\), expected \(1, 10, 2\)"):
        SpikeDataset(
            [], [], [0, 0], n_inputs=1, n_outputs=2, duration=10, task="regression", targets=np.zeros((1, 5, 2))
        )
    with pytest.raises(ValueError, match="sample_info"):
        small(sample_info={"speaker": [1, 2]})


def test_to_dense_binning_and_mask():
    # 0.3 / 0.1 = 2.9999999999999996 and 0.7 / 0.1 = 6.999999999999999: the 1e-9 tolerance bins them at 3 and 7
    ds = SpikeDataset(
        [0.0, 0.3, 0.7, 0.75, 0.76, 0.999],
        [0, 1, 2, 0, 0, 1],
        [0, 6],
        n_inputs=3,
        n_outputs=2,
        duration=1.0,
        dt=0.1,
        labels=[1],
        readout_window=(0.5, 0.8),
    )
    x, y, mask = ds.to_dense()
    assert x.dtype == np.float32 and x.shape == (10, 1, 3)
    assert [tuple(v) for v in np.argwhere(x[:, 0, :] > 0)] == [(0, 0), (3, 1), (7, 0), (7, 2), (9, 1)]
    assert x.max() == 1.0  # 0.75 and 0.76 share step 7 on channel 0: one spike
    assert y.dtype == np.int64 and y.tolist() == [1]
    assert mask.dtype == bool and np.flatnonzero(mask).tolist() == [5, 6, 7]
    assert ds.to_dense(counts=True).x[7, 0, 0] == 2.0
    batch = ds.to_dense([ds[0], ds[0]])
    assert isinstance(batch, DenseBatch) and batch.x.shape == (10, 2, 3)
    assert np.array_equal(batch.x[:, 0], batch.x[:, 1])


def test_to_dense_regression_targets():
    target = np.arange(20, dtype=float).reshape(10, 2)
    ds = SpikeDataset([1.0], [0], [0, 1, 1], n_inputs=2, n_outputs=2, duration=10, task="regression", targets=target)
    assert ds.labels is None and ds.targets.shape == (2, 10, 2) and ds[1].label is None
    x, y, mask = ds.to_dense()
    assert y.shape == (10, 2, 2) and y.dtype == np.float32
    assert np.array_equal(y[:, 1, :], target) and mask.all()
    rebuilt = SpikeDataset.from_samples(list(ds), n_inputs=2, n_outputs=2, duration=10, task="regression")
    assert np.array_equal(rebuilt.targets, ds.targets) and rebuilt[0].times.tolist() == [1.0]


def test_split_shuffle_batches():
    ds = evidence_accumulation(25, seed=3, delay=50.0)
    train, test = ds.split(0.8, seed=1)
    assert len(train) == 20 and len(test) == 5
    key = [tuple(s.times[:5]) + (s.label,) for s in ds]
    got = [tuple(s.times[:5]) + (s.label,) for s in train] + [tuple(s.times[:5]) + (s.label,) for s in test]
    assert sorted(got) == sorted(key)  # a partition; labels travel with their spikes
    assert same(ds.split(0.8, seed=1)[0], train) and not same(ds.split(0.8, seed=2)[0], train)
    first, rest = ds.split(0.2, seed=None)
    assert same(first, ds[:5]) and same(rest, ds[5:])
    assert np.array_equal(train.sample_info["cue_sides"], ds.sample_info["cue_sides"][[key.index(k) for k in got[:20]]])
    with pytest.raises(ValueError, match="fraction"):
        ds.split(1.5, seed=0)

    sh = ds.shuffled(7)
    assert same(sh, ds.shuffled(7)) and not same(sh, ds) and sorted(sh.labels) == sorted(ds.labels)

    batches = list(ds.batches(8))
    assert [len(b) for b in batches] == [8, 8, 8, 1]
    assert all(np.array_equal(a.times, b.times) for a, b in zip(batches[0], ds[:8]))
    assert [len(b) for b in ds.batches(8, drop_last=True)] == [8, 8, 8]
    shuffled = [s.label for b in ds.batches(8, seed=4) for s in b]
    assert shuffled == [s.label for b in ds.batches(8, seed=4) for s in b]
    assert sorted(shuffled) == sorted(ds.labels.tolist())
    x, y, mask = ds.to_dense(batches[0])
    assert x.shape == (ds.n_steps, 8, 40) and y.tolist() == ds.labels[:8].tolist()
    with pytest.raises(ValueError):
        next(ds.batches(0))


# --------------------------------------------------------------------------- evidence accumulation


def test_evidence_accumulation_layout_and_determinism():
    ds = evidence_accumulation(12, seed=11)
    assert (ds.n_inputs, ds.n_outputs, ds.task, ds.dt) == (40, 2, "classification", 1.0)
    assert ds.duration == 2250.0 and ds.readout_window == (2100.0, 2250.0)
    assert ds.readout_mask.sum() == 150 and np.flatnonzero(ds.readout_mask)[0] == 2100
    assert same(ds, evidence_accumulation(12, seed=11))
    assert not same(ds, evidence_accumulation(12, seed=12))
    assert same(ds[:5], evidence_accumulation(5, seed=11))  # sample i depends on (seed, i) only
    assert all(np.all(np.diff(s.times) >= 0) for s in ds)
    assert np.all(ds[0].times == np.round(ds[0].times))  # on the 1 ms grid
    with pytest.raises(ValueError, match="odd"):
        evidence_accumulation(2, seed=0, n_cues=6)


def test_evidence_accumulation_labels_are_the_majority_of_the_emitted_cues():
    ds = evidence_accumulation(40, seed=5)
    windows = ds.info["cue_windows"]
    assert windows[0] == (0.0, 100.0) and windows[6] == (900.0, 1000.0)
    for i, s in enumerate(ds):
        sides = []
        for a, b in windows:
            inside = (s.times >= a) & (s.times < b)
            left = np.sum(inside & (s.ids < 10))
            right = np.sum(inside & (s.ids >= 10) & (s.ids < 20))
            assert left == 0 or right == 0  # one side per cue
            assert left + right > 0  # 10 channels x 40 Hz x 100 ms: silent with probability ~1e-18
            sides.append(int(right > 0))
        assert sides == ds.sample_info["cue_sides"][i].tolist()
        assert s.label == int(sum(sides) > 3)
        cue = s.ids < 20
        in_cue = np.zeros(len(s), bool)
        for a, b in windows:
            in_cue |= (s.times >= a) & (s.times < b)
        assert np.all(in_cue[cue])  # cue channels only fire during cues
        recall = (s.ids >= 20) & (s.ids < 30)
        assert np.all(s.times[recall] >= 2100.0) and recall.sum() > 0
    assert 0 < ds.labels.sum() < len(ds)


def test_evidence_accumulation_rates():
    ds = evidence_accumulation(60, seed=2)
    n = len(ds)
    x, _, _ = ds.to_dense()
    background = x[:, :, 30:].mean() * 1000.0
    recall = x[2100:, :, 20:30].mean() * 1000.0
    silent_recall = x[:2100, :, 20:30].sum()
    cue_spikes = sum(np.sum(s.ids < 20) for s in ds)
    cue_rate = cue_spikes / (n * 7 * 10 * 0.1)  # one side's 10 channels active for 7 x 100 ms
    assert abs(background - 10.0) < 1.0, background
    assert abs(recall - 40.0) < 4.0, recall
    assert abs(cue_rate - 40.0) < 3.0, cue_rate
    assert silent_recall == 0
    # coarser grid: same expected rates, the Bernoulli probability per step scales with dt
    coarse = evidence_accumulation(20, seed=2, dt=5.0)
    assert coarse.n_steps == 450 and np.all(coarse[0].times % 5.0 == 0)


# --------------------------------------------------------------------------- pattern generation


def test_pattern_generation_frozen_input_and_targets():
    ds = pattern_generation(4, seed=9)
    assert (ds.n_inputs, ds.n_outputs, ds.task, ds.duration, ds.n_steps) == (100, 3, "regression", 1000.0, 1000)
    assert ds.readout_window == (0.0, 1000.0) and ds.labels is None
    assert ds.targets.shape == (4, 1000, 3)
    for s in ds:  # frozen: the same input and target every trial
        assert np.array_equal(s.times, ds[0].times) and np.array_equal(s.ids, ds[0].ids)
        assert np.array_equal(s.target, ds[0].target)
    rate = len(ds[0]) / (100 * 1.0)
    assert 45 < rate < 55, rate
    t = ds[0].target
    assert np.allclose(t[0], 0.0) and np.allclose(np.abs(t).max(axis=0), 1.0)
    again = pattern_generation(2, seed=9)
    assert np.array_equal(again[0].times, ds[0].times) and np.array_equal(again[0].target, t)
    other = pattern_generation(2, seed=10)
    assert not np.array_equal(other[0].target, t)
    one_out = pattern_generation(1, seed=9, n_outputs=1)
    assert np.array_equal(one_out[0].times, ds[0].times)  # the input does not depend on n_outputs
    x, y, mask = ds.to_dense(ds[:2])
    assert x.shape == (1000, 2, 100) and y.shape == (1000, 2, 3) and mask.all()


def test_pattern_generation_target_frequencies():
    ds = pattern_generation(1, seed=4, n_outputs=2, normalize=False)
    spectrum = np.abs(np.fft.rfft(ds[0].target, axis=0))  # 1000 steps of 1 ms: bin k is k Hz
    for d in range(2):
        big = set(np.flatnonzero(spectrum[:, d] > 1e-3 * spectrum[:, d].max()).tolist())
        assert big == {1, 2, 3, 5}
    amps = ds.info["amplitudes"]
    assert amps.shape == (2, 4) and np.all((amps >= 0.5) & (amps <= 2.0))


def test_normalized_mse():
    t = np.sin(np.linspace(0, 6, 100))
    assert normalized_mse(t, t) == 0.0
    assert normalized_mse(np.full_like(t, t.mean()), t) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        normalized_mse(t[:5], t)
    with pytest.raises(ValueError, match="zero variance"):
        normalized_mse(t, np.ones_like(t))


# --------------------------------------------------------------------------- digits


def test_digits_latency():
    sk = pytest.importorskip("sklearn.datasets")
    ds = digits(seed=0)
    assert (len(ds), ds.n_inputs, ds.n_outputs, ds.task) == (1797, 64, 10, "classification")
    assert ds.duration == 40.0 and ds.readout_window == (20.0, 40.0)
    assert set(np.unique(ds.labels).tolist()) == set(range(10))
    images = sk.load_digits().images
    for i in (0, 1000):
        s = ds[i]
        img = images[i]
        spiking = {8 * r + c: (1 - img[r, c] / 16) * 20.0 for r in range(8) for c in range(8) if img[r, c] > 0}
        assert s.label == int(sk.load_digits().target[i])
        assert sorted(s.ids.tolist()) == sorted(spiking)
        for t, ch in zip(s.times, s.ids):
            assert t == pytest.approx(spiking[int(ch)])
    i, r, c = np.argwhere(images == 16)[0]  # a full-intensity pixel spikes at 0 ms, a level-4 one at 15 ms
    assert ds[int(i)].times[ds[int(i)].ids == 8 * r + c].tolist() == [0.0]
    i, r, c = np.argwhere(images == 4)[0]
    assert ds[int(i)].times[ds[int(i)].ids == 8 * r + c].tolist() == [15.0]
    assert np.all(np.diff(ds[0].times) >= 0)
    thresholded = digits(seed=0, threshold=8)
    assert thresholded.spike_counts.sum() < ds.spike_counts.sum()


def test_digits_rate():
    pytest.importorskip("sklearn.datasets")
    ds = digits(seed=1, encoding="rate", duration=100.0, max_rate=200.0)
    again = digits(seed=1, encoding="rate", duration=100.0, max_rate=200.0)
    assert same(ds[:50], again[:50]) and not same(
        ds[:50], digits(seed=2, encoding="rate", duration=100.0, max_rate=200.0)[:50]
    )
    assert ds.readout_window == (50.0, 100.0)
    from sklearn.datasets import load_digits

    data = load_digits().data
    expected = data[:300].sum() / 16 * 200.0 * 0.1  # spikes = sum of rates x 100 ms
    got = ds.spike_counts[:300].sum()
    assert abs(got - expected) < 0.05 * expected, (got, expected)
    dark = data[0] == 0
    assert not np.isin(ds[0].ids, np.flatnonzero(dark)).any()
    with pytest.raises(ValueError, match="encoding"):
        digits(encoding="phase")


def test_missing_optional_dependencies(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'spikeforge\[data\]'"):
        digits()
    monkeypatch.setitem(sys.modules, "h5py", None)
    path = tmp_path / "shd.h5"
    path.write_bytes(b"")
    with pytest.raises(ImportError, match=r"pip install 'spikeforge\[data\]'"):
        load_shd(path)


# --------------------------------------------------------------------------- SHD


def write_shd(path, times, units, labels, *, time_dtype=np.float16, unit_dtype=np.uint16, speaker=None, skip=()):
    """An HDF5 file laid out like Cramer et al.'s SHD files: ragged spikes/times (s), spikes/units, labels."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        if "times" not in skip:
            d = spikes.create_dataset("times", (len(times),), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
            for i, t in enumerate(times):
                d[i] = np.asarray(t, dtype=time_dtype)
        if "units" not in skip:
            d = spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.dtype(unit_dtype)))
            for i, u in enumerate(units):
                d[i] = np.asarray(u, dtype=unit_dtype)
        if "labels" not in skip:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        extra = f.create_group("extra")
        extra.create_dataset("keys", data=np.array([f"digit-{k}".encode() for k in range(20)]))
        if speaker is not None:
            extra.create_dataset("speaker", data=np.asarray(speaker, dtype=np.uint16))


SHD_TIMES = [[0.0105, 0.25, 0.9995, 1.2], [], [0.5, 0.002]]
SHD_UNITS = [[3, 699, 10, 0], [], [5, 123]]
SHD_LABELS = [19, 0, 7]


def test_load_shd_round_trip(tmp_path):
    path = tmp_path / "shd_test.h5"
    write_shd(path, SHD_TIMES, SHD_UNITS, SHD_LABELS, speaker=[1, 2, 3])
    ds = load_shd(path)
    assert (len(ds), ds.n_inputs, ds.n_outputs, ds.task) == (3, 700, 20, "classification")
    assert ds.duration == 1000.0 and ds.dt == 1.0 and ds.readout_window == (0.0, 1000.0)
    assert ds.labels.tolist() == SHD_LABELS and ds.sample_info["speaker"].tolist() == [1, 2, 3]
    f16 = [np.asarray(t, np.float16).astype(np.float64) * 1000.0 for t in SHD_TIMES]
    # sample 0: the 1.2 s spike is past max_time and dropped; float16 0.9995 s rounds to 999.5 ms, kept
    assert ds[0].times.tolist() == pytest.approx(f16[0][:3].tolist()) and ds[0].ids.tolist() == [3, 699, 10]
    assert len(ds[1]) == 0
    assert ds[2].times.tolist() == pytest.approx(sorted(f16[2].tolist())) and ds[2].ids.tolist() == [123, 5]
    x, y, mask = ds.to_dense()
    assert x.shape == (1000, 3, 700) and x[10, 0, 3] == 1 and x[999, 0, 10] == 1 and y.tolist() == SHD_LABELS

    everything = load_shd(path, max_time=None, dt=2.0)
    assert everything.duration == 1202.0  # float16 1.2 s = 1200.2 ms, rounded up to the next 2 ms step
    assert len(everything[0]) == 4 and everything[0].times[-1] == pytest.approx(f16[0][3])
    assert len(load_shd(path, max_samples=2)) == 2
    short = load_shd(path, max_time=500.0, readout_window=(400.0, 500.0))
    assert short.duration == 500.0 and short[2].times.tolist() == pytest.approx([f16[2][1]])
    assert np.flatnonzero(short.readout_mask).tolist() == list(range(400, 500))

    f32 = tmp_path / "f32.h5"  # any float / int dtypes are accepted
    write_shd(f32, SHD_TIMES, SHD_UNITS, SHD_LABELS, time_dtype=np.float32, unit_dtype=np.int32)
    assert load_shd(f32)[0].times[0] == pytest.approx(10.5)


def test_load_shd_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)no file at.*Heidelberg.*does not download"):
        load_shd(tmp_path / "nope.h5")
    pytest.importorskip("h5py")
    junk = tmp_path / "shd_train.h5.gz"
    junk.write_bytes(b"\x1f\x8b not hdf5")
    with pytest.raises(ValueError, match="decompress"):
        load_shd(junk)
    for skip in ("units", "labels"):
        path = tmp_path / f"no_{skip}.h5"
        write_shd(path, SHD_TIMES, SHD_UNITS, SHD_LABELS, skip=(skip,))
        name = "spikes/units" if skip == "units" else "labels"
        with pytest.raises(ValueError, match=f"not an SHD file: missing '{name}'"):
            load_shd(path)
    bad = tmp_path / "bad_unit.h5"
    write_shd(bad, [[0.1]], [[700]], [0])
    with pytest.raises(ValueError, match=r"input channel 700 is out of range \[0, n_inputs=700\)"):
        load_shd(bad)
    ragged = tmp_path / "ragged.h5"
    write_shd(ragged, [[0.1, 0.2]], [[1]], [0])
    with pytest.raises(ValueError, match="sample 0 has 2 spike times but 1 units"):
        load_shd(ragged)
    count = tmp_path / "count.h5"
    write_shd(count, SHD_TIMES, SHD_UNITS, [0, 1])
    with pytest.raises(ValueError, match="must match"):
        load_shd(count)
    label = tmp_path / "label.h5"
    write_shd(label, SHD_TIMES, SHD_UNITS, [0, 1, 20])
    with pytest.raises(ValueError, match="label 20 of sample 2"):
        load_shd(label)


@pytest.mark.parametrize("counts", [False, True])
def test_a_lazy_raster_bins_each_range_of_steps_as_the_dense_array(counts):
    rng = np.random.default_rng(7)
    n, steps = 6, 40
    times = rng.uniform(0.0, steps * 1.0, 300)
    ids = rng.integers(0, 5, 300)
    offsets = np.concatenate([[0], np.sort(rng.integers(0, 300, n - 1)), [300]])
    data = SpikeDataset(times, ids, offsets, n_inputs=5, n_outputs=2, duration=steps * 1.0, dt=1.0,
                        labels=np.arange(n) % 2)
    dense = data.to_dense(counts=counts).x
    raster = data.to_dense(counts=counts, lazy=True).x
    assert raster.shape == dense.shape and raster.dtype == dense.dtype
    assert dense.max() > (1 if counts else 0)  # several spikes in one step and channel count, when asked
    np.testing.assert_array_equal(np.asarray(raster), dense)
    for t0, t1 in ((0, 7), (7, 40), (35, 99), (12, 12)):
        np.testing.assert_array_equal(raster[t0:t1], dense[t0:t1])
    padded = np.asarray(raster.with_batch(n + 3))
    np.testing.assert_array_equal(padded[:, :n], dense)
    assert not padded[:, n:].any()
