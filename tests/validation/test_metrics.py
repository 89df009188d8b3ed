"""Quality metrics: IoU, MAE baselines, and the GAN summary-statistic chi^2."""

from __future__ import annotations

import numpy as np
import pytest

from validation.metrics import (
    background_baseline_iou,
    confusion_matrix,
    constant_baseline_mae,
    histogram_chi2,
    mean_iou,
    spectrum_chi2,
    throughput,
)


def test_perfect_segmentation_has_iou_one() -> None:
    labels = np.array([[0, 1], [2, 2]])
    assert mean_iou(confusion_matrix(labels, labels, 3)) == 1.0


def test_all_background_baseline_is_background_frequency_over_classes() -> None:
    labels = np.zeros((10, 10), dtype=int)
    labels[:2] = 1
    labels[2:3] = 2
    assert np.isclose(background_baseline_iou(labels, 3), 0.7 / 3)


def test_constant_baseline_mae_of_uniform_targets_is_about_half() -> None:
    y = np.random.default_rng(0).uniform(-1, 1, size=(5000, 4))
    assert abs(constant_baseline_mae(y) - 0.5) < 0.02


def test_chi2_is_zero_for_identical_sets_and_large_for_different_ones() -> None:
    rng = np.random.default_rng(0)
    a = np.tanh(rng.normal(size=(32, 1, 16, 16)))
    b = np.tanh(3 * rng.normal(size=(32, 1, 16, 16)))
    assert histogram_chi2(a, a) == 0.0
    assert spectrum_chi2(a, a) == 0.0
    assert histogram_chi2(a, b) > 0.05
    assert spectrum_chi2(a, b) > 1


def test_throughput_median_step_ignores_bursts_but_not_a_slower_stack() -> None:
    steady = [0.1] * 20
    burst = [0.1] * 18 + [1.0, 1.0]  # another tenant took the cores for two steps
    slower = [0.2] * 20  # every step waits (communication, a straggler)
    assert throughput(8, steady) == pytest.approx(
        {"samples_per_s": 80.0, "samples_per_s_median_step": 80.0}
    )
    assert throughput(8, burst)["samples_per_s_median_step"] == pytest.approx(80.0)
    assert throughput(8, burst)["samples_per_s"] < 0.6 * 80.0
    assert throughput(8, slower)["samples_per_s_median_step"] == pytest.approx(40.0)
    assert throughput(8, [])["samples_per_s"] is None
