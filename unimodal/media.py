"""Writing generated media: image grids and frame-grid PNGs, animated GIF (always), MP4 (with imageio-ffmpeg).

Frames are tensors or arrays in one of two value conventions, told apart by dtype:
floats are in [-1, 1] (what the task heads return; clamped), uint8 are pixel
values. Layout is (F, C, H, W) with C in {1, 3} (the task heads' layout); a
video batch for the grid is (N, F, C, H, W).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError


def to_uint8_frames(frames: Any) -> np.ndarray:
    """(F, C, H, W) float in [-1, 1] or uint8 -> (F, H, W, 3) uint8."""
    x = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(f"frames must be (F, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    if x.dtype != np.uint8:
        x = np.rint((np.clip(x.astype(np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)
    x = x.transpose(0, 2, 3, 1)  # (F, H, W, C)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def mp4_available() -> bool:
    """Whether MP4 can be written (imageio with its ffmpeg plugin, package imageio-ffmpeg)."""
    return importlib.util.find_spec("imageio") is not None and importlib.util.find_spec("imageio_ffmpeg") is not None


def write_gif(frames: Any, path: str | Path, fps: float = 4.0) -> Path:
    """Write an endlessly looping animated GIF (imageio's Pillow plugin); returns the path."""
    import imageio.v3 as iio

    if fps <= 0:
        raise ConfigError(f"fps={fps} is invalid: must be > 0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = to_uint8_frames(frames)
    iio.imwrite(path, x, extension=".gif", plugin="pillow", duration=round(1000 / fps), loop=0)
    return path


def write_mp4(frames: Any, path: str | Path, fps: float = 4.0) -> Path:
    """Write an H.264 MP4 (needs imageio-ffmpeg); odd sizes are padded by one black row/column."""
    if not mp4_available():
        raise ConfigError("writing MP4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); GIF works without it")
    import imageio.v2 as iio2

    if fps <= 0:
        raise ConfigError(f"fps={fps} is invalid: must be > 0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = to_uint8_frames(frames)
    F, H, W, _ = x.shape
    x = np.pad(x, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))  # yuv420p needs even sides
    iio2.mimwrite(path, list(x), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p")
    return path


def write_video(frames: Any, path: str | Path, fps: float = 4.0) -> Path:
    """GIF or MP4 by the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return write_gif(frames, path, fps)
    if suffix == ".mp4":
        return write_mp4(frames, path, fps)
    raise ConfigError(f"video path {str(path)!r} has suffix {suffix!r}: must be one of ('.gif', '.mp4')")


def save_frame_grid(videos: Any, path: str | Path, pad: int = 2, max_frames: int | None = None) -> Path:
    """One PNG with a row per video and a column per frame (white gaps of `pad` pixels).

    Args:
        videos: (N, F, C, H, W), or one video (F, C, H, W).
        path: PNG path.
        max_frames: show at most this many frames, evenly spaced (default all).
    """

    v = videos.detach().cpu().numpy() if hasattr(videos, "detach") else np.asarray(videos)
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5:
        raise ConfigError(f"videos must be (N, F, C, H, W) or (F, C, H, W), got shape {tuple(v.shape)}")
    rows = [to_uint8_frames(x) for x in v]  # each (F, H, W, 3)
    cols = list(range(rows[0].shape[0]))
    if max_frames and max_frames < len(cols):  # evenly spaced, first and last included
        cols = np.linspace(0, len(cols) - 1, max_frames).round().astype(int).tolist()
    return _save_tiles([[frames[f] for f in cols] for frames in rows], path, pad)


def save_image_grid(images: Any, path: str | Path, nrow: int | None = None, individual: bool = False, pad: int = 2) -> list[Path]:
    """Write (N, C, H, W) images (float in [-1, 1] or uint8) as one PNG grid of `nrow` columns.

    Args:
        individual: also write each image as `<stem>_<i>.png` next to the grid.

    Returns:
        the paths written, grid first.
    """
    from PIL import Image

    x = to_uint8_frames(images)  # (N, H, W, 3)
    n = len(x)
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    blank = np.full_like(x[0], 255)
    tiles = [[x[i] if i < n else blank for i in range(r, r + nrow)] for r in range(0, n, nrow)]
    path = _save_tiles(tiles, path, pad)
    written = [path]
    if individual:
        for i in range(n):
            p = path.with_name(f"{path.stem}_{i:03d}.png")
            Image.fromarray(x[i]).save(p)
            written.append(p)
    return written


def _save_tiles(rows: list[list[np.ndarray]], path: str | Path, pad: int) -> Path:
    """Tile rows of (H, W, 3) uint8 images on white with `pad`-pixel gaps and save a PNG."""
    from PIL import Image

    H, W, _ = rows[0][0].shape
    ncol = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (H + pad) + pad, ncol * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y0, x0 = pad + r * (H + pad), pad + c * (W + pad)
            canvas[y0 : y0 + H, x0 : x0 + W] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


__all__ = ["to_uint8_frames", "mp4_available", "write_gif", "write_mp4", "write_video", "save_frame_grid", "save_image_grid"]
