import pytest
import torch
from model_helpers import randomize_
from PIL import Image as PILImage

from unimodal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from unimodal.cli import main
from unimodal.config import VisualConfig
from unimodal.model import create_model
from unimodal.tokenizers import TextTokenizer

V = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)  # 4x4 tokens, 4 blocks


@pytest.fixture
def class_ckpt(tmp_path):
    torch.manual_seed(0)  # the initialisation draws from the global generator: the same model in every test order
    m = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02)
    return save_checkpoint(tmp_path / "c2i", m, visual=V)


@pytest.fixture
def text_ckpt(tmp_path):
    torch.manual_seed(0)
    tok = TextTokenizer.train(["a red circle", "a blue square", "a green triangle"] * 20, vocab_size=300, out_dir=tmp_path / "tok")
    m = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size), std=0.02)
    return save_checkpoint(tmp_path / "t2i", m, visual=V, tokenizer_dir=tmp_path / "tok")


def sample_grid(ckpt, out, *args) -> bytes:
    """`unimodal sample` one class-conditional grid (2 images, 2 steps, no individual files); its PNG bytes."""
    assert main(["sample", "--checkpoint", str(ckpt), "--num", "2", "--steps", "2", "--grid-only", "--out", str(out),
                 *args]) == 0
    return out.read_bytes()


def test_class_label_grid_and_individual_images(class_ckpt, tmp_path, monkeypatch):
    from unimodal.tasks import ClassToImage

    seen = []
    real = ClassToImage.generate_tokens

    def spy(self, model, labels, sampling, seed=0, **kw):
        seen.append((list(labels), sampling.cfg_scale, seed))
        return real(self, model, labels, sampling, seed=seed, **kw)

    monkeypatch.setattr(ClassToImage, "generate_tokens", spy)
    out = tmp_path / "grid.png"
    rc = main(["sample", "--checkpoint", str(class_ckpt), "--class-label", "1", "--num", "4", "--steps", "3",
               "--cfg", "1.5", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert PILImage.open(out).size == (2 + 2 * (8 + 2), 2 + 2 * (8 + 2))  # 2x2 grid of 8x8 with 2px gaps
    assert len(list(tmp_path.glob("grid_*.png"))) == 4
    assert seen == [([1, 1, 1, 1], 1.5, 0)]  # one label repeated --num times, the --cfg scale, the default seed
    # the label and the guidance scale change the pixels, not only the arguments
    base = sample_grid(class_ckpt, tmp_path / "a.png", "--class-label", "0", "--cfg", "3")
    assert sample_grid(class_ckpt, tmp_path / "b.png", "--class-label", "2", "--cfg", "3") != base
    assert sample_grid(class_ckpt, tmp_path / "c.png", "--class-label", "0", "--cfg", "1") != base
    assert sample_grid(class_ckpt, tmp_path / "d.png", "--class-label", "0", "--cfg", "3") == base
    assert seen[-1] == ([0, 0], 3.0, 0)
    assert sample_grid(class_ckpt, tmp_path / "e.png", "--class-label", "0,2", "--cfg", "3") != base
    assert seen[-1][0] == [0, 2]


def test_seed_sampler_and_device_flags(class_ckpt, tmp_path, monkeypatch):
    import unimodal.generate as G

    base = sample_grid(class_ckpt, tmp_path / "a.png", "--class-label", "1", "--seed", "0")
    assert sample_grid(class_ckpt, tmp_path / "b.png", "--class-label", "1", "--seed", "0", "--device", "cpu") == base
    assert sample_grid(class_ckpt, tmp_path / "c.png", "--class-label", "1", "--seed", "1") != base
    names = []
    real = G.create_sampler

    def spy(name, steps, schedule=None, **kw):
        names.append((name, steps))
        return real(name, steps, schedule, **kw)

    monkeypatch.setattr(G, "create_sampler", spy)
    ddim = sample_grid(class_ckpt, tmp_path / "d.png", "--class-label", "1", "--sampler", "ddim")
    assert names and set(names) == {("ddim", 2)} and ddim != base  # default sampler is dpm++
    names.clear()
    sample_grid(class_ckpt, tmp_path / "e.png", "--class-label", "1")
    assert set(names) == {("dpm++", 2)}


def test_compile_flag_runs_compiled_denoising_steps_with_the_same_images(class_ckpt, tmp_path, monkeypatch):
    import numpy as np

    import unimodal.generate as G

    made = []
    real = G.BlockStep

    def spy(*a, **kw):
        made.append(kw.get("compiled"))
        return real(*a, **kw)

    monkeypatch.setattr(G, "BlockStep", spy)
    sample_grid(class_ckpt, tmp_path / "a.png", "--class-label", "1,2")
    assert made and not any(made)
    made.clear()
    sample_grid(class_ckpt, tmp_path / "b.png", "--class-label", "1,2", "--compile")
    assert made and all(made)
    a, b = (np.asarray(PILImage.open(tmp_path / n), dtype=np.int16) for n in ("a.png", "b.png"))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # float rounding may move a pixel by one level


def test_no_ema_samples_the_raw_weights(tmp_path):
    """By default the EMA weights sample; --no-ema samples model.safetensors."""
    raw = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02, seed=1)
    ema = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02, seed=2)
    both = save_checkpoint(tmp_path / "both", raw, visual=V, ema=ema)
    only_raw = save_checkpoint(tmp_path / "raw", raw, visual=V)
    only_ema = save_checkpoint(tmp_path / "ema", ema, visual=V)
    default = sample_grid(both, tmp_path / "a.png", "--class-label", "1")
    no_ema = sample_grid(both, tmp_path / "b.png", "--class-label", "1", "--no-ema")
    assert default == sample_grid(only_ema, tmp_path / "c.png", "--class-label", "1")
    assert no_ema == sample_grid(only_raw, tmp_path / "d.png", "--class-label", "1")
    assert default != no_ema
    assert sample_grid(only_raw, tmp_path / "e.png", "--class-label", "1", "--no-ema") == no_ema  # no EMA file: raw


