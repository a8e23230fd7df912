"""`unimodal convert SOURCE ...`: one subcommand per source format (now: `acdit`)."""

from __future__ import annotations

import argparse


def _run_acdit(args: argparse.Namespace) -> int:
    from .acdit import convert_acdit

    out = convert_acdit(args.input, args.output, use_ema=args.use_ema, vae_dir=args.vae, overwrite=args.overwrite)
    print(f"wrote {out} ({'EMA' if args.use_ema else 'raw'} weights of {args.input})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `convert` with its sources to the `unimodal` subcommands."""
    p = sub.add_parser("convert", help="convert a released checkpoint into a unimodal checkpoint")
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    a = sources.add_parser("acdit", help="a released ACDiT .pt file (thunlp/ACDiT: ACDiT-XL-img.pt, ...)")
    a.add_argument("--input", required=True, help="the released .pt file")
    a.add_argument("--output", required=True, help="checkpoint directory to write")
    a.add_argument("--use-ema", action="store_true", help="convert the EMA weights instead of the raw weights")
    a.add_argument("--vae", default=None, help="local SD-VAE directory to record in the visual config")
    a.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    a.set_defaults(func=_run_acdit)
