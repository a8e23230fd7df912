"""Learning-rate schedules: small pure functions of the optimizer step.

`step` is the 0-based index of the optimizer step about to be taken, `total`
the run's number of steps. Every schedule warms up linearly to `peak` over
`warmup` steps (lr = peak·(step+1)/warmup) and, except `constant`, reaches
`min_ratio·peak` exactly at the last step (step = total − 1).
"""

from __future__ import annotations

import math

from unimodal.config import ConfigError


def _warmup(step: int, peak: float, warmup: int) -> float | None:
    return peak * (step + 1) / warmup if step < warmup else None


def wsd_lr(step: int, total: int, peak: float, warmup: int = 0, decay_frac: float = 0.15, min_ratio: float = 0.0) -> float:
    """Warmup-stable-decay (paper: decay over the last 15%): warmup, flat at `peak`, then linear to min_ratio·peak.

    The decay covers the last round(decay_frac·total) steps; where it would overlap the warmup, it is
    shortened to the steps after the warmup.
    """
    w = _warmup(step, peak, warmup)
    if w is not None:
        return w
    n_decay = min(round(decay_frac * total), total - warmup)
    start = total - n_decay
    if n_decay <= 0 or step < start:
        return peak
    frac = min(1.0, (step - start + 1) / n_decay)  # 1/n_decay at the first decay step, 1 at the last
    return peak * (1.0 - frac * (1.0 - min_ratio))


def cosine_lr(step: int, total: int, peak: float, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Warmup, then half a cosine from `peak` (first step after warmup) to min_ratio·peak (last step)."""
    w = _warmup(step, peak, warmup)
    if w is not None:
        return w
    span = total - warmup - 1
    frac = min(1.0, (step - warmup) / span) if span > 0 else 1.0
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def constant_lr(step: int, total: int, peak: float, warmup: int = 0) -> float:
    """Warmup, then `peak` for good."""
    w = _warmup(step, peak, warmup)
    return peak if w is None else w


def lr_at(schedule: str, step: int, total: int, peak: float, warmup: int, decay_frac: float, min_ratio: float) -> float:
    """The learning rate of `schedule` ("wsd", "cosine" or "constant") at `step`."""
    if schedule == "wsd":
        return wsd_lr(step, total, peak, warmup, decay_frac, min_ratio)
    if schedule == "cosine":
        return cosine_lr(step, total, peak, warmup, min_ratio)
    if schedule == "constant":
        return constant_lr(step, total, peak, warmup)
    raise ConfigError(f"lr schedule {schedule!r} is invalid: must be one of ('wsd', 'cosine', 'constant')")
