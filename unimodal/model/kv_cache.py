"""A KV cache: per-layer keys/values of the clean past plus their SCAM metadata.

The model reads and (when asked) extends it; the generation engine creates,
copies and crops it. Keys are stored after QK-norm and RoPE.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys/values (B, H, S, hd) per layer and unit/noisy/doc (B, S) of the cached tokens."""

    def __init__(self, n_layer: int):
        self.n_layer = n_layer
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.unit: torch.Tensor | None = None
        self.noisy: torch.Tensor | None = None
        self.doc: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.unit is None else int(self.unit.shape[1])

    @property
    def batch_size(self) -> int | None:
        return None if self.unit is None else int(self.unit.shape[0])

    def meta_with(
        self, unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Key metadata: cached tokens followed by the new ones, tiled to the new batch size."""
        if self.unit is None:
            return unit, noisy, doc
        rep = unit.shape[0] // self.unit.shape[0]
        return (
            torch.cat([self.unit.repeat(rep, 1), unit], 1),
            torch.cat([self.noisy.repeat(rep, 1), noisy], 1),
            torch.cat([self.doc.repeat(rep, 1), doc], 1),
        )

    def keys_values(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, update: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached + new keys/values for one layer; store them when `update`.

        A query batch that is a multiple of the cache batch (classifier-free
        guidance branches stacked as [cond; uncond]) reads the cache tiled.
        """
        ck, cv = self.k[layer], self.v[layer]
        if ck is None:
            full_k, full_v = k, v
        else:
            rep = k.shape[0] // ck.shape[0]
            if rep * ck.shape[0] != k.shape[0]:
                raise ValueError(f"query batch {k.shape[0]} is not a multiple of the cache batch {ck.shape[0]}")
            if rep > 1 and update:
                raise ValueError("cannot extend a shared cache from a tiled (guidance) batch")
            if rep > 1:
                ck, cv = ck.repeat(rep, 1, 1, 1), cv.repeat(rep, 1, 1, 1)
            full_k, full_v = torch.cat([ck, k], 2), torch.cat([cv, v], 2)
        if update:
            self.k[layer], self.v[layer] = full_k, full_v
        return full_k, full_v

    def commit_meta(self, unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor) -> None:
        """Record the metadata of tokens just appended to every layer."""
        self.unit, self.noisy, self.doc = self.meta_with(unit, noisy, doc)

    def keep_last(self, n: int) -> None:
        """Drop all but the last n cached tokens (sliding-window generation)."""
        if len(self) <= n:
            return
        for i in range(self.n_layer):
            self.k[i] = self.k[i][:, :, -n:].contiguous()
            self.v[i] = self.v[i][:, :, -n:].contiguous()
        self.unit, self.noisy, self.doc = self.unit[:, -n:], self.noisy[:, -n:], self.doc[:, -n:]

    def copy(self) -> "KVCache":
        """A shallow copy: its own per-layer lists, sharing the tensors (which are never written in place)."""
        out = KVCache(self.n_layer)
        out.k, out.v = list(self.k), list(self.v)
        out.unit, out.noisy, out.doc = self.unit, self.noisy, self.doc
        return out

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A cache holding only the given batch rows (a copy)."""
        out = KVCache(self.n_layer)
        if self.unit is None:
            return out
        out.k = [k[rows] for k in self.k]
        out.v = [v[rows] for v in self.v]
        out.unit, out.noisy, out.doc = self.unit[rows], self.noisy[rows], self.doc[rows]
        return out
