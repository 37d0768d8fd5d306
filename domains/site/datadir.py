"""The data directory is a datasite's identity (as ``pg_ctl -D`` is a cluster's).

Everything a hospital's datasite owns lives under one folder, so that stopping
and deploying again with the same folder brings back the same datasite: the
same signing key and server id (PySyft derives its blob paths from the id), the
same SQLite store, the same admin, the same audit log.

Layout::

    DIR/medsyft.json        name, host, port, server id (not secret)
    DIR/credentials.json    admin email and password, 0600
    DIR/server.key          PySyft signing key, 0600
    DIR/syft/db.sqlite      PySyft's store
    DIR/syft/tmp/           TMPDIR of the datasite process (PySyft blob storage)
    DIR/audit.jsonl         append-only audit log, HMAC-chained
    DIR/audit.key           the audit chain's HMAC key, 0600
    DIR/audit.head          entry count and last MAC of the audit log (keyed; not secret)
    DIR/audit.lock          lock file held while the audit log is appended to or read
    DIR/datasets/NAME.npz   training copy of each published dataset, 0600
    DIR/jobs/JOB/           execution ledger and results of approved training jobs
    DIR/datasite.pid        pid of a running datasite (line 1) and its start time (line 2)
    DIR/datasite.log        its log
    DIR/tls/server.crt      the datasite's TLS certificate, from its federation kit (HTTPS only)
    DIR/tls/server.key      its key, 0600
    DIR/tls/ca.crt          the federation CA: with mutual TLS, clients must hold a certificate from it
    DIR/db.password         the PostgreSQL password, 0600, when PySyft's store is in PostgreSQL (--db)
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from domains.errors import DataDirError
from privacy.durable import atomic_write

CONFIG_FILE = "medsyft.json"
CREDENTIALS_FILE = "credentials.json"
KEY_FILE = "server.key"
PID_FILE = "datasite.pid"
LOG_FILE = "datasite.log"
AUDIT_FILE = "audit.jsonl"
AUDIT_KEY_FILE = "audit.key"
AUDIT_HEAD_FILE = "audit.head"
AUDIT_LOCK_FILE = "audit.lock"
DB_PASSWORD_FILE = "db.password"  # noqa: S105 - a file name


@dataclass
class DatasiteConfig:
    """What a datasite needs to start again as itself; nothing here is secret."""

    name: str
    host: str
    port: int
    server_uid: str
    tls: bool = False            # serves HTTPS with DIR/tls/server.crt
    client_auth: bool = False    # mutual TLS: refuses clients without a certificate from DIR/tls/ca.crt
    insecure_http: bool = False  # plain HTTP on a non-loopback address, allowed by --insecure-http
    db: str | None = None        # PySyft's store in PostgreSQL: postgresql://USER@HOST:PORT/DB (no password)

    @property
    def url(self) -> str:
        """Where this host's own tools reach the datasite (loopback when it binds every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@dataclass
class Credentials:
    """The datasite's root admin, generated at first deploy."""

    email: str
    password: str


class DataDir:
    """Paths and small file formats inside one datasite's data directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()

    # -- paths --------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def syft_dir(self) -> Path:
        return self.path / "syft"

    @property
    def tls_dir(self) -> Path:
        return self.path / "tls"

    @property
    def tmp_dir(self) -> Path:
        return self.syft_dir / "tmp"

    @property
    def datasets_dir(self) -> Path:
        """The datasite's own training copies of its published datasets (0600 files)."""
        return self.path / "datasets"

    @property
    def jobs_dir(self) -> Path:
        """Per-job execution ledgers and stored results of approved training code."""
        return self.path / "jobs"

    @property
    def db_url(self) -> str:
        """PySyft's store: SQLite in DIR, or the PostgreSQL URL of ``--db`` with its password (a secret)."""
        config = self.read_config() if self.is_initialized else None
        if config is None or not config.db:
            return f"sqlite:///{self.syft_dir / 'db.sqlite'}"
        from urllib.parse import quote, urlsplit

        parts = urlsplit(config.db)
        password = self.db_password()
        netloc = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return f"postgresql://{netloc}{parts.path}"

    def db_password(self) -> str:
        try:
            return self.file(DB_PASSWORD_FILE).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise DataDirError(f"cannot read the database password {self.file(DB_PASSWORD_FILE)}; deploy "
                               "again with --db-password-file FILE (or MEDSYFT_DB_PASSWORD)") from exc

    @property
    def is_initialized(self) -> bool:
        return self.file(CONFIG_FILE).exists()

    # -- checks -------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the directory if needed and prove we can write into it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise DataDirError(
                f"data directory {self.path} is not writable ({exc.strerror}); "
                "choose another --data-dir or fix its permissions"
            ) from exc

    def require_initialized(self) -> None:
        if not self.is_initialized:
            raise DataDirError(
                f"{self.path} is not a medsyft datasite data directory (no {CONFIG_FILE}); "
                "deploy one first with `medsyft domain deploy --data-dir DIR`"
            )

    # -- config -------------------------------------------------------------
    def read_config(self) -> DatasiteConfig:
        self.require_initialized()
        try:
            raw = json.loads(self.file(CONFIG_FILE).read_text())
            return DatasiteConfig(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise DataDirError(
                f"{self.file(CONFIG_FILE)} is unreadable or damaged ({exc})"
            ) from exc

    def write_config(self, config: DatasiteConfig) -> None:
        atomic_write(self.file(CONFIG_FILE), json.dumps(asdict(config), indent=2), mode=0o644)

    # -- secrets ------------------------------------------------------------
    def read_credentials(self) -> Credentials:
        self.require_initialized()
        try:
            return Credentials(**json.loads(self.file(CREDENTIALS_FILE).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise DataDirError(
                f"cannot read admin credentials {self.file(CREDENTIALS_FILE)} ({exc}); "
                "run medsyft as the user that deployed this datasite"
            ) from exc

    def write_credentials(self, creds: Credentials) -> None:
        atomic_write(self.file(CREDENTIALS_FILE), json.dumps(asdict(creds), indent=2), mode=0o600)

    def read_server_key(self) -> str:
        return self.file(KEY_FILE).read_text().strip()

    def write_server_key(self, key: str) -> None:
        atomic_write(self.file(KEY_FILE), key, mode=0o600)

    def write_audit_file(self, name: str, text: str) -> None:
        """The audit log's key or head (:mod:`domains.site.audit`); 0600, the key being secret."""
        if name not in (AUDIT_KEY_FILE, AUDIT_HEAD_FILE):
            raise ValueError(f"{name} is not an audit file")
        atomic_write(self.file(name), text, mode=0o600)


def generate_password() -> str:
    """A 24-character URL-safe password (~143 bits)."""
    return secrets.token_urlsafe(18)
