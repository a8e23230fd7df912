"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX files, no download).

The directory is, in order of precedence: the `path` option, `$UNIMODAL_FASHION_MNIST`,
`/usr/share/datasets/fashion-mnist`. Files may be gzipped (`*.gz`) or not.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import datasets
import numpy as np
from PIL import Image

from unimodal.data.registry import DatasetSource, format_card, register_dataset

from ..errors import DataError, MissingFileError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
PATH_ENV = "UNIMODAL_FASHION_MNIST"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/): all multi-byte values are big-endian
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def _parse_header(f: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = f.read(4)
    if len(magic) != 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (magic bytes {magic.hex()})")
    ndim = magic[3]
    dims = f.read(4 * ndim)
    if len(dims) != 4 * ndim:
        raise DataError(f"{path}: IDX header truncated")
    return np.dtype(_IDX_DTYPES[magic[2]]), struct.unpack(f">{ndim}I", dims)


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of an IDX file, reading only its header."""
    path = Path(path)
    with _open(path) as f:
        return _parse_header(f, path)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a whole IDX file (gzipped or not) into a numpy array in native byte order."""
    path = Path(path)
    with _open(path) as f:
        dtype, shape = _parse_header(f, path)
        data = f.read()
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST directory: `path`, else `$UNIMODAL_FASHION_MNIST`, else the Debian location."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(PATH_ENV) or DEFAULT_DIR)


def split_files(split: str, path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(images, labels) IDX paths of a split; the error lists every missing file."""
    if split not in FILES:
        raise DataError(f"Fashion-MNIST has no split {split!r}; splits: {', '.join(FILES)}")
    root = data_dir(path)
    found, missing = [], []
    for stem in FILES[split]:
        hit = next((root / f"{stem}{ext}" for ext in (".gz", "") if (root / f"{stem}{ext}").is_file()), None)
        (found if hit else missing).append(hit or stem)
    if missing:
        where = "does not exist" if not root.is_dir() else f"holds {sorted(p.name for p in root.iterdir()) or 'nothing'}"
        raise MissingFileError(
            f"Fashion-MNIST {split} files missing in {root}: {', '.join(f'{m}[.gz]' for m in missing)} "
            f"(the directory {where}; install the Debian package dataset-fashion-mnist, or pass path= / set ${PATH_ENV})"
        )
    return found[0], found[1]


def load_arrays(split: str, path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of a split, parsed with numpy."""
    images_path, labels_path = split_files(split, path)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
        raise DataError(
            f"Fashion-MNIST {split}: images {images_path} {images.dtype}{images.shape} do not match "
            f"labels {labels_path} {labels.shape}; expected uint8 (N, H, W) and (N,)"
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise DataError(f"Fashion-MNIST {split}: labels in {labels_path} outside 0..{len(CLASSES) - 1}")
    return images, labels.astype(np.int64)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@register_dataset
class FashionMNIST(DatasetSource):
    """Fashion-MNIST: 28x28 grayscale clothing images in 10 classes."""

    name = "fashion_mnist"
    version = "1"
    splits = ("train", "test")

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=list(CLASSES)),
                "label_name": datasets.Value("string"),
            }
        )

    def resolve_options(self, split: str | None, path: str | os.PathLike | None = None) -> dict[str, Any]:
        assert split is not None
        split_files(split, path)  # fail before any cache directory is made
        return {"path": str(data_dir(path).resolve())}

    def examples(self, split: str | None, view: str, path: str | os.PathLike | None = None) -> Iterator[dict[str, Any]]:
        assert split is not None
        images, labels = load_arrays(split, path)
        for pixels, label in zip(images, labels.tolist()):
            yield {"image": {"bytes": _png(pixels), "path": None}, "label": label, "label_name": CLASSES[label]}

    def card(self) -> str:
        try:
            sizes = {s: read_idx_header(split_files(s)[0])[1] for s in FILES}
            size_line = ", ".join(f"{s} {shape[0]:,}" for s, shape in sizes.items())
            shape = sizes["train"][1:]
        except (FileNotFoundError, ValueError) as err:
            size_line, shape = f"not available here: {err}", (28, 28)
        return format_card(
            "fashion_mnist",
            f"Fashion-MNIST: {shape[0]}x{shape[1]} grayscale images of Zalando articles in 10 classes "
            "(white object on black background).",
            {
                "splits": size_line,
                "records": "image (PIL, mode L), label (int, ClassLabel), label_name",
                "classes": ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)),
                "source": f"Debian package dataset-fashion-mnist, IDX files in {data_dir()} "
                f"(override with path= or ${PATH_ENV}); upstream github.com/zalandoresearch/fashion-mnist",
                "licence": "MIT (Expat), Copyright 2017 Zalando SE",
            },
            ["Nothing is derived: images and labels are the IDX files' contents, in file order."],
        )
