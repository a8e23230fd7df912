"""The one way a file or a directory is written: under a temporary name, then renamed into place.

A reader (or a run resumed after kill -9) sees either the old complete version or the new
complete one, never a partial write: ``os.replace`` is atomic within one filesystem, and the
temporary lives next to the target for that reason (docs/architecture.md, "Files on disk").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def _tmp_name(target: Path, kind: str, suffix: str = "") -> Path:
    # pid + ns time: two writers (processes or threads) never share a temporary name
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{time.time_ns()}{suffix}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on a clean exit it is renamed to ``target``.

    The caller writes the whole file to the yielded path (with any writer: ``save_file``,
    ``np.savez``, ``Image.save``...). ``suffix`` keeps an extension that the writer needs to see.
    On an exception the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target, "tmp", suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically and return the path."""
    return write_bytes(target, text.encode("utf-8"))


def atomic_directory(target: str | os.PathLike, write: Callable[[Path], object], *, replace: bool = True) -> Path:
    """Call ``write(tmp_dir)``, fsync its files, then rename ``tmp_dir`` to ``target``.

    With ``replace`` an existing ``target`` is first moved aside (and removed after the
    rename); without it, a ``target`` that appeared meanwhile (a concurrent writer that
    finished first) is kept and the new copy dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target, "tmp")
    tmp.mkdir()
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        old = None
        if target.exists():
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            old = _tmp_name(target, "old")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
