"""Evaluation data: seeded subsets of dataset splits, as records, visual tokens or images."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from unimodal.config import VisualConfig


def load_records(
    dataset: str,
    split: str,
    options: dict[str, Any] | None = None,
    limit: int | None = None,
    seed: int = 0,
    keep: Callable[[dict[str, list[Any]]], list[bool]] | None = None,
):
    """A split as a `datasets.Dataset`: the records `keep` accepts, then a seeded subset of `limit` (in file order)."""
    from unimodal.data import load_dataset

    ds = load_dataset(dataset, split, **(options or {}))
    if keep is not None:
        mask = keep(ds.remove_columns([c for c in ds.column_names if c == "image"])[:])
        ds = ds.select([i for i, m in enumerate(mask) if m])
    if limit is not None and limit < len(ds):
        ds = ds.select(sorted(np.random.default_rng(seed).permutation(len(ds))[:limit].tolist()))
    return ds


def image_space(image_size: int, channels: int) -> VisualConfig:
    """One token per image: tokens are whole images, so a bank of it holds the images as the model sees them."""
    return VisualConfig(channels=channels, image_size=image_size, patch_size=image_size, block_h=1, block_w=1)


def model_images(ds, image_size: int, channels: int, name: str = "") -> torch.Tensor:
    """(N, C, S, S) images in [-1, 1], resized or padded exactly as `build_image_bank` does for the model."""
    from unimodal.tasks import build_image_bank, tokens_to_images

    space = image_space(image_size, channels)
    return tokens_to_images(build_image_bank(ds, space, name=name).tokens, space)
