"""Start an ACDiT from a local Hugging Face causal LM (docs/architecture.md, "Backbone").

Supported families (config.json `model_type`):

* ``llama``: Llama-2/3, SmolLM, TinyLlama: SwiGLU, grouped-query attention, RMSNorm,
  rope theta and rope scaling (linear, llama3), optional attention/MLP biases.
* ``qwen2``: Qwen2/2.5: the same plus a bias on q, k and v (none on the output).
* ``qwen3``: Qwen3: per-head QK RMSNorm, head_dim decoupled from the width.

The LLM becomes the text side: token embedding, every block's attention, MLP and norms,
the final norm and the LM head. The ACDiT parts it lacks (x_embedder, t/y embedders, the text conditioner,
AdaLN-Zero modulation, the final layer) keep `ACDiT.initialize_weights`: AdaLN-Zero and
the final layer start at zero and only noisy tokens ever read them, so at step 0 the text
logits are the LLM's. Positions: a text token at index n has (n, n, n) on the three mRoPE
axes, and `rope_freqs: shared` makes mRoPE there exactly the LLM's 1-D RoPE.

Only safetensors are read (model.safetensors or a sharded index); nothing touches the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError, MissingFileError

FAMILIES = ("llama", "qwen2", "qwen3")
SUPPORTED = "Llama family (model_type 'llama': Llama-2/3, SmolLM, TinyLlama), Qwen2/2.5 ('qwen2'), Qwen3 ('qwen3')"
# HF keys with no weight in them (older checkpoints store the rotary table)
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass
class LLMSource:
    """A local causal LM: its directory, config.json as a mapping, and family."""

    path: Path
    config: dict[str, Any]
    family: str


def read_llm_config(path: str | Path) -> LLMSource:
    """Read and check `path/config.json`; raise one error naming what is supported."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"LLM directory {str(path)!r} does not exist (expected config.json + safetensors; supported: {SUPPORTED})")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise MissingFileError(f"LLM directory {str(path)!r} has no config.json (expected a transformers save; supported: {SUPPORTED})")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(cfg_file)!r} is not valid JSON: {e}") from None
    family = cfg.get("model_type")
    if family not in FAMILIES:
        archs = cfg.get("architectures")
        raise ConfigError(
            f"unsupported LLM architecture in {str(path)!r}: model_type={family!r} (architectures={archs}); "
            f"supported: {SUPPORTED}"
        )
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"unsupported LLM in {str(path)!r}: hidden_act={act!r}; the {family} family is supported with silu (SwiGLU)")
    layer_types = cfg.get("layer_types") or []
    if cfg.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
        raise ConfigError(f"unsupported LLM in {str(path)!r}: sliding-window attention layers; only full attention is supported")
    return LLMSource(path, cfg, family)


