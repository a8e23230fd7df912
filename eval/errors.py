"""The one error type of the evaluation harness."""

from __future__ import annotations


class EvalError(ValueError):
    """An eval request cannot run: unknown task or metric, missing weight file, wrong checkpoint.

    The message names the bad value and what would be valid, on one line.
    """
