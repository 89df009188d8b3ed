"""Workload quality metrics in numpy, shared by both frameworks."""

from __future__ import annotations

import statistics

import numpy as np


def mean_absolute_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean |pred - target| over samples and targets."""
    return float(np.mean(np.abs(pred - target)))


def constant_baseline_mae(target: np.ndarray) -> float:
    """MAE of the best constant prediction (per-target median): the no-skill baseline."""
    return mean_absolute_error(np.median(target, axis=0, keepdims=True), target)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted] over all pixels."""
    idx = target.astype(np.int64).ravel() * n_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class intersection over union; NaN for a class absent from both."""
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes present in prediction or labels."""
    return float(np.nanmean(class_iou(confusion)))


def background_baseline_iou(target: np.ndarray, n_classes: int) -> float:
    """Mean IoU of predicting class 0 everywhere: the no-skill baseline (REFERENCE.md)."""
    return mean_iou(confusion_matrix(np.zeros_like(target), target, n_classes))


HIST_BINS = np.linspace(-1.0, 1.0, 41)


def pixel_histogram(maps: np.ndarray) -> np.ndarray:
    """Normalised histogram of pixel values in [-1, 1]."""
    counts, _ = np.histogram(np.clip(maps, -1, 1), bins=HIST_BINS)
    return counts / max(1, counts.sum())


def histogram_chi2(maps_a: np.ndarray, maps_b: np.ndarray) -> float:
    """Symmetric chi^2 between pixel histograms: sum (a-b)^2/(a+b), in [0, 2]."""
    a, b = pixel_histogram(maps_a), pixel_histogram(maps_b)
    both = (a + b) > 0
    return float(np.sum((a[both] - b[both]) ** 2 / (a[both] + b[both])))


def power_spectra(maps: np.ndarray) -> np.ndarray:
    """Azimuthally averaged power spectrum of each map: (N, size // 2)."""
    maps = maps.reshape(maps.shape[0], maps.shape[-2], maps.shape[-1]).astype(np.float64)
    size = maps.shape[-1]
    fk = np.fft.fft2(maps - maps.mean(axis=(1, 2), keepdims=True))
    power = np.abs(fk) ** 2 / size**2
    ky, kx = np.meshgrid(np.fft.fftfreq(size) * size, np.fft.fftfreq(size) * size, indexing="ij")
    kbin = np.rint(np.sqrt(kx**2 + ky**2)).astype(np.int64).ravel()
    nbins = size // 2
    keep = (kbin >= 1) & (kbin <= nbins)
    counts = np.bincount(kbin[keep] - 1, minlength=nbins)
    out = np.empty((maps.shape[0], nbins))
    for i, p in enumerate(power.reshape(maps.shape[0], -1)):
        out[i] = np.bincount(kbin[keep] - 1, weights=p[keep], minlength=nbins) / counts
    return out


def spectrum_chi2(maps_a: np.ndarray, maps_b: np.ndarray) -> float:
    """Mean over k of ((<P_a> - <P_b>) / sigma_b(k))^2, sigma_b the map-to-map scatter of b."""
    pa, pb = power_spectra(maps_a), power_spectra(maps_b)
    sigma = np.maximum(pb.std(axis=0), 1e-12)
    return float(np.mean(((pa.mean(axis=0) - pb.mean(axis=0)) / sigma) ** 2))


def throughput(local_batch: int, step_seconds: list[float]) -> dict[str, float | None]:
    """Samples/s of one rank over its timed steps: the mean rate (total samples / total
    time) and the rate of the median step. The median step is what the scaling check uses:
    on a shared machine, bursts of other tenants' work lengthen a few steps and move the
    mean, while a slowdown of the stack itself (communication, sync waits) lengthens every
    step and moves the median just as much."""
    if not step_seconds or sum(step_seconds) <= 0:
        return {"samples_per_s": None, "samples_per_s_median_step": None}
    median = statistics.median(step_seconds)
    return {
        "samples_per_s": local_batch * len(step_seconds) / sum(step_seconds),
        "samples_per_s_median_step": local_batch / median if median > 0 else None,
    }
