"""Synthetic data: deterministic, sharded, and carrying the signal the workloads must learn."""

from __future__ import annotations

import numpy as np

from validation.data.climate import climate_sample
from validation.data.cosmo import cosmo_sample
from validation.data.maps import SLOPE, gan_map
from validation.metrics import power_spectra
from validation.spec import epoch_order, shard_indices


def test_cosmo_sample_is_deterministic_per_index() -> None:
    a, ta = cosmo_sample(1, 5, 16)
    b, tb = cosmo_sample(1, 5, 16)
    c, _ = cosmo_sample(1, 6, 16)
    assert a.shape == (4, 16, 16, 16) and ta.shape == (4,)
    assert np.array_equal(a, b) and np.array_equal(ta, tb)
    assert not np.array_equal(a, c)


def test_cosmo_mean_density_and_amplitude_track_their_targets() -> None:
    samples = [cosmo_sample(0, i, 16) for i in range(40)]
    targets = np.stack([t for _, t in samples])
    mean_log = np.array([x.mean() for x, _ in samples])
    spread = np.array([x[3].std() for x, _ in samples])
    assert np.corrcoef(targets[:, 0], mean_log)[0, 1] > 0.8
    assert np.corrcoef(targets[:, 1], spread)[0, 1] > 0.3


def test_shards_are_disjoint_and_cover_the_set() -> None:
    shards = [shard_indices(100, r, 3) for r in range(3)]
    assert sum(len(s) for s in shards) == 100
    assert len(set().union(*map(set, shards))) == 100
    assert np.array_equal(shard_indices(100, 2, 3, fault="same-shard"), shards[0])


def test_unshuffled_shards_rebuild_the_single_rank_batches() -> None:
    world, local = 2, 4
    one = epoch_order(shard_indices(16, 0, 1), 0, 0, 0, shuffle=False)[: world * local]
    many = [epoch_order(shard_indices(16, r, world), 0, 0, r, False)[:local] for r in range(world)]
    assert sorted(np.concatenate(many)) == sorted(one)


def test_climate_labels_mark_the_planted_features() -> None:
    fields, labels = climate_sample(3, 0, 64, 96, 4)
    assert fields.shape == (4, 64, 96) and labels.shape == (64, 96)
    assert fields.min() >= 0.0 and fields.max() <= 1.0
    assert set(np.unique(labels)) <= {0, 1, 2}
    fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
    assert fractions[0] > 0.5 and fractions[1] > 0 and fractions[2] > 0
    # cyclones are pressure lows, rivers are moist bands
    assert fields[0][labels == 1].mean() < fields[0][labels == 0].mean()
    assert fields[2][labels == 2].mean() > fields[2][labels == 0].mean()


def test_gan_maps_lie_in_tanh_range_with_a_falling_spectrum() -> None:
    maps = np.stack([gan_map(0, i, 32) for i in range(16)])
    assert maps.shape == (16, 1, 32, 32)
    assert maps.min() > -1 and maps.max() < 1
    p = power_spectra(maps).mean(axis=0)
    k = np.arange(1, len(p) + 1)
    slope = np.polyfit(np.log(k[1:8]), np.log(p[1:8]), 1)[0]
    assert slope < -1.0 and SLOPE < 0
