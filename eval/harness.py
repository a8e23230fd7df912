"""`run_eval`: load a checkpoint, run eval tasks, score their metrics, write JSON and a Markdown report.

    >>> from unimodal.eval import run_eval
    >>> results = run_eval("runs/tiny/final", ["easyvqa_vqa", "easyvqa_probe"], "out/results.json", limit=64)
    >>> results["tasks"]["easyvqa_vqa"]["metrics"]["vqa_accuracy"]

Everything that can be checked before the first sample is (task names, metric
names, weight files, whether the checkpoint can do each task), so a bad request
fails at once with one error.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from unimodal.errors import UnimodalError

from .context import EvalContext, Evidence
from .errors import EvalError
from .metrics import get_metric, score_text
from .provenance import checkpoint_identity, prompt_template, run_environment, sha256_text
from .task_config import HEADS, EvalTaskConfig, TaskRegistry

if TYPE_CHECKING:
    from unimodal.checkpoint import Checkpoint
    from unimodal.tokenizers import TextTokenizer

_PACKAGES = ("unimodal", "torch", "numpy", "scipy", "scikit-learn", "open-clip-torch", "torch-fidelity")


def _runners() -> dict[str, Callable[[EvalTaskConfig, EvalContext], Evidence]]:
    from .generation import run_class_to_image, run_text_to_image
    from .understanding import run_captioning, run_probe, run_vqa

    return {"probe": run_probe, "vqa": run_vqa, "captioning": run_captioning,
            "class_to_image": run_class_to_image, "text_to_image": run_text_to_image}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def trained_tasks(extra: dict[str, Any]) -> list[str]:
    """Names of the training tasks a checkpoint records (`extra["tasks"]`: names or TaskSpec dicts)."""
    tasks = extra.get("tasks") or (extra.get("train") or {}).get("tasks") or []
    return sorted({t["name"] if isinstance(t, dict) else str(t) for t in tasks})


def check_checkpoint(task: EvalTaskConfig, ckpt: Checkpoint, tokenizer: TextTokenizer | None) -> None:
    """EvalError if the checkpoint cannot do `task` (no images, no text, no classes, not trained for it)."""
    what = f"eval task {task.name!r} (head {task.head!r})"
    where = f"checkpoint {str(ckpt.path)!r}"
    trained = trained_tasks(ckpt.extra)
    was = f"; it was trained on {trained}" if trained else ""
    if ckpt.visual is None:
        raise EvalError(f"{where} has no visual config: {what} needs images")
    if task.head in ("vqa", "captioning", "text_to_image") and (tokenizer is None or ckpt.model.cfg.vocab_size == 0):
        raise EvalError(f"{what} needs a text model, but {where} has no text tokenizer{was}")
    if task.head == "class_to_image" and ckpt.model.cfg.num_classes == 0:
        raise EvalError(f"{what} needs a class-conditional model, but {where} has num_classes=0{was}")
    needed = HEADS[task.head][1]
    if needed and trained and needed not in trained:
        raise EvalError(f"{what} needs a checkpoint trained on task {needed!r}, but {where} was trained on {trained}")
    if task.head == "probe":
        n_layer, layers = ckpt.model.cfg.n_layer, task.probe.get("layers", "all")
        if layers != "all" and max(layers) > n_layer:
            raise EvalError(f"{what}: probe layers {layers} go past the model's {n_layer} blocks (valid: 0..{n_layer})")
        noisy_t, steps = task.probe.get("noisy_t"), ckpt.schedule.num_train_timesteps
        if noisy_t is not None and noisy_t >= steps:
            raise EvalError(f"{what}: probe noisy_t={noisy_t} is not a timestep of the checkpoint's schedule (valid: 0..{steps - 1})")


def check_data(task: EvalTaskConfig) -> None:
    """Fail before any work when a task's dataset, split, options or downloaded files are wrong."""
    from unimodal.data.registry import check_dataset

    if task.reference_npz:  # the ADM reference batch: its arrays are checked from their headers
        from .reference import npz_arrays

        npz_arrays(task.reference_npz)
        if task.head == "class_to_image":
            return  # with an npz reference, class->image reads no dataset records
    empty = [k for k, v in task.options.items() if v == ""]
    if empty:
        raise EvalError(
            f"eval task {task.name!r}: options {empty} are empty (an unset environment variable in {task.source or 'its file'}?); "
            f"set them{' (' + ', '.join(task.env) + ')' if task.env else ''}, see the task's description in `unimodal eval --list`"
        )
    for split in (task.split, task.train_split) if task.head == "probe" else (task.split,):
        try:
            check_dataset(task.dataset, split, **task.options)
        except UnimodalError as e:
            raise EvalError(f"eval task {task.name!r}: {e}") from None


