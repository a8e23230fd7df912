"""Improved precision and recall (Kynkäänniemi et al., 2019) on k-NN manifolds of features.

Each set's manifold is the union of balls around its points, of radius the
distance to the point's k-th nearest neighbour in the same set. Precision is the
share of generated points inside the real manifold; recall the share of real
points inside the generated manifold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .registry import register_metric

if TYPE_CHECKING:
    from ..samples import SampleSet


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)  # (N, N); the 0 self-distance is the first of the k+1 smallest
    return d.kthvalue(min(k + 1, x.shape[0]), dim=1).values


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    out = [(torch.cdist(points[i : i + chunk], centres) <= radii[None]).any(1) for i in range(0, len(points), chunk)]
    return torch.cat(out)


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of (N, D) generated features `fake` against (M, D) `real` features."""
    real = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


@register_metric("precision", aggregation="corpus", higher_is_better=True, inputs="images")
def precision(samples: SampleSet) -> float:
    """Share of generated samples inside the k-NN manifold of the reference set (fidelity)."""
    return samples.precision_recall[0]


@register_metric("recall", aggregation="corpus", higher_is_better=True, inputs="images")
def recall(samples: SampleSet) -> float:
    """Share of reference samples inside the k-NN manifold of the generated set (diversity)."""
    return samples.precision_recall[1]
