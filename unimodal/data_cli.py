"""`unimodal data list|info NAME`, `unimodal data prepare --source SPEC --out DIR` and `unimodal tokenizer train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_args import positive_int
from .errors import ConfigError, MissingFileError


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import dataset_card, list_datasets

    if args.action == "prepare":
        return _cmd_prepare(args)
    if args.action == "list" or args.name is None:
        for name in list_datasets():
            print(name)
        return 0
    print(dataset_card(args.name))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import PreparedData, prepare

    if not args.source or not args.out:
        raise ConfigError("data prepare needs --source SPEC (a YAML file: dataset, split, options, visual) and --out DIR")
    manifest = prepare(args.source, args.out, vae_dir=args.vae, shard_size=args.shard_size, num_proc=args.num_proc,
                       flip=args.flip, dtype=args.dtype, tokenizer=args.tokenizer, progress=True)
    if manifest.name == "manifest.json":
        data = PreparedData(args.out, verify=False)
        m = data.manifest
        print(f"prepared {m['records']} records ({m['skipped']} bad skipped) into {len(m['shards'])} shard(s) "
              f"of {m['encoding']} under {args.out}")
    else:
        print(f"worker done; the last worker writes {Path(args.out) / 'manifest.json'}")
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
    if args.vocab_size == "auto":
        tok = TextTokenizer.train_auto(sources, out_dir=args.out)
    else:
        tok = TextTokenizer.train(sources, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {tok.vocab_size}-piece SentencePiece BPE tokenizer into {args.out}")
    return 0


def _vocab_size(text: str) -> int | str:
    """--vocab-size: 'auto' or an integer >= 1."""
    return "auto" if text == "auto" else positive_int(text)


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="built-in and local datasets: list, dataset cards, prepare shards")
    d.add_argument("action", choices=["list", "info", "prepare"],
                   help="list the datasets, print one's card, or encode a source once into prepared shards")
    d.add_argument("name", nargs="?", default=None, help="dataset name for `info`")
    d.add_argument("--source", help="prepare: YAML file {dataset (default files), split, options, visual}")
    d.add_argument("--out", help="prepare: output directory (a killed prepare resumes into the same one)")
    d.add_argument("--vae", default=None, help="prepare: local AutoencoderKL directory (default: visual.vae_dir; none: pixels)")
    d.add_argument("--shard-size", type=positive_int, default=1024, help="prepare: records per shard (default 1024)")
    d.add_argument("--num-proc", type=positive_int, default=1, help="prepare: local worker processes (default 1)")
    d.add_argument("--flip", action="store_true", help="prepare: also store the moments of h-flipped images")
    d.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="prepare: moments dtype")
    d.add_argument("--tokenizer", default=None, help="prepare: a saved tokenizer: text columns also get token ids")
    d.set_defaults(func=_cmd_data)
    t = sub.add_parser("tokenizer", help="train the SentencePiece text tokenizer")
    t.add_argument("action", choices=["train"])
    t.add_argument("--data", nargs="+", required=True, help="text files and/or dataset names (NAME or NAME:SPLIT)")
    t.add_argument("--vocab-size", type=_vocab_size, default="auto",
                   help="pieces in the vocabulary, specials and 256 byte pieces included, or 'auto' (default): "
                        "the most the corpus supports, at most 8192")
    t.add_argument("--out", required=True, help="output directory (tokenizer.model + ids)")
    t.set_defaults(func=_cmd_tokenizer)
