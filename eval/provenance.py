"""Provenance of an eval run: what a rerun must match for its numbers to be checked.

`run_eval` records, next to every results JSON:

* the checkpoint's identity: the SHA-256 of each file the weights were read from
  (``model.safetensors`` or ``ema.safetensors``, and ``config.yaml``) and one digest of them;
* per task: the prompt template and its SHA-256, the seed, the resolved settings,
  and for generation tasks the SHA-256 of the reference statistics (mu, sigma);
* run-wide: dtype, device, torch's deterministic flags, and package versions;
* per sample: the inputs, the output and its per-item scores, in a JSONL file
  (``<results stem>.samples.jsonl``), one line per sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .task_config import EvalTaskConfig

# What each head feeds the model before it generates (the layout of docs/architecture.md,
# "Sequence layout"); a task's own template (options.prompt) replaces {question}.
HEAD_TEMPLATES = {
    "vqa": "<bos> <boi> {image} <eoi> {question} -> answer <eos>",
    "captioning": "<bos> <boi> {image} <eoi> -> caption <eos>",
    "text_to_image": "<bos> {caption} <boi> -> image blocks <eoi>",
    "class_to_image": "<class> -> image blocks",
    "probe": "<boi> {image} <eoi> (hidden states)",
}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_identity(path: str | Path, used_ema: bool) -> dict[str, Any]:
    """SHA-256 of the weight file that was loaded and of config.yaml, plus one digest over both."""
    root = Path(path)
    names = ["ema.safetensors" if used_ema else "model.safetensors", "config.yaml"]
    files = {n: sha256_file(root / n) for n in names if (root / n).is_file()}
    return {"files": files, "sha256": sha256_text("".join(f"{n}:{d}\n" for n, d in sorted(files.items())))}


def prompt_template(task: EvalTaskConfig) -> str:
    """The template a task's head uses; a task's ``options.prompt`` (a named template) adds its exact text."""
    from unimodal.data.benchmarks import PROMPTS

    template = HEAD_TEMPLATES[task.head]
    custom = task.options.get("prompt") if isinstance(task.options, dict) else None
    if not custom:
        return template
    return f"{template} | {custom}: question = {PROMPTS.get(custom, custom)!r}"


def array_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' dtypes, shapes and bytes (for reference statistics)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def run_environment(model: torch.nn.Module, device: str) -> dict[str, Any]:
    param = next(model.parameters(), None)
    return {
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else None,
        "device": device,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "num_threads": torch.get_num_threads(),
    }
