"""Readers for the real formats: CosmoFlow TFRecord (optionally GZIP), DeepCAM HDF5, npy maps.

Layout under --data: train/ and validation/ folders (as the MLPerf HPC data sets ship);
for the GAN, train.npy and validation.npy. One sample per TFRecord/HDF5 file; sample
index i reads file i (wrapping around the files present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, WorkloadConfig
from validation.data.climate import minmax_normalise
from validation.data.cosmo import normalise_counts
from validation.data.maps import SQUASH_A
from validation.data.tfrecord import parse_example, read_records

FOLDERS = {"train": "train", "val": "validation", "ref": "validation"}


def _files(root: Path, split: str, patterns: tuple[str, ...]) -> list[Path]:
    folder = root / FOLDERS[split]
    files = sorted(p for pat in patterns for p in folder.glob(pat))
    if not files:
        raise ValueError(f"no {'/'.join(patterns)} files in {folder}")
    return files


def _pick(files: list[Path], index: int, split: str) -> Path:
    # "ref" (real maps compared with "val") reads the same folder from the other end.
    return files[-1 - index % len(files)] if split == "ref" else files[index % len(files)]


def read_cosmoflow_tfrecord(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One CosmoFlow sample: (4, S, S, S) log1p-normalised, targets (4,)."""
    example = parse_example(next(read_records(path)))
    raw, y = example["x"], example["y"]
    if not isinstance(raw, bytes) or not isinstance(y, list):
        raise ValueError(f"{path}: expected bytes feature 'x' and float feature 'y'")
    counts = np.frombuffer(raw, dtype="<i2").reshape(size, size, size, -1)
    return normalise_counts(np.moveaxis(counts, -1, 0)), np.asarray(y, np.float32)


def read_deepcam_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One DeepCAM sample: (C, H, W) min-max normalised, labels (H, W)."""
    import h5py

    with h5py.File(path, "r") as f:
        data = np.asarray(f["climate/data"], dtype=np.float32)
        labels = np.asarray(f["climate/labels_0"], dtype=np.int64)
    return minmax_normalise(np.moveaxis(data, -1, 0)), labels


def squash(maps: np.ndarray) -> np.ndarray:
    """Map raw densities into (-1, 1) like CosmoGAN; maps already there are kept."""
    if maps.min() >= -1 and maps.max() <= 1:
        return maps.astype(np.float32)
    return (2 * maps / (maps + SQUASH_A) - 1).astype(np.float32)


def _offset(split: str) -> int:
    from validation.spec import VAL_OFFSET

    return {"train": 0, "val": VAL_OFFSET, "ref": 2 * VAL_OFFSET}[split]


def read_split(
    config: WorkloadConfig, root: Path, split: str, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples `indices` of `split` read from the files under `root`."""
    local = [int(i) - _offset(split) for i in indices]
    if isinstance(config, CosmoFlowConfig):
        files = _files(root, split, ("*.tfrecord", "*.tfrecord.gz"))
        pairs = [read_cosmoflow_tfrecord(_pick(files, i, split), config.size) for i in local]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if isinstance(config, ClimateConfig):
        files = _files(root, split, ("*.h5", "*.hdf5"))
        pairs = [read_deepcam_h5(_pick(files, i, split)) for i in local]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if isinstance(config, GANConfig):
        maps = np.load(root / f"{FOLDERS[split]}.npy" if split != "train" else root / "train.npy")
        n = len(maps)
        rows = [(n - 1 - i % n) if split == "ref" else i % n for i in local]
        return squash(maps[rows])[:, None], None
    raise TypeError(f"no reader for {type(config).__name__}")
