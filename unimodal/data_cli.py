"""`unimodal data list|info NAME` and `unimodal tokenizer train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_args import positive_int
from .errors import ConfigError, MissingFileError


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import dataset_card, list_datasets

    if args.action == "list" or args.name is None:
        for name in list_datasets():
            print(name)
        return 0
    print(dataset_card(args.name))
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    from .tokenizers import TextTokenizer

    sources: list[Any] = []
    for item in args.data:
        if Path(item).is_file():
            sources.append(Path(item))
        elif Path(item).is_dir():
            raise ConfigError(f"--data {item!r} is a directory: give text files or dataset names (NAME or NAME:SPLIT)")
        elif "/" in item or Path(item).suffix:
            raise MissingFileError(f"--data {item!r}: text file does not exist (dataset names have no '/' or suffix)")
        else:
            from .data import load_dataset
            from .data.transforms import dataset_texts

            name, _, split = item.partition(":")
            ds = load_dataset(name, split or "train")
            sources.extend(dataset_texts(ds))
    if not sources:
        raise ConfigError("--data gave no text: pass text files or dataset names (NAME or NAME:SPLIT)")
    tok = TextTokenizer.train(sources, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {tok.vocab_size}-piece SentencePiece BPE tokenizer into {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="built-in and local datasets: list, dataset cards")
    d.add_argument("action", choices=["list", "info"], help="list the datasets, or print one's card")
    d.add_argument("name", nargs="?", default=None, help="dataset name for `info`")
    d.set_defaults(func=_cmd_data)
    t = sub.add_parser("tokenizer", help="train the SentencePiece text tokenizer")
    t.add_argument("action", choices=["train"])
    t.add_argument("--data", nargs="+", required=True, help="text files and/or dataset names (NAME or NAME:SPLIT)")
    t.add_argument("--vocab-size", type=positive_int, default=512, help="pieces in the vocabulary (default 512)")
    t.add_argument("--out", required=True, help="output directory (tokenizer.model + ids)")
    t.set_defaults(func=_cmd_tokenizer)
