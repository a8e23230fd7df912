"""What the trainer asks of a recipe's `init`, `freeze` and `lora` keys (unimodal.train.trainer)."""

from __future__ import annotations

from typing import Any

import torch

from ..config import ModelConfig


def recipe_tokenizer(cfg: Any) -> Any:
    """The LLM's tokenizer (with <boi>, <eoi>, <pad>) when the recipe has `init: {llm: DIR}`, else None."""
    if not cfg.init.get("llm"):
        return None
    from .hf import read_llm_config
    from .tokenizer import HFTextTokenizer

    src = read_llm_config(cfg.init["llm"])
    return HFTextTokenizer.from_llm(src.path, int(src.config.get("vocab_size", 0)))[0]


def build_model(cfg: Any, model_cfg: ModelConfig, load_llm: bool = True) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The model of a recipe: ACDiT(model_cfg) (the caller seeds torch), the LLM's weights on the text side
    when `init.llm` and `load_llm`, then `freeze` and `lora`. Returns (model, resolved LoRA spec or None)."""
    from ..checkpoint import load_state_into
    from ..model import ACDiT
    from .finetune import LoraSpec, add_lora, freeze

    model = ACDiT(model_cfg)
    if cfg.init.get("llm") and load_llm:
        from .hf import map_llm_weights, read_llm_config, read_llm_weights

        src = read_llm_config(cfg.init["llm"])
        weights = map_llm_weights(read_llm_weights(src.path), model_cfg, src)
        own = model.state_dict()
        fresh = {k: v for k, v in own.items() if k not in weights and not (model_cfg.tie_embeddings and k == "lm_head.weight")}
        load_state_into(model, {**fresh, **weights}, f"LLM weights from {str(src.path)!r}")
    frozen = freeze(model, list(cfg.freeze)) if cfg.freeze else []
    if not cfg.lora:
        return model, None
    spec = LoraSpec.from_dict(dict(cfg.lora))
    add_lora(model, spec, frozen)
    return model, spec.to_dict()


def fresh_model(model_cfg: ModelConfig, lora: dict[str, Any] | None) -> torch.nn.Module:
    """An ACDiT with the same LoRA wrapping as a run (to load a live state dict into)."""
    from ..model import ACDiT
    from .finetune import LoraSpec, add_lora

    model = ACDiT(model_cfg)
    return add_lora(model, LoraSpec.from_dict(lora)) if lora else model
