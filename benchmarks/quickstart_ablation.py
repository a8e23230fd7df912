"""Quick ablations of the quickstart recipe at a fixed number of steps (issue 18).

Each run trains `configs/train/easyvqa_tiny.yaml` with the given overrides for `--steps` steps
(warm-up as the quickstart sets it: min(recipe warm-up, steps/10)), then scores the shipped eval
tasks easyvqa_vqa and easyvqa_caption (and, unless --no-t2i, easyvqa_t2i) on 300 held-out TEST
samples, seed 0, as the quickstart does. It adds the share of captions whose shape word is right
(`cap_shape`: colour is learnt first, shape is the hard part) and the colour / shape parts of the
text->image accuracy. No tuning is done on test: every setting compared here is a recipe choice
fixed before the run. Rows are appended to benchmarks/results/quickstart_ablation.json (keyed by
name: rerunning a name replaces its row).

    python benchmarks/quickstart_ablation.py NAME STEPS [KEY=VALUE ...] [--no-t2i]

Quality at equal STEPS, not equal minutes: a variant with longer examples (more VQA turns) costs
more per step; `train_s` is recorded but the machine is shared, so compare it only loosely.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, machine  # noqa: E402

JSON_PATH = RESULTS / "quickstart_ablation.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("steps", type=int)
    ap.add_argument("overrides", nargs="*", help="recipe overrides, as `unimodal train` takes them")
    ap.add_argument("--no-t2i", action="store_true", help="score VQA and captions only")
    ap.add_argument("--runs", default="runs/quickstart_ablation")
    args = ap.parse_args()

    from unimodal.eval import run_eval
    from unimodal.quickstart import config_file, headline
    from unimodal.train.config import TrainConfig
    from unimodal.train.trainer import train

    out = Path(args.runs) / args.name
    cfg = TrainConfig.from_file(config_file("train/easyvqa_tiny.yaml"), [f"out_dir={out}/run", *args.overrides])
    cfg = cfg.with_overrides([f"steps={args.steps}", f"warmup_steps={min(cfg.warmup_steps, args.steps // 10)}",
                              f"ckpt_every={args.steps}", "progress=false", "sample_every=0", "tensorboard=false"])
    t0 = time.perf_counter()
    res = train(cfg)
    train_s = time.perf_counter() - t0
    tasks = ["easyvqa_vqa", "easyvqa_caption"] + ([] if args.no_t2i else ["easyvqa_t2i"])
    t0 = time.perf_counter()
    ev = run_eval(res.checkpoint, tasks, out / "eval" / "results.json", limit=300, seed=0, progress=False)
    row = {k: v for k, v in headline(ev).items() if v is not None}
    samples = [json.loads(line) for line in (out / "eval" / "results.samples.jsonl").read_text().splitlines()]
    caps = [r for r in samples if r["task"] == "easyvqa_caption"]
    row["cap_shape"] = sum(r["prediction"].split()[-1:] == r["references"][0].split()[-1:] for r in caps) / len(caps)
    if not args.no_t2i:
        m = ev["tasks"]["easyvqa_t2i"]["metrics"]
        row["t2i_colour"], row["t2i_shape"] = m.get("class_accuracy/color"), m.get("class_accuracy/shape")
    tail = res.history[-max(1, len(res.history) // 10):]
    row.update(name=args.name, steps=args.steps, overrides=args.overrides, train_s=train_s, eval_s=time.perf_counter() - t0,
               final_loss_last10pct={k: sum(h.get(k, 0.0) for h in tail) / len(tail) for k in ("diffusion", "text")})
    print(json.dumps(row), flush=True)
    doc = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else {"machine": machine(), "runs": {}}
    doc["runs"][args.name] = row
    tmp = JSON_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(JSON_PATH)


if __name__ == "__main__":
    main()
