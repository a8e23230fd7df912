"""The oneDNN route of fp32 CPU linears (unimodal.model.cpu_gemm, ModelConfig.cpu_linear).

It must be the same function as `F.linear`, forward and backward, eagerly and compiled, and it
must stay out of the way of bf16, autocast and non-CPU tensors.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize_

from unimodal.batch import Example, collate
from unimodal.config import ModelConfig
from unimodal.errors import ConfigError
from unimodal.layout import Image, Layout, Text
from unimodal.model import create_model
from unimodal.model.cpu_gemm import Linear, onednn_available, onednn_linear, set_cpu_linear, takes_onednn

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")


@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_f_linear_values_and_gradients(bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 24, generator=g, requires_grad=True)
    w = torch.randn(40, 24, generator=g, requires_grad=True)
    b = torch.randn(40, generator=g, requires_grad=True) if bias else None
    gy = torch.randn(37, 40, generator=g)
    got = onednn_linear(x, w, b)
    want = F.linear(x, w, b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    inputs = [x, w] + ([b] if bias else [])
    got_grads = torch.autograd.grad(got, inputs, gy)
    want_grads = torch.autograd.grad(want, inputs, gy)
    for name, a, e in zip(("x", "weight", "bias"), got_grads, want_grads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4, msg=lambda s, n=name: f"grad of {n}: {s}")


def test_frozen_weight_gets_no_gradient_and_input_gradient_stays_exact():
    """A frozen weight (a LoRA base) is skipped in backward; the input gradient is unchanged."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 12, generator=g, requires_grad=True)
    w, b = torch.randn(7, 12, generator=g), torch.randn(7, generator=g)
    onednn_linear(x, w, b).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, w, b).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-4)
    assert w.grad is None and b.grad is None


def test_flop_counter_counts_the_route_like_f_linear():
    """FLOP counts (benchmarks' shares of peak, cached-vs-recompute ideals) see the oneDNN GEMM, backward included."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for route in ("aten", "onednn"):
        lin = Linear(24, 40)
        set_cpu_linear(lin, route)
        with FlopCounterMode(display=False) as fc:
            lin(torch.randn(3, 5, 24, requires_grad=True)).sum().backward()
        counts.append(fc.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * 15 * 24 * 40


def test_linear_routes_only_fp32_cpu_outside_autocast(monkeypatch):
    calls = []
    import unimodal.model.cpu_gemm as cg

    real = cg.onednn_linear
    monkeypatch.setattr(cg, "onednn_linear", lambda *a: calls.append(1) or real(*a))
    lin = Linear(8, 6)
    set_cpu_linear(lin, "onednn")
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))  # leading dims kept
    assert len(calls) == 1
    with torch.autocast("cpu", torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16  # autocast's bf16 F.linear, not an fp32 oneDNN GEMM
    assert lin.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16
    assert len(calls) == 1
    assert not takes_onednn(torch.empty(0, 8), torch.empty(6, 8))
    set_cpu_linear(lin, "aten")
    lin.float()(x)
    assert len(calls) == 1


def test_model_routes_equal_on_a_packed_batch():
    """cpu_linear onednn and aten: the same outputs and parameter gradients on packed text+image rows."""
    r, g = random.Random(0), torch.Generator().manual_seed(0)
    rows = []
    for _ in range(3):
        lay = Layout([Text([r.randint(1, 39) for _ in range(3)]), Image(4, 4, 2, 2, noisy=True), Text([5, 6])])
        rows.append([Example(lay, torch.randn(lay.num_visual_tokens, 8, generator=g), 1)])
    batch = collate(rows, 8)
    batch.t = torch.randint(0, 1000, batch.t.shape, generator=g)
    batch = batch.replace(layout_key=None)
    runs = []
    for route in ("aten", "onednn"):
        torch.manual_seed(0)
        m = randomize_(create_model("tiny", token_dim=8, vocab_size=40, num_classes=5, cpu_linear=route))
        assert {x.route for x in m.modules() if isinstance(x, Linear)} == {route}
        out = m(batch)
        loss = out.pred.square().sum() + out.text_logits.square().sum()
        m.zero_grad(set_to_none=True)
        loss.backward()
        runs.append((out, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (o1, g1), (o2, g2) = runs
    torch.testing.assert_close(o2.pred, o1.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o2.text_logits, o1.text_logits, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys()
    rel = {n: float((g2[n] - g1[n]).norm() / g1[n].norm().clamp(min=1e-12)) for n in g1}  # summation order only
    assert max(rel.values()) < 1e-5, rel


def test_compiled_route_is_one_graph_and_equals_eager():
    """torch.compile keeps the custom op as one extern call (no graph break) with the same values and gradients."""
    torch._dynamo.reset()
    lin1, lin2 = Linear(16, 32), Linear(32, 16, bias=False)
    set_cpu_linear(lin1, "onednn")
    set_cpu_linear(lin2, "onednn")

    def f(x):
        return lin2(torch.nn.functional.gelu(lin1(x)))

    x = torch.randn(3, 7, 16)
    counts = torch._dynamo.utils.counters
    counts.clear()
    ys = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        for p in (*lin1.parameters(), *lin2.parameters()):
            p.grad = None
        y = fn(x)
        y.square().sum().backward()
        ys.append((y.detach(), [p.grad.clone() for p in (*lin1.parameters(), *lin2.parameters())]))
    assert counts["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(ys[1][0], ys[0][0], rtol=1e-5, atol=1e-5)
    for a, e in zip(ys[1][1], ys[0][1]):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_cpu_linear_is_validated():
    with pytest.raises(ConfigError, match="cpu_linear='mkl' is invalid: must be one of"):
        ModelConfig(cpu_linear="mkl")
    with pytest.raises(ValueError, match="must be one of"):
        set_cpu_linear(Linear(2, 2), "blas")
