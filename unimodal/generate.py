"""The generation engine: one loop for text, images, video and interleaved documents.

* Text: autoregressive decoding (greedy, temperature, top-k, top-p, stop tokens)
  against a KV cache; a batch of prompts of different lengths is left-padded with
  padding-document tokens that no real token can see.
* Visual: for each block, start from noise and run the sampler on the noisy block
  alone against the cache of the clean past; then append the finished block to the
  cache as clean tokens (one forward); then the next block.
* Interleaved: text until `<boi>`, a whole image, `<eoi>`, text again.
* Long video: `window` keeps the last blocks only, re-encoded at the positions of the
  video's first blocks when the window slides, so positions stay in the trained range
  and the cache stays bounded.
* Guidance: class labels enter only through AdaLN, so both branches share one
  cache (queries stacked [cond; uncond] read it tiled); a text prompt is in the
  sequence, so its unconditional branch has a second context.

`Context` is the clean past, held either as a KV cache (`use_cache=True`) or as
raw tokens re-run in full at every step (`use_cache=False`) — the reference the
tests compare the cache against. The engine never knows which one it drives.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from .batch import Example, SequenceBatch, collate
from .config import PAPER_SAMPLING
from .diffusion.samplers import Sampler, classifier_free_guidance, create_sampler
from .diffusion.schedule import ScheduleConfig
from .errors import ConfigError
from .layout import (
    IGNORE,
    IMAGE,
    PAD,
    PAD_DOC,
    TEXT,
    VIDEO,
    Image,
    Layout,
    Segment,
    Text,
    Video,
    pack,
)
from .model import ACDiT, KVCache, ModelOutput
from .model.block_step import BlockStep
from .tokenizers.text import SPECIAL_IDS


def token_batch(
    unit: torch.Tensor,
    pos: torch.Tensor,
    doc: torch.Tensor,
    *,
    text_ids: torch.Tensor | None = None,
    visual: torch.Tensor | None = None,
    noisy: bool = False,
    modality: int = TEXT,
    t: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    token_dim: int,
) -> SequenceBatch:
    """A SequenceBatch of n new tokens per row (all of one kind), for the engine.

    Args:
        unit: (B, n); pos: (B, n, 3); doc: (B, n) — PAD_DOC marks rows that are not generating.
        text_ids: (B, n) for text tokens; visual: (B, n, C) for visual tokens.
        noisy: the tokens are one noisy block (then `t`, `y` are (B,) for that block).
    """
    B, n = unit.shape
    dev = unit.device
    return SequenceBatch(
        text_ids=text_ids if text_ids is not None else torch.zeros(B, n, dtype=torch.long, device=dev),
        visual=visual if visual is not None else torch.zeros(B, n, token_dim, device=dev),
        unit=unit,
        noisy=torch.full((B, n), noisy, dtype=torch.bool, device=dev),
        doc=doc,
        modality=torch.where(doc == PAD_DOC, PAD, modality) if modality == TEXT else torch.full_like(unit, modality),
        pos=pos,
        block_slot=torch.full((B, n), 0 if noisy else -1, dtype=torch.long, device=dev),
        t=t[:, None] if noisy else torch.zeros(B, 0, dtype=torch.long, device=dev),
        y=(y if y is not None else torch.full((B,), -1, dtype=torch.long, device=dev))[:, None]
        if noisy
        else torch.zeros(B, 0, dtype=torch.long, device=dev),
        text_target=torch.full((B, n), IGNORE, dtype=torch.long, device=dev),
    )


def continuations(
    segments: Sequence[Sequence[Segment]], next_unit: np.ndarray, next_pos: np.ndarray
) -> list[Layout]:
    """Per row r, `Layout.continuation(segments[r], next_unit[r], next_pos[r])`.

    Rows that continue from the same place with the same segments share one layout.
    """
    made: dict[tuple, Layout] = {}
    out = []
    for segs, u, p in zip(segments, next_unit.tolist(), next_pos.tolist()):
        k = (u, p, tuple(segs))
        if k not in made:
            made[k] = Layout.continuation(segs, u, p)
        out.append(made[k])
    return out


def layout_columns(lays: Sequence[Layout], start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(units (B, n), positions (B, n, 3)) of tokens start..stop of each row's layout, on `device`."""
    unit = torch.from_numpy(np.stack([lay.unit[start:stop] for lay in lays])).to(device)
    pos = torch.from_numpy(np.stack([lay.pos[start:stop] for lay in lays])).to(device)
    return unit, pos