def test_prompt_sampling_is_deterministic(text_ckpt, tmp_path, monkeypatch):
    from unimodal.tasks import TextToImage

    seen = []
    real = TextToImage.generate_tokens
    monkeypatch.setattr(TextToImage, "generate_tokens", lambda self, m, prompts, *a, **k: seen.append(list(prompts))
                        or real(self, m, prompts, *a, **k))
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for p, prompt in ((a, "a red circle"), (b, "a red circle"), (c, "a green triangle")):
        assert main(["sample", "--checkpoint", str(text_ckpt), "--prompt", prompt, "--num", "2",
                     "--steps", "2", "--cfg", "4", "--out", str(p), "--grid-only"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the prompt conditions the images
    assert seen == [["a red circle"] * 2, ["a red circle"] * 2, ["a green triangle"] * 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--class-label", "7"], "out of range"),
        (["--prompt", "a red circle"], "no text vocabulary"),
        (["--class-label", "x"], "comma-separated"),
        ([], "exactly one of"),
    ],
)
def test_bad_requests_get_one_clear_error(class_ckpt, tmp_path, capsys, args, message):
    rc = main(["sample", "--checkpoint", str(class_ckpt), "--out", str(tmp_path / "g.png"), *args])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_checkpoint_round_trip_and_errors(class_ckpt, tmp_path):
    ck = load_checkpoint(class_ckpt)
    ref = create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3)
    assert ck.visual == V and ck.model.cfg == ref.cfg and not ck.used_ema
    saved = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02, seed=3)
    got, want = load_checkpoint(save_checkpoint(tmp_path / "raw", saved, visual=V)).model.state_dict(), saved.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k  # bit-exact weights, not only the config
    ema = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02, seed=7)
    with_ema = save_checkpoint(tmp_path / "with_ema", saved, visual=V, ema=ema)
    for use_ema, src in ((True, ema), (False, saved)):
        ck = load_checkpoint(with_ema, use_ema=use_ema)
        assert ck.used_ema is use_ema
        for k, v in src.state_dict().items():
            assert torch.equal(ck.model.state_dict()[k], v), (use_ema, k)
    (class_ckpt / "model.safetensors").write_bytes((class_ckpt / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(class_ckpt, use_ema=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_save_is_atomic_when_a_write_fails(tmp_path, monkeypatch):
    m = create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3)
    first = save_checkpoint(tmp_path / "ck", m, visual=V, meta={"step": 1})
    import unimodal.checkpoint as ckmod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckmod.yaml, "safe_dump", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", m, visual=V, meta={"step": 2})
    assert load_checkpoint(first).meta["step"] == 1  # the old checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary directory left behind


def test_video_checkpoint_writes_frame_grid_and_clips(tmp_path):
    vis = VisualConfig(channels=1, image_size=8, patch_size=4, block_h=2, block_w=2, frames=4, frames_per_block=2)
    m = randomize_(create_model("tiny", token_dim=vis.token_dim, vocab_size=0, num_classes=3, rope_axes=(16, 24, 24)), std=0.02)
    ck = save_checkpoint(tmp_path / "vid", m, visual=vis)
    out = tmp_path / "frames.png"
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "0,2", "--num", "2", "--steps", "2",
                 "--cfg", "2.5", "--out", str(out)]) == 0
    assert PILImage.open(out).size == (2 + 4 * (8 + 2), 2 + 2 * (8 + 2))  # a row per video, a column per frame
    clips = sorted(tmp_path.glob("frames_*"))
    assert len(clips) == 2 and clips[0].suffix in (".gif", ".mp4")


