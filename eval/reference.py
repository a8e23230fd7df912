"""Reference features and statistics, computed once per dataset/split/subset/image space/extractor and cached.

Files live under ``<cache>/eval/reference/`` as ``.npz`` (features, mu, sigma),
written to a temporary name and renamed into place (`unimodal.atomic`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from unimodal.atomic import atomic_path

from .data import model_images
from .metrics.fid import gaussian_stats


def reference_features(
    ds: Any, extractor: Any, image_size: int, channels: int, key: dict[str, Any], cache_dir: Path | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(features (M, D), (mu, sigma)) of the images of `ds` as the model sees them.

    `key` must identify the records of `ds` (dataset, split, options, subset size and seed, filters).
    """
    from unimodal.data import cache_root

    blob = json.dumps({**key, "image_size": image_size, "channels": channels, "extractor": extractor.name, "n": len(ds)}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = (cache_dir or cache_root() / "eval" / "reference") / f"{key.get('dataset', 'data')}-{key.get('split', '')}-{extractor.name}-{digest}.npz"
    if not path.is_file():
        feats, _ = extractor(model_images(ds, image_size, channels))
        mu, sigma = gaussian_stats(feats)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, features=feats, mu=mu, sigma=sigma)
    with np.load(path) as z:
        return z["features"], (z["mu"], z["sigma"])
