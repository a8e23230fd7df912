"""Moving Fashion-MNIST: the Moving-MNIST recipe on real Fashion-MNIST images, generated deterministically.

Each sequence (Srivastava et al. 2015, "Unsupervised Learning of Video
Representations using LSTMs"): `num_items` (2) images drawn from one
Fashion-MNIST split bounce inside a black `canvas`×`canvas` (64×64) frame for
`frames` (16) frames. Every item starts at a uniform position with a uniform
direction and moves `STEP` (0.1) of the free range per frame, reflecting off
the edges; overlapping items combine by pixel-wise maximum.

Class label rule for class-conditional video: `label` is the class of the FIRST
item (the one drawn first, index 0 of `labels`); `labels` lists the classes of
all items in drawing order. Train sequences use Fashion-MNIST train images and
test sequences test images, so no image is shared between the splits. The same
options and seed always give the same sequences.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
from PIL import Image

from unimodal.data.fashion_mnist import CLASSES, data_dir, load_arrays, split_files
from unimodal.data.registry import DatasetSource, format_card, register_dataset

from ..errors import ConfigError

DEFAULT_SEQUENCES = {"train": 2000, "test": 500}
STEP = 0.1  # displacement per frame as a fraction of the free range (Moving-MNIST's step_length)
_SPLIT_SEED = {"train": 0, "test": 1}


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"moving_fmnist option {name}={value!r} is invalid: must be a positive integer")
    return int(value)


def trajectories(rng: np.random.Generator, num_items: int, frames: int, free: int) -> np.ndarray:
    """(num_items, frames, 2) integer top-left (row, col) corners of bouncing items in [0, free]."""
    pos = rng.random((num_items, 2))  # in units of the free range
    theta = rng.random(num_items) * 2 * np.pi
    vel = STEP * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    out = np.empty((num_items, frames, 2), dtype=np.int64)
    for f in range(frames):
        out[:, f] = np.rint(pos * free)
        pos = pos + vel
        low, high = pos < 0, pos > 1  # reflect off the edges
        pos = np.where(low, -pos, np.where(high, 2 - pos, pos))
        vel = np.where(low | high, -vel, vel)
    return out


def render(items: np.ndarray, corners: np.ndarray, canvas: int) -> np.ndarray:
    """(frames, canvas, canvas) uint8: items (num_items, s, s) at corners (num_items, frames, 2), max-combined."""
    n, s, _ = items.shape
    video = np.zeros((corners.shape[1], canvas, canvas), dtype=np.uint8)
    for i in range(n):
        for f, (r, c) in enumerate(corners[i]):
            np.maximum(video[f, r : r + s, c : c + s], items[i], out=video[f, r : r + s, c : c + s])
    return video


def generate(
    images: np.ndarray, labels: np.ndarray, num_sequences: int, frames: int, canvas: int, num_items: int,
    item_size: int, seed: int,
) -> Iterator[tuple[np.ndarray, list[int], list[int]]]:
    """Yield (video (frames, canvas, canvas) uint8, item classes, item source indices) per sequence."""
    rng = np.random.default_rng(seed)
    free = canvas - item_size
    for _ in range(num_sequences):
        idx = rng.integers(0, len(images), size=num_items)
        items = images[idx]
        if item_size != items.shape[1]:
            items = np.stack([np.asarray(Image.fromarray(im).resize((item_size, item_size), Image.BILINEAR)) for im in items])
        corners = trajectories(rng, num_items, frames, free)
        yield render(items, corners, canvas), [int(labels[i]) for i in idx], [int(i) for i in idx]


@register_dataset
class MovingFashionMNIST(DatasetSource):
    """Two Fashion-MNIST items bouncing in a 64×64 canvas for 16 frames, with class labels."""

    name = "moving_fmnist"
    version = "1"
    splits = ("train", "test")

    def features(self, view: str, frames: int = 16, canvas: int = 64, **options: Any) -> datasets.Features:
        return datasets.Features(
            {
                "video": datasets.Array3D(shape=(frames, canvas, canvas), dtype="uint8"),
                "label": datasets.ClassLabel(names=list(CLASSES)),
                "labels": datasets.Sequence(datasets.ClassLabel(names=list(CLASSES))),
                "source_index": datasets.Sequence(datasets.Value("int64")),
            }
        )

    def resolve_options(
        self,
        split: str | None,
        num_sequences: int | None = None,
        frames: int = 16,
        canvas: int = 64,
        num_items: int = 2,
        item_size: int = 28,
        seed: int = 0,
        path: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        assert split is not None
        opts = {
            "num_sequences": _positive("num_sequences", DEFAULT_SEQUENCES[split] if num_sequences is None else num_sequences),
            "frames": _positive("frames", frames),
            "canvas": _positive("canvas", canvas),
            "num_items": _positive("num_items", num_items),
            "item_size": _positive("item_size", item_size),
            "seed": int(seed),
        }
        if opts["item_size"] > opts["canvas"]:
            raise ConfigError(f"moving_fmnist item_size={item_size} is larger than canvas={canvas}")
        split_files(split, path)  # fail before any cache directory is made
        return {**opts, "path": str(data_dir(path).resolve())}

    def examples(
        self,
        split: str | None,
        view: str,
        num_sequences: int | None = None,
        frames: int = 16,
        canvas: int = 64,
        num_items: int = 2,
        item_size: int = 28,
        seed: int = 0,
        path: str | os.PathLike | None = None,
    ) -> Iterator[dict[str, Any]]:
        assert split is not None
        opts = self.resolve_options(split, num_sequences, frames, canvas, num_items, item_size, seed, path)
        images, labels = load_arrays(split, opts["path"])
        stream = generate(
            images, labels, opts["num_sequences"], opts["frames"], opts["canvas"], opts["num_items"],
            opts["item_size"], seed=np.random.SeedSequence([opts["seed"], _SPLIT_SEED[split]]).generate_state(1)[0],
        )
        for video, classes, sources in stream:
            yield {"video": video, "label": classes[0], "labels": classes, "source_index": sources}

    def card(self) -> str:
        return format_card(
            "moving_fmnist",
            "Moving Fashion-MNIST: the Moving-MNIST recipe on real Fashion-MNIST images. Each sequence shows "
            "2 items bouncing in a black 64x64 canvas for 16 frames (grayscale, uint8).",
            {
                "splits": f"train {DEFAULT_SEQUENCES['train']:,}, test {DEFAULT_SEQUENCES['test']:,} sequences "
                "by default (option num_sequences)",
                "records": "video (frames, canvas, canvas) uint8; label (int, ClassLabel): class of the FIRST item, "
                "the class-conditional label; labels: classes of all items; source_index: their Fashion-MNIST indices",
                "options": "num_sequences, frames (16), canvas (64), num_items (2), item_size (28; items resized "
                "bilinearly), seed (0), path (Fashion-MNIST directory)",
                "recipe": f"uniform start in the free range, uniform direction, {STEP} of the free range per frame, "
                "reflection at the edges, overlapping items combined by maximum (Srivastava et al. 2015)",
                "source": f"Fashion-MNIST IDX files in {data_dir()} (Debian package dataset-fashion-mnist); train "
                "sequences use train images, test sequences test images",
                "licence": "MIT (Expat), Copyright 2017 Zalando SE (the Fashion-MNIST images)",
            },
            ["Derived: the sequences are generated deterministically from the options and the seed."],
        )
