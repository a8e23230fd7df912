"""CLIP score with open_clip: a standard model from a local weight file, or an in-domain CLIP.

Settings (the task's ``clip:`` mapping):

* ``{model: ViT-B-32, weights: FILE}`` — any open_clip architecture, weights from
  a local file (or ``$UNIMODAL_CLIP_WEIGHTS``); nothing is downloaded.
* ``{model: domain}`` (default) — a small CLIP built from open_clip's own model
  classes (``open_clip.CLIP``, the bundled BPE tokenizer) and trained by the
  toolkit with ``open_clip.ClipLoss`` on the dataset's train captions, cached
  like the in-domain CNN. Its scores rank checkpoints on built-in data offline;
  they are not comparable with published CLIP scores.

CLIP score = 100 · max(cos(image embedding, text embedding), 0).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unimodal.config import suggest

from ..errors import EvalError
from .base import fit_images

WEIGHTS_ENV = "UNIMODAL_CLIP_WEIGHTS"
VERSION = 1  # bump when in-domain training changes: part of the cache key


def check_clip_settings(settings: dict[str, Any]) -> None:
    """EvalError for a standard model without an existing local weight file, or unknown options."""
    model = settings.get("model", "domain")
    if model == "domain":
        DomainClipConfig.from_dict({"dataset": "", "image_size": 1, "channels": 3, **{k: v for k, v in settings.items() if k != "model"}})
        return
    weights = settings.get("weights") or os.environ.get(WEIGHTS_ENV)
    if not weights:
        raise EvalError(f"CLIP model {model!r} needs a local weight file: set clip.weights in the task or ${WEIGHTS_ENV}")
    if not Path(weights).expanduser().is_file():
        raise EvalError(f"CLIP weight file {str(weights)!r} does not exist (model {model!r}); give an open_clip checkpoint file")


class ClipScorer:
    """Scores (image, caption) pairs with an open_clip model."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_size: int, mean, std, info: dict[str, Any]):
        self.model, self.tokenizer, self.image_size, self.info = model.eval(), tokenizer, image_size, info
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = (fit_images(images.float(), 3, self.image_size) + 1) / 2  # [0, 1]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(self.model.encode_image(self.preprocess(images)), dim=-1)
        txt = F.normalize(self.model.encode_text(self.tokenizer(captions)), dim=-1)
        return img, txt

    def score(self, images: torch.Tensor, captions: list[str], batch_size: int = 128) -> np.ndarray:
        """(N,) CLIP scores of images (N, C, H, W) in [-1, 1] against their captions."""
        out = []
        for s in range(0, len(images), batch_size):
            img, txt = self.embed(images[s : s + batch_size], captions[s : s + batch_size])
            out.append((100 * (img * txt).sum(-1).clamp(min=0)).numpy())
        return np.concatenate(out)


def build_clip(settings: dict[str, Any], *, dataset: str, image_size: int = 64, channels: int = 3) -> ClipScorer:
    """The CLIP scorer a task's `clip:` settings name (see the module docstring)."""
    check_clip_settings(settings)
    model_name = settings.get("model", "domain")
    if model_name == "domain":
        opts = {k: v for k, v in settings.items() if k != "model"}
        return load_domain_clip(DomainClipConfig.from_dict({"dataset": dataset, "image_size": image_size, "channels": channels, **opts}))
    import open_clip

    if model_name not in open_clip.list_models():
        raise EvalError(f"unknown open_clip model {model_name!r}.{suggest(model_name, open_clip.list_models())}")
    weights = str(Path(settings.get("weights") or os.environ[WEIGHTS_ENV]).expanduser())
    model = open_clip.create_model(model_name, pretrained=weights)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
    info = {"kind": "open_clip", "model": model_name, "weights": Path(weights).name, "comparable": True}
    return ClipScorer(model, open_clip.get_tokenizer(model_name), size, pre["mean"], pre["std"], info)


@dataclass
class DomainClipConfig:
    dataset: str
    image_size: int  # the checkpoint's image space (training images go through build_image_bank as the model's)
    channels: int
    input_size: int = 32  # the CLIP's own image resolution
    embed_dim: int = 64
    width: int = 64  # of both towers
    layers: int = 2
    patch_size: int = 8
    context_length: int = 16  # enough for easy-VQA captions ("a red circle")
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    max_train: int | None = None
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DomainClipConfig":
        valid = list(cls.__dataclass_fields__)
        for k in d:
            if k not in valid:
                raise EvalError(f"unknown in-domain CLIP option {k!r}; valid: {valid}.{suggest(k, valid)}")
        return cls(**d)

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return f"clip-{self.dataset}-{self.image_size}px{self.channels}c-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def build(self) -> torch.nn.Module:
        from open_clip import CLIP
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        heads_width = max(self.width // 2, 1)
        vision = CLIPVisionCfg(layers=self.layers, width=self.width, head_width=heads_width, patch_size=self.patch_size, image_size=self.input_size)
        text = CLIPTextCfg(context_length=self.context_length, width=self.width, heads=self.width // heads_width, layers=self.layers)
        return CLIP(embed_dim=self.embed_dim, vision_cfg=vision, text_cfg=text)


def _scorer(cfg: DomainClipConfig, model: torch.nn.Module, info: dict[str, Any]) -> ClipScorer:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.tokenizer import SimpleTokenizer

    return ClipScorer(model, SimpleTokenizer(context_length=cfg.context_length), cfg.input_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, info)


def train_domain_clip(cfg: DomainClipConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Contrastive training on the train split's captioned images (seeded init and order)."""
    from open_clip import ClipLoss

    from ..data import load_records, model_images

    has = lambda cols: [bool(c) for c in cols["caption"]]  # noqa: E731
    ds = load_records(cfg.dataset, "train", limit=cfg.max_train, seed=cfg.seed, keep=has)
    captions = list(ds["caption"])
    torch.manual_seed(cfg.seed)
    model = cfg.build()
    scorer = _scorer(cfg, model, {})
    x = scorer.preprocess(model_images(ds, cfg.image_size, cfg.channels))
    tokens = scorer.tokenizer(captions)
    loss_fn, opt = ClipLoss(), torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    order = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            img, txt, scale = model(x[idx], tokens[idx])
            loss = loss_fn(img, txt, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    info = {"kind": "domain_clip", "name": cfg.key(), "config": asdict(cfg), "train_examples": len(x), "final_loss": float(loss.detach()), "comparable": False}
    return model, info


def load_domain_clip(cfg: DomainClipConfig, cache_dir: Path | None = None) -> ClipScorer:
    """The cached in-domain CLIP for `cfg`, trained and cached first if needed."""
    from safetensors.torch import load_file, save_file

    from unimodal.atomic import atomic_directory
    from unimodal.data import cache_root

    path = (cache_dir or cache_root() / "eval" / "extractors") / cfg.key()
    if not (path / "info.json").is_file():
        model, info = train_domain_clip(cfg)

        def write(tmp: Path) -> None:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
            (tmp / "info.json").write_text(json.dumps(info, indent=2))

        atomic_directory(path, write)
    model = cfg.build()
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return _scorer(cfg, model, json.loads((path / "info.json").read_text()))
