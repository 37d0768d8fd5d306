"""PySyft's store in PostgreSQL (``medsyft domain deploy --db postgresql://USER@HOST:PORT/DB``).

PySyft 0.9.5 keeps its store (users, datasets, code, requests, outputs) in SQLite by default and
takes a ``postgresql://`` URL instead. medsyft's own state stays in the data directory whatever the
store: the ε ledgers, the audit log, the training copies of the datasets, the keys and TLS files.

The password never appears on a command line, in the process's start-up environment or in the log:

- it comes from ``--db-password-file FILE`` or ``MEDSYFT_DB_PASSWORD``;
- a URL that carries one is refused;
- it is kept in ``DIR/db.password`` (0600) for restarts;
- the datasite process reads it from there and gives it to PySyft, then removes it from its
  environment;
- it redacts it from everything it prints, because PySyft prints its connection string, password
  included, at start-up.

:func:`check` connects before the datasite starts, so a database that is down, a refused login or a
missing database is one line at deploy, not a start-up that times out.

TLS to the database is libpq's: ``?sslmode=verify-full&sslrootcert=CA.crt`` (and ``sslcert``/``sslkey``
for a client certificate) on the URL. A database on another host should be reached that way, or
the password and every stored request cross the hospital's network in clear. PySyft 0.9.5 drops a
URL's query, so the datasite process hands these to libpq through its environment (``PGSSLMODE``...),
which every connection PySyft's engine makes reads.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

from domains.errors import DeployError

PASSWORD_ENV = "MEDSYFT_DB_PASSWORD"  # noqa: S105 - the variable's name
_CONNECT_TIMEOUT_S = 5
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq's TLS parameters, and the environment variable each one is also read from
_SSL_PARAMS = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
               "sslkey": "PGSSLKEY"}


def parse(url: str) -> str:
    """The ``--db`` URL, checked: ``postgresql://USER@HOST[:PORT]/DB`` with no password in it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DeployError(f"--db {url!r} is not a URL; write postgresql://USER@HOST:PORT/DB") from exc
    if parts.scheme not in ("postgresql", "postgres"):
        raise DeployError(f"--db takes a postgresql:// URL (got {parts.scheme or 'none'}://); write "
                          "postgresql://USER@HOST:PORT/DB")
    if parts.password is not None:
        raise DeployError("--db must not contain the password: it would be in your shell history and the "
                          f"process list; put it in --db-password-file FILE or {PASSWORD_ENV}")
    database = parts.path.lstrip("/")
    if not parts.username or not parts.hostname or not database or "/" in database:
        raise DeployError(f"--db {url!r} needs a user, a host and a database: postgresql://USER@HOST:PORT/DB")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    query = _tls_params(parts.query)
    tail = f"?{urlencode(query, safe='/')}" if query else ""
    return f"postgresql://{parts.username}@{host}{f':{port}' if port else ''}/{database}{tail}"


def _tls_params(query: str) -> dict[str, str]:
    """The URL's TLS parameters, checked: a known sslmode, files that exist (made absolute)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SSL_PARAMS:
            raise DeployError(f"--db takes only {', '.join(_SSL_PARAMS)} after '?' (got {key!r}); "
                              "write postgresql://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.crt")
        if key == "sslmode" and value not in SSL_MODES:
            raise DeployError(f"--db sslmode={value!r} is not one of {', '.join(SSL_MODES)}; use verify-full "
                              "to check the database's certificate and host name")
        if key != "sslmode":
            path = Path(value).expanduser().resolve()
            if not path.is_file():
                raise DeployError(f"--db {key}={value} is not a file; give the path of the "
                                  f"{'CA certificate' if key == 'sslrootcert' else 'client ' + key[3:]}")
            value = str(path)
        params[key] = value
    if params.get("sslmode", "").startswith("verify") and "sslrootcert" not in params:
        raise DeployError(f"--db sslmode={params['sslmode']} needs the CA that signed the database's "
                          "certificate: add &sslrootcert=CA.crt")
    return params


def unverified_warning(url: str) -> str | None:
    """A warning when *url* names a database off this host that is reached without a verified TLS."""
    from domains.site.tls import is_loopback

    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host) or dict(parse_qsl(parts.query)).get("sslmode", "").startswith("verify"):
        return None
    return (f"WARNING: the database at {host} is reached without a verified TLS connection: unless it is "
            "on a private network (a compose file's), add ?sslmode=verify-full&sslrootcert=CA.crt to --db")


def tls_environment(url: str) -> dict[str, str]:
    """libpq's environment for *url*'s TLS parameters (PySyft drops the URL's query)."""
    return {_SSL_PARAMS[k]: v for k, v in parse_qsl(urlsplit(url).query) if k in _SSL_PARAMS}


def read_password(password_file: str | None) -> str:
    """The password from *password_file*'s first line, else from ``MEDSYFT_DB_PASSWORD``."""
    if password_file:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise DeployError(f"cannot read --db-password-file {password_file} ({exc.strerror}); check "
                              "the path") from exc
        if not lines or not lines[0]:
            raise DeployError(f"--db-password-file {password_file} is empty; put the password on its "
                              "first line")
        return lines[0]
    value = os.environ.get(PASSWORD_ENV)
    if not value:
        raise DeployError(f"--db needs the database password: give --db-password-file FILE or set "
                          f"{PASSWORD_ENV}")
    return value


def connect_arguments(url: str, password: str, *, timeout: float) -> dict[str, Any]:
    """``psycopg2.connect``'s keyword arguments for *url* (its TLS parameters included)."""
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port or 5432, "user": parts.username, "password": password,
            "dbname": parts.path.lstrip("/"), "connect_timeout": int(timeout),
            **{k: v for k, v in parse_qsl(parts.query) if k in _SSL_PARAMS}}


