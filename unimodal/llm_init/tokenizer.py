"""A pretrained LLM's tokenizer (tokenizer.json through transformers) behind the `TextTokenizer` interface.

The task heads and the generation engine ask a tokenizer for `bos_id`, `eos_id`, `pad_id`,
`boi_id` and `eoi_id` and never write the numbers themselves, so a checkpoint started
from an LLM carries that LLM's tokenizer with `<boi>`, `<eoi>` and `<pad>` added where
it lacks them. Files written by `save(dir)`:

    dir/tokenizer.json, tokenizer_config.json, ...   transformers' own files
    dir/unimodal_hf_tokenizer.json                   format tag, the model's vocabulary rows, special ids
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import ConfigError, MissingFileError

META_FILE = "unimodal_hf_tokenizer.json"
FORMAT = "unimodal-hf-tokenizer-v1"
ADDED = ("<boi>", "<eoi>", "<pad>")  # the specials a unified model needs beyond an LLM's own


def _auto_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not (directory / "tokenizer.json").is_file():
        what = "directory does not exist" if not directory.is_dir() else "no tokenizer.json in it"
        raise MissingFileError(
            f"cannot load the LLM tokenizer from {str(directory)!r}: {what} "
            "(supported: a fast tokenizer saved by transformers, tokenizer.json + tokenizer_config.json)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/... for broken files
        raise ConfigError(f"cannot read the tokenizer in {str(directory)!r}: {type(e).__name__}: {e}") from None


class HFTextTokenizer:
    """transformers tokenizer + the special ids a unified model uses.

    Args:
        tok: a transformers fast tokenizer that already holds `<boi>`, `<eoi>` and a pad token.
        vocab_size: rows of the model's embedding (>= len(tok); LLMs often pad their tables).
    """

    def __init__(self, tok: Any, vocab_size: int) -> None:
        self.tok = tok
        self._vocab_size = int(vocab_size)
        missing = [t for t in ("<boi>", "<eoi>") if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
        if missing or tok.pad_token_id is None or tok.eos_token_id is None:
            raise ConfigError(f"tokenizer lacks {missing or ['a pad or eos token']}: build it with HFTextTokenizer.from_llm")
        if len(tok) > self._vocab_size:
            raise ConfigError(f"tokenizer has {len(tok)} tokens but the model only {self._vocab_size} embedding rows")

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_llm(cls, directory: str | os.PathLike, model_vocab: int) -> tuple["HFTextTokenizer", list[str]]:
        """The LLM's tokenizer with `<boi>`, `<eoi>` and `<pad>` added where missing.

        Args:
            directory: the LLM directory (tokenizer.json there).
            model_vocab: rows of the LLM's embedding table.

        Returns:
            (tokenizer, the tokens that were added). Added tokens take the first free ids;
            the vocabulary grows past `model_vocab` only when the table has no spare rows.

        Raises:
            ConfigError: the tokenizer has more tokens than the LLM's embedding has rows
                (it belongs to another model).
        """
        tok = _auto_tokenizer(Path(directory))
        if len(tok) > model_vocab:
            raise ConfigError(
                f"the tokenizer in {str(directory)!r} has {len(tok)} tokens but the LLM's embedding has "
                f"{model_vocab} rows: tokenizer and weights do not belong together"
            )
        added: list[str] = []
        vocab = tok.get_vocab()
        new = [t for t in ("<boi>", "<eoi>") if t not in vocab]
        if tok.pad_token_id is None:
            if "<pad>" in vocab:
                tok.pad_token = "<pad>"
            else:
                new.append("<pad>")
        if new:
            tok.add_special_tokens({"additional_special_tokens": [t for t in new if t != "<pad>"]}
                                   | ({"pad_token": "<pad>"} if "<pad>" in new else {}),
                                   replace_extra_special_tokens=False)
            added = new
        if tok.eos_token_id is None:
            raise ConfigError(f"the tokenizer in {str(directory)!r} has no eos token: text generation could never stop")
        return cls(tok, max(model_vocab, len(tok))), added

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HFTextTokenizer":
        """Load a tokenizer written by `save`."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise MissingFileError(f"cannot load tokenizer from {str(directory)!r}: no {META_FILE} in it")
        meta = json.loads(meta_path.read_text())
        out = cls(_auto_tokenizer(directory), meta["vocab_size"])
        if out.special_ids != meta.get("special_ids"):
            raise ConfigError(f"{meta_path} disagrees with the tokenizer files: {meta.get('special_ids')} vs {out.special_ids}")
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write transformers' files and `unimodal_hf_tokenizer.json` into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tok.save_pretrained(str(directory))
        meta = {"format": FORMAT, "vocab_size": self.vocab_size, "special_ids": self.special_ids}
        atomic.write_text(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    # ---- encode / decode ----------------------------------------------------------
    def encode(self, text: str | list[str], add_bos: bool = False, add_eos: bool = False) -> list[int] | list[list[int]]:
        """Token ids of `text` (or of each string of a list); no specials unless asked."""
        if isinstance(text, list):
            return [self.encode(t, add_bos, add_eos) for t in text]
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str or list[str], got {type(text).__name__}")
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids: Any) -> str | list[str]:
        """Text of `ids` with special tokens skipped; a list of lists decodes a batch."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if ids and isinstance(ids[0], list):
            return [self.decode(row) for row in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ConfigError(f"token ids out of range [0, {self.vocab_size}): {bad[:10]}")
        return self.tok.decode([i for i in ids if i < len(self.tok)], skip_special_tokens=True)

    def id_to_piece(self, token_id: int) -> str:
        return self.tok.convert_ids_to_tokens(int(token_id))

    # ---- ids ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding (the model's vocab_size)."""
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return int(self.tok.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tok.eos_token_id)

    @property
    def bos_id(self) -> int:
        """The LLM's bos token; LLMs without one (Qwen) start documents with their eos token."""
        return int(self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id)

    @property
    def boi_id(self) -> int:
        return int(self.tok.convert_tokens_to_ids("<boi>"))

    @property
    def eoi_id(self) -> int:
        return int(self.tok.convert_tokens_to_ids("<eoi>"))

    @property
    def unk_id(self) -> int | None:
        return self.tok.unk_token_id

    @property
    def special_ids(self) -> dict[str, int]:
        return {"<pad>": self.pad_id, "<bos>": self.bos_id, "<eos>": self.eos_id, "<boi>": self.boi_id, "<eoi>": self.eoi_id}

    def __repr__(self) -> str:
        return f"HFTextTokenizer({type(self.tok).__name__}, {len(self.tok)} tokens, vocab_size={self.vocab_size})"
