"""`SequenceBatch`: the tensors the backbone reads, and `collate` that builds them from layouts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from .layout import IGNORE, PAD_DOC, Layout, LayoutError, PackedRow, pack

# the fields that make up a batch's layout (what masks, positions and plans are derived from)
LAYOUT_FIELDS = ("unit", "noisy", "doc", "modality", "pos", "block_slot", "text_target")


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
    layout_key: a hashable host-side identity of the layout fields (`collate` sets it from the
        examples' segments and the row length), or None. Equal keys promise equal layout fields,
        so per-layout tables (mask, rotary tables, `BatchPlan`) are built once per key and reused
        without reading the tensors back to the host. `replace` of a layout field drops it.
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
    layout_key: Hashable | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.unit.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "SequenceBatch":
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, torch.Tensor):
                out[f.name] = v
                continue
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            out[f.name] = v
        return SequenceBatch(**out)

    def replace(self, **changes: torch.Tensor) -> "SequenceBatch":
        """A copy with some fields changed; changing a layout field drops `layout_key` unless one is given."""
        if "layout_key" not in changes and any(k in LAYOUT_FIELDS for k in changes):
            changes["layout_key"] = None
        return dataclasses.replace(self, **changes)

    def select_columns(self, cols: torch.Tensor | slice, key: Hashable | None = None) -> "SequenceBatch":
        """The batch restricted to sequence positions `cols` (an index tensor or a slice) of every row."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("t", "y", "layout_key"):
                out[f.name] = v
            elif isinstance(cols, slice):
                out[f.name] = v[:, cols]
            else:
                out[f.name] = v.index_select(1, cols)
        out["layout_key"] = key
        return SequenceBatch(**out)

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
    keys = [tuple(e.layout.key for e in row) for row in rows]
    L = seq_len or max(sum(len(e.layout) for e in row) for row in rows)
    packed = [_packed(row, k, L) for row, k in zip(rows, keys)]
    NB = max((sum(e.layout.num_noisy_blocks for e in row) for row in rows), default=0)
    B = len(rows)
    visual = torch.zeros(B, L, token_dim)
    y = torch.full((B, NB), -1, dtype=torch.long)
    uniform = len(set(keys)) == 1 and len(rows[0]) == 1  # one layout, one example a row (class->image)
    for r, (row, pr, k) in enumerate(zip(rows, packed, keys)):
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
                if not uniform:
                    dst, src = _visual_index(lay, k[d])
                    visual[r, off + dst] = v[src].float()
            y[r, soff : soff + lay.num_noisy_blocks] = ex.class_label
    if uniform and rows[0][0].layout.num_visual_tokens:  # one gather for the whole batch
        dst, src = _visual_index(rows[0][0].layout, keys[0][0])
        visual[:, dst] = torch.stack([row[0].visual for row in rows]).float()[:, src]

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
        layout_key=("collate", L, tuple(keys)),
    )


_PACKED: dict[tuple, PackedRow] = {}
_VISUAL_INDEX: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_COLLATE_CACHE_MAX = 512


def _packed(row: Sequence[Example], keys: tuple, seq_len: int) -> PackedRow:
    """`pack` of the row's layouts, built once per (layout keys, length): equal keys give equal arrays.

    The cached arrays are shared between batches and never written (collate stacks copies of them).
    """
    k = (keys, seq_len)
    hit = _PACKED.get(k)
    if hit is None:
        hit = pack([e.layout for e in row], seq_len)
        if len(_PACKED) >= _COLLATE_CACHE_MAX:
            _PACKED.pop(next(iter(_PACKED)))
        _PACKED[k] = hit
    return hit


