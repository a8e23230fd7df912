"""Every sampler on a problem with a known answer: Gaussian data and its exact denoiser.

For x0 ~ N(mu, sigma²) per dimension and x_t = sqrt(ab)·x0 + sqrt(1 − ab)·ε, the optimal
predictions are closed form (s² = ab·sigma² + 1 − ab):

    E[ε | x_t]  = sqrt(1 − ab) · (x_t − sqrt(ab)·mu) / s²
    E[x0 | x_t] = mu + sqrt(ab) · sigma² · (x_t − sqrt(ab)·mu) / s²

so a correct sampler fed this oracle must return samples with mean mu and std sigma, and a
deterministic one must follow the probability-flow ODE, which maps the starting noise z at
timestep T to mu + sigma · (z − sqrt(ab_T)·mu) / s_T sample by sample.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from unimodal.diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    classifier_free_guidance,
    create_sampler,
    list_samplers,
    sample_loop,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers + numpy 2

MU, SIGMA = 0.7, 0.5  # 27% of the data lies above 1: clipping x0 to [-1, 1] would show
SHAPE = (8192, 2)  # 16384 values: standard error 0.004 on the mean, 0.6% on the std


def oracle(mu: float, sigma: float, schedule: ScheduleConfig) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The exact ε- or v-predictor for N(mu, sigma²) data under `schedule`."""
    ns = NoiseSchedule(schedule)

    def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
        ab = ns.alphas_cumprod[t].double()
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x = x_t.double()
        eps = s * (x - a * mu) / (ab * sigma**2 + 1 - ab)
        x0 = mu + a * sigma**2 * (x - a * mu) / (ab * sigma**2 + 1 - ab)
        out = eps if schedule.prediction_type == "epsilon" else a * eps - s * x0
        return out.to(x_t.dtype)

    return denoise


def flow_map(z: torch.Tensor, t_start: int, mu: float, sigma: float) -> torch.Tensor:
    """Where the exact probability-flow ODE takes starting noise z (at t_start) to at t = 0."""
    ab = NoiseSchedule().alphas_cumprod[t_start].double()
    return (mu + sigma * (z.double() - ab.sqrt() * mu) / (ab * sigma**2 + 1 - ab).sqrt()).float()


# (name, steps, prediction type, extra options, std tolerance). Step counts are where the measured
# discretisation error stays below the tolerance; with fewer steps every sampler shrinks the spread
# (DDIM 50 steps: std −5%; DPM++ 25 steps ends with one jump to E[x0 | x_40], −2%).
CASES = [
    ("ddpm", 1000, "epsilon", {}, 0.03),
    ("ddpm", 250, "v_prediction", {}, 0.05),
    ("ddim", 100, "epsilon", {}, 0.04),
    ("ddim", 100, "epsilon", {"eta": 1.0}, 0.08),
    ("ddim", 100, "v_prediction", {}, 0.04),
    ("dpm++", 25, "epsilon", {}, 0.03),
    ("dpmsolver++", 25, "v_prediction", {}, 0.03),
    ("euler", 100, "epsilon", {}, 0.04),
]


@pytest.mark.parametrize("name, steps, prediction_type, cfg, std_tol", CASES, ids=lambda v: str(v))
def test_sampler_recovers_gaussian_data(name: str, steps: int, prediction_type: str, cfg: dict, std_tol: float) -> None:
    schedule = ScheduleConfig(prediction_type=prediction_type)
    sampler = create_sampler(name, steps, schedule, **cfg)
    x = sample_loop(oracle(MU, SIGMA, schedule), SHAPE, sampler, generator=torch.Generator().manual_seed(0))
    assert x.shape == SHAPE and x.dtype == torch.float32
    assert abs(x.mean().item() - MU) < 0.025
    assert abs(x.std().item() / SIGMA - 1) < std_tol


@pytest.mark.parametrize(
    "name, steps, prediction_type, tol",
    [
        ("ddim", 100, "epsilon", 0.03),
        ("euler", 100, "epsilon", 0.03),
        ("dpm++", 25, "epsilon", 0.025),
        ("dpm++", 25, "v_prediction", 0.025),
    ],
)
def test_deterministic_samplers_follow_the_probability_flow(
    name: str, steps: int, prediction_type: str, tol: float
) -> None:
    schedule = ScheduleConfig(prediction_type=prediction_type)
    sampler = create_sampler(name, steps, schedule)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    x = z.clone()
    sampler.reset()
    for t in sampler.timesteps:
        x = sampler.step(oracle(MU, SIGMA, schedule)(x, t), t, x)
    err = (x - flow_map(z, sampler.timesteps[0], MU, SIGMA)).abs() / SIGMA
    assert err.mean() < tol  # measured: DDIM/Euler 100 steps 0.022, DPM++ 25 steps 0.016 (2nd order)


def test_euler_in_x_t_space_is_ddim() -> None:
    # Euler on ε in sigma space is DDIM (eta=0): equal samples check the x_t <-> sigma-space conversion.
    den = oracle(MU, SIGMA, ScheduleConfig())
    xs = [
        sample_loop(den, SHAPE, create_sampler(n, 30), generator=torch.Generator().manual_seed(4))
        for n in ("euler", "ddim")
    ]
    torch.testing.assert_close(xs[0], xs[1], rtol=1e-4, atol=1e-4)


