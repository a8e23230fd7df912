"""Sampling speed with the KV cache versus recomputing the whole context at every step.

Images: an 8×8 token grid in 4 blocks (4×4) or 16 blocks (2×2), 25 DPM-Solver++
steps per block, class CFG 1.5 (shared cache), batch 2. Text: 64 greedy tokens
after an 8-token prompt. For each case: seconds with and without the cache, the
FLOPs torch counts for each, and how much of the FLOP-count speed-up the cached
path realises (time speed-up / FLOP speed-up).

    python benchmarks/sampling.py [--presets tiny,S] [--steps 25] [--batch 2]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, save, timed  # noqa: E402

from unimodal.batch import Example  # noqa: E402
from unimodal.generate import Generator, TextSampling, VisualSampling  # noqa: E402
from unimodal.layout import Image, Layout, Text  # noqa: E402
from unimodal.model import create_model  # noqa: E402


def image_run(model, blocks: int, steps: int, batch: int, use_cache: bool):
    side = 4 if blocks == 4 else 2
    seg = Image(8, 8, side, side)
    labels = torch.arange(batch) % 10

    def run():
        g = Generator(model, batch, use_cache=use_cache, seed=0)
        return g.generate_visual(seg, VisualSampling("dpm++", steps, cfg_scale=1.5), class_labels=labels)

    return run


def text_run(model, new_tokens: int, batch: int, use_cache: bool):
    def run():
        g = Generator(model, batch, use_cache=use_cache, seed=0)
        g.prefill([Example(Layout([Text(list(range(1, 9)))]))] * batch)
        return list(g.stream_text(TextSampling(max_new_tokens=new_tokens, stop_tokens=())))

    return run


def compare(name: str, make, repeats: int) -> dict:
    cached, full = make(True), make(False)
    f_c, f_f = count_flops(cached), count_flops(full)
    t_c, t_f = timed(cached, repeats=repeats), timed(full, repeats=repeats)
    row = {
        "case": name,
        "cached_s": t_c,
        "recompute_s": t_f,
        "time_speedup": t_f / t_c,
        "cached_flops": f_c,
        "recompute_flops": f_f,
        "flop_speedup": f_f / f_c,
        "realised_fraction": (t_f / t_c) / (f_f / f_c),
    }
    print(f"{name:28s} cache {t_c:7.2f}s  recompute {t_f:7.2f}s  speed-up {row['time_speedup']:5.2f}x "
          f"of {row['flop_speedup']:5.2f}x by FLOPs ({row['realised_fraction']:.0%})")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,S")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for preset in args.presets.split(","):
        model = create_model(preset, token_dim=48, vocab_size=512, num_classes=10).eval()
        for blocks in (4, 16):
            rows.append({"preset": preset, **compare(f"{preset} image {blocks} blocks",
                                                     lambda c: image_run(model, blocks, args.steps, args.batch, c), args.repeats)})
        rows.append({"preset": preset, **compare(f"{preset} text {args.text_tokens} tokens",
                                                 lambda c: text_run(model, args.text_tokens, args.batch, c), args.repeats)})
    save("sampling", {"steps": args.steps, "batch": args.batch, "results": rows})


if __name__ == "__main__":
    main()
