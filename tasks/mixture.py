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
from unimodal.errors import ConfigError, check_float, check_positive_int

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
    # text_to_image only: the caption before the image is also a language-model target; a number p in [0, 1]:
    # in a seeded share p of the examples (the prompt loss at weight p in expectation)
    prompt_loss: bool | float = True
    qa_per_example: int = 1  # vqa only: question/answer turns drawn per image (per-image records)
    # vqa only, per-image records: draw turns so that each question pattern's answers are equally likely
    # (VQA.balance_answers): a model cannot answer "is there a red shape?" from the question alone
    balance_answers: bool = False
    # vqa only, per-image records: each yes/no turn names the image's own colour/shape half the time, its answer
    # recomputed from the record's open answers (VQA.complementary_yes_no)
    complementary_yes_no: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # passed to load_dataset (dataset "prepared": see load_bank)
    order: str | None = None  # "random" (uniform draws) or "epoch" (each epoch a seeded permutation); default:
    # epoch for prepared shards, random otherwise

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
        pl = d.get("prompt_loss", True)
        if not isinstance(pl, bool):
            check_float(f"task {d['name']!r}: prompt_loss (true, false or a share in [0, 1])", pl, low=0.0, high=1.0)
        if "prompt_loss" in d and d["name"] != "text_to_image":
            raise ConfigError(f"task {d['name']!r}: prompt_loss applies only to text_to_image (the caption before the image)")
        if "qa_per_example" in d:
            check_positive_int(f"task {d['name']!r}: qa_per_example", d["qa_per_example"])
            if d["name"] != "vqa":
                raise ConfigError(f"task {d['name']!r}: qa_per_example applies only to vqa (turns after one image)")
        for opt in ("balance_answers", "complementary_yes_no"):
            if opt in d:
                if not isinstance(d[opt], bool):
                    raise ConfigError(f"task {d['name']!r}: {opt} must be true or false, got {d[opt]!r}")
                if d["name"] != "vqa":
                    raise ConfigError(f"task {d['name']!r}: {opt} applies only to vqa (its question/answer turns)")
        if d.get("order") not in (None, "random", "epoch"):
            raise ConfigError(f"task {d['name']!r}: order must be 'random' or 'epoch', got {d['order']!r}")
        return cls(**d)


# The columns each head reads (any one alternative suffices): the reason a bank trains no record.
TASK_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "class_to_image": (("label",),),
    "class_to_video": (("label",),),
    "text_to_image": (("caption",),),
    "captioning": (("caption",),),
    "vqa": (("question", "answer"), ("questions", "answers")),
    "conversation": (("conversation",),),
}


def _why_no_record(task: Task, bank: ImageBank) -> str:
    needs = TASK_COLUMNS.get(task.name)
    have = sorted(bank.columns)
    if needs and not any(all(c in bank.columns for c in alt) for alt in needs):
        wanted = " or ".join("+".join(alt) for alt in needs)
        return (f"it reads the column(s) {wanted} but {bank.name!r} has {have}; name the source field with the dataset's "
                f"options (dataset files: columns: {{{needs[0][0]}: FIELD}})")
    return f"every record's {' / '.join('+'.join(a) for a in needs or ())} is empty (columns: {have})"


