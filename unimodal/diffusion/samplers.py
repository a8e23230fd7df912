"""Samplers: diffusers schedulers behind `create_sampler(name, steps)`, plus the CFG rule.

Every sampler works in the training space x_t = sqrt(ab_t)·x0 + sqrt(1 − ab_t)·ε
(so the initial noise is N(0, I) and the model sees x_t unscaled) and is built
from `NoiseSchedule.diffusers_config()`, so it samples under exactly the betas
the model was trained on. A run is::

    sampler.reset()                                   # fresh solver state: once per block
    x = randn(shape) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        x = sampler.step(model(x, t), t, x, generator)

Multistep solvers (DPM-Solver++) keep past model outputs, so `reset()` must
start every block; `step` checks that timesteps come in order to catch a
forgotten reset.

Flow-matching schedules (``prediction_type="flow"``) sample the ODE dx/dσ = u with
diffusers' flow schedulers: ``euler`` (FlowMatchEulerDiscreteScheduler), ``heun``
(FlowMatchHeunDiscreteScheduler, 2nd order, two model calls per step) and ``dpm++``
(DPMSolverMultistepScheduler in its flow mode, 2nd order, one call per step). Their
σ's are put on the training grid σ_t = (t + 1) / T, so the model is always called at
an integer t it was trained on; ``shift`` (SD3's timestep shift, default 1) spends more
steps at high noise. CFG applies to the velocity like to ε or v.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)

from unimodal.diffusion.schedule import NoiseSchedule, ScheduleConfig

from ..errors import ConfigError, check_float, suggest
from ..registry import Registry

# name -> (diffusers class, constructor defaults). clip_sample is off: latents are not confined to [-1, 1].
_SAMPLERS: Registry[tuple[type, dict[str, Any]]] = Registry("sampler", ConfigError)
_SAMPLERS.add("ddpm", (DDPMScheduler, dict(timestep_spacing="leading", clip_sample=False, variance_type="fixed_small")))
_SAMPLERS.add("ddim", (DDIMScheduler, dict(timestep_spacing="leading", clip_sample=False, set_alpha_to_one=True)))
# ACDiT samples with DPMSolverMultistepScheduler.from_config(DDIMScheduler().config). from_config skips
# every key the DDIM scheduler left at its default (config["_use_default_values"]), so that is the plain
# DPM-Solver++ default: 2nd order, "linspace" spacing (25 steps: 999, 959, ..., 40), not DDIM's "leading".
_SAMPLERS.add("dpm++", (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace")))
_SAMPLERS.add("euler", (EulerDiscreteScheduler, dict(timestep_spacing="leading")))
_ALIASES = {"dpmsolver++": "dpm++"}
# the samplers of flow-matching schedules (same names: the same solver family in the flow parameterisation)
FLOW_SAMPLERS = ("dpm++", "euler", "heun")
_STEP_KWARGS = {"ddim": {"eta": 0.0}}  # per-call options of scheduler.step, settable through create_sampler


def list_samplers(schedule: ScheduleConfig | None = None) -> list[str]:
    """Names accepted by `create_sampler` (aliases included): all of them, or those that sample ``schedule``."""
    if schedule is None:
        return sorted({*_SAMPLERS, *_ALIASES, *FLOW_SAMPLERS})
    if schedule.prediction_type == "flow":
        return sorted({*FLOW_SAMPLERS, *(a for a, k in _ALIASES.items() if k in FLOW_SAMPLERS)})
    return sorted([*_SAMPLERS, *_ALIASES])


class Sampler:
    """One diffusers scheduler with a fixed number of steps and an explicit run lifecycle.

    Attributes:
        name: the sampler's canonical name.
        scheduler: the wrapped diffusers scheduler.
        steps: number of inference steps.
        timesteps: the integer timesteps of one run, in order (largest first).
        init_noise_sigma: std of the initial noise; 1.0 since every sampler works in x_t space.
    """

    init_noise_sigma: float = 1.0

    def __init__(self, name: str, scheduler: Any, steps: int, step_kwargs: dict[str, Any] | None = None) -> None:
        self.name, self.scheduler, self.steps = name, scheduler, steps
        self.step_kwargs = dict(step_kwargs or {})
        self.reset()
        self.timesteps: list[int] = [int(t) for t in self.scheduler.timesteps]

    def reset(self) -> None:
        """Start a fresh run: clears multistep history and the step counter (cheap: ~30 µs on CPU)."""
        self.scheduler.set_timesteps(self.steps)
        self._i = 0

    def _check_t(self, t: int | torch.Tensor) -> None:
        if self._i >= len(self.timesteps) or int(t) != self.timesteps[self._i]:
            expected = self.timesteps[self._i] if self._i < len(self.timesteps) else "none (run finished)"
            raise RuntimeError(
                f"{self.name} sampler got t={int(t)} at step {self._i}, expected t={expected}; "
                "call reset() before each run and step through sampler.timesteps in order"
            )

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Advance x_t to the next timestep of the run (x0 after the last one).

        Args:
            model_output: (..., C) the model's ε or v (the schedule's prediction type) at (sample, t).
            t: the current timestep, `timesteps[i]` at the i-th call since `reset()`.
            sample: (..., C) x_t.
            generator: RNG for stochastic samplers (DDPM, DDIM with eta > 0).

        Returns:
            (..., C) the sample at the next timestep.
        """
        self._check_t(t)
        t_sched = self.scheduler.timesteps[self._i]  # the scheduler's own dtype (Euler refuses ints)
        out = self.scheduler.step(
            model_output, t_sched, sample, generator=generator, return_dict=False, **self.step_kwargs
        )[0]
        self._i += 1
        return out


