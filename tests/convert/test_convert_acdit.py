"""`unimodal convert acdit`: a released-format checkpoint of an independent reference converts exactly.

The reference (release_reference.py) is built from the official release's facts (docs/architecture.md, "Converting a released checkpoint")
alone. Its ε on the 2·N·B training sequence and its cached DPM-Solver++ samples
(CFG 1.5) must equal unimodal's on the converted checkpoint, compared in latent
space so that the two token layouts are checked too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from release_reference import ReleaseACDiT, randomize, release_args, save_release

from unimodal.batch import Example, collate
from unimodal.checkpoint import CheckpointError, load_checkpoint
from unimodal.cli import main
from unimodal.config import VisualConfig
from unimodal.convert import convert_acdit
from unimodal.convert.acdit import rope_base
from unimodal.generate import Generator, VisualSampling
from unimodal.layout import Image, Layout, Video
from unimodal.tokenizers.visual import patchify, patchify_video, unpatchify, unpatchify_video

CONFIGS = {
    "image": dict(channels=4, patch=1, side=4, frames=1, block_size=4),  # 4x4 latent grid, 2x2 blocks: 4 blocks
    "video": dict(channels=4, patch=2, side=4, frames=4, block_size=8),  # 4 frames of 2x2 tokens, 2 frames a block
}
NUM_CLASSES = 10


@pytest.fixture(scope="module", params=list(CONFIGS))
def converted(request, tmp_path_factory):
    kind = request.param
    ref = randomize(ReleaseACDiT(num_classes=NUM_CLASSES, **CONFIGS[kind]), seed=1).eval()
    ema = randomize(ReleaseACDiT(num_classes=NUM_CLASSES, **CONFIGS[kind]), seed=2).eval()
    d = tmp_path_factory.mktemp(kind)
    save_release(d / "release.pt", ref, ema)
    raw = convert_acdit(d / "release.pt", d / "raw")
    assert main(["convert", "acdit", "--input", str(d / "release.pt"), "--output", str(d / "ema"), "--use-ema"]) == 0
    return kind, ref, ema, load_checkpoint(raw), load_checkpoint(d / "ema")


def segment_of(visual: VisualConfig, noisy: bool) -> Image | Video:
    v = VisualConfig.from_dict({**visual.__dict__, "vae_dir": "unused"})  # latent grid = image_size / 8 / patch
    if v.frames > 1:
        return Video(v.frames, v.grid, v.grid, v.frames_per_block, noisy=noisy)
    return Image(v.grid, v.grid, v.block_h, v.block_w, noisy=noisy)


def ours_tokens(lat: torch.Tensor, p: int) -> torch.Tensor:
    return patchify_video(lat, p) if lat.ndim == 5 else patchify(lat, p)


def ours_latents(tok: torch.Tensor, ref: ReleaseACDiT) -> torch.Tensor:
    S, C, p = ref.side, ref.channels, ref.patch
    if ref.frames > 1:
        return unpatchify_video(tok, ref.frames, S, S, p, C)
    return unpatchify(tok, S, S, p, C)


def to_release_channels(tok: torch.Tensor, C: int, p: int) -> torch.Tensor:
    """unimodal (channel, row, col) patch tokens -> the release's (row, col, channel)."""
    return tok.reshape(*tok.shape[:-1], C, p, p).movedim(-3, -1).reshape(tok.shape)


def test_config_carries_the_released_settings(converted):
    kind, ref, _, ck, ck_ema = converted
    cfg = ck.model.cfg
    assert (cfg.n_layer, cfg.d_model, cfg.head_dim, cfg.vocab_size, cfg.num_classes) == (2, 128, 64, 0, NUM_CLASSES)
    assert cfg.token_dim == ref.channels * ref.patch**2
    assert cfg.rope_style == "acdit" and cfg.rope_theta == 100.0
    assert cfg.rope_axes == ((0, 32, 32) if kind == "image" else (16, 24, 24))
    v = ck.visual
    assert (v.channels, v.patch_size, v.image_size, v.vae_downsample, v.vae_dir) == (4, ref.patch, 32, 8, None)
    assert (v.frames, v.frames_per_block, v.block_h) == ((1, 1, 2) if kind == "image" else (4, 2, 2))
    assert ck.extra["source"] == "acdit-official"
    assert ck.extra["sampling"] == {"sampler": "dpm++", "steps": 25, "cfg": 1.5 if kind == "image" else 2.5}
    assert ck.extra["args"]["model"] == "ACDiT-tiny" and ck.extra["args"]["ar_len"] == ref.n_blocks
    assert (ck.extra["weights"], ck_ema.extra["weights"]) == ("model", "ema")


