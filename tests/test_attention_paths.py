"""Every attention/forward path equals the dense-mask reference, outputs and gradients.

The reference is the general path: a batch without a layout key (no cached tables, no stream
split), every column kept, dense SCAM mask through SDPA. Against it:

* the keyed path: cached mask/rotary tables, block-broadcast AdaLN on a clean|noisy split, split
  attention (clean rows over clean keys only) and the trimmed last layer (pure visual rows), on
  random image and video layouts;
* the pruned loss (`compute_loss` dropping the columns nothing reads) on random packed
  text/image/video rows;
* the written-out "math" attention, in fp32 (exact) and as the CPU bf16 route of SDPA, and its
  additive-mask form "bias" (what compiled CPU graphs run);
* FlexAttention, where it has a backward (CUDA).
"""

from __future__ import annotations

import random

import pytest
import torch
from model_helpers import randomize_

from unimodal.batch import Example, batch_plan, collate, prune_batch
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.layout import Image, Layout, Text, Video
from unimodal.model import create_model

C = 8


def model(**kw):
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=C, vocab_size=40, num_classes=5, **kw))


def random_segments(r: random.Random, text: bool) -> list:
    segs = []
    for _ in range(r.randint(1, 3)):
        kind = r.choice(["text", "image", "video"] if text else ["image", "video"])
        if kind == "text":
            segs.append(Text([r.randint(1, 39) for _ in range(r.randint(1, 4))], loss=r.random() < 0.7))
        elif kind == "image":
            b = r.choice([1, 2])
            segs.append(Image(2 * b, 2 * b, b, b, noisy=r.choice([True, True, False])))
        else:
            segs.append(Video(2 * r.randint(1, 2), 2, 2, 2, noisy=r.choice([True, False])))
    return segs


def example(lay: Layout, g: torch.Generator) -> Example:
    v = torch.randn(lay.num_visual_tokens, C, generator=g) if lay.num_visual_tokens else None
    return Example(lay, v, int(torch.randint(-1, 5, (1,), generator=g)))


def unkeyed(b):
    return b.replace(layout_key=None)


def grads(m, loss):
    m.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def assert_grads_close(a, b):
    """Equal gradients; a parameter one path never touched (None) must have a zero gradient in the other."""
    assert a, "no gradients"
    for n in a.keys() | b.keys():
        x, y = a.get(n), b.get(n)
        x = torch.zeros_like(y) if x is None else x
        y = torch.zeros_like(x) if y is None else y
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=lambda s, n=n: f"{n}: {s}")


@pytest.mark.parametrize("seed,gate_init", [(s, "zero") for s in range(6)] + [(s, "one") for s in range(3)])
def test_keyed_split_path_equals_reference_on_pure_visual_rows(seed, gate_init):
    """Same layout in every row (a clean|noisy split): cached tables, broadcast AdaLN, trimmed last layer;
    with adaLN-Zero gates and with gates that start open (`gate_init: one`)."""
    r, g = random.Random(seed), torch.Generator().manual_seed(seed)
    m = model(gate_init=gate_init)
    lay = Layout(random_segments(r, text=False))
    if lay.num_noisy_blocks == 0:
        lay = Layout([Image(4, 4, 2, 2)])
    b = collate([example(lay, g) for _ in range(3)], C)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    plan = batch_plan(b, prune=False)
    sizes = {len(blk.tokens) for blk in lay.noisy_spans}
    assert (plan.split is not None) == (len(sizes) == 1)  # blocks of one size: the split path
    ref = m(unkeyed(b), compute_logits=False).pred
    out = m(b, compute_logits=False).pred
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g_ref = grads(m, (m(unkeyed(b), compute_logits=False).pred ** 2).sum())
    g_out = grads(m, (m(b, compute_logits=False).pred ** 2).sum())
    assert_grads_close(g_out, g_ref)


@pytest.mark.parametrize("seed,gate_init", [(s, "zero") for s in range(8)] + [(s, "one") for s in range(3)])
def test_pruned_loss_equals_full_loss_on_random_packed_rows(seed, gate_init):
    """compute_loss with the unread columns dropped == the full dense-mask forward; gradients too."""
    r, g = random.Random(100 + seed), torch.Generator().manual_seed(seed)
    m = model(gate_init=gate_init)
    rows = []
    for _ in range(3):
        docs = [example(Layout(random_segments(r, text=True)), g) for _ in range(r.randint(1, 2))]
        rows.append(docs)
    b = collate(rows, C, seq_len=sum(len(e.layout) for e in max(rows, key=lambda d: sum(len(e.layout) for e in d))) + 3)
    if batch_plan(b).n_noisy == 0 and batch_plan(b).n_text_targets == 0:
        pytest.skip("nothing to train in this draw")
    sched = NoiseSchedule()
    t = torch.randint(0, 1000, b.t.shape, generator=g)
    noise = torch.randn(b.visual.shape, generator=g)
    full = compute_loss(m, unkeyed(b), sched, t=t, noise=noise, prune=False)
    pruned = compute_loss(m, b, sched, t=t, noise=noise, prune=True)
    assert prune_batch(b)[0].unit.shape[1] < b.unit.shape[1]  # padding at least is dropped
    for k in full:
        torch.testing.assert_close(pruned[k], full[k], rtol=1e-5, atol=1e-6)
    g_full = grads(m, compute_loss(m, unkeyed(b), sched, t=t, noise=noise, prune=False)["loss"])
    g_pruned = grads(m, compute_loss(m, b, sched, t=t, noise=noise, prune=True)["loss"])
    assert_grads_close(g_pruned, g_full)


