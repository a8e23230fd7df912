"""Video task head: class → video, with frames as blocks.

Sequence format:  [video, noised]   — `frames` frames of grid×grid tokens, blocks of
`frames_per_block` whole frames (VisualConfig), 3-axis positions (frame, row, col);
the class label enters through AdaLN and is dropped (null class) with `drop_prob`.

Generation streams frames as each block finishes. Asking for more frames than the
model was trained on slides a window over the past blocks (`max_context`, in
blocks; by default the trained number of blocks minus one), so positions stay
within the trained range and memory stays flat (Generator.stream_visual, `window`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from unimodal.batch import Example
from unimodal.config import VisualConfig
from unimodal.errors import ConfigError
from unimodal.generate import BlockEvent, Generator, VisualSampling
from unimodal.layout import Video
from unimodal.media import save_frame_grid
from unimodal.tokenizers.visual import patchify_video, unpatchify_video

from .base import ImageBank, RecordError, Task, bank_vae, make_example, register_task

if TYPE_CHECKING:
    import datasets

    from unimodal.diffusion.schedule import ScheduleConfig
    from unimodal.model import ACDiT
    from unimodal.tokenizers.visual import VAETokenizer


def videos_to_tokens(videos: torch.Tensor, visual: VisualConfig) -> torch.Tensor:
    """(N, F, C, H, W) in [-1, 1] → (N, F·grid², token_dim) pixel-space tokens, frame-major."""
    return patchify_video(videos, visual.patch_size)


def tokens_to_frames(tokens: torch.Tensor, visual: VisualConfig, frames: int, vae: VAETokenizer | None = None) -> torch.Tensor:
    """(N, frames·grid², token_dim) → (N, frames, C, H, W) in [-1, 1] (decoded by `vae` for latent tokens)."""
    side = visual.grid * visual.patch_size
    x = unpatchify_video(tokens.float(), frames, side, side, visual.patch_size, visual.channels)
    if vae is None:
        return x.clamp(-1, 1)
    N = x.shape[0]
    images = vae.decode(x.reshape(N * frames, *x.shape[2:])).float().clamp(-1, 1).cpu()  # (N·F, 3, H', W')
    return images.reshape(N, frames, *images.shape[1:])


def build_video_bank(dataset: datasets.Dataset, visual: VisualConfig, name: str = "", batch: int = 256) -> ImageBank:
    """Tokenise every video of a `datasets.Dataset` for the pixel path.

    The `video` column holds uint8 (F, H, W) or (F, H, W, C) arrays (e.g. `moving_fmnist`).
    Records with more frames than `visual.frames` keep their first `visual.frames`;
    frames are converted to `visual.channels` and resized (bilinear, antialiased) to
    `visual.image_size`.
    """
    if visual.vae_dir:
        raise ConfigError("build_video_bank tokenises pixels; encode latents with VAETokenizer for vae_dir")
    if "video" not in dataset.column_names:
        raise RecordError(f"dataset {name!r} has no 'video' column; columns: {dataset.column_names}")
    out = []
    numpy_view = dataset.with_format("numpy")
    for start in range(0, len(dataset), batch):
        v = np.asarray(numpy_view[start : start + batch]["video"], dtype=np.uint8)
        if v.ndim == 4:
            v = v[..., None]  # (n, F, H, W, 1)
        if v.ndim != 5 or v.shape[1] < visual.frames:
            raise RecordError(
                f"{name} records {start}..: video shape {v.shape[1:]} does not hold {visual.frames} frames "
                "of (H, W) or (H, W, C)"
            )
        x = torch.from_numpy(v[:, : visual.frames]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1  # (n, F, c, H, W)
        if x.shape[2] != visual.channels:
            x = x.mean(2, keepdim=True) if visual.channels == 1 else x[:, :, :1].expand(-1, -1, visual.channels, -1, -1)
        n, f, c, H, W = x.shape
        if (H, W) != (visual.image_size, visual.image_size):
            x = F.interpolate(x.reshape(n * f, c, H, W), size=visual.image_size, mode="bilinear", antialias=True)
            x = x.reshape(n, f, c, visual.image_size, visual.image_size)
        out.append(videos_to_tokens(x.clamp(-1, 1), visual))
    cols = {c: dataset[c] for c in dataset.column_names if c != "video"}
    return ImageBank(torch.cat(out), cols, name)


@register_task
class ClassToVideo(Task):
    """Class-conditional video generation; the label is dropped (null class) with `drop_prob`."""

    name = "class_to_video"
    needs_text = False
    needs_class = True

    def video_segment(self, noisy: bool, frames: int | None = None) -> Video:
        """`frames` (default the trained `visual.frames`) frames of grid×grid tokens, frames_per_block a block."""
        v, f = self.visual, self.visual.frames if frames is None else frames
        if isinstance(f, bool) or not isinstance(f, int) or f <= 0 or f % v.frames_per_block:
            raise ConfigError(f"frames={f!r} is invalid: must be a positive multiple of frames_per_block={v.frames_per_block}")
        return Video(f, v.grid, v.grid, v.frames_per_block, noisy=noisy)

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        return make_example([self.video_segment(noisy=True)], bank.tokens[index], self.class_label(bank, index, rng))

    def context_window(self, frames: int, max_context: int | None) -> int | None:
        """Blocks of past context kept: `max_context`, else (beyond the trained length) trained blocks − 1."""
        if max_context is not None:
            return max_context
        trained_blocks = self.visual.frames // self.visual.frames_per_block
        return max(1, trained_blocks - 1) if frames > self.visual.frames else None

    def vae(self) -> Any:
        """The local VAE of a latent-space config (the process-wide one the image heads use), else None."""
        return bank_vae(self.visual) if self.visual.vae_dir is not None else None

    @torch.no_grad()
    def stream_tokens(
        self, model, labels: list[int], sampling: VisualSampling, seed: int = 0, frames: int | None = None,
        max_context: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Tokens (N, frames_per_block·grid², C) of each block as it finishes, in frame order."""
        seg = self.video_segment(noisy=False, frames=frames)
        g = Generator(model, len(labels), seed=seed)
        window = self.context_window(seg.frames, max_context)
        for ev in g.stream_visual(seg, sampling, class_labels=torch.tensor(labels), window=window, collect=False):
            if isinstance(ev, BlockEvent):
                yield ev.tokens.cpu()

    def stream(
        self, model, labels: list[int], sampling: VisualSampling, seed: int = 0, frames: int | None = None,
        max_context: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Frames (N, frames_per_block, C, H, W) in [-1, 1] of each block as it finishes.

        Args:
            labels: one class per video (-1: unconditional).
            frames: number of frames (default the trained `visual.frames`); more than trained slides a window.
            max_context: blocks of past context to keep (default: all when within the trained length,
                trained blocks − 1 beyond it).
        """
        fpb = self.visual.frames_per_block
        for tokens in self.stream_tokens(model, labels, sampling, seed, frames, max_context):
            yield tokens_to_frames(tokens, self.visual, fpb, self.vae())

    def generate_tokens(
        self, model, labels: list[int], sampling: VisualSampling, seed: int = 0, frames: int | None = None,
        max_context: int | None = None,
    ) -> torch.Tensor:
        """Tokens (N, frames·grid², C) in natural (frame-major raster) order."""
        return torch.cat(list(self.stream_tokens(model, labels, sampling, seed, frames, max_context)), 1)

    def generate(
        self, model, labels: list[int], sampling: VisualSampling, seed: int = 0, frames: int | None = None,
        max_context: int | None = None,
    ) -> torch.Tensor:
        """Videos (N, frames, C, H, W) in [-1, 1] for the given class labels."""
        return torch.cat(list(self.stream(model, labels, sampling, seed, frames, max_context)), 1)

    def progress(self, model: ACDiT, bank: ImageBank, indices: list[int], schedule: ScheduleConfig, out: Path, stem: str) -> list[str]:
        """Two videos (classes 0 and 1) of the trained length as a frame grid, with the paper's video sampling settings."""
        labels = [i % model.cfg.num_classes for i in range(min(2, len(indices)))]
        videos = self.generate(model, labels, VisualSampling.paper(video=True, schedule=schedule))
        save_frame_grid(videos, out / f"{stem}.png")
        return [f"![{self.name}]({stem}.png)", "", f"One row per video; class labels: {labels}"]
