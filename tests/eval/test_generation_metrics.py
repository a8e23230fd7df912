import numpy as np
import pytest
import scipy.linalg
import torch

from unimodal.eval.metrics.fid import frechet_distance, gaussian_stats
from unimodal.eval.metrics.inception_score import inception_score
from unimodal.eval.metrics.precision_recall import precision_recall


def test_fid_equals_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))  # = |Δμ|² + Σ(√v1 − √v2)²
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-8)


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Independent float64 route: tr((Σ1 Σ2)^½) = Σ √eig(Σ1^½ Σ2 Σ1^½), all symmetric (scipy.linalg.eigh)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = scipy.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(scipy.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def test_fid_matches_float64_scipy_reference_on_full_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 0.5
    fid = frechet_distance(*gaussian_stats(x.astype(np.float32)), *gaussian_stats(y.astype(np.float32)))
    assert fid == pytest.approx(_reference_fid(x, y), rel=1e-5)


def test_precision_recall_identical_sets_and_far_apart_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    p, r = precision_recall(x, x + 100.0, k=3)
    assert p == 0.0 and r == 0.0


def test_precision_recall_sees_mode_dropping():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 20])  # two modes
    fake = rng.normal(size=(200, 2))  # only the first mode: faithful but not diverse
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.35 < r < 0.6


def test_inception_score_extremes():
    K = 10
    confident = torch.full((100, K), -1e4)
    confident[torch.arange(100), torch.arange(100) % K] = 0.0  # one-hot, balanced over K classes
    assert inception_score(confident, splits=1)[0] == pytest.approx(K, rel=1e-6)
    assert inception_score(torch.zeros(100, K), splits=5) == pytest.approx((1.0, 0.0))
