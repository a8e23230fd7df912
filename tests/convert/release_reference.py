"""An independent minimal reference of the released ACDiT, written from the facts of the official release (docs/architecture.md, "Converting a released checkpoint").

It shares no code with unimodal: its own modules (with the release's state-dict
layout), its own RoPE-ND (linspace inv_freq, per-axis [a, a] tables, rotate_half
over the whole head), its own 2·N·B training sequence with the skip-causal mask
built by loops, its own token layout ((row, col, channel) inside a patch) and a
sampler that caches keys/values as the release does (block i's first step also
runs clean block i−1 and appends it to the per-layer cache).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_DIM = 64


class Norm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6))).to(x.dtype)


class Attn(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.heads = hidden // HEAD_DIM
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=True)
        self.q_norm, self.k_norm = Norm(HEAD_DIM), Norm(HEAD_DIM)
        self.proj = nn.Linear(hidden, hidden)
        self.cache_k = self.cache_v = None

    def forward(self, x, cos, sin, mask, n_append: int = 0, use_cache: bool = False):
        N, L, H = x.shape
        q, k, v = self.qkv(x).reshape(N, L, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k = rope(self.q_norm(q), cos, sin), rope(self.k_norm(k), cos, sin)
        if use_cache:
            if n_append:  # the first n_append tokens are a clean block joining the cache
                add_k, add_v = k[:, :, :n_append], v[:, :, :n_append]
                self.cache_k = add_k if self.cache_k is None else torch.cat([self.cache_k, add_k], 2)
                self.cache_v = add_v if self.cache_v is None else torch.cat([self.cache_v, add_v], 2)
            if self.cache_k is not None:
                n_new = L - n_append
                k = torch.cat([self.cache_k, k[:, :, n_append:]], 2)
                v = torch.cat([self.cache_v, v[:, :, n_append:]], 2)
                assert k.shape[2] == self.cache_k.shape[2] + n_new
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(N, L, H))


def rotate_half(x):
    return torch.cat([-x[..., HEAD_DIM // 2 :], x[..., : HEAD_DIM // 2]], -1)


def rope(x, cos, sin):
    return (x.float() * cos + rotate_half(x.float()) * sin).to(x.dtype)


class Mlp(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = Norm(hidden), Attn(hidden), Norm(hidden), Mlp(hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, mod, n_clean, cos, sin, mask, n_append=0, use_cache=False):
        """x = [n_clean clean tokens (unmodulated, ungated), then noised tokens]; mod (N, L_noised, 6H)."""
        sm, cm, gm, sf, cf, gf = mod.chunk(6, -1)
        h = self.norm1(x)
        h = torch.cat([h[:, :n_clean], h[:, n_clean:] * (1 + cm) + sm], 1)
        a = self.attn(h, cos, sin, mask, n_append, use_cache)
        x = x + torch.cat([a[:, :n_clean], gm * a[:, n_clean:]], 1)
        h = self.norm2(x)
        h = torch.cat([h[:, :n_clean], h[:, n_clean:] * (1 + cf) + sf], 1)
        m = self.mlp(h)
        return x + torch.cat([m[:, :n_clean], gf * m[:, n_clean:]], 1)


class TEmb(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        a = t.float()[..., None] * freqs
        return self.mlp(torch.cat([torch.cos(a), torch.sin(a)], -1))


class YEmb(nn.Module):
    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)


class Final(nn.Module):
    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.norm_final = Norm(hidden)
        self.linear = nn.Linear(hidden, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))


class ReleaseACDiT(nn.Module):
    """The released architecture over latents of `frames` × side × side, patch p, blocks of `block_size` tokens.

    Images (frames == 1): square blocks of √block_size, raster order of blocks; positions (h, w).
    Video: blocks of whole frames in frame order; positions (t, h, w).
    """

    def __init__(self, *, hidden=128, depth=2, channels=4, patch=1, side=4, frames=1, block_size=4, num_classes=10):
        super().__init__()
        self.hidden, self.channels, self.patch, self.side, self.frames = hidden, channels, patch, side, frames
        self.block_size, self.num_classes = block_size, num_classes
        self.grid = side // patch
        self.n_tokens = frames * self.grid**2
        self.n_blocks = self.n_tokens // block_size
        token_dim = channels * patch * patch
        self.x_embedder = nn.Linear(token_dim, hidden, bias=False)
        self.t_embedder = TEmb(hidden)
        self.y_embedder = YEmb(num_classes, hidden)
        self.blocks = nn.ModuleList([DiTBlock(hidden) for _ in range(depth)])
        self.final_layer = Final(hidden, token_dim)
        # position ids (axes, n_tokens) in sequence (block) order, and the per-axis RoPE-ND tables
        g = self.grid
        if frames == 1:
            hh, ww = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
            b = math.isqrt(block_size)
            order = [r * g + c for br in range(g // b) for bc in range(g // b) for r in range(br * b, br * b + b)
                     for c in range(bc * b, bc * b + b)]
            self.pos = torch.stack([hh.reshape(-1)[order], ww.reshape(-1)[order]])
            self.max_lens, split = [g, g], [1, 1]
        else:
            tt, hh, ww = torch.meshgrid(torch.arange(frames), torch.arange(g), torch.arange(g), indexing="ij")
            self.pos = torch.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)])
            self.max_lens, split = [frames, g, g], [2, 3, 3]
        self.dims = [2 * s * (32 // sum(split)) for s in split]
        self.bases = [100 * ((int(8 * m / math.pi)) // 100 + 1) for m in self.max_lens]

    # -- tokens -------------------------------------------------------------------------------
    def tokens_from_latents(self, lat: torch.Tensor) -> torch.Tensor:
        """(N, F, C, S, S) or (N, C, S, S) latents -> (N, n_tokens, p·p·C) in sequence order, patch as (row, col, C)."""
        if lat.ndim == 4:
            lat = lat[:, None]
        N, Fr, C, S, _ = lat.shape
        p, g = self.patch, self.grid
        x = lat.reshape(N, Fr, C, g, p, g, p).permute(0, 1, 3, 5, 4, 6, 2).reshape(N, Fr, g * g, p * p * C)
        if self.frames == 1:  # square blocks
            b = math.isqrt(self.block_size)
            x = x.reshape(N, g // b, b, g // b, b, p * p * C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(N, self.n_tokens, p * p * C)

    def latents_from_tokens(self, tok: torch.Tensor) -> torch.Tensor:
        """Inverse of tokens_from_latents; images give (N, C, S, S), video (N, F, C, S, S)."""
        N = tok.shape[0]
        p, g, C = self.patch, self.grid, self.channels
        if self.frames == 1:
            b = math.isqrt(self.block_size)
            tok = tok.reshape(N, g // b, g // b, b, b, -1).permute(0, 1, 3, 2, 4, 5)
        x = tok.reshape(N, self.frames, g, g, p, p, C).permute(0, 1, 6, 2, 4, 3, 5)
        x = x.reshape(N, self.frames, C, g * p, g * p)
        return x[:, 0] if self.frames == 1 else x

    # -- rope ---------------------------------------------------------------------------------
    def rope_tables(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = [], []
        for a, (d, base) in enumerate(zip(self.dims, self.bases)):
            inv = 1.0 / (base ** (torch.linspace(0, HEAD_DIM, d // 2).float() / HEAD_DIM))
            ang = pos[a].float()[:, None] * inv[None]
            ang = torch.cat([ang, ang], -1)
            cos.append(ang.cos())
            sin.append(ang.sin())
        return torch.cat(cos, -1), torch.cat(sin, -1)  # (L, 64)

    def cond(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """c = t_emb + y_emb: t (N, T) -> (N, T, H), or t (N,) -> (N, H)."""
        te, ye = self.t_embedder(t), self.y_embedder.embedding_table(y)
        return te + (ye[:, None] if te.ndim == 3 else ye)

    # -- training forward -----------------------------------------------------------------------
    def training_mask(self) -> torch.Tensor:
        T, B = self.n_blocks, self.block_size
        m = torch.zeros(2 * T * B, 2 * T * B, dtype=torch.bool)
        for i in range(T):
            for j in range(T):
                if j <= i:  # clean i sees clean j <= i
                    m[i * B : (i + 1) * B, j * B : (j + 1) * B] = True
                if j < i:  # noised i sees clean j < i
                    m[T * B + i * B : T * B + (i + 1) * B, j * B : (j + 1) * B] = True
            m[T * B + i * B : T * B + (i + 1) * B, T * B + i * B : T * B + (i + 1) * B] = True  # and itself
        return m

    def forward(self, clean: torch.Tensor, noised: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """clean, noised (N, T·B, C) tokens; t (N, T) per block; y (N,) (num_classes = null) -> ε (N, T·B, C)."""
        T, B = self.n_blocks, self.block_size
        c = self.cond(t, y)  # (N, T, H)
        c_tok = c.repeat_interleave(B, dim=1)  # (N, T·B, H)
        x = torch.cat([self.x_embedder(clean), self.x_embedder(noised)], 1)
        cos, sin = self.rope_tables(torch.cat([self.pos, self.pos], 1))
        mask = self.training_mask()
        for blk in self.blocks:
            x = blk(x, blk.adaLN_modulation(c_tok), T * B, cos, sin, mask)
        return self.final(x[:, T * B :], c_tok)

    def final(self, x, c_tok):
        shift, scale = self.final_layer.adaLN_modulation(c_tok).chunk(2, -1)
        return self.final_layer.linear(self.final_layer.norm_final(x) * (1 + scale) + shift)

    # -- the release's cached sampler -------------------------------------------------------------
    @torch.no_grad()
    def sample(self, y: torch.Tensor, noises: list[torch.Tensor], steps: int, cfg: float) -> torch.Tensor:
        """Blocks one by one from the given initial noises (each (N, B, C)); DPM-Solver++ from the DDIM config."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        sched = DPMSolverMultistepScheduler.from_config(DDIMScheduler().config)
        B = self.block_size
        guided = cfg > 1
        yy = torch.cat([y, torch.full_like(y, self.num_classes)]) if guided else y
        for blk in self.blocks:
            blk.attn.cache_k = blk.attn.cache_v = None
        done = []
        for i in range(self.n_blocks):
            x = noises[i].clone()
            sched.set_timesteps(steps)
            first = True
            for t in sched.timesteps:
                xin = torch.cat([x, x]) if guided else x
                xin = sched.scale_model_input(xin, t)
                tt = torch.full((xin.shape[0],), int(t))
                c_tok = self.cond(tt, yy)[:, None].expand(-1, B, -1)  # (2N, B, H)
                n_prev = B if (first and i > 0) else 0
                pos = self.pos[:, i * B : (i + 1) * B]
                h = self.x_embedder(xin)
                if n_prev:
                    prev = torch.cat([done[-1], done[-1]]) if guided else done[-1]
                    h = torch.cat([self.x_embedder(prev), h], 1)
                    pos = torch.cat([self.pos[:, (i - 1) * B : i * B], pos], 1)
                    # keys: cached clean 0..i-2, clean i-1, noised i; the clean queries do not see the noised keys
                    mask = torch.ones(2 * B, (i + 1) * B, dtype=torch.bool)
                    mask[:B, -B:] = False
                else:
                    mask = None
                cos, sin = self.rope_tables(pos)
                for blk in self.blocks:
                    h = blk(h, blk.adaLN_modulation(c_tok), n_prev, cos, sin, mask, n_append=n_prev, use_cache=True)
                eps = self.final(h[:, -B:], c_tok)
                if guided:
                    ec, eu = eps.chunk(2)
                    eps = eu + cfg * (ec - eu)
                x = sched.step(eps, t, x).prev_sample
                first = False
            done.append(x)
        return torch.cat(done, 1)  # (N, T·B, C)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, the release's zero-initialised layers included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.split(".")[-2]:  # RMSNorm scales
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]) * (0.5 if "adaLN" in name else 1.0))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def release_args(model: ReleaseACDiT, name: str = "ACDiT-tiny") -> argparse.Namespace:
    """The training Namespace the release stores with its weights (fields it reads back)."""
    return argparse.Namespace(
        model=name, vae_latent_size=model.channels, patch_size=model.patch, block_size=model.block_size,
        ar_len=model.n_blocks, num_frames=model.frames, image_size=model.side * 8, vae_patch_pixels=8,
        nd_split=None, num_classes=model.num_classes, use_rope=True, lr=3e-4, results_dir="results",
    )


def save_release(path, model: ReleaseACDiT, ema: ReleaseACDiT | None = None, args: argparse.Namespace | None = None) -> None:
    """torch.save in the released format: model / ema / opt / args."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = {"model": sd, "opt": {"state": {}, "param_groups": [{"lr": 3e-4, "params": list(range(len(sd)))}]},
            "args": args or release_args(model)}
    if ema is not None:
        ckpt["ema"] = {k: v.clone() for k, v in ema.state_dict().items()}
    torch.save(ckpt, path)
