"""The one training objective: diffusion MSE on the noisy stream + text cross-entropy.

DiT-style: the loss calls the model as a function, the model knows nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batch import BatchPlan, SequenceBatch, batch_plan, prune_batch
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


def _select(x: torch.Tensor, plan: BatchPlan, full: SequenceBatch) -> torch.Tensor:
    """Columns of a (B, L, ...) tensor of the full batch kept by `prune_batch` (same rule, same order)."""
    from ..batch import keep_columns

    cols = keep_columns(batch_plan(full), x.device)
    return x[:, cols] if isinstance(cols, slice) else x.index_select(1, cols)


def compute_loss(
    model: torch.nn.Module,
    batch: SequenceBatch,
    schedule: NoiseSchedule,
    weights: LossWeights | None = None,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    prune: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Total loss and its parts for one batch.

    No host sync: what the batch holds (noisy tokens, text targets) and which columns the loss reads
    come from its `BatchPlan`, cached per layout key. `prune` drops the columns nothing read depends on
    (`batch.prune_batch`); the loss is the same up to float rounding. None: prune when the model (or the
    module a DeepSpeed engine wraps) says it accepts a pruned batch (`accepts_pruned_batch`, as ACDiT does).

    Returns:
        {"loss": weighted total, "diffusion": MSE over noisy tokens, "text": mean CE over
        text targets} — a part is absent when the batch has nothing for it.
    """
    weights = weights or LossWeights()
    plan = batch_plan(batch)  # host-side facts, cached per layout key (no device sync with a key)
    has_noisy = batch.t.shape[1] > 0 and plan.n_noisy > 0
    has_text = plan.n_text_targets > 0
    target = None
    if has_noisy:
        batch, target = noise_batch(batch, schedule, t, noise, generator)
    if prune is None:
        prune = bool(getattr(getattr(model, "module", model), "accepts_pruned_batch", False))
    if prune:  # drop what no loss output reads (the outputs at kept columns are unchanged)
        full = batch
        batch, plan = prune_batch(batch)
        if target is not None and batch is not full:
            target = _select(target, plan, full)
    out = model(batch, compute_logits=has_text)
    parts: dict[str, torch.Tensor] = {}
    total = None
    if has_noisy:
        err = (out.pred.float() - target.float()).pow(2).mean(-1)  # (B, L)
        m = batch.noisy.to(err.dtype)
        parts["diffusion"] = (err * m).sum() / m.sum()
        total = weights.diffusion * parts["diffusion"]
    if has_text:
        logits = out.text_logits
        parts["text"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.text_target.reshape(-1),
                                        ignore_index=IGNORE)
        total = weights.text * parts["text"] if total is None else total + weights.text * parts["text"]
    if total is None:
        raise LayoutError("batch has neither noisy visual tokens nor text targets: nothing to train")
    parts["loss"] = total
    return parts
