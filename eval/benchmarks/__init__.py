"""Standard understanding benchmarks read from the user's downloaded files (VQAv2, GQA, POPE, TextVQA, COCO Karpathy).

Importing this package registers their loaders in the dataset registry
(:mod:`.loaders`); :mod:`.prompts` holds the pinned prompt templates. The eval
tasks are ``eval/tasks/{vqav2_val,gqa_testdev,pope_*,textvqa_val,coco_karpathy_test}.yaml``.
"""

from . import loaders  # noqa: F401  (registers the datasets)
from .prompts import PROMPTS, render_prompt

__all__ = ["PROMPTS", "render_prompt"]
