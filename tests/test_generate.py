"""The generation engine: cached runs equal full recomputation; guidance variants agree."""

import dataclasses

import pytest
import torch
from model_helpers import randomize_

from unimodal.batch import Example
from unimodal.errors import ConfigError
from unimodal.generate import (
    BlockEvent,
    Generator,
    TextSampling,
    VisualEvent,
    VisualSampling,
    decode_text_events,
    sample_next,
)
from unimodal.layout import Image, Layout, Text, Video
from unimodal.model import create_model

C = 12


def make_model(**kw):
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=5, **kw), std=0.03).eval()


@pytest.fixture(scope="module", params=[{}, {"text_condition": True}, {"gate_init": "one"}],
                ids=["plain", "text_condition", "gate_one"])
def model(request):
    """Every engine test runs on a plain model, one with the pooled-text condition (`text_condition`) and one
    whose noisy gates are 1 + the modulation (`gate_init: one`)."""
    return make_model(**request.param)


def prompts():
    vis = torch.randn(4, C, generator=torch.Generator().manual_seed(0))
    img = Example(Layout([Text([1]), Image(2, 2, 1, 2, noisy=False), Text([7, 8])]), vis)
    return [Example(Layout([Text([1, 5, 6, 7, 8, 9])])), Example(Layout([Text([1, 9])])), img]


def run(model, use_cache, text, visual, segment, class_labels=None, uncond=None, seed=0):
    g = Generator(model, 3, use_cache=use_cache, seed=seed)
    g.prefill(prompts(), uncond=uncond)
    toks = decode_text_events(list(g.stream_text(text)), 3)
    img = g.generate_visual(segment, visual, class_labels=class_labels)
    g.feed_text(torch.tensor([4, 4, 4]))
    more = decode_text_events(list(g.stream_text(text)), 3)
    return toks, img, more


@pytest.mark.parametrize(
    "text",
    [TextSampling(8, temperature=0.0), TextSampling(8, temperature=1.0, top_k=10, top_p=0.9, stop_tokens=(2, 11))],
)
def test_cached_equals_recompute_text_image_text_with_class_cfg(model, text):
    seg, vis = Image(4, 4, 2, 2), VisualSampling("dpm++", steps=4, cfg_scale=1.5)
    labels = torch.tensor([0, 3, 4])
    a = run(model, True, text, vis, seg, labels)
    b = run(model, False, text, vis, seg, labels)
    assert a[0] == b[0] and a[2] == b[2]
    torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=1e-4)
    assert a[1].abs().mean() > 0.1


def test_cached_equals_recompute_with_text_prompt_cfg(model):
    uncond = [Example(Layout([Text([1])]))] * 3
    seg, vis = Image(2, 4, 2, 2), VisualSampling("ddim", steps=3, cfg_scale=2.0)
    a = run(model, True, TextSampling(3), vis, seg, uncond=uncond)
    b = run(model, False, TextSampling(3), vis, seg, uncond=uncond)
    torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=1e-4)
    # guidance matters: scale 1 gives another image
    c = run(model, True, TextSampling(3), VisualSampling("ddim", steps=3, cfg_scale=1.0), seg, uncond=uncond)
    assert not torch.allclose(a[1], c[1])


def test_shared_cache_class_cfg_equals_doubled_batch(model):
    seg, vis = Image(4, 4, 2, 2), VisualSampling("dpm++", steps=4, cfg_scale=3.0)
    labels = torch.tensor([1, 2, 0])
    g = Generator(model, 3, seed=5)
    g.prefill(prompts())
    shared = g.generate_visual(seg, vis, class_labels=labels)
    g2 = Generator(model, 3, seed=5)
    g2.prefill(prompts(), uncond=prompts())  # the unconditional branch as its own copy of the context
    doubled = g2.generate_visual(seg, vis, class_labels=labels)
    torch.testing.assert_close(shared, doubled, atol=1e-4, rtol=1e-4)


def test_batch_rows_equal_single_runs(model):
    ps = prompts()
    g = Generator(model, 3)
    g.prefill(ps)
    batch = decode_text_events(list(g.stream_text(TextSampling(6))), 3)
    for i, p in enumerate(ps):
        g1 = Generator(model, 1)
        g1.prefill([p])
        assert decode_text_events(list(g1.stream_text(TextSampling(6))), 1)[0] == batch[i]


