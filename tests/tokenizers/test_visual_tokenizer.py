"""Pixel patches (exact inverse, brute-force layout) and the VAE latent path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unimodal.tokenizers.visual import (
    VAETokenizer,
    grid_size,
    patchify,
    patchify_video,
    unpatchify,
    unpatchify_video,
)

SHAPES = [(1, 8, 8, 2), (3, 8, 12, 4), (3, 6, 6, 1), (4, 16, 16, 16), (2, 10, 15, 5)]  # (C, H, W, p)


@pytest.mark.parametrize(("C", "H", "W", "p"), SHAPES)
def test_patchify_round_trip_is_exact(C: int, H: int, W: int, p: int, rng: torch.Generator) -> None:
    images = torch.randn(2, C, H, W, generator=rng)
    tokens = patchify(images, p)
    assert tokens.shape == (2, (H // p) * (W // p), C * p * p)
    assert torch.equal(unpatchify(tokens, H, W, p, C), images)
    assert torch.equal(patchify(unpatchify(tokens, H, W, p, C), p), tokens)


@pytest.mark.parametrize(("C", "H", "W", "p"), SHAPES[:3])
def test_patch_layout_matches_brute_force(C: int, H: int, W: int, p: int) -> None:
    images = torch.arange(2 * C * H * W, dtype=torch.float64).reshape(2, C, H, W)  # every pixel distinct
    tokens = patchify(images, p)
    h, w = grid_size(H, W, p)
    for b in range(2):
        for i in range(h):
            for j in range(w):
                for k in range(C * p * p):
                    c, y, x = k // (p * p), (k // p) % p, k % p
                    assert tokens[b, i * w + j, k] == images[b, c, i * p + y, j * p + x]


def test_video_tokens_are_frame_major(rng: torch.Generator) -> None:
    videos = torch.randn(2, 3, 3, 8, 12, generator=rng)  # (B, F, C, H, W)
    tokens = patchify_video(videos, 4)
    hw = 2 * 3
    assert tokens.shape == (2, 3 * hw, 3 * 16)
    for f in range(3):
        assert torch.equal(tokens[:, f * hw : (f + 1) * hw], patchify(videos[:, f], 4))
    assert torch.equal(unpatchify_video(tokens, 3, 8, 12, 4, 3), videos)


def test_bad_sizes_name_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"30x32 .* patch_size=4: 30 % 4 = 2"):
        patchify(torch.zeros(1, 3, 30, 32), 4)
    with pytest.raises(ValueError, match=r"expected \(B, 4, 48\)"):
        unpatchify(torch.zeros(1, 5, 48), 8, 8, 4, 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="33x32"):
        unpatchify_video(torch.zeros(1, 8, 48), 2, 33, 32, 4, 3)


# ---- VAE latent path ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.18215,
    )
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def test_vae_tokenizer_scales_latents(tiny_vae_dir: Path, rng: torch.Generator) -> None:
    from diffusers import AutoencoderKL

    tok = VAETokenizer.from_pretrained(tiny_vae_dir)
    ref = AutoencoderKL.from_pretrained(tiny_vae_dir, local_files_only=True).eval()
    assert tok.scaling_factor == pytest.approx(0.18215) and tok.downsample_factor == 2 and tok.latent_channels == 4
    x = torch.rand(2, 3, 16, 16, generator=rng) * 2 - 1
    z = tok.encode(x)
    assert z.shape == (2, 4, 8, 8)
    with torch.no_grad():
        mean = ref.encode(x).latent_dist.mean
        torch.testing.assert_close(z, mean * 0.18215)
        torch.testing.assert_close(tok.decode(z), ref.decode(mean).sample)
    assert not z.requires_grad

    other = VAETokenizer.from_pretrained(tiny_vae_dir, scaling_factor=2.0)
    torch.testing.assert_close(other.encode(x), mean * 2.0)
    torch.testing.assert_close(other.decode(other.encode(x)), tok.decode(z))

    a = tok.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    b = tok.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.allclose(a, z)


def test_vae_errors_name_the_directory(tiny_vae_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'nope'}' does not exist"):
        VAETokenizer.from_pretrained(tmp_path / "nope")
    (tmp_path / "pipe" / "vae").mkdir(parents=True)
    (tmp_path / "pipe" / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"pipe has no config.json .*subfolder='vae'"):
        VAETokenizer.from_pretrained(tmp_path / "pipe")
    with pytest.raises(FileNotFoundError, match="has no weights file"):
        VAETokenizer.from_pretrained(tmp_path / "pipe", subfolder="vae")
    with pytest.raises(ValueError, match="divisible by 2"):
        VAETokenizer.from_pretrained(tiny_vae_dir).encode(torch.zeros(1, 3, 15, 16))