def test_pure_visual_plan_drops_the_last_clean_block_and_splits():
    lay = Layout([Image(8, 8, 4, 4)])
    b = collate([Example(lay, torch.randn(64, C), 1)] * 2, C)
    pb, plan = prune_batch(b)
    assert pb.unit.shape[1] == 128 - 16  # no noisy block reads clean block 3
    assert plan.split == (48, 4, 16) and not plan.clean_outputs


def test_split_attention_reads_clean_keys_for_clean_rows_and_equals_reference(monkeypatch):
    """On a clean|noisy split the clean rows attend the 48 clean keys alone and the noisy rows all 112,
    in every layer but the trimmed last (noisy rows only); loss and gradients equal the reference."""
    import torch.nn.functional as F

    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.shape[2], k.shape[2]))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    m, g = model(), torch.Generator().manual_seed(0)
    lay = Layout([Image(8, 8, 4, 4)])
    b = collate([example(lay, g) for _ in range(2)], C)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    pb, plan = prune_batch(b)
    assert plan.split == (48, 4, 16)
    ref = grads(m, (m(unkeyed(pb), compute_logits=False).pred ** 2).sum())
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    out = grads(m, (m(pb, compute_logits=False).pred ** 2).sum())
    n = m.cfg.n_layer
    assert seen == [(48, 48), (64, 112)] * (n - 1) + [(64, 112)]
    assert_grads_close(out, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA")
def test_flex_equals_dense_sdpa_forward_and_backward():
    r, g = random.Random(7), torch.Generator().manual_seed(7)
    rows = [[example(Layout(random_segments(r, text=True)), g) for _ in range(2)] for _ in range(2)]
    b = collate(rows, C).to("cuda")
    b.t = torch.randint(0, 1000, b.t.shape, device="cuda")
    outs = []
    for backend in ("sdpa", "flex"):
        m = model(attn_backend=backend).cuda()
        o = m(unkeyed(b))
        loss = sum((v.float() ** 2).sum() for v in (o.pred, o.text_logits) if v is not None)
        outs.append((o, grads(m, loss)))
    (o1, g1), (o2, g2) = outs
    torch.testing.assert_close(o2.pred, o1.pred, rtol=2e-3, atol=2e-3)
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=5e-3, atol=5e-3)


def packed_rows(seed: int):
    r, g = random.Random(seed), torch.Generator().manual_seed(seed)
    rows = [[example(Layout(random_segments(r, text=True)), g) for _ in range(2)] for _ in range(3)]
    b = collate(rows, C)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    return unkeyed(b)


def out_loss(o):
    return sum((v.float() ** 2).sum() for v in (o.pred, o.text_logits) if v is not None)


@pytest.mark.parametrize("seed,written", [(s, "math") for s in range(3)] + [(s, "bias") for s in range(3)])
def test_math_attention_equals_dense_sdpa_forward_and_backward(seed, written):
    """attn_backend=math (softmax(q·kᵀ)·v written out, boolean mask) and bias (the same with an additive fp32
    mask, the compiled CPU route) are the SDPA function on random packed text/image/video rows."""
    b = packed_rows(seed)
    runs = []
    for backend in ("sdpa", written):
        m = model(attn_backend=backend)
        o = m(b)
        runs.append((o, grads(m, out_loss(o))))
    (o1, g1), (o2, g2) = runs
    torch.testing.assert_close(o2.pred, o1.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o2.text_logits, o1.text_logits, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys()
    rel = {n: float((g2[n] - g1[n]).norm() / g1[n].norm().clamp(min=1e-12)) for n in g1}  # fp32 summation order only
    assert max(rel.values()) < 1e-5, rel


def test_cpu_bf16_routes_short_attention_through_math_and_stays_close_to_fp32(monkeypatch):
    """bf16 on CPU: SDPA calls with few keys run the written-out attention (its backward is faster there), longer
    ones stay on SDPA; both stay within bf16 rounding of the fp32 forward and gradients."""
    import unimodal.model.acdit as A

    b = packed_rows(11)
    ref = model()
    o_ref = ref(b)
    g_ref = grads(ref, out_loss(o_ref))
    calls = []
    real = A.math_attention
    monkeypatch.setattr(A, "math_attention", lambda *a: calls.append(a[1].shape[2]) or real(*a))
    for limit, routed in ((A.MATH_ATTENTION_MAX_KEYS, True), (0, False)):
        monkeypatch.setattr(A, "MATH_ATTENTION_MAX_KEYS", limit)
        calls.clear()
        m = model().set_precision("bf16")
        o = m(b)
        g = grads(m, out_loss(o))
        assert bool(calls) == routed and all(n <= limit for n in calls)
        torch.testing.assert_close(o.pred, o_ref.pred, rtol=0.05, atol=0.05)
        rel = {n: float((g[n] - g_ref[n]).norm() / g_ref[n].norm().clamp(min=1e-8)) for n in g_ref}
        assert max(rel.values()) < 0.05, rel
