"""Eval test fixtures: a private cache (datasets shared with the real one), tiny trained checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from unimodal.checkpoint import save_checkpoint
from unimodal.config import VisualConfig
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.model import create_model

TEXT_VISUAL = VisualConfig(channels=3, image_size=64, patch_size=16, block_h=2, block_w=2)  # 4x4 tokens, 4 blocks
CLASS_VISUAL = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)  # digits: 4x4 tokens


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory) -> Path:
    """$UNIMODAL_CACHE in a temp dir (extractors, reference stats); built datasets are shared with the real cache."""
    from unimodal.data import cache_root

    real = cache_root() / "datasets"
    root = tmp_path_factory.mktemp("unimodal-cache")
    real.mkdir(parents=True, exist_ok=True)
    (root / "datasets").symlink_to(real, target_is_directory=True)
    old = os.environ.get("UNIMODAL_CACHE")
    os.environ["UNIMODAL_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("UNIMODAL_CACHE", None)
    else:
        os.environ["UNIMODAL_CACHE"] = old


def _train(model: torch.nn.Module, mixture, steps: int, batch: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched, g = NoiseSchedule(), torch.Generator().manual_seed(0)
    for step in range(steps):
        loss = compute_loss(model, mixture.batch(step, 0, 1, batch), sched, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory, eval_cache) -> Path:
    """A tiny easy-VQA model trained a few steps on VQA + captioning + text→image (metrics need not be good)."""
    import unimodal.tasks.mixture as mixture
    from unimodal.data import load_dataset
    from unimodal.tasks import build_image_bank, build_mixture
    from unimodal.tokenizers import TextTokenizer

    ds = load_dataset("easyvqa", "train").select(range(128))
    texts = [q for qs in ds["questions"] for q in qs] + [a for ans in ds["answers"] for a in ans] + [c for c in ds["caption"] if c]
    tok_dir = tmp_path_factory.mktemp("tok")
    tok = TextTokenizer.train(texts, vocab_size=320, out_dir=tok_dir)
    bank = build_image_bank(ds, TEXT_VISUAL, name="easyvqa/train")
    specs = [{"name": n, "dataset": "easyvqa"} for n in ("vqa", "captioning", "text_to_image")]
    mp = pytest.MonkeyPatch()
    mp.setattr(mixture, "load_bank", lambda *a, **k: bank)
    mix = build_mixture(specs, TEXT_VISUAL, tok, seed=0)
    mp.undo()
    torch.manual_seed(0)
    model = create_model("tiny", token_dim=TEXT_VISUAL.token_dim, vocab_size=tok.vocab_size)
    _train(model, mix, steps=20, batch=8)
    path = tmp_path_factory.mktemp("ckpt") / "text"
    return save_checkpoint(path, model.eval(), visual=TEXT_VISUAL, tokenizer_dir=tok_dir, extra={"tasks": specs})


@pytest.fixture(scope="session")
def class_checkpoint(tmp_path_factory, eval_cache) -> Path:
    """A tiny class-conditional digits model (no text path) trained a few steps."""
    from unimodal.tasks import build_mixture

    specs = [{"name": "class_to_image", "dataset": "digits"}]
    mix = build_mixture(specs, CLASS_VISUAL, None, seed=0)
    torch.manual_seed(0)
    model = create_model("tiny", token_dim=CLASS_VISUAL.token_dim, vocab_size=0, num_classes=10)
    _train(model, mix, steps=20, batch=16)
    path = tmp_path_factory.mktemp("ckpt") / "class"
    return save_checkpoint(path, model.eval(), visual=CLASS_VISUAL, extra={"tasks": specs})