def check_output(output: str | Path | None) -> None:
    """Fail before any work when the results JSON cannot be written where asked."""
    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise EvalError(f"--output {str(path)!r} is a directory; give a file such as {str(path / 'results.json')!r}")
    if path.suffix != ".json":
        raise EvalError(f"--output {str(path)!r} must be a .json file (the Markdown report goes next to it)")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise EvalError(f"--output {str(path)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise EvalError(f"--output {str(path)!r}: directory {str(parent)!r} is not writable")


def check_weight_files(task: EvalTaskConfig, inception_weights: str | None) -> None:
    """Fail before any work when a weight file the task needs is missing."""
    if task.head in ("class_to_image", "text_to_image") and task.extractor == "inception":
        from .extractors.inception import resolve_weights

        resolve_weights(task.extractor_options.get("weights") or inception_weights)
    if "clip_score" in task.metrics:
        from .extractors.clip import check_clip_settings

        check_clip_settings(task.clip)


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def score(task: EvalTaskConfig, ev: Evidence) -> dict[str, float | None]:
    """Every metric of `task` on the head's evidence; dict results become `name/key` entries."""
    out: dict[str, float | None] = {}
    for name in task.metrics:
        metric, options = get_metric(name), task.metric_options.get(name, {})
        value = score_text(metric, *ev.inputs, **options) if metric.inputs == "text" else metric.fn(ev.inputs, **options)
        if isinstance(value, dict):
            out.update({(name if k == "" else f"{name}/{k}"): _finite(float(v)) for k, v in value.items()})
        else:
            out[name] = _finite(float(value))
    return out


def run_eval(
    checkpoint: str | Path,
    tasks: Iterable[str],
    output: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int | None = None,
    include_paths: Iterable[str | Path] = (),
    device: str = "cpu",
    inception_weights: str | None = None,
    use_ema: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on eval tasks.

    Args:
        checkpoint: a checkpoint directory (`save_checkpoint`).
        tasks: eval task names (`list_eval_tasks()`).
        output: results JSON path; the Markdown report and PNGs go next to it. None: write nothing.
        limit: cap on every task's number of samples (and probe training sets), for quick runs.
        seed: overrides every task's seed.
        include_paths: directories of extra task YAML files.
        device: where the model runs.
        inception_weights: local FID Inception weight file (else $UNIMODAL_INCEPTION_WEIGHTS).
        use_ema: evaluate EMA weights when the checkpoint has them.
        progress: show progress bars.

    Returns:
        The results: per task its metrics, metric directions, resolved settings,
        details and wall time, plus seed, limit, versions and total wall time.

    Raises:
        EvalError: unknown task or metric, missing weight file, or a checkpoint that cannot do a task.
    """
    from unimodal.checkpoint import load_checkpoint
    from unimodal.tokenizers import TextTokenizer

    start = time.perf_counter()
    names = [t for t in tasks]
    if not names:
        raise EvalError("no eval tasks given; see `unimodal eval --list`")
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be >= 1, got {limit}")
    registry = TaskRegistry(include_paths)
    configs = [registry.get(n) for n in names]
    if seed is not None:
        configs = [replace(c, seed=int(seed)) for c in configs]
    for c in configs:
        check_weight_files(c, inception_weights)
        check_data(c)
    check_output(output)
    ckpt = load_checkpoint(checkpoint, use_ema=use_ema, device=device)
    tokenizer = TextTokenizer.load(ckpt.tokenizer_dir) if ckpt.tokenizer_dir is not None else None
    for c in configs:
        check_checkpoint(c, ckpt, tokenizer)
    ctx = EvalContext(ckpt, tokenizer, limit, torch.device(device), progress, inception_weights)
    runners = _runners()
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "checkpoint_meta": {k: v for k, v in ckpt.meta.items() if k != "saved_at"},
        "used_ema": ckpt.used_ema, "seed": seed, "limit": limit, "device": device, "versions": versions(),
        "provenance": {"checkpoint": checkpoint_identity(checkpoint, ckpt.used_ema), **run_environment(ckpt.model, device),
                       "samples_file": None if output is None else samples_path(Path(output)).name},
        "tasks": {},
    }
    evidence: dict[str, Evidence] = {}
    samples: list[dict[str, Any]] = []
    for c in tqdm(configs, desc="eval", disable=not progress):
        t0 = time.perf_counter()
        torch.manual_seed(c.seed)
        ev = runners[c.head](c, ctx)
        metrics = score(c, ev)
        evidence[c.name] = ev
        samples += sample_records(c, ev)
        results["tasks"][c.name] = {
            "head": c.head, "dataset": c.dataset, "split": c.split, "version": c.version, "seed": c.seed,
            "num_samples": ev.details.get("num_samples", ev.details.get("num_questions", ev.details.get("test_examples", _count(ev)))),
            "metrics": metrics,
            "metric_info": {m: {"higher_is_better": get_metric(m).higher_is_better, "aggregation": get_metric(m).aggregation} for m in c.metrics},
            "prompt_template": prompt_template(c),
            "prompt_template_sha256": sha256_text(prompt_template(c)),
            "comparable_with_published": ev.comparable,
            "notes": ev.notes,
            "settings": c.to_dict(),
            "details": ev.details,
            "wall_time_s": time.perf_counter() - t0,
        }
    results["wall_time_s"] = time.perf_counter() - start
    if output is not None:
        write_results(Path(output), results, evidence, samples)
    return results


def samples_path(results: Path) -> Path:
    """The per-sample JSONL next to a results JSON: ``results.json`` -> ``results.samples.jsonl``."""
    return results.with_suffix(".samples.jsonl")


def sample_records(task: EvalTaskConfig, ev: Evidence) -> list[dict[str, Any]]:
    """The task's per-sample records, each with its per-item score for every mean-aggregated text metric."""
    rows = [{"task": task.name, **r} for r in ev.samples]
    for name in task.metrics:
        metric = get_metric(name)
        if metric.inputs == "text" and metric.aggregation == "mean" and len(rows) == len(ev.inputs[0]):
            opts = task.metric_options.get(name, {})
            for row, p, r in zip(rows, *ev.inputs):
                row.setdefault("scores", {})[name] = _finite(float(metric.fn(p, r, **opts)))
    return rows


def _count(ev: Evidence) -> int | None:
    return len(ev.inputs[0]) if isinstance(ev.inputs, tuple) else None


def write_results(path: Path, results: dict[str, Any], evidence: dict[str, Evidence], samples: list[dict[str, Any]] | None = None) -> None:
    """results.json (strict JSON: NaN becomes null), results.md with its PNGs, and the per-sample JSONL, next to each other.

    Each file is written atomically (a crash leaves the previous file or none).
    """
    from unimodal.atomic import write_text

    from .report import write_report

    path.parent.mkdir(parents=True, exist_ok=True)
    if samples is not None:
        write_text(samples_path(path), "".join(json.dumps(row, default=str, allow_nan=False) + "\n" for row in samples))
    write_text(path, json.dumps(results, indent=2, default=str, allow_nan=False) + "\n")
    write_report(path.with_suffix(".md"), results, evidence)
