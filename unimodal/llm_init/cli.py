"""`unimodal init --llm DIR --out CKPT [--config recipe.yaml]` and `unimodal export --ckpt C --out D [--merge]`."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

# ModelConfig fields a recipe may set on an LLM start: the visual side only (the LLM fixes the rest)
VISUAL_SIDE_FIELDS = ("token_dim", "num_classes", "freq_dim", "attn_backend", "text_condition")


def init_checkpoint(llm: str | Path, out: str | Path, recipe: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write a unimodal checkpoint whose text side (and tokenizer) is the LLM in `llm`.

    With a training recipe, its `visual` (token_dim), `model_overrides` (visual-side fields),
    `diffusion` and `seed` are used; otherwise the VisualConfig defaults and seed 0.
    """
    from ..checkpoint import save_checkpoint
    from ..config import VisualConfig
    from ..diffusion.schedule import ScheduleConfig
    from ..errors import ConfigError, RunDirError
    from .hf import init_from_llm

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"output {str(out)!r} exists and is not empty: pass --overwrite to replace it")
    if recipe is not None:
        from ..train.config import TrainConfig

        cfg = TrainConfig.from_file(recipe)
        visual, schedule, seed = cfg.visual_config(), cfg.schedule_config(), cfg.seed
        extra_fields = {k: v for k, v in cfg.model_overrides.items() if k not in ("token_dim",)}
        bad = sorted(k for k in extra_fields if k not in VISUAL_SIDE_FIELDS)
        if bad:
            raise ConfigError(f"model_overrides {bad} cannot be set on an LLM start: only {list(VISUAL_SIDE_FIELDS)}")
    else:
        visual, schedule, seed, extra_fields = VisualConfig(), ScheduleConfig(), 0, {}
    model, tok, added = init_from_llm(llm, seed=seed, token_dim=visual.token_dim, **extra_fields)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(Path(tmp) / "tokenizer")
        save_checkpoint(out, model, visual=visual, schedule=schedule, tokenizer_dir=Path(tmp) / "tokenizer",
                        extra={"init": {"llm": str(llm), "added_tokens": added}}, meta={"step": 0})
    return out


def export_checkpoint(ckpt: str | Path, out: str | Path, merge: bool = False, overwrite: bool = False) -> Path:
    """Copy a checkpoint to `out`; with `merge`, fold its LoRA adapters into plain weights (model and EMA)."""
    import yaml

    from ..atomic import atomic_directory
    from ..checkpoint import CONFIG_FILE, EMA_FILE, META_FILE, TOKENIZER_DIR, Checkpoint, read_state, save_checkpoint
    from ..config import ModelConfig, VisualConfig
    from ..errors import CheckpointError, RunDirError, check_path
    from ..model import ACDiT
    from .finetune import LoraSpec, add_lora, merge_lora

    ckpt, out = Path(ckpt), Path(out)
    check_path(ckpt, "checkpoint directory", kind="dir", cls=CheckpointError)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"output {str(out)!r} exists and is not empty: pass --overwrite to replace it")
    config = yaml.safe_load((ckpt / CONFIG_FILE).read_text()) or {}
    if not merge or not config.get("lora"):
        return atomic_directory(out, lambda tmp: shutil.copytree(ckpt, tmp, dirs_exist_ok=True))
    model_cfg = ModelConfig.from_dict(config["model"])

    def merged(ema: bool) -> ACDiT:
        from ..checkpoint import load_state_into

        m = add_lora(ACDiT(model_cfg), LoraSpec.from_dict(config["lora"]))
        load_state_into(m, read_state(ckpt, ema=ema, lora=True), str(ckpt))
        return merge_lora(m)

    model = merged(False)
    ema = merged(True).state_dict() if (ckpt / EMA_FILE).is_file() else None
    meta: dict[str, Any] = {}
    if (ckpt / META_FILE).is_file():
        import json

        meta = json.loads((ckpt / META_FILE).read_text())
    extra = {k: v for k, v in config.items() if k not in ("model", "visual", "schedule", "lora")}
    extra["merged_lora"] = config["lora"]
    tok = ckpt / TOKENIZER_DIR
    visual = VisualConfig.from_dict(config["visual"]) if config.get("visual") else None
    schedule = Checkpoint(ckpt, model, config, meta).schedule if config.get("schedule") else None
    return save_checkpoint(out, model, visual=visual, schedule=schedule, ema=ema, tokenizer_dir=tok if tok.is_dir() else None,
                           extra=extra, meta={**meta, "exported_from": str(ckpt)})


def _cmd_init(args: argparse.Namespace) -> int:
    out = init_checkpoint(args.llm, args.out, args.config, args.overwrite)
    print(f"wrote {out} (text side and tokenizer from {args.llm})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.ckpt, args.out, args.merge, args.overwrite)
    print(f"wrote {out}{' (LoRA adapters merged)' if args.merge else ''}")
    return 0


def register_init(sub: Any) -> None:
    """Add `init` to the unimodal subcommands."""
    p = sub.add_parser("init", help="start a unified checkpoint from a local Hugging Face causal LM (Llama, Qwen2, Qwen3)")
    p.add_argument("--llm", required=True, metavar="DIR", help="local LLM directory: config.json, safetensors, tokenizer.json")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint directory to write")
    p.add_argument("--config", default=None, metavar="YAML", help="training recipe: its visual, model_overrides, diffusion, seed")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=_cmd_init)


def register_export(sub: Any) -> None:
    """Add `export` to the unimodal subcommands."""
    p = sub.add_parser("export", help="copy a checkpoint; --merge folds its LoRA adapters into plain weights")
    p.add_argument("--ckpt", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--merge", action="store_true", help="merge LoRA adapters (model and EMA) into the base weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=_cmd_export)
