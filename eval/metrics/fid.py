"""Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    FID = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

computed in float64 with `scipy.linalg.sqrtm`, as pytorch-fid does.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg

from .registry import register_metric

if TYPE_CHECKING:
    from ..samples import SampleSet


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ (D,), Σ (D, D)) of (N, D) features in float64 (unbiased covariance, as pytorch-fid)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance of N(μ₁, Σ₁) and N(μ₂, Σ₂).

    A singular product (fewer samples than dimensions) gets `eps` added to both
    diagonals, and the tiny imaginary part of the root from round-off is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    with warnings.catch_warnings():  # fewer samples than dimensions: a singular product is expected
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


@register_metric("fid", aggregation="corpus", higher_is_better=False, inputs="images")
def fid(samples: SampleSet) -> float:
    """Fréchet distance of generated vs reference features (FID proper only with Inception features)."""
    return frechet_distance(*gaussian_stats(samples.features), *samples.reference_stats)
