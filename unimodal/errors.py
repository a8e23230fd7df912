"""The project's error hierarchy and the small checks every module shares.

Every failure a user can cause (a bad config value, CLI argument, data record, checkpoint,
shard or request) raises a subclass of :class:`UnimodalError`. The CLI catches exactly this
class and prints its message as one line with exit code 2; anything else is a bug in
unimodal or a library and keeps its traceback (docs/architecture.md, "Errors").

The concrete classes also derive from the built-in type callers used to catch before
(``ValueError``, ``KeyError``), so ``except ValueError`` around a config call keeps working.

The helpers below are the one implementation of three rules that used to be repeated:
"unknown name, valid names, did you mean" (:func:`unknown`, :func:`suggest`), a positive
integer (:func:`check_positive_int`) and a finite float in a range (:func:`check_float`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UnimodalError(Exception):
    """Base class of every error a user can cause. Its message is one line naming what and where."""

    exit_code = 2


class ConfigError(UnimodalError, ValueError):
    """A configuration value or CLI argument is invalid; the message names the field and the valid values."""


class CheckpointError(UnimodalError, ValueError):
    """A checkpoint cannot be read, written or used for the request."""


class LayoutError(UnimodalError, ValueError):
    """A sequence layout is inconsistent (block grid, text ids, noisy copies)."""


class RecordError(UnimodalError, ValueError):
    """A data record is malformed; the message names the file, the record and the field.

    ``RecordError(message)`` or ``RecordError(source, index, field, problem)``; the second form
    keeps ``source`` (file), ``index`` (0-based record number) and ``field`` as attributes.
    """

    def __init__(self, source: object, index: int | None = None, field: str | None = None, problem: str | None = None):
        if problem is None:
            self.source, self.index, self.field = None, index, field
            super().__init__(str(source))
            return
        self.source, self.index, self.field = str(source), index, field
        where = f"record {index}" + (f", field {field!r}" if field else "")
        super().__init__(f"{source}: {where}: {problem}")


class DataError(UnimodalError, ValueError):
    """A dataset, source or shard cannot be used (missing file, wrong format, checksum mismatch)."""


class MissingFileError(UnimodalError, FileNotFoundError):
    """A file or directory the request names does not exist (or is the wrong kind: file vs directory)."""


class UnknownNameError(UnimodalError, KeyError):
    """A name is not in a registry; the message lists the valid names and close matches."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class EvalError(UnimodalError, ValueError):
    """An eval request cannot run: unknown task or metric, missing weight file, wrong checkpoint."""


class RunDirError(UnimodalError, ValueError):
    """An ``out_dir`` cannot be used: it holds another run, is locked by a live writer, or is not writable."""


class Interrupted(UnimodalError):
    """The user stopped the run (Ctrl-C / SIGINT); the message says where and what was kept."""

    exit_code = 130


class TrainingDiverged(UnimodalError, RuntimeError):
    """The loss or the weights became non-finite; every rank stops at the same step."""

    exit_code = 1


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return a ' Did you mean ...?' hint for an unknown name ('' when nothing is close)."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown(what: str, name: object, valid: Iterable[str], cls: type[UnimodalError] = ConfigError) -> UnimodalError:
    """Build the one "unknown X 'name'; valid: ...; did you mean" error (raise the result).

    Args:
        what: what the name is for, e.g. ``"task"`` or ``"key 'model'"``.
        name: the name that was given.
        valid: the names that would be accepted.
        cls: the error class to build (a :class:`UnimodalError` subclass).
    """
    valid = sorted(str(v) for v in valid)
    return cls(f"unknown {what} {name!r}; valid: {', '.join(valid) or '(none)'}.{suggest(str(name), valid)}")


def check_fields(
    d: Iterable[str], valid: Iterable[str], what: str, *, where: str = "", plural: str = "fields", cls: type[UnimodalError] = ConfigError
) -> None:
    """Raise ``cls`` naming the first key of ``d`` not in ``valid``, the valid ones and the close matches.

    The message reads ``{where}unknown {what} 'k'; valid {plural}: [...]. Did you mean ...?``.
    """
    valid = list(valid)
    for k in d:
        if k not in valid:
            raise cls(f"{where}unknown {what} {k!r}; valid {plural}: {valid}.{suggest(str(k), valid)}")


def check_positive_int(name: str, value: object, *, minimum: int = 1, cls: type[UnimodalError] = ConfigError) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum`` (bools refused), else raise ``cls``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise cls(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    cls: type[UnimodalError] = ConfigError,
) -> float:
    """Return ``value`` as a float if it is a finite number in [low, high] (or (low, high] when ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{']' if high is not None else ')'}"
        raise cls(f"{name} must be a finite number in {rng}, got {value!r}")
    return float(value)


def check_path(path: object, what: str, *, kind: str = "file", cls: type[UnimodalError] = MissingFileError) -> None:
    """Raise ``cls`` unless ``path`` exists and is a ``kind`` ('file' or 'dir').

    The message tells the three cases apart: missing, a directory where a file is expected,
    and a file where a directory is expected (``what`` names the role, e.g. "checkpoint directory").
    """
    from pathlib import Path

    p = Path(str(path))
    if kind == "dir" and p.is_dir() or kind == "file" and p.is_file():
        return
    if not p.exists():
        raise cls(f"{what} {str(p)!r} does not exist")
    actual = "a directory" if p.is_dir() else "a file" if p.is_file() else "not a regular file"
    expected = "a directory" if kind == "dir" else "a file"
    raise cls(f"{what} {str(p)!r} is {actual}, not {expected}")
