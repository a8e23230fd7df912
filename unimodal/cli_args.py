"""Checked CLI argument types and the one-line argument parser every subcommand uses.

argparse calls a ``type=`` function on the raw string; raising ``argparse.ArgumentTypeError``
there gives "argument --cfg: must be a finite number ..." before any work starts. The parser
prints that as one stderr line (docs/architecture.md, "Errors"), not usage plus a message.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one stderr line ending in a pointer to ``--help``; exit code 2."""

    def error(self, message: str) -> NoReturn:
        if os.environ.get("RANK", "0") in ("", "0"):
            print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An integer >= 1 (``--num``, ``--steps``, ``--vocab-size`` ...)."""
    return int_at_least(1)(text)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A ``type=`` for an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is invalid: must be an integer >= {minimum}")
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """A ``type=`` for a finite float in [low, high] (``(low, high]`` with ``low_open``); nan and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value <= high
        if not ok:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{']' if high is not None else ')'}"
            raise argparse.ArgumentTypeError(f"{text} is invalid: must be a finite number in {rng}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, refused up front when no such CUDA device exists."""
    import torch

    name = text.strip().lower()
    if name == "cpu":
        return name
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available on this machine; use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name
