"""`unimodal sample`: images from a checkpoint, by class label or text prompt, as a PNG grid."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .cli_args import device, finite_float, positive_int
from .config import PAPER_SAMPLING
from .errors import CheckpointError, ConfigError


def _parse_labels(text: str, num: int, num_classes: int) -> list[int]:
    try:
        labels = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--class-label {text!r} is invalid: give an integer or a comma-separated list") from None
    for lab in labels:
        if not 0 <= lab < num_classes:
            raise ConfigError(f"--class-label {lab} is out of range: this checkpoint has classes 0..{num_classes - 1}")
    if len(labels) == 1:
        labels = labels * num
    return labels


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written as an image grid, before sampling starts."""
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a directory: give an image file path such as {str(out / 'grid.png')!r}")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out {str(out)!r} has suffix {out.suffix!r}: must be one of {', '.join(IMAGE_SUFFIXES)}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise ConfigError(f"--out {str(out)!r}: directory {str(parent)!r} is not writable")
            break


def run_sample(args: argparse.Namespace) -> list[Path]:
    """Load the checkpoint, generate, decode (VAE if configured) and write the grid."""
    from .checkpoint import load_checkpoint
    from .config import VisualConfig
    from .generate import VisualSampling

    if args.num < 1:
        raise ConfigError(f"--num {args.num} is invalid: must be >= 1")
    if (args.class_label is None) == (args.prompt is None):
        raise ConfigError("give exactly one of --class-label N or --prompt TEXT")
    _check_out(Path(args.out))  # before any work: a bad --out used to fail after the whole run
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = load_checkpoint(args.checkpoint, use_ema=not args.no_ema, device=device)
    model, cfg = ckpt.model, ckpt.model.cfg
    model.set_precision(args.precision)  # bf16: autocast matmuls over the fp32 weights
    if args.compile:  # the engine then compiles each denoising step (BlockStep, static shapes)
        model.compile_forward()
    visual = ckpt.visual
    if visual is None:
        raise ConfigError(f"checkpoint {args.checkpoint!r} has no visual config: it cannot generate images")
    if args.vae:
        visual = VisualConfig.from_dict({**visual.__dict__, "vae_dir": args.vae})
    if ckpt.extra.get("requires_vae") and visual.vae_dir is None:
        raise ConfigError(f"checkpoint {args.checkpoint!r} generates VAE latents: pass --vae DIR (a local AutoencoderKL directory)")
    sampling = VisualSampling(args.sampler, args.steps, args.cfg, schedule=ckpt.schedule)
    from unimodal.tasks import (  # formats live in the task heads
        ClassToImage,
        TextToImage,
        decode_images,
    )

    if args.class_label is not None:
        if cfg.num_classes == 0:
            raise ConfigError(f"checkpoint {args.checkpoint!r} is not class-conditional (num_classes=0): use --prompt")
        labels = _parse_labels(args.class_label, args.num, cfg.num_classes)
        if visual.frames > 1:
            return _sample_video(args, visual, model, labels, sampling)
        tokens = ClassToImage(visual, None).generate_tokens(model, labels, sampling, seed=args.seed)
    else:
        if cfg.vocab_size == 0:
            raise ConfigError(f"checkpoint {args.checkpoint!r} has no text vocabulary (vocab_size=0): use --class-label")
        if ckpt.tokenizer_dir is None:
            raise CheckpointError(
                f"checkpoint {args.checkpoint!r} has a text vocabulary (vocab_size={cfg.vocab_size}) but no tokenizer/ folder: "
                "the checkpoint is incomplete; copy the tokenizer it was trained with into it"
            )
        if not args.prompt.strip():
            raise ConfigError("--prompt is empty")
        from .tokenizers import TextTokenizer

        tok = TextTokenizer.load(ckpt.tokenizer_dir)
        if tok.vocab_size != cfg.vocab_size:
            raise ConfigError(f"tokenizer vocabulary {tok.vocab_size} does not match the model's {cfg.vocab_size}")
        n_tokens = len(tok.encode(args.prompt))
        if n_tokens > args.max_prompt_tokens:
            raise ConfigError(f"--prompt is {n_tokens} tokens long, more than --max-prompt-tokens={args.max_prompt_tokens}")
        tokens = TextToImage(visual, tok).generate_tokens(model, [args.prompt] * args.num, sampling, seed=args.seed)
    images = decode_images(tokens, visual, device)  # pixels, or latents through the local VAE
    from .media import save_image_grid

    return save_image_grid(images, args.out, individual=not args.grid_only)


def _sample_video(args: argparse.Namespace, visual, model, labels: list[int], sampling) -> list[Path]:
    """Class-conditional video: a frame-grid PNG at --out and one GIF (MP4 when possible) per video."""
    from unimodal.tasks import ClassToVideo

    from .media import mp4_available, save_frame_grid, write_video

    videos = ClassToVideo(visual).generate(model, labels, sampling, seed=args.seed, frames=args.frames)  # (N, F, C, H, W)
    out = Path(args.out)
    written = [save_frame_grid(videos, out)]
    if not args.grid_only:
        ext = ".mp4" if mp4_available() else ".gif"
        written += [write_video(v, out.with_name(f"{out.stem}_{i:03d}{ext}")) for i, v in enumerate(videos)]
    return written


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate images from a checkpoint (class label or text prompt)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--class-label", default=None, help="class index, or a comma-separated list (one per image)")
    p.add_argument("--prompt", default=None, help="text prompt (text→image checkpoints)")
    p.add_argument("--num", type=positive_int, default=8, help="number of images (default 8)")
    paper = PAPER_SAMPLING
    p.add_argument("--sampler", default=paper.sampler, help=f"ddpm | ddim | dpm++ | euler (default {paper.sampler}, the paper's)")
    p.add_argument("--steps", type=positive_int, default=paper.steps, help=f"sampler steps per block (default {paper.steps})")
    p.add_argument("--cfg", type=finite_float(0.0, 100.0), default=paper.cfg_image,
                   help=f"classifier-free guidance scale in [0, 100] (default {paper.cfg_image}; 1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="compute precision: fp32 (default), bf16 (bf16 matmuls over fp32 weights) or auto (bf16 where supported)")
    p.add_argument("--compile", action="store_true",
                   help="run each denoising step through torch.compile (static shapes): pays for many images; "
                        "the first blocks compile once (tens of seconds on a CPU)")
    p.add_argument("--out", default="samples/grid.png", help="grid PNG path; individual images go next to it")
    p.add_argument("--grid-only", action="store_true", help="do not write the individual images")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--vae", default=None, help="local AutoencoderKL directory for latent checkpoints")
    p.add_argument("--frames", type=positive_int, default=None, help="video checkpoints: frames to generate (default: as trained)")
    p.add_argument("--device", type=device, default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--max-prompt-tokens", type=positive_int, default=256,
                   help="refuse a --prompt longer than this many tokens (default 256)")

    def run(args: argparse.Namespace) -> int:
        paths = run_sample(args)
        print(f"wrote {paths[0]}" + (f" and {len(paths) - 1} images" if len(paths) > 1 else ""))
        return 0

    p.set_defaults(func=run)
