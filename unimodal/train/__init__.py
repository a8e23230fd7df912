"""Training: `TrainConfig`, the DeepSpeed loop `train`, EMA and learning-rate schedules.

DeepSpeed is imported lazily, on the first `train` call, and only from this package.
Errors are `unimodal.errors` classes (`TrainingDiverged` is re-exported here); the run
directory's rules (one writer, no silent overwrite) live in `unimodal.run_dir`.
"""

from .ema import EMA
from .schedules import cosine_lr, lr_at, wsd_lr


def __getattr__(name: str):  # the loop and the config pull in the model, diffusers and DeepSpeed: import on first use
    if name in ("train", "TrainResult", "TrainingDiverged", "BatchSource"):
        from . import trainer

        return getattr(trainer, name)
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EMA", "BatchSource", "TrainConfig", "TrainResult", "TrainingDiverged", "cosine_lr", "lr_at", "train", "wsd_lr"]
