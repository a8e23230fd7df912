"""Understanding heads: linear probes of hidden states, VQA and captioning.

Each head turns an `EvalTaskConfig` and a loaded checkpoint into `Evidence`:
what the task's metrics read, plus details and images for the report.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from unimodal.tasks import VQA, Captioning, build_image_bank, tokens_to_images

from .context import EvalContext, Evidence
from .data import load_records
from .errors import EvalError
from .extractors.domain_cnn import DEFAULT_HEADS, class_names, encode_labels
from .features import hidden_features
from .metrics.linear_probe import ProbeSweep, linear_probe
from .task_config import PROBE_DEFAULTS, EvalTaskConfig


def run_probe(task: EvalTaskConfig, ctx: EvalContext) -> Evidence:
    """Linear-probe accuracy per layer for each target, with pixel and random-init controls."""
    from unimodal.model import ACDiT

    p = {**PROBE_DEFAULTS, **task.probe}  # options were checked when the task loaded
    model, visual, n_layer = ctx.model, ctx.visual, ctx.model.cfg.n_layer
    layers = list(range(n_layer + 1)) if p["layers"] == "all" else [int(k) for k in p["layers"]]
    targets = list(p["targets"] or DEFAULT_HEADS.get(task.dataset, ("label",)))
    known = lambda cols: [all(cols[t][i] not in ("", None) for t in targets) for i in range(len(cols[targets[0]]))]  # noqa: E731
    try:
        train = load_records(task.dataset, task.train_split, task.options, ctx.cap(p["train_samples"]), task.seed, keep=known)
        test = load_records(task.dataset, task.split, task.options, ctx.cap(task.num_samples), task.seed, keep=known)
    except KeyError as e:
        raise EvalError(f"task {task.name!r}: probe target {e} is not a column of {task.dataset!r}") from None
    bank_tr = build_image_bank(train, visual, name=f"{task.dataset}/{task.train_split}")
    bank_te = build_image_bank(test, visual, name=f"{task.dataset}/{task.split}")
    kw = dict(pool=p["pool"], noisy_t=p["noisy_t"], schedule=ctx.schedule, seed=task.seed)

    def features(m: torch.nn.Module) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        return hidden_features(m, bank_tr.tokens, visual, layers, **kw), hidden_features(m, bank_te.tokens, visual, layers, **kw)

    feats = {"trained": features(model)}
    if p["controls"]:
        torch.manual_seed(task.seed)
        feats["random"] = features(ACDiT(model.cfg).to(ctx.device).eval())
        pixels = (bank_tr.tokens.flatten(1).numpy(), bank_te.tokens.flatten(1).numpy())
    sweeps = []
    bar = tqdm(total=len(targets) * (len(layers) * len(feats) + int(p["controls"])), desc=f"{task.name} probes", disable=not ctx.progress, leave=False)
    for target in targets:
        both = {target: list(bank_tr.columns[target]) + list(bank_te.columns[target])}
        names = class_names(train.features, both, target)
        y_tr, y_te = (encode_labels(b.columns[target], names).numpy() for b in (bank_tr, bank_te))
        fit = {}
        for kind, (ftr, fte) in feats.items():
            fit[kind] = {}
            for k in layers:
                fit[kind][k] = linear_probe(ftr[k], y_tr, fte[k], y_te, seed=task.seed)
                bar.update()
        pix = None
        if p["controls"]:
            pix = linear_probe(pixels[0], y_tr, pixels[1], y_te, seed=task.seed)
            bar.update()
        chance = float(np.bincount(y_te[y_te >= 0]).max() / max(len(y_te), 1))
        sweeps.append(ProbeSweep(target, fit["trained"], fit.get("random", {}), pix, chance))
    bar.close()
    details = {
        "layers": layers, "pool": p["pool"], "noisy_t": p["noisy_t"], "train_examples": len(train), "test_examples": len(test),
        "sweeps": {
            s.target: {
                "trained": {k: f.accuracy for k, f in s.trained.items()},
                "random": {k: f.accuracy for k, f in s.random.items()},
                "pixels": None if s.pixels is None else s.pixels.accuracy,
                "chance": s.chance,
                "best_layer": ProbeSweep.best(s.trained)[0],
                "C": {k: f.C for k, f in s.trained.items()},
            }
            for s in sweeps
        },
    }
    return Evidence(sweeps, details)


def _text_answers(bank, index: int, multi: str, single: str) -> list[str]:
    return list(bank.columns[multi][index]) if multi in bank.columns else [bank.columns[single][index]]


def _decode(task: EvalTaskConfig, ctx: EvalContext, n: int, step) -> list[str]:
    bs = int(task.generation.get("batch_size", 64))
    out: list[str] = []
    for s in tqdm(range(0, n, bs), desc=task.name, disable=not ctx.progress, leave=False):
        out += step(slice(s, min(s + bs, n)))
    return out


def run_vqa(task: EvalTaskConfig, ctx: EvalContext) -> Evidence:
    """Greedy answers to (image, question) pairs; references from `answers` (list) or `answer`."""
    ds = load_records(task.dataset, task.split, task.options, ctx.cap(task.num_samples), task.seed)
    bank = build_image_bank(ds, ctx.visual, name=f"{task.dataset}/{task.split}")
    if "question" in bank.columns:
        image_of = list(range(len(bank)))
        questions = list(bank.columns["question"])
        refs = [_text_answers(bank, i, "answers", "answer") for i in image_of]
        if "answer_type" in bank.columns:  # per-question types (VQAv2) for metrics that break scores down by them
            from .metrics.vqa_breakdown import TypedReferences

            refs = [TypedReferences(r, t) for r, t in zip(refs, bank.columns["answer_type"])]
    elif "questions" in bank.columns:  # one record per image: every question of it
        image_of = [i for i in range(len(bank)) for _ in bank.columns["questions"][i]]
        questions = [q for qs in bank.columns["questions"] for q in qs]
        refs = [[a] for ans in bank.columns["answers"] for a in ans]
    else:
        raise EvalError(f"task {task.name!r}: {task.dataset!r} records have no 'question' or 'questions'; columns: {sorted(bank.columns)}")
    head, tokens = VQA(ctx.visual, ctx.tokenizer), bank.tokens[image_of]
    max_new = int(task.generation.get("max_new_tokens", 8))
    preds = _decode(task, ctx, len(questions), lambda s: head.predict(ctx.model, tokens[s].to(ctx.device), questions[s], max_new))
    samples = [{"image": i, "question": q, "prediction": p, "references": r} for i, q, p, r in zip(image_of, questions, preds, refs)]
    examples = [{k: v for k, v in x.items() if k != "image"} for x in samples[:8]]
    grid = tokens_to_images(tokens[:8], ctx.visual)
    return Evidence((preds, refs), {"examples": examples, "num_questions": len(questions)}, grid, samples=samples)


def run_captioning(task: EvalTaskConfig, ctx: EvalContext) -> Evidence:
    """Greedy captions of images that have one; references from `captions` (list) or `caption`."""
    has = lambda cols: [bool(c) for c in cols.get("captions", cols.get("caption", []))]  # noqa: E731
    ds = load_records(task.dataset, task.split, task.options, ctx.cap(task.num_samples), task.seed, keep=has)
    bank = build_image_bank(ds, ctx.visual, name=f"{task.dataset}/{task.split}")
    refs = [_text_answers(bank, i, "captions", "caption") for i in range(len(bank))]
    head = Captioning(ctx.visual, ctx.tokenizer)
    max_new = int(task.generation.get("max_new_tokens", 16))
    preds = _decode(task, ctx, len(bank), lambda s: head.predict(ctx.model, bank.tokens[s].to(ctx.device), max_new))
    samples = [{"image": i, "prediction": p, "references": r} for i, (p, r) in enumerate(zip(preds, refs))]
    examples = [{k: v for k, v in x.items() if k != "image"} for x in samples[:8]]
    return Evidence((preds, refs), {"examples": examples}, tokens_to_images(bank.tokens[:8], ctx.visual), samples=samples)
