"""Datasites forked by one launcher (``domains.site.launcher``) are datasites like any other.

Each keeps its own identity from its own data directory, no secret reaches its environment, a
restart as its own process (``medsyft domain deploy``) finds everything it held, a stop is a stop,
and the launcher goes away by itself once its last datasite has.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from support import free_port, login, owner_images, run_cli

from domains import Datasite
from domains.errors import DeployError
from domains.site.datadir import DataDir
from domains.site.launcher import Launcher
from domains.site.lifecycle import free_ports, metadata, read_pid

pytestmark = pytest.mark.slow


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_forked_datasites_keep_their_own_identity_and_no_secret(tmp_path: Path) -> None:
    names = ("st-anne", "st-paul")
    with Launcher() as launcher, ThreadPoolExecutor(2) as pool:
        sites = list(pool.map(lambda n, p: Datasite.deploy(tmp_path / n, name=n, port=p, launcher=launcher),
                              names, free_ports(2)))
    launcher_pid = launcher.pid
    try:
        pids = [read_pid(site.data_dir) for site in sites]
        assert None not in pids and len(set(pids)) == 2
        for site, pid in zip(sites, pids, strict=True):
            assert psutil.Process(pid).ppid() == launcher_pid  # forked, not a process of ours
            config = site.config
            served = metadata(site.url)
            assert served is not None and served["name"] == config.name
            assert served["id"] == config.server_uid  # the uid from its own data directory
            environ = _environment(pid)
            creds = json.loads(site.data_dir.file("credentials.json").read_text())
            for secret in (site.data_dir.read_server_key(), creds["password"]):
                assert not any(secret in value for value in environ.values())
            assert not {"SERVER_PRIVATE_KEY", "DEFAULT_ROOT_PASSWORD"} & environ.keys()
        sites[0].publish(name="xr", synthetic_count=40)  # the admin account is the data directory's
        password = sites[0].add_scientist("bo@uni.example")
        login(sites[0].url, "bo@uni.example", password)
        digest = owner_images(sites[0])["xr"]
    finally:
        for site in sites:
            site.stop()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert launcher.wait(timeout=60) == 0  # its last datasite has gone: the launcher ends by itself

    again = run_cli("domain", "deploy", "--data-dir", str(sites[0].data_dir.path), "--port", str(free_port()),
                    "--detach")
    assert again.code == 0, again.err
    try:  # as its own process: the same store, users and identity
        assert owner_images(sites[0])["xr"] == digest
        login(sites[0].url, "bo@uni.example", password)
        assert metadata(sites[0].url)["id"] == sites[0].config.server_uid  # type: ignore[index]
    finally:
        sites[0].stop()


def test_a_forked_datasite_runs_with_the_environment_of_its_deploy(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The deploying process's environment when it deploys, as for its own process; not the one
    the launcher started with."""
    with Launcher() as launcher:
        launcher.ready()
        monkeypatch.setenv("MEDSYFT_SYFT_SPEEDUPS", "0")
        site = Datasite.deploy(tmp_path / "st-jude", name="st-jude", port=free_port(), launcher=launcher)
    try:
        assert "medsyft: PySyft speed-ups: none" in site.data_dir.file("datasite.log").read_text()
    finally:
        site.stop()


def test_a_launcher_refuses_a_directory_that_is_no_datasite(tmp_path: Path) -> None:
    with Launcher() as launcher, pytest.raises(DeployError, match="could not start"):
        launcher.spawn(DataDir(tmp_path / "nothing"))
