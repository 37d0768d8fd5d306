"""PySyft's store in a real PostgreSQL 15 server (``deploy --db``), started by the test on a free port.

deploy -> publish -> approve -> train -> stop -> deploy again: the datasets, the account, the
approval and the job's results are all still there, and the database password is in no log, no
command line and no process environment. A database that is down or refuses the login is one line
at deploy, and the datasite's data directory is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from postgres_server import Postgres, postgres_server
from support import approve_all, free_port, run_cli, write_job_toml

pytestmark = pytest.mark.slow

DB_PASSWORD = "pg pass/with:odd@chars"  # URL-quoting must not leak it either


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def _deploy(data_dir: Path, url: str, password_file: Path, port: int, *extra: str) -> Any:
    return run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "pg-site", "--port", str(port),
                   "--db", url, "--db-password-file", str(password_file), "--detach", *extra)


def _store_rows(pg: Postgres, database: str) -> int:
    import psycopg2

    conn = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", password=pg.superuser_password,
                            dbname=database)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        (tables,) = cur.fetchone()
    conn.close()
    return int(tables)


def test_a_datasite_keeps_its_pysyft_store_in_postgresql_across_a_restart(pg: Postgres,
                                                                          tmp_path: Path) -> None:
    url = pg.create("hospital", DB_PASSWORD, "hospital_store")
    password_file = tmp_path / "db-password"
    password_file.write_text(DB_PASSWORD + "\n")
    data_dir = tmp_path / "site"
    up = _deploy(data_dir, url, password_file, free_port())
    assert up.code == 0, up.err
    assert f"PySyft store: {url}" in up.out and DB_PASSWORD not in up.out
    assert not (data_dir / "syft" / "db.sqlite").exists()  # the store is not in SQLite
    assert _store_rows(pg, "hospital_store") > 5  # PySyft made its tables in PostgreSQL

    from domains import Datasite
    from orchestrator import FederatedJob, load_config

    site = Datasite(data_dir)
    try:
        site.publish(name="chest", synthetic_count=240)
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "pg-site.txt").write_text(site.add_scientist("ds@lab.example"))
        job_file = write_job_toml(tmp_path, "run", [site], [
            "[job]", 'dataset = "chest"', 'model = "small-cnn"', "rounds = 2", "local_epochs = 1",
            "batch_size = 32", "min_sites = 1", "approval_timeout = 60", 'run_dir = "run"',
            "", "[privacy]", "dp = false", "he = false"])
        job = FederatedJob(load_config(job_file))
        assert set(job.submit()["status"]) == {"pending"}
        approve_all([site])
        job.wait_for_approval(timeout=60)
        first = job.run(progress=False)
        assert list(first.history["round"].unique()) == [1, 2] and set(first.history["status"]) == {"ok"}
        before = {"requests": site.requests(), "datasets": site.status().datasets}
        runs = site.audit().query("event == 'execution'")  # run times read from PySyft's PostgreSQL rows
        assert len(runs) >= 2 and all('"time_source": "pysyft-store"' in d for d in runs["details"])
        pid = psutil.Process(int((data_dir / "datasite.pid").read_text().split()[0]))
        environ = "\n".join(f"{k}={v}" for k, v in pid.environ().items())
        assert DB_PASSWORD not in environ and "hospital_store" not in environ
        assert all(DB_PASSWORD not in part for part in pid.cmdline())
    finally:
        site.stop()

    again = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--port", str(free_port()), "--detach")
    assert again.code == 0, again.err  # a restart reads the database from the data directory
    try:
        after = site.status()
        assert after.datasets.equals(before["datasets"])
        requests = site.requests()
        assert requests["id"].tolist() == before["requests"]["id"].tolist()
        assert set(requests["status"]) == {"approved"}
        resumed = FederatedJob(load_config(job_file)).result()  # the approved job's results are there
        assert len(resumed.history) == len(first.history)
    finally:
        site.stop()
    log = (data_dir / "datasite.log").read_text()
    assert "PostgresDBConfig" in log and "***" in log  # PySyft printed its connection string, redacted
    for secret in (DB_PASSWORD, "pg%20pass", "pass%2Fwith"):
        assert secret not in log
    assert (data_dir / "db.password").stat().st_mode & 0o077 == 0


def test_a_database_that_is_down_or_refuses_the_login_is_one_line_at_deploy(pg: Postgres,
                                                                           tmp_path: Path) -> None:
    url = pg.create("other", "right-password", "other_store")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-password\n")
    data_dir = tmp_path / "site"
    refused = _deploy(data_dir, url, wrong, free_port())
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "refused the login of 'other'" in refused.err and "wrong-password" not in refused.err
    assert not data_dir.exists()
    down = _deploy(data_dir, f"postgresql://other@127.0.0.1:{free_port()}/other_store", wrong, free_port())
    assert down.code == 2 and "is not reachable" in down.err and not data_dir.exists()
    missing = _deploy(data_dir, f"postgresql://other@{pg.host}:{pg.port}/nope", wrong, free_port())
    assert missing.code == 2 and missing.err.count("\n") == 1
    inline = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "x", "--port", "1",
                     "--db", f"postgresql://other:secret@{pg.host}:{pg.port}/other_store")
    assert inline.code == 2 and "must not contain the password" in inline.err and "secret" not in inline.err
    os.environ.pop("MEDSYFT_DB_PASSWORD", None)
    nopass = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "x", "--port", "1",
                     "--db", url)
    assert nopass.code == 2 and "MEDSYFT_DB_PASSWORD" in nopass.err and not data_dir.exists()
    # a SQLite datasite is not switched to an empty PostgreSQL store by accident
    sqlite_dir = tmp_path / "sqlite-site"
    assert run_cli("domain", "deploy", "--data-dir", str(sqlite_dir), "--name", "s", "--port",
                   str(free_port()), "--detach").code == 0
    run_cli("domain", "stop", "--data-dir", str(sqlite_dir))
    right = tmp_path / "right"
    right.write_text("right-password\n")
    switch = run_cli("domain", "deploy", "--data-dir", str(sqlite_dir), "--port", str(free_port()),
                     "--db", url, "--db-password-file", str(right), "--detach")
    assert switch.code == 2 and "keeps its PySyft store in SQLite" in switch.err
    assert (sqlite_dir / "syft" / "db.sqlite").exists() and not (sqlite_dir / "db.password").exists()
