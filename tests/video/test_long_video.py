"""Long videos: a sliding window of past blocks, re-encoded at the trained positions, with a bounded cache."""

from __future__ import annotations

import pytest
import torch
from model_helpers import randomize_

from unimodal import generate
from unimodal.batch import Example, collate
from unimodal.config import VisualConfig
from unimodal.generate import BlockEvent, Generator, VisualEvent, VisualSampling
from unimodal.layout import Image, Layout, Video
from unimodal.model import create_model
from unimodal.tasks import ClassToVideo

G, FPB, TRAINED = 2, 1, 4  # 2x2 tokens a frame, 1 frame a block, trained on 4 frames
N = G * G * FPB  # tokens a block
C = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=C, vocab_size=0, num_classes=5)).eval()


class Recorder:
    """Wraps model.forward and the engine's denoising steps (`BlockStep`): the max frame position and cache
    length any call saw, and every noisy step's inputs (tokens, t) and outputs."""

    def __init__(self, model):
        self.model, self.orig, self.orig_step = model, model.forward, generate.BlockStep
        self.max_frame, self.max_cache, self.noisy_calls = -1, 0, []
        model.forward = self
        rec = self

        class Step(generate.BlockStep):
            def __init__(self, model, cache, unit, pos, doc, **kw):
                rec.saw(pos, doc, cache)
                super().__init__(model, cache, unit, pos, doc, **kw)

            def conditions(self, timesteps, y):  # the engine builds a block's modulation once, then runs its steps
                self.timesteps, self.calls = timesteps, 0
                return super().conditions(timesteps, y)

            def run(self, visual, cond):
                out = super().run(visual, cond)
                t = self.timesteps[self.calls].expand(visual.shape[0])
                self.calls += 1
                rec.noisy_calls.append((visual, t, out))
                return out

        generate.BlockStep = Step

    def saw(self, pos, doc, cache):
        self.max_frame = max(self.max_frame, int(pos[..., 0][doc >= 0].max()))
        self.max_cache = max(self.max_cache, 0 if cache is None else len(cache))

    def __call__(self, batch, cache=None, update_cache=False, **kw):
        self.saw(batch.pos, batch.doc, cache)
        out = self.orig(batch, cache=cache, update_cache=update_cache, **kw)
        if bool(batch.noisy.all()):
            self.noisy_calls.append((batch.visual, batch.t[:, 0], out.pred))
        return out

    def close(self):
        self.model.forward = self.orig
        generate.BlockStep = self.orig_step


def blocks(gen, seg, sampling, **kw) -> list[torch.Tensor]:
    return [ev.tokens for ev in gen.stream_visual(seg, sampling, **kw) if isinstance(ev, BlockEvent)]


@torch.no_grad()
def test_window_keeps_positions_trained_and_cache_bounded(model):
    s = VisualSampling("dpm++", steps=2, cfg_scale=1.5)
    window = TRAINED // FPB - 1
    rec = Recorder(model)
    try:
        out = blocks(Generator(model, 2, seed=0), Video(4 * TRAINED, G, G, FPB), s,
                     class_labels=torch.tensor([1, 2]), window=window, collect=False)
    finally:
        rec.close()
    assert len(out) == 4 * TRAINED
    assert rec.max_frame == TRAINED - 1  # never a frame position the model was not trained on
    assert rec.max_cache == window * N  # the cache never holds more than the window

    rec = Recorder(model)
    try:  # without a window, positions and the cache grow with the video
        blocks(Generator(model, 2, seed=0), Video(4 * TRAINED, G, G, FPB), s, class_labels=torch.tensor([1, 2]))
    finally:
        rec.close()
    assert rec.max_frame == 4 * TRAINED - 1 and rec.max_cache == (4 * TRAINED - 1) * N


