"""The evaluation harness (`unimodal.eval`): eval tasks as YAML, registered metrics, `run_eval`.

    >>> from unimodal.eval import run_eval, list_eval_tasks
    >>> list_eval_tasks()
    ['digits_probe', 'easyvqa_caption', ...]
    >>> results = run_eval("ckpt/", ["easyvqa_vqa"], "out/results.json", limit=100, seed=0)

Names are imported lazily so `unimodal --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_eval": "harness", "check_checkpoint": "harness",
    "EvalError": "errors",
    "EvalTaskConfig": "task_config", "TaskRegistry": "task_config", "get_eval_task": "task_config", "list_eval_tasks": "task_config",
    "register_metric": "metrics", "get_metric": "metrics", "list_metrics": "metrics", "METRICS": "metrics",
    "build_extractor": "extractors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unimodal.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
