"""`SequenceBatch`: the tensors the backbone reads, and `collate` that builds them from layouts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .layout import IGNORE, Layout, LayoutError, pack


@dataclass
class Example:
    """One example: its layout, its visual tokens in natural raster order, and a class label.

    Attributes:
        layout: the segments' layout.
        visual: (V, C) visual tokens of every visual segment concatenated, or None if it has none.
        class_label: label of its noisy blocks (-1: unconditional / null class).
    """

    layout: Layout
    visual: torch.Tensor | None = None
    class_label: int = -1


@dataclass
class SequenceBatch:
    """Per-token tensors of a batch of packed rows (B rows of L tokens, NB noisy-block slots).

    text_ids (B, L) long: token id at text positions, 0 elsewhere.
    visual (B, L, C) float: visual token at clean and noisy visual positions (noisy = x_t once noised).
    unit, doc, modality (B, L) long; noisy (B, L) bool; pos (B, L, 3) long.
    block_slot (B, L) long: for a noisy token, its block's slot in t / y; -1 elsewhere.
    t (B, NB) long: diffusion timestep of each noisy block; y (B, NB) long: class label (-1 = null).
    text_target (B, L) long: next-token target, IGNORE (-100) where nothing is predicted.
    """

    text_ids: torch.Tensor
    visual: torch.Tensor
    unit: torch.Tensor
    noisy: torch.Tensor
    doc: torch.Tensor
    modality: torch.Tensor
    pos: torch.Tensor
    block_slot: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor
    text_target: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.unit.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "SequenceBatch":
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            out[f.name] = v
        return SequenceBatch(**out)

    def replace(self, **changes: torch.Tensor) -> "SequenceBatch":
        return dataclasses.replace(self, **changes)

    def token_t(self) -> torch.Tensor:
        """(B, L) timestep of each token's block (0 where not noisy)."""
        if self.t.shape[1] == 0:
            return torch.zeros_like(self.unit)
        return torch.where(self.noisy, self.t.gather(1, self.block_slot.clamp(min=0)), torch.zeros_like(self.unit))


def collate(
    rows: Sequence[Example | Sequence[Example]], token_dim: int, seq_len: int | None = None
) -> SequenceBatch:
    """Build a SequenceBatch; each row is one example or several packed into one row.

    Args:
        rows: per row, an Example or a list of Examples to pack (documents).
        token_dim: visual token width C.
        seq_len: row length; default the longest row. Rows are padded to it.

    Raises:
        LayoutError: an example's visual tokens do not fit its layout (names the row and example).
    """
    rows = [[r] if isinstance(r, Example) else list(r) for r in rows]
    packed = [pack([e.layout for e in row]) for row in rows]
    L = seq_len or max(len(p.unit) for p in packed)
    packed = [pack([e.layout for e in row], L) for row in rows]
    NB = max((sum(e.layout.num_noisy_blocks for e in row) for row in rows), default=0)
    B = len(rows)
    visual = torch.zeros(B, L, token_dim)
    y = torch.full((B, NB), -1, dtype=torch.long)
    for r, (row, pr) in enumerate(zip(rows, packed)):
        for d, (ex, off, soff) in enumerate(zip(row, pr.offsets, pr.slot_offsets)):
            lay = ex.layout
            if lay.num_visual_tokens:
                v = ex.visual
                if v is None or v.ndim != 2 or v.shape != (lay.num_visual_tokens, token_dim):
                    got = None if v is None else tuple(v.shape)
                    raise LayoutError(
                        f"row {r} example {d}: visual tokens have shape {got}, layout needs "
                        f"({lay.num_visual_tokens}, {token_dim})"
                    )
                idx = torch.from_numpy(np.nonzero(lay.visual_index >= 0)[0])
                visual[r, off + idx] = v[torch.from_numpy(lay.visual_index[idx.numpy()])].float()
            y[r, soff : soff + lay.num_noisy_blocks] = ex.class_label

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(p, name) for p in packed]))

    return SequenceBatch(
        text_ids=stack("text_ids"),
        visual=visual,
        unit=stack("unit"),
        noisy=stack("noisy"),
        doc=stack("doc"),
        modality=stack("modality"),
        pos=stack("pos"),
        block_slot=stack("block_slot"),
        t=torch.zeros(B, NB, dtype=torch.long),
        y=y,
        text_target=stack("text_target"),
    )


__all__ = ["Example", "SequenceBatch", "collate", "IGNORE"]
