"""Arrays for a set of sample indices: synthetic by default, or read from a data directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, WorkloadConfig
from validation.data.climate import climate_sample
from validation.data.cosmo import cosmo_sample
from validation.data.maps import gan_map

Arrays = tuple[np.ndarray, np.ndarray | None]


def synthetic_arrays(config: WorkloadConfig, seed: int, indices: np.ndarray) -> Arrays:
    """Generate samples `indices` of the synthetic set for `config`'s workload."""
    if isinstance(config, CosmoFlowConfig):
        pairs = [cosmo_sample(seed, int(i), config.size) for i in indices]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if isinstance(config, ClimateConfig):
        pairs = [
            climate_sample(seed, int(i), config.height, config.width, config.channels)
            for i in indices
        ]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if isinstance(config, GANConfig):
        return np.stack([gan_map(seed, int(i), config.image_size) for i in indices]), None
    raise TypeError(f"no synthetic data for {type(config).__name__}")


def load_arrays(
    config: WorkloadConfig, seed: int, indices: np.ndarray, split: str, data_dir: Path | None
) -> Arrays:
    """Samples `indices` of `split` (train/val/ref): from `data_dir` if given, else synthetic."""
    if data_dir is None:
        return synthetic_arrays(config, seed, indices)
    from validation.data.readers import read_split

    return read_split(config, Path(data_dir), split, indices)
