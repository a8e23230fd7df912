"""Generation heads: class→image and text→image samples, scored against a reference split.

Samples are drawn in batches, each seeded with (task seed + batch index), so a
run is a pure function of the checkpoint, the task file and the seed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from unimodal.generate import VisualSampling
from unimodal.tasks import ClassToImage, TextToImage

from .context import EvalContext, Evidence
from .data import load_records
from .errors import EvalError
from .extractors import build_extractor
from .extractors.domain_cnn import encode_labels
from .provenance import array_sha256
from .reference import npz_arrays, npz_reference, reference_features
from .samples import SampleSet
from .task_config import EvalTaskConfig

SAMPLING_KEYS = ("sampler", "steps", "cfg_scale", "sampler_kwargs")


def sampling_of(task: EvalTaskConfig, ctx: EvalContext) -> VisualSampling:
    """The task's sampler settings over the checkpoint's own noise schedule."""
    settings = {k: v for k, v in task.generation.items() if k in SAMPLING_KEYS}
    return VisualSampling(**settings, schedule=ctx.checkpoint.schedule)


def _generate(task: EvalTaskConfig, ctx: EvalContext, conditions: list, draw: Callable[[list, int], torch.Tensor]) -> torch.Tensor:
    bs = int(task.generation.get("batch_size", 64))
    chunks = range(0, len(conditions), bs)
    out = [draw(conditions[s : s + bs], task.seed + i) for i, s in enumerate(tqdm(chunks, desc=task.name, disable=not ctx.progress, leave=False))]
    return torch.cat(out)


def _samples(task: EvalTaskConfig, key: str, conditions: list) -> list[dict]:
    """One provenance record per generated image: its condition and the seed of its batch."""
    bs = int(task.generation.get("batch_size", 64))
    return [{"index": i, key: c, "batch_seed": task.seed + i // bs} for i, c in enumerate(conditions)]


def _comparability(extractor, n: int) -> tuple[bool, list[str]]:
    if extractor.comparable:
        note = f"FID/IS use the standard Inception weights: comparable with published numbers for the same reference set and sample count (this run: {n} samples; the paper protocol is FID-50K)."
        return n >= 50_000, [note]
    if extractor.info.get("kind") == "inception":
        return False, ["Inception weights are not the standard FID file (hash differs): NOT comparable with published FID."]
    acc = ", ".join(f"{h} {a:.1%}" for h, a in extractor.info.get("test_accuracy", {}).items())
    return False, [f"In-domain extractor {extractor.name} (its own test accuracy: {acc}): FID/IS/precision/recall are comparable only between runs with this extractor, NOT with published FID."]


def _sample_set(task: EvalTaskConfig, ctx: EvalContext, images: torch.Tensor, ref_ds, targets_from) -> tuple[SampleSet, dict, bool, list[str]]:
    v = ctx.visual
    opts = dict(task.extractor_options)
    if task.extractor == "inception":
        opts.setdefault("device", str(ctx.device))  # 50K images through Inception: use the accelerator
        if ctx.inception_weights:
            opts.setdefault("weights", ctx.inception_weights)
    extractor = build_extractor(task.extractor, opts, dataset=task.dataset, image_size=v.image_size, channels=v.channels)
    if task.reference_npz:  # the ADM evaluator's reference batch: its mu/sigma, arr_0's features when needed
        need = any(m in ("precision", "recall") for m in task.metrics)
        feats, stats, ref_info = npz_reference(task.reference_npz, extractor, v.image_size, v.channels, need)
        num_reference = ref_info["num_images"]
    else:
        key = {"dataset": task.dataset, "split": task.split, "options": task.options, "seed": task.seed, "head": task.head}
        feats, stats = reference_features(ref_ds, extractor, v.image_size, v.channels, key)
        num_reference, ref_info = len(ref_ds), {"dataset": task.dataset, "split": task.split}
    clip = None
    if "clip_score" in task.metrics:
        from .extractors.clip import build_clip

        clip = build_clip(task.clip, dataset=task.dataset, image_size=v.image_size, channels=v.channels)
    s = SampleSet(images, extractor, feats, targets_from(extractor), clip=clip, reference_stats=stats)
    comparable, notes = _comparability(extractor, len(images))
    if task.reference_npz and s.features.shape[1] != len(stats[0]):
        raise EvalError(f"task {task.name!r}: the reference statistics have {len(stats[0])} dimensions, the {extractor.name} "
                        f"features {s.features.shape[1]} (ADM's mu/sigma are of the standard FID Inception's 2048-d features)")
    details = {"extractor": extractor.info, "num_samples": len(images), "num_reference": num_reference,
               "reference": ref_info, "reference_stats_sha256": array_sha256(*stats)}
    if clip is not None:
        details["clip"] = clip.info
        comparable_clip = clip.info.get("comparable", False)
        notes.append("CLIP score from " + ("user-supplied open_clip weights." if comparable_clip else "the in-domain CLIP trained by the toolkit: NOT comparable with published CLIP scores."))
    return s, details, comparable, notes


def run_class_to_image(task: EvalTaskConfig, ctx: EvalContext) -> Evidence:
    """Balanced labels 0,1,..,K-1,0,1,..; reference: the split's images, or `reference.npz` (ADM's reference batch).

    With `reference.npz` no record is read: num_samples (capped by --limit) images are drawn,
    by default as many as the file has images. The file is checked before anything is generated.
    """
    K = ctx.model.cfg.num_classes
    if task.reference_npz:
        found = npz_arrays(task.reference_npz)
        n = ctx.cap(task.num_samples) or (found["arr_0"][0][0] if "arr_0" in found else None)
        if n is None:
            raise EvalError(f"task {task.name!r}: set num_samples (reference {task.reference_npz!r} has statistics, no images)")
        ref = None
    else:
        ref = load_records(task.dataset, task.split, task.options, ctx.cap(task.num_samples), task.seed)
        n = len(ref)
    labels = [i % K for i in range(n)]
    head = ClassToImage(ctx.visual, None)
    sampling = sampling_of(task, ctx)
    images = _generate(task, ctx, labels, lambda c, seed: head.generate(ctx.model, c, sampling, seed=seed))

    def targets(extractor) -> dict[str, np.ndarray]:
        if "label" not in extractor.heads:
            return {}
        if len(extractor.heads["label"]) != K:
            raise EvalError(f"task {task.name!r}: the checkpoint has {K} classes, {task.dataset!r} labels have {len(extractor.heads['label'])}")
        return {"label": np.asarray(labels)}

    s, details, comparable, notes = _sample_set(task, ctx, images, ref, targets)
    cols = min(K, 10)
    grid = images[: cols * min(8, max(1, len(images) // cols))]
    return Evidence(s, details, grid, grid_cols=cols, comparable=comparable, notes=notes, samples=_samples(task, "class_label", labels))


def run_text_to_image(task: EvalTaskConfig, ctx: EvalContext) -> Evidence:
    """One sample per captioned record; the requested attributes are the record's label columns."""
    has = lambda cols: [bool(c) for c in cols["caption"]]  # noqa: E731
    if task.reference_npz:
        npz_arrays(task.reference_npz)  # checked before anything is generated
    ref = load_records(task.dataset, task.split, task.options, ctx.cap(task.num_samples), task.seed, keep=has)
    captions = list(ref["caption"])
    head = TextToImage(ctx.visual, ctx.tokenizer)
    sampling = sampling_of(task, ctx)
    images = _generate(task, ctx, captions, lambda c, seed: head.generate(ctx.model, c, sampling, seed=seed))

    def targets(extractor) -> dict[str, np.ndarray]:
        return {h: encode_labels(ref[h], names).numpy() for h, names in extractor.heads.items() if h in ref.column_names}

    s, details, comparable, notes = _sample_set(task, ctx, images, ref, targets)
    s.captions = captions
    details["examples"] = [{"prompt": c} for c in captions[:8]]
    return Evidence(s, details, images[:16], grid_cols=8, comparable=comparable, notes=notes, samples=_samples(task, "prompt", captions))
