"""Append-only audit log of everything that happens to a datasite's data.

One JSON object per line in ``DIR/audit.jsonl``. Each entry carries the SHA-256
of the previous line, so editing or deleting an entry breaks the chain and
:meth:`AuditLog.verify` says where. Appends take an exclusive ``flock`` so that
two commands (say ``approve`` while ``audit`` syncs executions) never interleave.

Events written by medsyft: ``deploy``, ``stop``, ``publish``, ``account-created``,
``approve``, ``deny``. Executions happen inside the PySyft server, where medsyft
has no hook, so ``execution`` entries are copied in from PySyft's output history
(one per run, keyed by PySyft's output id) whenever the log is read through
:func:`domains.requests.sync_executions`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from domains.errors import AuditLogError

GENESIS = "0" * 64
COLUMNS = ["time", "event", "actor", "subject", "details"]


def local_actor() -> str:
    """Who ran this command on this machine (the OS account), for entries medsyft writes."""
    try:
        return f"{getpass.getuser()}@local"
    except (KeyError, OSError):
        return f"uid{os.getuid()}@local"


class AuditLog:
    """The hash-chained JSONL audit log of one datasite."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(
        self,
        event: str,
        *,
        actor: str,
        subject: str = "",
        time: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Append one entry; *time* defaults to now (UTC, ISO 8601)."""
        with self._locked() as fh:
            fh.seek(0)
            lines = fh.read().splitlines()
            prev = hashlib.sha256(lines[-1].encode()).hexdigest() if lines else GENESIS
            entry = {
                "time": time or datetime.now(UTC).isoformat(timespec="seconds"),
                "event": event,
                "actor": actor,
                "subject": subject,
                "details": details,
                "prev": prev,
            }
            fh.seek(0, os.SEEK_END)
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._locked() as fh:
            fh.seek(0)
            return [json.loads(line) for line in fh.read().splitlines() if line.strip()]

    def keys(self, event: str, field: str) -> set[str]:
        """Values of ``details[field]`` over entries of one event type (for de-duplication)."""
        return {
            str(e["details"].get(field))
            for e in self.entries()
            if e["event"] == event and field in e["details"]
        }

    def verify(self) -> int:
        """Check the hash chain; return the number of entries or raise AuditLogError."""
        if not self.path.exists():
            return 0
        prev = GENESIS
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise AuditLogError(
                    f"{self.path}: line {number} is not valid JSON; the log was edited"
                ) from exc
            if entry.get("prev") != prev:
                raise AuditLogError(
                    f"{self.path}: hash chain broken at line {number}; "
                    "an earlier entry was edited or removed"
                )
            prev = hashlib.sha256(line.encode()).hexdigest()
        return len(lines)

    def to_frame(self) -> pd.DataFrame:
        """The log as a table, oldest first; ``details`` flattened to compact JSON."""
        rows = [
            {
                "time": e["time"],
                "event": e["event"],
                "actor": e["actor"],
                "subject": e["subject"],
                "details": json.dumps(e["details"], sort_keys=True, default=str),
            }
            for e in self.entries()
        ]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame.sort_values("time", kind="stable").reset_index(drop=True)
