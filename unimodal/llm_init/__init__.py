"""Start a unified model from a pretrained causal LM; freeze parts of it or train LoRA adapters."""

from .hf import FAMILIES, SUPPORTED, init_from_llm, model_config_from_llm, read_llm_config
from .tokenizer import HFTextTokenizer

__all__ = ["FAMILIES", "SUPPORTED", "HFTextTokenizer", "init_from_llm", "model_config_from_llm", "read_llm_config"]
