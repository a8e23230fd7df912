"""Feature extractors (Inception from local weights, in-domain CNNs) and CLIP scorers."""

from .base import EXTRACTORS, FeatureExtractor, build_extractor, fit_images

__all__ = ["EXTRACTORS", "FeatureExtractor", "build_extractor", "fit_images"]
