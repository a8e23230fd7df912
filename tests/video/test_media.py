"""GIF / MP4 / frame-grid writing round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unimodal.media import mp4_available, save_frame_grid, to_uint8_frames, write_gif, write_video


def levels_video(frames: int = 5, size: int = 10) -> torch.Tensor:
    """(F, 1, H, W) in [-1, 1]; frame f has a bright square at column f and a gray background."""
    x = torch.full((frames, 1, size, size), 0.0)  # gray 128 (127.5 rounds to 128)
    for f in range(frames):
        x[f, 0, 2:5, f : f + 3] = 1.0
    return x


def test_uint8_conversion() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2)
    u = to_uint8_frames(x)
    assert u.shape == (1, 2, 2, 3) and u.dtype == np.uint8
    assert u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    with pytest.raises(ValueError, match=r"\(F, C, H, W\) with C = 1 or 3"):
        to_uint8_frames(torch.zeros(2, 2, 4, 4))


def test_gif_round_trip(tmp_path) -> None:
    import imageio.v3 as iio

    x = levels_video()
    path = write_gif(x, tmp_path / "v.gif", fps=5)
    back = iio.imread(path, index=None)  # (F, H, W, 3)
    assert back.shape[:3] == (5, 10, 10)
    np.testing.assert_array_equal(back[..., :3], to_uint8_frames(x))
    props = iio.improps(path, index=None)
    assert props.n_images == 5


@pytest.mark.skipif(not mp4_available(), reason="imageio-ffmpeg is not installed")
def test_mp4_round_trip(tmp_path) -> None:
    import imageio.v2 as iio2

    x = levels_video(frames=6, size=15).repeat(1, 3, 1, 1)  # odd size is padded to 16
    path = write_video(x, tmp_path / "v.mp4", fps=4)
    frames = iio2.mimread(path, format="FFMPEG", memtest=False)
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)
    src = to_uint8_frames(x).astype(np.float64)  # (6, 15, 15, 3)
    err = np.array([[np.abs(f[:15, :15].astype(np.float64) - s).mean() for s in src] for f in frames])
    assert abs(float(frames[0][:15, :15].mean()) - float(src[0].mean())) < 8  # lossy codec
    # each decoded frame is closest to its own source frame (the square moves a column a frame): order kept
    assert err.argmin(axis=1).tolist() == list(range(6)) and err.diagonal().max() < 12
    props = iio2.get_reader(path, format="FFMPEG").get_meta_data()
    assert props["fps"] == pytest.approx(4)


def test_video_suffix_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"suffix '.avi'"):
        write_video(levels_video(), tmp_path / "v.avi")


def test_frame_grid_layout(tmp_path) -> None:
    from PIL import Image

    vids = torch.stack([levels_video(4, 6), -levels_video(4, 6)])  # (2, 4, 1, 6, 6)
    path = save_frame_grid(vids, tmp_path / "grid.png", pad=2)
    g = np.asarray(Image.open(path))
    assert g.shape == (2 * 8 + 2, 4 * 8 + 2, 3)
    for r in range(2):
        for c in range(4):
            tile = g[2 + r * 8 : 8 + r * 8, 2 + c * 8 : 8 + c * 8]
            np.testing.assert_array_equal(tile, to_uint8_frames(vids[r])[c])
    assert (g[:2] == 255).all()  # white gaps
    sub = np.asarray(Image.open(save_frame_grid(vids, tmp_path / "g2.png", max_frames=2)))
    assert sub.shape[1] == 2 * 8 + 2
