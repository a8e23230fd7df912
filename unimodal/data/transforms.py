"""PIL images <-> model tensors in [-1, 1]; the text strings of a dataset."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

_MODES = {1: "L", 3: "RGB"}


def to_tensor_images(
    images: Sequence[Image.Image],
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    pad_to: int | tuple[int, int] | None = None,
    pad_value: int = 0,
) -> torch.Tensor:
    """Stack PIL images into a float batch in [-1, 1].

    Args:
        images: PIL images of one size (after `size`), any mode.
        size: resize to this (H, W) (an int means square) with bicubic filtering first.
        channels: 1 (grayscale) or 3 (RGB); images are converted to that mode.
        pad_to: then pad symmetrically to this (H, W), e.g. 32 for 28x28 Fashion-MNIST
            so 4x4 / 8x8 patches tile it. Odd margins put the extra pixel bottom/right.
        pad_value: pixel value (0..255) of the padding; 0 is Fashion-MNIST's and
            digits' black background.

    Returns:
        (B, channels, H, W) float32 in [-1, 1].
    """
    if channels not in _MODES:
        raise DataError(f"channels must be one of {sorted(_MODES)}, got {channels}")
    if not images:
        raise DataError("to_tensor_images got no images")
    if not 0 <= pad_value <= 255:
        raise DataError(f"pad_value is a pixel value in 0..255, got {pad_value}")
    arrays = []
    for index, im in enumerate(images):
        im = im.convert(_MODES[channels])
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else size
            im = im.resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
        if arrays and arr.shape != arrays[0].shape:
            raise DataError(f"image {index} has size {arr.shape[1:]} but image 0 has {arrays[0].shape[1:]}; pass size=")
        arrays.append(arr)
    batch = np.stack(arrays)  # (B, C, H, W) uint8
    if pad_to is not None:
        ph, pw = (pad_to, pad_to) if isinstance(pad_to, int) else pad_to
        H, W = batch.shape[-2:]
        if ph < H or pw < W:
            raise DataError(f"pad_to={pad_to} is smaller than the images ({H}x{W})")
        top, left = (ph - H) // 2, (pw - W) // 2
        batch = np.pad(batch, ((0, 0), (0, 0), (top, ph - H - top), (left, pw - W - left)), constant_values=pad_value)
    return torch.from_numpy(batch).float().div_(127.5).sub_(1.0)


def fit_image(im: Image.Image, size: int, channels: int = 3) -> Image.Image:
    """The one conversion of an image of any size and mode to a `size` x `size` model input.

    1. Mode: converted to RGB (``channels=3``) or 8-bit gray (``channels=1``) by PIL; an image with
       an alpha channel (RGBA, LA, P with transparency) is first composited over black.
    2. Size: an image that is already `size` x `size` is kept; a square image smaller than that is
       zero-padded to it, centred (Fashion-MNIST 28 -> 32); any other image is resized with bicubic
       filtering so its shorter side is `size`, then centre-cropped to `size` x `size` (the aspect
       ratio is kept, the longer side loses its edges).
    """
    if channels not in _MODES:
        raise DataError(f"channels must be one of {sorted(_MODES)}, got {channels}")
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(back, rgba)
    im = im.convert(_MODES[channels])
    w, h = im.size
    if (w, h) == (size, size):
        return im
    if w == h and w < size:
        canvas = Image.new(im.mode, (size, size), 0)
        canvas.paste(im, ((size - w) // 2, (size - h) // 2))
        return canvas
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """Inverse of `to_tensor_images` (without the resize/pad): (B, C, H, W) in [-1, 1] -> PIL images.

    Values are clamped to [-1, 1] and rounded to the nearest 8-bit level.
    """
    if images.ndim != 4 or images.shape[1] not in _MODES:
        raise DataError(f"expected (B, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(p[0] if p.shape[0] == 1 else p.transpose(1, 2, 0)) for p in pixels]


def dataset_texts(ds: Any) -> Iterator[str]:
    """Every string of a dataset's text columns (str or list-of-str), e.g. captions, questions, answers."""
    for col in ds.column_names:
        if col == "image":
            continue
        values = ds[col]
        first = values[0] if len(values) else None
        if isinstance(first, str):
            yield from (v for v in values if v)
        elif isinstance(first, list) and (not first or isinstance(first[0], str)):
            for row in values:
                yield from (v for v in row if v)
        elif isinstance(first, list) and isinstance(first[0], dict):  # conversation turns: {role, text}
            for row in values:
                yield from (t["text"] for t in row if t.get("text"))
