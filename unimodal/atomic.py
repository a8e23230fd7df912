"""The one way a file or a directory is written: under a temporary name, then renamed into place.

A reader (or a run resumed after kill -9) sees either the old complete version or the new
complete one, never a partial write: ``os.replace`` is atomic within one filesystem, and the
temporary lives next to the target for that reason (docs/architecture.md, "Files on disk").
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# .<target name>.<kind>-<pid>-<ns>[suffix]: the names _tmp_name gives (kind "tmp" or "old")
_TEMPORARY_RE = re.compile(r"^\..+\.(?:tmp|old)-(\d+)-\d+")


def _tmp_name(target: Path, kind: str, suffix: str = "") -> Path:
    # pid + ns time: two writers (processes or threads) never share a temporary name
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{time.time_ns()}{suffix}"


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary of this module (a write in progress, or left by a killed one)."""
    return _TEMPORARY_RE.match(name) is not None


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # a directory's entries (a rename into it, the files created in it) are durable once it is fsynced
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a filesystem that cannot fsync a directory
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and directory under `path` (and `path` itself)."""
    path = Path(path)
    for f in path.rglob("*"):
        if f.is_file():
            _fsync(f)
        elif f.is_dir():
            _fsync_dir(f)
    _fsync_dir(path)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on a clean exit it is renamed to ``target``.

    The caller writes the whole file to the yielded path (with any writer: ``save_file``,
    ``np.savez``, ``Image.save``...). ``suffix`` keeps an extension that the writer needs to see.
    The file is fsynced before the rename and its directory after it. On an exception the
    temporary is removed and ``target`` is untouched.
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
    _fsync_dir(target.parent)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically and return the path."""
    return write_bytes(target, text.encode("utf-8"))


def publish_directory(src: str | os.PathLike, target: str | os.PathLike, *, replace: bool = True) -> Path:
    """Rename the complete directory ``src`` (a sibling of ``target``) to ``target``, durably.

    Everything under ``src`` is fsynced first, the parent directory after the rename. With
    ``replace`` an existing ``target`` is moved aside, then removed once ``src`` is in place
    (put back when the rename fails); without it, a ``target`` that exists (a concurrent
    writer that finished first) is kept and ``src`` removed.
    """
    src, target = Path(src), Path(target)
    fsync_tree(src)
    old = None
    if target.exists():
        if not replace:
            shutil.rmtree(src, ignore_errors=True)
            return target
        old = _tmp_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(src, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        elif not replace and target.is_dir():  # a concurrent writer renamed its copy first
            shutil.rmtree(src, ignore_errors=True)
            return target
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def atomic_directory(target: str | os.PathLike, write: Callable[[Path], object], *, replace: bool = True) -> Path:
    """Call ``write(tmp_dir)``, then publish ``tmp_dir`` as ``target`` (:func:`publish_directory`).

    With ``replace`` an existing ``target`` is replaced; without it, a ``target`` that
    appeared meanwhile (a concurrent writer that finished first) is kept and the new copy
    dropped. On an exception the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target, "tmp")
    tmp.mkdir()
    try:
        write(tmp)
        return publish_directory(tmp, target, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard_directory(path: str | os.PathLike) -> None:
    """Remove the directory ``path``: renamed out of sight at once, then deleted (which may take long)."""
    path = Path(path)
    aside = _tmp_name(path, "old")
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # another user's live process / not a pid
    return False


def remove_orphans(parent: str | os.PathLike) -> list[Path]:
    """Delete the temporaries under ``parent`` whose writer (a process on this host) is dead.

    A write killed by SIGKILL or a power loss leaves its temporary behind; a live writer's
    temporary is kept. Returns the removed paths.
    """
    parent = Path(parent)
    removed = []
    if parent.is_dir():
        for p in parent.iterdir():
            found = _TEMPORARY_RE.match(p.name)
            if found and _pid_dead(int(found.group(1))):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed
