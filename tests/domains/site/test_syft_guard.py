"""The login throttle's rules, on a clock the test moves, and how the datasite process lets go of
PySyft's secrets; the rest of syft_guard runs against real datasites in
tests/integration/test_hostile_access.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from domains.errors import DeployError
from domains.site import server, syft_guard
from domains.site.datadir import DataDir
from domains.site.syft_guard import LoginThrottle

ANA = ("email", "ana@uni.example")
HOST = ("address", "10.0.0.7")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(max_failures={"email": 3, "address": 5}, window_s=60, lockout_s=120,
                         clock=clock)


def test_throttle_locks_after_n_failures_in_the_window() -> None:
    clock = Clock()
    t = throttle(clock)
    assert t.failed([ANA, HOST]) == [] and t.failed([ANA, HOST]) == []
    assert not t.locked([ANA])
    assert t.failed([ANA, HOST]) == [ANA]  # the third failure starts the lockout, once
    assert t.locked([ANA]) and t.locked([ANA, HOST]) and not t.locked([HOST])
    clock.now += 119
    assert t.locked([ANA])
    clock.now += 2
    assert not t.locked([ANA])


def test_throttle_forgets_failures_older_than_the_window() -> None:
    clock = Clock()
    t = throttle(clock)
    t.failed([ANA])
    t.failed([ANA])
    clock.now += 61
    assert t.failed([ANA]) == [] and not t.locked([ANA])


def test_throttle_success_clears_the_email_but_not_the_address() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(2):
        t.failed([ANA, HOST])
    t.succeeded(ANA)
    assert t.failed([ANA, HOST]) == []  # ana starts again from zero ...
    other = ("email", "bo@uni.example")
    assert t.failed([other, HOST]) == []
    assert t.failed([other, HOST]) == [HOST]  # ... the address counted all five
    assert t.locked([("email", "anyone@x.example"), HOST])


def test_throttle_forgets_stale_keys_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    t = throttle(clock)
    monkeypatch.setattr(LoginThrottle, "MAX_KEYS", 10)
    for i in range(10):
        t.failed([("email", f"u{i}@x.example")])
    clock.now += 61
    t.failed([("email", "late@x.example")])
    assert len(t._failures) == 1


def test_guards_refuse_to_start_under_another_pysyft(monkeypatch: pytest.MonkeyPatch) -> None:
    import syft

    monkeypatch.setattr(syft, "__version__", "0.9.6")
    with pytest.raises(DeployError, match=r"install syft==0\.9\.5"):
        syft_guard.apply("audit.jsonl")


def test_datasite_inherits_no_secret_from_the_deploying_shell() -> None:
    shell = {"PATH": "/usr/bin", "MEDSYFT_DATA_DIR": "/srv/a", "DEFAULT_ROOT_PASSWORD": "x",
             "SERVER_PRIVATE_KEY": "k", "DEFAULT_ROOT_EMAIL": "a@b.c", "AWS_SECRET_ACCESS_KEY": "s",
             "GITHUB_TOKEN": "t", "DB_PASSWORD": "p", "MEDSYFT_SYFT_SPEEDUPS": "0"}
    assert server.inherited_environment(shell) == {
        "PATH": "/usr/bin", "MEDSYFT_DATA_DIR": "/srv/a", "MEDSYFT_SYFT_SPEEDUPS": "0"}


def test_docstring_examples_run() -> None:
    import doctest

    results = doctest.testmod(syft_guard)
    assert results.attempted > 0 and results.failed == 0


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataDir:
    """A data directory whose key PySyft 'read at import', with PySyft's secrets still set."""
    import syft.server.server as syft_server

    data_dir = DataDir(tmp_path)
    data_dir.write_server_key("ab" * 32)
    monkeypatch.setattr(syft_server, "signing_key_env", "ab" * 32)
    for name in server.SECRET_VARIABLES:
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("MEDSYFT_DATA_DIR", str(tmp_path))
    return data_dir


def test_datasite_drops_pysyfts_secrets_once_pysyft_read_them(data_dir: DataDir) -> None:
    server.consume_secrets(data_dir)
    assert not set(server.SECRET_VARIABLES) & set(os.environ)
    assert os.environ["MEDSYFT_DATA_DIR"] == str(data_dir.path)  # not a secret: the runtime needs it


def test_datasite_refuses_to_start_when_pysyft_read_the_environment_too_early(
    data_dir: DataDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syft.server.server as syft_server

    monkeypatch.setattr(syft_server, "signing_key_env", None)  # syft imported before the key was set
    with pytest.raises(DeployError, match="imported before the datasite environment was set"):
        server.consume_secrets(data_dir)
