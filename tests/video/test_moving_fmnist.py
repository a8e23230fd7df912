"""Moving Fashion-MNIST: deterministic, real Fashion-MNIST items that stay whole on the canvas, the label rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_helpers import require_fashion_mnist

from unimodal.data import dataset_card, get_source, load_dataset
from unimodal.data import fashion_mnist as fm
from unimodal.data.moving_fmnist import trajectories

SMALL = dict(num_sequences=24, frames=8, canvas=32, item_size=14)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mfmnist-cache")


@pytest.fixture(scope="module")
def small(cache: Path):
    require_fashion_mnist()
    return load_dataset("moving_fmnist", "test", cache_dir=cache, **SMALL)


def videos(ds) -> np.ndarray:
    return np.asarray(ds.with_format("numpy")[:]["video"], dtype=np.uint8)


def test_shapes_labels_and_label_rule(small) -> None:
    v = videos(small)
    assert v.shape == (24, 8, 32, 32)
    _, labels = fm.load_arrays("test")
    for rec in small:
        assert len(rec["labels"]) == 2 and rec["label"] == rec["labels"][0]  # the first item's class
        assert rec["labels"] == [int(labels[i]) for i in rec["source_index"]]


def test_items_are_real_fashion_mnist_and_stay_whole(small) -> None:
    from PIL import Image

    images, _ = fm.load_arrays("test")
    v = videos(small).astype(np.int64)
    for rec, vid in zip(small, v):
        items = [np.asarray(Image.fromarray(images[i]).resize((14, 14), Image.BILINEAR)).astype(np.int64)
                 for i in rec["source_index"]]
        sums = [it.sum() for it in items]
        per_frame = vid.reshape(8, -1).sum(1)
        # max-combined and never clipped by the canvas: at least the brighter item, at most both
        assert (per_frame >= max(sums)).all() and (per_frame <= sum(sums)).all()
        assert vid.max() == max(it.max() for it in items)
    # exactly: every frame is the pixel-wise max of its two items pasted whole at some corners, which move
    # at most 0.1 of the free range (18) a frame; found by brute force over all 19x19 corners
    from numpy.lib.stride_tricks import sliding_window_view

    for rec, vid in list(zip(small, v))[:6]:
        items = [np.asarray(Image.fromarray(images[i]).resize((14, 14), Image.BILINEAR)).astype(np.int64)
                 for i in rec["source_index"]]
        prev = None
        for frame in vid:
            wins = sliding_window_view(frame, (14, 14))  # (19, 19, 14, 14)
            cands = [list(zip(*np.nonzero((wins >= it).all(axis=(2, 3))))) for it in items]
            fits = []
            for a in cands[0]:
                for b in cands[1]:
                    canvas = np.zeros_like(frame)
                    for it, (r, c) in zip(items, (a, b)):
                        canvas[r : r + 14, c : c + 14] = np.maximum(canvas[r : r + 14, c : c + 14], it)
                    if np.array_equal(canvas, frame):
                        fits.append((a, b))
            assert fits, rec["source_index"]
            if prev is not None:
                assert any(max(abs(int(x) - int(y)) for p, q in zip(f, g) for x, y in zip(p, q)) <= 2 * 1.8 + 1
                           for f in fits for g in prev)
            prev = fits


def test_deterministic_and_seeded(cache: Path, small) -> None:
    again = load_dataset("moving_fmnist", "test", cache=False, **SMALL)
    np.testing.assert_array_equal(videos(again), videos(small))
    other = load_dataset("moving_fmnist", "test", cache=False, seed=1, **SMALL)
    assert not np.array_equal(videos(other), videos(small))
    assert other["source_index"] != small["source_index"]  # the seed picks other items, not only other paths
    assert again["source_index"] == small["source_index"] and again["labels"] == small["labels"]
    train = load_dataset("moving_fmnist", "train", cache=False, **SMALL)
    assert not np.array_equal(videos(train), videos(small))


def test_bouncing_trajectories_stay_in_range_and_reflect() -> None:
    rng = np.random.default_rng(0)
    corners = trajectories(rng, num_items=64, frames=40, free=36)
    assert corners.min() >= 0 and corners.max() <= 36
    steps = np.abs(np.diff(corners, axis=1))
    assert steps.max() <= 2 * 3.6 + 1  # 0.1 of the free range a frame (a reflection can fold a step)
    moving_back = np.sign(np.diff(corners[..., 0], axis=1))
    assert (np.abs(np.diff(moving_back, axis=1)) == 2).any()  # some item bounced


def test_defaults_options_and_card() -> None:
    require_fashion_mnist()  # resolving the options fingerprints the source files
    src = get_source("moving_fmnist")
    train, test = src.resolve_options("train"), src.resolve_options("test")
    assert (train["num_sequences"], test["num_sequences"]) == (2000, 500)
    assert (train["frames"], train["canvas"], train["num_items"], train["item_size"]) == (16, 64, 2, 28)
    card = dataset_card("moving_fmnist")
    assert "class of the FIRST item" in card and "64x64" in card and "train 2,000, test 500" in card
    with pytest.raises(ValueError, match="item_size=40 is larger than canvas=32"):
        load_dataset("moving_fmnist", "test", cache=False, canvas=32, item_size=40)
    with pytest.raises(ValueError, match="num_sequences=0 is invalid"):
        load_dataset("moving_fmnist", "test", cache=False, num_sequences=0)
