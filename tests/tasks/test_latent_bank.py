"""The VAE latent path of the task heads: images encoded once (cached), trained on, sampled and decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image as PILImage

from unimodal.cli import main
from unimodal.config import VisualConfig
from unimodal.data.transforms import to_tensor_images
from unimodal.tasks import build_image_bank, decode_images
from unimodal.tokenizers.visual import VAETokenizer, patchify

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised AutoencoderKL (2x downsampling, 4 latent channels), saved locally."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=16, scaling_factor=0.18215,
    )
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def visual(vae_dir: Path, **kw) -> VisualConfig:
    # 16x16 RGB -> 8x8x4 latents -> 4x4 tokens of 2x2x4 = 16 values, blocks of 2x2 tokens
    return VisualConfig(**{"channels": 4, "image_size": 16, "patch_size": 2, "block_h": 2, "block_w": 2,
                           "vae_dir": str(vae_dir), "vae_downsample": 2, **kw})


@pytest.fixture
def images_ds():
    import datasets

    g = torch.Generator().manual_seed(0)
    imgs = [PILImage.fromarray((torch.rand(16, 16, 3, generator=g) * 255).byte().numpy()) for _ in range(6)]
    return datasets.Dataset.from_dict({"image": imgs, "label": list(range(6))})


def test_bank_holds_patchified_vae_latents_and_is_encoded_once(vae_dir, images_ds, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMODAL_CACHE", str(tmp_path / "cache"))
    v = visual(vae_dir)
    bank = build_image_bank(images_ds, v, "rand", vae_batch=4)  # two VAE batches
    vae = VAETokenizer.from_pretrained(vae_dir)
    latents = vae.encode(to_tensor_images(images_ds["image"], channels=3))
    assert bank.tokens.shape == (6, 16, 16)
    torch.testing.assert_close(bank.tokens, patchify(latents, 2), rtol=1e-5, atol=1e-6)
    assert bank.columns["label"] == list(range(6))
    # decoding generated tokens goes back through the same VAE
    torch.testing.assert_close(decode_images(bank.tokens, v), vae.decode(latents).clamp(-1, 1), rtol=1e-4, atol=1e-5)

    # the second build reads the cache: the VAE encoder is not called again
    files = list((tmp_path / "cache" / "latents").iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    monkeypatch.setattr(VAETokenizer, "encode", lambda *a, **k: pytest.fail("encoded twice"))
    again = build_image_bank(images_ds, v, "rand")
    assert torch.equal(again.tokens, bank.tokens)
    # another dataset (another fingerprint) is not served from that cache
    with pytest.raises(pytest.fail.Exception, match="encoded twice"):
        build_image_bank(images_ds.select(range(3)), v, "rand3")


def test_a_vae_that_does_not_match_the_config_is_one_clear_error(vae_dir, images_ds):
    with pytest.raises(ValueError, match=r"4 latent channels and downsamples 2x.*channels=3, vae_downsample=2"):
        build_image_bank(images_ds, visual(vae_dir, channels=3))


def test_latent_class_to_image_trains_and_samples_decoded_images(vae_dir, tmp_path, monkeypatch):
    """`unimodal train` on digits through the VAE, then `unimodal sample` decodes the latents to 16x16 RGB."""
    monkeypatch.setenv("UNIMODAL_CACHE", str(tmp_path / "cache"))
    run = {
        "model": "tiny", "model_overrides": {"num_classes": 10, "vocab_size": 0},
        "visual": {"channels": 4, "image_size": 16, "patch_size": 2, "block_h": 2, "block_w": 2,
                   "vae_dir": str(vae_dir), "vae_downsample": 2},
        "tasks": [{"name": "class_to_image", "dataset": "digits"}],
        "batch_size": 4, "steps": 2, "lr": 1e-3, "ema_decay": 0.0, "ckpt_every": 2, "sample_every": 2,
        "progress": False, "tensorboard": False, "out_dir": str(tmp_path / "run"),
    }
    cfg = tmp_path / "latent.yaml"
    cfg.write_text(yaml.safe_dump(run))
    assert main(["train", "--config", str(cfg)]) == 0
    assert len(list((tmp_path / "cache" / "latents").iterdir())) == 1  # digits/train encoded once, cached
    grid = tmp_path / "run" / "samples" / "step_0000002" / "0_class_to_image.png"
    assert PILImage.open(grid).size == (2 + 8 * 18, 18 + 2)  # 8 decoded 16x16 samples
    out = tmp_path / "g.png"
    ck = tmp_path / "run" / "checkpoints" / "step_0000002"
    from unimodal.tasks import ClassToImage

    seen = []
    real = ClassToImage.generate_tokens
    monkeypatch.setattr(ClassToImage, "generate_tokens", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "3", "--num", "2", "--steps", "2",
                 "--out", str(out), "--grid-only"]) == 0
    img = PILImage.open(out)
    assert img.size == (2 + 2 * 18, 18 + 2) and img.mode == "RGB"
    # the tiles are the sampled latents decoded by that VAE, here decoded directly with diffusers:
    # tokens (2, 16, 4·2·2) -> latents (2, 4, 8, 8) -> z = latents / scaling_factor -> decoder -> [-1, 1] -> uint8
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    (tokens,) = seen
    lat = tokens.reshape(2, 4, 4, 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 4, 8, 8)  # (c, p, p) per token
    with torch.no_grad():
        x = vae.decode(lat / vae.config.scaling_factor).sample.clamp(-1, 1)
    want = ((x + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    got = np.asarray(img).astype(np.float64)
    for i in range(2):
        tile = got[2:18, 2 + 18 * i : 18 + 18 * i]
        assert np.abs(tile - want[i]).max() <= 1, i
