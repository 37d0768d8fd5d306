"""The audit log is evidence: without the key in DIR nobody can edit, delete, reorder, cut or
rewrite an entry and still have ``verify`` (and ``medsyft domain audit --verify``) pass."""

from __future__ import annotations

import json
import re
import shutil
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import rewrite_audit_unkeyed, run_cli

from domains.errors import AuditKeyError, AuditLogError
from domains.site.audit import AuditKey, AuditLog
from domains.site.datadir import DataDir, DatasiteConfig


def make_log(folder: Path, n: int = 3) -> AuditLog:
    folder.mkdir(parents=True, exist_ok=True)
    log = AuditLog(folder / "audit.jsonl")
    for i in range(n):
        log.append("publish", actor="owner@local", subject=f"ds{i}", n=i)
    return log


def lines_of(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def write_lines(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("\n".join(lines) + "\n")


def legacy_log(tmp_path: Path, n: int = 3) -> AuditLog:
    """A log as medsyft wrote it before the key existed: SHA-256 chain, no MAC, no key, no head."""
    keyed = make_log(tmp_path / "old-format", n)
    rewrite_audit_unkeyed(keyed.path)
    (tmp_path / "site").mkdir()
    return AuditLog(Path(shutil.copy(keyed.path, tmp_path / "site" / "audit.jsonl")))


def test_audit_log_keyed_round_trip(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    result = log.verify()
    assert (result.entries, result.legacy_entries) == (3, 0)
    assert "audit log OK: 3 entries, 3 keyed" in result.summary()
    assert all({"prev", "mac"} <= json.loads(line).keys() for line in lines_of(log))
    for path in (log.key_path, log.head_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = AuditKey.read(log.key_path)
    assert len(key.secret) == 32 and result.key_fingerprint == key.fingerprint
    assert key.secret.hex() not in result.summary()


def test_audit_log_edited_field_fails_at_its_line(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = lines_of(log)
    lines[1] = lines[1].replace('"n": 1', '"n": 9')
    write_lines(log, lines)
    with pytest.raises(AuditLogError, match=r"line 2 \(\S+ publish\): its MAC does not verify"):
        log.verify()


def test_audit_log_deleted_entry_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = lines_of(log)
    write_lines(log, [lines[0], lines[2]])
    with pytest.raises(AuditLogError, match=r"line 2 .*does not follow the entry before it"):
        log.verify()


def test_audit_log_reordered_entries_fail(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = lines_of(log)
    write_lines(log, [lines[0], lines[2], lines[1]])
    with pytest.raises(AuditLogError, match="line 2 "):
        log.verify()


def test_audit_log_deleted_last_entry_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    write_lines(log, lines_of(log)[:-1])
    with pytest.raises(AuditLogError, match="records 3 entries: the last 1 were deleted"):
        log.verify()


def test_audit_log_truncated_last_line_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    text = log.path.read_text()
    log.path.write_text(text[:-20])
    with pytest.raises(AuditLogError, match="line 3: it has no line end"):
        log.verify()


def test_audit_log_recomputed_unkeyed_chain_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rewrite_audit_unkeyed(log.path)
    with pytest.raises(AuditLogError, match=r"line 1 .*carries no MAC"):
        log.verify()


def test_audit_log_rewritten_under_another_key_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    forged = make_log(tmp_path / "forger")  # the same events, chained under the forger's own key
    shutil.copy(forged.path, log.path)
    shutil.copy(forged.head_path, log.head_path)
    with pytest.raises(AuditLogError, match=r"line 1 .*its MAC does not verify"):
        log.verify()


def test_audit_log_deleted_tail_stays_detected_after_new_appends(tmp_path: Path) -> None:
    log = make_log(tmp_path, 4)
    write_lines(log, lines_of(log)[:2])
    for i in range(3):  # later appends must not move the head on over the gap
        log.append("approve", actor="owner@local", subject=f"r{i}")
        with pytest.raises(AuditLogError):
            log.verify()


def test_audit_log_older_head_copy_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path, 2)
    old_head = log.head_path.read_text()
    make_log(tmp_path, 2)
    log.head_path.write_text(old_head)
    with pytest.raises(AuditLogError, match="replaced by an older copy"):
        log.verify()


def test_audit_log_missing_head_fails(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.head_path.unlink()
    with pytest.raises(AuditLogError, match=r"audit\.head is missing"):
        log.verify()


def test_audit_log_missing_key_is_an_error_not_a_reset(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.key_path.unlink()
    before = log.path.read_bytes()
    with pytest.raises(AuditKeyError, match=re.escape(f"audit key {log.key_path} is missing")):
        log.verify()
    with pytest.raises(AuditKeyError, match="will not start a new key"):
        log.append("deploy", actor="owner@local")
    assert log.path.read_bytes() == before and not log.key_path.exists()


def test_audit_log_legacy_log_verifies_as_legacy_then_keys_from_the_next_entry(tmp_path: Path) -> None:
    log = legacy_log(tmp_path)
    result = log.verify()
    assert (result.entries, result.legacy_entries, result.key_fingerprint) == (3, 3, None)
    assert "legacy, unkeyed up to entry 3" in result.summary()
    assert not log.key_path.exists()  # verifying reads only
    log.append("deploy", actor="owner@local", subject="st-mary")
    assert AuditKey.read(log.key_path).legacy_entries == 3
    result = log.verify()
    assert (result.entries, result.legacy_entries) == (4, 3)
    assert "4 entries, 1 keyed" in result.summary() and "unkeyed up to entry 3" in result.summary()


def test_audit_log_legacy_entries_are_pinned_once_keyed(tmp_path: Path) -> None:
    log = legacy_log(tmp_path)
    log.append("deploy", actor="owner@local")
    keyed = lines_of(log)[3]
    write_lines(log, [line.replace('"n": 0', '"n": 7') for line in lines_of(log)[:3]])
    rewrite_audit_unkeyed(log.path)  # a consistent legacy chain again, but not the pinned one
    write_lines(log, [*lines_of(log), keyed])
    with pytest.raises(AuditLogError, match=r"line 3 .*legacy entries up to here changed"):
        log.verify()


def test_audit_log_legacy_edit_is_detected_before_keying(tmp_path: Path) -> None:
    log = legacy_log(tmp_path)
    lines = lines_of(log)
    lines[1] = lines[1].replace('"n": 1', '"n": 9')
    write_lines(log, lines)
    with pytest.raises(AuditLogError, match=r"line 3 .*hash chain broken"):
        log.verify()


def test_audit_log_keeps_the_event_time(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    log.append("execution", actor="ana@uni.example", time="2020-01-02T03:04:05+00:00")
    assert log.entries()[-1]["time"] == "2020-01-02T03:04:05+00:00"
    assert log.to_frame()["event"].iloc[0] == "execution"  # the table is in event-time order
    assert log.verify().entries == 2


MUTATIONS = st.sampled_from(["edit", "delete", "swap", "cut", "duplicate"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 6), mutation=MUTATIONS, where=st.integers(0, 5), value=st.integers(10, 99))
def test_audit_log_any_tampering_fails(tmp_path: Path, n: int, mutation: str, where: int,
                                       value: int) -> None:
    folder = tmp_path / f"{n}-{mutation}-{where}-{value}"
    shutil.rmtree(folder, ignore_errors=True)
    log = make_log(folder, n)
    lines, i = lines_of(log), where % n
    if mutation == "edit":
        lines[i] = lines[i].replace(f'"n": {i}', f'"n": {value}')
    elif mutation == "delete":
        del lines[i]
    elif mutation == "swap":
        j = (i + 1) % n
        lines[i], lines[j] = lines[j], lines[i]
    elif mutation == "duplicate":
        lines.insert(i, lines[i])
    write_lines(log, lines)
    if mutation == "cut":
        log.path.write_text(log.path.read_text()[: -(1 + value)])
    with pytest.raises(AuditLogError):
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
    assert log.verify().entries == 100
    frame = log.to_frame()
    assert list(frame.columns) == ["time", "event", "actor", "subject", "details"]
    assert json.loads(frame["details"].iloc[0]) == {}


# -- the command line ---------------------------------------------------------------
def data_dir_with_log(tmp_path: Path) -> DataDir:
    """A deployed-looking data directory (config only: --verify needs no running datasite)."""
    data_dir = DataDir(tmp_path / "st-mary")
    data_dir.ensure_writable()
    data_dir.write_config(DatasiteConfig(name="st-mary", host="127.0.0.1", port=1, server_uid="x"))
    make_log(data_dir.path)
    return data_dir


def test_audit_verify_cli_says_ok_with_the_count(tmp_path: Path) -> None:
    data_dir = data_dir_with_log(tmp_path)
    result = run_cli("domain", "audit", "--verify", "--data-dir", str(data_dir.path))
    assert result.code == 0, result.err
    assert "audit log OK: 3 entries, 3 keyed" in result.out


def test_audit_verify_cli_names_the_broken_line_and_exits_2(tmp_path: Path) -> None:
    data_dir = data_dir_with_log(tmp_path)
    log = AuditLog(data_dir.file("audit.jsonl"))
    lines = lines_of(log)
    write_lines(log, [lines[0], lines[2]])
    before = log.path.read_bytes(), log.head_path.read_bytes()
    result = run_cli("domain", "audit", "--verify", "--data-dir", str(data_dir.path))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "line 2 (" in result.err and "publish)" in result.err and "does not follow" in result.err
    assert (log.path.read_bytes(), log.head_path.read_bytes()) == before  # nothing repaired


def test_audit_verify_cli_reports_a_legacy_log(tmp_path: Path) -> None:
    data_dir = data_dir_with_log(tmp_path)
    log = AuditLog(data_dir.file("audit.jsonl"))
    rewrite_audit_unkeyed(log.path)
    log.key_path.unlink()
    log.head_path.unlink()
    result = run_cli("domain", "audit", "--verify", "--data-dir", str(data_dir.path))
    assert result.code == 0, result.err
    assert "legacy, unkeyed up to entry 3" in result.out


def test_audit_verify_cli_missing_key_names_the_file(tmp_path: Path) -> None:
    data_dir = data_dir_with_log(tmp_path)
    data_dir.file("audit.key").unlink()
    result = run_cli("domain", "audit", "--verify", "--data-dir", str(data_dir.path))
    assert result.code == 2 and str(data_dir.file("audit.key")) in result.err


def test_audit_log_entries_name_a_damaged_line(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    lines = lines_of(log)
    write_lines(log, [lines[0], lines[1][:40], lines[2]])
    with pytest.raises(AuditLogError, match=r"line 2 is not a JSON entry"):
        log.entries()
