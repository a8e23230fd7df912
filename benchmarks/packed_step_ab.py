"""The quickstart train step before/after the one-hot `per_token` and fused RMSNorm, A/B in one process.

The quickstart packs text->image, captioning and VQA examples into shared rows, so its training
step takes the general per-token modulation path (not the one-noisy-block split). This times that
step (forward, loss, backward, AdamW) with the earlier implementations (a `gather` and a written-out
RMSNorm, kept below as the reference) against today's, alternating, fp32 and bf16.

    python benchmarks/packed_step_ab.py   # -> benchmarks/results/packed_step_ab.json
"""

from __future__ import annotations

import json
import os
import time

import torch

from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.model import ACDiT
from unimodal.model import acdit as A
from unimodal.quickstart import config_file
from unimodal.tasks import build_batch_source, build_tokenizer
from unimodal.train.config import TrainConfig

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "packed_step_ab.json")


def old_per_token(per_block: torch.Tensor, slot: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    idx = slot.clamp(min=0)[..., None].expand(-1, -1, per_block.shape[-1])
    return per_block.gather(1, idx) * noisy[..., None].to(per_block.dtype)


def old_norm(self: A.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
    return (xf * self.weight.float()).to(x.dtype)


NEW = (A.per_token, A.RMSNorm.forward)


def measure(prec: str, pairs: int = 4) -> dict:
    cfg = TrainConfig.from_file(config_file("train/easyvqa_tiny.yaml"), ["out_dir=/tmp/packed_step_ab", f"precision={prec}"])
    tok = build_tokenizer(cfg)
    model = ACDiT(cfg.model_config(tok.vocab_size)).set_precision(cfg.precision)
    src = build_batch_source(cfg, model.cfg, cfg.visual_config(), tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched, g = NoiseSchedule(cfg.schedule_config()), torch.Generator().manual_seed(0)
    batches = [src.batch(i, 0, 1, cfg.batch_size) for i in range(8)]

    def run(which: str) -> float:
        A.per_token, A.RMSNorm.forward = (old_per_token, old_norm) if which == "old" else NEW
        t = time.perf_counter()
        for b in batches:
            loss = compute_loss(model, b, sched, generator=g)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - t) / len(batches)

    run("old")
    run("new")  # warm-up
    timed = [(run("old"), run("new")) for _ in range(pairs)]
    A.per_token, A.RMSNorm.forward = NEW
    ratios = sorted(o / n for o, n in timed)
    mid = len(ratios) // 2
    return {"old_s": sorted(o for o, _ in timed)[mid], "new_s": sorted(n for _, n in timed)[mid],
            "ratio_median": (ratios[mid - 1] + ratios[mid]) / 2 if len(ratios) % 2 == 0 else ratios[mid], "ratios": ratios}


def main() -> None:
    res = {}
    for prec in ("fp32", "bf16"):
        res[prec] = measure(prec)
        print(prec, res[prec])
    doc = {"what": "quickstart recipe train step (packed easy-VQA mixture, batch 32, general per-token path), "
                   "before/after the one-hot per_token and fused RMSNorm, alternating in one process",
           "threads": torch.get_num_threads(), "loadavg_1min": os.getloadavg()[0], "results": res}
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
