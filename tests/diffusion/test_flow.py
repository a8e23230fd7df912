"""Flow matching as a first-class objective: the schedule's algebra, the samplers against the exact
velocity of Gaussian data, cached == recompute generation, a falling loss, and the checkpoint record."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import randomize_

from unimodal.batch import Example
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.diffusion.samplers import create_sampler, flow_grid, sample_loop
from unimodal.diffusion.schedule import ScheduleConfig
from unimodal.errors import ConfigError
from unimodal.generate import Generator, VisualSampling
from unimodal.layout import Image, Layout, Text
from unimodal.model import create_model

FLOW = ScheduleConfig(prediction_type="flow")
T = FLOW.num_train_timesteps


def test_forward_process_target_and_inverses_by_hand():
    ns = NoiseSchedule(FLOW)
    x0 = torch.randn(3, 5, 4, dtype=torch.float64)
    n = torch.randn(3, 5, 4, dtype=torch.float64)
    t = torch.tensor([[0, 1, 499, 998, 999]] * 3)
    sigma = ((t + 1).double() / 1000)[..., None]  # σ_t = (t + 1) / T, written out here
    x_t = ns.add_noise(x0, n, t)
    torch.testing.assert_close(x_t, (1 - sigma) * x0 + sigma * n, rtol=0, atol=1e-15)
    assert torch.equal(x_t[:, 4], n[:, 4])  # t = T−1 is pure noise: sampling starts there
    u = ns.target(x0, n, t)
    torch.testing.assert_close(u, n - x0, rtol=0, atol=0)
    torch.testing.assert_close(ns.predict_x0(u, x_t, t), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ns.predict_eps(u, x_t, t), n, rtol=0, atol=1e-12)


def test_logit_normal_timesteps_have_the_requested_logit_moments_and_cover_the_grid():
    ns = NoiseSchedule(ScheduleConfig(prediction_type="flow", timestep_sampling="logit_normal", logit_mean=0.5, logit_std=0.8))
    t = ns.sample_timesteps((200_000,), generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) <= T - 1
    logit = torch.logit(((t + 1) / T).double())
    assert abs(float(logit.mean()) - 0.5) < 0.02 and abs(float(logit.std()) - 0.8) < 0.02
    # per block: a (B, NB) request gives independent values, and a seed repeats them
    a = ns.sample_timesteps((4, 6), generator=torch.Generator().manual_seed(1))
    b = ns.sample_timesteps((4, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and len(set(a.flatten().tolist())) > 12
    uniform = NoiseSchedule(FLOW).sample_timesteps((100_000,), generator=torch.Generator().manual_seed(0))
    assert abs(float(uniform.float().mean()) - (T - 1) / 2) < 5


@pytest.mark.parametrize("kwargs, field", [
    ({"prediction_type": "flow_matching"}, "prediction_type"),
    ({"timestep_sampling": "lognormal"}, "timestep_sampling"),
    ({"logit_std": 0.0}, "logit_std"),
    ({"logit_mean": float("nan")}, "logit_mean"),
])
def test_bad_schedule_fields_are_named(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ScheduleConfig(**kwargs)


def exact_velocity(mu: float, s0: float):
    """E[ε − x0 | x_σ] for data N(mu, s0²) under x_σ = (1 − σ)·x0 + σ·ε, on the training grid."""

    def velocity(x: torch.Tensor, t: int) -> torch.Tensor:
        sig = (t + 1) / T
        a = 1 - sig
        xd = x.double()
        d = a * a * s0**2 + sig**2
        x0 = mu + a * s0**2 * (xd - a * mu) / d
        eps = sig * (xd - a * mu) / d
        return (eps - x0).to(x.dtype)

    return velocity


# (sampler, steps, std tolerance): Euler is first order and shrinks the spread at few steps
FLOW_CASES = [("euler", 100, 0.03), ("heun", 25, 0.01), ("dpm++", 25, 0.015), ("dpm++", 10, 0.02)]


@pytest.mark.parametrize("name, steps, tol", FLOW_CASES, ids=lambda v: str(v))
def test_flow_samplers_fed_the_exact_velocity_return_the_data_distribution(name, steps, tol):
    mu, s0 = 0.7, 0.5
    sampler = create_sampler(name, steps, FLOW)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 4, generator=g)
    calls = []

    def velocity(x, t):
        calls.append(t)
        return exact_velocity(mu, s0)(x, t)

    sampler.reset()
    x = z.clone()
    for t in sampler.timesteps:
        x = sampler.step(velocity(x, t), t, x)
    assert abs(float(x.mean()) - mu) < 0.01
    assert abs(float(x.std()) / s0 - 1) < tol
    # the exact probability flow of Gaussian data maps noise z to mu + s0·z: each sample follows it
    assert float((x - (mu + s0 * z)).abs().mean()) < 2 * tol
    # every model call is at an integer t of the training grid, starting from pure noise (σ = 1)
    assert calls[0] == T - 1 and all(isinstance(t, int) and 0 <= t < T for t in calls)
    grid_sigmas = (torch.tensor(sampler.grid, dtype=torch.float64) + 1) / T
    if name == "heun":
        assert len(calls) == 2 * len(sampler.grid) - 1  # two calls per step but the last
        torch.testing.assert_close(sampler.scheduler.sigmas[::2].double(), grid_sigmas, rtol=0, atol=1e-7)
    else:
        assert len(calls) == len(sampler.grid) == steps
        # the solver's own σ at each call is the σ the model was trained at for that t
        torch.testing.assert_close(sampler.scheduler.sigmas[:-1].double(), grid_sigmas, rtol=0, atol=1e-7)
    # sample_loop (the engine's loop) gives the same draw from the same noise
    again = sample_loop(exact_velocity(mu, s0), (20_000, 4), sampler, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, x)


def test_shift_spends_more_steps_at_high_noise_and_samplers_fit_the_schedule():
    plain, shifted = flow_grid(10, T), flow_grid(10, T, shift=3.0)
    assert plain[0] == shifted[0] == T - 1 and plain == sorted(plain, reverse=True)
    assert sum(t > T / 2 for t in shifted) > sum(t > T / 2 for t in plain)
    assert plain == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # σ = 1, 0.9, ..., 0.1 on the grid
    with pytest.raises(ConfigError, match="needs a DDPM schedule.*flow samplers"):
        create_sampler("ddim", 10, FLOW)
    with pytest.raises(ConfigError, match="flow-matching schedules only"):
        create_sampler("heun", 10, ScheduleConfig())
    with pytest.raises(ConfigError, match="unknown option"):
        create_sampler("euler", 10, FLOW, eta=0.0)
    with pytest.raises(ConfigError, match="shift"):
        create_sampler("euler", 10, FLOW, shift=-1.0)


C = 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=5), std=0.03).eval()


@pytest.mark.parametrize("sampler", ["dpm++", "heun", "euler"])
def test_cached_generation_equals_recompute_under_flow_with_guidance(model, sampler):
    vis = torch.randn(4, C, generator=torch.Generator().manual_seed(0))
    prompts = [Example(Layout([Text([1, 5, 6])])), Example(Layout([Text([1]), Image(2, 2, 1, 2, noisy=False), Text([7])]), vis)]

    def draw(use_cache: bool, cfg: float) -> torch.Tensor:
        g = Generator(model, 2, use_cache=use_cache, seed=3)
        g.prefill(prompts)
        sampling = VisualSampling(sampler, steps=4, cfg_scale=cfg, schedule=FLOW)
        return g.generate_visual(Image(4, 4, 2, 2), sampling, class_labels=torch.tensor([1, 4]))

    a, b = draw(True, 2.0), draw(False, 2.0)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a, draw(True, 1.0))  # guidance on the velocity changes the sample


def test_flow_training_loss_falls():
    torch.manual_seed(0)
    m = create_model("tiny", token_dim=C, vocab_size=16, num_classes=3)
    ex = [Example(Layout([Text([1, 2]), Image(4, 4, 2, 2)]), torch.randn(16, C) * 0.5 + 0.3, class_label=i % 3) for i in range(4)]
    from unimodal.batch import collate

    batch = collate(ex, C)
    sched = NoiseSchedule(ScheduleConfig(prediction_type="flow", timestep_sampling="logit_normal"))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    hist = []
    for _ in range(120):
        parts = compute_loss(m, batch, sched, generator=g)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        hist.append(float(parts["diffusion"]))
    first, last = sum(hist[:20]) / 20, sum(hist[-20:]) / 20
    assert math.isfinite(last) and last < 0.7 * first, (first, last)


def test_the_checkpoint_records_the_flow_schedule(tmp_path):
    from unimodal.checkpoint import load_checkpoint, save_checkpoint
    from unimodal.config import VisualConfig

    v = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)
    sched = ScheduleConfig(prediction_type="flow", timestep_sampling="logit_normal", logit_mean=-0.2, logit_std=1.3)
    path = save_checkpoint(tmp_path / "c", create_model("tiny", token_dim=v.token_dim, vocab_size=0, num_classes=3), visual=v, schedule=sched)
    assert load_checkpoint(path).schedule == sched
