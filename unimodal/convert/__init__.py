"""Converters from released checkpoints of other code bases into unimodal checkpoints.

The names are imported on first use, so that registering the ``unimodal convert``
subcommand does not pay for torch and diffusers on every CLI call.
"""

from __future__ import annotations

from typing import Any

__all__ = ["convert_acdit", "read_release_checkpoint", "release_configs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import acdit

        return getattr(acdit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
