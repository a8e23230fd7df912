"""Shipped YAML/JSON presets (model/, train/, deepspeed/), installed as package data `unimodal.configs`.

They are found one way, through `importlib.resources`, so a wheel install finds them as an
editable checkout does (docs/architecture.md, "Layout of the repository").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_path(relative: str) -> Path:
    """The path of `relative` (e.g. "deepspeed/zero2.json") under the shipped configs; it may not exist."""
    return Path(str(resources.files(__name__).joinpath(relative)))


def shipped_names(folder: str, suffix: str) -> list[str]:
    """The stems of the shipped files `folder/*<suffix>`, sorted (e.g. ["zero0", ..., "zero3"])."""
    root = shipped_path(folder)
    return sorted(p.name[: -len(suffix)] for p in root.iterdir() if p.name.endswith(suffix)) if root.is_dir() else []
