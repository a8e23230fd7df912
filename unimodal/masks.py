"""The Skip-Causal Attention Mask (SCAM), generalised — the only mask rule in the project.

`scam_allowed` is the rule of docs/architecture.md, "SCAM". The dense boolean mask (SDPA), the
FlexAttention `mask_mod` / `BlockMask`, the KV-cached attention of the
generation engine and `skip_causal_mask` are all generated from it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .errors import LayoutError


def scam_allowed(q_unit: Any, q_noisy: Any, q_doc: Any, k_unit: Any, k_noisy: Any, k_doc: Any) -> Any:
    """May query q attend key k? Works elementwise on tensors (broadcasting) and on Python scalars.

    allowed = same document and (
        clean q, clean k, unit[k] <= unit[q]     # block-causal clean stream (text: causal)
     or noisy q, clean k, unit[k] <  unit[q]     # a noisy block sees the clean past
     or noisy q, noisy k, unit[k] == unit[q])    # ... and itself
    """
    qn = q_noisy == 1
    kn = k_noisy == 1
    qc = q_noisy == 0
    kc = k_noisy == 0
    return (q_doc == k_doc) & (
        (qc & kc & (k_unit <= q_unit)) | (qn & kc & (k_unit < q_unit)) | (qn & kn & (k_unit == q_unit))
    )


def dense_mask(
    q_unit: torch.Tensor,
    q_noisy: torch.Tensor,
    q_doc: torch.Tensor,
    k_unit: torch.Tensor | None = None,
    k_noisy: torch.Tensor | None = None,
    k_doc: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean attention mask (B, Lq, Lk) from per-token (B, L) metadata; keys default to the queries."""
    if k_unit is None:
        k_unit, k_noisy, k_doc = q_unit, q_noisy, q_doc
    return scam_allowed(
        q_unit[:, :, None], q_noisy[:, :, None].long(), q_doc[:, :, None],
        k_unit[:, None, :], k_noisy[:, None, :].long(), k_doc[:, None, :],
    )


def scam_mask_mod(unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor) -> Callable:
    """FlexAttention `mask_mod(b, h, q_idx, kv_idx)` for (B, L) metadata — the same rule."""
    noisy = noisy.long()

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001 — FlexAttention signature
        return scam_allowed(unit[b, q_idx], noisy[b, q_idx], doc[b, q_idx], unit[b, kv_idx], noisy[b, kv_idx], doc[b, kv_idx])

    return mask_mod


_BLOCK_MASK_CACHE: dict[tuple, Any] = {}
_BLOCK_MASK_CACHE_MAX = 64


def scam_block_mask(
    unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor, block_size: int = 128, key: Any = None
) -> Any:
    """A FlexAttention BlockMask for (B, L) metadata.

    `key` (hashable, e.g. a batch's `layout_key`) caches it: equal keys reuse one BlockMask (the
    most recent 64 are kept). Nothing is hashed from tensor contents and nothing is read back to
    the host, so building it never synchronises with the device; without a key it is built anew.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = unit.shape
    full_key = None if key is None else (key, B, L, block_size, str(unit.device))
    bm = _BLOCK_MASK_CACHE.get(full_key) if full_key is not None else None
    if bm is None:
        bm = create_block_mask(
            scam_mask_mod(unit, noisy, doc), B, None, L, L, device=unit.device, BLOCK_SIZE=block_size
        )
        if full_key is not None:
            if len(_BLOCK_MASK_CACHE) >= _BLOCK_MASK_CACHE_MAX:
                _BLOCK_MASK_CACHE.pop(next(iter(_BLOCK_MASK_CACHE)))
            _BLOCK_MASK_CACHE[full_key] = bm
    return bm


def skip_causal_mask(num_blocks: int, block_size: int) -> torch.Tensor:
    """The official ACDiT training mask for a pure visual sequence.

    The sequence is N clean blocks then N noised blocks of B tokens each
    (2·N·B tokens). Clean block i sees clean blocks j <= i; noised block i sees
    clean blocks j < i and itself; clean never sees noised.

    Returns:
        (2·N·B, 2·N·B) boolean mask, True where attention is allowed.
    """
    if num_blocks <= 0 or block_size <= 0:
        raise LayoutError(f"num_blocks={num_blocks} and block_size={block_size} must both be positive")
    unit = torch.arange(num_blocks).repeat_interleave(block_size).repeat(2)[None]  # (1, 2NB)
    noisy = torch.zeros(1, 2 * num_blocks * block_size, dtype=torch.long)
    noisy[:, num_blocks * block_size :] = 1
    doc = torch.zeros_like(unit)
    return dense_mask(unit, noisy, doc)[0]

