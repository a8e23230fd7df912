"""scikit-learn's digits: 1,797 8x8 grayscale handwritten digits, for the fastest tests."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import datasets
import numpy as np

from unimodal.data.registry import DatasetSource, format_card, register_dataset

from ..errors import DataError

N_TRAIN = 1500  # first 1,500 in file order train, the remaining 297 test: fixed, no shuffling


@cache
def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8 in 0..255, labels (1797,) int64) in sklearn's order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # sklearn's 0..16 -> 0..255
    return images, bunch.target.astype(np.int64)


def split_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test part of `load_arrays()`."""
    images, labels = load_arrays()
    part = {"train": slice(0, N_TRAIN), "test": slice(N_TRAIN, None)}
    if split not in part:
        raise DataError(f"digits has no split {split!r}; splits: train, test")
    return images[part[split]], labels[part[split]]


@register_dataset
class Digits(DatasetSource):
    """sklearn digits as images with labels."""

    name = "digits"
    version = "1"
    splits = ("train", "test")

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
                "label_name": datasets.Value("string"),
            }
        )

    def data_version(self) -> str:
        import sklearn

        return sklearn.__version__

    def examples(self, split: str | None, view: str) -> Iterator[dict[str, Any]]:
        from PIL import Image

        assert split is not None
        images, labels = split_arrays(split)
        for pixels, label in zip(images, labels.tolist()):
            yield {"image": Image.fromarray(pixels), "label": label, "label_name": str(label)}

    def card(self) -> str:
        images, labels = load_arrays()
        return format_card(
            "digits",
            "scikit-learn's optical-recognition digits: 8x8 grayscale handwritten digits 0-9.",
            {
                "splits": f"train {N_TRAIN:,} (first in file order), test {len(images) - N_TRAIN:,} (the rest); "
                f"{len(images):,} in all",
                "records": "image (PIL, mode L, 8x8), label (int, ClassLabel), label_name ('0'..'9')",
                "source": "sklearn.datasets.load_digits (bundled with scikit-learn; UCI 'Optical Recognition "
                "of Handwritten Digits', Alpaydin & Kaynak 1998)",
                "licence": "CC BY 4.0 (UCI); distributed with scikit-learn (BSD-3-Clause)",
            },
            ["Derived: pixel values 0..16 are rescaled to 0..255 (round(v * 255 / 16)); labels unchanged."],
        )
