"""The audit log is append-only in practice: edits and deletions are detected."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from domains.audit import AuditLog
from domains.errors import AuditLogError


def test_audit_log_edit_is_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        log.append("publish", actor="owner@local", subject=f"ds{i}", n=i)
    assert log.verify() == 3
    lines = log.path.read_text().splitlines()
    lines[1] = lines[1].replace('"n": 1', '"n": 9')
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match="line 3"):
        log.verify()


def test_audit_log_deleted_entry_is_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        log.append("approve", actor="owner@local", subject=f"r{i}")
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(AuditLogError, match="line 2"):
        log.verify()


def test_audit_log_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    def writer(k: int) -> None:
        for i in range(25):
            AuditLog(log.path).append("execution", actor=f"w{k}", subject=str(i))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == 100
    frame = log.to_frame()
    assert list(frame.columns) == ["time", "event", "actor", "subject", "details"]
    assert json.loads(frame["details"].iloc[0]) == {}
