"""Quality against training minutes for the quickstart recipe and candidate changes (issue 18).

Every job trains `configs/train/easyvqa_tiny.yaml` (what `unimodal quickstart` runs) with a
variant's overrides for the number of steps that a budget of M minutes buys, then evaluates
it exactly as the quickstart does (the shipped eval tasks easyvqa_vqa / _caption / _t2i /
_probe on 300 held-out TEST samples each, seed 0), and adds the diagnostics of issue 18:

* quadrant-tint spread: RMS over the 4 blocks (quadrants) of one generated image of the
  deviation of each quadrant's background colour (its 3x3 corner pixels) from the image's
  mean of them (real images ~0),
  next to the same spread between images;
* patch-border jumps: mean |difference| of adjacent pixels straddling a patch border, at a
  block border, and inside patches (real images give the reference);
* gate magnitudes: mean |AdaLN-Zero attention gate| of the noisy tokens per t, over layers.

Quality is measured against training STEPS; minutes are steps x a seconds-per-step that is
measured separately (`calibrate_steps` of the quickstart, the plain recipe, this machine) and
stored in the JSON as such. Variants that change the per-step cost (model shape, batch) get
their steps scaled by their calibrated cost relative to the recipe's; the others get the
recipe's steps (a cheaper variant, e.g. a larger tokenizer with shorter sequences, is thus
not credited for its speed).

Tuning is never done on test: `--cfg-tune KEY` picks the text->image CFG scale of a finished
job on prompts and reference images of the TRAIN split (`easyvqa_t2i` with split=train), and
only then scores the chosen scale on test.

The JSON (benchmarks/results/quickstart_study.json) is updated after every job under a file
lock; jobs already in it are skipped, so the script is resumable and several workers may run
at once (each claims a job before running it). The plot (quickstart_study.png) has one panel
per measure, one line per variant, quality against minutes.

    python benchmarks/quickstart_study.py --jobs today@5,flow@5,today@10 [--threads 1]
    python benchmarks/quickstart_study.py --cfg-tune flow@10
    python benchmarks/quickstart_study.py --plot-only
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, machine  # noqa: E402

JSON_PATH = RESULTS / "quickstart_study.json"
PLOT_PATH = RESULTS / "quickstart_study.png"
RUNS = Path("runs/quickstart_study")
EVAL_TASKS = ("easyvqa_vqa", "easyvqa_caption", "easyvqa_t2i", "easyvqa_probe")
EVAL_LIMIT = 300
EVAL_HEADS = {"easyvqa_vqa": "vqa", "easyvqa_caption": "captioning", "easyvqa_t2i": "text_to_image", "easyvqa_probe": None}
FLOW = ["diffusion.prediction_type=flow", "diffusion.timestep_sampling=logit_normal"]
TOK400 = ["tokenizer.vocab_size=400"]  # whole words: "a yellow rectangle" is 3 pieces, not 11


def mixture(t2i: str = "", vqa: str = "", t2i_weight: str = "1.5") -> str:
    """A `tasks=` override of the quickstart's three-task mixture; t2i / vqa: extra fields of those entries."""
    return (f"tasks=[{{name: text_to_image, dataset: easyvqa, weight: {t2i_weight}, drop_prob: 0.1{t2i}}},"
            f" {{name: captioning, dataset: easyvqa, weight: 1.0}}, {{name: vqa, dataset: easyvqa, weight: 2.0{vqa}}}]")


# The first shipped recipe (until 2026-12-03): v-prediction, a 320-piece tokenizer, one question per VQA
# example; rows measured with it are the "v1..." variants, so they stay reproducible after the recipe moved on.
V1_TASKS = mixture()
V1 = ["diffusion.prediction_type=v_prediction", "diffusion.timestep_sampling=uniform", "tokenizer.vocab_size=320", V1_TASKS]
TEXTCOND = ["model_overrides.text_condition=true"]
NOPROMPT_TASKS = mixture(", prompt_loss: false")
ROPE100 = ["model_overrides.rope_theta=100"]
T2I3_TASKS = mixture(t2i_weight="3.0")
QA4_TASKS = mixture(vqa=", qa_per_example: 4")
PROMPT25_TASKS = mixture(", prompt_loss: 0.25")
QA4_NOPROMPT_TASKS = mixture(", prompt_loss: false", ", qa_per_example: 4")
V2 = ["precision=fp32"]  # the recipe before `precision: auto` (bf16 autocast) became its default
# the recipe adopted on 2026-12-07 (whole words, 4 QA turns, no prompt loss, text_condition), in fp32
ADOPTED = V2 + ["tokenizer.vocab_size=auto", QA4_NOPROMPT_TASKS] + TEXTCOND
P8 = ["visual.patch_size=8", "visual.block_h=2", "visual.block_w=2"]
VARIANTS: dict[str, list[str]] = {
    "today": [],  # the shipped recipe as it is now
    "v1": V1,
    "v1_flow": V1 + FLOW,
    "v1_tok400": V1 + TOK400,
    "v1_flow_tok400": V1 + FLOW + TOK400,
    "v2": V2,  # the second recipe (flow, fp32), measured at 5/10/20/40 minutes
    # block shape: the 4 quadrants are generated as if apart (shape at chance, block-border jumps 5-7x real)
    "v2_block1": V2 + ["visual.block_h=8", "visual.block_w=8"],  # one block: the whole image denoised jointly
    "v2_block2": V2 + ["visual.block_h=4", "visual.block_w=8"],  # two blocks: top half, then bottom half
    # the prompt in each noisy block's AdaLN condition (pooled text embedding, `model.text_condition`)
    "v2_textcond": V2 + TEXTCOND,
    "v2_textcond_noprompt": V2 + TEXTCOND + [NOPROMPT_TASKS],  # ... and the caption no longer a LM target
    # rotary base 100 (the release's formula for an 8x8 grid): with 10000 only ~3 of the 12 frequency pairs per
    # axis tell positions 0..7 apart, and generated tokens are chosen as if alone (4x4-pixel on/off patches)
    "v2_textcond_rope100": V2 + TEXTCOND + ROPE100,
    "v2_rope100": V2 + ROPE100,
    "v2_diffw3": V2 + ["loss.diffusion=3.0"],  # three times the diffusion loss weight
    # diagnosis: text->image alone (understanding untrained): does the mixture or the diffusion learner limit shape?
    "v2_t2ionly": V2 + ["tasks=[{name: text_to_image, dataset: easyvqa, weight: 1.0, drop_prob: 0.1}]"],
    "v2_bs16": V2 + ["batch_size=16"],  # half the batch: about twice the steps in the same minutes
    # noisy tokens' AdaLN gates start open (1 + modulation) instead of adaLN-Zero: after 40 min the zero-init
    # gates are still ~0.1 at every t, so each noisy layer adds ~10% and tokens are denoised nearly alone
    "v2_gate1": V2 + ["model_overrides.gate_init=one"],
    # more training at high noise: a shape's place is still readable in x_t up to sigma ~0.9 at 32x32 (~150 pixel
    # values of contrast ~1), so shape and position are decided above it, where logit-normal(0, 1) puts 1.4% of
    # its draws (8% above 0.8); logit mean 1 puts 12% above 0.9 (35% above 0.8)
    "v2_lm1": V2 + ["diffusion.logit_mean=1.0"],
    # 16x16 images in 2x2-pixel tokens (the same 8x8 grid, the same cost): 4x4-pixel tokens that are either on or
    # off draw every generated shape as a blocky blob the classifier calls a circle; 2x2 ones can draw the outline
    "v2_res16": V2 + ["visual.image_size=16", "visual.patch_size=2"],
    # whole-word tokens (vocab auto: 475 pieces) and 4 question/answer turns an image; the prompt loss stays
    "v2_words_qa4": V2 + ["tokenizer.vocab_size=auto", QA4_TASKS],
    # the caption a language-model target in a quarter of the text->image examples (55% of the text targets are
    # that prompt loss, which a caption prior cannot lower; VQA gets 14%)
    "v2_prompt25": V2 + [PROMPT25_TASKS],
    # whole words + 4 turns lift understanding but lose the text->image colour: with whole words the prompt's LM
    # targets (colour after "a", shape after the colour) are uniform whatever the word, which pushes the prompt's
    # states to forget it. The pooled prompt embedding in the AdaLN condition reads the words themselves.
    "v2_words_qa4_tc": V2 + ["tokenizer.vocab_size=auto", QA4_TASKS] + TEXTCOND,
    "v2_words_qa4_tc_noprompt": V2 + ["tokenizer.vocab_size=auto", QA4_NOPROMPT_TASKS] + TEXTCOND,
    "v2_textcond_rope100_t2i3": V2 + TEXTCOND + ROPE100 + [T2I3_TASKS],  # ... and twice the text->image share
    # 8x8-pixel tokens (a 4x4 grid of 192-dim tokens; blocks of 2x2 tokens, still 4 quadrants): generated shapes are
    # scattered on/off 4x4-pixel tokens, each noisy token deciding "shape or background" nearly alone at high noise;
    # with 16 tokens an image there are 4x fewer decisions to agree on, an outline fits inside one token's linear
    # output, and every sequence is shorter (more steps in the same minutes)
    "v2_adopted_p8": ADOPTED + P8,
    "v2_adopted_p8_block1": ADOPTED + P8 + ["visual.block_h=4", "visual.block_w=4"],  # ... one block: plain diffusion
    # diagnosis on the adopted recipe: text->image alone, three times its examples at equal steps (understanding
    # untrained): does sharing the model with understanding limit the shape, or the diffusion learner itself?
    "v2_adopted_t2ionly": ADOPTED + ["tasks=[{name: text_to_image, dataset: easyvqa, weight: 1.0, drop_prob: 0.1, "
                                     "prompt_loss: false}]"],
    # a higher peak learning rate (the recipe's 1e-3 was never varied): a 5M-parameter model for ~700 steps
    "v2_adopted_lr2": ADOPTED + ["lr=2e-3"],
    "v2_adopted_lr3": ADOPTED + ["lr=3e-3"],
    # VQA answered from the question alone: every yes/no row above scores its template's majority answer exactly
    # (colour 0.79 / negated 0.87, shape 0.61 / 0.64; `vqa_by_question_type`). Balanced draws of each record's
    # turns (`balance_answers`) make the question alone worth nothing, so the answer must read the image
    # width against depth at about the same cost a step: twice the layers at 3/4 the width (8 x 192, 3 heads of 64),
    # and 6 layers at full width (1.5x the cost): VQA's yes/no needs the question's word compared with the image's
    # colour or shape (a composition of attentions), and shape needs tokens that agree across the image
    "v2_adopted_deep8": ADOPTED + ["model_overrides.n_layer=8", "model_overrides.d_model=192"],
    "v2_adopted_deep6": ADOPTED + ["model_overrides.n_layer=6"],
    # complementary yes/no turns (`complementary_yes_no`): each yes/no question names the image's own colour or
    # shape half the time (its answer recomputed from the record's open answers), so every template is 50/50 and
    # only comparing the question's word with the image lowers its loss; with 8 turns an image (all ~10 of a
    # record's questions nearly) each image teaches twice the comparisons for its tokens once
    "v2_adopted_compl": V2 + ["tokenizer.vocab_size=auto", mixture(", prompt_loss: false",
                                                                   ", qa_per_example: 4, complementary_yes_no: true")]
    + TEXTCOND,
    "v2_adopted_compl_qa8": V2 + ["tokenizer.vocab_size=auto", mixture(", prompt_loss: false",
                                                                       ", qa_per_example: 8, complementary_yes_no: true")]
    + TEXTCOND,
    "v2_adopted_balanced": V2 + ["tokenizer.vocab_size=auto", mixture(", prompt_loss: false",
                                                                      ", qa_per_example: 4, balance_answers: true")]
    + TEXTCOND,
}
COST_KEYS = ("model", "model_overrides.n_layer", "model_overrides.d_model", "batch_size", "pack_tokens", "visual")
MEASURES = [("VQA accuracy", "vqa_accuracy"), ("caption exact match", "caption_exact_match"),
            ("text->image colour+shape", "t2i_colour_shape_accuracy"), ("probe, best layer", "probe_accuracy_best_layer")]


# --- the JSON, shared by workers ---------------------------------------------------------------
@contextmanager
def locked() -> Iterator[dict[str, Any]]:
    """The results document under an exclusive lock; written back atomically on exit."""
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(str(JSON_PATH) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else {}
        doc.setdefault("runs", {})
        doc.setdefault("cfg_tuning", {})
        yield doc
        tmp = JSON_PATH.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(JSON_PATH)


def parse_job(job: str) -> tuple[str, float, int]:
    """'variant@minutes[:seed]' -> (variant, minutes, seed)."""
    name, _, rest = job.partition("@")
    minutes, _, seed = rest.partition(":")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    return name, float(minutes), int(seed or 0)


def job_key(name: str, minutes: float, seed: int) -> str:
    return f"{name}@{minutes:g}" + (f":{seed}" if seed else "")


def claim(key: str) -> bool:
    """True when this process may run `key` (no live process holds its claim)."""
    path = RUNS / "claims" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            os.kill(int(path.read_text()), 0)
            return False  # a live worker has it
        except (ProcessLookupError, ValueError):
            path.unlink()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


# --- seconds per step ----------------------------------------------------------------------------
def recipe(overrides: list[str], out: Path):
    from unimodal.quickstart import config_file
    from unimodal.train.config import TrainConfig

    return TrainConfig.from_file(config_file("train/easyvqa_tiny.yaml"), [f"out_dir={out}", *overrides])


def costly(override: str) -> bool:
    """Whether an override changes the per-step cost (a COST_KEYS key or a field under one)."""
    key = override.split("=")[0]
    return any(key == k or key.startswith(k + ".") for k in COST_KEYS)


def seconds_per_step(name: str) -> float:
    """The recipe's calibrated s/step (measured once, stored); a cost-changing variant's is scaled by its own."""
    from unimodal.quickstart import calibrate_steps

    recipe_key = name.split("_")[0] if name.split("_")[0] in ("v1", "v2") else "today"  # each timed with its recipe
    with locked() as doc:
        base = doc.get("seconds_per_step", {}).get(recipe_key)
    if base is None and recipe_key != "today":
        raise SystemExit(f"no stored seconds_per_step for the {recipe_key} recipe: pass --sps")
    if base is None:
        _, base = calibrate_steps(recipe([], RUNS / "calibrate"), 60.0)
        with locked() as doc:
            doc.setdefault("seconds_per_step", {})["today"] = base
            doc["seconds_per_step_note"] = (
                "unimodal.quickstart.calibrate_steps on the plain recipe (median of 6 steps x 1.1), measured once "
                f"by the first worker with torch threads={os.environ.get('STUDY_THREADS_AT_CALIBRATION', 'default')}; "
                "minutes = steps x this")
            doc["machine"] = machine()
    if name in ("today", "v1", "v2") or not any(costly(o) for o in VARIANTS[name]):
        return base
    with locked() as doc:
        ratio = doc.get("cost_ratio", {}).get(name)
    if ratio is None:  # measured back to back so machine load cancels
        _, b = calibrate_steps(recipe(VARIANTS[recipe_key], RUNS / "calibrate"), 60.0)  # its own recipe's cost
        _, v = calibrate_steps(recipe(VARIANTS[name], RUNS / "calibrate"), 60.0)
        ratio = v / b
        with locked() as doc:
            doc.setdefault("cost_ratio", {})[name] = ratio
    return base * ratio


# --- diagnostics ---------------------------------------------------------------------------------
def image_stats(x, patch: int, block: int) -> dict[str, float]:
    """Quadrant-tint spread and border jumps of images (N, C, H, W) in [-1, 1]."""
    import torch

    N, C, H, W = x.shape
    k = 3  # background tint of a quadrant: its 3x3 pixels at the image corner (shapes rarely reach the corners)
    corners = [x[..., :k, :k], x[..., :k, -k:], x[..., -k:, :k], x[..., -k:, -k:]]
    tint = torch.stack([c.reshape(N, C, -1).mean(-1) for c in corners], 1)  # (N, 4, C)
    within = (tint - tint.mean(1, keepdim=True)).pow(2).mean().sqrt()
    img_tint = tint.mean(1)  # (N, C)
    between = (img_tint - img_tint.mean(0, keepdim=True)).pow(2).mean().sqrt()
    dh = (x[..., :, 1:] - x[..., :, :-1]).abs()  # (N, C, H, W-1): pair (j, j+1)
    dv = (x[..., 1:, :] - x[..., :-1, :]).abs()
    j = torch.arange(W - 1)
    patch_b, block_b = (j + 1) % patch == 0, (j + 1) % block == 0
    inner = ~patch_b

    def jump(mask):
        return float((dh[..., mask].mean() + dv[..., mask, :].mean()) / 2)

    return {"quadrant_tint_rms_within_image": float(within), "tint_rms_between_images": float(between),
            "patch_border_jump": jump(patch_b & ~block_b), "block_border_jump": jump(block_b), "inner_jump": jump(inner)}


def gate_magnitudes(model, ts=(0, 50, 100, 300, 600, 999)) -> dict[str, float]:
    """Mean |gate_msa| and |gate_mlp| of the noisy tokens at timestep t, averaged over layers."""
    import torch

    out = {}
    with torch.no_grad():
        for t in ts:
            c = model.t_embedder(torch.tensor([t]))
            g_msa, g_mlp = [], []
            for blk in model.blocks:
                mod = blk.adaLN_modulation(c)[0].chunk(6, dim=-1)
                g1, g2 = blk.gates(mod[2], mod[5])  # the effective gates (ModelConfig.gate_init)
                g_msa.append(g1.abs().mean())
                g_mlp.append(g2.abs().mean())
            out[f"gate_msa_t{t}"] = float(torch.stack(g_msa).mean())
            out[f"gate_mlp_t{t}"] = float(torch.stack(g_mlp).mean())
    return out


def diagnostics(ckpt_dir: Path, out: Path, n: int = 48) -> dict[str, Any]:
    """Generate n images from test captions (the quickstart's sampling) and measure them and the gates."""
    import numpy as np

    from unimodal.checkpoint import load_checkpoint
    from unimodal.data import load_dataset
    from unimodal.generate import VisualSampling
    from unimodal.media import save_image_grid
    from unimodal.tasks import TextToImage, build_image_bank, tokens_to_images
    from unimodal.tokenizers import TextTokenizer

    ckpt = load_checkpoint(ckpt_dir)
    tok = TextTokenizer.load(ckpt.tokenizer_dir)
    test = load_dataset("easyvqa", "test")
    rng = np.random.default_rng(1)
    captioned = [i for i, c in enumerate(test["caption"]) if c]
    pick = sorted(rng.choice(captioned, size=n, replace=False).tolist())
    sub = test.select(pick)
    captions = list(sub["caption"])
    gen = TextToImage(ckpt.visual, tok).generate(ckpt.model, captions, VisualSampling.paper(schedule=ckpt.schedule), seed=0)
    save_image_grid(gen[:16], out / "t2i_grid.png", nrow=8)
    (out / "t2i_grid.txt").write_text("\n".join(captions[:16]) + "\n")
    real = tokens_to_images(build_image_bank(sub, ckpt.visual, name="easyvqa/test").tokens, ckpt.visual)
    v = ckpt.visual
    p, b = v.patch_size, v.patch_size * v.block_h
    gs = image_stats(gen.float(), p, b)
    rs = image_stats(real.float(), p, b)
    return {"generated": gs, "real": rs, "gates": gate_magnitudes(ckpt.model), "grid": str(out / "t2i_grid.png")}


def vqa_question_type(question: str) -> str:
    """easy-VQA question type: what it asks about (colour / shape) and how (open / yes-no / negated yes-no).

    The templates (upstream `gen_data/questions.py`): "what color is the X?" (open), "is there a X shape?"
    (yes/no), "is there not a X shape?" / "is no X present?" (negated yes/no: the answer flips).
    """
    from unimodal.data.easyvqa import COLORS

    words = question.lower().rstrip("?").split()
    if words[0] == "what":
        return ("colour" if "color" in words else "shape") + "/open"
    attr = "colour" if any(w in COLORS for w in words) else "shape"
    return attr + ("/yes-no negated" if {"not", "no"} & set(words) else "/yes-no")


def _vqa_accuracy_by(samples_jsonl: Path, key: Any) -> dict[str, Any]:
    """VQA accuracy of an eval run's per-sample file (`results.samples.jsonl`) grouped by key(row) (None: skip)."""
    acc: dict[str, list[float]] = {}
    for line in samples_jsonl.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        k = key(r) if r.get("task") == "easyvqa_vqa" else None
        if k is not None:
            acc.setdefault(k, []).append(float(r["scores"]["vqa_accuracy"]))
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(acc.items())}


