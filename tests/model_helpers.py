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


def require_fashion_mnist() -> None:
    """Skip, naming what is missing, when the Fashion-MNIST IDX files are not installed
    (Debian package dataset-fashion-mnist at /usr/share/datasets/fashion-mnist, or $UNIMODAL_FASHION_MNIST)."""
    import pytest

    from unimodal.data import fashion_mnist as fm

    root = fm.data_dir()
    if not root.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed at {root} (Debian package dataset-fashion-mnist, "
                    f"or set ${fm.PATH_ENV})")
