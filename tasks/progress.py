"""Progress samples: what a training run shows every `sample_every` steps, so a user can watch it learn.

For every task of the run's mixture the task head's `progress` view is written to
`OUT_DIR/samples/step_NNNNNNN/`: a PNG grid of generated images (class→image,
text→image), a frame grid (class→video), or the model's captions and VQA answers
next to the truth, all gathered in one `samples.md`. The records shown are drawn
once from the training data (fixed seed), so the grids of successive steps are
directly comparable. A step's folder is written under a temporary name and renamed
into place, so a crash never leaves half a folder under the final name. A task
whose view fails gets a line saying so (and a warning); training goes on.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from unimodal.atomic import atomic_directory, remove_orphans
from unimodal.diffusion.schedule import ScheduleConfig
from unimodal.errors import ConfigError

from .mixture import TaskMixture

if TYPE_CHECKING:
    from unimodal.model import ACDiT


class ProgressSamples:
    """The default `sample_hook` of `unimodal.train.train` over a task mixture.

    Args:
        mixture: the run's `TaskMixture` (its tasks and image banks).
        out_dir: the run's output directory; samples go to `out_dir/samples/`.
        schedule: the run's noise schedule (generation samples with it).
        num: records shown per task.
        seed: which records are shown.
    """

    def __init__(self, mixture: TaskMixture, out_dir: str | Path, schedule: ScheduleConfig | None = None,
                 num: int = 8, seed: int = 0):
        if num < 1:
            raise ConfigError(f"num={num} is invalid: must be >= 1")
        self.mixture, self.root = mixture, Path(out_dir) / "samples"
        self.schedule = schedule or ScheduleConfig()
        rng = np.random.default_rng(seed)
        self.picks = [sorted(rng.choice(idx, size=min(num, len(idx)), replace=False).tolist()) for idx in mixture.indices]

    @torch.no_grad()
    def __call__(self, step: int, model: ACDiT) -> Path:
        """Write the samples of `step` and return their folder."""
        final = self.root / f"step_{step:07d}"

        def write(tmp: Path) -> None:
            lines = [f"# Samples at step {step}", "",
                     "EMA weights (live weights when the EMA is off); records drawn once from the training data.", ""]
            for k, (task, _, bank) in enumerate(self.mixture.entries):
                try:
                    body = task.progress(model, bank, self.picks[k], self.schedule, tmp, f"{k}_{task.name}")
                except Exception as e:  # noqa: BLE001 - a broken view must not stop a long training run
                    warnings.warn(f"progress samples of task {task.name!r} at step {step} failed: {e!r}", stacklevel=4)
                    body = [f"*This task's progress view failed: `{type(e).__name__}: {e}`*"]
                if body:
                    lines += [f"## {task.name} ({bank.name})", "", *body, ""]
            (tmp / "samples.md").write_text("\n".join(lines))

        remove_orphans(self.root)  # what a killed run left half-written
        atomic_directory(final, write)
        return final
