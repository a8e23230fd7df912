"""Load the official ACDiT release (github.com/thunlp/ACDiT) from a clone, for side-by-side benchmarks.

The release's `models.py` subclasses `timm.models.vision_transformer.Attention` and uses its
`Mlp`. Today's timm passes `device=`/`dtype=` into the norm layer it is given, and the
release's `LlamaRMSNorm` rejects them, so the release no longer builds. `load_release`
imports `models.py` with a minimal stand-in for those two timm classes in `sys.modules`:
the same submodules (qkv, q_norm, k_norm, attn_drop, proj, proj_drop; fc1, act, drop1,
norm, fc2, drop2), the same parameters and the same compute (the release overrides
`Attention.forward`; `Mlp.forward` is fc1 -> act -> fc2 with no-op dropouts and norm).
Nothing of the release's own code is changed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn


class _Attention(nn.Module):
    """timm's `Attention.__init__` (the release overrides `forward`)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: type = nn.LayerNorm, **_: object):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)


class _Mlp(nn.Module):
    """timm's `Mlp`: fc1 -> act -> dropout -> (no norm) -> fc2 -> dropout."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type = nn.GELU, drop: float = 0.0, bias: bool = True, **_: object):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


def load_release(src: str | Path, flex: bool = False) -> types.ModuleType:
    """Import the release's `models.py` from the clone `src` (timm stand-in in place while it imports).

    Args:
        src: directory of the clone (holds models.py and rope.py).
        flex: keep the release's FlexAttention path. The release turns it on whenever the
            import works; on CPU its BlockMask is built for CUDA, so the CPU comparison uses
            its dense-mask SDPA path (`USE_FLEX_ATTENTION = False`), which it also ships.
    """
    src = Path(src).resolve()
    if not (src / "models.py").is_file() or not (src / "rope.py").is_file():
        raise SystemExit(f"--official-src {src}: no models.py and rope.py there (clone github.com/thunlp/ACDiT)")
    import diffusers.utils.torch_utils  # noqa: F401 -- the release's other imports, loaded before the stand-in
    import einops  # noqa: F401

    stub = types.ModuleType("timm.models.vision_transformer")
    stub.Attention, stub.Mlp = _Attention, _Mlp
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.models", "timm.models.vision_transformer", "rope")}
    pkg, sub = types.ModuleType("timm"), types.ModuleType("timm.models")
    pkg.models, sub.vision_transformer = sub, stub
    sys.modules.update({"timm": pkg, "timm.models": sub, "timm.models.vision_transformer": stub})
    sys.path.insert(0, str(src))
    try:
        spec = importlib.util.spec_from_file_location("acdit_official_models", src / "models.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(src))
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    if not flex:
        mod.USE_FLEX_ATTENTION = False
    return mod
