"""A hospital's own copy of a released model: usable once its owner's last decision on the release is yes."""

from __future__ import annotations

from pathlib import Path

from domains.runtime.final_model import RELEASED, release_approved
from domains.runtime.templates import release_function_name
from domains.site.audit import AuditLog
from domains.site.datadir import AUDIT_FILE, DataDir


def test_the_owners_last_decision_on_the_release_counts(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    log = AuditLog(data_dir.file(AUDIT_FILE))
    job, other = "a1b2c3d4e5f6", "ffffffffffff"
    assert not release_approved(data_dir, job)  # nothing decided yet
    log.append("approve", actor="owner@local", subject="r1", function=release_function_name(other))
    assert not release_approved(data_dir, job)  # another job's release
    log.append("approve", actor="owner@local", subject="r2", function=release_function_name(job))
    assert release_approved(data_dir, job)
    log.append("deny", actor="owner@local", subject="r2", function=release_function_name(job), reason="no")
    assert not release_approved(data_dir, job)  # taken back
    (data_dir.jobs_dir / job).mkdir(parents=True)
    (data_dir.jobs_dir / job / RELEASED).write_text("{}")
    assert release_approved(data_dir, job)  # the release ran here: its share is out
