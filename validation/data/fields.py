"""Gaussian random fields with a chosen isotropic power spectrum (numpy FFT)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PowerSpectrum = Callable[[np.ndarray], np.ndarray]


def wavenumbers(shape: tuple[int, ...]) -> np.ndarray:
    """|k| on the rfftn grid of `shape`, in units of the Nyquist frequency (0..~1.7)."""
    axes = [np.fft.fftfreq(n) * 2.0 for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1]) * 2.0]
    grids = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(sum(g * g for g in grids))


def gaussian_field(
    shape: tuple[int, ...], power: PowerSpectrum, rng: np.random.Generator
) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field whose spectrum has the shape `power`."""
    k = wavenumbers(shape)
    amplitude = np.zeros_like(k)
    nonzero = k > 0
    amplitude[nonzero] = np.sqrt(power(k[nonzero]))
    noise = np.fft.rfftn(rng.standard_normal(shape))
    field = np.fft.irfftn(noise * amplitude, s=shape, axes=tuple(range(len(shape))))
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float64)


def sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """A generator that depends only on (seed, stream, index): any rank can make any sample."""
    key = [seed, index] + [ord(c) for c in stream]
    return np.random.default_rng(np.random.SeedSequence(key))
