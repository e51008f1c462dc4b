"""Files that are never seen half-written, and a lock for writers that share them.

Every file robustcheck writes (baselines, report.json, report.html, plots) goes through
:func:`write_bytes`: the bytes go to a temporary file in the same folder, are flushed to disk
(``fsync``) and then renamed over the target (``os.replace``, atomic on POSIX and Windows).
A reader sees the old file or the new one, never a mixture; a run killed mid-write leaves the
old file and, at worst, a hidden ``.NAME.*.tmp`` beside it.

:func:`locked` serialises writers of the same baseline or report folder, across processes,
with the ``filelock`` package (imported only here, when something is written). The lock file
stays in place after a run: it holds no data, and the operating system releases the lock of
a process that dies.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NOTICE_AFTER_S = 1.0  # say that we wait for another run's lock after this long
LOCK_TIMEOUT_S = 600.0  # give up (with a message naming the lock) after this long


class LockTimeout(OSError):
    """Another process held the lock for longer than ``LOCK_TIMEOUT_S``."""


@functools.cache
def _default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file (read once: setting
    the umask to read it is process-wide)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync,
    then ``os.replace``. The file keeps the permissions of the one it replaces."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = _default_mode()
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    _sync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, document: Any, **options: Any) -> Path:
    """``json.dumps(document, **options)`` plus a final newline, written atomically."""
    return write_text(path, json.dumps(document, **options) + "\n")


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(
    lock_path: str | Path,
    what: str,
    notice: Callable[[str], None] | None = None,
    timeout: float = LOCK_TIMEOUT_S,
) -> Iterator[None]:
    """Hold the inter-process lock ``lock_path`` while writing ``what``.

    When another process holds it for more than ``NOTICE_AFTER_S``, ``notice`` is told that
    this one waits; after ``timeout`` seconds :class:`LockTimeout` names the lock file.
    """
    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=min(NOTICE_AFTER_S, timeout))
    except Timeout:
        if notice is not None:
            notice(
                f"robustcheck: waiting for another run to finish writing {what} (lock {lock_path})"
            )
        try:
            lock.acquire(timeout=max(timeout - NOTICE_AFTER_S, 0.0))
        except Timeout:
            raise LockTimeout(
                f"another process held the lock {lock_path} for over {timeout:.0f} s; "
                f"{what} was not written (delete the lock file only if no robustcheck "
                "run is writing there)"
            ) from None
    try:
        yield
    finally:
        lock.release()
