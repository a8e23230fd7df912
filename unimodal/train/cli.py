"""`unimodal train --config configs/train/NAME.yaml [key=value ...] [--resume auto|DIR | --overwrite]`.

One process by default; `torchrun --nproc_per_node N -m unimodal.cli train ...` (or the
`deepspeed` launcher) runs N. Every failure the user can cause is raised as a
`unimodal.errors.UnimodalError` and printed by `unimodal.cli.main` as one line with its exit
code: 2 (bad config, checkpoint or out_dir), 1 (the run diverged), 130 (Ctrl-C; the newest
checkpoint is kept). An out_dir that already holds a run is continued with `--resume auto`
or replaced with `--overwrite`; a plain run into it is refused (docs/architecture.md, "Run directories").
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the `train` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "train",
        help="train a model on DeepSpeed (1..N processes; launch N with torchrun)",
        description="Train from a YAML config; key=value arguments override its keys (dotted for nested: visual.image_size=32).",
    )
    p.add_argument("--config", required=True, metavar="YAML", help="training config (configs/train/NAME.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. lr=1e-3 steps=500 train.batch_size=16")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", default=None, metavar="auto|DIR",
                      help="continue a run. 'auto': from the newest complete checkpoint under out_dir/checkpoints "
                           "(a fresh start if there is none); DIR: from that checkpoint directory, whose model must "
                           "match the config. Without --resume or --overwrite an out_dir that already holds a run "
                           "is refused")
    mode.add_argument("--overwrite", action="store_true",
                      help="start anew in an out_dir that holds a run: the old run is first moved whole to "
                           "OUT_DIR.old-YYYYmmdd-HHMMSS (nothing is deleted)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig

    cfg = TrainConfig.from_file(args.config, args.overrides)  # ConfigError -> one line from unimodal.cli.main
    from .trainer import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)  # UnimodalError -> one line from unimodal.cli.main
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"trained to step {result.step}; checkpoint: {result.checkpoint}")
    return 0
