"""Backbone options (SwiGLU, GQA, biases, QK-norm, shared/scaled RoPE): round trips and cache equality."""

import pytest
import torch
from model_helpers import randomize_

from unimodal.batch import Example
from unimodal.checkpoint import load_checkpoint, save_checkpoint
from unimodal.config import ModelConfig
from unimodal.errors import ConfigError
from unimodal.generate import Generator, TextSampling, VisualSampling, decode_text_events
from unimodal.layout import Image, Layout, Text
from unimodal.model import ACDiT, create_model
from unimodal.model.rope import rope_tables

LLAMA_LIKE = dict(
    d_model=64, head_dim=16, mlp="swiglu", ffn_dim=96, mlp_bias=False, n_kv_head=2, qkv_bias=False,
    proj_bias=False, qk_norm=False, norm_eps=1e-5, rope_axes=(4, 6, 6), rope_freqs="shared", rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8},
    tie_embeddings=True, vocab_size=50, token_dim=12, num_classes=3,
)


def test_options_build_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomize_(create_model("tiny", **LLAMA_LIKE)).eval()
    attn = model.blocks[0].attn
    assert attn.qkv.weight.shape == ((4 + 2 * 2) * 16, 64) and attn.qkv.bias is None and attn.proj.bias is None
    assert model.blocks[0].mlp.fc1.weight.shape == (192, 64) and "blocks.0.attn.q_norm.weight" not in model.state_dict()
    save_checkpoint(tmp_path / "c", model)
    back = load_checkpoint(tmp_path / "c").model
    assert back.cfg == model.cfg
    lay = Layout([Text([1, 5, 6]), Image(2, 2, 1, 2), Text([7])])
    from unimodal.batch import collate

    batch = collate([Example(lay, torch.randn(4, 12), 1)], 12)
    batch.t = torch.tensor([[10, 500]])
    a, b = model(batch), back(batch)
    assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.pred, b.pred)


def test_gqa_cached_generation_equals_recompute():
    torch.manual_seed(0)
    model = randomize_(create_model("tiny", **LLAMA_LIKE), std=0.03).eval()
    outs = []
    for use_cache in (True, False):
        g = Generator(model, 2, use_cache=use_cache, seed=0)
        g.prefill([Example(Layout([Text([1, 5, 6, 7])])), Example(Layout([Text([1, 9])]))])
        toks = decode_text_events(list(g.stream_text(TextSampling(6))), 2)
        img = g.generate_visual(Image(2, 2, 1, 2), VisualSampling("ddim", steps=3))
        outs.append((toks, img))
    assert outs[0][0] == outs[1][0]
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-4, rtol=1e-4)


def test_shared_rope_on_equal_positions_is_1d_rope():
    pos = torch.arange(7)[None, :, None].expand(1, 7, 3)
    cos, sin = rope_tables(pos, (4, 6, 6), 10000.0, "mrope", "shared")
    inv = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    ang = torch.arange(7.0)[:, None] * inv.float()
    torch.testing.assert_close(cos[0], torch.cat([ang, ang], -1).cos())
    torch.testing.assert_close(sin[0], torch.cat([ang, ang], -1).sin())


def test_defaults_unchanged():
    cfg = ModelConfig.from_name("tiny")
    assert (cfg.mlp, cfg.ffn_dim, cfg.n_kv_head, cfg.qk_norm, cfg.rope_freqs, cfg.rope_scaling) == (
        "gelu", 0, 0, True, "axis", None)
    assert ACDiT(cfg).blocks[0].attn.qkv.weight.shape == (384, 128)


@pytest.mark.parametrize("bad, word", [
    (dict(n_kv_head=3), "n_kv_head"), (dict(mlp="relu"), "mlp"), (dict(rope_freqs="x"), "rope_freqs"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2}), "rope_type"),
    (dict(rope_scaling={"rope_type": "linear"}), "factor"),
])
def test_bad_options_are_named(bad, word):
    with pytest.raises(ConfigError, match=word):
        ModelConfig.from_name("tiny", **bad)