def check(url: str, password: str) -> None:
    """Log in to the database once; :class:`DeployError` in one line if it cannot be used."""
    import psycopg2

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5432}"
    tls = dict(parse_qsl(parts.query))
    try:
        conn = psycopg2.connect(**connect_arguments(url, password, timeout=_CONNECT_TIMEOUT_S))
    except psycopg2.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        low = text.lower()
        if "no encryption" in low and "pg_hba.conf" in low:
            why = ("accepts only TLS connections; add ?sslmode=verify-full&sslrootcert=CA.crt (the CA that "
                   "signed the database's certificate) to --db")
        elif "does not support ssl" in low:
            why = f"does not speak TLS but --db asks for sslmode={tls.get('sslmode')}; turn on ssl in " \
                  "postgresql.conf, or ask the database's administrator"
        elif "certificate verify failed" in low:
            why = "presented a certificate that sslrootcert did not sign; give the CA that signed it"
        elif "does not match host name" in low or "server certificate for" in low:
            why = f"presented a certificate not issued for {parts.hostname}; connect by the name it names"
        elif "password authentication failed" in low or "no password supplied" in low:
            why = f"refused the login of {parts.username!r}; check the password file or {PASSWORD_ENV}"
        elif "does not exist" in low and "database" in low:
            why = f"has no database {parts.path.lstrip('/')!r}; create it (createdb) first"
        elif "does not exist" in low and "role" in low:
            why = f"has no user {parts.username!r}; create it (createuser) first"
        elif "connection refused" in low or "timeout" in low or "could not translate" in low:
            why = "is not reachable; is PostgreSQL running there, and does it listen on that address?"
        else:
            why = f"refused the connection ({text})"
        raise DeployError(f"database at {where} {why}") from exc
    conn.close()


def store_password(data_dir: Any, password: str) -> None:
    from domains.site.datadir import DB_PASSWORD_FILE
    from privacy.durable import atomic_write

    atomic_write(data_dir.file(DB_PASSWORD_FILE), password + "\n", mode=0o600)


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)[^@\n]*(@)")


class Redacting(io.TextIOBase):
    """A text stream that writes to *stream* with every *secret*, and the password of any
    ``postgresql://user:password@`` URL, replaced by ``***``."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self._stream = stream
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def write(self, text: str) -> int:
        text = _URL_PASSWORD.sub(r"\1***\2", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


def fix_pysyft_url_parsing() -> None:
    """Make PySyft read a URL-quoted user name and password as what they are.

    PySyft 0.9.5's ``DBConfig.from_connection_string`` takes them from ``urlparse`` without
    unquoting, and SQLAlchemy quotes them again: any password with a character a URL must quote
    (space, ``/``, ``:``, ``@``, ``%``...) is sent to PostgreSQL double-quoted and refused.
    """
    from urllib.parse import unquote

    from syft.store.db.db import DBConfig
    from syft.store.db.postgres import PostgresDBConfig

    original = DBConfig.__dict__["from_connection_string"].__func__
    if getattr(original, "_medsyft_unquotes", False):
        return

    def from_connection_string(cls: Any, conn_str: str) -> Any:
        config = original(cls, conn_str)
        if isinstance(config, PostgresDBConfig):
            config.user, config.password = unquote(config.user), unquote(config.password)
        return config

    from_connection_string._medsyft_unquotes = True  # type: ignore[attr-defined]
    DBConfig.from_connection_string = classmethod(from_connection_string)


def redact_output(password: str) -> None:
    """Replace ``sys.stdout``/``sys.stderr`` with redacting streams (the password, raw and URL-quoted)."""
    import sys
    from urllib.parse import quote

    secrets = [password, quote(password, safe=""), quote(password), quote(quote(password, safe=""), safe="")]
    sys.stdout = Redacting(sys.stdout, secrets)
    sys.stderr = Redacting(sys.stderr, secrets)
