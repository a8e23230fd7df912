"""Helpers shared by tests (a uniquely named module: `conftest` names clash across test folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def run_ranks(worker: Path, args: list[str], out: Path, world: int, timeout: float) -> list[dict]:
    """Start `world` processes of `worker` with the variables torchrun would set (a free port);
    each writes ``out/rank{r}.json``. Returns those results; a failed rank fails with its log."""
    from unimodal.train.distributed import free_port

    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(worker), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
