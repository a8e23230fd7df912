"""Tiny random causal LMs of each supported family, saved locally (no hub), with a fast tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = ["a red square on a blue circle", "what color is the shape", "the green triangle is small",
          "how many shapes are there", "yes no maybe one two three"] * 4


def make_tokenizer(out: Path, bos: bool, pad: bool):
    """A small BPE fast tokenizer saved by transformers (Llama-like with <s>, Qwen-like without a bos)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = (["<s>"] if bos else []) + ["</s>"] + (["<unk_pad>"] if pad else [])
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    tk.decoder = decoders.ByteLevel()
    kw = dict(eos_token="</s>") | (dict(bos_token="<s>") if bos else {}) | (dict(pad_token="<unk_pad>") if pad else {})
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **kw)
    tok.save_pretrained(str(out))
    return tok


def make_llm(family: str, out: Path, *, tied: bool = False, vocab_pad: int = 8, seed: int = 0, **cfg_kw):
    """Save a 2-layer, width-64 random LLM of `family` ('llama', 'qwen2', 'qwen3') with a tokenizer into `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out, bos=family == "llama", pad=family != "llama")
    vocab = len(tok) + vocab_pad
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=vocab, max_position_embeddings=128, tie_word_embeddings=tied, rms_norm_eps=1e-5,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    if family == "llama":
        cfg = LlamaConfig(**common, **({"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}} | cfg_kw))
        cls = LlamaForCausalLM
    elif family == "qwen2":
        cfg, cls = Qwen2Config(**common, **cfg_kw), Qwen2ForCausalLM
    else:
        cfg, cls = Qwen3Config(**common, head_dim=32, **cfg_kw), Qwen3ForCausalLM  # 4 heads x 32 = 128 != 64
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # larger random weights and non-unit norms so every part matters
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if "norm" in name else 0.02))
    model.save_pretrained(str(out))
    return model, tok
