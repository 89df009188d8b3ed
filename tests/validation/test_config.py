"""Workload configs: the CosmoFlow learning-rate schedule."""

from __future__ import annotations

import itertools

import pytest

from validation.config import lr_factor, workload_config


def test_full_cosmoflow_trains_at_a_constant_rate() -> None:
    config = workload_config("cosmoflow", "full")
    assert {lr_factor(config, step, 16) for step in range(config.epochs * 16)} == {1.0}


def test_small_cosmoflow_warms_up_over_one_epoch_then_decays_towards_zero() -> None:
    config = workload_config("cosmoflow", "small")
    steps_per_epoch = 16
    factors = [lr_factor(config, s, steps_per_epoch) for s in range(config.epochs * 16)]
    warmup, decay = factors[:steps_per_epoch], factors[steps_per_epoch:]
    assert warmup == pytest.approx([(s + 1) / steps_per_epoch for s in range(steps_per_epoch)])
    assert decay[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert 0 < decay[-1] < 0.01


def test_epochs_override_stretches_the_schedule() -> None:
    config = workload_config("cosmoflow", "small", epochs=3)
    assert lr_factor(config, 16, 16) == 1.0
    assert lr_factor(config, 32, 16) == pytest.approx(0.5)


def test_unknown_decay_is_an_error() -> None:
    config = workload_config("cosmoflow", "small", lr_decay="linear")
    with pytest.raises(ValueError, match="lr_decay"):
        lr_factor(config, 100, 16)
