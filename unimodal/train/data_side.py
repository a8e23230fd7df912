"""The data side of training, injected into the core (docs/architecture.md, "Training").

The trainer needs three things from whoever owns the data: a text tokenizer, a
`BatchSource` (a pure function of (seed, step, rank)) and, optionally, a progress-sample
hook. The core never imports a data package by name in its code paths; it asks for the
`DataSide` registered at a module path (default ``unimodal.tasks``, or
``$UNIMODAL_DATA_SIDE``), whose module attribute ``DATA_SIDE`` implements the protocol.
An import error in that module is a real error and propagates: it is never turned into
"no tokenizer" or "cannot build a source". Callers with their own data pass
``batch_source=`` / ``sample_hook=`` to `train` instead.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from unimodal.config import ModelConfig, VisualConfig
    from unimodal.tokenizers import TextTokenizer

    from .config import TrainConfig
    from .trainer import BatchSource, SampleHook

DEFAULT_MODULE = "unimodal.tasks"
ENV = "UNIMODAL_DATA_SIDE"


class DataSide(Protocol):
    """What the trainer asks of the data owner."""

    def build_tokenizer(self, cfg: TrainConfig) -> TextTokenizer | None:
        """The tokenizer the config's tasks need (trained on their texts if none is saved), or None."""
        ...

    def build_source(self, cfg: TrainConfig, model_cfg: ModelConfig, visual: VisualConfig, tokenizer: TextTokenizer | None) -> BatchSource:
        """The batch source of the config's tasks."""
        ...

    def sample_hook(self, source: BatchSource, out: Path, schedule: Any) -> SampleHook | None:
        """Progress samples for `source` written under `out`, or None when the source has none."""
        ...


def data_side(module: str | None = None) -> DataSide:
    """The `DataSide` at `module` (default ``$UNIMODAL_DATA_SIDE`` or ``unimodal.tasks``); import errors propagate."""
    return importlib.import_module(module or os.environ.get(ENV) or DEFAULT_MODULE).DATA_SIDE
