"""PIL <-> [-1, 1] tensors: exact 8-bit round trip, background padding, channel conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unimodal.data import to_pil_images, to_tensor_images


def _images(n: int, shape: tuple[int, ...]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("shape", [(8, 8), (6, 10, 3)])
def test_round_trip_is_exact(shape: tuple[int, ...]) -> None:
    images = _images(3, shape)
    x = to_tensor_images(images, channels=len(shape) == 3 and 3 or 1)
    assert x.dtype == torch.float32 and x.shape == (3, 1 if len(shape) == 2 else 3, shape[0], shape[1])
    assert x.min() >= -1 and x.max() <= 1
    for a, b in zip(images, to_pil_images(x)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_pad_28_to_32_keeps_pixels_and_fills_background() -> None:
    images = _images(2, (28, 28))
    x = to_tensor_images(images, channels=1, pad_to=32)
    assert x.shape == (2, 1, 32, 32)
    torch.testing.assert_close(x[:, :, 2:30, 2:30], to_tensor_images(images, channels=1))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, :, border] == -1).all()  # pixel 0 = black background
    assert (to_tensor_images(images, channels=1, pad_to=(29, 31), pad_value=255)[:, :, -1, :] == 1).all()
    with pytest.raises(ValueError, match="smaller than the images"):
        to_tensor_images(images, channels=1, pad_to=16)


def test_channels_and_resize() -> None:
    gray = _images(2, (8, 8))
    rgb = to_tensor_images(gray, channels=3)
    assert rgb.shape == (2, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert to_tensor_images(gray, size=(4, 6)).shape == (2, 3, 4, 6)
    with pytest.raises(ValueError, match="image 1 has size"):
        to_tensor_images([gray[0], gray[0].resize((9, 9))])
    with pytest.raises(ValueError, match=r"channels must be one of \[1, 3\], got 2"):
        to_tensor_images(gray, channels=2)
