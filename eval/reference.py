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


# --- a reference batch of the ADM evaluator (guided-diffusion/evaluations) ----------------------------
NPZ_EXPECTED = (
    "'arr_0' (N, H, W, 3) uint8 images (NHWC) and/or precomputed 'mu' (D,) and 'sigma' (D, D) "
    "(the layout of the ADM evaluator's reference batches, e.g. VIRTUAL_imagenet256_labeled.npz)"
)


def npz_arrays(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each array in an ADM-style reference `.npz`, read from the headers only; checked.

    Raises:
        EvalError: the file is missing, not an .npz, or lacks the arrays the ADM layout has
            (images `arr_0`, or both `mu` and `sigma`), naming the file and the arrays expected.
    """
    import zipfile

    from .errors import EvalError

    path = Path(path)
    where = f"reference npz {str(path)!r}"
    if not path.is_file():
        raise EvalError(f"{where} does not exist; expected a file with {NPZ_EXPECTED}")
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)  # the header only: no array is loaded
                found[name[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise EvalError(f"{where} is not a readable .npz ({type(e).__name__}: {e}); expected {NPZ_EXPECTED}") from None
    has_stats = "mu" in found or "sigma" in found
    if "arr_0" not in found and not has_stats:
        raise EvalError(f"{where} holds {sorted(found) or 'no arrays'}; expected {NPZ_EXPECTED}")
    if has_stats:
        if "mu" not in found or "sigma" not in found:
            raise EvalError(f"{where} holds {sorted(found)}: 'mu' and 'sigma' come together; expected {NPZ_EXPECTED}")
        (mu, _), (sigma, _) = found["mu"], found["sigma"]
        if len(mu) != 1 or sigma != (mu[0], mu[0]):
            raise EvalError(f"{where}: 'mu' {mu} and 'sigma' {sigma} are not (D,) and (D, D); expected {NPZ_EXPECTED}")
    if "arr_0" in found:
        shape, dtype = found["arr_0"]
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3) or shape[0] == 0:
            raise EvalError(f"{where}: 'arr_0' is {dtype} {shape}; expected {NPZ_EXPECTED}")
    return found


def npz_reference(
    path: str | Path, extractor: Any, image_size: int, channels: int, need_features: bool, cache_dir: Path | None = None,
    batch: int = 256,
) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """(features or None, (mu, sigma), details) of an ADM-style reference batch.

    The statistics are the file's `mu`/`sigma` when it has them (as the ADM evaluator uses them),
    else the Gaussian statistics of `extractor`'s features of `arr_0`. Features of `arr_0` are
    computed only when needed (precision/recall, or no `mu`/`sigma`), with the images converted
    as the model sees them (`unimodal.data.transforms.fit_image`: size, RGB/gray), and cached
    like `reference_features`, keyed by the file's path, size and mtime.

    Raises:
        EvalError: see `npz_arrays`; also a `mu` whose size differs from the extractor's features.
    """
    from unimodal.data import cache_root

    from .errors import EvalError

    path = Path(path)
    found = npz_arrays(path)
    where = f"reference npz {str(path)!r}"
    has_stats = "mu" in found
    if not has_stats or need_features:
        if "arr_0" not in found:
            raise EvalError(f"{where} holds {sorted(found)}: precision/recall need its images 'arr_0'; expected {NPZ_EXPECTED}")
        st = path.stat()
        blob = json.dumps({"npz": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "image_size": image_size,
                           "channels": channels, "extractor": extractor.name}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        cached = (cache_dir or cache_root() / "eval" / "reference") / f"npz-{path.stem}-{extractor.name}-{digest}.npz"
        if not cached.is_file():
            with np.load(path) as z:
                images = z["arr_0"]
            feats = np.concatenate([extractor(_npz_images(images[s : s + batch], image_size, channels))[0]
                                    for s in range(0, len(images), batch)])
            with atomic_path(cached, suffix=".npz") as tmp:
                np.savez(tmp, features=feats)
        with np.load(cached) as z:
            feats = z["features"]
    else:
        feats = None
    if has_stats:
        with np.load(path) as z:
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
        if feats is not None and feats.shape[1] != len(mu):
            raise EvalError(f"{where}: 'mu' has {len(mu)} dimensions, the {extractor.name} features have {feats.shape[1]} "
                            f"(the ADM statistics are of the standard FID Inception's 2048-d pool features)")
        stats_from = "npz mu/sigma"
    else:
        mu, sigma = gaussian_stats(feats)
        stats_from = f"computed from arr_0 with {extractor.name}"
    n = found["arr_0"][0][0] if "arr_0" in found else None
    details = {"npz": str(path), "arrays": sorted(found), "stats": stats_from, "num_images": n}
    return (None if not need_features else feats), (mu, sigma), details


def _npz_images(images: np.ndarray, image_size: int, channels: int) -> Any:
    """(n, H, W, C) uint8 → (n, channels, S, S) in [-1, 1], converted as the model's inputs are."""
    from PIL import Image

    from unimodal.data.transforms import fit_image, to_tensor_images

    pil = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
    return to_tensor_images([fit_image(im, image_size, channels) for im in pil], channels=channels)
