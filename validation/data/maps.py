"""Lognormal 2D maps with a known power spectrum, the training set of the science GAN."""

from __future__ import annotations

import numpy as np

from validation.data.fields import gaussian_field, sample_rng

SLOPE = -2.5
CUTOFF = 2.0
SIGMA = 1.0
# CosmoGAN's invertible squash s = 2x/(x+a) - 1 maps densities into (-1, 1) for tanh output.
SQUASH_A = 1.0


def map_power(k: np.ndarray) -> np.ndarray:
    """The known spectrum of the underlying Gaussian field."""
    return k**SLOPE * np.exp(-((k / CUTOFF) ** 2))


def gan_map(seed: int, index: int, size: int) -> np.ndarray:
    """Map `index`: float32 (1, S, S) in (-1, 1)."""
    rng = sample_rng(seed, "gan", index)
    delta = gaussian_field((size, size), map_power, rng)
    density = np.exp(SIGMA * delta - 0.5 * SIGMA**2)
    squashed = 2.0 * density / (density + SQUASH_A) - 1.0
    return squashed[None].astype(np.float32)