class Context:
    """The clean past of B sequences and where each continues (next unit, next position).

    `next_unit` / `next_pos` are host-side (B,) int arrays, each a `Layout.next_unit` /
    `Layout.next_pos` of the last layout appended: new tokens are built as a
    `Layout.continuation` from them (`continuations`), never by position arithmetic here.
    """

    def __init__(self, model: ACDiT, batch_size: int, device: torch.device, use_cache: bool = True):
        self.model, self.B, self.device, self.use_cache = model, batch_size, device, use_cache
        self.cache = KVCache(model.cfg.n_layer) if use_cache else None
        self.history: SequenceBatch | None = None  # recompute mode: every clean token so far
        self.next_unit = np.zeros(batch_size, dtype=np.int64)
        self.next_pos = np.zeros(batch_size, dtype=np.int64)

    def run(self, new: SequenceBatch, update: bool, one_noisy_block: bool = False) -> ModelOutput:
        """Outputs for the new tokens, which see the past and themselves; append them when `update`.

        `one_noisy_block`: the new tokens are one noisy block per row (a denoising step), see `ACDiT.forward_fp`.
        """
        if self.use_cache:
            return self.model(new, cache=self.cache, update_cache=update, one_noisy_block=one_noisy_block)
        if self.history is None:
            full, n_past = new, 0
        else:
            rep = new.unit.shape[0] // self.B  # guidance branches stacked on the batch
            h = self.history
            full = SequenceBatch(
                text_ids=torch.cat([h.text_ids.repeat(rep, 1), new.text_ids], 1),
                visual=torch.cat([h.visual.repeat(rep, 1, 1), new.visual], 1),
                unit=torch.cat([h.unit.repeat(rep, 1), new.unit], 1),
                noisy=torch.cat([h.noisy.repeat(rep, 1), new.noisy], 1),
                doc=torch.cat([h.doc.repeat(rep, 1), new.doc], 1),
                modality=torch.cat([h.modality.repeat(rep, 1), new.modality], 1),
                pos=torch.cat([h.pos.repeat(rep, 1, 1), new.pos], 1),
                block_slot=torch.cat([h.block_slot.repeat(rep, 1), new.block_slot], 1),
                t=new.t,
                y=new.y,
                text_target=torch.cat([h.text_target.repeat(rep, 1), new.text_target], 1),
            )
            n_past = h.unit.shape[1]
        out = self.model(full)  # the past is clean: not one noisy block
        if update:
            self.history = full
        n = new.unit.shape[1]
        return ModelOutput(
            None if out.text_logits is None else out.text_logits[:, n_past : n_past + n],
            None if out.pred is None else out.pred[:, n_past : n_past + n],
        )

    def snapshot(self) -> tuple:
        """The clean past as it is now, for `restore` (cheap: cached tensors are shared, never copied)."""
        cache = None if self.cache is None else self.cache.copy()
        return cache, self.history, self.next_unit.copy(), self.next_pos.copy()

    def restore(self, snap: tuple) -> None:
        """Return to a `snapshot` (which stays valid for further restores)."""
        cache, self.history, next_unit, next_pos = snap
        self.cache = None if cache is None else cache.copy()
        self.next_unit, self.next_pos = next_unit.copy(), next_pos.copy()

    def prefill(self, examples: Sequence[Example]) -> torch.Tensor | None:
        """Append B clean contexts (left-padded to one length); return last-position text logits (B, V)."""
        if len(examples) != self.B:
            raise ValueError(f"prefill got {len(examples)} contexts for a batch of {self.B}")
        for i, ex in enumerate(examples):
            if ex.layout.num_noisy_blocks:
                raise ValueError(f"context {i} has noisy blocks: build its visual segments with noisy=False")
        C = self.model.cfg.token_dim
        L = max(len(ex.layout) for ex in examples)
        rows = [pack([ex.layout], L, left=True) for ex in examples]  # the layout layer's padding, in front
        cols = {
            name: torch.from_numpy(np.stack([getattr(r, name) for r in rows])).to(self.device)
            for name in ("text_ids", "unit", "doc", "modality", "block_slot", "text_target", "pos", "noisy")
        }
        visual = [collate([ex], C).visual[0] for ex in examples]  # padding carries no visual token (zeros)
        cols["visual"] = torch.stack([torch.cat([v.new_zeros(L - v.shape[0], C), v]) for v in visual]).to(self.device)
        new = SequenceBatch(**cols, t=torch.zeros(self.B, 0, dtype=torch.long, device=self.device),
                            y=torch.zeros(self.B, 0, dtype=torch.long, device=self.device))
        out = self.run(new, update=True)
        self.next_unit = np.array([ex.layout.next_unit for ex in examples], dtype=np.int64)
        self.next_pos = np.array([ex.layout.next_pos for ex in examples], dtype=np.int64)
        return None if out.text_logits is None else out.text_logits[:, -1]

    def append_text(self, ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor | None:
        """Append one text token per row (inactive rows write padding); return next-token logits (B, V)."""
        doc = torch.where(active, 0, PAD_DOC)[:, None]
        lays = continuations([[Text([t])] for t in ids.tolist()], self.next_unit, self.next_pos)
        unit, pos = layout_columns(lays, 0, 1, self.device)
        new = token_batch(unit, pos, doc, text_ids=ids[:, None], token_dim=self.model.cfg.token_dim)
        out = self.run(new, update=True)
        self.next_unit = np.array([lay.next_unit for lay in lays], dtype=np.int64)
        self.next_pos = np.array([lay.next_pos for lay in lays], dtype=np.int64)
        return None if out.text_logits is None else out.text_logits[:, -1]


@dataclass
class TextSampling:
    """How text tokens are chosen."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = (SPECIAL_IDS["<eos>"],)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} is invalid: must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} is invalid: must be >= 1 or None")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p} is invalid: must be in (0, 1] or None")


@dataclass
class VisualSampling:
    """How visual blocks are denoised; sampler and steps default to the paper's (`PAPER_SAMPLING`)."""

    sampler: str = PAPER_SAMPLING.sampler
    steps: int = PAPER_SAMPLING.steps
    cfg_scale: float = 1.0  # 1: no guidance
    sampler_kwargs: dict = field(default_factory=dict)
    # the noise schedule the model was trained with (betas, ε or v prediction): a checkpoint's
    # `Checkpoint.schedule`. None: ACDiT's defaults. Sampling a v-model as ε is silently wrong.
    schedule: ScheduleConfig | None = None

    @classmethod
    def paper(cls, video: bool = False, schedule: ScheduleConfig | None = None) -> VisualSampling:
        """The paper's settings: DPM-Solver++, 25 steps, CFG 1.5 for images (2.5 for video)."""
        return cls(PAPER_SAMPLING.sampler, PAPER_SAMPLING.steps, PAPER_SAMPLING.cfg(video), schedule=schedule)


def sample_next(logits: torch.Tensor, s: TextSampling, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits → (B,) token ids under greedy / temperature / top-k / top-p."""
    if s.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / s.temperature
    if s.top_k is not None:
        kth = logits.topk(min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p is not None:
        sorted_l, order = logits.sort(-1, descending=True)
        probs = sorted_l.softmax(-1)
        drop = probs.cumsum(-1) - probs > s.top_p  # keep the smallest prefix with mass >= top_p
        sorted_l = sorted_l.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_l)
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


@dataclass
class TokenEvent:
    """One decoded text token per row (`active` False where the row had already stopped)."""

    tokens: torch.Tensor  # (B,)
    active: torch.Tensor  # (B,) bool


@dataclass
class BlockEvent:
    """One finished visual block for the rows in `rows`."""

    segment: Image | Video
    index: int  # block index in the segment
    tokens: torch.Tensor  # (B, block_tokens, C) clean tokens of this block, block-internal raster order
    rows: torch.Tensor  # (B,) bool: rows that generated it


@dataclass
class VisualEvent:
    """A finished image/video: tokens in natural raster order."""

    segment: Image | Video
    tokens: torch.Tensor  # (B, f*h*w, C)
    rows: torch.Tensor  # (B,) bool


class Generator:
    """Drives a model through text and visual generation for a batch of B sequences.

    Args:
        model: the backbone (put in eval mode by the caller or here).
        batch_size: B.
        use_cache: KV cache (default) or recompute the whole context each step (reference).
        seed: seeds one torch.Generator used for every random draw (noise, sampling).
        device: defaults to the model's device.
        compile: run each denoising step through `torch.compile` with static shapes (`BlockStep`);
            the first block of each shape compiles (tens of seconds on a CPU), later ones reuse it.
            Default: on when the model's forward is compiled (`ACDiT.compile_forward`).
    """

    def __init__(
        self,
        model: ACDiT,
        batch_size: int,
        use_cache: bool = True,
        seed: int | None = 0,
        device: torch.device | str | None = None,
        compile: bool | None = None,
    ):
        self.model = model.eval()
        # denoising steps through torch.compile (static shapes, `BlockStep`); default: as the model's forward
        self.compile = bool(getattr(model, "compiled", False)) if compile is None else bool(compile)
        if self.compile and not use_cache:
            raise ConfigError("compiled sampling steps read the KV cache: use_cache=False (recompute) cannot compile")
        self.B = batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.use_cache = use_cache
        self.gen = torch.Generator(device="cpu")
        if seed is not None:
            self.gen.manual_seed(seed)
        self.ctx = Context(model, batch_size, self.device, use_cache)
        self.uncond: Context | None = None  # second context for in-sequence (text) guidance
        self.logits: torch.Tensor | None = None  # (B, V) next-token logits of the main context

    # --- context ---------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, examples: Sequence[Example], uncond: Sequence[Example] | None = None) -> None:
        """Set the clean context of every row (and of the unconditional branch for text CFG)."""
        self.logits = self.ctx.prefill(examples)
        if uncond is not None:
            self.uncond = Context(self.model, self.B, self.device, self.use_cache)
            self.uncond.prefill(uncond)

    @torch.no_grad()
    def feed_text(self, ids: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Force one token per row (e.g. `<eoi>`) into every context."""
        active = torch.ones(self.B, dtype=torch.bool, device=self.device) if active is None else active
        self.logits = self.ctx.append_text(ids.to(self.device), active)
        if self.uncond is not None:
            self.uncond.append_text(ids.to(self.device), active)

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def stream_text(
        self, sampling: TextSampling, pause_tokens: tuple[int, ...] = (), active: torch.Tensor | None = None
    ) -> Iterator[TokenEvent]:
        """Decode until every row hit a stop or pause token or max_new_tokens.

        A row that emits a pause token (e.g. `<boi>`) stops here with the token in its
        context; `self.paused` tells which rows did.
        """
        if self.logits is None:
            raise ConfigError("no text logits to continue from: prefill a context that ends with text")
        active = torch.ones(self.B, dtype=torch.bool, device=self.device) if active is None else active.clone()
        self.paused = torch.zeros(self.B, dtype=torch.bool, device=self.device)
        stops = torch.tensor(sampling.stop_tokens, device=self.device, dtype=torch.long)
        pauses = torch.tensor(pause_tokens, device=self.device, dtype=torch.long)
        for _ in range(sampling.max_new_tokens):
            if not bool(active.any()):
                break
            tok = torch.where(active, sample_next(self.logits, sampling, self.gen), torch.zeros_like(active, dtype=torch.long))
            self.feed_text(tok, active)
            yield TokenEvent(tok, active.clone())
            hit_pause = active & torch.isin(tok, pauses)
            self.paused |= hit_pause
            active = active & ~torch.isin(tok, stops) & ~hit_pause

    # --- visual ----------------------------------------------------------------------------
    @torch.no_grad()
    def stream_visual(
        self,
        segment: Image | Video,
        sampling: VisualSampling,
        class_labels: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        max_context: int | None = None,
        window: int | None = None,
        collect: bool = True,
    ) -> Iterator[BlockEvent | VisualEvent]:
        """Generate one image or video block by block; yields each finished block, then the whole.

        Args:
            segment: grid and block shape (its `noisy` field is ignored).
            class_labels: (B,) labels for class-conditional models; with cfg_scale != 1
                the unconditional branch uses the null class and shares the cache.
            rows: (B,) bool, rows that generate (others write padding); default all.
            max_context: keep at most this many cached tokens (keys keep their positions, which grow).
            window: video only: condition each block on at most the `window` previous blocks. Once the
                window is full it slides: the kept blocks are re-encoded at the positions of the video's
                first `window` blocks and the new block takes the position of block `window`, so no position
                beyond those of a (window + 1)-block video is ever used (a model trained on N blocks is
                never asked about a position it was not trained on when window < N), and the cache holds
                the context before the video plus at most `window` blocks: memory stays flat.
            collect: end with a VisualEvent holding the whole segment. False keeps no buffer of past blocks
                (only BlockEvents are yielded), for long videos.
        """
        C = self.model.cfg.token_dim
        rows = torch.ones(self.B, dtype=torch.bool, device=self.device) if rows is None else rows.to(self.device)
        guided = sampling.cfg_scale != 1.0
        class_labels = self._check_visual_request(segment, guided, class_labels, max_context, window)
        full = type(segment)(**{**segment.__dict__, "noisy": False})
        n_blocks = full.num_blocks
        sliding = window is not None and n_blocks > window
        # positions and in-block token order come from the segment, or (sliding) from its first window+1 blocks
        shape = Video((window + 1) * full.frames_per_block, full.h, full.w, full.frames_per_block, noisy=False) if sliding else full
        modality = IMAGE if isinstance(segment, Image) else VIDEO
        sampler = create_sampler(sampling.sampler, sampling.steps, sampling.schedule, **sampling.sampler_kwargs)
        doc = torch.where(rows, 0, PAD_DOC)
        out_tokens = torch.zeros(self.B, full.num_tokens, C, device=self.device) if collect else None
        # shared: class guidance with one cache, [cond; uncond] stacked on the batch.
        # otherwise each branch has its own context (text prompt dropped, or the class
        # branch given its own copy of the context with `prefill(uncond=...)`).
        shared = guided and class_labels is not None and self.uncond is None
        contexts = [self.ctx] + ([self.uncond] if guided and not shared else [])
        null = None if class_labels is None else torch.full_like(class_labels, -1)
        labels = [class_labels, null][: len(contexts)]
        # each row's tokens: a continuation of its context by `shape`; after the video the context
        # holds `held` (the segment, or, sliding, its last `window` blocks at the first positions)
        conts = [continuations([[shape]] * self.B, ctx.next_unit, ctx.next_pos) for ctx in contexts]
        held = Video(window * full.frames_per_block, full.h, full.w, full.frames_per_block, noisy=False) if sliding else full
        after = [continuations([[held]] * self.B, ctx.next_unit, ctx.next_pos) for ctx in contexts]
        lay = conts[0][0]
        before = [ctx.snapshot() for ctx in contexts] if sliding else []  # the context before this video
        recent: list[torch.Tensor] = []  # sliding: the last `window` finished blocks
        for b in range(n_blocks):
            slot = min(b, len(lay.blocks) - 1)
            blk = lay.blocks[slot]
            n = len(blk.tokens)
            idx = torch.from_numpy(blk.tokens).to(self.device)
            units, pos = zip(*(layout_columns(c, *blk.clean, self.device) for c in conts))  # each (B, n), (B, n, 3)
            dmat = doc[:, None].expand(-1, n)
            x = self._denoise_block(sampler, sampling.cfg_scale, contexts, shared, units, pos, dmat, modality, labels, n)
            if window is not None:
                recent = (recent + [x])[-window:]
            if not sliding or b < window:  # the finished block joins the clean past
                for ctx, u, p in zip(contexts, units, pos):
                    ctx.run(token_batch(u, p, dmat, visual=x, modality=modality, token_dim=C), update=True)
                    if max_context is not None and ctx.cache is not None:
                        ctx.cache.keep_last(max_context)
            else:  # slide: the context before the video + the last `window` blocks at the first window positions
                self._reencode(contexts, before, recent, conts, doc, modality)
            if out_tokens is not None:
                out_tokens[:, idx + (b - slot) * n] = x  # video blocks are consecutive frames
            yield BlockEvent(segment, b, x, rows)
        for ctx, lays in zip(contexts, after):
            ctx.next_unit = np.array([lay.next_unit for lay in lays], dtype=np.int64)
            ctx.next_pos = np.array([lay.next_pos for lay in lays], dtype=np.int64)
        self.logits = None
        if out_tokens is not None:
            yield VisualEvent(segment, out_tokens, rows)

    def _check_visual_request(
        self, segment: Image | Video, guided: bool, class_labels: torch.Tensor | None, max_context: int | None, window: int | None
    ) -> torch.Tensor | None:
        """ConfigError for a request `stream_visual` cannot serve; the class labels on the device."""
        if guided and class_labels is None and self.uncond is None:
            raise ConfigError("cfg_scale != 1 needs class_labels (class guidance) or an unconditional context (prefill uncond=)")
        if class_labels is not None:
            if self.model.y_embedder is None:
                raise ConfigError("this model has no class embedding (num_classes=0): do not pass class_labels")
            class_labels = class_labels.to(self.device)
            bad = (class_labels >= self.model.cfg.num_classes) | (class_labels < -1)
            if bool(bad.any()):
                raise ConfigError(f"class label {class_labels[bad][0].item()} is invalid: valid are 0..{self.model.cfg.num_classes - 1} (or -1 = null)")
        if window is not None:
            if not isinstance(segment, Video):
                raise ConfigError(f"window={window} applies to Video segments only, got {type(segment).__name__}")
            if isinstance(window, bool) or not isinstance(window, int) or window < 1:
                raise ConfigError(f"window={window!r} is invalid: must be a positive number of blocks")
            if max_context is not None:
                raise ConfigError("give max_context (tokens, positions grow) or window (blocks, positions re-based), not both")
        return class_labels

    def _denoise_block(
        self, sampler: Sampler, cfg_scale: float, contexts: list[Context], shared: bool, units: tuple, pos: tuple,
        dmat: torch.Tensor, modality: int, labels: list, n: int,
    ) -> torch.Tensor:
        """One block's full sampler run from noise, guided (one shared cache, or one context per branch)."""
        C = self.model.cfg.token_dim
        x = torch.randn(self.B, n, C, generator=self.gen).to(self.device) * sampler.init_noise_sigma
        sampler.reset()
        # bf16 models: one autocast region per block, so the weights are cast to bf16 once per block
        # (autocast caches the casts until its outermost region exits) rather than at every step
        bf16 = getattr(self.model, "precision", "fp32") == "bf16"
        region = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with region:
            x = self._denoise_steps(sampler, cfg_scale, contexts, shared, units, pos, dmat, modality, labels, x)
        return x

    def _denoise_steps(
        self, sampler: Sampler, cfg_scale: float, contexts: list[Context], shared: bool, units: tuple, pos: tuple,
        dmat: torch.Tensor, modality: int, labels: list, x: torch.Tensor,
    ) -> torch.Tensor:
        C = self.model.cfg.token_dim
        if self.use_cache:  # the past is fixed for the whole block: mask, rotary tables and cache read once
            return self._denoise_cached(sampler, cfg_scale, contexts, shared, units, pos, dmat, labels, x)
        for t in sampler.timesteps:
            tt = torch.full((self.B,), int(t), dtype=torch.long, device=self.device)
            if shared:  # class guidance: [cond; uncond] stacked on the batch over one cache
                new = token_batch(units[0].repeat(2, 1), pos[0].repeat(2, 1, 1), dmat.repeat(2, 1),
                                  visual=x.repeat(2, 1, 1), noisy=True, modality=modality, t=tt.repeat(2),
                                  y=torch.cat([labels[0], torch.full_like(labels[0], -1)]), token_dim=C)
                e_c, e_u = self.ctx.run(new, update=False, one_noisy_block=True).pred.chunk(2)
            else:
                e_c, e_u = [
                    ctx.run(token_batch(u, p, dmat, visual=x, noisy=True, modality=modality, t=tt, y=y, token_dim=C),
                            update=False, one_noisy_block=True).pred
                    for ctx, u, p, y in zip(contexts, units, pos, labels)
                ] + [None] * (2 - len(contexts))
            pred = e_c if e_u is None else classifier_free_guidance(e_c, e_u, cfg_scale)
            x = sampler.step(pred, t, x, generator=self.gen)
        return x

    def _denoise_cached(
        self, sampler: Sampler, cfg_scale: float, contexts: list[Context], shared: bool, units: tuple, pos: tuple,
        dmat: torch.Tensor, labels: list, x: torch.Tensor,
    ) -> torch.Tensor:
        """`_denoise_steps` over KV caches: one `BlockStep` per context, built once for the block."""
        if shared:  # class guidance: [cond; uncond] stacked on the batch over one cache
            steps = [BlockStep(self.model, self.ctx.cache, units[0].repeat(2, 1), pos[0].repeat(2, 1, 1),
                               dmat.repeat(2, 1), compiled=self.compile)]
            ys = [torch.cat([labels[0], torch.full_like(labels[0], -1)])]
        else:
            steps = [BlockStep(self.model, ctx.cache, u, p, dmat, compiled=self.compile)
                     for ctx, u, p in zip(contexts, units, pos)]
            ys = [y if y is not None else torch.full((self.B,), -1, dtype=torch.long, device=self.device) for y in labels]
        # every step's modulation at once: the timesteps and labels are known before the first step
        ts = torch.tensor([int(t) for t in sampler.timesteps], dtype=torch.long, device=self.device)
        conds = [step.conditions(ts, y) for step, y in zip(steps, ys)]
        for i, t in enumerate(sampler.timesteps):
            if shared:
                e_c, e_u = steps[0].run(x.repeat(2, 1, 1), conds[0][i]).chunk(2)
            else:
                e_c, e_u = [step.run(x, c[i]) for step, c in zip(steps, conds)] + [None] * (2 - len(steps))
            pred = e_c if e_u is None else classifier_free_guidance(e_c, e_u, cfg_scale)
            x = sampler.step(pred, t, x, generator=self.gen)
        return x

    def _reencode(
        self, contexts: list[Context], before: list[tuple], recent: list[torch.Tensor],
        conts: list[list[Layout]], doc: torch.Tensor, modality: int,
    ) -> None:
        """Reset each context to `before` and append the `recent` blocks as its continuation's clean blocks
        0..len-1 (one forward); `conts` holds each context's per-row continuations from `before`."""
        C = self.model.cfg.token_dim
        x = torch.cat(recent, 1)  # (B, W*n, C)
        dmat = doc[:, None].expand(-1, x.shape[1])
        for ctx, snap, lays in zip(contexts, before, conts):
            ctx.restore(snap)
            start, stop = lays[0].blocks[0].clean[0], lays[0].blocks[len(recent) - 1].clean[1]
            units, pos = layout_columns(lays, start, stop, self.device)
            ctx.run(token_batch(units, pos, dmat, visual=x, modality=modality, token_dim=C), update=True)

    def generate_visual(self, segment: Image | Video, sampling: VisualSampling, **kw) -> torch.Tensor:
        """Run `stream_visual` to the end; returns (B, f*h*w, C) tokens in natural order."""
        if kw.get("collect", True) is False:
            raise ValueError("generate_visual returns the whole segment: stream with collect=False instead")
        for ev in self.stream_visual(segment, sampling, **kw):
            last = ev
        return last.tokens  # type: ignore[union-attr]

    # --- interleaved ------------------------------------------------------------------------
    @torch.no_grad()
    def stream_interleaved(
        self,
        text: TextSampling,
        visual: VisualSampling,
        segment: Image,
        boi_id: int = SPECIAL_IDS["<boi>"],
        eoi_id: int = SPECIAL_IDS["<eoi>"],
        max_images: int = 1,
    ) -> Iterator[TokenEvent | BlockEvent | VisualEvent]:
        """Text until `<boi>`, then a full `segment` image, `<eoi>`, then text again (up to max_images)."""
        active = torch.ones(self.B, dtype=torch.bool, device=self.device)
        for n_img in range(max_images + 1):
            pause = (boi_id,) if n_img < max_images else ()
            for ev in self.stream_text(text, pause_tokens=pause, active=active):
                yield ev
            paused = self.paused
            active = paused  # rows that stopped without <boi> are done
            if not bool(paused.any()):
                return
            for ev in self.stream_visual(segment, visual, rows=paused):
                yield ev
            self.feed_text(torch.full((self.B,), eoi_id, dtype=torch.long), paused)
            yield TokenEvent(torch.where(paused, eoi_id, 0), paused.clone())


def decode_text_events(events: Sequence[TokenEvent], batch_size: int) -> list[list[int]]:
    """Per-row token lists from TokenEvents (inactive steps dropped)."""
    out: list[list[int]] = [[] for _ in range(batch_size)]
    for ev in events:
        for r in range(batch_size):
            if bool(ev.active[r]):
                out[r].append(int(ev.tokens[r]))
    return out


__all__ = [
    "Context", "Generator", "TextSampling", "VisualSampling", "TokenEvent", "BlockEvent", "VisualEvent",
    "sample_next", "token_batch", "decode_text_events",
]
