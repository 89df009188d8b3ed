"""Synthetic climate fields with planted cyclones (class 1) and atmospheric rivers (class 2).

Channels: 0 "pressure" (cyclones are deep lows), 1 "wind" (a ring around each cyclone),
2 "humidity" (rivers are moist bands), the rest smooth noise. Labels are where the
signal was planted, so a segmentation network can learn them.
"""

from __future__ import annotations

import numpy as np

from validation.data.fields import gaussian_field, sample_rng


def _background(shape: tuple[int, int], channels: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth red-noise fields, one per channel."""
    return np.stack([gaussian_field(shape, lambda k: k**-3.0, rng) * 0.5 for _ in range(channels)])


def climate_sample(
    seed: int, index: int, height: int, width: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample `index`: (float32 fields (C,H,W) min-max normalised, int64 labels (H,W))."""
    if channels < 3:
        raise ValueError("climate fields need at least 3 channels")
    rng = sample_rng(seed, "climate", index)
    data = _background((height, width), channels, rng)
    labels = np.zeros((height, width), dtype=np.int64)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = min(height, width)

    for _ in range(int(rng.integers(1, 3))):  # atmospheric rivers: wavy bands
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.3, 0.3) * scale
        half_width = rng.uniform(0.03, 0.06) * scale
        x0, y0 = xx - width / 2, yy - height / 2
        along = x0 * np.cos(angle) + y0 * np.sin(angle)
        across = -x0 * np.sin(angle) + y0 * np.cos(angle) - offset
        across = across - 0.05 * scale * np.sin(along / scale * 2 * np.pi)
        band = np.abs(across) < half_width
        data[2] += 2.5 * np.exp(-((across / half_width) ** 2))
        labels[band] = 2

    for _ in range(int(rng.integers(1, 4))):  # tropical cyclones: deep lows with a wind ring
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        radius = rng.uniform(0.04, 0.08) * scale
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        data[0] -= 3.0 * np.exp(-((r / radius) ** 2))
        data[1] += 2.5 * np.exp(-(((r - radius) / (0.5 * radius)) ** 2))
        labels[r < radius] = 1

    return minmax_normalise(data), labels


def minmax_normalise(data: np.ndarray) -> np.ndarray:
    """Per-channel min-max normalisation to [0, 1] (the DeepCAM reference does this)."""
    lo = data.min(axis=(1, 2), keepdims=True)
    hi = data.max(axis=(1, 2), keepdims=True)
    return ((data - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)