@pytest.mark.parametrize("segment", [Image(2, 2, 1, 1), Image(2, 4, 2, 4), Video(4, 2, 2, 2)])
def test_block_size_extremes_and_video_stream_blocks_in_order(model, segment):
    g = Generator(model, 3, seed=1)
    g.prefill(prompts())
    events = list(g.stream_visual(segment, VisualSampling("ddpm", steps=3), class_labels=torch.tensor([0, 1, 2])))
    blocks = [e for e in events if isinstance(e, BlockEvent)]
    lay = Layout([segment])
    assert [e.index for e in blocks] == list(range(len(lay.blocks)))
    final = events[-1]
    assert isinstance(final, VisualEvent) and final.tokens.shape == (3, segment.num_tokens, C)
    for e, blk in zip(blocks, lay.blocks):  # streamed blocks land at their raster positions
        assert torch.equal(final.tokens[:, torch.from_numpy(blk.tokens)], e.tokens)
    g2 = Generator(model, 3, seed=1)
    g2.prefill(prompts())
    again = g2.generate_visual(segment, VisualSampling("ddpm", steps=3), class_labels=torch.tensor([0, 1, 2]))
    assert torch.equal(again, final.tokens), "not deterministic under a seed"


def test_interleaved_text_image_text(model):
    # force <boi> (id 3) as the most likely token from the start by biasing the LM head
    m = model
    with torch.no_grad():
        saved = m.lm_head.weight.clone()
        m.lm_head.weight[3] += 3.0 * m.text_norm.weight.sign()
    try:
        g = Generator(m, 3, seed=2)
        g.prefill(prompts())
        events = list(
            g.stream_interleaved(TextSampling(4), VisualSampling("ddim", steps=2), Image(2, 2, 1, 2), max_images=1)
        )
    finally:
        with torch.no_grad():
            m.lm_head.weight.copy_(saved)
    kinds = [type(e).__name__ for e in events]
    assert "VisualEvent" in kinds
    i = kinds.index("VisualEvent")
    assert kinds[i - 2 : i] == ["BlockEvent", "BlockEvent"] and kinds[i + 1] == "TokenEvent"
    boi_rows = torch.zeros(3, dtype=torch.bool)
    for e in events[:i]:
        if type(e).__name__ == "TokenEvent":
            boi_rows |= e.active & (e.tokens == 3)
    assert boi_rows.any()
    assert torch.equal(events[i].rows, boi_rows)  # exactly the rows that asked for an image got one
    eoi = events[i + 1]
    assert torch.equal(eoi.active, boi_rows) and (eoi.tokens[boi_rows] == 4).all()  # <eoi> forced after it


def test_sample_next_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    k = sample_next(logits, TextSampling(temperature=1.0, top_k=2), g)
    assert set(k.tolist()) == {2, 3}
    p = sample_next(logits, TextSampling(temperature=1.0, top_p=0.5), g)
    assert set(p.tolist()) == {3}  # softmax mass of the top token is 0.64 >= 0.5
    assert sample_next(logits[:1], TextSampling(temperature=0.0), g).item() == 3


def test_bad_class_label_and_missing_guidance_context(model):
    g = Generator(model, 1)
    with pytest.raises(ValueError, match="valid are 0..4"):
        list(g.stream_visual(Image(2, 2, 1, 1), VisualSampling(steps=2), class_labels=torch.tensor([7])))
    with pytest.raises(ValueError, match="unconditional context"):
        list(g.stream_visual(Image(2, 2, 1, 1), VisualSampling(steps=2, cfg_scale=2.0)))


