"""Helpers shared by tests (a uniquely named module: `conftest` names clash across test folders)."""

from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised adaLN and output layers included) random values,
    so invariance tests cannot pass just because some output is identically zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model
