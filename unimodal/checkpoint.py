"""Checkpoints: safetensors weights + the resolved config, written atomically.

A checkpoint directory holds::

    model.safetensors   weights of the model
    ema.safetensors     EMA weights (optional; used by default for sampling and eval)
    config.yaml         resolved configs: model, visual, schedule, plus `extra` (tasks, training)
    meta.json           step, versions, free-form metadata
    tokenizer/          the text tokenizer (optional)
    adapter.safetensors LoRA adapter tensors (only with `lora` in config.yaml; ema_adapter.safetensors for the EMA)

Writing goes to a temporary sibling directory that is renamed into place, so a
crash never leaves a half-written checkpoint. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .atomic import atomic_directory
from .config import ModelConfig, VisualConfig
from .errors import CheckpointError, check_path  # re-exported

MODEL_FILE, EMA_FILE, CONFIG_FILE, META_FILE, TOKENIZER_DIR = (
    "model.safetensors", "ema.safetensors", "config.yaml", "meta.json", "tokenizer",
)
ADAPTER_FILE, EMA_ADAPTER_FILE = "adapter.safetensors", "ema_adapter.safetensors"




def _state_for_save(model: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = model if isinstance(model, dict) else model.state_dict()
    out, seen = {}, {}
    for k, v in sd.items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel() and seen[ptr][1] == v.shape:  # tied weights are saved once
            continue
        seen[ptr] = (k, v.shape)
        out[k] = v.detach().to("cpu").contiguous()
    return out


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    visual: VisualConfig | None = None,
    schedule: Any | None = None,
    ema: torch.nn.Module | dict[str, torch.Tensor] | None = None,
    tokenizer_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    lora: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically; returns its path.

    A model with LoRA adapters (`unimodal.llm_init.finetune`) is written as plain base
    weights in model.safetensors plus adapter.safetensors, with `lora` (the resolved
    `LoraSpec` as a mapping) recorded in config.yaml so `load_checkpoint` can rebuild it.
    """
    from safetensors.torch import save_file

    from .llm_init.finetune import split_adapter_state

    cfg: ModelConfig = model.cfg  # type: ignore[attr-defined]
    config = {
        "model": cfg.to_dict(),
        "visual": None if visual is None else _asdict(visual),
        "schedule": None if schedule is None else _asdict(schedule),
        **(extra or {}),
    }
    meta = {"unimodal_version": __version__, "torch_version": torch.__version__, "saved_at": time.time(), **(meta or {})}
    weights, adapter = split_adapter_state(_state_for_save(model))
    if adapter and lora is None:
        raise CheckpointError("the model holds LoRA adapters: pass lora=<the LoraSpec as a mapping> to save_checkpoint")
    if lora is not None:
        config["lora"] = dict(lora)

    def write(tmp: Path) -> None:
        save_file(weights, str(tmp / MODEL_FILE))
        if adapter:
            save_file(adapter, str(tmp / ADAPTER_FILE))
        if ema is not None:
            ema_w, ema_a = split_adapter_state(_state_for_save(ema))
            save_file(ema_w, str(tmp / EMA_FILE))
            if ema_a:
                save_file(ema_a, str(tmp / EMA_ADAPTER_FILE))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / TOKENIZER_DIR)

    return atomic_directory(Path(path), write)


def _asdict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    import dataclasses

    return dataclasses.asdict(obj)


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    model: torch.nn.Module
    config: dict[str, Any]
    meta: dict[str, Any]
    visual: VisualConfig | None = None
    used_ema: bool = False
    tokenizer_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def schedule(self) -> Any:
        """The noise schedule the model was trained with (`ScheduleConfig`; ACDiT's defaults if not recorded)."""
        from .diffusion.schedule import ScheduleConfig

        cfg = self.config.get("schedule")
        return ScheduleConfig(**cfg) if cfg else ScheduleConfig()


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a truncated or foreign file is a CheckpointError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"cannot read weights file {str(file)!r}: {type(e).__name__}: {e}") from None


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], ignore: set[str] = frozenset()) -> str | None:
    """Every missing, unexpected and mis-shaped key of `state` against `own`, as one message (None: it fits)."""
    missing = sorted(set(own) - set(state) - set(ignore))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
              for k in sorted(state) if k in own and state[k].shape != own[k].shape]

    def listed(keys: list[str], n: int = 10) -> str:
        return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listed(unexpected)}")
    if shapes:
        parts.append(f"wrong shapes: {'; '.join(shapes[:5])}")
    return "; ".join(parts) or None


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, raising one error that lists missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    tied = {k for k in own if k == "lm_head.weight" and getattr(model.cfg, "tie_embeddings", False)}
    problem = state_mismatch(own, state, tied)
    if problem:
        raise CheckpointError(f"{source} does not fit the model: {problem}")
    model.load_state_dict(state, strict=False)


def read_state(path: str | Path, ema: bool = False, lora: bool | None = None) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint directory (EMA when `ema`), with its LoRA adapters joined in under
    their live names (`X.base_layer.weight`, `X.lora_A.default.weight`) when it has them.

    Args:
        lora: whether the checkpoint has adapters (None: read config.yaml).
    """
    from .llm_init.finetune import join_adapter_state

    path = Path(path)
    if lora is None:
        lora = bool((yaml.safe_load((path / CONFIG_FILE).read_text()) or {}).get("lora"))
    state = read_weights(path / (EMA_FILE if ema else MODEL_FILE))
    if not lora:
        return state
    adapter_file = path / (EMA_ADAPTER_FILE if ema else ADAPTER_FILE)
    if not adapter_file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} records LoRA adapters but has no {adapter_file.name}")
    return join_adapter_state(state, read_weights(adapter_file))


def load_checkpoint(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory into a fresh model (EMA weights when present and `use_ema`)."""
    from .model import ACDiT

    path = Path(path)
    check_path(path, "checkpoint directory", kind="dir", cls=CheckpointError)
    for f in (CONFIG_FILE, MODEL_FILE):
        if not (path / f).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} has no {f}: not a unimodal checkpoint (or an interrupted write)")
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        model_cfg = ModelConfig.from_dict(config["model"])
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise CheckpointError(f"{str(path / CONFIG_FILE)!r} is not a valid checkpoint config: {e}") from None
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
    model = ACDiT(model_cfg)
    ema_file = path / EMA_FILE
    used_ema = use_ema and ema_file.is_file()
    file = ema_file if used_ema else path / MODEL_FILE
    if config.get("lora"):
        from .llm_init.finetune import LoraSpec, add_lora

        add_lora(model, LoraSpec.from_dict(config["lora"]))
    load_state_into(model, read_state(path, ema=used_ema, lora=bool(config.get("lora"))), str(file))
    model.to(device).eval()
    visual = VisualConfig.from_dict(config["visual"]) if config.get("visual") else None
    tok = path / TOKENIZER_DIR
    extra = {k: v for k, v in config.items() if k not in ("model", "visual", "schedule")}
    return Checkpoint(path, model, config, meta, visual, used_ema, tok if tok.is_dir() else None, extra)