@torch.no_grad()
def test_max_context_keeps_the_last_tokens_of_the_cache(model):
    """After each finished block the cache holds at most max_context tokens, namely the newest ones
    (after block 0 the same keys as an unlimited run, less the oldest); a budget above the whole
    context changes nothing; a small one changes the later blocks (their context was cut)."""
    seg, vis = Image(4, 4, 2, 2), VisualSampling("ddim", steps=2)  # 4 blocks of 4 tokens
    labels = torch.tensor([0, 3, 4])

    def blocks(max_context):
        g = Generator(model, 3, seed=4)
        g.prefill(prompts())
        start = len(g.ctx.cache)
        out, sizes, first = [], [], None
        for ev in g.stream_visual(seg, vis, class_labels=labels, max_context=max_context):
            if isinstance(ev, BlockEvent):
                out.append(ev.tokens.clone())
                sizes.append(len(g.ctx.cache))
                if first is None:
                    first = [(k.clone(), v.clone()) for k, v in zip(g.ctx.cache.k, g.ctx.cache.v)]
        return out, sizes, first, start

    full, full_sizes, full_first, start = blocks(None)
    assert full_sizes == [start + 4 * (b + 1) for b in range(4)]
    same, _, _, _ = blocks(start + 16)
    for a, b in zip(full, same):
        assert torch.equal(a, b)
    n = 6
    cut, cut_sizes, cut_first, _ = blocks(n)
    assert cut_sizes == [n] * 4
    for (k, v), (fk, fv) in zip(cut_first, full_first):
        assert torch.equal(k, fk[:, :, -n:]) and torch.equal(v, fv[:, :, -n:])
    assert torch.equal(cut[0], full[0])  # block 0 saw the whole prefill
    assert not torch.equal(cut[-1], full[-1])


def test_text_sampling_and_prefill_validation(model):
    from unimodal.config import ConfigError

    for kw, pattern in ((dict(temperature=-0.1), r"temperature=-0.1 is invalid: must be >= 0"),
                        (dict(top_k=0), r"top_k=0 is invalid: must be >= 1 or None"),
                        (dict(top_p=0.0), r"top_p=0.0 is invalid: must be in \(0, 1\]"),
                        (dict(top_p=1.5), r"top_p=1.5 is invalid")):
        with pytest.raises(ConfigError, match=pattern):
            TextSampling(8, **kw)
    g = Generator(model, 2)
    with pytest.raises(ValueError, match="prefill got 3 contexts for a batch of 2"):
        g.prefill(prompts())
    noisy = Example(Layout([Text([1]), Image(2, 2, 1, 2)]), torch.zeros(4, C))
    with pytest.raises(ValueError, match="context 1 has noisy blocks"):
        g.prefill([prompts()[0], noisy])


def test_one_noisy_block_fast_path_equals_the_general_forward(model):
    """The denoising step's broadcast modulation (one_noisy_block) gives the gathered path's outputs,
    with a cached past and rows that are padding; a batch of two block slots is refused."""
    from unimodal.errors import ConfigError
    from unimodal.generate import Context, token_batch
    from unimodal.layout import IMAGE, PAD_DOC

    ctx = Context(model, 3, torch.device("cpu"))
    ctx.prefill(prompts())
    g = torch.Generator().manual_seed(3)
    unit = torch.arange(6).repeat(3, 1) + 20
    pos = torch.randint(0, 9, (3, 6, 3), generator=g)
    doc = torch.tensor([0, PAD_DOC, 0])[:, None].expand(-1, 6)
    new = token_batch(unit, pos, doc, visual=torch.randn(3, 6, C, generator=g), noisy=True, modality=IMAGE,
                      t=torch.tensor([5, 500, 999]), y=torch.tensor([1, -1, 4]), token_dim=C)
    slow = ctx.run(new, update=False).pred
    fast = ctx.run(new, update=False, one_noisy_block=True).pred
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert slow.abs().mean() > 0.01
    two = dataclasses.replace(new, t=new.t.repeat(1, 2), y=new.y.repeat(1, 2))
    with pytest.raises(ConfigError, match="one noisy block slot"):
        model(two, cache=ctx.cache, one_noisy_block=True)


