"""A synthetic BatchSource for trainer tests: tiny class-conditional 'digits' with a short caption.

Each example is Layout([Text([1, 3 + label, 13 + label]), Image(2, 2, 1, 1)]): three text tokens and a
2x2 grid of 4-wide visual tokens (4 one-token blocks), whose values are a fixed per-class prototype plus
a little noise. Example `index` of step `step` is a pure function of (seed, step, index), and rank r of
world w gets examples r*b .. r*b+b-1 — the r-th slice of the global batch — so 1 process x batch 2b and
2 processes x batch b see the same examples.
"""

from __future__ import annotations

import numpy as np
import torch

from unimodal.batch import Example, SequenceBatch, collate
from unimodal.layout import Image, Layout, Text

TOKEN_DIM, VOCAB, CLASSES = 4, 32, 10
VISUAL = {"channels": 1, "image_size": 4, "patch_size": 2, "block_h": 1, "block_w": 1}  # token_dim 4, 2x2 grid
MODEL_OVERRIDES = {"vocab_size": VOCAB, "num_classes": CLASSES}


class SyntheticDigits:
    def __init__(self, seed: int = 0, nan_at_step: int | None = None) -> None:
        self.seed, self.nan_at_step = seed, nan_at_step
        g = np.random.default_rng(12345)
        self.prototypes = g.standard_normal((CLASSES, 4, TOKEN_DIM)).astype(np.float32)

    def example(self, step: int, index: int) -> Example:
        rng = np.random.default_rng([self.seed, step, index])
        label = int(rng.integers(CLASSES))
        vis = self.prototypes[label] + 0.1 * rng.standard_normal((4, TOKEN_DIM)).astype(np.float32)
        lay = Layout([Text([1, 3 + label, 13 + label]), Image(2, 2, 1, 1)])
        return Example(lay, torch.from_numpy(vis), label)

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> SequenceBatch:
        rows = [self.example(step, rank * batch_size + i) for i in range(batch_size)]
        b = collate(rows, TOKEN_DIM)
        if step == self.nan_at_step:
            b.visual[0][b.noisy[0]] = float("nan")  # noisy tokens: the diffusion loss turns NaN, text stays finite
        return b


def tiny_config(out_dir, **overrides):
    """A TrainConfig for the tiny model on SyntheticDigits (fp32, no bar, every step logged)."""
    from unimodal.train import TrainConfig

    base = dict(
        model="tiny", model_overrides=dict(MODEL_OVERRIDES), visual=dict(VISUAL), batch_size=4, steps=4, lr=1e-3,
        warmup_steps=1, ema_decay=0.9, ckpt_every=2, keep_last=0, log_every=1, out_dir=str(out_dir), progress=False,
        tensorboard=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


def params_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in name order (bitwise identity of two models)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
