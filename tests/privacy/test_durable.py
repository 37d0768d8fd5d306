"""privacy.durable: a failed write leaves the old file whole, writers never mix, locks hold
across processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from filelock import Timeout

from privacy import durable
from privacy.durable import atomic_write, atomic_writer, file_lock, utc_stamp

OLD = b'{"spent": 1.0}\n'


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_failing_midway_leaves_the_original_intact(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(OLD)
    with pytest.raises(RuntimeError, match="disk pulled"), atomic_writer(path) as fh:
        fh.write(b'{"spent": 2.')  # half a payload, then the writer dies
        raise RuntimeError("disk pulled")
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_atomic_write_failing_at_rename_leaves_the_original_intact(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(OLD)

    def refuse(src: object, dst: object) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(durable.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write(path, '{"spent": 2.0}\n')
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_atomic_write_of_a_new_file_that_fails_creates_nothing(tmp_path: Path) -> None:
    class Unwritable:
        """A payload whose serialisation fails, as np.savez does on a bad array."""

    with pytest.raises(TypeError), atomic_writer(tmp_path / "new.npz") as fh:
        fh.write(Unwritable())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_of_one_path_never_mix(tmp_path: Path) -> None:
    """Each writer has its own temp file: the result is one whole payload, and no temp is left."""
    path = tmp_path / "state.json"
    payloads = [bytes([65 + i]) * (4 << 20) for i in range(2)]  # 4 MiB each: writes overlap
    for _ in range(5):
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(data: bytes, start: threading.Barrier = start,
                  errors: list[BaseException] = errors) -> None:
            try:
                start.wait()
                atomic_write(path, data)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert path.read_bytes() in payloads
        assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o644), (0o022, 0o600), (0o000, 0o600)])
def test_atomic_write_sets_the_mode_whatever_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "key"
    old = os.umask(umask)
    try:
        atomic_write(path, b"secret", mode=mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"secret"


def test_atomic_write_replaces_a_file_with_a_looser_mode(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("old")
    path.chmod(0o666)
    atomic_write(path, "new")  # default 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "new"


def test_atomic_write_fsyncs_the_file_and_then_its_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", record)
    atomic_write(tmp_path / "state.json", "{}")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and synced[0].endswith(".tmp")  # the data, before rename
    assert synced[1] == str(tmp_path)  # then the directory, which makes the rename durable


_HOLDER = """
import sys
from privacy.durable import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout), file_lock(lock, timeout=0):
            pass
        with pytest.raises(TimeoutError), file_lock(lock, timeout=0.2):  # a bounded wait gives up too
            pass
    finally:
        holder.communicate("\n", timeout=30)  # let it release and exit
    assert holder.returncode == 0
    with file_lock(lock, timeout=0):  # free again once the other process let go
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_file_lock_is_reentrant_per_object(tmp_path: Path) -> None:
    lock = file_lock(tmp_path / ".lock", timeout=0)
    with lock, lock:
        assert lock.is_locked
    assert not lock.is_locked


@pytest.mark.parametrize(("timespec", "fraction"), [("seconds", ""), ("milliseconds", ".123")])
def test_utc_stamp_is_utc_iso_8601_at_the_callers_precision(timespec: str, fraction: str) -> None:
    stamp = utc_stamp(timespec)
    assert stamp.endswith("+00:00") and len(stamp) == len(f"2026-12-01T09:30:00{fraction}+00:00")
    parsed = datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None and parsed.utcoffset() == UTC.utcoffset(None)