@pytest.mark.parametrize("kv_heads,extra", [(None, {}), (1, {"text_condition": True}), (None, {"gate_init": "one"})])
def test_block_step_equals_the_cached_forward_padded_tiled_and_first(kv_heads, extra, monkeypatch):
    """`BlockStep` (the sampler's inner loop) gives `forward(cache=..., one_noisy_block=True)`'s outputs: over a
    cached past read as it is or padded to a larger capacity, tiled for [cond; uncond] rows, with rows that are
    padding, for grouped-query attention, and for a first block with no past at all."""
    from unimodal.generate import Context, token_batch
    from unimodal.layout import IMAGE, PAD_DOC
    from unimodal.model.block_step import BlockStep, capacity_for

    torch.manual_seed(0)
    m = randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=5, **extra,
                                **({"n_kv_head": kv_heads} if kv_heads else {})), std=0.03).eval()
    ctx = Context(m, 3, torch.device("cpu"))
    ctx.prefill(prompts())
    g = torch.Generator().manual_seed(3)
    R = 6  # two guidance branches over the 3-row cache
    unit = torch.arange(6).repeat(R, 1) + 20
    pos = torch.randint(0, 9, (R, 6, 3), generator=g)
    doc = torch.tensor([0, PAD_DOC, 0] * 2)[:, None].expand(-1, 6)
    x, t, y = torch.randn(R, 6, C, generator=g), torch.tensor([5, 500, 999] * 2), torch.tensor([1, -1, 4, -1, -1, -1])
    new = token_batch(unit, pos, doc, visual=x, noisy=True, modality=IMAGE, t=t, y=y, token_dim=C)
    with torch.no_grad():
        want = m(new, cache=ctx.cache, one_noisy_block=True).pred
        assert want.abs().mean() > 0.01
        from unimodal.model import acdit

        default = acdit.STEP_SCORES_MAX
        for padded, scores_max in ((False, default), (True, default), (True, 0)):
            monkeypatch.setattr(acdit, "STEP_SCORES_MAX", scores_max)  # 0: every step through the fused-SDPA path
            step = BlockStep(m, ctx.cache, unit, pos, doc, padded=padded)
            assert step.mask.shape[-1] == (capacity_for(len(ctx.cache)) if padded else len(ctx.cache)) + 6
            torch.testing.assert_close(step(x, t, y), want, atol=1e-5, rtol=1e-5)
        monkeypatch.setattr(acdit, "STEP_SCORES_MAX", default)
        # the sampler's way: every step's modulation built at once (`conditions`), then one `run` per step
        ts = torch.tensor([999, 500, 5])
        table = step.conditions(ts, y)
        assert table.shape[:2] == (3, R)
        for i in (0, 2):
            new.t = ts[i].repeat(R, 1)
            torch.testing.assert_close(step.run(x, table[i]), m(new, cache=ctx.cache, one_noisy_block=True).pred,
                                       atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="not a multiple of the cache batch 3"):
            BlockStep(m, ctx.cache, unit[:4], pos[:4], doc[:4])
        first = token_batch(unit[:3], pos[:3], doc[:3], visual=x[:3], noisy=True, modality=IMAGE, t=t[:3], y=y[:3],
                            token_dim=C)
        for scores_max in (default, 0):  # no past, written out and through fused SDPA
            monkeypatch.setattr(acdit, "STEP_SCORES_MAX", scores_max)
            torch.testing.assert_close(BlockStep(m, None, unit[:3], pos[:3], doc[:3])(x[:3], t[:3], y[:3]),
                                       m(first, one_noisy_block=True).pred, atol=1e-5, rtol=1e-5)
    assert capacity_for(0) == 0 and capacity_for(1) == capacity_for(64) == 64 and capacity_for(65) == 128


def test_compiled_sampling_equals_eager_and_compiles_once_per_capacity():
    """`Generator(compile=True)`: the same images as the eager engine, and blocks whose caches differ in length
    but share a capacity reuse one compiled step (no compile per block). The model has every condition term
    (class and pooled text), so the compiled step covers the fullest signature."""
    import torch._dynamo

    from unimodal.generate import Generator, VisualSampling

    model = make_model(text_condition=True)
    s = VisualSampling("dpm++", steps=3, cfg_scale=2.0)
    seg = Image(2, 4, 1, 2)  # 4 blocks: caches of 2, 4, 6 tokens after the first
    y = torch.tensor([1, 3])
    eager = Generator(model, 2, seed=5).generate_visual(seg, s, class_labels=y)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = Generator(model, 2, seed=5, compile=True).generate_visual(seg, s, class_labels=y)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    # one graph without a past (the first block), one for the three blocks that read a padded 64-slot past
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    with pytest.raises(ConfigError, match="use_cache=False"):
        Generator(model, 2, use_cache=False, compile=True)
