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

import torch

from ..errors import ConfigError


def rope_tables(
    pos: torch.Tensor, axes: tuple[int, int, int], theta: float, style: str = "mrope"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer positions.

    Args:
        pos: (B, L, 3) positions on the (t, h, w) axes.
        axes: widths of the head dim given to each axis (even, summing to head_dim).
        theta: rotary base.
        style: "mrope" or "acdit" (see module docstring).

    Returns:
        cos, sin: (B, L, head_dim) float32.
    """
    hd = sum(axes)
    p = pos.float()
    parts = []
    for a, d in enumerate(axes):
        if d == 0:
            continue
        if style == "mrope":
            inv = theta ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float64) / d)
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


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, hd) by (B, L, hd) tables, computed in fp32 and cast back."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, hd)
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