def rope_settings(cfg: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from either config.json style (transformers 4 `rope_theta`/`rope_scaling`
    or transformers 5 `rope_parameters`)."""
    params = dict(cfg.get("rope_parameters") or {})
    theta = cfg.get("rope_theta") or params.get("rope_theta") or 10000.0
    scaling = cfg.get("rope_scaling") or ({k: v for k, v in params.items() if k != "rope_theta"} or None)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            scaling = None
        elif kind not in ("linear", "llama3"):
            raise ConfigError(f"unsupported rope scaling {kind!r} in the LLM config; supported: none, 'linear', 'llama3'")
        else:
            scaling = {"rope_type": kind, **{k: v for k, v in scaling.items() if k not in ("rope_type", "type")}}
    return float(theta), scaling


def rope_axes_for(head_dim: int) -> tuple[int, int, int]:
    """The (t, h, w) split of the head dim: a quarter to time, the rest halved (64 -> (16, 24, 24))."""
    t = 2 * round(head_dim / 8)
    h = 2 * ((head_dim - t) // 4)
    return t, h, head_dim - t - h


def model_config_from_llm(src: LLMSource, vocab_size: int | None = None, **overrides: Any) -> ModelConfig:
    """The ACDiT shape of an LLM (text side from the LLM; visual-side fields from `overrides`).

    Args:
        src: the LLM.
        vocab_size: embedding rows after the tokenizer's additions (default: the LLM's).
        overrides: ModelConfig fields the LLM does not fix (token_dim, num_classes, freq_dim, attn_backend).
    """
    c = src.config
    try:
        d_model, n_layer, n_head = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["num_attention_heads"])
        ffn = int(c["intermediate_size"])
        llm_vocab = int(c["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"LLM config {str(src.path / 'config.json')!r} lacks a field a {src.family} model needs: {e}") from None
    head_dim = int(c.get("head_dim") or d_model // n_head)
    theta, scaling = rope_settings(c)
    attn_bias = bool(c.get("attention_bias") or False)
    fixed = dict(
        name=f"llm-{src.family}",
        n_layer=n_layer,
        d_model=d_model,
        head_dim=head_dim,
        q_heads=0 if n_head * head_dim == d_model else n_head,
        n_kv_head=int(c.get("num_key_value_heads") or n_head),
        mlp="swiglu",
        ffn_dim=ffn,
        mlp_bias=bool(c.get("mlp_bias") or False),
        qkv_bias=True if src.family == "qwen2" else attn_bias,
        proj_bias=False if src.family == "qwen2" else attn_bias,
        qk_norm=src.family == "qwen3",
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        vocab_size=int(vocab_size or llm_vocab),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        rope_axes=rope_axes_for(head_dim),
        rope_theta=theta,
        rope_freqs="shared",
        rope_scaling=scaling,
        rope_style="mrope",
    )
    clash = sorted(k for k in overrides if k in fixed and k != "name" and overrides[k] != fixed[k])
    if clash:
        raise ConfigError(
            f"model overrides {clash} contradict the LLM in {str(src.path)!r} "
            f"({', '.join(f'{k}={fixed[k]!r}' for k in clash)}); only the visual side may be set"
        )
    return ModelConfig.from_dict({**fixed, **overrides})


def read_llm_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards listed in model.safetensors.index.json."""
    from ..checkpoint import read_weights

    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return read_weights(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        state: dict[str, torch.Tensor] = {}
        for s in shards:
            if not (path / s).is_file():
                raise MissingFileError(f"LLM directory {str(path)!r} lacks the shard {s!r} named in {index.name}")
            state.update(read_weights(path / s))
        return state
    other = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
    raise MissingFileError(
        f"LLM directory {str(path)!r} has no model.safetensors (or sharded index)"
        + (f"; found {other}: only safetensors are read (convert with save_pretrained(safe_serialization=True))" if other else "")
    )


def map_llm_weights(state: dict[str, torch.Tensor], cfg: ModelConfig, src: LLMSource) -> dict[str, torch.Tensor]:
    """HF tensor names -> ACDiT names (the text side only), in fp32; vocab rows padded to cfg.vocab_size.

    New embedding rows (tokens the tokenizer gained) are the mean of the LLM's rows, so their
    logits never exceed the largest existing logit and greedy decoding is unchanged at step 0.
    """
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise CheckpointError(
                f"LLM weights in {str(src.path)!r} lack {name!r}: not a {src.family} checkpoint as config.json says "
                f"(supported: {SUPPORTED})"
            )
        used.add(name)
        return state[name].float()

    def rows(t: torch.Tensor, name: str) -> torch.Tensor:
        n = int(src.config["vocab_size"])
        if t.shape[0] != n:
            raise CheckpointError(f"{name} has {t.shape[0]} rows but config.json says vocab_size={n}")
        extra = cfg.vocab_size - n
        return torch.cat([t, t.mean(0, keepdim=True).expand(extra, -1)]) if extra > 0 else t

    out: dict[str, torch.Tensor] = {"tok_embeddings.weight": rows(take("model.embed_tokens.weight"), "model.embed_tokens.weight")}
    for i in range(cfg.n_layer):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        att = p + "self_attn."
        out[q + "attn.qkv.weight"] = torch.cat([take(att + f"{x}_proj.weight") for x in "qkv"])
        if cfg.qkv_bias:
            out[q + "attn.qkv.bias"] = torch.cat([take(att + f"{x}_proj.bias") for x in "qkv"])
        out[q + "attn.proj.weight"] = take(att + "o_proj.weight")
        if cfg.proj_bias:
            out[q + "attn.proj.bias"] = take(att + "o_proj.bias")
        if cfg.qk_norm:
            out[q + "attn.q_norm.weight"] = take(att + "q_norm.weight")
            out[q + "attn.k_norm.weight"] = take(att + "k_norm.weight")
        mlp = p + "mlp."
        out[q + "mlp.fc1.weight"] = torch.cat([take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")])
        out[q + "mlp.fc2.weight"] = take(mlp + "down_proj.weight")
        if cfg.mlp_bias:
            out[q + "mlp.fc1.bias"] = torch.cat([take(mlp + "gate_proj.bias"), take(mlp + "up_proj.bias")])
            out[q + "mlp.fc2.bias"] = take(mlp + "down_proj.bias")
        out[q + "norm1.weight"] = take(p + "input_layernorm.weight")
        out[q + "norm2.weight"] = take(p + "post_attention_layernorm.weight")
    out["text_norm.weight"] = take("model.norm.weight")
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = rows(take("lm_head.weight"), "lm_head.weight")
    elif "lm_head.weight" in state:
        used.add("lm_head.weight")  # some tied checkpoints store the shared matrix twice
    left = sorted(k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if left:
        raise CheckpointError(
            f"LLM weights in {str(src.path)!r} hold tensors a {src.family} model with {cfg.n_layer} layers does not use: "
            f"{left[:8]}{' ...' if len(left) > 8 else ''}"
        )
    return out


def init_from_llm(path: str | Path, seed: int = 0, **overrides: Any) -> tuple[Any, Any, list[str]]:
    """Build an ACDiT whose text side is the LLM in `path`, and its tokenizer.

    Args:
        path: local directory with config.json, model.safetensors (or shards) and tokenizer.json.
        seed: seeds the ACDiT-only parts' init (the text side is the LLM's).
        overrides: ModelConfig fields of the visual side (token_dim, num_classes, ...).

    Returns:
        (model in fp32, HFTextTokenizer, tokens added to the tokenizer).

    Raises:
        ConfigError / CheckpointError / MissingFileError: unsupported architecture, missing files,
            tokenizer and weights that do not belong together; each names what is supported.
    """
    from ..checkpoint import load_state_into
    from ..model import ACDiT
    from .tokenizer import HFTextTokenizer

    src = read_llm_config(path)
    tok, added = HFTextTokenizer.from_llm(src.path, int(src.config.get("vocab_size", 0)))
    cfg = model_config_from_llm(src, tok.vocab_size, **overrides)
    weights = map_llm_weights(read_llm_weights(src.path), cfg, src)
    torch.manual_seed(seed)
    model = ACDiT(cfg)
    own = model.state_dict()
    fresh = {k: v for k, v in own.items() if k not in weights and not (cfg.tie_embeddings and k == "lm_head.weight")}
    load_state_into(model, {**fresh, **weights}, f"LLM weights from {str(src.path)!r}")
    return model, tok, added
