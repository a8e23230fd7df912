"""bf16 vs fp32 loss curves on the Fashion-MNIST CPU recipe (issue 17, deliverable 3).

Trains configs/train/fashion_mnist_cpu.yaml for `--steps` steps three times, in one process:
fp32 with seed 0, bf16 (`precision: bf16`: autocast bf16 matmuls, fp32 master weights) with
seed 0, and fp32 with seed 1 — the run-to-run noise reference (another init, data order and noise).
The recipe's lr warmup (100 steps) is cut to steps // 4 for short runs (`--warmup`).
Every step's loss and wall time is recorded. Writes benchmarks/results/bf16_curves.json and
bf16_curves.png (raw curves faint, smoothed curves bold) and prints, per run, the final smoothed
loss and the median s/step, and the gaps: |bf16 - fp32| (same seed) against |fp32 seed 1 - fp32 seed 0|.

    python benchmarks/bf16_curves.py [--steps 200] [--out-dir /tmp/bf16_curves]

Needs the Fashion-MNIST files (/usr/share/datasets/fashion-mnist). Timings on a shared machine are
distorted, bf16 ones most: read s/step as indicative, and the load average that is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS, machine  # noqa: E402

RUNS = (("fp32", 0), ("bf16", 0), ("fp32", 1))  # (precision, seed); the last is the noise reference


def smooth(xs: list[float], alpha: float = 0.95) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, m = [], 0.0
    for i, x in enumerate(xs, 1):
        m = alpha * m + (1 - alpha) * x
        out.append(m / (1 - alpha**i))
    return out


def train_run(precision: str, seed: int, steps: int, warmup: int, out_dir: Path) -> dict:
    from unimodal.quickstart import config_file
    from unimodal.train.config import TrainConfig
    from unimodal.train.trainer import train

    cfg = TrainConfig.from_file(
        config_file("train/fashion_mnist_cpu.yaml"),
        [f"out_dir={out_dir}", f"steps={steps}", f"precision={precision}", f"seed={seed}", f"warmup_steps={warmup}", "sample_every=0",
         f"ckpt_every={steps}", "progress=false", "tensorboard=false", f"log_every={steps}"],
    )
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = train(cfg, step_hook=lambda step, module, record: stamps.append(time.perf_counter()), overwrite=True)
    losses = [float(r["loss"]) for r in result.history]
    dt = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    steady = sorted(dt[5:]) or sorted(dt)  # the first steps build caches and warm up
    return {"precision": precision, "seed": seed, "loss": losses, "step_s": dt,
            "median_s_per_step": steady[len(steady) // 2], "wall_s": time.perf_counter() - t0}


def plot(runs: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    W, H, pad = 900, 520, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    allv = [v for r in runs for v in r["loss"]]
    lo, hi = min(allv), sorted(allv)[int(0.98 * (len(allv) - 1))]  # clip the first-step spikes
    n = max(len(r["loss"]) for r in runs)

    def xy(i: int, v: float) -> tuple[float, float]:
        v = min(max(v, lo), hi)
        return pad + (W - 2 * pad) * i / max(n - 1, 1), H - pad - (H - 2 * pad) * (v - lo) / max(hi - lo, 1e-9)

    d.rectangle([pad, pad, W - pad, H - pad], outline="black")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        d.text((4, xy(0, v)[1] - 6), f"{v:.3f}", fill="black")
    d.text((W // 2 - 20, H - pad + 10), f"step (0..{n})", fill="black")
    colors = {("fp32", 0): ((120, 160, 255), (0, 60, 200)), ("bf16", 0): ((255, 160, 120), (200, 50, 0)),
              ("fp32", 1): ((170, 170, 170), (60, 60, 60))}
    for j, r in enumerate(runs):
        faint, bold = colors[(r["precision"], r["seed"])]
        d.line([xy(i, v) for i, v in enumerate(r["loss"])], fill=faint, width=1)
    for j, r in enumerate(runs):
        faint, bold = colors[(r["precision"], r["seed"])]
        d.line([xy(i, v) for i, v in enumerate(smooth(r["loss"]))], fill=bold, width=3)
        label = f"{r['precision']} seed {r['seed']}" + (" (noise reference)" if r["seed"] else "") + " (smoothed: bold)"
        d.text((pad + 10, pad + 10 + 16 * j), label, fill=bold)
    d.text((pad, 15), "Fashion-MNIST CPU recipe: training loss, fp32 vs bf16", fill="black")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=None, help="lr warmup steps (default: min(100, steps // 4))")
    ap.add_argument("--out-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = ap.parse_args()
    warmup = min(100, args.steps // 4) if args.warmup is None else args.warmup
    base = Path(args.out_dir or tempfile.mkdtemp(prefix="bf16_curves_"))
    load_before = os.getloadavg()
    runs = []
    for precision, seed in RUNS:
        r = train_run(precision, seed, args.steps, warmup, base / f"{precision}_seed{seed}")
        runs.append(r)
        print(f"{precision} seed {seed}: final smoothed loss {smooth(r['loss'])[-1]:.4f}, "
              f"median {r['median_s_per_step']:.3f} s/step ({r['wall_s']:.0f} s wall)", flush=True)
    ref, bf, noise = (smooth(r["loss"]) for r in runs)
    half = len(ref) // 2
    gap_bf = [abs(a - b) for a, b in zip(bf[half:], ref[half:])]
    gap_noise = [abs(a - b) for a, b in zip(noise[half:], ref[half:])]
    last = min(50, len(ref))
    tail = {f"{r['precision']}_seed{r['seed']}": sum(r["loss"][-last:]) / last for r in runs}
    summary = {
        "final_smoothed_loss": {f"{r['precision']}_seed{r['seed']}": smooth(r["loss"])[-1] for r in runs},
        f"mean_loss_last_{last}_steps": tail,
        "median_s_per_step": {f"{r['precision']}_seed{r['seed']}": r["median_s_per_step"] for r in runs},
        "bf16_speedup": runs[0]["median_s_per_step"] / runs[1]["median_s_per_step"],
        "second_half_max_gap": {"bf16_vs_fp32_same_seed": max(gap_bf), "fp32_seed1_vs_seed0": max(gap_noise)},
        "second_half_mean_gap": {"bf16_vs_fp32_same_seed": sum(gap_bf) / len(gap_bf),
                                 "fp32_seed1_vs_seed0": sum(gap_noise) / len(gap_noise)},
        "load_average_before_after": [load_before, os.getloadavg()],
    }
    RESULTS.mkdir(exist_ok=True)
    doc = {"recipe": "configs/train/fashion_mnist_cpu.yaml", "steps": args.steps, "warmup_steps": warmup,
           "torch_threads": torch.get_num_threads(), "runs": runs,
           "smoothing": "bias-corrected EMA, alpha 0.95", "summary": summary, "machine": machine()}
    (RESULTS / "bf16_curves.json").write_text(json.dumps(doc, indent=1))
    plot(runs, RESULTS / "bf16_curves.png")
    print(json.dumps(summary, indent=1))
    print(f"wrote {RESULTS / 'bf16_curves.json'} and {RESULTS / 'bf16_curves.png'}")


if __name__ == "__main__":
    main()
