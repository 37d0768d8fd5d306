"""A real PostgreSQL server for tests: ``initdb`` in a temporary directory, on a free port.

PostgreSQL refuses to run as root, so under root the cluster belongs to an unprivileged user
(``medsyft-pg``, created once with ``useradd``). The binaries are found on PATH or under
``/usr/lib/postgresql/*/bin``, never at one hard-coded path. Where no server can be made the
caller skips, except under ``CI=true``, where it fails, so that CI always runs the test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import free_port

PG_USER = "medsyft-pg"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    superuser_password: str
    bin_dir: Path

    def superuser(self, database: str) -> Any:
        """A superuser connection to *database* (TLS, unverified, when the server asks for it)."""
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user="postgres",
                                password=self.superuser_password, dbname=database, sslmode="prefer")

    def create(self, user: str, password: str, database: str) -> str:
        """A login role owning a new database; returns ``postgresql://USER@HOST:PORT/DB``."""
        conn = self.superuser("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD %s", (password,))
            cur.execute(f"CREATE DATABASE \"{database}\" OWNER \"{user}\"")
        conn.close()
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed under CI=true: {why}")
    pytest.skip(why)


def _bin_dir() -> Path | None:
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(versions[0]).parent if versions else None


def _runner() -> tuple[list[str], int | None]:
    """The command prefix that runs a PostgreSQL binary as a user it accepts, and that user's uid."""
    if os.geteuid() != 0:
        return [], None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", PG_USER], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(PG_USER)
    return ["runuser", "-u", PG_USER, "--"], entry.pw_uid


_TLS_ONLY_HBA = """\
local all all scram-sha-256
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 0.0.0.0/0 reject
"""


@contextmanager
def postgres_server(tls: tuple[bytes, bytes] | None = None) -> Iterator[Postgres]:
    """A server on 127.0.0.1; with *tls* (certificate and key PEM) it accepts only TLS connections."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql")
        return
    prefix, uid = _runner()
    root = Path(tempfile.mkdtemp(prefix="medsyft-pg-"))
    if uid is not None:
        os.chown(root, uid, -1)
    data, sock = root / "data", root / "sock"
    password = "pg-superuser-" + os.urandom(8).hex()
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if uid is not None:
        os.chown(pwfile, uid, -1)
    port = free_port()
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        sock.mkdir()
        if uid is not None:
            os.chown(sock, uid, -1)
        options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
        if tls is not None:
            for name, pem in zip(("server.crt", "server.key"), tls, strict=True):
                (data / name).write_bytes(pem)
                (data / name).chmod(0o600)
                if uid is not None:
                    os.chown(data / name, uid, -1)
            (data / "pg_hba.conf").write_text(_TLS_ONLY_HBA)
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                        "-l", str(root / "log"), "-o", options, "start"],
                       check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"cannot start PostgreSQL ({exc})")
        return
    try:
        yield Postgres("127.0.0.1", port, password, bin_dir)
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
