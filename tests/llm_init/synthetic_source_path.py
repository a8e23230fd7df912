"""The trainer tests' synthetic batch, importable from tests/llm_init."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))


def synthetic_batch():
    """One batch of tests/train/synthetic_source.SyntheticDigits with its timesteps set."""
    import torch
    from synthetic_source import SyntheticDigits

    b = SyntheticDigits().batch(0, 0, 1, 2)
    b.t = torch.full_like(b.t, 300)
    return b
