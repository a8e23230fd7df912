"""Training-step time (forward + backward + AdamW) of the tiny and S presets.

Pure-image layout: 4 blocks of 16 tokens (an 8×8 token grid, blocks 4×4), clean
and noisy streams (128 tokens per row), batch 32. Reports seconds per step, the
FLOPs counted by torch, the achieved FLOP/s, and a plain fp32 matmul's FLOP/s
measured in the same run.

    python benchmarks/forward_backward.py [--presets tiny,S] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, matmul_flops_per_s, save, timed  # noqa: E402

from unimodal.batch import Example, collate  # noqa: E402
from unimodal.diffusion import NoiseSchedule, compute_loss  # noqa: E402
from unimodal.layout import Image, Layout  # noqa: E402
from unimodal.model import create_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,S")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    C = 48
    lay = Layout([Image(8, 8, 4, 4)])
    batch = collate([Example(lay, torch.randn(64, C), i % 10) for i in range(args.batch)], C)
    sched = NoiseSchedule()
    yard = matmul_flops_per_s()
    rows = []
    for name in args.presets.split(","):
        model = create_model(name, token_dim=C, vocab_size=0, num_classes=10)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)

        def step() -> None:
            loss = compute_loss(model, batch, sched, generator=g)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        flops = count_flops(step)
        sec = timed(step, repeats=args.repeats)
        row = {
            "preset": name,
            "params_M": model.num_params() / 1e6,
            "tokens_per_row": len(lay),
            "batch": args.batch,
            "step_s": sec,
            "flops_per_step": flops,
            "achieved_flops_per_s": flops / sec,
            "fraction_of_matmul": flops / sec / yard,
            "tokens_per_s": args.batch * len(lay) / sec,
        }
        rows.append(row)
        print(f"{name:5s} {row['params_M']:6.1f}M  {sec * 1e3:8.1f} ms/step  {flops / sec / 1e9:7.1f} GFLOP/s "
              f"({row['fraction_of_matmul']:.0%} of matmul {yard / 1e9:.1f} GFLOP/s)")
    save("forward_backward", {"matmul_flops_per_s": yard, "results": rows})


if __name__ == "__main__":
    main()
