"""The paper's central trade-off at small scale: block size on Fashion-MNIST class→image.

The same model is trained with blocks of 1, 4 (2×2), 16 (4×4) and 64 (8×8, the
whole image: full-sequence diffusion) tokens for the same number of steps on
Fashion-MNIST (28×28 padded to 32×32, patch 4, an 8×8 token grid), through the
real `train()` engine (`configs/train/fashion_mnist_S.yaml`). For each block size:

* FID and classifier accuracy of class-conditional samples with the in-domain
  extractor (eval task `fmnist_c2i`; not comparable with published FID),
* sampling time per image with the KV cache (DPM-Solver++ 25 steps, CFG 1.5),
* linear-probe accuracy of the clean-stream features (eval task `fmnist_probe`).

JSON and a PNG plot go to benchmarks/results/. The paper's setting is the `S`
preset for thousands of steps (GPU); `--preset tiny --steps 300` is what fits a
2-core CPU in minutes, and the figures then show the trend only roughly.

    python benchmarks/block_size_study.py [--preset S] [--steps 2000] [--batch 64] [--limit 1000] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save  # noqa: E402

BLOCKS = {1: (1, 1), 4: (2, 2), 16: (4, 4), 64: (8, 8)}


def run_one(tokens: int, args: argparse.Namespace, out_root: Path) -> dict:
    from unimodal.checkpoint import load_checkpoint
    from unimodal.eval import run_eval
    from unimodal.generate import VisualSampling
    from unimodal.quickstart import config_file
    from unimodal.tasks import ClassToImage
    from unimodal.train.config import TrainConfig
    from unimodal.train.trainer import train

    bh, bw = BLOCKS[tokens]
    cfg = TrainConfig.from_file(
        config_file("train/fashion_mnist_S.yaml"),
        [f"model={args.preset}", f"steps={args.steps}", f"batch_size={args.batch}", f"warmup_steps={min(200, args.steps // 10)}",
         f"visual.block_h={bh}", f"visual.block_w={bw}", f"out_dir={out_root / f'block{tokens}'}",
         f"ckpt_every={args.steps}", "progress=false", f"ema_decay={args.ema}", *args.set],
    )
    t0 = time.perf_counter()
    res = train(cfg)
    train_s = time.perf_counter() - t0
    ckpt = load_checkpoint(res.checkpoint)
    task = ClassToImage(ckpt.visual, None)
    sampling = VisualSampling("dpm++", 25, 1.5, schedule=ckpt.schedule)
    labels = list(range(10)) * 2
    task.generate(ckpt.model, labels[:2], sampling)  # warm-up
    t0 = time.perf_counter()
    task.generate(ckpt.model, labels, sampling)
    per_image = (time.perf_counter() - t0) / len(labels)
    ev = run_eval(res.checkpoint, ["fmnist_c2i", "fmnist_probe"], out_root / f"block{tokens}" / "eval.json",
                  limit=args.limit, seed=0, progress=False)
    c2i, probe = ev["tasks"]["fmnist_c2i"]["metrics"], ev["tasks"]["fmnist_probe"]["metrics"]
    row = {
        "block_tokens": tokens, "block": [bh, bw], "num_blocks": 64 // tokens, "train_s": train_s,
        "final_loss": res.history[-1].get("loss") if res.history else None,
        "fid_in_domain": c2i.get("fid"), "class_accuracy": c2i.get("class_accuracy"),
        "precision": c2i.get("precision"), "recall": c2i.get("recall"),
        "sample_s_per_image": per_image, "probe_accuracy": probe.get("probe_accuracy"),
        "probe_pixel_control": probe.get("pixel_probe_accuracy"),
    }
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    """Three small panels (FID, class accuracy, probe accuracy vs block size) drawn with PIL."""
    from PIL import Image, ImageDraw

    panels = [("FID (in-domain, lower better)", "fid_in_domain"), ("class accuracy", "class_accuracy"),
              ("probe accuracy", "probe_accuracy"), ("s / image (KV cache)", "sample_s_per_image")]
    W, H, m = 260, 200, 36
    img = Image.new("RGB", (W * len(panels), H), "white")
    d = ImageDraw.Draw(img)
    xs = [r["block_tokens"] for r in rows]
    for p, (title, key) in enumerate(panels):
        ys = [r[key] for r in rows if r[key] is not None]
        if not ys:
            continue
        lo, hi = min(ys), max(ys)
        hi = hi if hi > lo else lo + 1
        ox = p * W
        d.text((ox + m, 6), title, fill="black")
        d.rectangle([ox + m, m, ox + W - 10, H - m], outline="gray")
        pts = []
        for i, r in enumerate(rows):
            if r[key] is None:
                continue
            x = ox + m + (W - 10 - m) * i / max(1, len(rows) - 1)
            y = H - m - (H - 2 * m) * (r[key] - lo) / (hi - lo)
            pts.append((x, y))
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="navy")
            d.text((x - 6, H - m + 4), str(xs[i]), fill="black")
            d.text((x + 4, y - 12), f"{r[key]:.3g}", fill="navy")
        if len(pts) > 1:
            d.line(pts, fill="navy", width=2)
        d.text((ox + m, H - 14), "tokens per block", fill="gray")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--limit", type=int, default=1000, help="samples per eval task")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--blocks", default="1,4,16,64", help="tokens per block to study")
    ap.add_argument("--out", default="runs/block_size_study")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="further recipe overrides, e.g. --set diffusion.prediction_type=v_prediction (repeatable)")
    args = ap.parse_args()
    rows = [run_one(int(b), args, Path(args.out)) for b in args.blocks.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS / "block_size_study.png")
    save("block_size_study", {"preset": args.preset, "steps": args.steps, "batch": args.batch, "limit": args.limit,
                              "overrides": args.set, "results": rows})


if __name__ == "__main__":
    main()
