"""The sequence layout: one definition of units, streams, documents and positions.

An example is a list of segments (`Text`, `Image`, `Video`). `Layout.build`
turns them into per-token arrays that everything else reads — masks, rotary
positions, losses and the generation engine never re-derive them.

Sequence of one example (docs/architecture.md, "The sequence layout")::

    [ clean stream: text tokens and clean visual blocks in reading order ]
    [ noisy stream: one noised copy of each trained visual block, in unit order ]

* Every text token is its own unit; every visual block is one unit.
* Visual blocks are in raster order over the grid of blocks; tokens are in
  raster order inside a block (frame, row, column).
* Noisy tokens share unit and position with their clean twins.
* `pack` concatenates several layouts into one row with `doc` ids and padding.
* `Layout.continuation` lays out segments appended to a sequence that continues at a given
  unit and position: the generation engine builds its new tokens (a prompt's next text token,
  the next visual block) from it, so units and positions have this one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from .errors import LayoutError  # re-exported

TEXT, IMAGE, VIDEO, PAD = 0, 1, 2, 3  # modality codes
PAD_DOC = -1  # padding is its own document; no real token attends to it
IGNORE = -100  # text target of a position that predicts nothing




def _check_pos_int(name: str, **vals: int) -> None:
    for k, v in vals.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise LayoutError(f"{name}.{k}={v!r} is invalid: must be a positive integer")


@dataclass(frozen=True)
class Text:
    """Text tokens. `loss=False` keeps them as context only (e.g. a VQA question)."""

    ids: tuple[int, ...]
    loss: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        if len(self.ids) == 0:
            raise LayoutError("Text.ids is empty: a text segment needs at least one token")
        if min(self.ids) < 0:
            raise LayoutError(f"Text.ids holds a negative id {min(self.ids)}: ids must be >= 0")


NoisySpec = Union[bool, tuple[int, ...]]


@dataclass(frozen=True)
class _Visual:
    """A visual span of frames×h×w tokens cut into blocks of fb×bh×bw tokens."""

    def _dims(self) -> tuple[int, int, int, int, int, int]:  # (f, h, w, fb, bh, bw)
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int, int]:
        f, h, w, *_ = self._dims()
        return f, h, w

    @property
    def num_tokens(self) -> int:
        f, h, w = self.grid
        return f * h * w

    @property
    def block_tokens(self) -> int:
        _, _, _, fb, bh, bw = self._dims()
        return fb * bh * bw

    @property
    def num_blocks(self) -> int:
        return self.num_tokens // self.block_tokens

    def noisy_blocks(self) -> list[int]:
        spec = self.noisy  # type: ignore[attr-defined]
        if spec is True:
            return list(range(self.num_blocks))
        if spec is False:
            return []
        idx = sorted(set(int(i) for i in spec))
        if idx and (idx[0] < 0 or idx[-1] >= self.num_blocks):
            raise LayoutError(f"noisy block indices {idx} out of range: valid are 0..{self.num_blocks - 1}")
        return idx

    def block_order(self) -> np.ndarray:
        """Natural (frame-major raster) token index of each token, block by block.

        Returns:
            (num_blocks, block_tokens) int array: row b lists, in raster order inside
            block b, the raster indices of its tokens in the f×h×w grid.
        """
        f, h, w, fb, bh, bw = self._dims()
        grid = np.arange(f * h * w).reshape(f // fb, fb, h // bh, bh, w // bw, bw)
        grid = grid.transpose(0, 2, 4, 1, 3, 5)  # (F/fb, H/bh, W/bw, fb, bh, bw)
        return grid.reshape(-1, fb * bh * bw)

    def coords(self) -> np.ndarray:
        """(num_tokens, 3) (frame, row, col) of each token in natural raster order."""
        f, h, w = self.grid
        t, i, j = np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij")
        return np.stack([t.ravel(), i.ravel(), j.ravel()], axis=1)


@dataclass(frozen=True)
class Image(_Visual):
    """An h×w token grid cut into blocks of block_h×block_w tokens (raster order of blocks)."""

    h: int
    w: int
    block_h: int
    block_w: int
    noisy: NoisySpec = True  # which blocks get a noised copy: all, none, or these indices

    def __post_init__(self) -> None:
        _check_pos_int("Image", h=self.h, w=self.w, block_h=self.block_h, block_w=self.block_w)
        if self.h % self.block_h or self.w % self.block_w:
            raise LayoutError(
                f"Image grid {self.h}x{self.w} is not divisible by block {self.block_h}x{self.block_w}"
            )
        self.noisy_blocks()

    def _dims(self) -> tuple[int, int, int, int, int, int]:
        return 1, self.h, self.w, 1, self.block_h, self.block_w


@dataclass(frozen=True)
class Video(_Visual):
    """`frames` frames of h×w tokens; a block is `frames_per_block` whole frames."""

    frames: int
    h: int
    w: int
    frames_per_block: int
    noisy: NoisySpec = True

    def __post_init__(self) -> None:
        _check_pos_int("Video", frames=self.frames, h=self.h, w=self.w, frames_per_block=self.frames_per_block)
        if self.frames % self.frames_per_block:
            raise LayoutError(
                f"Video.frames={self.frames} is not divisible by frames_per_block={self.frames_per_block}"
            )
        self.noisy_blocks()

    def _dims(self) -> tuple[int, int, int, int, int, int]:
        return self.frames, self.h, self.w, self.frames_per_block, self.h, self.w


Segment = Union[Text, Image, Video]


def span_positions(start: int, grid: tuple[int, int, int] | None) -> tuple[np.ndarray, int]:
    """The one position rule (docs/architecture.md, "Positions"): 3-axis (t, h, w) rotary positions.

    A text token at running index n gets (n, n, n). A visual span of f×h×w tokens
    starting at n gets (n+frame, n+row, n+col) in natural raster order; the running
    index then resumes at n + max(f, h, w).

    Args:
        start: running index n.
        grid: (f, h, w) for a visual span, None for one text token.

    Returns:
        positions (tokens, 3) and the next running index.
    """
    if grid is None:
        return np.full((1, 3), start, dtype=np.int64), start + 1
    f, h, w = grid
    t, i, j = np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij")
    pos = start + np.stack([t.ravel(), i.ravel(), j.ravel()], axis=1)
    return pos.astype(np.int64), start + max(f, h, w)


@dataclass(frozen=True)
class BlockSpan:
    """Where one visual block lives in the layout."""

    segment: int  # index of its segment
    index: int  # block index inside the segment (raster order of blocks)
    unit: int
    clean: tuple[int, int]  # [start, stop) of its clean tokens
    noisy: tuple[int, int] | None  # [start, stop) of its noised copy, None if not trained/generated
    slot: int  # index among the blocks with a noised copy (-1 if none)
    tokens: np.ndarray  # (block_tokens,) index of each token into the example's visual token array


class Layout:
    """Per-token arrays of one example; see the module docstring.

    Attributes (length L = n_clean + n_noisy):
        unit, noisy, modality, pos (L, 3), text_ids (0 where not text),
        text_target (next text id to predict, IGNORE elsewhere),
        visual_index (index into the example's visual tokens, -1 for text),
        blocks (list[BlockSpan]), visual_offsets (start of each visual segment's tokens),
        next_unit, next_pos (where a continuation would start).

    Args:
        segments: the example's segments.
        start_unit, start_pos: the unit and running position index of its first token; nonzero
            for a continuation (see `continuation`), 0 for an example of its own.
    """

    def __init__(self, segments: Sequence[Segment], start_unit: int = 0, start_pos: int = 0):
        if len(segments) == 0:
            raise LayoutError("a layout needs at least one segment")
        for name, v in (("start_unit", start_unit), ("start_pos", start_pos)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise LayoutError(f"{name}={v!r} is invalid: must be an integer >= 0")
        self.segments = tuple(segments)
        self.start_unit, self.start_pos = int(start_unit), int(start_pos)
        clean: list[tuple[int, int, int, np.ndarray, int, int]] = []  # unit, modality, text id, pos, vis idx, loss
        blocks_pending: list[tuple[int, int, int, np.ndarray, np.ndarray, bool]] = []
        unit, n, vis_off = self.start_unit, self.start_pos, 0
        self.visual_offsets: list[int] = []
        for s_i, seg in enumerate(self.segments):
            if isinstance(seg, Text):
                for tok in seg.ids:
                    pos, n = span_positions(n, None)
                    clean.append((unit, TEXT, tok, pos[0], -1, int(seg.loss)))
                    unit += 1
            elif isinstance(seg, (Image, Video)):
                pos, n_next = span_positions(n, seg.grid)
                noisy_set = set(seg.noisy_blocks())
                mod = IMAGE if isinstance(seg, Image) else VIDEO
                self.visual_offsets.append(vis_off)
                for b, toks in enumerate(seg.block_order()):
                    for tk in toks:
                        clean.append((unit, mod, 0, pos[tk], vis_off + int(tk), 0))
                    blocks_pending.append((s_i, b, unit, toks + vis_off, pos[toks], b in noisy_set))
                    unit += 1
                vis_off += seg.num_tokens
                n = n_next
            else:
                raise LayoutError(f"unknown segment type {type(seg).__name__}: valid are Text, Image, Video")
        self.n_clean = len(clean)
        self.num_visual_tokens = vis_off
        self.next_unit, self.next_pos = unit, n

        unit_a = [c[0] for c in clean]
        mod_a = [c[1] for c in clean]
        tid_a = [c[2] for c in clean]
        pos_a = [c[3] for c in clean]
        vis_a = [c[4] for c in clean]
        loss_a = [c[5] for c in clean]
        # noisy stream: one copy per trained block, in unit order
        self.blocks: list[BlockSpan] = []
        cursor_clean = {}  # unit -> clean start
        for p, u in enumerate(unit_a):
            cursor_clean.setdefault(u, p)
        noisy_start, slot = self.n_clean, 0
        for s_i, b, u, toks, pos, is_noisy in blocks_pending:
            c0 = cursor_clean[u]
            span = None
            if is_noisy:
                span = (noisy_start, noisy_start + len(toks))
                noisy_start += len(toks)
                unit_a += [u] * len(toks)
                mod_a += [mod_a[c0]] * len(toks)
                tid_a += [0] * len(toks)
                pos_a += list(pos)
                vis_a += [int(t) for t in toks]
                loss_a += [0] * len(toks)
            self.blocks.append(BlockSpan(s_i, b, u, (c0, c0 + len(toks)), span, slot if is_noisy else -1, toks))
            slot += int(is_noisy)
        self.num_noisy_blocks = slot
        L = len(unit_a)
        self.unit = np.asarray(unit_a, dtype=np.int64)
        self.modality = np.asarray(mod_a, dtype=np.int64)
        self.text_ids = np.asarray(tid_a, dtype=np.int64)
        self.pos = np.asarray(pos_a, dtype=np.int64).reshape(L, 3)
        self.visual_index = np.asarray(vis_a, dtype=np.int64)
        self.noisy = np.zeros(L, dtype=bool)
        self.noisy[self.n_clean :] = True
        self.block_slot = np.full(L, -1, dtype=np.int64)
        for blk in self.blocks:
            if blk.noisy is not None:
                self.block_slot[blk.noisy[0] : blk.noisy[1]] = blk.slot
        # next-token targets: a clean text token predicts the next clean token if that is text with loss on
        self.text_target = np.full(L, IGNORE, dtype=np.int64)
        loss = np.asarray(loss_a, dtype=bool)
        is_text = self.modality[: self.n_clean] == TEXT
        nxt = np.arange(self.n_clean - 1)
        ok = is_text[:-1] & is_text[1:] & loss[1 : self.n_clean]
        self.text_target[nxt[ok]] = self.text_ids[nxt[ok] + 1]

    @classmethod
    def continuation(cls, segments: Sequence[Segment], unit: int, pos: int) -> Layout:
        """The layout of `segments` appended to a sequence whose next unit is `unit` and next position `pos`.

        Its clean stream equals the tail of the clean stream of `Layout(past + segments)` for any
        `past` with `Layout(past).next_unit == unit` and `.next_pos == pos`, and so does its noisy
        stream (units, positions, modalities, text ids and targets); `next_unit` / `next_pos` say
        where the sequence continues after it. Visual indices and block spans are relative to the
        continuation itself. This is how the generation engine builds every token it appends.
        """
        return cls(segments, start_unit=unit, start_pos=pos)

    def continued(self, segments: Sequence[Segment]) -> Layout:
        """`continuation` of this layout: `segments` appended after its last unit and position."""
        return Layout.continuation(segments, self.next_unit, self.next_pos)

    def __len__(self) -> int:
        return len(self.unit)

    @property
    def key(self) -> tuple:
        """A hashable identity of the segments (and start): equal keys give equal per-token arrays."""
        def norm(v: object) -> object:
            return tuple(v) if isinstance(v, (list, np.ndarray)) else v

        segs = tuple((type(s).__name__, *(norm(v) for v in s.__dict__.values())) for s in self.segments)
        if self.start_unit or self.start_pos:
            return (*segs, ("start", self.start_unit, self.start_pos))
        return segs

    @property
    def noisy_spans(self) -> list[BlockSpan]:
        return [b for b in self.blocks if b.noisy is not None]

    def __repr__(self) -> str:
        kinds = ", ".join(type(s).__name__ for s in self.segments)
        return f"Layout([{kinds}], clean={self.n_clean}, noisy={len(self) - self.n_clean}, blocks={len(self.blocks)})"


@dataclass
class PackedRow:
    """Several layouts packed into one sequence row of length `seq_len`."""

    unit: np.ndarray
    noisy: np.ndarray
    doc: np.ndarray
    modality: np.ndarray
    pos: np.ndarray  # (L, 3)
    text_ids: np.ndarray
    text_target: np.ndarray
    block_slot: np.ndarray  # index into the row's list of noisy blocks, -1 elsewhere
    offsets: list[int]  # start of each layout in the row
    slot_offsets: list[int]  # first row-slot of each layout's noisy blocks


def pack(layouts: Sequence[Layout], seq_len: int | None = None, left: bool = False) -> PackedRow:
    """Concatenate layouts into one row with doc ids 0..n-1 and pad to `seq_len`.

    Padding tokens are clean, have doc PAD_DOC and increasing units from 0, so they see
    only earlier padding (no empty attention rows) and no real token sees them. Padding goes
    after the layouts, or before them with `left=True` (a batch of prompts for generation,
    whose next tokens are appended at the same column in every row).
    """
    total = sum(len(l) for l in layouts)
    seq_len = total if seq_len is None else seq_len
    if total > seq_len:
        raise LayoutError(f"layouts hold {total} tokens, more than seq_len={seq_len}")
    if left:
        row = pack(layouts, seq_len)
        n_pad = seq_len - total
        order = np.r_[total:seq_len, 0:total]  # the padding (at the tail of `row`) moves to the front
        fields = {k: getattr(row, k)[order] for k in ("unit", "noisy", "doc", "modality", "pos", "text_ids",
                                                       "text_target", "block_slot")}
        return PackedRow(**fields, offsets=[o + n_pad for o in row.offsets], slot_offsets=row.slot_offsets)
    unit = np.zeros(seq_len, np.int64)
    noisy = np.zeros(seq_len, bool)
    doc = np.full(seq_len, PAD_DOC, np.int64)
    modality = np.full(seq_len, PAD, np.int64)
    pos = np.zeros((seq_len, 3), np.int64)
    text_ids = np.zeros(seq_len, np.int64)
    text_target = np.full(seq_len, IGNORE, np.int64)
    block_slot = np.full(seq_len, -1, np.int64)
    offsets, slot_offsets, o, s = [], [], 0, 0
    for d, lay in enumerate(layouts):
        n = len(lay)
        sl = slice(o, o + n)
        unit[sl], noisy[sl], doc[sl], modality[sl] = lay.unit, lay.noisy, d, lay.modality
        pos[sl], text_ids[sl], text_target[sl] = lay.pos, lay.text_ids, lay.text_target
        block_slot[sl] = np.where(lay.block_slot >= 0, lay.block_slot + s, -1)
        offsets.append(o)
        slot_offsets.append(s)
        o += n
        s += lay.num_noisy_blocks
    unit[o:] = np.arange(seq_len - o)
    return PackedRow(unit, noisy, doc, modality, pos, text_ids, text_target, block_slot, offsets, slot_offsets)
