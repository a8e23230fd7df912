"""A task mixture: one stream of batches that trains several task heads jointly.

`TaskMixture.batch(step, rank, world_size, batch_size)` is a pure function of
(seed, step, rank), so resuming at a step needs no data-loader state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unimodal.batch import SequenceBatch, collate
from unimodal.config import VisualConfig
from unimodal.errors import ConfigError, check_float

from .base import ImageBank, RecordError, Task, build_image_bank, get_task_class


@dataclass
class TaskSpec:
    """One entry of a mixture (the `tasks:` list of a training config)."""

    name: str
    dataset: str
    weight: float = 1.0
    split: str = "train"
    drop_prob: float = 0.1  # condition dropout for guidance (label / prompt)
    max_text_tokens: int = 256  # longer record texts are truncated (and counted)
    options: dict[str, Any] = field(default_factory=dict)  # passed to load_dataset

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskSpec":
        from unimodal.config import ConfigError, suggest

        valid = list(cls.__dataclass_fields__)
        for k in d:
            if k not in valid:
                raise ConfigError(f"unknown task field {k!r}; valid fields: {valid}.{suggest(k, valid)}")
        for k in ("name", "dataset"):
            if k not in d:
                raise ConfigError(f"a task entry needs {k!r}: got {d}")
        check_float(f"task {d['name']!r}: weight", d.get("weight", 1.0), low=0.0, low_open=True)
        check_float(f"task {d['name']!r}: drop_prob", d.get("drop_prob", 0.1), low=0.0, high=0.999999)
        return cls(**d)


class TaskMixture:
    """Draws each example's task by weight and its record uniformly among those the task accepts.

    Args:
        entries: (task, weight, image bank) triples.
        token_dim: visual token width.
        seed: with (step, rank), determines every batch.
        skip_bad_records: a record a task cannot use is skipped (and counted in
            `bad_records`) instead of raising its RecordError.
        pack_tokens: pack examples first-fit into rows of this many tokens (documents
            kept apart by `doc` ids); None: one example per row, padded to the longest.
    """

    def __init__(
        self,
        entries: list[tuple[Task, float, ImageBank]],
        token_dim: int,
        seed: int = 0,
        skip_bad_records: bool = False,
        pack_tokens: int | None = None,
    ):
        if not entries:
            raise ConfigError("a task mixture needs at least one task")
        if pack_tokens is not None and pack_tokens <= 0:
            raise ConfigError(f"pack_tokens={pack_tokens} is invalid: must be a positive token count or None")
        self.entries, self.token_dim, self.seed = entries, token_dim, seed
        self.skip_bad_records, self.pack_tokens = skip_bad_records, pack_tokens
        self.bad_records: set[tuple[str, int]] = set()
        w = np.array([e[1] for e in entries], dtype=np.float64)
        self.probs = w / w.sum()
        self.indices = []
        for task, _, bank in entries:
            idx = np.array([i for i in range(len(bank)) if task.accepts(bank, i)], dtype=np.int64)
            if len(idx) == 0:
                raise ConfigError(f"task {task.name!r}: no record of {bank.name!r} can train it")
            self.indices.append(idx)

    @property
    def tasks(self) -> list[Task]:
        return [e[0] for e in self.entries]

    def examples(self, step: int, rank: int, batch_size: int) -> list:
        rng = np.random.default_rng([self.seed, step, rank])
        out: list = []
        attempts = 0
        while len(out) < batch_size:
            attempts += 1
            if attempts > 100 * batch_size:
                raise RecordError(f"gave up after {attempts} draws: {len(self.bad_records)} bad records skipped")
            k = int(rng.choice(len(self.entries), p=self.probs))
            task, _, bank = self.entries[k]
            index = int(rng.choice(self.indices[k]))
            try:
                out.append(task.example(bank, index, rng))
            except RecordError:
                if not self.skip_bad_records:
                    raise
                self.bad_records.add((bank.name, index))
        return out

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> SequenceBatch:
        """The batch of one rank at one step (rank's own random stream; world_size kept for the protocol)."""
        examples = self.examples(step, rank, batch_size)
        if self.pack_tokens is None:
            return collate(examples, self.token_dim)
        rows: list[list] = []
        free: list[int] = []
        for i, ex in enumerate(examples):  # first fit
            n = len(ex.layout)
            if n > self.pack_tokens:
                raise ConfigError(f"example {i} ({ex.layout}) has {n} tokens, more than pack_tokens={self.pack_tokens}")
            r = next((j for j, f in enumerate(free) if f >= n), None)
            if r is None:
                rows.append([ex])
                free.append(self.pack_tokens - n)
            else:
                rows[r].append(ex)
                free[r] -= n
        return collate(rows, self.token_dim, seq_len=self.pack_tokens)


def load_bank(dataset: str, split: str, visual: VisualConfig, options: dict[str, Any] | None = None) -> ImageBank:
    from unimodal.data import load_dataset

    ds = load_dataset(dataset, split, **(options or {}))
    if visual.frames > 1:
        from .video import build_video_bank

        return build_video_bank(ds, visual, name=f"{dataset}/{split}")
    return build_image_bank(ds, visual, name=f"{dataset}/{split}")


def build_mixture(
    specs: list[TaskSpec | dict[str, Any]], visual: VisualConfig, tokenizer: Any, seed: int = 0
) -> TaskMixture:
    """Instantiate tasks and tokenise each (dataset, split) once."""
    banks: dict[tuple[str, str, str], ImageBank] = {}
    entries = []
    for s in specs:
        s = s if isinstance(s, TaskSpec) else TaskSpec.from_dict(s)
        key = (s.dataset, s.split, repr(sorted(s.options.items())))
        if key not in banks:
            banks[key] = load_bank(s.dataset, s.split, visual, s.options)
        task = get_task_class(s.name)(visual, tokenizer, drop_prob=s.drop_prob, max_text_tokens=s.max_text_tokens)
        entries.append((task, s.weight, banks[key]))
    return TaskMixture(entries, visual.token_dim, seed)


def build_batch_source(train_cfg: Any, model_cfg: Any, visual_cfg: VisualConfig, tokenizer: Any) -> TaskMixture:
    """The trainer's data: the mixture of `train_cfg.tasks` seeded by `train_cfg.seed`."""
    if visual_cfg.token_dim != model_cfg.token_dim:
        raise ConfigError(
            f"visual config gives token_dim {visual_cfg.token_dim} (channels*patch²) but the model has "
            f"token_dim {model_cfg.token_dim}"
        )
    mix = build_mixture(list(train_cfg.tasks), visual_cfg, tokenizer, seed=int(train_cfg.seed))
    for task in mix.tasks:
        task.num_classes = model_cfg.num_classes if model_cfg.num_classes > 0 else None
    mix.skip_bad_records = bool(getattr(train_cfg, "skip_bad_records", False))  # TrainConfig fields; other configs may lack them
    mix.pack_tokens = getattr(train_cfg, "pack_tokens", None)
    return mix


def build_tokenizer(train_cfg: Any) -> Any:
    """The trainer's text tokenizer when `tokenizer.path` is not given.

    `tokenizer: {vocab_size: N, train_on: ["easyvqa:train", ...]}` trains a SentencePiece
    BPE on the text columns of those datasets (default: the train split of every
    dataset a text task reads). Training is deterministic, so every rank builds the
    same tokenizer. Returns None when no task needs text.
    """
    from unimodal.data import load_dataset
    from unimodal.data.transforms import dataset_texts
    from unimodal.tokenizers import TextTokenizer

    specs = [s if isinstance(s, TaskSpec) else TaskSpec.from_dict(s) for s in train_cfg.tasks]
    text_specs = [s for s in specs if get_task_class(s.name).needs_text]
    if not text_specs:
        return None
    opts = dict(train_cfg.tokenizer)
    sources = opts.pop("train_on", None) or sorted({f"{s.dataset}:train" for s in text_specs})
    vocab = int(opts.pop("vocab_size", 512))
    if opts:
        from unimodal.config import ConfigError

        raise ConfigError(f"unknown tokenizer option(s) {sorted(opts)}; valid: path, vocab_size, train_on")
    texts: list[str] = []
    for src in sources:
        name, _, split = src.partition(":")
        texts.extend(dataset_texts(load_dataset(name, split or "train")))
    return TextTokenizer.train(texts, vocab_size=vocab)
