"""The audit log as evidence, against a real datasite process on 127.0.0.1.

An approved custom function (not a medsyft job, so medsyft keeps no call ledger for it) runs
twice some seconds apart; the synced log gives each run the time it really happened, not
PySyft's one-per-process default. Then
someone who can write ``DIR/audit.jsonl`` but not read ``DIR/audit.key`` rewrites it with a
consistent unkeyed chain: ``medsyft domain audit --verify`` refuses it and names the line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import deploy_site, login, rewrite_audit_unkeyed, run_cli, submit_code

from domains.site.connection import quiet

pytestmark = pytest.mark.slow

COUNT_IMAGES = '''
from syft.service.policy.policy import OutputPolicyExecuteCount


@sy.syft_function(input_policy=sy.MixedInputPolicy(client=client, images=asset),
                  output_policy=OutputPolicyExecuteCount(limit=2))
def count_images(images):
    return len(images)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A datasite of its own: this module rewrites its audit log."""
    site = deploy_site(tmp_path_factory.mktemp("evidence") / "st-anne", "st-anne")
    yield site
    site.stop()


def approve_custom(site: Any, request_id: str) -> None:
    """Custom code runs only where the site policy allows it and the owner approved it as such."""
    for argv in (("policy", "--allow-custom-code", "on"), ("approve", request_id, "--allow-custom-code")):
        result = run_cli("domain", *argv, "--data-dir", str(site.data_dir.path))
        assert result.code == 0, result.err


def now_s() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def test_executions_carry_their_true_times(site: Any, tmp_path: Path) -> None:
    site.publish(name="counted", synthetic_count=20)
    email = "ana@uni.example"
    scientist = login(site.url, email, site.add_scientist(email))
    request = submit_code(scientist, COUNT_IMAGES, dataset="counted", function="count_images",
                          tmp=tmp_path)
    approve_custom(site, str(request.id))
    with quiet():
        asset = scientist.datasets["counted"].assets["images"]
        assert scientist.code.count_images(images=asset).get() == 20
    time.sleep(2.5)
    between = now_s()  # after run 1 ended, before run 2 began
    with quiet():
        assert scientist.code.count_images(images=asset).get() == 20

    table = run_cli("domain", "audit", "--data-dir", str(site.data_dir.path))  # syncs, then shows
    assert table.code == 0, table.err
    runs = [e for e in _entries(site) if e["event"] == "execution"]
    assert [e["details"]["time_source"] for e in runs] == ["pysyft-store", "pysyft-store"]
    assert runs[0]["time"] < between <= runs[1]["time"]
    assert {e["actor"] for e in runs} == {email}
    assert all(e["time"] <= e["details"]["synced_at"] for e in runs)

    verify = run_cli("domain", "audit", "--verify", "--data-dir", str(site.data_dir.path))
    assert verify.code == 0, verify.err
    assert f"audit log OK: {len(_entries(site))} entries" in verify.out


def test_rewritten_log_fails_verify_naming_the_line(site: Any) -> None:
    log_path = site.data_dir.file("audit.jsonl")
    first = _entries(site)[0]
    rewrite_audit_unkeyed(log_path)  # a consistent SHA-256 chain, as the old format had it
    result = run_cli("domain", "audit", "--verify", "--data-dir", str(site.data_dir.path))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert f"line 1 ({first['time']} deploy)" in result.err and "carries no MAC" in result.err


def _entries(site: Any) -> list[dict[str, Any]]:
    from domains.site.audit import AuditLog

    return AuditLog(site.data_dir.file("audit.jsonl")).entries()
