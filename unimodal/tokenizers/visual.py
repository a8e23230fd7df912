"""Visual tokens: pixel patches for small images, SD-VAE latents for large ones.

Patch layout (one definition, used by images and video alike): the grid of
`h = H/p` by `w = W/p` patches is read in raster order, token `n = i*w + j` is
the patch at grid row `i`, column `j`, and inside a token the `C*p*p` values are
ordered channel-major like a `Conv2d` weight:

    tokens[b, i*w + j, c*p*p + y*p + x] == images[b, c, i*p + y, j*p + x]

Video tokens are frame-major: all of frame 0's patches, then frame 1's, ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, MissingFileError, check_path

if TYPE_CHECKING:  # diffusers is heavy to import; only VAETokenizer needs it
    from diffusers import AutoencoderKL


def grid_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Patch grid `(h, w)` of an image, checking that the patches tile it exactly."""
    if patch_size < 1:
        raise ConfigError(f"patch_size must be >= 1, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ConfigError(
            f"image size {height}x{width} (HxW) is not divisible by patch_size={patch_size}: "
            f"{height} % {patch_size} = {height % patch_size}, {width} % {patch_size} = {width % patch_size}"
        )
    return height // patch_size, width // patch_size


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into raster-ordered patch tokens.

    Args:
        images: (B, C, H, W); H and W divisible by `patch_size`.
        patch_size: side p of a square patch.

    Returns:
        (B, (H/p)*(W/p), C*p*p) tokens, layout as in the module docstring.
    """
    if images.ndim != 4:
        raise ConfigError(f"patchify expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    h, w = grid_size(H, W, patch_size)
    p = patch_size
    x = images.reshape(B, C, h, p, w, p)  # (B, C, h, py, w, px)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, py, px)
    return x.reshape(B, h * w, C * p * p)  # (B, N, C*p*p)


def unpatchify(tokens: torch.Tensor, height: int, width: int, patch_size: int, channels: int) -> torch.Tensor:
    """Exact inverse of `patchify`.

    Args:
        tokens: (B, (H/p)*(W/p), C*p*p).
        height, width: image size H, W in pixels (not in patches).
        patch_size: p.
        channels: C.

    Returns:
        (B, C, H, W) images.
    """
    h, w = grid_size(height, width, patch_size)
    p, C = patch_size, channels
    if tokens.ndim != 3 or tokens.shape[1:] != (h * w, C * p * p):
        raise ConfigError(
            f"tokens of shape {tuple(tokens.shape)} do not fit a {channels}x{height}x{width} image "
            f"with patch_size={patch_size}: expected (B, {h * w}, {C * p * p})"
        )
    B = tokens.shape[0]
    x = tokens.reshape(B, h, w, C, p, p)  # (B, h, w, C, py, px)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, h, py, w, px)
    return x.reshape(B, C, height, width)  # (B, C, H, W)


def patchify_video(videos: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patch tokens of every frame, frame-major.

    Args:
        videos: (B, F, C, H, W).
        patch_size: p.

    Returns:
        (B, F*(H/p)*(W/p), C*p*p); frame f's tokens are `[f*h*w, (f+1)*h*w)`.
    """
    if videos.ndim != 5:
        raise ConfigError(f"patchify_video expects (B, F, C, H, W) videos, got shape {tuple(videos.shape)}")
    B, F, C, H, W = videos.shape
    tokens = patchify(videos.reshape(B * F, C, H, W), patch_size)  # (B*F, h*w, C*p*p)
    return tokens.reshape(B, F * tokens.shape[1], tokens.shape[2])  # (B, F*h*w, C*p*p)


def unpatchify_video(
    tokens: torch.Tensor, frames: int, height: int, width: int, patch_size: int, channels: int
) -> torch.Tensor:
    """Exact inverse of `patchify_video`: (B, F*h*w, C*p*p) -> (B, F, C, H, W)."""
    h, w = grid_size(height, width, patch_size)
    if tokens.ndim != 3 or tokens.shape[1] != frames * h * w:
        raise ConfigError(
            f"tokens of shape {tuple(tokens.shape)} do not fit {frames} frames of {height}x{width} "
            f"with patch_size={patch_size}: expected (B, {frames * h * w}, C*p*p)"
        )
    B = tokens.shape[0]
    images = unpatchify(tokens.reshape(B * frames, h * w, -1), height, width, patch_size, channels)
    return images.reshape(B, frames, channels, height, width)  # (B, F, C, H, W)


class VAETokenizer:
    """Images <-> scaled latents through a frozen `diffusers.AutoencoderKL`.

    Latents are `(z - shift_factor) * scaling_factor` where `z` is the encoder's
    posterior mean (or a sample); for the SD-VAE that is `z * 0.18215`, which
    brings latents to roughly unit variance. Images are (B, 3, H, W) in [-1, 1];
    latents are (B, latent_channels, H/f, W/f) with f = `downsample_factor`.
    """

    def __init__(self, vae: AutoencoderKL, scaling_factor: float | None = None, shift_factor: float | None = None) -> None:
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.scaling_factor = float(cfg.scaling_factor if scaling_factor is None else scaling_factor)
        cfg_shift = getattr(cfg, "shift_factor", None)  # set by SD3/Flux VAEs, absent for SD-VAE
        self.shift_factor = float((cfg_shift or 0.0) if shift_factor is None else shift_factor)

    @classmethod
    def from_pretrained(
        cls,
        local_dir: str | os.PathLike,
        scaling_factor: float | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        subfolder: str | None = None,
    ) -> VAETokenizer:
        """Load an `AutoencoderKL` from a local directory; never touches the hub.

        Args:
            local_dir: directory written by `AutoencoderKL.save_pretrained` (holds
                `config.json` and `diffusion_pytorch_model.safetensors` or `.bin`).
            scaling_factor: overrides `vae.config.scaling_factor`.
            device: where to put the VAE (default CPU).
            dtype: weight dtype (default: as saved).
            subfolder: e.g. "vae" for a full Stable Diffusion pipeline directory.
        """
        from diffusers import AutoencoderKL

        root = Path(local_dir)
        model_dir = root / subfolder if subfolder else root
        check_path(model_dir, "VAE directory", kind="dir")
        if not (model_dir / "config.json").is_file():
            hint = " (found vae/config.json: pass subfolder='vae')" if (model_dir / "vae" / "config.json").is_file() else ""
            raise MissingFileError(f"VAE directory {model_dir} has no config.json{hint}")
        weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
        if not any((model_dir / name).is_file() for name in weights):
            raise MissingFileError(f"VAE directory {model_dir} has no weights file (expected one of {', '.join(weights)})")
        vae = AutoencoderKL.from_pretrained(str(model_dir), local_files_only=True, torch_dtype=dtype)
        if device is not None:
            vae = vae.to(device)
        return cls(vae, scaling_factor=scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction H / latent H (8 for the SD-VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, latent_channels, H/f, W/f) scaled latents.

        Args:
            images: pixel values in [-1, 1]; H and W divisible by `downsample_factor`.
            sample: draw from the posterior instead of taking its mean.
            generator: RNG for `sample=True`.
        """
        f = self.downsample_factor
        if images.ndim != 4 or images.shape[-2] % f or images.shape[-1] % f:
            raise ConfigError(f"VAE encode expects (B, C, H, W) with H, W divisible by {f}, got {tuple(images.shape)}")
        posterior = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mean
        return (z - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, 3, H, W) images, nominally in [-1, 1] (not clamped)."""
        z = latents.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample
