"""Stop a datasite and deploy it again from the same data directory: nothing is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import deploy_site, free_port, login, owner_images, run_cli, submit_code

pytestmark = pytest.mark.slow

CODE = '''
@sy.syft_function_single_use(images=asset)
def count_images(images):
    return len(images)
'''


def _submit(client: Any, dataset: str, fn_name: str, tmp: Path) -> Any:
    source = CODE.replace("count_images", fn_name)
    return submit_code(client, source, dataset=dataset, function=fn_name, tmp=tmp)


def test_restart_keeps_datasets_users_requests_and_audit(tmp_path: Path) -> None:
    site = deploy_site(tmp_path / "st-luke", "st-luke")
    try:
        site.publish(name="xr", synthetic_count=40)
        password = site.add_scientist("bo@uni.example")
        client = login(site.url, "bo@uni.example", password)
        approved = str(_submit(client, "xr", "count_a", tmp_path).id)
        denied = str(_submit(client, "xr", "count_b", tmp_path).id)
        site.approve(approved)
        site.deny(denied, reason="duplicate")
        before = {"digest": owner_images(site)["xr"], "requests": site.requests(),
                  "audit": site.audit()}
    finally:
        site.stop()
    assert run_cli("domain", "status", "--data-dir", str(site.data_dir.path)).code == 3

    result = run_cli("domain", "deploy", "--data-dir", str(site.data_dir.path),
                     "--port", str(free_port()), "--detach")
    assert result.code == 0, result.err
    try:
        assert owner_images(site)["xr"] == before["digest"]
        client = login(site.url, "bo@uni.example", password)  # same user, same password
        statuses = dict(zip(site.requests()["id"], site.requests()["status"], strict=True))
        assert statuses == {approved: "approved", denied: "rejected"}
        from domains.connection import quiet

        with quiet():
            asset = client.datasets["xr"].assets["images"]
            assert client.code.count_a(images=asset).get() == 40  # approval survived
        audit = site.audit()
        assert len(audit) > len(before["audit"])  # old entries kept, restart appended
        assert audit.iloc[: len(before["audit"])].equals(before["audit"])
        assert list(audit["event"]).count("deploy") == 2
    finally:
        site.stop()

