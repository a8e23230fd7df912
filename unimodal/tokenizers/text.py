"""Text tokenizer: SentencePiece BPE with the toolkit's fixed special ids.

The five specials every sequence layout relies on keep the same ids in every
tokenizer the toolkit trains, so a layout never has to look them up by name:

    <pad>=0  <bos>=1  <eos>=2  <boi>=3  <eoi>=4  <unk>=5

`<boi>`/`<eoi>` (begin/end of image) are SentencePiece *control* symbols: text
never produces them (the string "<boi>" in a caption is encoded as ordinary
characters), and `decode` drops them along with pad/bos/eos. Normalisation is
the identity and whitespace is kept, and byte fallback covers any character the
corpus lacked, so `decode(encode(text)) == text` for every string.

Files written by `save(dir)`:

    dir/tokenizer.model           the SentencePiece model (also what transformers reads)
    dir/unimodal_tokenizer.json   format tag, vocab size and the special ids
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, overload

import sentencepiece as spm

from .. import atomic
from ..errors import ConfigError, MissingFileError

if TYPE_CHECKING:  # transformers is heavy to import; only `to_transformers` needs it
    from transformers import LlamaTokenizer

MODEL_FILE = "tokenizer.model"
META_FILE = "unimodal_tokenizer.json"
FORMAT = "unimodal-sentencepiece-bpe-v1"

# `vocab_size: auto` (the training default): the most BPE pieces the corpus supports, at most this
# many in all. Enough for whole words of a captioning / VQA corpus; a larger corpus should use a
# pretrained tokenizer (`tokenizer.path`, or `init:` from an LLM) rather than a bigger table.
AUTO_VOCAB_CAP = 8192

# The fixed ids. Changing one breaks every saved checkpoint.
SPECIAL_IDS: dict[str, int] = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<boi>": 3, "<eoi>": 4, "<unk>": 5}


def _trainer_options(vocab_size: int) -> dict[str, object]:
    """SentencePiece trainer options; one place so training is reproducible."""
    return dict(
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=SPECIAL_IDS["<pad>"],
        bos_id=SPECIAL_IDS["<bos>"],
        eos_id=SPECIAL_IDS["<eos>"],
        unk_id=SPECIAL_IDS["<unk>"],
        pad_piece="<pad>",
        bos_piece="<bos>",
        eos_piece="<eos>",
        unk_piece="<unk>",
        control_symbols=["<boi>", "<eoi>"],  # take the free ids 3, 4 in this order
        byte_fallback=True,  # any character encodes, even one the corpus never had
        character_coverage=1.0,
        normalization_rule_name="identity",  # exact round trip: no NFKC folding
        remove_extra_whitespaces=False,  # ... and no whitespace collapsing
        input_sentence_size=0,  # use every sentence: no random subsampling
        shuffle_input_sentence=False,
        num_threads=1,  # deterministic merge order
        minloglevel=2,  # silence the trainer's progress log
    )


def _sentences(source: Iterable[str] | str | os.PathLike | Iterable[os.PathLike]) -> Iterator[str]:
    """Yield one training sentence per non-empty line.

    `str` items are text; `os.PathLike` items (e.g. `pathlib.Path`) are files read
    line by line. A bare `str` is treated as a single text, never as a path.
    """
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    for item in source:
        if isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise MissingFileError(f"tokenizer training file not found: {path}")
            with path.open(encoding="utf-8") as f:
                lines: Iterable[str] = (line.rstrip("\n") for line in f)
                yield from (line for line in lines if line)
        elif isinstance(item, str):
            yield from (line for line in item.split("\n") if line)
        else:
            raise TypeError(f"training texts must be str or os.PathLike, got {type(item).__name__}: {item!r:.80}")


def _training_error(err: RuntimeError, vocab_size: int) -> ValueError | RuntimeError:
    """Turn SentencePiece's vocab-size failures into one clear line."""
    msg = str(err)
    if m := re.search(r"Please set it to a value <= (\d+)", msg):
        return _VocabTooLarge(int(m.group(1)),
            f"vocab_size={vocab_size} is too large for this corpus: the most BPE can reach is {m.group(1)}. "
            f"Pass vocab_size<={m.group(1)} or train on more text."
        )
    if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg):
        return ValueError(
            f"vocab_size={vocab_size} is too small: the specials, 256 byte pieces and the corpus's "
            f"characters need at least {m.group(2)}."
        )
    return err


