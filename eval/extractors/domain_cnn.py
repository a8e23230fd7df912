"""In-domain feature extractor: a small CNN trained deterministically on a built-in dataset's train split.

Its 128-d penultimate features replace Inception's for FID / precision-recall on
data Inception never saw (digits, Fashion-MNIST, easy-VQA shapes), and its
classifier heads give the class accuracy of conditional samples and the IS.
Numbers from it are comparable between checkpoints evaluated with the same
extractor (same cache key), never with published FIDs.

The network reads images in the checkpoint's image space (size, channels):
training images go through the same `build_image_bank` path as the model's, so
padding and resizing match. Trained weights are cached under
``<cache>/eval/extractors/`` (written atomically) with their test accuracy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from unimodal.config import suggest

from ..errors import EvalError
from .base import fit_images

DEFAULT_HEADS = {"fashion_mnist": ("label",), "digits": ("label",), "easyvqa": ("color", "shape")}
VERSION = 2  # bump when the network or its training changes: part of the cache key


@dataclass
class DomainCNNConfig:
    dataset: str
    image_size: int  # the checkpoint's image space
    channels: int
    heads: tuple[str, ...] = ()  # label columns; default per dataset (DEFAULT_HEADS)
    input_size: int = 32  # images are resized to this inside the network (speed); a multiple of 8
    width: int = 32  # channels of the first conv stage
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    max_train: int | None = 12000  # with 5 epochs: a few minutes on 2 CPU cores, once (cached)
    max_test: int | None = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_size % 8:
            raise EvalError(f"domain extractor input_size={self.input_size} must be a multiple of 8 (three 2x2 pools)")
        self.heads = tuple(self.heads) or DEFAULT_HEADS.get(self.dataset, ())
        if not self.heads:
            raise EvalError(
                f"no default label columns for dataset {self.dataset!r}: give extractor_options.heads "
                f"(built-in defaults: {DEFAULT_HEADS})"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DomainCNNConfig":
        valid = list(cls.__dataclass_fields__)
        for k in d:
            if k not in valid:
                raise EvalError(f"unknown domain extractor option {k!r}; valid: {valid}.{suggest(k, valid)}")
        return cls(**d)

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return f"domain-{self.dataset}-{self.image_size}px{self.channels}c-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class SmallCNN(nn.Module):
    """Three stages of 3×3 conv, batch norm, ReLU and 2×2 max-pool; a 128-d ReLU layer (the features); linear heads."""

    def __init__(self, channels: int, width: int, heads: dict[str, int], input_size: int = 32, features: int = 128):
        super().__init__()
        layers, c = [], channels
        for w in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        side = input_size // 8
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, features), nn.ReLU())
        self.heads = nn.ModuleDict({h: nn.Linear(features, k) for h, k in heads.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = self.body(x)  # (B, features)
        return f, {h: head(f) for h, head in self.heads.items()}


class DomainCNN:
    """A trained SmallCNN as a `FeatureExtractor`."""

    comparable = False

    def __init__(self, cfg: DomainCNNConfig, net: SmallCNN, classes: dict[str, list[str]], info: dict[str, Any]):
        self.cfg, self.net, self.heads, self.info = cfg, net.eval(), classes, info
        self.name = cfg.key()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feats, logits = [], {h: [] for h in self.heads}
        for s in range(0, len(images), batch_size):
            f, lg = self.net(fit_images(images[s : s + batch_size].float(), self.cfg.channels, self.cfg.input_size))
            feats.append(f.numpy())
            for h in self.heads:
                logits[h].append(lg[h].numpy())
        return np.concatenate(feats), {h: np.concatenate(v) for h, v in logits.items()}


def dataset_images(dataset: str, split: str, image_size: int, channels: int, limit: int | None, seed: int):
    """(images (N, C, S, S) as the model sees them, the records' columns, the features) of a seeded subset."""
    from ..data import load_records, model_images

    ds = load_records(dataset, split, limit=limit, seed=seed)
    cols = {c: ds[c] for c in ds.column_names if c != "image"}
    return model_images(ds, image_size, channels, name=f"{dataset}/{split}"), cols, ds.features


def class_names(features: Any, columns: dict[str, list[Any]], head: str) -> list[str]:
    """Class names of a label column: a ClassLabel's names, else the sorted non-empty values."""
    if head not in columns:
        raise EvalError(f"label column {head!r} not in the dataset; columns: {sorted(columns)}")
    names = getattr(features.get(head), "names", None)
    return list(names) if names else sorted({str(v) for v in columns[head] if v != ""})


def encode_labels(values: list[Any], names: list[str]) -> torch.Tensor:
    """Class indices; -1 for an unknown (empty) value, which the loss and accuracy ignore."""
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([int(v) if isinstance(v, (int, np.integer)) else index.get(str(v), -1) for v in values])


def train_domain_cnn(cfg: DomainCNNConfig) -> tuple[SmallCNN, dict[str, list[str]], dict[str, Any]]:
    """Train on the train split (seeded order and init), measure per-head accuracy on test."""
    x, cols, feats = dataset_images(cfg.dataset, "train", cfg.image_size, cfg.channels, cfg.max_train, cfg.seed)
    classes = {h: class_names(feats, cols, h) for h in cfg.heads}
    y = {h: encode_labels(cols[h], classes[h]) for h in cfg.heads}
    x = fit_images(x, cfg.channels, cfg.input_size)
    torch.manual_seed(cfg.seed)
    net = SmallCNN(cfg.channels, cfg.width, {h: len(c) for h, c in classes.items()}, cfg.input_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            _, logits = net(x[idx])
            loss = sum(F.cross_entropy(logits[h], y[h][idx], ignore_index=-1) for h in cfg.heads)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    xt, cols_t, _ = dataset_images(cfg.dataset, "test", cfg.image_size, cfg.channels, cfg.max_test, cfg.seed)
    extractor = DomainCNN(cfg, net, classes, {})
    _, logits = extractor(xt)
    acc = {}
    for h in cfg.heads:
        yt = encode_labels(cols_t[h], classes[h]).numpy()
        known = yt >= 0
        acc[h] = float((logits[h].argmax(-1)[known] == yt[known]).mean())
    info = {"kind": "domain", "name": cfg.key(), "config": asdict(cfg), "train_examples": len(x), "test_examples": len(xt), "test_accuracy": acc}
    return net, classes, info


def load_domain_cnn(cfg: DomainCNNConfig, cache_dir: Path | None = None) -> DomainCNN:
    """The cached extractor for `cfg`, trained and cached first if needed."""
    from safetensors.torch import load_file, save_file

    from unimodal.atomic import atomic_directory
    from unimodal.data import cache_root

    path = (cache_dir or cache_root() / "eval" / "extractors") / cfg.key()
    if not (path / "info.json").is_file():
        net, classes, info = train_domain_cnn(cfg)

        def write(tmp: Path) -> None:
            save_file(net.state_dict(), str(tmp / "model.safetensors"))
            (tmp / "info.json").write_text(json.dumps({"classes": classes, "info": info}, indent=2))

        atomic_directory(path, write)
    meta = json.loads((path / "info.json").read_text())
    net = SmallCNN(cfg.channels, cfg.width, {h: len(c) for h, c in meta["classes"].items()}, cfg.input_size)
    net.load_state_dict(load_file(str(path / "model.safetensors")))
    return DomainCNN(cfg, net, meta["classes"], meta["info"])
