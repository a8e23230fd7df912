"""Diffusion: the noise schedule (training) and samplers (generation) over one set of betas."""

from unimodal.diffusion.samplers import (
    Sampler,
    classifier_free_guidance,
    create_sampler,
    list_samplers,
    sample_loop,
)
from unimodal.diffusion.schedule import NoiseSchedule, ScheduleConfig

__all__ = [
    "NoiseSchedule",
    "Sampler",
    "ScheduleConfig",
    "classifier_free_guidance",
    "create_sampler",
    "list_samplers",
    "sample_loop",
]

from unimodal.diffusion.loss import LossWeights, compute_loss, noise_batch  # noqa: E402

__all__ += ["LossWeights", "compute_loss", "noise_batch"]
