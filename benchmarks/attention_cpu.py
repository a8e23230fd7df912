"""Attention forward+backward on this CPU: SDPA's fused kernel against the written-out "math" path.

For the short sequences of blockwise diffusion training (a few blocks of clean + noisy tokens) in
bf16, SDPA's CPU backward is several times slower than two bf16 matmuls and a softmax; for long
sequences the fused kernel wins. `Attention.attend` routes bf16 SDPA calls with at most
`MATH_ATTENTION_MAX_KEYS` keys to the math path from these figures.

    python benchmarks/attention_cpu.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save, timed  # noqa: E402

from unimodal.model.acdit import MATH_ATTENTION_MAX_KEYS, math_attention  # noqa: E402

SHAPES = [(32, 4, 112), (32, 6, 112), (32, 4, 128), (32, 4, 192), (32, 4, 256), (8, 4, 256), (4, 4, 512), (4, 4, 1024)]
# (batch, heads, tokens), head dim 64: the vs_official configs (112), the quickstart's packed rows (256), longer ones


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for B, H, L in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(B, H, L, 64, generator=g).to(dtype).requires_grad_() for _ in range(3))
            mask = (torch.rand(B, 1, L, L, generator=g) > 0.3) | torch.eye(L, dtype=torch.bool)
            grad = torch.randn(B, H, L, 64, generator=g).to(dtype)
            sdpa = 1e3 * timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad), 9, 2)
            math = 1e3 * timed(lambda: math_attention(q, k, v, mask).backward(grad), 9, 2)
            rows.append({"batch": B, "heads": H, "tokens": L, "dtype": str(dtype).split(".")[-1],
                         "sdpa_ms": sdpa, "math_ms": math, "sdpa_over_math": sdpa / math})
            print(f"B={B} H={H} L={L:4d} {rows[-1]['dtype']:8s} fwd+bwd: sdpa {sdpa:7.1f} ms  math {math:7.1f} ms  "
                  f"sdpa/math {sdpa / math:.2f}x", flush=True)
    save("attention_cpu", {"threads": args.threads, "math_max_keys_in_use": MATH_ATTENTION_MAX_KEYS, "results": rows})


if __name__ == "__main__":
    main()
