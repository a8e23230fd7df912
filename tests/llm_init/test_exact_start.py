"""Exact start: an ACDiT initialised from a tiny random LLM of each family gives the LLM's logits
(one prompt, a left-padded batch) and its greedy continuations."""

from __future__ import annotations

import pytest
import torch
from llm_helpers import make_llm

from unimodal.batch import Example, collate
from unimodal.generate import Generator, TextSampling, decode_text_events
from unimodal.layout import Image, Layout, Text
from unimodal.llm_init import init_from_llm

CASES = {
    "llama": dict(family="llama"),
    "llama-tied-gqa-bias-llama3rope": dict(
        family="llama", tied=True, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
    "qwen2": dict(family="qwen2"),
    "qwen3": dict(family="qwen3"),
}
PROMPTS = [[5, 17, 33, 2, 9, 41, 60, 7, 12], [8, 3, 99], [70, 71, 72, 73, 1]]
DIFFS: dict[str, float] = {}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    kw = dict(CASES[request.param])
    d = tmp_path_factory.mktemp(request.param)
    hf, _ = make_llm(kw.pop("family"), d, **kw)
    model, tok, added = init_from_llm(d, token_dim=12, num_classes=3)
    return request.param, hf, model.eval(), tok, added


def ours_logits(model, ids):
    batch = collate([Example(Layout([Text(ids)]))], model.cfg.token_dim)
    with torch.no_grad():
        return model(batch).text_logits[0]


def test_logits_equal_hf(pair):
    name, hf, model, tok, added = pair
    V = hf.config.vocab_size
    worst = 0.0
    for ids in PROMPTS:
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0]
        got = ours_logits(model, ids)
        diff = (got[:, :V] - ref).abs().max().item()
        worst = max(worst, diff)
        assert diff < 1e-4 * max(1.0, ref.abs().max().item()), (name, diff)
    DIFFS[name] = worst
    print(f"\n{name}: max |logit diff| = {worst:.2e}")
    assert set(added) <= {"<boi>", "<eoi>", "<pad>"} and {"<boi>", "<eoi>"} <= set(added)
    assert model.cfg.vocab_size >= V and tok.boi_id != tok.eoi_id


def test_left_padded_batch_and_image_context(pair):
    name, hf, model, tok, _ = pair
    V, L = hf.config.vocab_size, max(map(len, PROMPTS))
    pad = tok.pad_id
    ids = torch.tensor([[pad] * (L - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(L)[None] >= torch.tensor([L - len(p) for p in PROMPTS])[:, None]).long()
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    g = Generator(model, len(PROMPTS), seed=0)
    g.prefill([Example(Layout([Text(p)])) for p in PROMPTS])
    torch.testing.assert_close(g.logits[:, :V], ref[:, -1], atol=2e-5, rtol=1e-4)
    for i, p in enumerate(PROMPTS):  # every real position of the padded batch
        torch.testing.assert_close(ours_logits(model, p)[:, :V], ref[i, L - len(p):], atol=2e-5, rtol=1e-4)
    # a clean image after the text does not change the text before it (causal), whatever the new parts hold
    lay = Layout([Text(PROMPTS[0]), Image(2, 2, 1, 2, noisy=False), Text([4])])
    out = model(collate([Example(lay, torch.randn(4, 12))], 12)).text_logits[0, : len(PROMPTS[0])]
    torch.testing.assert_close(out[:, :V], hf(torch.tensor([PROMPTS[0]])).logits[0], atol=2e-5, rtol=1e-4)


def test_greedy_continuation_equals_hf_generate(pair):
    name, hf, model, tok, _ = pair
    n = 10
    hf.generation_config.eos_token_id = None  # run the full length on both sides
    L = max(map(len, PROMPTS))
    ids = torch.tensor([[tok.pad_id] * (L - len(p)) + p for p in PROMPTS])
    mask = (ids != tok.pad_id).long() if tok.pad_id not in sum(PROMPTS, []) else None
    mask = (torch.arange(L)[None] >= torch.tensor([L - len(p) for p in PROMPTS])[:, None]).long()
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_id)[:, L:]
    g = Generator(model, len(PROMPTS), seed=0)
    g.prefill([Example(Layout([Text(p)])) for p in PROMPTS])
    got = decode_text_events(list(g.stream_text(TextSampling(n, stop_tokens=()))), len(PROMPTS))
    assert got == ref.tolist(), name
