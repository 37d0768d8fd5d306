"""PySyft's store in a PostgreSQL server that accepts only TLS (``--db ...?sslmode=verify-full``).

The server's certificate comes from a federation CA (``privacy.pki``); its ``pg_hba.conf`` rejects
every connection without TLS. A datasite deployed with the CA reaches it, and every connection it
holds is encrypted (``pg_stat_ssl``). Without TLS, with another CA's certificate, or by a name the
certificate does not carry, deploy is one line and the data directory is not made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_server import Postgres, postgres_server
from support import CliResult, free_port, run_cli

from privacy import pki

pytestmark = pytest.mark.slow

PASSWORD = "tls-only-password"


def _ca(folder: Path, name: str) -> tuple[Any, Any, Path]:
    key, cert = pki.new_ca(name, days=60)
    folder.mkdir(parents=True, exist_ok=True)
    pki.write_cert(folder / "ca.crt", cert)
    return key, cert, folder / "ca.crt"


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, Path, Path]]:
    root = tmp_path_factory.mktemp("pg-tls")
    ca_key, ca_cert, ca_file = _ca(root / "federation", "medsyft test federation")
    key, cert = pki.issue(ca_key, ca_cert, common_name="hospital-db", hosts=("127.0.0.1",), server=True,
                          client=False, days=30)
    pki.write_key(root / "server.key", key)
    pki.write_cert(root / "server.crt", cert)
    _, _, other_ca = _ca(root / "other", "another federation")
    with postgres_server(tls=((root / "server.crt").read_bytes(), (root / "server.key").read_bytes())) as pg:
        yield pg, ca_file, other_ca


def _deploy(data_dir: Path, url: str, password_file: Path) -> CliResult:
    return run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "tls-db-site", "--port",
                   str(free_port()), "--db", url, "--db-password-file", str(password_file), "--detach")


def _account(pg: Postgres, tmp_path: Path, user: str) -> tuple[str, Path]:
    """A role owning a new database, and a file with its password."""
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    return pg.create(user, PASSWORD, f"{user}_store"), password_file


def _ssl_of_connections(pg: Postgres, user: str) -> list[bool]:
    conn = pg.superuser("postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid "
                    "WHERE a.usename = %s", (user,))
        rows = [bool(r[0]) for r in cur.fetchall()]
    conn.close()
    return rows


def test_a_datasite_reaches_a_tls_only_database_with_the_federation_ca(tls_pg: tuple[Postgres, Path, Path],
                                                                       tmp_path: Path) -> None:
    pg, ca_file, _ = tls_pg
    url, password_file = _account(pg, tmp_path, "hospital")
    data_dir = tmp_path / "site"
    up = _deploy(data_dir, f"{url}?sslmode=verify-full&sslrootcert={ca_file}", password_file)
    assert up.code == 0, up.err
    try:
        assert "sslmode=verify-full" in up.out and "WARNING" not in up.out
        status = run_cli("domain", "status", "--data-dir", str(data_dir))
        assert status.code == 0, status.err
        connections = _ssl_of_connections(pg, "hospital")
        assert connections and all(connections)  # PySyft's engine holds only encrypted connections
    finally:
        run_cli("domain", "stop", "--data-dir", str(data_dir))
    again = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--port", str(free_port()), "--detach")
    assert again.code == 0, again.err  # a restart reads the TLS parameters from the data directory
    run_cli("domain", "stop", "--data-dir", str(data_dir))


def test_a_database_reached_without_the_right_tls_is_one_line_at_deploy(tls_pg: tuple[Postgres, Path, Path],
                                                                        tmp_path: Path) -> None:
    pg, ca_file, other_ca = tls_pg
    url, password_file = _account(pg, tmp_path, "clinic")
    data_dir = tmp_path / "site"
    cases = {
        "?sslmode=disable": "accepts only TLS connections",
        f"?sslmode=verify-full&sslrootcert={other_ca}": "that sslrootcert did not sign",
    }
    for query, problem in cases.items():
        out = _deploy(data_dir, url + query, password_file)
        assert out.code == 2 and problem in out.err and out.err.count("\n") == 1, out.err
        assert not data_dir.exists()
    by_name = url.replace("127.0.0.1", "localhost") + f"?sslmode=verify-full&sslrootcert={ca_file}"
    out = _deploy(data_dir, by_name, password_file)
    assert out.code == 2 and "not issued for localhost" in out.err, out.err
    assert not data_dir.exists()