class _EulerSampler(Sampler):
    """Euler works on x_t / sqrt(ab_t) (variance exploding); convert in and out so callers stay in x_t space."""

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self._check_t(t)
        sigmas = self.scheduler.sigmas  # (steps + 1,) VE sigmas, last one 0
        i, t_sched = self._i, self.scheduler.timesteps[self._i]
        x_ve = sample * (sigmas[i] ** 2 + 1) ** 0.5
        self.scheduler.scale_model_input(x_ve, t_sched)  # diffusers insists on the call; its result is `sample`
        x_ve = self.scheduler.step(model_output, t_sched, x_ve, generator=generator, return_dict=False)[0]
        self._i += 1
        return x_ve / (sigmas[i + 1] ** 2 + 1) ** 0.5


def flow_grid(steps: int, num_train_timesteps: int, shift: float = 1.0) -> list[int]:
    """The integer timesteps (descending, distinct) of a flow run: σ evenly from 1 (shifted), snapped up to the grid."""
    T = num_train_timesteps
    sig = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    sig = shift * sig / (1 + (shift - 1) * sig)
    ts = (torch.ceil(sig * T - 1e-9) - 1).long().clamp(0, T - 1).tolist()
    return sorted(set(ts), reverse=True)


class _FlowSampler(Sampler):
    """A diffusers flow scheduler whose σ's are the training grid σ_t = (t + 1) / T of `flow_grid`."""

    def __init__(self, name: str, scheduler: Any, steps: int, num_train_timesteps: int, shift: float) -> None:
        self.T, self.shift = num_train_timesteps, float(shift)
        self.grid = flow_grid(steps, num_train_timesteps, shift)
        super().__init__(name, scheduler, steps)

    def reset(self) -> None:
        T, grid = self.T, self.grid
        sig = torch.tensor([(t + 1) / T for t in grid], dtype=torch.float32)
        sc = self.scheduler
        if isinstance(sc, FlowMatchEulerDiscreteScheduler):
            sc.set_timesteps(sigmas=sig.tolist())  # timesteps σ·T, then a final σ = 0
            evals = grid
        elif isinstance(sc, FlowMatchHeunDiscreteScheduler):
            sc.set_timesteps(len(grid))
            sc.timesteps = torch.cat([sig[:1], sig[1:].repeat_interleave(2)]) * T  # 2nd-order calls repeat σ
            sc.sigmas = torch.cat([sig[:1], sig[1:].repeat_interleave(2), torch.zeros(1)])
            evals = [grid[0], *[t for t in grid[1:] for _ in range(2)]]
        else:  # DPM-Solver++ in flow mode
            sc.set_timesteps(len(grid))
            sc.timesteps = torch.tensor(grid, dtype=torch.long)
            sc.sigmas = torch.cat([sig, torch.zeros(1)])
            sc.num_inference_steps = len(grid)
            sc.model_outputs = [None] * sc.config.solver_order
            sc.lower_order_nums = 0
            evals = grid
        self.timesteps = list(evals)
        self._i = 0

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self._check_t(t)
        t_sched = self.scheduler.timesteps[self._i]
        out = self.scheduler.step(model_output, t_sched, sample, return_dict=False)[0]
        self._i += 1
        return out.to(sample.dtype)


