"""One admin login per datasite process: later owner commands reuse it, a restart logs in afresh.

A PySyft login costs about a second; the demo logged in four times per site. The cache must
never hand out a session of a datasite process that is gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import deploy_site, free_port, run_cli

from domains.site.connection import admin_client, forget_clients, quiet

pytestmark = pytest.mark.slow


def test_admin_client_is_reused_until_the_datasite_restarts(tmp_path: Path) -> None:
    forget_clients()
    site = deploy_site(tmp_path / "st-anne", "st-anne")
    try:
        first = admin_client(site.data_dir)
        assert admin_client(site.data_dir) is first
        site.publish(name="xr", synthetic_count=20)  # publish uses the cached session too
        with quiet():
            assert [d.name for d in first.datasets] == ["xr"]
    finally:
        site.stop()
    assert run_cli("domain", "deploy", "--data-dir", str(site.data_dir.path), "--port", str(free_port()),
                   "--detach").code == 0
    try:
        again = admin_client(site.data_dir)
        assert again is not first  # a new process (and here a new port): a new login
        with quiet():
            assert [d.name for d in again.datasets] == ["xr"]
    finally:
        site.stop()
