import torch

from unimodal.batch import Example, collate
from unimodal.diffusion import LossWeights, NoiseSchedule, ScheduleConfig, compute_loss, noise_batch
from unimodal.layout import Image, Layout, Text
from unimodal.model import ModelOutput, create_model

C = 12


def batch():
    g = torch.Generator().manual_seed(0)
    lay = Layout([Text([1, 2, 3]), Image(4, 4, 2, 2), Text([4, 5])])
    return collate([Example(lay, torch.randn(16, C, generator=g), 1), Example(lay, torch.randn(16, C, generator=g), 2)], C)


class Oracle(torch.nn.Module):
    """Returns the true noise at noisy positions and a perfect one-hot text prediction."""

    def __init__(self, noise, vocab=16):
        super().__init__()
        self.noise, self.vocab = noise, vocab

    def forward(self, b, compute_logits=True):
        logits = torch.nn.functional.one_hot(b.text_target.clamp(min=0), self.vocab).float() * 1e4
        return ModelOutput(logits, torch.where(b.noisy[..., None], self.noise, 0.0))


def test_true_noise_scores_zero_and_timesteps_are_per_block():
    b = batch()
    sched = NoiseSchedule(ScheduleConfig())
    noise = torch.randn(b.visual.shape)
    parts = compute_loss(Oracle(noise), b, sched, noise=noise, generator=torch.Generator().manual_seed(0))
    assert parts["diffusion"].item() == 0.0 and parts["text"].item() < 1e-6 and parts["loss"].item() < 1e-6
    noised, target = noise_batch(b, sched, noise=noise, generator=torch.Generator().manual_seed(1))
    assert noised.t.shape == (2, 4) and len(set(noised.t.flatten().tolist())) > 1  # each block its own t
    # clean tokens untouched; each noisy token is sqrt(ab) x0 + sqrt(1-ab) eps at its block's t
    assert torch.equal(noised.visual[~b.noisy], b.visual[~b.noisy])
    ab = sched.alphas_cumprod[noised.token_t()][..., None]
    expect = ab.sqrt() * b.visual + (1 - ab).sqrt() * noise
    torch.testing.assert_close(noised.visual[b.noisy], expect[b.noisy])


def test_loss_weights_combine_parts():
    b = batch()
    m = create_model("tiny", token_dim=C, vocab_size=16, num_classes=3)
    sched = NoiseSchedule(ScheduleConfig())
    p = compute_loss(m, b, sched, LossWeights(diffusion=2.0, text=0.5), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p["loss"], 2.0 * p["diffusion"] + 0.5 * p["text"])


def test_training_loss_falls_with_random_timesteps():
    torch.manual_seed(0)
    b = batch()
    m = create_model("tiny", token_dim=C, vocab_size=16, num_classes=3)
    sched = NoiseSchedule(ScheduleConfig())
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    hist = []
    for _ in range(150):
        p = compute_loss(m, b, sched, generator=g)
        opt.zero_grad()
        p["loss"].backward()
        opt.step()
        hist.append(p["diffusion"].item())
    first, last = sum(hist[:20]) / 20, sum(hist[-20:]) / 20
    assert last < 0.7 * first, (first, last)
