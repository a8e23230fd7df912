"""The one error type of the evaluation harness: :class:`unimodal.errors.EvalError`, re-exported.

There is a single class (docs/architecture.md, "Errors"): ``unimodal.eval.EvalError`` *is*
``unimodal.errors.EvalError``, so the CLI's one ``except UnimodalError`` prints it as one line.
"""

from __future__ import annotations

from unimodal.errors import EvalError

__all__ = ["EvalError"]
