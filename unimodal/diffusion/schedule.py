"""The noise schedule: the one definition of betas, alphas_cumprod and the forward process.

Training (`add_noise`, `target`, `sample_timesteps`) and sampling (diffusers
schedulers built from `diffusers_config()`) read the same numbers, so a model
trained here is sampled under exactly the schedule it was trained on.

Forward process (DDPM, ε- or v-prediction)::

    x_t = sqrt(ab_t) · x0 + sqrt(1 − ab_t) · ε,      ab_t = prod_{s <= t} (1 − beta_s)
    v   = sqrt(ab_t) · ε  − sqrt(1 − ab_t) · x0

Flow matching (``prediction_type="flow"``, rectified flow as in SD3, Show-o2, BAGEL)::

    x_t = (1 − σ_t) · x0 + σ_t · ε,      σ_t = (t + 1) / T,      target u = ε − x0

t stays an integer in {0, ..., T−1} everywhere (the model's time embedding, the
per-block t of a layout, the checkpoint), so σ runs over the grid 1/T, 2/T, ..., 1:
σ = 1 is pure noise (where sampling starts) and the data is never seen unnoised.
Training t is drawn uniformly, or logit-normally (``timestep_sampling="logit_normal"``:
σ = sigmoid(N(logit_mean, logit_std²)) snapped up to the grid, SD3's choice), one per block.

Timesteps are per token: an integer tensor of shape `x.shape[:-1]` (every token
of a block carries its block's t), or a prefix of it that broadcasts (`(B,)`
for one t per sample, `(B, 1)`, a scalar).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch

from ..errors import ConfigError, check_float

BetaSchedule = Literal["linear"]
PredictionType = Literal["epsilon", "v_prediction", "flow"]
TimestepSampling = Literal["uniform", "logit_normal"]
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
TIMESTEP_SAMPLINGS: tuple[str, ...] = get_args(TimestepSampling)


@dataclass
class ScheduleConfig:
    """The noise schedule. Defaults are ACDiT's (and DDPM's, DiT's): linear betas, ε-prediction.

    ``prediction_type="flow"`` switches to rectified-flow matching (the betas are then unused).
    """

    num_train_timesteps: int = 1000  # T; t ∈ {0, ..., T-1}
    beta_start: float = 1e-4  # beta_0 of the linear schedule (DDPM)
    beta_end: float = 0.02  # beta_{T-1} of the linear schedule (DDPM)
    beta_schedule: BetaSchedule = "linear"  # the paper trains with linear betas
    prediction_type: PredictionType = "epsilon"  # what the model outputs: ε (paper), v, or the flow velocity ε − x0
    timestep_sampling: TimestepSampling = "uniform"  # training t: uniform over {0..T-1}, or logit-normal σ (SD3)
    logit_mean: float = 0.0  # logit-normal: mean of logit(σ)
    logit_std: float = 1.0  # logit-normal: std of logit(σ)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and what is valid."""
        T = self.num_train_timesteps
        if not isinstance(T, int) or isinstance(T, bool) or T < 2:
            raise ConfigError(f"ScheduleConfig.num_train_timesteps={T!r} is invalid: must be an integer >= 2")
        if not 0.0 < self.beta_start < 1.0:
            raise ConfigError(f"ScheduleConfig.beta_start={self.beta_start!r} is invalid: must be in (0, 1)")
        if not self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(
                f"ScheduleConfig.beta_end={self.beta_end!r} is invalid: must be in [beta_start={self.beta_start}, 1)"
            )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(
                f"ScheduleConfig.beta_schedule={self.beta_schedule!r} is invalid: must be one of {BETA_SCHEDULES}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"ScheduleConfig.prediction_type={self.prediction_type!r} is invalid: must be one of {PREDICTION_TYPES}"
            )
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ConfigError(
                f"ScheduleConfig.timestep_sampling={self.timestep_sampling!r} is invalid: must be one of {TIMESTEP_SAMPLINGS}"
            )
        check_float("ScheduleConfig.logit_mean", self.logit_mean, low=-10.0, high=10.0)
        check_float("ScheduleConfig.logit_std", self.logit_std, low=0.0, high=10.0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NoiseSchedule:
    """Betas, cumulative alphas and the forward-process algebra of one `ScheduleConfig`.

    Attributes:
        config: the schedule's configuration.
        betas: (T,) float32 noise variances beta_t.
        alphas_cumprod: (T,) float32 ab_t = prod_{s <= t} (1 − beta_s).
    """

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config or ScheduleConfig()
        c = self.config
        # Computed in float32 exactly as diffusers does, so the training schedule is bit-identical to the
        # one its samplers use (float64 would move ~870 of 1000 entries by up to 4e-7 relative).
        self.betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float32)  # (T,)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (T,)
        # flow matching: σ_t = (t + 1) / T, in float64 so the grid is exact before any cast
        self.sigmas = (torch.arange(c.num_train_timesteps, dtype=torch.float64) + 1) / c.num_train_timesteps  # (T,)

    @property
    def is_flow(self) -> bool:
        return self.config.prediction_type == "flow"

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def _coeffs(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(ab_t), sqrt(1 − ab_t)) — for flow (1 − σ_t, σ_t) — gathered at t, shaped to broadcast against `like` (..., C)."""
        t = torch.as_tensor(t, device=like.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be an integer tensor, got dtype {t.dtype}")
        if t.ndim >= like.ndim or any(n not in (1, m) for n, m in zip(t.shape, like.shape)):
            raise ConfigError(
                f"timesteps of shape {tuple(t.shape)} must broadcast against a prefix of the leading dims "
                f"{tuple(like.shape[:-1])} of a tensor of shape {tuple(like.shape)}"
            )
        if self.is_flow:  # (1 − σ_t, σ_t)
            sig = self.sigmas.to(like.device, torch.promote_types(like.dtype, torch.float32))[t.long()]
            sig = sig.reshape(*t.shape, *([1] * (like.ndim - t.ndim)))
            return (1.0 - sig).to(like.dtype), sig.to(like.dtype)
        # float32 roots as diffusers takes them; float64 inputs get float64 roots so a² + s² = 1 stays exact.
        ab = self.alphas_cumprod.to(like.device, torch.promote_types(like.dtype, torch.float32))[t.long()]  # t.shape
        ab = ab.reshape(*t.shape, *([1] * (like.ndim - t.ndim)))  # broadcast over the remaining dims
        return ab.sqrt().to(like.dtype), (1.0 - ab).sqrt().to(like.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample x_t from q(x_t | x0) with the given noise.

        Args:
            x0: (..., C) clean data.
            noise: (..., C) standard Gaussian noise, same shape as x0.
            t: integer timesteps of shape x0.shape[:-1] (or a broadcastable prefix).

        Returns:
            (..., C) x_t = sqrt(ab_t)·x0 + sqrt(1 − ab_t)·noise (flow: (1 − σ_t)·x0 + σ_t·noise).
        """
        a, s = self._coeffs(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of the configured prediction type.

        Args:
            x0: (..., C) clean data.
            noise: (..., C) the noise that `add_noise` used.
            t: integer timesteps of shape x0.shape[:-1] (or a broadcastable prefix).

        Returns:
            (..., C) ε for "epsilon"; v = sqrt(ab_t)·ε − sqrt(1 − ab_t)·x0 for "v_prediction";
            the velocity ε − x0 for "flow".
        """
        if self.config.prediction_type == "epsilon":
            return noise
        if self.is_flow:
            return noise - x0
        a, s = self._coeffs(t, x0)
        return a * noise - s * x0

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Clean data implied by a model output of the configured prediction type.

        Args:
            model_output: (..., C) predicted ε or v.
            x_t: (..., C) the noisy input the model saw.
            t: integer timesteps of shape x_t.shape[:-1] (or a broadcastable prefix).

        Returns:
            (..., C) predicted x0.
        """
        a, s = self._coeffs(t, x_t)
        if self.config.prediction_type == "epsilon":
            return (x_t - s * model_output) / a
        if self.is_flow:  # x_t = x0 + σ·u
            return x_t - s * model_output
        return a * x_t - s * model_output

    def predict_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noise implied by a model output of the configured prediction type.

        Args:
            model_output: (..., C) predicted ε or v.
            x_t: (..., C) the noisy input the model saw.
            t: integer timesteps of shape x_t.shape[:-1] (or a broadcastable prefix).

        Returns:
            (..., C) predicted ε.
        """
        if self.config.prediction_type == "epsilon":
            return model_output
        a, s = self._coeffs(t, x_t)
        if self.is_flow:  # ε = x0 + u = x_t + (1 − σ)·u
            return x_t + a * model_output
        return s * x_t + a * model_output

    def sample_timesteps(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Training timesteps: uniform over {0..T−1}, or logit-normal σ snapped up to the grid.

        Args:
            shape: output shape, e.g. (B, n_blocks) for one t per block.
            generator: optional RNG (must live on `device`).
            device: where to create the tensor.

        Returns:
            int64 tensor of `shape` with values in [0, T).
        """
        T, c = self.num_train_timesteps, self.config
        if c.timestep_sampling == "uniform":
            return torch.randint(0, T, tuple(shape), generator=generator, device=device)
        u = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float64)
        sigma = torch.sigmoid(c.logit_mean + c.logit_std * u)  # in (0, 1)
        if not self.is_flow:  # DDPM: the same shape over t / T
            return (sigma * T).long().clamp(0, T - 1)
        return (torch.ceil(sigma * T) - 1).long().clamp(0, T - 1)  # smallest grid σ_t >= σ

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments that make any diffusers DDPM scheduler use these very betas (flow: only T)."""
        c = self.config
        if self.is_flow:
            return dict(num_train_timesteps=c.num_train_timesteps)
        return dict(
            num_train_timesteps=c.num_train_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
            prediction_type=c.prediction_type,
        )