def test_rope_base_formula():
    # the release's base per axis, from its position-table lengths (latent side 32, or 16 frames / 16 tokens)
    assert (rope_base(32), rope_base(16), rope_base(4)) == (100, 100, 100)
    assert (rope_base(100), rope_base(200)) == (300, 600)


@torch.no_grad()
@pytest.mark.parametrize("weights", ["raw", "ema"])
def test_eps_matches_reference_on_training_sequence(converted, weights):
    kind, ref, ema, ck, ck_ema = converted
    ref, model = (ref, ck.model) if weights == "raw" else (ema, ck_ema.model)
    g = torch.Generator().manual_seed(0)
    shape = (2, ref.frames, ref.channels, ref.side, ref.side) if ref.frames > 1 else (2, ref.channels, ref.side, ref.side)
    clean, noised = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.randint(0, 1000, (2, ref.n_blocks), generator=g)
    y = torch.tensor([3, NUM_CLASSES])  # second row: the null class

    eps_ref = ref(ref.tokens_from_latents(clean), ref.tokens_from_latents(noised), t, y)
    lay = Layout([segment_of(ck.visual, noisy=True)])
    assert len(lay) == 2 * ref.n_tokens  # the 2·N·B sequence
    labels = [3, -1]
    C = model.cfg.token_dim
    bc = collate([Example(lay, tok, lab) for tok, lab in zip(ours_tokens(clean, ref.patch), labels)], C)
    bn = collate([Example(lay, tok, lab) for tok, lab in zip(ours_tokens(noised, ref.patch), labels)], C)
    batch = bc.replace(visual=torch.where(bc.noisy[..., None], bn.visual, bc.visual), t=t)
    eps = model(batch).pred
    noisy = torch.from_numpy(lay.noisy)
    eps_nat = torch.zeros(2, ref.n_tokens, C)
    eps_nat[:, torch.from_numpy(lay.visual_index[lay.noisy])] = eps[:, noisy]
    want = ref.latents_from_tokens(eps_ref)
    assert want.abs().mean() > 0.1  # random weights everywhere: nothing is trivially zero
    torch.testing.assert_close(ours_latents(eps_nat, ref), want, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_cached_sampling_matches_release_sampler(converted):
    kind, ref, _, ck, _ = converted
    steps, cfg, seed = 4, 1.5, 7
    labels = torch.tensor([3, 8])
    seg = segment_of(ck.visual, noisy=False)
    ours = Generator(ck.model, 2, seed=seed).generate_visual(seg, VisualSampling("dpm++", steps, cfg), class_labels=labels)
    # the engine's noise draws: randn(B, n, C) per block, in block order, from a CPU generator seeded with `seed`
    g = torch.Generator().manual_seed(seed)
    C, n = ref.channels * ref.patch**2, ref.block_size
    noises = [to_release_channels(torch.randn(2, n, C, generator=g), ref.channels, ref.patch) for _ in range(ref.n_blocks)]
    want = ref.latents_from_tokens(ref.sample(labels, noises, steps, cfg))
    assert want.std() > 0.1
    torch.testing.assert_close(ours_latents(ours, ref), want, atol=1e-4, rtol=1e-4)


# ---- bad input: one clear error, nothing written ---------------------------------------------------


@pytest.fixture
def release_file(tmp_path):
    ref = randomize(ReleaseACDiT(num_classes=NUM_CLASSES, **CONFIGS["image"]), seed=3)
    save_release(tmp_path / "release.pt", ref)
    return tmp_path / "release.pt", ref


def assert_fails(src: Path, out: Path, match: str, **kw) -> None:
    with pytest.raises(CheckpointError, match=match):
        convert_acdit(src, out, **kw)
    assert not out.exists() and not out.parent.exists()


def test_truncated_file(release_file, tmp_path):
    src, _ = release_file
    data = src.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert_fails(tmp_path / "cut.pt", tmp_path / "out" / "ckpt", "truncated or not a torch.save file")


class _Payload:
    """A pickled object that would run a command if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_object_is_refused_without_running_it(release_file, tmp_path):
    _, ref = release_file
    marker = tmp_path / "was-unpickled"
    torch.save({"model": ref.state_dict(), "args": release_args(ref), "hook": _Payload(marker)}, tmp_path / "evil.pt")
    assert_fails(tmp_path / "evil.pt", tmp_path / "out" / "ckpt", r"pickled object of type \w+\.system, which is not allowed")
    assert not marker.exists()


def test_missing_and_unexpected_keys_are_listed(release_file, tmp_path):
    _, ref = release_file
    sd = dict(ref.state_dict())
    del sd["blocks.1.attn.proj.bias"], sd["final_layer.adaLN_modulation.1.weight"]
    sd["blocks.0.attn.rel_pos.weight"] = torch.zeros(3)
    torch.save({"model": sd, "args": release_args(ref)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        convert_acdit(tmp_path / "bad.pt", tmp_path / "out" / "ckpt")
    msg = str(err.value)
    assert "missing keys: blocks.1.attn.proj.bias, final_layer.adaLN_modulation.1.weight" in msg
    assert "unexpected keys: blocks.0.attn.rel_pos.weight" in msg
    assert not (tmp_path / "out").exists()


def test_missing_ema_and_args_fields(release_file, tmp_path):
    src, ref = release_file
    assert_fails(src, tmp_path / "out" / "a", "has no 'ema' weights", use_ema=True)
    args = vars(release_args(ref))
    del args["block_size"]
    torch.save({"model": ref.state_dict(), "args": argparse.Namespace(**args)}, tmp_path / "noargs.pt")
    assert_fails(tmp_path / "noargs.pt", tmp_path / "out" / "b", r"args lack \['block_size'\]")
    torch.save(ref.state_dict(), tmp_path / "bare.pt")
    assert_fails(tmp_path / "bare.pt", tmp_path / "out" / "c", "not in the released format")


def test_cli_reports_one_error_line(release_file, tmp_path, capsys):
    data = release_file[0].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:1000])
    rc = main(["convert", "acdit", "--input", str(tmp_path / "cut.pt"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("unimodal convert: error: release checkpoint")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(release_file, tmp_path):
    src, _ = release_file
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="exists and is not empty"):
        convert_acdit(src, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_acdit(src, out, overwrite=True)
    assert (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()


def with_args(ref, path: Path, state=None, **changes) -> Path:
    args = vars(release_args(ref))
    args.update(changes)
    torch.save({"model": ref.state_dict() if state is None else state, "args": argparse.Namespace(**args)}, path)
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(use_rope=False), r"args.use_rope=False: only the released RoPE-ND models"),
        (dict(nd_split="1_x"), r"args.nd_split='1_x' is invalid: expected e.g. '2_3_3' or '1_1'"),
        (dict(nd_split="1_1_1"), r"args.nd_split='1_1_1' does not fit a image \(h_w\) model"),
        (dict(nd_split="0_1"), r"args.nd_split='0_1' does not fit"),
        # head dim 64: 2·s·(32 // 3) = [20, 40] per axis, 60 in all
        (dict(nd_split="1_2"), r"args.nd_split='1_2' gives head-dim split \[20, 40\], which does not sum to 64"),
    ],
)
def test_release_settings_that_cannot_convert_are_named(release_file, tmp_path, changes, match):
    _, ref = release_file
    assert_fails(with_args(ref, tmp_path / "r.pt", **changes), tmp_path / "out" / "ckpt", match)


def test_nd_split_sets_the_rope_axes(release_file, tmp_path):
    _, ref = release_file
    ck = load_checkpoint(convert_acdit(with_args(ref, tmp_path / "r.pt", nd_split="1_1"), tmp_path / "ck"))
    assert ck.model.cfg.rope_axes == (0, 32, 32)  # 2·1·(32 // 2) each for h and w, none for time


def test_ddp_module_prefix_is_stripped(release_file, tmp_path):
    src, ref = release_file
    plain = load_checkpoint(convert_acdit(src, tmp_path / "plain"))
    prefixed = {f"module.{k}": v for k, v in ref.state_dict().items()}
    ddp = load_checkpoint(convert_acdit(with_args(ref, tmp_path / "ddp.pt", state=prefixed), tmp_path / "ddp"))
    a, b = plain.model.state_dict(), ddp.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    half = {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(ref.state_dict().items())}
    with pytest.raises(CheckpointError, match="missing keys"):  # only an all-prefixed state is a DDP one
        convert_acdit(with_args(ref, tmp_path / "half.pt", state=half), tmp_path / "half")


def test_vae_directory_is_checked_and_recorded(release_file, tmp_path, capsys):
    src, _ = release_file
    assert_fails(src, tmp_path / "out" / "ckpt", r"VAE directory .*nope", vae_dir=str(tmp_path / "nope"))
    assert main(["convert", "acdit", "--input", str(src), "--output", str(tmp_path / "o2"), "--vae", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    vae = tmp_path / "vae"
    vae.mkdir()
    ck = load_checkpoint(convert_acdit(src, tmp_path / "ck", vae_dir=str(vae)))
    assert ck.visual.vae_dir == str(vae.resolve())
