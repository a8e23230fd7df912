"""Multimodal rotary embedding over three axes (t, h, w) — the one rotary rule.

Two table layouts share one application `x·cos + rotate_half(x)·sin` with
rotate_half over the whole head dimension:

* ``mrope`` (default): per-axis frequencies theta^(-2k/d_a); the half-dim angle
  vector is [angles_t, angles_h, angles_w], duplicated to the full head dim, so
  dimension j and j + hd/2 form a proper rotation pair.
* ``acdit``: the released RoPE-ND, reproduced exactly for converted checkpoints:
  per-axis inv_freq = theta^(-linspace(0, hd, d_a/2)/hd), each axis' angles
  duplicated to its own width [a, a], axes concatenated. With rotate_half over the
  whole head dim this pairs dimension j with j + hd/2 *across* axes (a quirk of the
  release, kept as is).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def scale_inv_freq(inv: torch.Tensor, scaling: dict | None) -> torch.Tensor:
    """Apply a Hugging Face `rope_scaling` record to inverse frequencies (float64).

    linear: every frequency divided by `factor`. llama3 (Llama-3.1): wavelengths longer
    than original_max_position_embeddings / low_freq_factor are divided by `factor`, those
    shorter than original_max_position_embeddings / high_freq_factor are kept, and the band
    between is interpolated linearly in original_len / wavelength.
    """
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    if kind != "llama3":
        raise ConfigError(f"rope_scaling type {kind!r} is not supported: valid are 'linear', 'llama3'")
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > old_len / low, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, out)


def rope_tables(
    pos: torch.Tensor,
    axes: tuple[int, int, int],
    theta: float,
    style: str = "mrope",
    freqs: str = "axis",
    scaling: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer positions.

    Args:
        pos: (B, L, 3) positions on the (t, h, w) axes.
        axes: widths of the head dim given to each axis (even, summing to head_dim).
        theta: rotary base.
        style: "mrope" or "acdit" (see module docstring).
        freqs: mrope only. "axis": a frequency ladder per axis; "shared": one 1-D ladder
            theta^(-2k/head_dim), pair k taking its position from the axis whose share of
            `axes` holds it (the LLM's RoPE exactly when the three positions agree).
        scaling: a Hugging Face `rope_scaling` record (see `scale_inv_freq`), or None.

    Returns:
        cos, sin: (B, L, head_dim) float32.
    """
    hd = sum(axes)
    p = pos.float()
    if style == "mrope" and freqs == "shared":
        inv = scale_inv_freq(theta ** (-torch.arange(0, hd, 2, device=pos.device, dtype=torch.float64) / hd), scaling)
        axis_of = torch.repeat_interleave(torch.arange(3, device=pos.device), torch.tensor(axes, device=pos.device) // 2)
        half = p[..., axis_of] * inv.float()  # (B, L, hd/2): pair k rotates by its axis' position
        ang = torch.cat([half, half], dim=-1)
        return ang.cos(), ang.sin()
    parts = []
    for a, d in enumerate(axes):
        if d == 0:
            continue
        if style == "mrope":
            inv = scale_inv_freq(theta ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float64) / d), scaling)
        elif style == "acdit":
            inv = theta ** (-torch.linspace(0, hd, d // 2, device=pos.device, dtype=torch.float64) / hd)
        else:
            raise ConfigError(f"rope style {style!r} is invalid: must be one of ('mrope', 'acdit')")
        parts.append(p[..., a, None] * inv.float())  # (B, L, d/2)
    if style == "mrope":
        half = torch.cat(parts, dim=-1)  # (B, L, hd/2)
        ang = torch.cat([half, half], dim=-1)  # (B, L, hd)
    else:
        ang = torch.cat([torch.cat([x, x], dim=-1) for x in parts], dim=-1)  # (B, L, hd)
    return ang.cos(), ang.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """cat(-x2, x1) over the whole last dim, x = cat(x1, x2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope_rows(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` for x in the projection's (B, L, ..., hd) layout (any head axes after L), by (B, L, hd) tables."""
    shape = cos.shape[:2] + (1,) * (x.dim() - 3) + cos.shape[2:]
    xf = x.float()
    return (xf * cos.view(shape) + rotate_half(xf) * sin.view(shape)).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, hd) by (B, L, hd) tables, computed in fp32 and cast back."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, hd)
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
