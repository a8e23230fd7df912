"""The ACDiT backbone, its rotary embedding and KV cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ModelConfig
from .acdit import ACDiT, ModelOutput, RMSNorm
from .kv_cache import KVCache


def create_model(spec: "str | Path | ModelConfig" = "tiny", **overrides: Any) -> ACDiT:
    """An ACDiT from a preset name, a YAML path or a ModelConfig, with field overrides."""
    return ACDiT(ModelConfig.resolve(spec, **overrides))


__all__ = ["ACDiT", "ModelOutput", "KVCache", "RMSNorm", "create_model", "ModelConfig"]
