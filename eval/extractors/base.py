"""Pluggable image feature extractors for generation metrics, and `build_extractor` that names them.

An extractor maps (N, C, H, W) images in [-1, 1] to (N, D) features and, when it
has classifier heads, {head: (N, K) logits}. Kinds:

* ``inception``: the standard FID Inception-v3 (torch-fidelity) from a local weight
  file; the only one whose FID/IS can be compared with published numbers.
* ``domain``: a small CNN the toolkit trains on a built-in dataset (`domain_cnn.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from unimodal.registry import Registry

from ..errors import EvalError

# kind -> builder(options, dataset=, image_size=, channels=)
EXTRACTORS: Registry[Callable[..., "FeatureExtractor"]] = Registry("feature extractor", EvalError)


class FeatureExtractor(Protocol):
    name: str  # identifies weights and preprocessing: part of reference-statistics cache keys
    comparable: bool  # FID/IS comparable with published numbers
    heads: dict[str, list[str]]  # classifier head -> class names ({} without classifier)
    info: dict[str, Any]  # reported as is (e.g. the classifier's own test accuracy)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


def fit_images(images: torch.Tensor, channels: int, size: int | None) -> torch.Tensor:
    """(N, C, H, W) → (N, channels, size, size): grey↔RGB by averaging/repeating, bilinear antialiased resize."""
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images[:, :1].expand(-1, channels, -1, -1)
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images


def build_extractor(kind: str, options: dict[str, Any], *, dataset: str, image_size: int, channels: int) -> FeatureExtractor:
    """The extractor `kind` for images of `dataset` in the checkpoint's image space (size, channels)."""
    return EXTRACTORS.get(kind)(options, dataset=dataset, image_size=image_size, channels=channels)


@EXTRACTORS.register("domain")
def _domain(options: dict[str, Any], *, dataset: str, image_size: int, channels: int) -> FeatureExtractor:
    from .domain_cnn import DomainCNNConfig, load_domain_cnn

    return load_domain_cnn(DomainCNNConfig.from_dict({"dataset": dataset, "image_size": image_size, "channels": channels, **options}))


@EXTRACTORS.register("inception")
def _inception(options: dict[str, Any], *, dataset: str, image_size: int, channels: int) -> FeatureExtractor:
    from .inception import InceptionExtractor

    return InceptionExtractor(**options)
