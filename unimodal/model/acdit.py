"""The ACDiT backbone over one interleaved sequence of text tokens and visual blocks.

DiT-style blocks (RMSNorm, per-head QK RMSNorm, qkv bias, tanh-GELU MLP) where
AdaLN-Zero modulation by (time + class) embedding touches only noisy tokens:
clean and text tokens pass plain RMSNorm and an ungated residual, so the clean
stream never depends on t or on the class label (docs/architecture.md, "SCAM" and "Conditioning").

`forward(batch)` returns text logits at text positions, ε at noisy positions
and, on request, hidden states after chosen layers. Attention masks come from
`unimodal.masks` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..batch import SequenceBatch, batch_plan
from ..config import ModelConfig
from ..errors import ConfigError
from ..layout import PAD_DOC, TEXT
from ..masks import dense_mask, scam_block_mask
from .cpu_gemm import Linear, set_cpu_linear
from .kv_cache import KVCache
from .rope import apply_rope, apply_rope_rows, rope_tables


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (eps 1e-6 as the release), with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused kernel on fp32 inputs (the value of x·rsqrt(mean(x²) + eps)·w written out, ~3x
        # faster forward+backward on CPU), cast back to x's dtype
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


_GELU_C1 = 2 * math.sqrt(2 / math.pi)  # 0.5·(1 + tanh(z)) = sigmoid(2z), z = √(2/π)·(x + 0.044715·x³)
_GELU_C3 = _GELU_C1 * 0.044715


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh-GELU (the release's `GELU(approximate="tanh")`).

    Eager: aten's kernel. Under torch.compile: the same function written as x·sigmoid(2z), which
    inductor vectorises ~4x faster forward and ~1.6x faster forward+backward than its tanh form on
    CPU (equal to 5e-7; benchmarks/vs_official.py times the whole step).
    """
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(x * (_GELU_C1 + _GELU_C3 * x * x))
    return F.gelu(x, approximate="tanh")


@dataclass
class AttnContext:
    """What every layer's attention needs for one forward: backend, mask, rotary tables, cache."""

    backend: str  # "sdpa" or "flex"
    mask: object  # (B, 1, Lq, Lk) bool for SDPA, a BlockMask for flex
    cos: torch.Tensor  # (B, L, hd)
    sin: torch.Tensor
    cache: KVCache | None = None
    update_cache: bool = False
    split: tuple[int, int, int] | None = None  # (s, NB, bs): noisy blocks at columns s.. (BatchPlan.split)
    trim_layer: int = -1  # this layer computes outputs only for columns >= split[0] (nothing reads the rest)
    q_mask: object = None  # the mask rows of the noisy columns split[0].. (the trimmed layer's, and the split attention's)
    clean_mask: object = None  # (B, 1, s, s): set when attention runs split (`Attention.forward`), else None


_flex_compiled = None
MATH_ATTENTION_MAX_KEYS = 128  # bf16 on CPU: written-out attention up to this many keys (see Attention.attend);
# fwd+bwd at batch 32 x 4 heads: 2.2x faster than SDPA at 128 keys, 1.2x at 192, 1.45x slower at 256 (attention_cpu.json)


STEP_SCORES_MAX = 1 << 25  # Attention.attend_block: above this many score elements (128 MiB fp32), fused SDPA


def math_route(q: torch.Tensor, n_keys: int) -> bool:
    """Whether `Attention.attend`'s SDPA goes the written-out way: bf16 on a CPU with at most
    `MATH_ATTENTION_MAX_KEYS` keys (reads only shapes and dtypes, no host sync)."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and n_keys <= MATH_ATTENTION_MAX_KEYS


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d masked)·v for a boolean mask (True: attend), the softmax in fp32. Every query row
    must allow at least one key (SCAM lets every token see itself), else its row is NaN."""
    a = (q @ k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    return a.masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype) @ v


def bias_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d + bias)·v for an additive fp32 bias (0 allowed, -inf not), the softmax in fp32:
    the attention compiled CPU graphs use (`attention_bias`). Every row must allow a key, as for
    `math_attention`."""
    a = (q @ k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5) + bias
    return a.softmax(-1).to(v.dtype) @ v


def attention_bias(mask: torch.Tensor) -> torch.Tensor:
    """The boolean mask as an additive fp32 bias: 0 where True, -inf where False."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))


def bias_route(x: torch.Tensor, rows: int, n_query: int, n_keys: int, n_head: int) -> bool:
    """Whether a compiled CPU graph attends through `bias_attention` instead of SDPA: on a CPU, with at most
    `STEP_SCORES_MAX` score elements. Under inductor the written-out attention with an additive bias, fused
    around two matmuls, runs forward+backward 1.3-1.4x faster than CPU SDPA in fp32 at 112 keys and
    1.2-2x in bf16 at 200-256 keys (2 cores); a boolean mask's masked fill compiles ~2.5x slower than the bias."""
    return x.device.type == "cpu" and rows * n_head * n_query * n_keys <= STEP_SCORES_MAX


