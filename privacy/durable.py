"""Files that survive a crash: the one atomic writer, the one lock and the one timestamp of medsyft.

Hospitals keep ε ledgers, call ledgers, keys and audit evidence on disk, and the orchestrator its
checkpoints; a power cut or a second process must never leave half a file or two writers' bytes
mixed in one. Every writer in the three rooms therefore goes through :func:`atomic_write` (or
:func:`atomic_writer` for writers that stream, such as ``np.savez``): a unique temporary file in
the same directory, fsync'ed, given its mode, renamed over the target, then the directory fsync'ed
so the rename itself is durable. Read-modify-write steps hold :func:`file_lock`, a real OS lock
from the ``filelock`` library, on a lock file that is never the data file (filelock truncates its
lock file). This module sits in ``privacy/`` because both rooms import it and it imports neither.

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     path = pathlib.Path(folder) / "state.json"
...     atomic_write(path, '{"round": 1}')
...     print(path.read_text(), oct(path.stat().st_mode & 0o777))
{"round": 1} 0o600
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from filelock import BaseFileLock, FileLock

__all__ = ["atomic_write", "atomic_writer", "file_lock", "utc_stamp"]


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace *path* with *data* (text is UTF-8) in one step; on any error *path* is untouched."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, mode=mode) as fh:
        fh.write(payload)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace *path* when the block ends without error.

    The temporary name is unique (``mkstemp``), so concurrent writers of one path never share a
    temp file: the last rename wins and the file is always one writer's whole payload. The mode is
    set before any byte is written, so a secret is never readable under a looser mode, and exactly
    (the umask does not apply).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:  # closes fd on every path from here
            os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in *folder* durable; filesystems that cannot fsync a directory are skipped."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def file_lock(path: str | os.PathLike[str], *, timeout: float | None = None) -> BaseFileLock:
    """An exclusive, blocking OS lock on the lock file *path* (0600), as a context manager.

    *timeout* seconds, if given, bound the wait (``filelock.Timeout``, a ``TimeoutError``, after
    it). The lock is reentrant per returned object only: hold one object where composite steps
    nest; two objects for one path in one thread wait for each other, as two processes do. *path*
    must be a file of its own, never a data file: filelock truncates it when it takes the lock.
    """
    return FileLock(path, timeout=-1 if timeout is None else timeout, mode=0o600)


def utc_stamp(timespec: str = "seconds") -> str:
    """Now in UTC, ISO 8601 (``2026-12-01T09:30:00+00:00``): every stored time is written this way."""
    return datetime.now(UTC).isoformat(timespec=timespec)