def permuted_index(position: int, n: int, seed: int, epoch: int) -> int:
    """Position -> record of a seeded permutation of range(n), in O(1) memory (a Feistel network, cycle-walked).

    The same (seed, epoch) always gives the same bijection, so an epoch visits every record once.
    """
    if n <= 1:
        return 0
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half, mask = bits // 2, (1 << (bits // 2)) - 1
    keys = np.random.SeedSequence([seed, epoch, n]).generate_state(4, np.uint64).tolist()
    x = position
    while True:
        left, right = x >> half, x & mask
        for k in keys:
            f = ((right * 0x9E3779B97F4A7C15 + k) & 0xFFFFFFFFFFFFFFFF)
            f ^= f >> 29
            f = (f * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
            left, right = right, left ^ ((f >> 17) & mask)
        x = (left << half) | right
        if x < n:
            return x


class AllRecords:
    """The indices 0..n-1 of a bank whose every record trains the task, without holding them (O(1) memory).

    Indexing gives the index itself; `np.asarray` materialises them (only a progress view picking a
    few records does).
    """

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"record {i} of {self.n}")
        return i % self.n

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.arange(self.n, dtype=dtype or np.int64)


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
        self.indices: list[Any] = []
        self.orders: list[str] = ["random"] * len(entries)
        for task, _, bank in entries:
            needs = TASK_COLUMNS.get(task.name)
            if getattr(bank, "validated", False) and (not needs or any(all(c in bank.columns for c in a) for a in needs)):
                self.indices.append(AllRecords(len(bank)))  # prepared shards: every record was checked once; no O(N) list
                continue
            idx = np.array([i for i in range(len(bank)) if task.accepts(bank, i)], dtype=np.int64)
            if len(idx) == 0:
                raise ConfigError(f"task {task.name!r}: no record of {bank.name!r} can train it: {_why_no_record(task, bank)}")
            self.indices.append(idx)

    @property
    def tasks(self) -> list[Task]:
        return [e[0] for e in self.entries]

    def _record(self, k: int, rng: np.random.Generator, position: int | None) -> int:
        """Record of entry k: by a seeded per-epoch permutation of the global sample position, or uniform."""
        idx = self.indices[k]
        n = len(idx)
        if self.orders[k] == "epoch" and position is not None:
            epoch, pos = divmod(position, n)
            return int(idx[permuted_index(pos, n, self.seed + 7919 * k, epoch)])
        if isinstance(idx, AllRecords):
            return int(rng.integers(n))
        return int(rng.choice(idx))  # rng.choice over the array: the draws of earlier runs, unchanged

    def examples(self, step: int, rank: int, batch_size: int, world_size: int | None = None) -> list:
        """The examples of (step, rank): each one's record follows its task's order (see `TaskSpec.order`).

        With `world_size`, example j's global sample position is ``(step·world_size + rank)·batch_size + j``:
        it names the record under ``order: epoch``, whatever the number of processes.
        """
        rng = np.random.default_rng([self.seed, step, rank])
        out: list = []
        attempts = 0
        while len(out) < batch_size:
            attempts += 1
            if attempts > 100 * batch_size:
                raise RecordError(f"gave up after {attempts} draws: {len(self.bad_records)} bad records skipped")
            k = int(rng.choice(len(self.entries), p=self.probs))
            task, _, bank = self.entries[k]
            position = None
            if world_size is not None and attempts <= batch_size:  # a retry after a bad record draws at random
                position = (step * world_size + rank) * batch_size + len(out)
            index = self._record(k, rng, position)
            if hasattr(bank.tokens, "key"):
                bank.tokens.key = (self.seed, step, rank, len(out))
            try:
                out.append(task.example(bank, index, rng))
            except RecordError:
                if not self.skip_bad_records:
                    raise
                self.bad_records.add((bank.name, index))
        return out

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> SequenceBatch:
        """The batch of one rank at one step (rank's own random stream; world_size kept for the protocol)."""
        examples = self.examples(step, rank, batch_size, world_size)
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


PREPARED_OPTIONS = ("path", "verify", "posterior", "flip")