def vqa_breakdown(samples_jsonl: Path) -> dict[str, Any]:
    """VQA accuracy per question type."""
    return _vqa_accuracy_by(samples_jsonl, lambda r: vqa_question_type(r["question"]))


def yes_no_by_truth(samples_jsonl: Path) -> dict[str, Any]:
    """Yes/no accuracy per question type and true answer: does the model read the image?

    A model that answers from the template alone scores 1.0 on one truth and 0.0 on the other
    ("is there a X shape?" -> no, "is there not a X shape?" -> yes); one that reads the image
    scores alike on both.
    """
    def key(r: dict[str, Any]) -> str | None:
        truth = r["references"][0]
        return f"{vqa_question_type(r['question'])}, truth {truth}" if truth in ("yes", "no") else None

    return _vqa_accuracy_by(samples_jsonl, key)


def hist_reused(res: Any) -> bool:
    return isinstance(res, argparse.Namespace)


def sum_elapsed(history: list[dict[str, Any]]) -> float | None:
    return history[-1].get("elapsed_s") if history else None


# --- one job ---------------------------------------------------------------------------------------
def run_job(name: str, minutes: float, seed: int) -> dict[str, Any]:
    from unimodal.eval import run_eval
    from unimodal.quickstart import headline
    from unimodal.train.trainer import train

    key = job_key(name, minutes, seed)
    out = RUNS / key.replace("@", "_at_").replace(":", "_s")
    sps = seconds_per_step(name)
    steps = max(1, int(minutes * 60 / sps))
    cfg = recipe([*VARIANTS[name], f"seed={seed}"], out / "run")
    warmup = min(cfg.warmup_steps, max(0, steps // 10))  # as the quickstart does
    cfg = cfg.with_overrides([f"steps={steps}", f"warmup_steps={warmup}", f"ckpt_every={steps}", "progress=false",
                              "sample_every=0", "tensorboard=false"])
    print(f"[{key}] {steps} steps ({sps:.3f} s/step x {steps} = {steps * sps / 60:.1f} min)", flush=True)
    t0 = time.perf_counter()
    final = out / "run" / "checkpoints" / f"step_{steps:07d}"
    if (final / "model.safetensors").is_file():  # trained by an earlier worker that died later: evaluate it
        hist = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
        res = argparse.Namespace(checkpoint=final, history=hist)
        print(f"[{key}] reusing {final}", flush=True)
    else:
        res = train(cfg)
    train_s = time.perf_counter() - t0 if not hist_reused(res) else sum_elapsed(res.history)
    hist = res.history
    tail = [h for h in hist[-max(1, len(hist) // 10):]]
    loss_tail = {k: sum(h[k] for h in tail if k in h) / max(1, sum(k in h for h in tail)) for k in ("loss", "diffusion", "text")}
    t0 = time.perf_counter()
    trained = {t.name if hasattr(t, "name") else t["name"] for t in cfg.tasks}
    tasks = [t for t in EVAL_TASKS if EVAL_HEADS[t] is None or EVAL_HEADS[t] in trained]  # a head never trained: no row
    ev = run_eval(res.checkpoint, tasks, out / "eval" / "results.json", limit=EVAL_LIMIT, seed=0, progress=False)
    eval_s = time.perf_counter() - t0
    t2i = ev["tasks"]["easyvqa_t2i"]["metrics"]
    diag = diagnostics(Path(res.checkpoint), out)
    if "easyvqa_vqa" in tasks:
        diag["vqa_by_question_type"] = vqa_breakdown(out / "eval" / "results.samples.jsonl")
        diag["vqa_yes_no_by_truth"] = yes_no_by_truth(out / "eval" / "results.samples.jsonl")
    row = {
        "variant": name, "overrides": VARIANTS[name], "seed": seed, "minutes_budget": minutes, "steps": steps,
        "seconds_per_step_used": sps, "warmup_steps": warmup, "train_wall_s": train_s, "eval_wall_s": eval_s,
        "threads": int(os.environ.get("STUDY_THREADS", "0")) or None, "checkpoint": str(res.checkpoint),
        "final_loss_last10pct": loss_tail, **headline(ev), "t2i_clip_score": t2i.get("clip_score"),
        "t2i_metrics": t2i, "diagnostics": diag,
    }
    print(f"[{key}] " + " ".join(f"{m}={row[m]:.3f}" for _, m in MEASURES if row[m] is not None), flush=True)
    return row


def cfg_tune(key: str, scales=(1.5, 3.0, 5.0), limit: int = 200) -> dict[str, Any]:
    """Pick the CFG scale on TRAIN prompts/references, then score only the chosen scale on test."""
    import tempfile

    from unimodal.eval import run_eval

    with locked() as doc:
        row = doc["runs"][key]
    ckpt = row["checkpoint"]
    on_train = {}
    with tempfile.TemporaryDirectory() as d:
        for s in scales:
            name = f"easyvqa_t2i_train_cfg{str(s).replace('.', 'p')}"
            Path(d, name + ".yaml").write_text(
                f"include: easyvqa_t2i\nname: {name}\nsplit: train\nseed: 1\ngeneration: {{cfg_scale: {s}}}\n")
            ev = run_eval(ckpt, [name], None, limit=limit, seed=1, include_paths=[d], progress=False)
            on_train[s] = ev["tasks"][name]["metrics"]["class_accuracy"]
            print(f"[{key}] cfg {s}: train colour+shape {on_train[s]:.3f}", flush=True)
        best = max(on_train, key=on_train.get)
        name = "easyvqa_t2i_test_chosen"
        Path(d, name + ".yaml").write_text(f"include: easyvqa_t2i\nname: {name}\ngeneration: {{cfg_scale: {best}}}\n")
        ev = run_eval(ckpt, [name], None, limit=EVAL_LIMIT, seed=0, include_paths=[d], progress=False)
    result = {"train_class_accuracy_by_cfg": {str(k): v for k, v in on_train.items()}, "chosen_cfg": best,
              "test_class_accuracy_at_chosen": ev["tasks"][name]["metrics"]["class_accuracy"],
              "test_class_accuracy_at_1.5": row["t2i_colour_shape_accuracy"], "train_limit": limit}
    print(f"[{key}] chosen cfg {best}: test colour+shape {result['test_class_accuracy_at_chosen']:.3f}", flush=True)
    return result


# --- the plot --------------------------------------------------------------------------------------
COLOURS = ["black", "red", "blue", "green", "orange", "purple", "brown", "magenta", "teal", "olive", "navy", "gray"]


def plot(doc: dict[str, Any], path: Path) -> None:
    """One panel per measure; x = minutes of training (steps x measured s/step), one line per variant (seed 0)."""
    from PIL import Image, ImageDraw

    runs = [r for r in doc["runs"].values() if r.get("seed", 0) == 0]
    repeats = [r for r in doc["runs"].values() if r.get("seed", 0) != 0]
    variants = sorted({r["variant"] for r in runs}, key=lambda v: list(VARIANTS).index(v) if v in VARIANTS else 99)
    xs_all = sorted({5.0, 10.0, 20.0, 40.0} | {r["minutes_budget"] for r in doc["runs"].values()})  # the study's budgets
    W, H, m = 300, 240, 40
    legend_h = 16 * (len(variants) + 1)
    img = Image.new("RGB", (W * len(MEASURES), H + legend_h), "white")
    d = ImageDraw.Draw(img)
    xmin, xmax = min(xs_all), max(xs_all)
    xmax = xmax if xmax > xmin else xmin + 1
    for p, (title, key) in enumerate(MEASURES):
        ox = p * W
        d.text((ox + m, 6), title, fill="black")
        d.rectangle([ox + m, m, ox + W - 10, H - m], outline="gray")
        for frac in (0.0, 0.5, 1.0):
            y = H - m - (H - 2 * m) * frac
            d.text((ox + 6, y - 6), f"{frac:.1f}", fill="gray")
        for xv in xs_all:
            x = ox + m + (W - 10 - m) * (xv - xmin) / (xmax - xmin)
            d.text((x - 6, H - m + 4), f"{xv:g}", fill="black")
        d.text((ox + m, H - 16), "minutes of training", fill="gray")

        def xy(r):
            return (ox + m + (W - 10 - m) * (r["minutes_budget"] - xmin) / (xmax - xmin),
                    H - m - (H - 2 * m) * r[key])

        for vi, v in enumerate(variants):
            col = COLOURS[vi % len(COLOURS)]
            pts = [xy(r) for r in sorted(runs, key=lambda r: r["minutes_budget"]) if r["variant"] == v and r.get(key) is not None]
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
            if len(pts) > 1:
                d.line(pts, fill=col, width=2)
            for r in repeats:  # repeat seeds: hollow markers
                if r["variant"] == v and r.get(key) is not None:
                    x, y = xy(r)
                    d.ellipse([x - 4, y - 4, x + 4, y + 4], outline=col)
    for vi, v in enumerate(variants):
        col = COLOURS[vi % len(COLOURS)]
        y = H + 4 + 16 * vi
        d.line([(10, y + 6), (30, y + 6)], fill=col, width=3)
        d.text((36, y), v + "  " + " ".join(VARIANTS.get(v, [])), fill="black")
    d.text((10, H + 4 + 16 * len(variants)), "hollow = repeat seed; minutes = steps x measured s/step", fill="gray")
    img.save(path)


def summarise_quickstart_runs(specs: list[str]) -> None:
    """Add NAME=DIR quickstart runs to quickstart_variants.json (replacing a NAME already there)."""
    path = RESULTS / "quickstart_variants.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    doc["what"] = ("`unimodal quickstart` runs: the default command, or the one override a run's name gives, "
                   "2 CPU cores; vqa_yes_no_by_truth shows whether yes/no answers read the image")
    for spec in specs:
        name, sep, out = spec.partition("=")
        out_dir = Path(out)
        if not sep or not (out_dir / "summary.json").is_file():
            raise SystemExit(f"--quickstart-runs takes NAME=DIR with DIR/summary.json; got {spec!r}")
        summary = json.loads((out_dir / "summary.json").read_text())
        samples = out_dir / "eval" / "results.samples.jsonl"
        doc["runs"][name] = {"dir": str(out_dir), "steps": summary["steps"], "train_s": summary["train_s"],
                             "total_s": summary["total_s"], "headline": summary["headline"],
                             "vqa_by_question_type": vqa_breakdown(samples), "vqa_yes_no_by_truth": yes_no_by_truth(samples)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="today@5,flow@5,today@10,flow@10", help="variant@minutes[:seed], comma separated")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--cfg-tune", default=None, help="a finished job key: choose its CFG scale on train, score on test")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the variants")
    ap.add_argument("--calibrate", action="store_true", help="measure the recipe's s/step (torch's default threads) and exit")
    ap.add_argument("--sps", type=float, default=None,
                    help="seconds per step of the recipe to convert minutes to steps (default: measured once and stored)")
    ap.add_argument("--eval-limit", type=int, default=300, help="samples per eval task (300 as the quickstart)")
    ap.add_argument("--json", default=None, help="results JSON (default benchmarks/results/quickstart_study.json)")
    ap.add_argument("--quickstart-runs", nargs="+", metavar="NAME=DIR", default=None,
                    help="summarise finished `unimodal quickstart --out DIR` runs (headline, VQA by question type and "
                         "true answer) into benchmarks/results/quickstart_variants.json, and exit")
    args = ap.parse_args()
    if args.quickstart_runs:
        summarise_quickstart_runs(args.quickstart_runs)
        return
    global JSON_PATH, PLOT_PATH, RUNS, EVAL_LIMIT
    if args.json:
        JSON_PATH, PLOT_PATH = Path(args.json), Path(args.json).with_suffix(".png")
        RUNS = Path("runs") / Path(args.json).stem
    if args.list:
        for k, v in VARIANTS.items():
            print(k, v)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["STUDY_THREADS"] = str(args.threads)
        os.environ.setdefault("STUDY_THREADS_AT_CALIBRATION", str(args.threads))
    EVAL_LIMIT = args.eval_limit
    if args.sps is not None:
        with locked() as doc:
            doc.setdefault("seconds_per_step", {}).setdefault("today", args.sps)
            doc.setdefault("seconds_per_step_note", f"given with --sps {args.sps}")
    if args.calibrate:
        print(f"{seconds_per_step('today'):.3f} s/step", flush=True)
        return
    if args.plot_only:
        with locked() as doc:
            plot(doc, PLOT_PATH)
        return
    if args.cfg_tune:
        result = cfg_tune(args.cfg_tune)
        with locked() as doc:
            doc["cfg_tuning"][args.cfg_tune] = result
        return
    for job in [j for j in args.jobs.split(",") if j]:
        name, minutes, seed = parse_job(job)
        key = job_key(name, minutes, seed)
        with locked() as doc:
            done = key in doc["runs"]
        if done or not claim(key):
            print(f"[{key}] done or claimed by another worker: skipped", flush=True)
            continue
        try:
            row = run_job(name, minutes, seed)
            with locked() as doc:
                doc["runs"][key] = row
                plot(doc, PLOT_PATH)
        except Exception as e:  # one failed job does not stop the worker's queue
            print(f"[{key}] FAILED: {type(e).__name__}: {e}", flush=True)
        finally:
            (RUNS / "claims" / key).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
