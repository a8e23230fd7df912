"""The trainer's step in fp32, bf16 with DeepSpeed's bf16 mode, and bf16 autocast alone, in one process.

`precision: bf16` runs the backbone's matmuls and attention under bf16 autocast (ACDiT.set_precision).
What the DeepSpeed engine then holds is `weights_dtype`: fp32 weights and the client AdamW (autocast
alone), or DeepSpeed's bf16 mode (bf16 weights and gradients, an fp32 master copy in its bf16
optimizer). This builds three engines on the quickstart recipe (`configs/train/easyvqa_tiny.yaml`:
packed text->image + captioning + VQA rows, batch 32) from the same initial weights and times one
optimizer step of each (forward, loss, backward, DeepSpeed step) on the same batches, alternating
A B C A B C, so machine load hits all three alike. It reports the median step time, the median of the
per-round ratios against fp32, and the losses of the first steps (they must agree to bf16 precision).

    python benchmarks/trainer_precision.py [--steps 14]   # -> benchmarks/results/trainer_precision.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, save  # noqa: E402

MODES = {"fp32": ("fp32", "fp32"), "bf16_deepspeed_bf16": ("bf16", "bf16"), "bf16_autocast": ("bf16", "fp32")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=14, help="timed rounds (after 2 warm-up rounds)")
    args = ap.parse_args()
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", "29561")

    from unimodal.diffusion import NoiseSchedule, compute_loss
    from unimodal.model import ACDiT
    from unimodal.quickstart import config_file
    from unimodal.tasks import build_batch_source, build_tokenizer
    from unimodal.train.config import TrainConfig
    from unimodal.train.engine import create_engine

    base = TrainConfig.from_file(config_file("train/easyvqa_tiny.yaml"), ["out_dir=runs/trainer_precision"])
    tok = build_tokenizer(base)
    mcfg = base.model_config(tok.vocab_size)
    source = build_batch_source(base, mcfg, base.visual_config(), tok)
    schedule = NoiseSchedule(base.schedule_config())
    engines = {}
    for name, (precision, weights) in MODES.items():
        torch.manual_seed(0)
        cfg = base.with_overrides([f"precision={precision}", f"weights_dtype={weights}"])
        engines[name], _ = create_engine(ACDiT(mcfg).set_precision(precision), cfg)
        assert engines[name].bfloat16_enabled() == (weights == "bf16")
    times = {k: [] for k in engines}
    losses = {k: [] for k in engines}
    for i in range(args.steps + 2):
        batch = source.batch(i, 0, 1, base.batch_size)
        for name, engine in engines.items():
            t0 = time.perf_counter()
            loss = compute_loss(engine, batch, schedule, generator=torch.Generator().manual_seed(i))["loss"]
            engine.backward(loss)
            engine.step()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
            losses[name].append(float(loss.detach()))
    fp32 = np.array(times["fp32"])
    result = {
        "what": "one DeepSpeed optimizer step of the quickstart recipe (batch 32, packed rows of 256 tokens), ZeRO-0",
        "machine": machine(), "threads": torch.get_num_threads(), "rounds": args.steps,
        "load_average_at_end": os.getloadavg()[0],
        "modes": {name: {"precision": p, "weights_dtype": w, "median_s": float(np.median(times[name])),
                         "speedup_vs_fp32_median_of_ratios": float(np.median(fp32 / np.array(times[name]))),
                         "first_losses": [round(x, 4) for x in losses[name][:4]]}
                  for name, (p, w) in MODES.items()},
    }
    result["autocast_over_deepspeed_bf16"] = float(np.median(np.array(times["bf16_deepspeed_bf16"]) / np.array(times["bf16_autocast"])))
    for name, r in result["modes"].items():
        print(f"{name:22s} {r['median_s']:.3f} s/step  x{r['speedup_vs_fp32_median_of_ratios']:.2f} vs fp32  losses {r['first_losses']}")
    print(f"autocast alone vs DeepSpeed bf16 mode: x{result['autocast_over_deepspeed_bf16']:.2f}")
    print(save("trainer_precision", result))


if __name__ == "__main__":
    main()
