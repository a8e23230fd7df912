"""A KV cache: per-layer keys/values of the clean past plus their SCAM metadata.

The model reads and (when asked) extends it; the generation engine creates,
copies and crops it. Keys are stored after QK-norm and RoPE.

Storage is preallocated per layer and written in place (no `torch.cat` per step, as litgpt's
`KVCache`): the new tokens' keys/values go to the slots after the cached ones and attention
reads one view of the buffer. A query that does not extend the cache (a denoising step) writes
to the same scratch slots each time, so the cache never grows or copies during a block.
Guidance branches stacked on the batch ([cond; uncond]) read one tiled copy of the cache, made
once per cache state, not once per step.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys/values (B, H, S, hd) per layer and unit/noisy/doc/text (B, S) of the cached tokens.

    `text` holds the token id at cached text columns and -1 elsewhere (padding included): what a
    model with `text_condition` pools into the condition of a later noisy block.
    """

    def __init__(self, n_layer: int):
        self.n_layer = n_layer
        self._k: list[torch.Tensor | None] = [None] * n_layer  # (B, H, capacity, hd) buffers
        self._v: list[torch.Tensor | None] = [None] * n_layer
        self._tiled: list[tuple | None] = [None] * n_layer  # (rep, state, k buffer, v buffer) for guidance
        self._len = 0  # cached tokens
        self._state = 0  # bumped whenever the cached tokens change
        self._owned = True  # False: buffers shared with a copy; cloned before the next write
        self.unit: torch.Tensor | None = None
        self.noisy: torch.Tensor | None = None
        self.doc: torch.Tensor | None = None
        self.text: torch.Tensor | None = None

    def __len__(self) -> int:
        return self._len

    @property
    def k(self) -> list[torch.Tensor | None]:
        """Per layer, the cached keys (B, H, S, hd) (views of the buffers)."""
        return [None if b is None else b[:, :, : self._len] for b in self._k]

    @property
    def v(self) -> list[torch.Tensor | None]:
        """Per layer, the cached values (B, H, S, hd) (views of the buffers)."""
        return [None if b is None else b[:, :, : self._len] for b in self._v]

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

    def text_with(self, text: torch.Tensor) -> torch.Tensor:
        """Text ids (-1: not text) of the cached tokens followed by the new ones, tiled to the new batch size."""
        if self.unit is None:
            return text
        rep = text.shape[0] // self.unit.shape[0]
        return torch.cat([self.text.repeat(rep, 1), text], 1)

    @staticmethod
    def _room(buf: torch.Tensor | None, like: torch.Tensor, need: int, keep: int) -> torch.Tensor:
        """`buf` if it holds `need` slots, else a larger buffer (doubling) holding its first `keep`."""
        if buf is not None and buf.shape[2] >= need and buf.shape[0] == like.shape[0] and buf.dtype == like.dtype:
            return buf
        cap = max(need, 2 * (buf.shape[2] if buf is not None else 0), 64)
        out = like.new_empty(like.shape[0], like.shape[1], cap, like.shape[3])
        if keep:
            out[:, :, :keep] = buf[:, :, :keep]
        return out

    def _own(self) -> None:
        if not self._owned:
            self._k = [None if b is None else b.clone() for b in self._k]
            self._v = [None if b is None else b.clone() for b in self._v]
            self._tiled = [None] * self.n_layer
            self._owned = True

    def keys_values(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, update: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached + new keys/values for one layer (views of a buffer); keep them when `update`.

        The new ones are written in place after the cached ones; `commit_meta` makes them part of
        the cache. A query batch that is a multiple of the cache batch (classifier-free guidance
        branches stacked as [cond; uncond]) reads the cache tiled.
        """
        S, n = self._len, k.shape[2]
        B = self.batch_size if self.unit is not None else k.shape[0]
        rep = k.shape[0] // B
        if rep * B != k.shape[0]:
            raise ValueError(f"query batch {k.shape[0]} is not a multiple of the cache batch {B}")
        if rep > 1 and update:
            raise ValueError("cannot extend a shared cache from a tiled (guidance) batch")
        self._own()
        if rep == 1:
            kb = self._k[layer] = self._room(self._k[layer], k, S + n, S)
            vb = self._v[layer] = self._room(self._v[layer], v, S + n, S)
        else:
            hit = self._tiled[layer]
            if hit is None or hit[0] != rep or hit[1] != self._state or hit[2].shape[2] < S + n or hit[2].dtype != k.dtype:
                kb, vb = k.new_empty(k.shape[0], k.shape[1], S + n, k.shape[3]), v.new_empty(v.shape[0], v.shape[1], S + n, v.shape[3])
                kb[:, :, :S] = self._k[layer][:, :, :S].repeat(rep, 1, 1, 1)
                vb[:, :, :S] = self._v[layer][:, :, :S].repeat(rep, 1, 1, 1)
                self._tiled[layer] = (rep, self._state, kb, vb)
            else:
                kb, vb = hit[2], hit[3]
        kb[:, :, S : S + n] = k
        vb[:, :, S : S + n] = v
        return kb[:, :, : S + n], vb[:, :, : S + n]

    def past(self, capacity: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the cached keys and values (batch, Hkv, slots, hd), for a step that does not extend them.

        Query rows stacked as branches over this batch (guidance's [cond; uncond]) read these
        untiled (`acdit.shared_rows_matmul`). With `capacity` (>= len) every tensor has that many
        slots, the ones after the cached tokens zero (a caller masks them out): one shape for caches
        of different lengths, as a compiled step needs. Without it the tensors are views of the buffers.
        """
        S = self._len
        if self.unit is None or S == 0:
            raise ValueError("the cache is empty: there is no past to read")
        cap = S if capacity is None else capacity
        if cap < S:
            raise ValueError(f"capacity {cap} is below the {S} cached tokens")

        def read(buf: torch.Tensor) -> torch.Tensor:
            if cap == S:
                return buf[:, :, :S]
            out = buf.new_zeros(buf.shape[0], buf.shape[1], cap, buf.shape[3])
            out[:, :, :S] = buf[:, :, :S]
            return out

        return [read(b) for b in self._k], [read(b) for b in self._v]

    def commit_meta(self, unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor, text: torch.Tensor) -> None:
        """Record the tokens just written to every layer as cached (their metadata, text ids and count)."""
        self.text = self.text_with(text)
        self.unit, self.noisy, self.doc = self.meta_with(unit, noisy, doc)
        self._len = int(self.unit.shape[1])
        self._state += 1

    def keep_last(self, n: int) -> None:
        """Drop all but the last n cached tokens (sliding-window generation)."""
        if len(self) <= n:
            return
        S = self._len
        self._k = [b[:, :, S - n : S].clone() for b in self._k]
        self._v = [b[:, :, S - n : S].clone() for b in self._v]
        self._owned, self._tiled = True, [None] * self.n_layer
        self.unit, self.noisy, self.doc = self.unit[:, -n:], self.noisy[:, -n:], self.doc[:, -n:]
        self.text = self.text[:, -n:]
        self._len, self._state = n, self._state + 1

    def copy(self) -> "KVCache":
        """A copy sharing the buffers until either side writes (then that side clones them)."""
        out = KVCache(self.n_layer)
        out._k, out._v = list(self._k), list(self._v)
        out._len, out._state = self._len, self._state
        out.unit, out.noisy, out.doc, out.text = self.unit, self.noisy, self.doc, self.text
        out._owned = self._owned = False
        return out

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A cache holding only the given batch rows (a copy)."""
        out = KVCache(self.n_layer)
        if self.unit is None:
            return out
        out._k = [b[rows, :, : self._len] for b in self._k]
        out._v = [b[rows, :, : self._len] for b in self._v]
        out._len = self._len
        out.unit, out.noisy, out.doc, out.text = self.unit[rows], self.noisy[rows], self.doc[rows], self.text[rows]
        return out
