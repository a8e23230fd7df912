"""`unimodal quickstart`: train one tiny unified model on easy-VQA, evaluate it, show what it learned.

On a fresh install, with no download and no GPU:

1. trains the `configs/train/easyvqa_tiny.yaml` recipe (text→image, captioning and
   VQA from one stream of batches) for a time budget — the number of steps is
   calibrated from the measured speed of this machine, so the learning-rate
   schedule (warmup-stable-decay) ends exactly when the budget does;
2. writes a grid of images generated from held-out captions, and the model's
   captions and VQA answers for held-out images next to the truth;
3. runs the evaluation harness (VQA accuracy, caption exact match, text→image
   colour/shape accuracy and FID with the in-domain extractor, linear probes per
   layer with pixel and random-model controls) into JSON + Markdown;
4. prints the headline figures and where everything is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli_args import finite_float, positive_int
from .configs import shipped_path
from .errors import ConfigError, MissingFileError

EVAL_TASKS = ("easyvqa_vqa", "easyvqa_caption", "easyvqa_t2i", "easyvqa_probe")


def config_file(relative: str) -> Path:
    """A file under the shipped `configs/` (installed as package data `unimodal.configs`)."""
    path = shipped_path(relative)
    if not path.is_file():
        raise MissingFileError(f"shipped config {relative!r} not found at {path}")
    return path


def calibrate_steps(cfg: Any, budget_s: float, probe_steps: int = 6) -> tuple[int, float]:
    """Steps that fit in `budget_s`, from timing a few plain training steps of this exact recipe.

    The probe model runs at the recipe's `precision`, and compiled when the recipe says `compile`
    (then the first, compiling step's time is taken off the budget twice: training may compile once more).

    Returns:
        (steps, seconds per step measured).
    """
    from .diffusion import NoiseSchedule, compute_loss
    from .model import ACDiT
    from .tasks import build_batch_source, build_tokenizer
    from .train.engine import adamw, param_groups

    tok = build_tokenizer(cfg)
    model = ACDiT(cfg.model_config(tok.vocab_size if tok is not None else None)).set_precision(cfg.precision)
    if cfg.compile:
        model.compile_forward()
    source = build_batch_source(cfg, model.cfg, cfg.visual_config(), tok)
    opt = adamw(param_groups(model, cfg.weight_decay), cfg)  # the trainer's optimizer
    sched, g = NoiseSchedule(cfg.schedule_config()), torch.Generator().manual_seed(0)
    times, first = [], 0.0
    for i in range(probe_steps + 1):
        batch = source.batch(i, 0, 1, cfg.batch_size)
        t0 = time.perf_counter()
        loss = compute_loss(model, batch, sched, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators (and compiles)
            times.append(time.perf_counter() - t0)
        else:
            first = time.perf_counter() - t0
    # the trainer's step costs more than the bare one (data workers on the same cores, DeepSpeed, EMA, logging):
    # 1.07-1.19x in three quickstart runs here (bf16, 2 cores, eager and compiled)
    per_step = float(np.median(times)) * 1.1
    # compiled: the first step's compile, and once more for the one recompile a dynamic-shape graph makes when a
    # batch crosses a size it specialised on (inductor's fp32 reduction split at 4096 rows x columns)
    budget = budget_s - (2 * first if cfg.compile else 0.0)
    return max(1, int(budget / per_step)), per_step


def understanding_samples(ckpt: Any, tok: Any, n: int = 8, seed: int = 0) -> tuple[list[dict[str, str]], torch.Tensor]:
    """Captions and VQA answers for n held-out test images, next to the truth."""
    from .data import load_dataset
    from .tasks import VQA, Captioning, build_image_bank

    test = load_dataset("easyvqa", "test")
    rng = np.random.default_rng(seed)
    captioned = [i for i, c in enumerate(test["caption"]) if c]
    pick = sorted(rng.choice(captioned, size=min(n, len(captioned)), replace=False).tolist())
    bank = build_image_bank(test.select(pick), ckpt.visual, name="easyvqa/test")
    qs, ans = [], []
    for i in range(len(pick)):
        k = int(rng.integers(len(bank.columns["questions"][i])))
        qs.append(bank.columns["questions"][i][k])
        ans.append(bank.columns["answers"][i][k])
    caps = Captioning(ckpt.visual, tok).predict(ckpt.model, bank.tokens)
    answers = VQA(ckpt.visual, tok).predict(ckpt.model, bank.tokens, qs)
    rows = [
        {"image_id": str(bank.columns["image_id"][i]), "caption_true": bank.columns["caption"][i], "caption_model": caps[i],
         "question": qs[i], "answer_true": ans[i], "answer_model": answers[i]}
        for i in range(len(pick))
    ]
    from .tasks import tokens_to_images

    return rows, tokens_to_images(bank.tokens, ckpt.visual)


def write_understanding(rows: list[dict[str, str]], path: Path, grid_name: str) -> None:
    lines = [
        "# Held-out easy-VQA test images: the model next to the truth", "",
        f"![images]({grid_name}) (left to right, top to bottom = rows below)", "",
        "| # | caption (truth) | caption (model) | question | answer (truth) | answer (model) |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        lines.append(f"| {i} | {r['caption_true']} | {r['caption_model']} | {r['question']} | {r['answer_true']} | {r['answer_model']} |")
    path.write_text("\n".join(lines) + "\n")


def headline(results: dict[str, Any]) -> dict[str, float | None]:
    """The three or four figures a user looks at first."""
    t = results["tasks"]
    get = lambda task, metric: t.get(task, {}).get("metrics", {}).get(metric)  # noqa: E731
    return {
        "vqa_accuracy": get("easyvqa_vqa", "vqa_accuracy"),
        "caption_exact_match": get("easyvqa_caption", "exact_match"),
        "t2i_colour_shape_accuracy": get("easyvqa_t2i", "class_accuracy"),
        "t2i_fid_in_domain": get("easyvqa_t2i", "fid"),
        "probe_accuracy_best_layer": get("easyvqa_probe", "probe_accuracy"),
        "probe_pixel_control": get("easyvqa_probe", "pixel_probe_accuracy"),
        "probe_random_model_control": get("easyvqa_probe", "random_probe_accuracy"),
    }


def quickstart(
    minutes: float = 10.0,
    out: str | Path = "quickstart",
    steps: int | None = None,
    eval_limit: int | None = 300,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole job; returns a summary (also written to out/summary.json)."""
    from .checkpoint import load_checkpoint
    from .eval import run_eval
    from .generate import VisualSampling
    from .media import save_image_grid
    from .tasks import TextToImage
    from .tokenizers import TextTokenizer
    from .train.config import TrainConfig
    from .train.trainer import train

    if minutes <= 0:
        raise ConfigError(f"--minutes {minutes} is invalid: must be > 0")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps} is invalid: must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cfg = TrainConfig.from_file(config_file("train/easyvqa_tiny.yaml"), [f"out_dir={out / 'run'}", *overrides])
    per_step = None
    if steps is None:
        steps, per_step = calibrate_steps(cfg, minutes * 60)
        print(f"quickstart: {per_step:.2f} s/step measured here -> {steps} steps in {minutes:g} min of training")
    warmup = min(cfg.warmup_steps, max(0, steps // 10))
    cfg = cfg.with_overrides([f"steps={steps}", f"warmup_steps={warmup}", f"ckpt_every={steps}", f"progress={progress}"])
    t_train = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t_train
    ckpt_dir = result.checkpoint

    ckpt = load_checkpoint(ckpt_dir)
    tok = TextTokenizer.load(ckpt.tokenizer_dir)
    rows, images = understanding_samples(ckpt, tok)
    save_image_grid(images, out / "heldout_images.png", nrow=len(rows))
    write_understanding(rows, out / "understanding.md", "heldout_images.png")
    captions = [r["caption_true"] for r in rows]
    gen = TextToImage(ckpt.visual, tok).generate(ckpt.model, captions, VisualSampling.paper(schedule=ckpt.schedule), seed=0)
    save_image_grid(gen, out / "t2i_heldout_captions.png", nrow=len(rows))
    (out / "t2i_heldout_captions.txt").write_text("\n".join(captions) + "\n")

    t_eval = time.perf_counter()
    results = run_eval(ckpt_dir, EVAL_TASKS, out / "eval" / "results.json", limit=eval_limit, seed=0, progress=progress)
    eval_s = time.perf_counter() - t_eval
    figures = headline(results)
    summary = {
        "steps": steps, "seconds_per_step_calibrated": per_step, "train_s": train_s, "eval_s": eval_s,
        "total_s": time.perf_counter() - t_start, "checkpoint": str(ckpt_dir), "headline": figures,
        "artefacts": {
            "t2i_grid": str(out / "t2i_heldout_captions.png"), "understanding": str(out / "understanding.md"),
            "eval_json": str(out / "eval" / "results.json"), "eval_report": str(out / "eval" / "results.md"),
            "metrics_log": str(out / "run" / "metrics.jsonl"),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nquickstart done in {:.1f} min ({} steps, {:.1f} min training, {:.1f} min eval)".format(
        summary["total_s"] / 60, steps, train_s / 60, eval_s / 60))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"  VQA accuracy (easy-VQA test)        {fmt(figures['vqa_accuracy'])}")
    print(f"  caption exact match                 {fmt(figures['caption_exact_match'])}")
    print(f"  text->image colour+shape accuracy   {fmt(figures['t2i_colour_shape_accuracy'])}   "
          f"FID (in-domain, not comparable with published FID) {fmt(figures['t2i_fid_in_domain'])}")
    print(f"  linear probe, best layer            {fmt(figures['probe_accuracy_best_layer'])}   "
          f"(pixels {fmt(figures['probe_pixel_control'])}, random model {fmt(figures['probe_random_model_control'])})")
    for k, v in summary["artefacts"].items():
        print(f"  {k:14s} {v}")
    print(f"  checkpoint     {ckpt_dir}")
    return summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="train a tiny unified model on easy-VQA, evaluate it, write a report")
    p.add_argument("--minutes", type=finite_float(0.0, 24 * 60, low_open=True), default=10.0, help="training time budget (default 10; eval adds ~3)")
    p.add_argument("--steps", type=positive_int, default=None, help="train exactly this many steps instead of a time budget")
    p.add_argument("--out", default="quickstart", help="output directory (default ./quickstart)")
    p.add_argument("--eval-limit", type=positive_int, default=300, help="samples per eval task (default 300)")
    p.add_argument("overrides", nargs="*", help="training config overrides key=value (e.g. batch_size=16)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args: argparse.Namespace) -> int:
        quickstart(args.minutes, args.out, args.steps, args.eval_limit, args.overrides, progress=not args.quiet)
        return 0

    p.set_defaults(func=run)
