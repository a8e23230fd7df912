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


def one_block_forward(
    model: torch.nn.Module, visual: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cos: torch.Tensor,
    sin: torch.Tensor, mask: torch.Tensor, past_k: list[torch.Tensor] | None, past_v: list[torch.Tensor] | None,
    text_c: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model output (R, n, C) for one noisy block per row: visual (R, n, C), t and y (R,).

    text_c (R, 1, D): the block's pooled-text condition term (`ModelConfig.text_condition`), or None.

    mask (R, 1, n, P + n) allows the P past slots and the block's own tokens; past_k / past_v hold
    per layer (R, Hkv, P, hd), or are None when there is no past. The per-block modulation is
    broadcast over the block's tokens (as `ACDiT.forward_fp` with `one_noisy_block`).
    """
    x = model.x_embedder(visual.to(model.x_embedder.weight.dtype))
    c = model.t_embedder(t[:, None])  # (R, 1, D): the one block slot
    if model.y_embedder is not None:
        c = c + model.y_embedder(y[:, None])
    if text_c is not None:
        c = c + text_c
    for i, blk in enumerate(model.blocks):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = blk.adaLN_modulation(c).chunk(6, dim=-1)
        gate_msa, gate_mlp = blk.gates(gate_msa, gate_mlp)
        q, k, v = blk.attn.project(torch.addcmul(shift_msa, blk.norm1(x), 1 + scale_msa))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past_k is not None:
            k, v = torch.cat([past_k[i], k], 2), torch.cat([past_v[i], v], 2)
        x = x + gate_msa * blk.attn.attend(q, k, v, mask)
        x = x + gate_mlp * blk.mlp(torch.addcmul(shift_mlp, blk.norm2(x), 1 + scale_mlp))
    fl = model.final_layer
    shift, scale = fl.adaLN_modulation(c).chunk(2, dim=-1)
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
            cache batch (guidance branches stacked on the batch read one tiled copy of the cache).
        compiled: run each step through `torch.compile` (static shapes).
        padded: read the past at `capacity_for(len(cache))` slots, the rest zero and masked out
            (default: when compiled, so caches of different lengths share one compiled shape).

    Calling it with the noisy tokens (R, n, C), the timesteps (R,) and the labels (R,) (-1: none)
    returns the model output (R, n, C) in fp32.
    """

    def __init__(self, model: torch.nn.Module, cache: KVCache | None, unit: torch.Tensor, pos: torch.Tensor,
                 doc: torch.Tensor, compiled: bool = False, padded: bool | None = None):
        self.model = model
        R, n = unit.shape
        noisy = torch.ones_like(unit, dtype=torch.bool)
        self.cos, self.sin = model._rope(pos)
        S = 0 if cache is None else len(cache)
        if S:
            cap = capacity_for(S) if (compiled if padded is None else padded) else S
            mask = dense_mask(unit, noisy, doc, *cache.meta_with(unit, noisy, doc))  # (R, n, S + n)
            pad = mask.new_zeros(R, n, cap - S)
            self.mask = torch.cat([mask[..., :S], pad, mask[..., S:]], -1)[:, None]
            self.past_k, self.past_v = cache.past(R, cap)
        else:
            self.mask = dense_mask(unit, noisy, doc)[:, None]
            self.past_k = self.past_v = None
        self.text_c = None
        if getattr(model, "text_cond", None) is not None:  # the past is fixed: its pooled text is too
            text, k_unit, k_doc = torch.full_like(unit, -1), unit, doc
            if S:
                (k_unit, _, k_doc), text = cache.meta_with(unit, noisy, doc), cache.text_with(text)
            pooled = pooled_text(model.tok_embeddings, text, k_doc, k_unit, doc[:, :1], unit.amin(1, keepdim=True))
            self.text_c = model.text_cond(pooled)  # (R, 1, D)
        self.forward = _compiled_forward(model) if compiled else (lambda *a: one_block_forward(model, *a))

    def __call__(self, visual: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = visual.device.type
        if getattr(self.model, "precision", "fp32") == "bf16" and not torch.is_autocast_enabled(dev):
            with torch.autocast(dev, dtype=torch.bfloat16):  # the engine already opens one region per block
                out = self.forward(visual, t, y, self.cos, self.sin, self.mask, self.past_k, self.past_v, self.text_c)
        else:
            out = self.forward(visual, t, y, self.cos, self.sin, self.mask, self.past_k, self.past_v, self.text_c)
        return out.float()