def test_video_frames_flag_sets_the_length(tmp_path, capsys):
    vis = VisualConfig(channels=1, image_size=8, patch_size=4, block_h=2, block_w=2, frames=4, frames_per_block=2)
    m = randomize_(create_model("tiny", token_dim=vis.token_dim, vocab_size=0, num_classes=3, rope_axes=(16, 24, 24)), std=0.02)
    ck = save_checkpoint(tmp_path / "vid", m, visual=vis)
    out = tmp_path / "f.png"
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "1", "--num", "1", "--steps", "2",
                 "--frames", "6", "--out", str(out)]) == 0
    assert PILImage.open(out).size == (2 + 6 * (8 + 2), 2 + 8 + 2)  # 6 frames, not the trained 4
    import imageio.v2 as iio2

    (clip,) = sorted(tmp_path.glob("f_*"))
    kw = {"format": "FFMPEG"} if clip.suffix == ".mp4" else {}
    assert len(iio2.mimread(clip, memtest=False, **kw)) == 6
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "1", "--frames", "5", "--steps", "2",
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "multiple of frames_per_block=2" in capsys.readouterr().err


def test_latent_checkpoint_without_vae_is_refused(tmp_path, capsys):
    """A latent checkpoint with no VAE recorded needs --vae DIR; given one, the samples are decoded to RGB."""
    from diffusers import AutoencoderKL

    lat = VisualConfig(channels=4, image_size=16, patch_size=2, block_h=2, block_w=2, vae_downsample=2)
    m = randomize_(create_model("tiny", token_dim=lat.token_dim, vocab_size=0, num_classes=3), std=0.02)
    ck = save_checkpoint(tmp_path / "lat", m, visual=lat, extra={"requires_vae": True})
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "1", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "generates VAE latents: pass --vae DIR" in err and not (tmp_path / "g.png").exists()
    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                  latent_channels=4, norm_num_groups=8, sample_size=16).save_pretrained(tmp_path / "vae")
    assert main(["sample", "--checkpoint", str(ck), "--class-label", "1", "--num", "2", "--steps", "2",
                 "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "g.png"), "--grid-only"]) == 0
    img = PILImage.open(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (2 + 2 * (16 + 2), 2 + 16 + 2)  # 8x8x4 latents decoded to 16x16 RGB


def test_sampling_uses_the_checkpoints_noise_schedule(tmp_path, monkeypatch):
    """A v-prediction checkpoint must be sampled as v (sampled as ε it gives wrong images, silently)."""
    import types

    import unimodal.generate as G
    from unimodal.diffusion.schedule import ScheduleConfig
    from unimodal.eval.generation import sampling_of

    sched = ScheduleConfig(prediction_type="v_prediction", beta_end=0.015)
    m = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=3), std=0.02)
    ck_dir = save_checkpoint(tmp_path / "v", m, visual=V, schedule=sched)
    assert load_checkpoint(ck_dir).schedule == sched
    seen = []
    real = G.create_sampler

    def spy(name, steps, schedule=None, **kw):
        seen.append(schedule)
        return real(name, steps, schedule, **kw)

    monkeypatch.setattr(G, "create_sampler", spy)
    assert main(["sample", "--checkpoint", str(ck_dir), "--class-label", "1", "--num", "2", "--steps", "2",
                 "--out", str(tmp_path / "g.png"), "--grid-only"]) == 0
    assert seen and all(s == sched for s in seen)
    # the eval harness samples with the checkpoint's schedule too
    task = types.SimpleNamespace(generation={"sampler": "ddim", "steps": 5, "cfg_scale": 2.0, "batch_size": 8})
    s = sampling_of(task, types.SimpleNamespace(checkpoint=load_checkpoint(ck_dir)))
    assert (s.sampler, s.steps, s.cfg_scale, s.schedule) == ("ddim", 5, 2.0, sched)


def test_bad_device_is_refused_before_loading(class_ckpt, tmp_path, capsys, monkeypatch):
    import torch as _torch

    for dev, msg in (("tpu", "'tpu' is not a device: use cpu, cuda or cuda:N"), ("cuda:x", "is not a device")):
        with pytest.raises(SystemExit) as e:
            main(["sample", "--checkpoint", str(class_ckpt), "--class-label", "1", "--device", dev,
                  "--out", str(tmp_path / "g.png")])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    monkeypatch.setattr(_torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(class_ckpt), "--class-label", "1", "--device", "cuda",
              "--out", str(tmp_path / "g.png")])
    assert "no CUDA device is available on this machine; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
