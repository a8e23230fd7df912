"""The bf16 mixed-precision path: fp32 weights, bf16 matmuls, losses close to fp32's on a short run.

A property with a loose tolerance (bf16 keeps 8 mantissa bits), not a timing.
"""

from __future__ import annotations

import pytest
import torch

from unimodal.batch import Example, collate
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.layout import Image, Layout
from unimodal.model import create_model
from unimodal.model.acdit import bf16_supported, resolve_precision

C = 16


def run(precision: str, steps: int = 12) -> list[float]:
    torch.manual_seed(0)
    m = create_model("tiny", token_dim=C, vocab_size=0, num_classes=4).set_precision(precision)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    lay = Layout([Image(4, 4, 2, 2)])
    base = torch.randn(4, 16, C, generator=g)
    sched, losses = NoiseSchedule(), []
    for s in range(steps):
        b = collate([Example(lay, base[i % 4], i % 4) for i in range(8)], C)
        gs = torch.Generator().manual_seed(s)
        loss = compute_loss(m, b, sched, generator=gs)["loss"]
        assert loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.dtype == torch.float32 for p in m.parameters())  # the master weights stay fp32
    return losses


def test_bf16_losses_track_fp32():
    a, b = run("fp32"), run("bf16")
    for x, y in zip(a, b):
        assert abs(x - y) <= 0.05 * abs(x) + 1e-3, (a, b)
    assert b[-1] < b[0]  # it trains


def test_precision_names():
    from unimodal.config import ConfigError

    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")
    with pytest.raises(ConfigError, match="precision='fp16' is invalid"):
        resolve_precision("fp16")


def test_bf16_kv_cached_forward_is_fp32_and_equals_recompute():
    """Under bf16 a KV-cached forward returns fp32 logits and ε; cached == recompute to bf16 tolerance."""
    from model_helpers import randomize_

    from unimodal.generate import Generator, VisualSampling
    from unimodal.layout import Text
    from unimodal.model import KVCache

    torch.manual_seed(0)
    m = randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=4), std=0.03).eval()
    m.set_precision("bf16")
    vis = torch.randn(4, C, generator=torch.Generator().manual_seed(1))
    ctx = [Example(Layout([Text([1, 5, 6])])), Example(Layout([Text([1]), Image(2, 2, 1, 2, noisy=False), Text([7])]), vis)]

    # one cached forward of a text prompt, then of a noisy block against that cache
    cache = KVCache(m.cfg.n_layer)
    with torch.no_grad():
        out = m(collate([ctx[0]], C), cache=cache, update_cache=True)
        assert out.text_logits.dtype == torch.float32
        b = collate([Example(Layout.continuation([Image(2, 2, 1, 2)], 3, 3), torch.randn(4, C), 2)], C)
        noisy = b.select_columns(b.noisy[0].nonzero()[:, 0])
        out = m(noisy, cache=cache, update_cache=False)
        assert out.pred.dtype == torch.float32 and torch.isfinite(out.pred).all()

    def run(use_cache: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        g = Generator(m, 2, use_cache=use_cache, seed=0)
        g.prefill(ctx)
        logits = [g.logits]
        for tok in (9, 4):
            g.feed_text(torch.tensor([tok, tok]))
            logits.append(g.logits)
        img = g.generate_visual(Image(4, 4, 2, 2), VisualSampling("ddim", steps=3, cfg_scale=1.5), class_labels=torch.tensor([0, 3]))
        return logits, img

    (la, ia), (lb, ib) = run(True), run(False)
    for x, y in zip(la, lb):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y, atol=0.05 * float(y.abs().max()), rtol=0.05)
    assert ia.dtype == torch.float32
    torch.testing.assert_close(ia, ib, atol=0.05 * float(ib.abs().max()), rtol=0.05)
    # and bf16 stays near fp32 on the same run
    m.set_precision("fp32")
    lc, ic = run(True)
    torch.testing.assert_close(ia, ic, atol=0.1 * float(ic.abs().max()), rtol=0.1)
