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
