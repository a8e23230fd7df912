"""`unimodal init` / `unimodal export` on the command line, the saved tokenizer, and bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from llm_helpers import make_llm

from unimodal.checkpoint import load_checkpoint
from unimodal.cli import main
from unimodal.errors import CheckpointError, ConfigError, MissingFileError, UnimodalError
from unimodal.llm_init import init_from_llm
from unimodal.tokenizers.text import TextTokenizer


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen3")
    hf, tok = make_llm("qwen3", d)
    return d, hf, tok


def test_init_cli_writes_a_checkpoint_with_the_llm_tokenizer(qwen3, tmp_path, capsys):
    d, hf, hf_tok = qwen3
    recipe = tmp_path / "r.yaml"
    recipe.write_text("visual: {image_size: 16, patch_size: 4, block_h: 2, block_w: 2}\nmodel_overrides: {num_classes: 4}\n")
    assert main(["init", "--llm", str(d), "--out", str(tmp_path / "c"), "--config", str(recipe)]) == 0
    ck = load_checkpoint(tmp_path / "c")
    assert ck.model.cfg.token_dim == 48 and ck.model.cfg.num_classes == 4 and ck.visual.image_size == 16
    tok = TextTokenizer.load(ck.tokenizer_dir)  # dispatches to the LLM tokenizer
    text = "what color is the shape"
    assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(tok.encode(text) + [tok.eoi_id, tok.eos_id]) == text
    # Qwen has no bos: documents start with eos; <boi>, <eoi> appended after the LLM's tokens
    assert tok.bos_id == tok.eos_id and tok.boi_id >= len(hf_tok) and tok.pad_id == hf_tok.pad_token_id
    ids = torch.tensor([tok.encode(text)])
    ours = ck.model(_text_batch(ids[0].tolist(), 48)).text_logits[0, :, : hf.config.vocab_size]
    torch.testing.assert_close(ours, hf(ids).logits[0], atol=2e-5, rtol=1e-4)
    assert main(["export", "--ckpt", str(tmp_path / "c"), "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "tokenizer" / "unimodal_hf_tokenizer.json").is_file()


def _text_batch(ids, token_dim):
    from unimodal.batch import Example, collate
    from unimodal.layout import Layout, Text

    return collate([Example(Layout([Text(ids)]))], token_dim)


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConfigError, match=r"model_type='gpt2'.*supported: Llama family.*Qwen2.*Qwen3"):
        init_from_llm(d)


def test_missing_files(qwen3, tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        init_from_llm(tmp_path / "nowhere")
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "config.json").write_text((qwen3[0] / "config.json").read_text())
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).write_text((qwen3[0] / f).read_text())
    (d / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(MissingFileError, match="only safetensors"):
        init_from_llm(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match="no tokenizer.json"):
        init_from_llm(d)


def test_tokenizer_that_does_not_match_the_weights(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    make_llm("llama", big)
    make_llm("llama", small, vocab_pad=-200)  # an embedding smaller than the tokenizer
    with pytest.raises(ConfigError, match="tokenizer and weights do not belong together"):
        init_from_llm(small)


def test_weights_that_do_not_match_config(qwen3, tmp_path):
    d = tmp_path / "wrong"
    make_llm("llama", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "qwen3"  # says qwen3, holds llama weights (no q_norm)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lack 'model.layers.0.self_attn.q_norm.weight'"):
        init_from_llm(d)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["init", "--llm", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "supported" in err[0]
    assert issubclass(ConfigError, UnimodalError)
