"""`unimodal train --config configs/train/NAME.yaml [key=value ...] [--resume auto|DIR]`.

One process by default; `torchrun --nproc_per_node N -m unimodal.cli train ...` (or the
`deepspeed` launcher) runs N. Bad configuration is one error line naming the key.
"""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--resume", default=None, metavar="auto|DIR",
                   help="'auto': newest complete checkpoint under out_dir/checkpoints (fresh start if none); or a checkpoint dir")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig

    cfg = TrainConfig.from_file(args.config, args.overrides)  # ConfigError -> one line from unimodal.cli.main
    from .trainer import TrainingDiverged, train

    try:
        result = train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"unimodal train: error: {e}", file=sys.stderr)
        return 1
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"trained to step {result.step}; checkpoint: {result.checkpoint}")
    return 0
