"""Converters from released checkpoints of other code bases into unimodal checkpoints."""

from .acdit import convert_acdit, read_release_checkpoint, release_configs

__all__ = ["convert_acdit", "read_release_checkpoint", "release_configs"]
