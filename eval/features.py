"""Hidden states of the backbone as image features, for linear probes.

Clean stream (default): the image alone, all blocks clean, as understanding
tasks see it; its hidden states do not depend on t or on a class label.
Noisy stream (``noisy_t``): every block also gets a copy noised to timestep t,
read at the noisy positions — the usual way other diffusion models are probed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from unimodal.batch import Example, collate
from unimodal.config import VisualConfig
from unimodal.diffusion.loss import noise_batch
from unimodal.diffusion.schedule import NoiseSchedule
from unimodal.layout import IMAGE, Image, Layout

Pool = Literal["mean", "tokens"]


@torch.no_grad()
def hidden_features(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    visual: VisualConfig,
    layers: list[int],
    pool: Pool = "mean",
    noisy_t: int | None = None,
    schedule: NoiseSchedule | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[int, np.ndarray]:
    """Per layer, (N, D) mean-pooled or (N, T·D) per-token features of (N, T, C) image tokens.

    Layer k is the output of k blocks (0: the input embeddings).
    """
    if pool not in ("mean", "tokens"):
        raise ValueError(f"pool={pool!r} must be one of ('mean', 'tokens')")
    device = next(model.parameters()).device
    layout = Layout([Image(visual.grid, visual.grid, visual.block_h, visual.block_w, noisy=noisy_t is not None)])
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    for s in range(0, len(tokens), batch_size):
        chunk = tokens[s : s + batch_size]
        batch = collate([Example(layout, t) for t in chunk], visual.token_dim)
        if noisy_t is None:
            sel = (batch.modality == IMAGE) & ~batch.noisy  # (B, L): every clean image token
        else:
            t = torch.full_like(batch.t, int(noisy_t))
            noise = torch.randn(batch.visual.shape, generator=gen)
            batch, _ = noise_batch(batch, schedule or NoiseSchedule(), t=t, noise=noise)
            sel = batch.noisy
        hidden = model(batch.to(device), hidden_layers=tuple(layers), compute_logits=False).hidden
        for k in layers:
            h = hidden[k][sel.to(device)].view(len(chunk), -1, hidden[k].shape[-1]).float()  # (B, T, D)
            out[k].append((h.mean(1) if pool == "mean" else h.flatten(1)).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