def load_bank(dataset: str, split: str, visual: VisualConfig, options: dict[str, Any] | None = None) -> ImageBank:
    """The image bank of a dataset split; ``dataset: prepared`` reads shards of `unimodal data prepare`.

    Prepared options: path (the prepared directory), verify (check every shard's SHA-256; default
    true), posterior ("sample", the default, or "mean" for VAE moments), flip (use the stored
    flipped copies half the time; default false).
    """
    from unimodal.data import load_dataset

    if dataset == "prepared":
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(PREPARED_OPTIONS))
        if unknown or "path" not in opts:
            raise ConfigError(f"dataset prepared: options {sorted(opts)} are invalid; it takes path (required), "
                              f"verify, posterior, flip")
        from .base import prepared_bank

        return prepared_bank(str(opts["path"]), visual, name=f"prepared:{opts['path']}", verify=bool(opts.get("verify", True)),
                             posterior=str(opts.get("posterior", "sample")), flip=bool(opts.get("flip", False)))
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
    orders: list[str] = []
    for s in specs:
        s = s if isinstance(s, TaskSpec) else TaskSpec.from_dict(s)
        key = (s.dataset, s.split, repr(sorted(s.options.items())))
        if key not in banks:
            banks[key] = load_bank(s.dataset, s.split, visual, s.options)
        task = get_task_class(s.name)(visual, tokenizer, drop_prob=s.drop_prob, max_text_tokens=s.max_text_tokens)
        task.prompt_loss, task.qa_per_example, task.balance_answers = s.prompt_loss, s.qa_per_example, s.balance_answers
        task.complementary_yes_no = s.complementary_yes_no
        entries.append((task, s.weight, banks[key]))
        orders.append(s.order or ("epoch" if s.dataset == "prepared" else "random"))
    mix = TaskMixture(entries, visual.token_dim, seed)
    mix.orders = orders
    return mix


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
    dataset a text task reads). `vocab_size: auto` (the default) takes the most pieces
    the corpus supports, at most `AUTO_VOCAB_CAP` (8192) in all, so a small corpus gets
    whole words instead of a table that is mostly byte fallback. Training is
    deterministic, so every rank builds the same tokenizer. Returns None when no task
    needs text.
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
    vocab = opts.pop("vocab_size", "auto")
    if vocab != "auto" and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1):
        from unimodal.config import ConfigError

        raise ConfigError(f"tokenizer.vocab_size={vocab!r} is invalid: must be 'auto' or a positive integer "
                          "(total pieces, the 6 specials and 256 byte pieces included)")
    if opts:
        from unimodal.config import ConfigError

        raise ConfigError(f"unknown tokenizer option(s) {sorted(opts)}; valid: path, vocab_size, train_on")
    texts: list[str] = []
    for src in sources:
        name, _, split = src.partition(":")
        split = split or "train"
        # the options of the task that reads this dataset (and split, if one does): path, columns, splits, ...
        spec = next((s for s in specs if s.dataset == name and s.split == split), None) or next(
            (s for s in specs if s.dataset == name), None)
        options = dict(spec.options) if spec is not None else {}
        if name == "prepared":
            texts.extend(_prepared_texts(options))
            continue
        texts.extend(dataset_texts(load_dataset(name, split, **options)))
    if vocab == "auto":  # as many pieces as the corpus supports: no larger table would shorten its texts
        return TextTokenizer.train_auto(texts)
    tok = TextTokenizer.train(texts, vocab_size=vocab)
    warn_byte_heavy(tok, texts)
    return tok


def warn_byte_heavy(tok: Any, texts: list[str], sample: int = 2000) -> None:
    """Warn when most of the vocabulary is byte pieces (256 always are): texts then run long, nearly per character."""
    import warnings

    learned = tok.vocab_size - 256 - 6
    if learned >= tok.vocab_size // 2:
        return
    some = [t for t in texts[:sample] if t]
    per_text = sum(len(tok.encode(t)) for t in some) / max(1, len(some))
    per_char = sum(len(tok.encode(t)) for t in some) / max(1, sum(len(t) for t in some))
    warnings.warn(f"tokenizer: 256 of its {tok.vocab_size} pieces are byte pieces and only {learned} are learned, so a text "
                  f"averages {per_text:.1f} tokens ({per_char:.2f} per character); raise tokenizer.vocab_size "
                  "(e.g. 1024+) if the corpus allows, or give tokenizer.path", stacklevel=2)


def _prepared_texts(options: dict[str, Any]) -> list[str]:
    """The text columns of prepared shards (captions, questions, answers, conversation turns)."""
    from unimodal.data.prepare import PreparedData

    data = PreparedData(options["path"], verify=False)
    texts: list[str] = []
    for k in range(len(data.manifest["shards"])):
        table = data.table(k)
        for col in data.columns:
            if col.endswith("_ids"):
                continue
            for v in table.column(col).to_pylist():
                if isinstance(v, str):
                    texts.append(v)
                elif isinstance(v, list):
                    texts += [t if isinstance(t, str) else t.get("text", "") for t in v if t]
    return texts
