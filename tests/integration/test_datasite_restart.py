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
        assert run_cli("domain", "policy", "--data-dir", str(site.data_dir.path),
                       "--allow-custom-code", "on").code == 0  # the test's code is not a medsyft job
        site.approve(approved, allow_custom_code=True)
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
        from domains.site.connection import quiet

        with quiet():
            asset = client.datasets["xr"].assets["images"]
            assert client.code.count_a(images=asset).get() == 40  # approval survived
        audit = site.audit()
        assert len(audit) > len(before["audit"])  # old entries kept, restart appended
        assert audit.iloc[: len(before["audit"])].equals(before["audit"])
        assert list(audit["event"]).count("deploy") == 2
    finally:
        site.stop()



def test_foreground_deploy_stops_on_ctrl_c(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from domains.site.lifecycle import metadata, read_pid

    data_dir = tmp_path / "fg"
    port = free_port()
    exe = Path(sys.executable).parent / "medsyft"
    proc = subprocess.Popen(
        [str(exe), "domain", "deploy", "--data-dir", str(data_dir), "--name", "fg",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while metadata(url) is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert metadata(url) is not None, proc.stdout.read() if proc.poll() is not None else "timeout"
    from domains.site.datadir import DataDir

    server_pid = read_pid(DataDir(data_dir))
    assert server_pid is not None
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert metadata(url) is None and read_pid(DataDir(data_dir)) is None
    assert not (data_dir / "datasite.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    assert "stop" in (data_dir / "audit.jsonl").read_text()
