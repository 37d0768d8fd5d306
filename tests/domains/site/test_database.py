"""``--db``: the URL is checked before anything starts, and its TLS parameters reach libpq."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from domains.errors import DeployError
from domains.site import database


def test_a_plain_url_is_normalized_and_keeps_no_password() -> None:
    assert database.parse("postgres://hospital@db:5432/store") == "postgresql://hospital@db:5432/store"
    with pytest.raises(DeployError, match="must not contain the password"):
        database.parse("postgresql://hospital:secret@db/store")
    with pytest.raises(DeployError, match="needs a user, a host and a database"):
        database.parse("postgresql://db:5432/store")
    with pytest.raises(DeployError, match="takes a postgresql:// URL"):
        database.parse("mysql://hospital@db/store")


def test_tls_parameters_are_checked_and_made_absolute(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_text("PEM")
    monkeypatch.chdir(tmp_path)
    url = database.parse("postgresql://h@db.hospital.org/store?sslmode=verify-full&sslrootcert=ca.crt")
    ca = str(tmp_path / "ca.crt")
    assert url == f"postgresql://h@db.hospital.org/store?sslmode=verify-full&sslrootcert={ca}"
    assert database.tls_environment(url) == {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": ca}
    assert database.connect_arguments(url, "pw", timeout=3)["sslrootcert"] == ca
    assert database.unverified_warning(url) is None
    wrong = {"?sslmode=sometimes": "is not one of", "?sslmode=verify-ca": "needs the CA",
             "?sslrootcert=missing.crt": "is not a file", "?options=-c": "takes only sslmode"}
    for query, problem in wrong.items():
        with pytest.raises(DeployError, match=problem):
            database.parse(f"postgresql://h@db/store{query}")


def test_a_database_off_this_host_without_verified_tls_is_warned_about() -> None:
    assert database.unverified_warning("postgresql://h@127.0.0.1:5432/store") is None
    assert database.unverified_warning("postgresql://h@localhost/store") is None
    warning = database.unverified_warning("postgresql://h@db/store?sslmode=require")
    assert warning is not None and "sslmode=verify-full" in warning and warning.count("\n") == 0


def test_the_password_is_redacted_raw_and_in_urls() -> None:
    out = io.StringIO()
    stream = database.Redacting(out, ["s3cret"])
    stream.write("postgresql://u:anything@db/x and s3cret\n")
    assert out.getvalue() == "postgresql://u:***@db/x and ***\n"
