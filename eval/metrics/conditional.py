"""Metrics of conditional generation: does a sample show what was asked for?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .registry import register_metric

if TYPE_CHECKING:
    from ..samples import SampleSet


@register_metric("class_accuracy", aggregation="corpus", higher_is_better=True, inputs="images")
def class_accuracy(samples: SampleSet) -> float | dict[str, float]:
    """Share of samples an in-domain classifier assigns the requested class (every head right, e.g. colour and shape)."""
    targets = samples.targets
    if not targets:
        raise ValueError("class_accuracy needs requested classes and an extractor with classifier heads")
    hits = {h: samples.logits[h].argmax(-1) == np.asarray(t) for h, t in targets.items()}
    joint = float(np.mean(np.logical_and.reduce(list(hits.values()))))
    if len(hits) == 1:
        return joint
    return {"": joint, **{h: float(v.mean()) for h, v in hits.items()}}


@register_metric("clip_score", aggregation="mean", higher_is_better=True, inputs="images")
def clip_score(samples: SampleSet) -> float:
    """CLIP score 100·max(cos(image, caption), 0) (Hessel et al. without the 2.5 rescale), mean over samples."""
    return float(np.mean(samples.clip_scores))
