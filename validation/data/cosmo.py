"""Synthetic CosmoFlow cubes: lognormal, Poisson-sampled fields whose spectrum encodes 4 targets.

Each target in [-1, 1] drives one visible property, so a CNN can learn them:
  t0 ("Omega_m") -> mean particle count, t1 ("sigma_8") -> fluctuation amplitude,
  t2 ("n_s") -> spectral slope, t3 ("h") -> small-scale cutoff.
The four channels are the same field at four "redshifts" (growth factors).
"""

from __future__ import annotations

import numpy as np

from validation.data.fields import gaussian_field, sample_rng

GROWTH = (0.55, 0.7, 0.85, 1.0)


def physical_parameters(targets: np.ndarray) -> dict[str, float]:
    """Map unit-scaled targets to generator parameters."""
    t0, t1, t2, t3 = (float(t) for t in targets)
    return {
        "mean_count": 4.0 * float(np.exp(0.6 * t0)),
        "amplitude": 0.8 + 0.3 * t1,
        "slope": -1.5 + 0.9 * t2,
        "cutoff": 0.3 * float(np.exp(0.5 * t3)),
    }


def cosmo_counts(targets: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """int16 counts of shape (4, size, size, size) for the given targets."""
    p = physical_parameters(targets)

    def power(k: np.ndarray) -> np.ndarray:
        return k ** p["slope"] * np.exp(-((k / p["cutoff"]) ** 2))

    delta = gaussian_field((size, size, size), power, rng)
    channels = []
    for growth in GROWTH:
        s = p["amplitude"] * growth
        density = np.exp(s * delta - 0.5 * s * s)
        channels.append(rng.poisson(p["mean_count"] * density))
    return np.clip(np.stack(channels), 0, np.iinfo(np.int16).max).astype(np.int16)


def cosmo_sample(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample `index`: (log1p-normalised float32 cube (4,S,S,S), float32 targets (4,))."""
    rng = sample_rng(seed, "cosmoflow", index)
    targets = rng.uniform(-1.0, 1.0, size=4)
    counts = cosmo_counts(targets, size, rng)
    return normalise_counts(counts), targets.astype(np.float32)


def normalise_counts(counts: np.ndarray) -> np.ndarray:
    """The reference normalisation log(x + 1)."""
    return np.log1p(counts.astype(np.float32))
