"""`SampleSet`: generated images, what was asked for, and the reference set — what image metrics read.

Features are computed once per set by the task's feature extractor; the
reference features come from the on-disk cache (`reference.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from .metrics.fid import gaussian_stats
from .metrics.precision_recall import precision_recall as knn_precision_recall

if TYPE_CHECKING:
    from .extractors.base import FeatureExtractor
    from .extractors.clip import ClipScorer


@dataclass
class SampleSet:
    """Attributes:
    images: (N, C, H, W) generated images in [-1, 1].
    extractor: maps images to (features, {head: logits}); see `extractors.base`.
    reference_features: (M, D) extractor features of the reference images (or None).
    reference_stats: their (mu, sigma); computed from the features when not given.
    targets: per classifier head, the class index each sample was asked for (-1: unknown).
    captions: the prompt of each sample (text→image).
    clip: a CLIP scorer for `clip_score` (or None).
    k: neighbourhood size of precision/recall.
    """

    images: torch.Tensor
    extractor: FeatureExtractor
    reference_features: np.ndarray | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    captions: list[str] | None = None
    clip: ClipScorer | None = None
    k: int = 3
    reference_stats: tuple[np.ndarray, np.ndarray] | None = None  # (mu, sigma), from the cache when given

    def __post_init__(self) -> None:
        if self.reference_stats is None and self.reference_features is not None:
            self.reference_stats = gaussian_stats(self.reference_features)

    @cached_property
    def _extracted(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feats, logits = self.extractor(self.images)
        return feats, logits

    @property
    def features(self) -> np.ndarray:
        return self._extracted[0]

    @property
    def logits(self) -> dict[str, np.ndarray]:
        return self._extracted[1]

    @property
    def primary_logits(self) -> np.ndarray:
        if not self.logits:
            raise ValueError(f"extractor {self.extractor.name!r} has no classifier logits")
        return next(iter(self.logits.values()))

    @cached_property
    def precision_recall(self) -> tuple[float, float]:
        return knn_precision_recall(self._reference(), self.features, self.k)

    @cached_property
    def clip_scores(self) -> np.ndarray:
        if self.clip is None or self.captions is None:
            raise ValueError("clip_score needs captions and a CLIP model (the task's `clip:` settings)")
        return self.clip.score(self.images, self.captions)

    def _reference(self) -> np.ndarray:
        if self.reference_features is None:
            raise ValueError("this metric needs reference images")
        return self.reference_features
