"""What every task head gets (`EvalContext`) and gives back (`Evidence`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from unimodal.checkpoint import Checkpoint
from unimodal.config import VisualConfig
from unimodal.diffusion.schedule import NoiseSchedule

if TYPE_CHECKING:
    from unimodal.tokenizers import TextTokenizer


@dataclass
class EvalContext:
    """A loaded checkpoint and the run-wide settings."""

    checkpoint: Checkpoint
    tokenizer: TextTokenizer | None
    limit: int | None = None  # caps every task's number of samples (and probe training sets)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    inception_weights: str | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.checkpoint.model

    @property
    def visual(self) -> VisualConfig:
        assert self.checkpoint.visual is not None  # checked by the harness before any task runs
        return self.checkpoint.visual

    @property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.checkpoint.schedule)

    def cap(self, n: int | None) -> int | None:
        """`n` capped by --limit (None: no cap)."""
        if n is None:
            return self.limit
        return n if self.limit is None else min(int(n), self.limit)


@dataclass
class Evidence:
    """What a task head produced.

    inputs: what its metrics read — (predictions, references) for text, a SampleSet
        for images, a list of ProbeSweep for probes.
    details: JSON-able extras for the results file and the report.
    grid: images for the report's sample grid (N, C, H, W) in [-1, 1], or None.
    grid_cols: images per grid row.
    comparable: whether its generation numbers can be set beside published ones (None: not applicable).
    notes: sentences the report prints under the task.
    samples: one JSON-able record per sample (its inputs and output), written to the
        samples JSONL next to the results (provenance); empty for heads with no per-sample output.
    """

    inputs: Any
    details: dict[str, Any] = field(default_factory=dict)
    grid: torch.Tensor | None = None
    grid_cols: int = 8
    comparable: bool | None = None
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
