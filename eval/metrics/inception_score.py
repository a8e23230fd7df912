"""Inception Score (Salimans et al.): exp E_x KL(p(y|x) ‖ p(y)), mean and std over splits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .registry import register_metric

if TYPE_CHECKING:
    from ..samples import SampleSet


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the IS over `splits` consecutive chunks of (N, K) classifier logits."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = logits.shape[0]
    splits = max(1, min(splits, n))
    log_p = logits.log_softmax(-1)  # (N, K)
    scores = []
    for i in range(splits):
        lp = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = lp.exp().mean(0).log()  # (K,)
        kl = (lp.exp() * (lp - log_marginal)).sum(-1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


@register_metric("inception_score", aggregation="corpus", higher_is_better=True, inputs="images")
def inception_score_metric(samples: SampleSet) -> float:
    """Inception Score (mean over 10 splits) from the extractor's classifier logits."""
    return inception_score(samples.primary_logits, splits=10)[0]
