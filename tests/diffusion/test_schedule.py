"""The noise schedule: bit-identical to diffusers, exact conversions between prediction types."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from unimodal.config import ConfigError
from unimodal.diffusion import NoiseSchedule, ScheduleConfig

CONFIGS = [ScheduleConfig(), ScheduleConfig(num_train_timesteps=500, beta_start=2e-4, beta_end=0.012)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["acdit", "custom"])
def test_betas_and_alphas_cumprod_match_diffusers_exactly(cfg: ScheduleConfig) -> None:
    ns, ref = NoiseSchedule(cfg), DDPMScheduler(**NoiseSchedule(cfg).diffusers_config())
    assert ns.betas.dtype == ns.alphas_cumprod.dtype == torch.float32
    assert ns.alphas_cumprod.shape == (cfg.num_train_timesteps,)
    assert torch.equal(ns.betas, ref.betas)
    assert torch.equal(ns.alphas_cumprod, ref.alphas_cumprod)
    # Sanity on the schedule itself: the DDPM endpoints and monotone decay to almost pure noise.
    assert ns.betas[0].item() == pytest.approx(cfg.beta_start) and ns.betas[-1].item() == pytest.approx(cfg.beta_end)
    assert bool((ns.alphas_cumprod.diff() < 0).all())
    if cfg == ScheduleConfig():
        assert ns.alphas_cumprod[-1] < 1e-4  # t = 999 is (almost) pure noise


def test_add_noise_matches_diffusers_per_sample_and_per_token() -> None:
    ns, ref = NoiseSchedule(), DDPMScheduler(**NoiseSchedule().diffusers_config())
    g = torch.Generator().manual_seed(0)
    B, L, C = 3, 8, 4
    x0, noise = torch.randn(B, L, C, generator=g), torch.randn(B, L, C, generator=g)

    t = torch.tensor([0, 517, 999])  # one t per sample, broadcast over tokens
    torch.testing.assert_close(ns.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=0, atol=0)

    t_tok = ns.sample_timesteps((B, L), generator=g)  # one t per token: diffusers only takes it flattened
    ours = ns.add_noise(x0, noise, t_tok)
    theirs = ref.add_noise(x0.reshape(B * L, C), noise.reshape(B * L, C), t_tok.reshape(-1)).reshape(B, L, C)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    # Tokens of a block share t: a (B, n_blocks) draw expanded over the block's tokens.
    t_blk = torch.tensor([[5, 900], [0, 999], [250, 250]]).repeat_interleave(L // 2, dim=1)  # (B, L)
    x_t = ns.add_noise(x0, noise, t_blk)
    a = ns.alphas_cumprod[999]
    torch.testing.assert_close(x_t[1, L // 2 :], a.sqrt() * x0[1, L // 2 :] + (1 - a).sqrt() * noise[1, L // 2 :])


def test_v_target_matches_diffusers_velocity() -> None:
    ns = NoiseSchedule(ScheduleConfig(prediction_type="v_prediction"))
    ref = DDPMScheduler(**ns.diffusers_config())
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(6, 5, 3, generator=g), torch.randn(6, 5, 3, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    torch.testing.assert_close(ns.target(x0, noise, t), ref.get_velocity(x0, noise, t), rtol=0, atol=0)
    assert torch.equal(NoiseSchedule().target(x0, noise, t), noise)  # ε-prediction regresses the noise


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_predict_x0_and_eps_invert_the_forward_process(prediction_type: str, dtype: torch.dtype) -> None:
    ns = NoiseSchedule(ScheduleConfig(prediction_type=prediction_type))
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 16, 8, generator=g, dtype=dtype)
    noise = torch.randn(4, 16, 8, generator=g, dtype=dtype)
    t = torch.tensor([[0] * 16, [1] * 16, [500] * 8 + [700] * 8, [998] * 8 + [999] * 8])  # (B, L)
    x_t = ns.add_noise(x0, noise, t)
    out = ns.target(x0, noise, t)  # what a perfect model outputs
    # x0 from ε at t=999 divides by sqrt(ab) ≈ 0.006: float32 loses ~2 digits there.
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(ns.predict_x0(out, x_t, t), x0, **tol)
    torch.testing.assert_close(ns.predict_eps(out, x_t, t), noise, **tol)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_matches_diffusers_pred_original_sample(prediction_type: str) -> None:
    ns = NoiseSchedule(ScheduleConfig(prediction_type=prediction_type))
    ref = DDIMScheduler(**ns.diffusers_config(), clip_sample=False)
    ref.set_timesteps(50)
    g = torch.Generator().manual_seed(3)
    x_t, out = torch.randn(2, 7, 4, generator=g), torch.randn(2, 7, 4, generator=g)
    for t in (980, 500, 0):
        theirs = ref.step(out, t, x_t).pred_original_sample
        torch.testing.assert_close(ns.predict_x0(out, x_t, torch.tensor(t)), theirs, rtol=1e-5, atol=1e-5)


def test_sample_timesteps_uniform_over_range_and_seeded() -> None:
    ns = NoiseSchedule()
    t = ns.sample_timesteps((200, 100), generator=torch.Generator().manual_seed(0))
    assert t.shape == (200, 100) and t.dtype == torch.int64
    assert t.min() == 0 and t.max() == 999  # both ends reachable, nothing outside [0, T)
    counts = torch.bincount(t.flatten() // 100, minlength=10).float()  # 2000 expected per decile
    assert (counts - 2000).abs().max() < 200  # > 4 standard deviations
    again = ns.sample_timesteps((200, 100), generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_bad_timestep_shapes_and_dtypes_are_rejected() -> None:
    ns = NoiseSchedule()
    x = torch.zeros(2, 8, 4)
    with pytest.raises(ValueError, match="must broadcast"):
        ns.add_noise(x, x, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="must broadcast"):
        ns.add_noise(x, x, torch.zeros(2, 8, 4, dtype=torch.long))  # t has no channel dim
    with pytest.raises(TypeError, match="integer"):
        ns.add_noise(x, x, torch.zeros(2, 8))
    # Broadcastable prefixes are fine: (B,), (B, 1), scalar.
    for t in (torch.tensor([3, 3]), torch.tensor([[3], [3]]), torch.tensor(3)):
        torch.testing.assert_close(ns.add_noise(x + 1, x, t), ns.add_noise(x + 1, x, torch.full((2, 8), 3)))


@pytest.mark.parametrize(
    "kwargs, field, valid",
    [
        (dict(prediction_type="sample"), "prediction_type", "v_prediction"),
        (dict(beta_schedule="cosine"), "beta_schedule", "linear"),
        (dict(beta_start=0.0), "beta_start", "(0, 1)"),
        (dict(beta_end=1e-5), "beta_end", "beta_start"),
        (dict(num_train_timesteps=0), "num_train_timesteps", ">= 2"),
    ],
)
def test_config_errors_name_field_and_valid_values(kwargs: dict, field: str, valid: str) -> None:
    with pytest.raises(ConfigError) as e:
        ScheduleConfig(**kwargs)
    assert field in str(e.value) and valid in str(e.value)


def test_diffusers_config_round_trips_the_schedule() -> None:
    cfg = ScheduleConfig(beta_end=0.012, prediction_type="v_prediction")
    d = NoiseSchedule(cfg).diffusers_config()
    assert d == dict(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.012,
        beta_schedule="linear",
        prediction_type="v_prediction",
    )
    assert ScheduleConfig(**d) == cfg