class _VocabTooLarge(ValueError):
    """The corpus supports at most `reachable` pieces (a ValueError with the user-facing line)."""

    def __init__(self, reachable: int, message: str) -> None:
        super().__init__(message)
        self.reachable = reachable


class TextTokenizer:
    """SentencePiece BPE tokenizer with the fixed special ids above.

    Build one with `TextTokenizer.train(...)` or `TextTokenizer.load(dir)`.
    """

    def __init__(self, model_proto: bytes) -> None:
        """Wrap a serialized SentencePiece model (the bytes of `tokenizer.model`)."""
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self._check_special_ids()

    def _check_special_ids(self) -> None:
        for piece, want in SPECIAL_IDS.items():
            got = self._sp.piece_to_id(piece)
            if got != want:
                raise ConfigError(
                    f"tokenizer model has {piece} at id {got}, expected {want}; "
                    "it was not trained by TextTokenizer.train"
                )

    # ---- construction -------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str | os.PathLike | Iterable[os.PathLike],
        vocab_size: int,
        out_dir: str | os.PathLike | None = None,
    ) -> TextTokenizer:
        """Train a BPE tokenizer in memory, deterministically.

        Args:
            texts: strings (each line is a training sentence) or paths
                (`os.PathLike`, read line by line as UTF-8). A bare `str` is text.
            vocab_size: total vocabulary including the 6 specials and 256 byte
                pieces. If the corpus cannot support that many BPE merges a
                `ValueError` names the largest size that works (we do not silently
                shrink the vocabulary, since model configs are sized by it).
            out_dir: if given, the tokenizer is also saved there.

        Returns:
            The trained tokenizer. The same inputs always give the same model.
        """
        buf = io.BytesIO()
        sentences = _sentences(texts)
        first = next(sentences, None)
        if first is None:
            raise ConfigError("cannot train a tokenizer on an empty corpus (no non-empty lines)")

        def all_sentences() -> Iterator[str]:
            yield first
            yield from sentences

        try:
            spm.SentencePieceTrainer.train(sentence_iterator=all_sentences(), model_writer=buf, **_trainer_options(vocab_size))
        except RuntimeError as err:
            raise _training_error(err, vocab_size) from None
        tok = cls(buf.getvalue())
        if out_dir is not None:
            tok.save(out_dir)
        return tok

    @classmethod
    def train_auto(cls, texts: Iterable[str] | str | os.PathLike | Iterable[os.PathLike], cap: int = AUTO_VOCAB_CAP, out_dir: str | os.PathLike | None = None) -> TextTokenizer:
        """`train` with the largest vocabulary this corpus supports, at most `cap` (specials and bytes included).

        A small corpus (easy-VQA's ~40 words) then gets whole-word pieces rather than a table that is
        mostly byte fallback; a large one stops at `cap`. Deterministic, as `train`.
        """
        if not isinstance(texts, (str, os.PathLike)):
            texts = list(texts)  # read twice when the corpus supports fewer than `cap`
        try:
            return cls.train(texts, vocab_size=cap, out_dir=out_dir)
        except _VocabTooLarge as err:
            return cls.train(texts, vocab_size=err.reachable, out_dir=out_dir)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TextTokenizer:
        """Load a tokenizer written by `save` (or any directory holding a compatible `tokenizer.model`).

        A directory written by `unimodal init` (a pretrained LLM's tokenizer.json) loads as
        `unimodal.llm_init.HFTextTokenizer`, which has the same interface.
        """
        directory = Path(directory)
        model_path = directory / MODEL_FILE
        if not model_path.is_file() and (directory / "unimodal_hf_tokenizer.json").is_file():
            from ..llm_init.tokenizer import HFTextTokenizer  # a pretrained LLM's tokenizer (unimodal init)

            return HFTextTokenizer.load(directory)  # type: ignore[return-value]
        if not model_path.is_file():
            what = "directory does not exist" if not directory.is_dir() else f"no {MODEL_FILE} in it"
            raise MissingFileError(f"cannot load tokenizer from {directory}: {what} (looked for {model_path})")
        tok = cls(model_path.read_bytes())
        meta_path = directory / META_FILE
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("special_ids") != SPECIAL_IDS or meta.get("vocab_size") != tok.vocab_size:
                raise ConfigError(f"{meta_path} disagrees with {model_path}: {meta} vs vocab_size={tok.vocab_size}, {SPECIAL_IDS}")
        return tok

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `tokenizer.model` and `unimodal_tokenizer.json` into `directory` (created if needed).

        Each file is written to a temporary name and renamed, so a crash never
        leaves a truncated model behind.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "vocab_size": self.vocab_size, "special_ids": SPECIAL_IDS}
        atomic.write_bytes(directory / MODEL_FILE, self._proto)
        atomic.write_text(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    # ---- encode / decode ----------------------------------------------------------

    @overload
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]: ...
    @overload
    def encode(self, text: list[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]: ...

    def encode(self, text: str | list[str], add_bos: bool = False, add_eos: bool = False) -> list[int] | list[list[int]]:
        """Token ids of `text` (a string, or a list of strings for a batch)."""
        if not isinstance(text, (str, list)):
            raise TypeError(f"encode takes a str or list[str], got {type(text).__name__}")
        return self._sp.encode(text, add_bos=add_bos, add_eos=add_eos)

    @overload
    def decode(self, ids: list[int]) -> str: ...
    @overload
    def decode(self, ids: list[list[int]]) -> list[str]: ...

    def decode(self, ids: list[int] | list[list[int]]) -> str | list[str]:
        """Text of `ids`; pad/bos/eos/boi/eoi are skipped. A list of lists decodes a batch."""
        if hasattr(ids, "tolist"):  # torch / numpy
            ids = ids.tolist()
        if ids and isinstance(ids[0], list):
            return [self.decode(row) for row in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ConfigError(f"token ids out of range [0, {self.vocab_size}): {bad[:10]}")
        return self._sp.decode(ids)

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary piece of one id (e.g. '▁red', '<0xE2>', '<boi>')."""
        return self._sp.id_to_piece(token_id)

    # ---- properties -------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return SPECIAL_IDS["<pad>"]

    @property
    def bos_id(self) -> int:
        return SPECIAL_IDS["<bos>"]

    @property
    def eos_id(self) -> int:
        return SPECIAL_IDS["<eos>"]

    @property
    def boi_id(self) -> int:
        return SPECIAL_IDS["<boi>"]

    @property
    def eoi_id(self) -> int:
        return SPECIAL_IDS["<eoi>"]

    @property
    def unk_id(self) -> int:
        return SPECIAL_IDS["<unk>"]

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._proto

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTokenizer) and other._proto == self._proto

    def __hash__(self) -> int:
        return hash(self._proto)

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size})"

    # ---- transformers bridge ------------------------------------------------------

    def to_transformers(self) -> LlamaTokenizer:
        """The same tokenizer as a `transformers.LlamaTokenizer` (in memory)."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save(tmp)
            return load_transformers(tmp)


def load_transformers(directory: str | os.PathLike) -> LlamaTokenizer:
    """Load `directory/tokenizer.model` as a `transformers.LlamaTokenizer` with our specials.

    Gives the same ids as `TextTokenizer.encode` for any text that does not
    contain a literal special-token string such as "<boi>" (transformers matches
    those in text; SentencePiece control symbols are never matched). Use
    `tok(text, add_special_tokens=False)` or `tok.encode(..., add_special_tokens=False)`
    to skip the `<bos>` transformers adds by default.

    Note: in transformers 5, `LlamaTokenizer(vocab_file=...)` silently builds an
    empty vocabulary; `from_pretrained(directory)` is the working path.
    """
    from tokenizers import normalizers
    from transformers import LlamaTokenizer

    directory = Path(directory)
    if not (directory / MODEL_FILE).is_file():
        raise MissingFileError(f"cannot load tokenizer from {directory}: no {MODEL_FILE} (looked for {directory / MODEL_FILE})")
    tok = LlamaTokenizer.from_pretrained(
        str(directory),
        local_files_only=True,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<boi>", "<eoi>"],
    )
    # transformers' Metaspace pre-tokenizer prepends '▁' only when the text does
    # not already start with a space, so " x" became '▁x' where SentencePiece's
    # dummy prefix gives '▁▁x'. Prepend-then-replace reproduces SentencePiece.
    backend = tok.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    return tok