def _create_flow_sampler(key: str, steps: int, schedule: ScheduleConfig, cfg: dict[str, Any]) -> Sampler:
    if key not in FLOW_SAMPLERS:
        raise ConfigError(
            f"sampler {key!r} needs a DDPM schedule, but this schedule is flow matching; flow samplers: {list(FLOW_SAMPLERS)}"
        )
    options = ("shift", "solver_order") if key == "dpm++" else ("shift",)
    bad = sorted(set(cfg) - set(options))
    if bad:
        raise ConfigError(f"unknown option(s) {bad} for flow sampler {key!r}; valid options: {list(options)}")
    shift = check_float(f"sampler option shift of {key!r}", cfg.get("shift", 1.0), low=0.0, high=100.0, low_open=True)
    T = schedule.num_train_timesteps
    if key == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=1.0)  # our grid carries the shift
    elif key == "heun":
        scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=T, shift=1.0)
    else:
        scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=T, algorithm_type="dpmsolver++", solver_order=int(cfg.get("solver_order", 2)),
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
        )
    return _FlowSampler(key, scheduler, steps, T, shift)


def create_sampler(name: str, steps: int, schedule: ScheduleConfig | None = None, **cfg: Any) -> Sampler:
    """Build a sampler by name over the given noise schedule.

    Args:
        name: one of `list_samplers(schedule)`: "ddpm", "ddim", "dpm++" (alias "dpmsolver++"), "euler";
            for a flow-matching schedule "euler", "heun", "dpm++".
        steps: number of inference steps per run.
        schedule: the training noise schedule (default: ACDiT's).
        **cfg: `eta` for "ddim" (default 0: deterministic), or constructor options of the
            diffusers scheduler (e.g. `solver_order=3`, `timestep_spacing="trailing"`).

    Returns:
        A `Sampler`.

    Raises:
        ValueError: unknown name, non-positive steps, or an option the scheduler does not take.
    """
    key = _ALIASES.get(name, name)
    if key not in _SAMPLERS and key not in FLOW_SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; valid samplers: {list_samplers()}.{suggest(name, list_samplers())}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ConfigError(f"steps={steps!r} is invalid: must be a positive integer")
    schedule = schedule or ScheduleConfig()
    if schedule.prediction_type == "flow":
        return _create_flow_sampler(key, steps, schedule, cfg)
    if key not in _SAMPLERS:
        raise ConfigError(f"sampler {key!r} samples flow-matching schedules only; DDPM samplers: {sorted(_SAMPLERS)}")
    cls, defaults = _SAMPLERS[key]
    step_kwargs = dict(_STEP_KWARGS.get(key, {}))
    schedule_kwargs = NoiseSchedule(schedule or ScheduleConfig()).diffusers_config()
    not_options = ("self", "trained_betas", *schedule_kwargs)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in not_options]
    init_kwargs = dict(defaults)
    for k, v in cfg.items():
        if k in step_kwargs:
            step_kwargs[k] = v
        elif k in schedule_kwargs:
            raise ConfigError(f"{k!r} belongs to the noise schedule: set it in ScheduleConfig, not in create_sampler")
        elif k in valid:
            init_kwargs[k] = v
        else:
            options = [*step_kwargs, *valid]
            raise ConfigError(f"unknown option {k!r} for sampler {key!r}; valid options: {options}.{suggest(k, options)}")
    scheduler = cls(**schedule_kwargs, **init_kwargs)
    return (_EulerSampler if key == "euler" else Sampler)(key, scheduler, steps, step_kwargs)


def classifier_free_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor
) -> torch.Tensor:
    """The one CFG rule: uncond + scale·(cond − uncond), on the model output (ε or v).

    Args:
        cond: (..., C) conditional model output.
        uncond: (..., C) unconditional model output.
        scale: guidance scale (1: plain conditional, 0: unconditional), a float or a tensor
            broadcastable to cond (e.g. (B, 1, 1) per sample).

    Returns:
        (..., C) guided output; exactly `cond` when scale == 1.
    """
    if not isinstance(scale, torch.Tensor) and scale == 1.0:
        return cond  # exact, not cond up to rounding
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def sample_loop(
    denoise_fn: Callable[[torch.Tensor, int], torch.Tensor],
    shape: tuple[int, ...] | torch.Size,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw x0 by running one full sampler run from Gaussian noise.

    Args:
        denoise_fn: (x_t, t) -> model output (ε or v) of x_t's shape; t is a Python int.
        shape: sample shape, e.g. (B, L, C).
        sampler: from `create_sampler`; reset here.
        generator: RNG for the initial noise and stochastic steps (must live on `device`).
        device: where to sample.
        dtype: dtype of the sample.

    Returns:
        Tensor of `shape`: the generated x0.
    """
    sampler.reset()
    x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        x = sampler.step(denoise_fn(x, t), t, x, generator=generator)
    return x