@torch.no_grad()
def test_window_is_plain_generation_until_it_slides(model):
    s = VisualSampling("dpm++", steps=2, cfg_scale=1.5)
    y = torch.tensor([0, 4])
    seg = Video(3 * TRAINED, G, G, FPB)
    plain = blocks(Generator(model, 2, seed=3), seg, s, class_labels=y)
    windowed = blocks(Generator(model, 2, seed=3), seg, s, class_labels=y, window=3)
    for b in range(4):  # blocks 0..window see the same context at the same positions
        assert torch.equal(windowed[b], plain[b])
    assert not torch.allclose(windowed[-1], plain[-1])
    wide = blocks(Generator(model, 2, seed=3), seg, s, class_labels=y, window=len(plain))
    assert all(torch.equal(a, b) for a, b in zip(wide, plain))  # a window that never fills changes nothing


@torch.no_grad()
def test_sliding_step_equals_a_trained_length_forward(model):
    """After the window slid, block b's ε is exactly a forward of a (window+1)-block video whose clean blocks are
    the last `window` generated blocks and whose noisy block is block b at its current x_t."""
    steps, window = 3, 2
    seg = Video(7, G, G, FPB)
    rec = Recorder(model)
    try:
        out = blocks(Generator(model, 1, seed=1), seg, VisualSampling("ddim", steps=steps), class_labels=torch.tensor([3]),
                     window=window)
    finally:
        rec.close()
    b = 6
    visual, ts, eps = rec.noisy_calls[b * steps + 1]  # second step of block 6
    x_t, t = visual[0], ts[0]
    lay = Layout([Video((window + 1) * FPB, G, G, FPB, noisy=[window])])
    ex = Example(lay, torch.cat([out[b - 2][0], out[b - 1][0], x_t]), 3)
    ref = collate([ex], C)
    ref.t[:] = t
    want = model(ref).pred[0, torch.from_numpy(lay.noisy)]
    torch.testing.assert_close(eps[0], want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_windowed_cache_matches_recompute(model):
    s = VisualSampling("dpm++", steps=2, cfg_scale=2.5)
    seg, y = Video(10, G, G, FPB), torch.tensor([2, 3])
    cached = blocks(Generator(model, 2, seed=4), seg, s, class_labels=y, window=2)
    recomputed = blocks(Generator(model, 2, seed=4, use_cache=False), seg, s, class_labels=y, window=2)
    torch.testing.assert_close(torch.cat(cached, 1), torch.cat(recomputed, 1), atol=2e-4, rtol=1e-4)


@torch.no_grad()
def test_collect_and_argument_checks(model):
    s = VisualSampling("ddim", steps=1)
    evs = list(Generator(model, 1, seed=0).stream_visual(Video(6, G, G, FPB), s, window=2))
    assert isinstance(evs[-1], VisualEvent) and evs[-1].tokens.shape == (1, 6 * N, C)
    torch.testing.assert_close(evs[-1].tokens, torch.cat([e.tokens for e in evs[:-1]], 1))
    assert not any(isinstance(e, VisualEvent) for e in Generator(model, 1).stream_visual(Video(6, G, G, FPB), s,
                                                                                           window=2, collect=False))
    with pytest.raises(ValueError, match="Video segments only"):
        list(Generator(model, 1).stream_visual(Image(2, 2, 1, 1), s, window=1))
    with pytest.raises(ValueError, match="window=0 is invalid"):
        list(Generator(model, 1).stream_visual(Video(4, G, G, 1), s, window=0))
    with pytest.raises(ValueError, match="not both"):
        list(Generator(model, 1).stream_visual(Video(4, G, G, 1), s, window=1, max_context=4))


@torch.no_grad()
def test_task_generates_four_times_the_trained_length(model):
    visual = VisualConfig(channels=2, image_size=4, patch_size=2, block_h=2, block_w=2, frames=TRAINED,
                          frames_per_block=FPB)
    assert visual.token_dim == C
    task = ClassToVideo(visual)
    assert task.context_window(TRAINED, None) is None and task.context_window(4 * TRAINED, None) == TRAINED // FPB - 1
    rec = Recorder(model)
    try:
        chunks = list(task.stream(model, [1], VisualSampling("dpm++", steps=2, cfg_scale=2.5), frames=4 * TRAINED))
    finally:
        rec.close()
    assert len(chunks) == 4 * TRAINED // FPB and chunks[0].shape == (1, FPB, 2, 4, 4)
    assert rec.max_frame == TRAINED - 1
