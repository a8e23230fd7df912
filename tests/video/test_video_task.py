"""Video end to end: 3-axis layout, the backbone's invariances on video, class→video training and streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import randomize_, require_fashion_mnist

from unimodal.batch import Example, collate
from unimodal.config import VisualConfig
from unimodal.diffusion.loss import compute_loss
from unimodal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from unimodal.generate import VisualSampling
from unimodal.layout import Layout, Video
from unimodal.model import create_model
from unimodal.tasks import ClassToVideo, TaskMixture, build_video_bank, get_task_class

C = 12


def video_model(token_dim: int = C, **kw):
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=token_dim, vocab_size=0, num_classes=5, **kw)).eval()


def video_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lay = Layout([Video(6, 2, 3, 2)])  # 6 frames of 2x3 tokens, 2 frames a block: 3 blocks of 12 tokens
    rows = [Example(lay, torch.randn(36, C, generator=g), 1), Example(lay, torch.randn(36, C, generator=g), 4)]
    b = collate(rows, C)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    return b, lay


def test_video_layout_positions_and_blocks() -> None:
    lay = Layout([Video(4, 2, 3, 2)])
    assert [len(b.tokens) for b in lay.blocks] == [12, 12] and len(lay) == 48  # 2·N·B
    first = lay.blocks[1]
    np.testing.assert_array_equal(lay.pos[first.clean[0] : first.clean[0] + 3], [[2, 0, 0], [2, 0, 1], [2, 0, 2]])
    np.testing.assert_array_equal(lay.pos[first.noisy[0] : first.noisy[1]], lay.pos[first.clean[0] : first.clean[1]])
    assert set(lay.pos[:, 0].tolist()) == {0, 1, 2, 3}  # frames on the t axis


@torch.no_grad()
def test_clean_stream_independent_of_t_label_and_noisy_tokens_on_video() -> None:
    m = video_model()
    b, _ = video_batch()
    layers = tuple(range(m.cfg.n_layer + 1))
    ref = m(b, hidden_layers=layers)
    b2 = b.replace(t=torch.randint(0, 1000, b.t.shape), y=torch.randint(-1, 5, b.y.shape),
                   visual=torch.where(b.noisy[..., None], torch.randn_like(b.visual), b.visual))
    out = m(b2, hidden_layers=layers)
    clean = ~b.noisy
    for i in layers:
        torch.testing.assert_close(out.hidden[i][clean], ref.hidden[i][clean])
    assert not torch.allclose(out.pred[b.noisy], ref.pred[b.noisy])


@torch.no_grad()
def test_eps_of_video_block_ignores_later_frames_and_other_noisy_blocks() -> None:
    m = video_model()
    b, lay = video_batch()
    ref = m(b).pred
    for i, blk in enumerate(lay.blocks):
        vis, t = b.visual.clone(), b.t.clone()
        for j, other in enumerate(lay.blocks):
            if j >= i:
                vis[:, other.clean[0] : other.clean[1]] += torch.randn(2, 12, C)
            if j != i:
                vis[:, other.noisy[0] : other.noisy[1]] += torch.randn(2, 12, C)
                t[:, other.slot] = 7
        out = m(b.replace(visual=vis, t=t)).pred
        n0, n1 = blk.noisy
        torch.testing.assert_close(out[:, n0:n1], ref[:, n0:n1])
        if i > 0:  # an earlier frame does matter
            vis2 = b.visual.clone()
            vis2[:, lay.blocks[0].clean[0]] += 1.0
            assert not torch.allclose(m(b.replace(visual=vis2)).pred[:, n0:n1], ref[:, n0:n1])


# ---- class→video on Moving Fashion-MNIST ----------------------------------------------------------

VISUAL = VisualConfig(channels=1, image_size=32, patch_size=8, block_h=4, block_w=4, frames=8, frames_per_block=2)
DATA = dict(frames=8, canvas=32, item_size=14)


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    from unimodal.data import load_dataset

    require_fashion_mnist()
    cache = tmp_path_factory.mktemp("mf")
    train = load_dataset("moving_fmnist", "train", cache_dir=cache, num_sequences=96, **DATA)
    test = load_dataset("moving_fmnist", "test", cache_dir=cache, num_sequences=16, **DATA)
    return build_video_bank(train, VISUAL, "moving_fmnist/train"), build_video_bank(test, VISUAL, "moving_fmnist/test")


def test_video_bank_and_examples(banks) -> None:
    from unimodal.data import load_dataset

    train, _ = banks
    assert train.tokens.shape == (96, 8 * 16, 64)
    assert train.tokens.min() >= -1 and train.tokens.max() <= 1
    # the tokens are the videos, by hand: uint8 -> [-1, 1], 8x8 patches, frame-major then raster order
    ds = load_dataset("moving_fmnist", "train", cache=False, num_sequences=4, **DATA)
    v = torch.tensor(np.asarray(ds.with_format("numpy")[:]["video"], dtype=np.float32)) / 127.5 - 1  # (4, 8, 32, 32)
    want = v.reshape(4, 8, 4, 8, 4, 8).permute(0, 1, 2, 4, 3, 5).reshape(4, 8 * 16, 64)
    torch.testing.assert_close(train.tokens[:4].float(), want, rtol=0, atol=1e-6)
    assert train.columns["label"][:4] == ds["label"]
    task = get_task_class("class_to_video")(VISUAL, None, drop_prob=0.5)
    rng = np.random.default_rng(0)
    exs = [task.example(train, 0, rng) for _ in range(40)]
    lay = exs[0].layout
    assert lay.num_noisy_blocks == 4 and len(lay) == 2 * 128 and isinstance(lay.segments[0], Video)
    labels = {e.class_label for e in exs}
    assert labels == {-1, train.columns["label"][0]}  # label dropout to the null class


def test_tiny_model_on_moving_fashion_mnist_lowers_its_loss(banks) -> None:
    train, test = banks
    task = ClassToVideo(VISUAL, drop_prob=0.1)
    mix = TaskMixture([(task, 1.0, train)], VISUAL.token_dim, seed=0)
    sched = NoiseSchedule(ScheduleConfig())
    held = collate([task.example(test, i, np.random.default_rng(i)) for i in range(8)], VISUAL.token_dim)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, held.t.shape, generator=g)
    noise = torch.randn(held.visual.shape, generator=g)

    def held_loss(m) -> float:
        with torch.no_grad():
            return compute_loss(m, held, sched, t=t, noise=noise)["loss"].item()

    torch.manual_seed(0)
    m = create_model("tiny", token_dim=VISUAL.token_dim, vocab_size=0, num_classes=10)
    before = held_loss(m)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for step in range(20):
        parts = compute_loss(m, mix.batch(step, 0, 1, 4), sched, generator=gen)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    after = held_loss(m)
    assert after < 0.5 * before, (before, after)  # held-out sequences, fixed t and noise


@torch.no_grad()
def test_stream_yields_frames_block_by_block_and_matches_generate() -> None:
    visual = VisualConfig(channels=1, image_size=8, patch_size=4, block_h=2, block_w=2, frames=4, frames_per_block=2)
    m = video_model(token_dim=visual.token_dim)
    task = ClassToVideo(visual)
    s = VisualSampling("dpm++", steps=3, cfg_scale=1.5)
    chunks = list(task.stream(m, [1, 3], s, seed=5))
    assert [c.shape for c in chunks] == [(2, 2, 1, 8, 8)] * 2
    video = task.generate(m, [1, 3], s, seed=5)
    assert video.shape == (2, 4, 1, 8, 8) and video.abs().max() <= 1
    torch.testing.assert_close(video, torch.cat(chunks, 1))
    with pytest.raises(ValueError, match="multiple of frames_per_block=2"):
        task.generate(m, [1], s, frames=5)


def test_progress_samples_show_a_frame_grid_per_step(banks, tmp_path) -> None:
    """The training run's progress page for class→video: two videos of the trained length as a frame grid."""
    from PIL import Image as PILImage

    from unimodal.media import to_uint8_frames
    from unimodal.tasks.progress import ProgressSamples

    train, _ = banks
    mix = TaskMixture([(ClassToVideo(VISUAL), 1.0, train)], VISUAL.token_dim, seed=0)
    model = video_model(token_dim=VISUAL.token_dim)
    shown = ProgressSamples(mix, tmp_path, num=3)(7, model)
    assert shown == tmp_path / "samples" / "step_0000007"
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000007"]  # no partial left behind
    page = (shown / "samples.md").read_text()
    assert "## class_to_video (moving_fmnist/train)" in page and "class labels: [0, 1]" in page
    grid = np.asarray(PILImage.open(shown / "0_class_to_video.png"))
    assert grid.shape[:2] == (2 + 2 * 34, 2 + 8 * 34)  # 8 frames x 2 videos of 32x32, 2 px gaps
    # the tiles are this model's videos of classes 0 and 1 with the paper's video sampling settings
    want = ClassToVideo(VISUAL).generate(model, [0, 1], VisualSampling.paper(video=True, schedule=ScheduleConfig()))
    for r in range(2):
        frames = to_uint8_frames(want[r])
        for c in range(8):
            assert np.array_equal(grid[2 + 34 * r : 34 + 34 * r, 2 + 34 * c : 34 + 34 * c], frames[c]), (r, c)