def _visual_index(lay: Any, key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns of the layout that hold visual tokens, which of the example's tokens each holds), cached per key."""
    hit = _VISUAL_INDEX.get(key)
    if hit is None:
        dst = np.nonzero(lay.visual_index >= 0)[0]
        hit = (torch.from_numpy(dst), torch.from_numpy(lay.visual_index[dst]))
        if len(_VISUAL_INDEX) >= _COLLATE_CACHE_MAX:
            _VISUAL_INDEX.pop(next(iter(_VISUAL_INDEX)))
        _VISUAL_INDEX[key] = hit
    return hit


@dataclass(frozen=True)
class BatchPlan:
    """Host-side facts of one batch layout, derived once per `layout_key` (docs/architecture.md, "SCAM").

    keep: sorted columns that some loss output depends on: noisy tokens, text tokens with a
        target, and the clean tokens they may attend. A clean token is read iff, in its document,
        unit < the largest noisy unit or unit <= the largest unit of a clean output. Everything else
        (the last clean visual block of a pure visual sequence, padding) feeds nothing the loss reads.
        None when every column is kept.
    split: (s, NB, bs) when, after `keep`, every row holds its NB noisy blocks of bs tokens each as
        the columns s .. s + NB·bs in slot order (a clean stream then a noisy stream, as every
        single-document layout is); None otherwise. The backbone then modulates the noisy stream by
        broadcasting one vector per block instead of gathering one per token.
    clean_outputs: some clean token is a loss output (a text target) after `keep`.
    has_text: some kept column is a text token.
    n_noisy, n_text_targets: how many noisy tokens and text targets the batch holds.
    """

    keep: tuple[int, ...] | None
    split: tuple[int, int, int] | None
    clean_outputs: bool
    has_text: bool
    n_noisy: int = 0  # noisy tokens (all rows)
    n_text_targets: int = 0  # text positions with a target (all rows)


def _plan_arrays(unit: np.ndarray, noisy: np.ndarray, doc: np.ndarray, modality: np.ndarray,
                 block_slot: np.ndarray, text_target: np.ndarray, n_slots: int, prune: bool) -> BatchPlan:
    from .layout import TEXT

    out = noisy | (text_target != IGNORE)
    read = out.copy()
    if prune:
        for b in range(unit.shape[0]):
            for d in np.unique(doc[b]):
                if d == PAD_DOC:
                    continue
                m = doc[b] == d
                nz, co = m & noisy[b], m & out[b] & ~noisy[b]
                n_max = unit[b][nz].max() if nz.any() else np.iinfo(np.int64).min
                c_max = unit[b][co].max() if co.any() else np.iinfo(np.int64).min
                read[b] |= m & ~noisy[b] & ((unit[b] < n_max) | (unit[b] <= c_max))
        cols = np.nonzero(read.any(0))[0]
    else:
        cols = np.arange(unit.shape[1])
    keep = None if len(cols) == unit.shape[1] else tuple(int(c) for c in cols)
    noisy, slot, out = noisy[:, cols], block_slot[:, cols], out[:, cols]
    split = None
    n = int(noisy[0].sum())
    if n_slots > 0 and n > 0 and n % n_slots == 0 and (noisy.sum(1) == n).all():
        s, bs = int(np.argmax(noisy[0])), n // n_slots
        want = np.zeros_like(noisy)
        want[:, s : s + n] = True
        exp_slot = np.arange(n) // bs
        if (noisy == want).all() and (slot[:, s : s + n] == exp_slot).all():
            split = (s, n_slots, bs)
    return BatchPlan(keep, split, bool((out & ~noisy).any()), bool((modality[:, cols] == TEXT).any()),
                     int(noisy.sum()), int((text_target[:, cols] != IGNORE).sum()))


_PLANS: dict[tuple, BatchPlan] = {}
_PLANS_MAX = 256


def batch_plan(batch: SequenceBatch, prune: bool = True) -> BatchPlan:
    """The `BatchPlan` of a batch: cached per `layout_key`; without a key, derived from its tensors.

    Deriving reads the layout fields to the host (one device sync on an accelerator); a batch with
    a key pays that once per distinct layout.
    """
    key = None if batch.layout_key is None else (batch.layout_key, int(batch.t.shape[1]), prune)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        arrays = [getattr(batch, n).detach().cpu().numpy() for n in ("unit", "noisy", "doc", "modality", "block_slot", "text_target")]
        plan = _plan_arrays(*arrays, n_slots=int(batch.t.shape[1]), prune=prune)
        if key is not None:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.pop(next(iter(_PLANS)))
            _PLANS[key] = plan
    return plan


_KEEP_INDEX: dict[tuple, torch.Tensor] = {}


def keep_columns(plan: BatchPlan, device: torch.device) -> torch.Tensor | slice:
    """`plan.keep` as a slice when contiguous, else as an index tensor on `device` (cached)."""
    lo, hi = plan.keep[0], plan.keep[-1] + 1
    if hi - lo == len(plan.keep):
        return slice(lo, hi)
    ik = (plan.keep, str(device))
    cols = _KEEP_INDEX.get(ik)
    if cols is None:
        if len(_KEEP_INDEX) >= _PLANS_MAX:
            _KEEP_INDEX.pop(next(iter(_KEEP_INDEX)))
        cols = _KEEP_INDEX[ik] = torch.tensor(plan.keep, device=device)
    return cols


def prune_batch(batch: SequenceBatch) -> tuple[SequenceBatch, BatchPlan]:
    """The batch without the columns no loss output depends on (see `BatchPlan.keep`), and its plan.

    The pruned batch keeps a layout key of its own, so its tables are cached too. Outputs at the
    kept columns equal those of the full batch: no kept token attends a dropped one.
    """
    plan = batch_plan(batch)
    if plan.keep is None:
        return batch, plan
    key = None if batch.layout_key is None else ("kept", batch.layout_key)
    pruned = batch.select_columns(keep_columns(plan, batch.unit.device), key)
    return pruned, batch_plan(pruned, prune=False)


__all__ = ["Example", "SequenceBatch", "BatchPlan", "batch_plan", "collate", "prune_batch", "IGNORE"]
