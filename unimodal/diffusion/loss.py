"""The one training objective: diffusion MSE on the noisy stream + text cross-entropy.

DiT-style: the loss calls the model as a function, the model knows nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batch import SequenceBatch
from ..errors import LayoutError
from ..layout import IGNORE
from .schedule import NoiseSchedule


@dataclass
class LossWeights:
    diffusion: float = 1.0  # weight of the ε (or v) MSE
    text: float = 1.0  # weight of the next-token cross-entropy


def noise_batch(
    batch: SequenceBatch,
    schedule: NoiseSchedule,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[SequenceBatch, torch.Tensor]:
    """Noise every noisy block at its own timestep.

    Args:
        batch: a batch whose noisy positions hold clean x0 (as `collate` builds it).
        t: (B, NB) timesteps; default uniform per block.
        noise: (B, L, C) noise; default standard normal from `generator`.

    Returns:
        the batch with x_t at noisy positions and `t` set, and the regression target (B, L, C).
    """
    x0 = batch.visual
    if t is None:
        t = schedule.sample_timesteps(tuple(batch.t.shape), generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    noised = batch.replace(t=t)
    t_tok = noised.token_t()  # (B, L)
    m = batch.noisy[..., None]
    x_t = torch.where(m, schedule.add_noise(x0, noise, t_tok), x0)
    return noised.replace(visual=x_t), schedule.target(x0, noise, t_tok)


def compute_loss(
    model: torch.nn.Module,
    batch: SequenceBatch,
    schedule: NoiseSchedule,
    weights: LossWeights | None = None,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Total loss and its parts for one batch.

    Returns:
        {"loss": weighted total, "diffusion": MSE over noisy tokens, "text": mean CE over
        text targets} — a part is absent when the batch has nothing for it.
    """
    weights = weights or LossWeights()
    has_noisy = batch.t.shape[1] > 0 and bool(batch.noisy.any())
    target = None
    if has_noisy:
        batch, target = noise_batch(batch, schedule, t, noise, generator)
    has_text = bool((batch.text_target != IGNORE).any())
    out = model(batch, compute_logits=has_text)
    parts: dict[str, torch.Tensor] = {}
    total = None
    if has_noisy:
        err = (out.eps.float() - target.float()).pow(2).mean(-1)  # (B, L)
        parts["diffusion"] = err[batch.noisy].mean()
        total = weights.diffusion * parts["diffusion"]
    if has_text:
        sel = batch.text_target != IGNORE
        parts["text"] = F.cross_entropy(out.text_logits[sel].float(), batch.text_target[sel])
        total = weights.text * parts["text"] if total is None else total + weights.text * parts["text"]
    if total is None:
        raise LayoutError("batch has neither noisy visual tokens nor text targets: nothing to train")
    parts["loss"] = total
    return parts
