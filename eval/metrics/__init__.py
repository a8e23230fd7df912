"""Metrics of the evaluation harness; importing this package registers them all.

The functions live in their modules (`fid.frechet_distance`, `vqa.normalize_answer`,
`linear_probe.linear_probe`, ...); the package exports the registry.
"""

from . import (  # noqa: F401
    captioning,
    coco_caption,
    conditional,
    fid,
    inception_score,
    linear_probe,
    pope,
    precision_recall,
    vqa,
    vqa_breakdown,
)
from .registry import METRICS, Metric, get_metric, list_metrics, register_metric, score_text

__all__ = ["METRICS", "Metric", "get_metric", "list_metrics", "register_metric", "score_text"]