def test_samplers_use_the_training_betas() -> None:
    schedule = ScheduleConfig(num_train_timesteps=500, beta_end=0.012)
    ab = NoiseSchedule(schedule).alphas_cumprod
    for name in list_samplers(schedule):
        sampler = create_sampler(name, 10, schedule)
        assert torch.equal(sampler.scheduler.alphas_cumprod, ab), name
        assert 0 <= min(sampler.timesteps) and max(sampler.timesteps) < 500, name


def test_dpmpp_is_acdit_dpm_solver_from_ddim_default_config() -> None:
    # ACDiT: DPMSolverMultistepScheduler.from_config(DDIMScheduler().config), 2nd order, 25 steps.
    # from_config drops the keys DDIM left at their defaults, "leading" spacing included: the release ran
    # the plain DPM-Solver++ defaults, "linspace" spacing.
    ref = DPMSolverMultistepScheduler.from_config(DDIMScheduler().config)
    ref.set_timesteps(25)
    sampler = create_sampler("dpm++", 25)
    assert sampler.timesteps == ref.timesteps.tolist()
    assert sampler.timesteps[:3] == [999, 959, 919] and sampler.timesteps[-1] == 40
    ours, theirs = sampler.scheduler.config, ref.config
    keys = [k for k in theirs if not k.startswith("_")]
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


def test_stochastic_samplers_are_deterministic_under_a_seed() -> None:
    den = oracle(MU, SIGMA, ScheduleConfig())
    for name, cfg in (("ddpm", {}), ("ddim", {"eta": 1.0})):
        sampler = create_sampler(name, 20, **cfg)
        a, b, c = (sample_loop(den, (64, 4), sampler, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8))
        assert torch.equal(a, b) and not torch.allclose(a, c), name


def test_reset_starts_a_fresh_run_and_out_of_order_steps_fail() -> None:
    den = oracle(MU, SIGMA, ScheduleConfig())
    sampler = create_sampler("dpm++", 10)
    first = sample_loop(den, (32, 2), sampler, generator=torch.Generator().manual_seed(0))
    second = sample_loop(den, (32, 2), sampler, generator=torch.Generator().manual_seed(0))  # history cleared
    assert torch.equal(first, second)
    x = torch.zeros(3, 2)
    with pytest.raises(RuntimeError, match="reset"):  # run finished: the next block needs reset()
        sampler.step(den(x, sampler.timesteps[0]), sampler.timesteps[0], x)
    sampler.reset()
    with pytest.raises(RuntimeError, match=f"expected t={sampler.timesteps[0]}"):
        sampler.step(den(x, sampler.timesteps[1]), sampler.timesteps[1], x)


def test_classifier_free_guidance_formula_and_its_effect_on_samples() -> None:
    mu_c, mu_u, scale = 0.9, 0.2, 1.5
    schedule = ScheduleConfig()
    cond, uncond = oracle(mu_c, SIGMA, schedule), oracle(mu_u, SIGMA, schedule)
    x = torch.randn(5, 3)
    assert torch.equal(classifier_free_guidance(cond(x, 400), uncond(x, 400), 1.0), cond(x, 400))
    assert torch.equal(classifier_free_guidance(cond(x, 400), uncond(x, 400), 0.0), uncond(x, 400))
    per_sample = torch.tensor([1.0, 1.5, 2.0, 0.0, 3.0]).view(5, 1)
    torch.testing.assert_close(
        classifier_free_guidance(cond(x, 400), uncond(x, 400), per_sample),
        uncond(x, 400) + per_sample * (cond(x, 400) - uncond(x, 400)),
    )
    # With equal variances, guided ε is the exact denoiser of N(mu_u + s·(mu_c − mu_u), sigma²).
    guided = lambda x_t, t: classifier_free_guidance(cond(x_t, t), uncond(x_t, t), scale)  # noqa: E731
    gen = lambda fn: sample_loop(  # noqa: E731
        fn, SHAPE, create_sampler("dpm++", 25), generator=torch.Generator().manual_seed(0)
    )
    x_cfg, x_ref = gen(guided), gen(oracle(mu_u + scale * (mu_c - mu_u), SIGMA, schedule))
    torch.testing.assert_close(x_cfg, x_ref, rtol=1e-4, atol=1e-4)
    assert abs(x_cfg.mean().item() - (mu_u + scale * (mu_c - mu_u))) < 0.025


def test_unknown_names_and_options_list_the_valid_ones() -> None:
    assert {"ddpm", "ddim", "dpm++", "dpmsolver++", "euler"} <= set(list_samplers())
    with pytest.raises(ValueError) as e:
        create_sampler("dpm_solver++", 25)
    msg = str(e.value)
    assert "'dpm_solver++'" in msg and all(n in msg for n in list_samplers()) and "Did you mean 'dpmsolver++'" in msg
    with pytest.raises(ValueError, match="valid options.*solver_order"):
        create_sampler("dpm++", 25, solver_ordr=3)
    with pytest.raises(ValueError, match="ScheduleConfig"):
        create_sampler("ddim", 50, beta_end=0.012)  # the betas have one home
    with pytest.raises(ValueError, match="steps"):
        create_sampler("ddim", 0)
