"""The standard FID Inception-v3 (torch-fidelity's port of the TF graph) from a local weight file.

Nothing is downloaded: pass the weight file torch-fidelity would fetch
(``weights-inception-2015-12-05-6726825d.pth``, from its GitHub releases) with
``--inception-weights`` or ``$UNIMODAL_INCEPTION_WEIGHTS``. Only that file gives
FID/IS comparable with published numbers; it is recognised by its SHA-256,
whose first 8 hex digits are the ``6726825d`` in its name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EvalError
from .base import fit_images

WEIGHTS_ENV = "UNIMODAL_INCEPTION_WEIGHTS"
STANDARD_SHA256_PREFIX = "6726825d"
WEIGHTS_HINT = (
    "download weights-inception-2015-12-05-6726825d.pth (torch-fidelity's release of the FID Inception) "
    f"and pass --inception-weights FILE or set ${WEIGHTS_ENV}"
)


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weight file from the argument or $UNIMODAL_INCEPTION_WEIGHTS; EvalError if it is not a file."""
    weights = weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        raise EvalError(f"the Inception extractor needs a local weight file: {WEIGHTS_HINT}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EvalError(f"Inception weight file {str(path)!r} does not exist: {WEIGHTS_HINT}")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class InceptionExtractor:
    """2048-d pool features for FID/precision-recall and 1008-way logits for IS."""

    heads: dict[str, list[str]] = {}

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_weights(weights)
        digest = sha256(path)
        self.comparable = digest.startswith(STANDARD_SHA256_PREFIX)
        self.name = f"inception-v3-compat-{digest[:12]}"
        self.device = device
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(path)).to(device)
        self.info: dict[str, Any] = {"kind": "inception", "name": self.name, "weights_sha256": digest, "standard_weights": self.comparable}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feats, logits = [], []
        for s in range(0, len(images), batch_size):
            x = fit_images(images[s : s + batch_size].float(), 3, None)
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # the network resizes uint8 to 299 itself
            f, lg = self.net(x.to(self.device))
            feats.append(f.cpu().numpy())
            logits.append(lg.cpu().numpy())
        return np.concatenate(feats), {"imagenet": np.concatenate(logits)}
