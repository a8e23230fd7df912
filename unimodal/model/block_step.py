"""The sampler's inner loop: one noisy block per row, denoised over a clean past that does not change.

Every step of a block reads the same cached keys/values, the same mask and the same rotary
tables; only the noisy tokens, the timestep and (for guidance) the label change. `BlockStep`
builds the fixed part once per block, and each call runs the backbone on the noisy tokens alone
(docs/architecture.md, "Generation"). The outputs equal `ACDiT.forward(batch, cache=...,
one_noisy_block=True)` on the same tokens; `tests/test_block_step.py` checks that, and the
engine's cached-equals-recompute tests run through it.

With `compiled=True` the step runs through `torch.compile` with static shapes: the past is read
at a fixed capacity (`capacity_for`: powers of two, so a whole image or video needs a handful of
shapes, not one per block), the unused slots zero and masked out. Nothing in the step reads a
tensor back to the host.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable

import torch

from ..masks import dense_mask
from .acdit import pooled_text
from .kv_cache import KVCache
from .rope import apply_rope

_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def capacity_for(cached: int, minimum: int = 64) -> int:
    """The padded past length a compiled step reads for `cached` tokens: 0, or a power of two >= minimum."""
    if cached <= 0:
        return 0
    cap = minimum
    while cap < cached:
        cap *= 2
    return cap


def block_condition(
    model: torch.nn.Module, t: torch.Tensor, y: torch.Tensor, text_c: torch.Tensor | None = None
) -> torch.Tensor:
    """(R, 1, W): the modulation of one noisy block per row, for t and y (R,) (-1: no label).

    W = 6·D per layer ([shift_msa, scale_msa, gate_msa, gate_mlp, shift_mlp, scale_mlp], the gates as
    `Block.gates` makes them) followed by the final layer's [shift, scale]. text_c (R, 1, D): the block's
    pooled-text condition term (`ModelConfig.text_condition`), or None. It depends only on the
    block's timestep and labels, not on its tokens, so a sampler that knows its timesteps builds
    every step's rows in one call (`BlockStep.conditions`).
    """
    c = model.t_embedder(t[:, None])  # (R, 1, D): the one block slot
    if model.y_embedder is not None:
        c = c + model.y_embedder(y[:, None])
    if text_c is not None:
        c = c + text_c
    parts = []
    for blk in model.blocks:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = blk.adaLN_modulation(c).chunk(6, dim=-1)
        parts += [shift_msa, scale_msa, *blk.gates(gate_msa, gate_mlp), shift_mlp, scale_mlp]
    parts.append(model.final_layer.adaLN_modulation(c))
    return torch.cat(parts, -1)


def one_block_forward(
    model: torch.nn.Module, visual: torch.Tensor, cond: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    bias: torch.Tensor, past_k: list[torch.Tensor] | None, past_v: list[torch.Tensor] | None,
) -> torch.Tensor:
    """The model output (R, n, C) for one noisy block per row: visual (R, n, C), cond (R, 1, W) from
    `block_condition` (broadcast over the block's tokens, as `ACDiT.forward_fp` with `one_noisy_block`).

    bias (R, 1, n, P + n) is the mask over the P past slots and the block's own tokens as an additive
    fp32 term (0: attend, -inf: not; `Attention.attend_block`); past_k / past_v hold
    per layer (R / k, Hkv, P, hd) for k branches stacked on the rows (one copy of the past for
    guidance's [cond; uncond]), or are None when there is no past.
    """
    x = model.x_embedder(visual.to(model.x_embedder.weight.dtype))
    D = x.shape[-1]
    for i, blk in enumerate(model.blocks):
        shift_msa, scale_msa, gate_msa, gate_mlp, shift_mlp, scale_mlp = cond[..., 6 * D * i:6 * D * (i + 1)].chunk(6, -1)
        q, k, v = blk.attn.project(torch.addcmul(shift_msa, blk.norm1(x), 1 + scale_msa))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = blk.attn.attend_block(q, k, v, bias, None if past_k is None else past_k[i], None if past_v is None else past_v[i])
        x = x + gate_msa * a
        x = x + gate_mlp * blk.mlp(torch.addcmul(shift_mlp, blk.norm2(x), 1 + scale_mlp))
    fl = model.final_layer
    shift, scale = cond[..., 6 * D * len(model.blocks):].chunk(2, dim=-1)
    return fl.linear(torch.addcmul(shift, fl.norm_final(x), 1 + scale))


def _compiled_forward(model: torch.nn.Module) -> Callable:
    fn = _COMPILED.get(model)
    if fn is None:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
        ref = weakref.ref(model)  # the compiled closure must not keep the model alive
        fn = torch.compile(lambda *a: one_block_forward(ref(), *a), dynamic=False)
        _COMPILED[model] = fn
    return fn


class BlockStep:
    """Denoising steps of one noisy block per row over a fixed clean past.

    Args:
        model: the backbone (an `ACDiT`).
        cache: the clean past (None or empty: the block is the first thing in its sequences).
        unit, pos, doc: (R, n), (R, n, 3), (R, n) of the block's tokens; R is a multiple of the
            cache batch (guidance branches stacked on the batch read one copy of the cache, untiled).
        compiled: run each step through `torch.compile` (static shapes).
        padded: read the past at `capacity_for(len(cache))` slots, the rest zero and masked out
            (default: when compiled, so caches of different lengths share one compiled shape).

    Calling it with the noisy tokens (R, n, C), the timesteps (R,) and the labels (R,) (-1: none)
    returns the model output (R, n, C) in fp32. A sampler that knows its timesteps builds every
    step's modulation at once with `conditions` (one matmul per layer for the whole block, instead
    of re-reading every adaLN weight on every step) and calls `run` with row i of it.
    """

    def __init__(self, model: torch.nn.Module, cache: KVCache | None, unit: torch.Tensor, pos: torch.Tensor,
                 doc: torch.Tensor, compiled: bool = False, padded: bool | None = None):
        self.model = model
        R, n = unit.shape
        noisy = torch.ones_like(unit, dtype=torch.bool)
        self.cos, self.sin = model._rope(pos)
        S = 0 if cache is None else len(cache)
        if S and R % cache.batch_size:
            raise ValueError(f"{R} query rows are not a multiple of the cache batch {cache.batch_size}: guidance "
                             "branches stack whole copies of the batch")
        if S:
            cap = capacity_for(S) if (compiled if padded is None else padded) else S
            mask = dense_mask(unit, noisy, doc, *cache.meta_with(unit, noisy, doc))  # (R, n, S + n)
            pad = mask.new_zeros(R, n, cap - S)
            self.mask = torch.cat([mask[..., :S], pad, mask[..., S:]], -1)[:, None]
            self.past_k, self.past_v = cache.past(cap)  # untiled: branches share it
        else:
            self.mask = dense_mask(unit, noisy, doc)[:, None]
            self.past_k = self.past_v = None
        self.bias = torch.zeros(self.mask.shape, device=unit.device).masked_fill_(~self.mask, float("-inf"))
        self.text_c = None
        if getattr(model, "text_cond", None) is not None:  # the past is fixed: its pooled text is too
            text, k_unit, k_doc = torch.full_like(unit, -1), unit, doc
            if S:
                (k_unit, _, k_doc), text = cache.meta_with(unit, noisy, doc), cache.text_with(text)
            pooled = pooled_text(model.tok_embeddings, text, k_doc, k_unit, doc[:, :1], unit.amin(1, keepdim=True))
            self.text_c = model.text_cond(pooled)  # (R, 1, D)
        self.forward = _compiled_forward(model) if compiled else (lambda *a: one_block_forward(model, *a))
        self.compiled, self._guarded = compiled, False

    def _autocast(self) -> contextlib.AbstractContextManager:
        dev = self.mask.device.type
        if getattr(self.model, "precision", "fp32") == "bf16" and not torch.is_autocast_enabled(dev):
            return torch.autocast(dev, dtype=torch.bfloat16)  # the engine already opens one region per block
        return contextlib.nullcontext()

    def conditions(self, timesteps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(S, R, 1, W): `block_condition` of every step at once, for the S timesteps (S,) and labels y (R,)."""
        S, R = timesteps.shape[0], y.shape[0]
        text_c = None if self.text_c is None else self.text_c.repeat(S, 1, 1)
        with self._autocast():
            cond = block_condition(self.model, timesteps.to(y.device).repeat_interleave(R), y.repeat(S), text_c)
        return cond.view(S, R, 1, -1)

    def run(self, visual: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The model output (R, n, C) in fp32 for noisy tokens (R, n, C) under one step's `conditions` (R, 1, W)."""
        with self._autocast(), self._stance():
            out = self.forward(visual, cond, self.cos, self.sin, self.bias, self.past_k, self.past_v)
        self._guarded = True
        return out.float()

    def _stance(self) -> contextlib.AbstractContextManager:
        """Compiled steps after this block's first: dynamo checks only the guards that tell its cached
        graphs apart. Every step of a block passes tensors of the same shapes, dtypes and devices under the
        same grad mode (only values change), and the first step ran every guard, compiling if none matched,
        so a graph for exactly these inputs exists; the full check of the model's ~80 parameters on
        each step cost ~1.7% of cached fp32 sampling at the release's config (0.33 ms a step)."""
        if self.compiled and self._guarded:
            return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
        return contextlib.nullcontext()

    def __call__(self, visual: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            cond = block_condition(self.model, t, y, self.text_c)
        return self.run(visual, cond)
