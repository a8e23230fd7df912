"""A run directory (`out_dir`): who may write it, whether it already holds a run, replacing one.

The rules (docs/architecture.md, "Run directories"):

* **One writer.** `out_dir/.lock` is created with ``O_CREAT | O_EXCL`` (atomic: of two
  processes exactly one succeeds) and holds JSON ``{"pid", "host", "started"}``. A second
  writer is refused with :class:`~unimodal.errors.RunDirError` naming the owner. A lock
  left by a dead process on this host (kill -9, power loss) is *stale*: it is reported
  with a warning and taken over. A lock from another host cannot be checked and is
  refused; its message says to delete the file if that run is gone. The lock is released
  (the file removed) when the run ends, also on an exception or Ctrl-C.
* **No silent overwrite.** A directory that holds a run (checkpoints/, metrics.jsonl,
  config.yaml, tensorboard/ or samples/) is only written by a run that continues it
  (``--resume``) or replaces it (``--overwrite``).
* **Replacing moves aside, never interleaves.** ``--overwrite`` renames the whole
  `out_dir` to the sibling ``<out_dir>.old-<YYYYmmdd-HHMMSS>`` (one atomic rename; a
  ``-N`` suffix when that name exists) and starts in a fresh empty `out_dir`. The old run
  stays complete and untouched there; delete it when it is no longer needed.
* **Checks before writes.** :func:`check_writable` and :func:`check_lock` only read, so a
  caller can run every check before the first byte lands in `out_dir`.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import RunDirError

LOCK_FILE = ".lock"
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "config.yaml", "tensorboard", "samples")


def run_entries(out_dir: str | os.PathLike) -> list[str]:
    """The names in `out_dir` that show it holds a run (empty when it does not exist or holds none)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return [name for name in RUN_MARKERS if (out / name).exists()]


def check_writable(out_dir: str | os.PathLike) -> None:
    """Raise RunDirError unless `out_dir` is (or can be created as) a writable directory. Writes nothing.

    The nearest existing ancestor must be a directory this process may write into; a regular
    file on the way (``out_dir=<file>/sub``) or a read-only directory is named in the message.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out_dir {str(out)!r} is a file, not a directory: choose a directory path")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunDirError(f"cannot create out_dir {str(out)!r}: {str(probe)!r} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "out_dir" if probe == out else f"cannot create out_dir {str(out)!r}: parent"
        raise RunDirError(f"{what} {str(probe)!r} is not writable (permission denied or a read-only filesystem)")


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a zombie or another user's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in `out_dir/.lock` ({} when unreadable or half-written), or None when there is no lock."""
    return _read_json(Path(out_dir) / LOCK_FILE)


def _is_stale(owner: dict[str, Any]) -> bool:
    """A lock whose owner is a dead process on this host (an unreadable lock is treated as live)."""
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "an unknown process (the lock file is unreadable)"
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {owner.get('pid')} on host {owner.get('host')!r} (started {when})"


def _refuse(out: Path, owner: dict[str, Any]) -> RunDirError:
    other_host = owner.get("host") not in (None, socket.gethostname())
    hint = (f"; if that run is gone, delete {str(out / LOCK_FILE)!r}" if other_host or not owner
            else "; wait for it to finish or stop it, or choose another out_dir")
    return RunDirError(f"out_dir {str(out)!r} is in use by another run: {_describe(owner)}{hint}")


def check_lock(out_dir: str | os.PathLike) -> None:
    """Raise RunDirError when a live writer holds `out_dir/.lock` (a stale lock passes). Writes nothing."""
    out = Path(out_dir)
    owner = read_lock(out)
    if owner is not None and not _is_stale(owner):
        raise _refuse(out, owner)


class RunLock:
    """The exclusive lock on one run directory: ``acquire()`` before the first write, ``release()`` at the end.

    Also a context manager. ``acquire`` creates `out_dir` when needed; ``release`` removes the
    lock file (only if it is still ours) and the directory again when acquiring created it and
    nothing else was written there.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self.held = False
        self._created_dir = False
        self._token = ""

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock atomically; a stale lock is warned about and taken over, a live one refused."""
        check_writable(self.out_dir)
        try:
            if not self.out_dir.is_dir():
                self.out_dir.mkdir(parents=True)
                self._created_dir = True
        except FileExistsError:
            pass  # a concurrent run created it: the lock below decides
        except OSError as e:
            raise RunDirError(f"cannot create out_dir {str(self.out_dir)!r}: {e.strerror or e}") from None
        for _ in range(3):
            if self._create():
                self.held = True
                return
            owner = read_lock(self.out_dir)
            if owner is None:
                continue  # released meanwhile: try again
            if not _is_stale(owner):
                self._undo_dir()
                raise _refuse(self.out_dir, owner)
            self._take_over(owner)
        self._undo_dir()
        raise _refuse(self.out_dir, read_lock(self.out_dir) or {})

    def _create(self) -> bool:
        """Create the lock file with O_EXCL; False when it exists."""
        self._token = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            self._undo_dir()
            raise RunDirError(f"cannot create the lock file {str(self.path)!r}: {e.strerror or e}") from None
        try:
            os.write(fd, self._token.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over(self, owner: dict[str, Any]) -> None:
        """Remove a stale lock. It is renamed first, so of two processes taking it over only one removes it;
        a lock that turns out to be fresh (another process won the race) is put back."""
        warnings.warn(
            f"out_dir {str(self.out_dir)!r}: taking over the stale lock of {_describe(owner)} (that process is gone)",
            stacklevel=3,
        )
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if _read_json(aside) != owner:  # we moved a live lock someone just took: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this object holds it (and the directory if acquiring made it and it is empty)."""
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text() == self._token:
                self.path.unlink()
        except OSError:
            pass
        self._undo_dir()

    def _undo_dir(self) -> None:
        if self._created_dir:
            try:
                self.out_dir.rmdir()  # only when empty: a run that wrote something keeps its directory
            except OSError:
                pass
            self._created_dir = False

    def keep_dir(self) -> None:
        """The run wrote into the directory: release() leaves it in place even when empty."""
        self._created_dir = False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def move_aside(lock: RunLock) -> Path:
    """Rename the locked `out_dir` to ``<out_dir>.old-<YYYYmmdd-HHMMSS>`` and re-take the lock on a fresh, empty
    `out_dir`; returns where the old run went. One rename: the old run is moved whole or not at all.

    Raises:
        RunDirError: the rename failed (the old run is untouched and still locked by `lock`), or another
            process took the fresh directory in the instant between (the old run is moved; this run stops).
    """
    out = lock.out_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while dest.exists():
        dest = out.with_name(f"{out.name}.old-{stamp}-{n}")
        n += 1
    try:
        os.rename(out, dest)
    except OSError as e:
        raise RunDirError(f"--overwrite: cannot move {str(out)!r} aside to {str(dest)!r}: {e.strerror or e}") from None
    (dest / LOCK_FILE).unlink(missing_ok=True)  # our lock travelled with the old run
    lock.held, lock._created_dir = False, False
    try:
        lock.acquire()
    except RunDirError as e:
        raise RunDirError(f"--overwrite moved the old run to {str(dest)!r}, then: {e}") from None
    return dest


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC (or EDQUOT), also in the forms torch.save reports it ("unexpected pos" from inline_container)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or ("inline_container" in text and "unexpected pos" in text)