def shared_rows_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b[r % Rb] for every row r of a (Ra, H, n, X) and b (Rb, H, X, Y), Ra a multiple of Rb: (Ra, H, n, Y).

    Rows of a stacked as Ra / Rb branches over the same Rb rows of b (guidance's [cond; uncond] over
    one KV cache) become extra query rows of one matmul per b row: b is read once, never tiled.
    """
    Ra, H, n, X = a.shape
    Rb, Y = b.shape[0], b.shape[-1]
    rep = Ra // Rb
    if rep == 1:
        return a @ b
    a = a.view(rep, Rb, H, n, X).permute(1, 2, 0, 3, 4).reshape(Rb, H, rep * n, X)
    return (a @ b).view(Rb, H, rep, n, Y).permute(2, 0, 1, 3, 4).reshape(Ra, H, n, Y)


def _flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: object) -> torch.Tensor:
    global _flex_compiled
    if _flex_compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled(q, k, v, block_mask=block_mask)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim, self.n_kv = cfg.n_head, cfg.head_dim, cfg.kv_heads
        # one fused projection: [q (H heads); k (Hkv heads); v (Hkv heads)]
        self.qkv = Linear(cfg.d_model, (self.n_head + 2 * self.n_kv) * cfg.head_dim, bias=cfg.qkv_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        else:
            self.q_norm = self.k_norm = nn.Identity()
        self.proj = Linear(self.n_head * cfg.head_dim, cfg.d_model, bias=cfg.proj_bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, L, hd), k and v (B, Hkv, L, hd) of x, after QK-norm and before RoPE."""
        q, k, v = self._heads(self.qkv(x))
        return self.q_norm(q), self.k_norm(k), v

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused projection's output (B, L, (H + 2 Hkv)·hd) as q (B, H, L, hd), k and v (B, Hkv, L, hd) views."""
        B, L, _ = qkv.shape
        if self.n_kv == self.n_head:
            qkv = qkv.view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, L, hd)
            return qkv[0], qkv[1], qkv[2]
        # grouped-query attention: Hkv key/value heads
        q, k, v = qkv.split([self.n_head * self.head_dim] + [self.n_kv * self.head_dim] * 2, dim=-1)
        return (q.view(B, L, self.n_head, self.head_dim).transpose(1, 2),
                k.view(B, L, self.n_kv, self.head_dim).transpose(1, 2),
                v.view(B, L, self.n_kv, self.head_dim).transpose(1, 2))

    def rotary_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q and k after QK-norm and RoPE by the (B, L, hd) tables, and v: each (B, heads, L, hd).

        `project` then `apply_rope`; inside a compiled graph in fp32, the same function in the
        projection's row layout (`_rows_qkv`): 4% off the compiled fp32 train step at the release's
        config. In bf16 that layout measured 2.5-5% slower (the bf16 matmuls copy its transposed
        views), and eagerly it is not needed (ZeRO-3, which never compiles, also requires each norm's
        weight to be read by its own module).
        """
        qkv = self.qkv(x)
        if qkv.dtype == torch.float32 and torch.compiler.is_compiling():
            return self._rows_qkv(qkv, cos, sin)
        q, k, v = self._heads(qkv)
        return apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin), v

    def _rows_qkv(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`rotary_qkv` of the projection's output computed in its own (B, L, heads, hd) layout, q and k as one
        tensor when they have the same heads, returned as transposed views: inductor's fused norm+rotary
        kernels and their backward then read and write whole rows (~4.4 ms a layer faster forward+backward
        than the permuted layout at batch 32 x 112 tokens, 4 heads of 64, fp32, 2 cores)."""
        B, L, _ = qkv.shape
        if self.n_kv == self.n_head:
            qkv = qkv.view(B, L, 3, self.n_head, self.head_dim)
            qk = apply_rope_rows(self._qk_norm(qkv[:, :, :2]), cos, sin)  # (B, L, 2, H, hd)
            q, k, v = qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]
        else:  # grouped-query attention: `_heads`' views, back in the row layout
            q, k, v = (t.transpose(1, 2) for t in self._heads(qkv))
            q, k = apply_rope_rows(self.q_norm(q), cos, sin), apply_rope_rows(self.k_norm(k), cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _qk_norm(self, qk: torch.Tensor) -> torch.Tensor:
        """QK-norm of q and k stacked as (B, L, 2, H, hd), each with its own weight, in one kernel (fp32)."""
        if not isinstance(self.q_norm, RMSNorm):
            return qk
        w = torch.stack([self.q_norm.weight, self.k_norm.weight]).float()[:, None]  # (2, 1, hd)
        return (F.rms_norm(qk.float(), (qk.shape[-1],), None, self.q_norm.eps) * w).to(qk.dtype)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        B, _, Lq, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, Lq, self.n_head * self.head_dim))

    def _kv_heads(self, t: torch.Tensor) -> torch.Tensor:
        """Key/value heads repeated to the query heads (query head i reads head i // (H / Hkv))."""
        return t if self.n_kv == self.n_head else t.repeat_interleave(self.n_head // self.n_kv, dim=1)

    def attend_block(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None) -> torch.Tensor:
        """`attend` for the sampler's step: q/k/v of one block's tokens over [past_k; k] (or k alone).

        past_k / past_v may hold fewer rows than q, a divisor of them: query rows stacked as branches
        ([cond; uncond] for guidance) then read one copy of the past (`shared_rows_matmul`), not a
        tiled one. bias (B, 1, Lq, P + Lq) is the mask as an additive fp32 term (0 allowed, -inf not), built once
        per block: adding it is ~2x faster under inductor than a masked fill of a boolean mask. The
        past keys are not concatenated with the block's own: one softmax over the scores of both
        parts, then the two value products summed. On every denoising step that copies a score row
        per query instead of the whole past per layer, and it is exact (the same sums in another order).
        Scores of more than `STEP_SCORES_MAX` elements (a long video's past) go through `attend`
        (fused SDPA over the tiled, concatenated keys) instead, so memory stays that of the keys.
        """
        R, _, n, _ = q.shape
        P = 0 if past_k is None else past_k.shape[2]
        if R * self.n_head * n * (P + n) > STEP_SCORES_MAX:  # a long past: SDPA never holds the whole score matrix
            if past_k is not None:
                rep = R // past_k.shape[0]
                k, v = torch.cat([past_k.repeat(rep, 1, 1, 1), k], 2), torch.cat([past_v.repeat(rep, 1, 1, 1), v], 2)
            return self.attend(q, k, v, bias == 0)
        k, v = self._kv_heads(k), self._kv_heads(v)
        s = q @ k.transpose(-1, -2)
        if past_k is not None:
            past_k, past_v = self._kv_heads(past_k), self._kv_heads(past_v)
            s = torch.cat([shared_rows_matmul(q, past_k.transpose(-1, -2)), s], -1)
        p = (s.float() * (q.shape[-1] ** -0.5) + bias).softmax(-1).to(v.dtype)
        if past_k is None:
            return self._out(p @ v)
        P = past_k.shape[2]
        return self._out(shared_rows_matmul(p[..., :P].contiguous(), past_v) + p[..., P:] @ v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: object, backend: str = "sdpa") -> torch.Tensor:
        """(B, Lq, D): the output projection of attention of q over k/v (Hkv heads shared by H // Hkv queries).

        "sdpa" with a dense boolean mask, "flex" with a BlockMask, "bias" with an additive fp32 mask
        (`bias_attention`: compiled CPU graphs), or "math": softmax(q·kᵀ/√d + mask)·v written out.
        SDPA picks "math" itself for bf16 on a CPU with at most `MATH_ATTENTION_MAX_KEYS` keys: there
        its fused kernel's backward is several times slower than two bf16 matmuls
        (benchmarks/results/attention_cpu.json). The choice reads only shapes and dtypes (no host sync).
        """
        return self._out(self.heads(q, k, v, mask, backend))

    def heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: object, backend: str = "sdpa") -> torch.Tensor:
        """`attend` before the output projection: (B, H, Lq, hd)."""
        k, v = self._kv_heads(k), self._kv_heads(v)
        if backend == "sdpa" and math_route(q, k.shape[2]):
            backend = "math"
        if backend == "flex":
            return _flex_attention(q, k, v, mask)
        if backend == "bias":
            return bias_attention(q, k, v, mask)
        if backend == "math":
            return math_attention(q, k, v, mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def forward(self, x: torch.Tensor, ctx: AttnContext, layer: int, q_from: int = 0) -> torch.Tensor:
        """Attention outputs of the columns q_from.. (every column by default); keys are all of x (and the cache)."""
        q, k, v = self.rotary_qkv(x, ctx.cos, ctx.sin)
        mask = ctx.mask
        if q_from:
            q, mask = q[:, :, q_from:], ctx.q_mask
        if ctx.cache is not None:
            k, v = ctx.cache.keys_values(layer, k, v, ctx.update_cache)  # (B, Hkv, S+L, hd)
        if ctx.clean_mask is not None and not q_from and not (q.device.type == "cpu" and q.dtype == torch.bfloat16):
            # a clean|noisy split: clean rows never read noisy keys (SCAM), so they attend the clean columns
            # alone, and only the noisy rows read every key: the same outputs from ~3/4 of the score work.
            # 2-2.5% off the fp32 train step at the release's config (SDPA, and the compiled bias route);
            # in bf16 on a CPU two small attentions cost more than one (1.5-4% slower), so it stays whole
            s = ctx.split[0]
            y = torch.cat([self.heads(q[:, :, :s], k[:, :, :s], v[:, :, :s], ctx.clean_mask, ctx.backend),
                           self.heads(q[:, :, s:], k, v, ctx.q_mask, ctx.backend)], dim=2)
            return self._out(y)
        return self.attend(q, k, v, mask, ctx.backend)


class MLP(nn.Module):
    """tanh-GELU MLP (DiT), or SwiGLU (Llama): fc1 holds [gate; up], fc2 is the down projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_hidden
        self.swiglu = cfg.mlp == "swiglu"
        self.fc1 = Linear(cfg.d_model, 2 * hidden if self.swiglu else hidden, bias=cfg.mlp_bias)
        self.fc2 = Linear(hidden, cfg.d_model, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc1(x).chunk(2, dim=-1)
            return self.fc2(F.silu(gate) * up)
        return self.fc2(gelu_tanh(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; AdaLN-Zero on noisy tokens only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.d_model, 6 * cfg.d_model))
        self.gate_one = cfg.gate_init == "one"  # noisy gates are 1 + the modulation's (ModelConfig.gate_init)

    def gates(self, gate_msa: torch.Tensor, gate_mlp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The noisy tokens' residual gates from the modulation's two gate chunks (ModelConfig.gate_init)."""
        return (1 + gate_msa, 1 + gate_mlp) if self.gate_one else (gate_msa, gate_mlp)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor | None, slot: torch.Tensor, noisy: torch.Tensor, ctx: AttnContext, layer: int
    ) -> torch.Tensor:
        if c is None:  # no noisy token: the plain (clean) path
            x = x + self.attn(self.norm1(x), ctx, layer)
            return x + self.mlp(self.norm2(x))
        if ctx.split is not None:
            return self._forward_split(x, c, ctx, layer)
        mod = per_token(self.adaLN_modulation(c), slot, noisy)  # (B, L, 6D), zeros on clean tokens
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        ungated = (~noisy | self.gate_one)[..., None].to(x.dtype)  # clean tokens: gate 1 (noisy too with gate_init one)
        x = x + (gate_msa + ungated) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), ctx, layer)
        return x + (gate_mlp + ungated) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))

    def _forward_split(self, x: torch.Tensor, c: torch.Tensor, ctx: AttnContext, layer: int) -> torch.Tensor:
        """The same block when the noisy stream is NB blocks of bs tokens at columns s.. (BatchPlan.split).

        One modulation vector per block is broadcast over its tokens (no per-token gather), and the
        clean columns pass unmodulated and ungated, as in the general path. On the trimmed layer only
        columns s.. are computed (returned): their keys/values still come from every column.
        """
        s, nb, bs = ctx.split
        mod = self.adaLN_modulation(c)[:, :, None]  # (B, NB, 1, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        gate_msa, gate_mlp = self.gates(gate_msa, gate_mlp)
        q0 = s if layer == ctx.trim_layer else 0
        h = _on_noisy(self.norm1(x), s, nb, bs, lambda t: torch.addcmul(shift_msa, t, 1 + scale_msa))
        a = self.attn(h, ctx, layer, q0)
        x = x[:, q0:]
        x = x + _on_noisy(a, s - q0, nb, bs, lambda t: gate_msa * t)
        h = _on_noisy(self.norm2(x), s - q0, nb, bs, lambda t: torch.addcmul(shift_mlp, t, 1 + scale_mlp))
        return x + _on_noisy(self.mlp(h), s - q0, nb, bs, lambda t: gate_mlp * t)


def _block_core(blk: "Block", x: torch.Tensor, c: torch.Tensor, slot: torch.Tensor, noisy: torch.Tensor,
                mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """One block of an uncached, unsplit forward with a dense mask: what `_compiled_block` compiles.
    mask: boolean (SDPA) or an fp32 `attention_bias` ("bias" route)."""
    return blk(x, c, slot, noisy, AttnContext("sdpa" if mask.dtype == torch.bool else "bias", mask, cos, sin), 0)


_block_compiled = None


def _compiled_block():  # noqa: ANN202
    """`_block_core` under torch.compile, built once per process: the block's parameters are inputs of
    the graph (dynamo's inlined nn.Modules), so every layer of every compiled model shares it."""
    global _block_compiled
    if _block_compiled is None:
        _block_compiled = torch.compile(_block_core, dynamic=None)
    return _block_compiled


def _on_noisy(x: torch.Tensor, s: int, nb: int, bs: int, fn) -> torch.Tensor:  # noqa: ANN001
    """x with fn applied to its noisy columns s .. s + nb·bs, seen as (B, nb, bs, D); other columns as they are."""
    B, L, D = x.shape
    n = nb * bs
    y = fn(x[:, s : s + n].reshape(B, nb, bs, D)).reshape(B, n, D)
    if s == 0 and L == n:
        return y
    return torch.cat([x[:, :s], y, x[:, s + n :]], dim=1)


PRECISIONS = ("fp32", "bf16", "auto")


def bf16_supported(device: torch.device | str | None = None) -> bool:
    """Fast bf16 matmuls here: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's feature probes
    return any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)


def resolve_precision(precision: str, device: torch.device | str | None = None) -> str:
    """"fp32" / "bf16" as given; "auto": bf16 where `bf16_supported`, else fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is invalid: must be one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def text_columns(batch: SequenceBatch) -> torch.Tensor:
    """(B, L) the token id at text columns, -1 elsewhere (visual and padding): what `pooled_text` reads."""
    return torch.where(batch.modality == TEXT, batch.text_ids, -1)


def per_token(per_block: torch.Tensor, slot: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Spread (B, NB, K) per-block vectors to (B, L, K) tokens; zeros where not noisy.

    A batched matmul with the (B, L, NB) one-hot of the tokens' slots, exact (one term of 1.0 per
    noisy token, none elsewhere): on CPU it and its backward run ~5x faster than `gather` and its
    scatter-add backward, which took ~10% of a packed easy-VQA training step.
    """
    slots = torch.arange(per_block.shape[1], device=slot.device)
    onehot = ((slot[..., None] == slots) & noisy[..., None]).to(per_block.dtype)  # (B, L, NB)
    return torch.bmm(onehot, per_block)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (..., dim), cos half first then sin (as the release)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    def __init__(self, d_model: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table with one extra row, the null class (index num_classes), for guidance."""

    def __init__(self, num_classes: int, d_model: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, d_model)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(torch.where(y < 0, torch.full_like(y, self.num_classes), y))


def pooled_text(
    emb: nn.Embedding, text: torch.Tensor, doc: torch.Tensor, unit: torch.Tensor, slot_doc: torch.Tensor,
    slot_unit: torch.Tensor,
) -> torch.Tensor:
    """(B, NB, D) per noisy block slot, the mean embedding of the text tokens before it in its document.

    text, doc, unit (B, S): the key columns (text id, -1 where not text). slot_doc, slot_unit (B, NB):
    each slot's document and first unit. A slot with no such text gets zeros. One masked batched
    matmul, no host sync; the columns a slot pools are among those its tokens attend under SCAM.
    """
    w = ((text[:, None] >= 0) & (doc[:, None] == slot_doc[..., None]) & (unit[:, None] < slot_unit[..., None]))
    e = emb(text.clamp(min=0))  # (B, S, D)
    w = w.to(e.dtype)
    return torch.bmm(w, e) / w.sum(-1, keepdim=True).clamp(min=1.0)


class TextConditioner(nn.Module):
    """`ModelConfig.text_condition`: a noisy block's pooled text (`pooled_text`) -> a (D,) condition term.

    RMSNorm (the pooled embeddings are small and shrink with the prompt length), then a SiLU MLP.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(pooled))


def slot_doc_unit(unit: torch.Tensor, noisy: torch.Tensor, doc: torch.Tensor, block_slot: torch.Tensor,
                  n_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, NB) document and first unit of each noisy block slot, from its tokens (PAD_DOC / max for an empty slot)."""
    slots = torch.arange(n_slots, device=unit.device)
    m = noisy[:, None] & (block_slot[:, None] == slots[None, :, None])  # (B, NB, L)
    first = torch.where(m, unit[:, None], torch.iinfo(unit.dtype).max).amin(-1)
    return torch.where(m, doc[:, None], PAD_DOC).amax(-1), first


class FinalLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.d_model, 2 * cfg.d_model))
        self.linear = nn.Linear(cfg.d_model, cfg.token_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


@dataclass
class ModelOutput:
    """text_logits (B, L, V): valid at text positions (zeros elsewhere), None without text.
    pred (B, L, C): the diffusion model output at noisy positions (zeros elsewhere), None without noisy
        tokens: ε, v or the flow velocity, as the schedule's prediction_type says (diffusers' "model_output").
    hidden: layer index -> (B, L, D) hidden states after that many blocks (0 = embeddings)."""

    text_logits: torch.Tensor | None
    pred: torch.Tensor | None
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


class ACDiT(nn.Module):
    """The unified backbone. A plain nn.Module: no trainer, sampler or file I/O."""

    accepts_pruned_batch = True  # compute_loss may drop the columns no output reads (batch.prune_batch)
    precision = "fp32"  # "fp32" or "bf16" (see set_precision); an instance attribute once set

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self._tables: dict[tuple, tuple] = {}  # layout_key -> (mask, cos, sin), see layout_tables
        D = cfg.d_model
        self.x_embedder = nn.Linear(cfg.token_dim, D, bias=False)
        self.t_embedder = TimestepEmbedder(D, cfg.freq_dim)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D) if cfg.num_classes > 0 else None
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, D) if cfg.vocab_size > 0 else None
        self.text_cond = TextConditioner(cfg) if cfg.text_condition else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.final_layer = FinalLayer(cfg)
        if cfg.vocab_size > 0:
            self.text_norm = RMSNorm(D, cfg.norm_eps)
            self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        self.initialize_weights()
        set_cpu_linear(self, "aten" if cfg.cpu_linear == "aten" else "onednn")

    def initialize_weights(self) -> None:
        """All initialisation in one place (DiT / the release)."""
        # every Linear: xavier-uniform weights, zero biases
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # label table and timestep MLP: N(0, 0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.text_cond is not None:  # its output joins the condition at the label table's scale
            nn.init.normal_(self.text_cond.mlp[2].weight, std=0.02)
        # text embedding: N(0, 0.02) as GPT-2
        if self.tok_embeddings is not None:
            nn.init.normal_(self.tok_embeddings.weight, std=0.02)
        # adaLN-Zero: every modulation output and the final linear start at zero
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight

    # ------------------------------------------------------------------------------------
    def attention_backend(self, device: torch.device, cached: bool) -> str:
        """auto: FlexAttention on CUDA without a cache (it has a backward there), SDPA + dense mask elsewhere."""
        b = self.cfg.attn_backend
        if b == "auto":
            return "flex" if device.type == "cuda" and not cached else "sdpa"
        if b == "flex" and cached:
            return "sdpa"  # cached decoding has ragged key lengths; the dense mask is exact and cheap there
        return b

    def condition(self, batch: SequenceBatch, cache: KVCache | None = None) -> torch.Tensor | None:
        """(B, NB, D) condition per noisy block: t embedding + class embedding (+ pooled text with
        `text_condition`, over the cached and the new tokens). None without block slots."""
        if batch.t.shape[1] == 0:
            return None
        c = self.t_embedder(batch.t)
        if self.y_embedder is not None:
            c = c + self.y_embedder(batch.y)
        if self.text_cond is not None:
            text = text_columns(batch)
            unit, doc = batch.unit, batch.doc
            if cache is not None and len(cache):
                unit, _, doc = cache.meta_with(unit, batch.noisy, doc)
                text = cache.text_with(text)
            s_doc, s_unit = slot_doc_unit(batch.unit, batch.noisy, batch.doc, batch.block_slot, batch.t.shape[1])
            c = c + self.text_cond(pooled_text(self.tok_embeddings, text, doc, unit, s_doc, s_unit))
        return c

    def embed(self, batch: SequenceBatch, has_text: bool = True) -> torch.Tensor:
        """(B, L, D) input embeddings: token embedding at text, shared linear at visual tokens.

        `has_text=False` (known from the batch plan) skips the token embedding; no host sync either way.
        """
        dtype = self.x_embedder.weight.dtype
        x = self.x_embedder(batch.visual.to(dtype))  # (B, L, D); padding/text rows overwritten below
        is_text = batch.modality == TEXT
        if self.tok_embeddings is not None and has_text:
            x = torch.where(is_text[..., None], self.tok_embeddings(batch.text_ids * is_text), x)
        return x

    def set_precision(self, precision: str) -> "ACDiT":
        """Select the compute precision of forward: "fp32", "bf16" or "auto" (bf16 where the hardware has it).

        bf16 is mixed precision: the weights stay fp32 (the optimizer's master copy), matmuls and
        attention run in bf16 under `torch.autocast`, while RMSNorm, the rotary tables, softmax
        statistics (kept fp32 inside SDPA/flex) and the loss (compute_loss upcasts) stay fp32.
        """
        self.precision = resolve_precision(precision)
        return self

    def compile_forward(self, max_layouts: int = 8) -> "ACDiT":
        """Run the backbone through `torch.compile` (inductor) from now on; the weights are untouched.

        Two compiled paths, chosen per batch from its plan (no host sync for a keyed layout):

        * A batch of one uniform noisy stream (`BatchPlan.split`: class->image, video) runs the whole
          `forward_fp` compiled with static shapes (`dynamic=False`): such layouts repeat, and each
          distinct one compiles once, up to `max_layouts` compiles of this model; beyond that torch
          falls back to eager for new shapes rather than compiling on every step.
        * Any other batch (packed text + images: a new layout, row count and length nearly every
          step) runs `forward_fp` eagerly, but each transformer block through one compiled function
          (`_compiled_block`) with the rows, the columns and the noisy block slots marked dynamic:
          one graph serves every layer and every later batch, so a training run compiles once
          (~25 s on 2 CPU cores for a 4-layer model) instead of once per layout. This needs the
          dense SDPA mask; with FlexAttention (a CUDA default) the blocks of such a batch run
          eagerly around the separately compiled flex kernel.

        A forward over a KV cache stays eager (its shape changes with every block): the engine
        compiles its denoising steps apart, with static shapes (`unimodal.model.block_step`,
        `Generator(compile=...)`).
        """
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, max_layouts)
        if not getattr(self, "compiled", False):
            self._eager_forward_fp = self.forward_fp
            self._static_forward_fp = torch.compile(self.forward_fp, dynamic=False)
            self.compiled = True
        return self

    def forward(self, batch: SequenceBatch, *args, **kwargs) -> ModelOutput:  # noqa: ANN002, ANN003
        """Run the backbone at `self.precision` (see `forward_fp` for the arguments)."""
        cached = (args[0] if args else kwargs.get("cache")) is not None
        fp = self.forward_fp
        if getattr(self, "compiled", False) and not cached:
            fp = self._static_forward_fp if self._static_layout(batch) else self._eager_forward_fp
        if self.precision == "bf16":
            with torch.autocast(batch.unit.device.type, dtype=torch.bfloat16):
                out = fp(batch, *args, **kwargs)
            return ModelOutput(*(None if v is None else v.float() for v in (out.text_logits, out.pred)), out.hidden)
        return fp(batch, *args, **kwargs)

    def _static_layout(self, batch: SequenceBatch) -> bool:
        """Whether a compiled model runs this (uncached) batch as one static-shape graph: a keyed layout
        whose noisy tokens form one uniform stream (`BatchPlan.split`), the layouts that repeat."""
        if batch.layout_key is None or batch.t.shape[1] == 0:
            return False
        return batch_plan(batch, prune=False).split is not None

    def _block_runner(self, c: torch.Tensor | None, batch: SequenceBatch, ctx: AttnContext):  # noqa: ANN202
        """(i, x) -> block i on x: through `_compiled_block` when the model is compiled and this forward runs
        eagerly (a layout that does not repeat) with a dense mask and no cache; else the block itself.

        The inputs every layer shares are made contiguous and marked dynamic once per forward (a pruned
        batch's slot/noisy are column views, and strides are guarded: a recompile); only x per layer.
        """
        if (not getattr(self, "compiled", False) or torch.compiler.is_compiling() or c is None
                or ctx.cache is not None or ctx.split is not None or ctx.backend != "sdpa"):
            return lambda i, x: self.blocks[i](x, c, batch.block_slot, batch.noisy, ctx, i)
        mask = ctx.mask
        if bias_route(c, *mask.shape[:1], *mask.shape[2:], self.cfg.n_head):
            mask = attention_bias(mask)  # built once here, read by every layer's compiled block
        shared = tuple(t.contiguous() for t in (c, batch.block_slot, batch.noisy, mask, ctx.cos, ctx.sin))
        for t, dims in zip(shared, ((0, 1), (0, 1), (0, 1), (0, 2, 3), (0, 1), (0, 1))):
            for d in dims:
                torch._dynamo.maybe_mark_dynamic(t, d)
        fn = _compiled_block()

        def run(i: int, x: torch.Tensor) -> torch.Tensor:
            x = x.contiguous()
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(x, 1)
            return fn(self.blocks[i], x, *shared)

        return run

    def forward_fp(
        self,
        batch: SequenceBatch,
        cache: KVCache | None = None,
        update_cache: bool = False,
        hidden_layers: tuple[int, ...] | list[int] = (),
        compute_logits: bool = True,
        one_noisy_block: bool = False,
    ) -> ModelOutput:
        """Run the backbone.

        Args:
            batch: per-token tensors (see SequenceBatch). With a cache, only the new tokens.
            cache: keys/values of the clean past; new queries attend cache + themselves.
            update_cache: append the new tokens' keys/values to the cache (clean tokens only).
            hidden_layers: return hidden states after these many blocks (0..n_layer).
            compute_logits: skip the LM head when False.
            one_noisy_block: the caller promises that every token of every row is one noisy block
                (block slot 0, as `generate.token_batch(noisy=True)` builds a denoising step). Each
                row's modulation is then broadcast over its tokens, with no per-token gather or
                masking: the same outputs, fewer operations on every denoising step.
        """
        for i in hidden_layers:
            if not 0 <= i <= self.cfg.n_layer:
                raise ConfigError(f"hidden layer {i} out of range: valid are 0..{self.cfg.n_layer}")
        plan = batch_plan(batch, prune=False) if batch.layout_key is not None and cache is None else None
        x = self.embed(batch, has_text=plan is None or plan.has_text)  # (B, L, D)
        c = self.condition(batch, cache)  # (B, NB, D) or None
        backend = self.attention_backend(x.device, cache is not None)
        if cache is not None:
            cos, sin = self._rope(batch.pos)
            k_meta = cache.meta_with(batch.unit, batch.noisy, batch.doc)
            mask = dense_mask(batch.unit, batch.noisy, batch.doc, *k_meta)[:, None]  # (B, 1, Lq, S+Lq)
        else:
            mask, cos, sin = self.layout_tables(batch, backend)
        split = plan.split if plan is not None and c is not None else None
        if one_noisy_block and c is not None:
            if c.shape[1] != 1:
                raise ConfigError(f"one_noisy_block needs one noisy block slot per row, the batch has {c.shape[1]}")
            split = (0, 1, batch.unit.shape[1])
        # the last layer's clean columns feed nothing when only eps is read (no text out, no hidden states)
        trim = (split is not None and not hidden_layers and split[0] > 0
                and not (plan.has_text and compute_logits) and backend == "sdpa")
        # split attention (Attention.forward): clean columns 0..s, then the noisy stream to the end of the row
        split_attn = (split is not None and cache is None and backend == "sdpa" and split[0] > 0
                      and split[0] + split[1] * split[2] == batch.unit.shape[1])
        if (torch.compiler.is_compiling() and backend == "sdpa" and cache is None
                and bias_route(x, *mask.shape[:1], *mask.shape[2:], self.cfg.n_head)):
            backend = "bias"
        if backend == "bias":
            mask = attention_bias(mask)  # one bias per forward, every layer reads it
        ctx = AttnContext(backend, mask, cos, sin, cache, update_cache, split,
                          self.cfg.n_layer - 1 if trim else -1,
                          mask[:, :, split[0]:] if trim or split_attn else None,
                          mask[:, :, : split[0], : split[0]] if split_attn else None)
        hidden = {0: x} if 0 in hidden_layers else {}
        block = self._block_runner(c, batch, ctx)
        for i in range(len(self.blocks)):
            x = block(i, x)
            if i + 1 in hidden_layers:
                hidden[i + 1] = x
        if cache is not None and update_cache:
            cache.commit_meta(batch.unit, batch.noisy, batch.doc, text_columns(batch))

        eps = None
        fl = self.final_layer
        B, L = batch.unit.shape
        if split is not None:
            s0, nb, bs = split
            xs = x[:, : nb * bs] if trim else x[:, s0 : s0 + nb * bs]  # trimmed: x holds columns s0.. only
            shift, scale = fl.adaLN_modulation(c)[:, :, None].chunk(2, dim=-1)  # (B, NB, 1, D)
            h = torch.addcmul(shift, fl.norm_final(xs).reshape(B, nb, bs, -1), 1 + scale)
            e = fl.linear(h).reshape(B, nb * bs, -1)
            eps = torch.cat([e.new_zeros(B, s0, e.shape[-1]), e, e.new_zeros(B, L - s0 - nb * bs, e.shape[-1])], 1)
        elif c is not None:  # any layout: per-token modulation, zero where not noisy (no host sync)
            shift, scale = per_token(fl.adaLN_modulation(c), batch.block_slot, batch.noisy).chunk(2, dim=-1)
            eps = fl.linear(modulate(fl.norm_final(x), shift, scale)) * batch.noisy[..., None].to(x.dtype)
        logits = None
        if compute_logits and self.tok_embeddings is not None and (plan is None or plan.has_text):
            is_text = batch.modality == TEXT
            if plan is not None or bool(is_text.any()):
                idx = is_text.nonzero(as_tuple=True)
                logits = x.new_zeros(*x.shape[:2], self.cfg.vocab_size)
                logits[idx] = self.lm_head(self.text_norm(x[idx])).to(logits.dtype)
        return ModelOutput(logits, eps, hidden)

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        return rope_tables(pos, cfg.rope_axes, cfg.rope_theta, cfg.rope_style, cfg.rope_freqs, cfg.rope_scaling)

    def layout_tables(self, batch: SequenceBatch, backend: str) -> tuple[object, torch.Tensor, torch.Tensor]:
        """(mask, cos, sin) of an uncached forward: built once per `batch.layout_key` and device, then reused.

        The SDPA mask is the dense SCAM mask (B, 1, L, L); flex gets a BlockMask built from the same rule.
        A batch without a key gets fresh tables (nothing is hashed or read back to the host).
        """
        key = None
        if batch.layout_key is not None:
            key = (batch.layout_key, str(batch.unit.device), backend)
            hit = self._tables.get(key)
            if hit is not None:
                return hit
        cos, sin = self._rope(batch.pos)
        if backend == "flex":
            mask = scam_block_mask(batch.unit, batch.noisy, batch.doc, key=key)
        else:
            mask = dense_mask(batch.unit, batch.noisy, batch.doc)[:, None]  # (B, 1, L, L)
        if key is not None:
            if len(self._tables) >= 32:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = (mask, cos, sin)
        return mask, cos, sin

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
