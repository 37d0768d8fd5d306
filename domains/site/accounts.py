"""Data-scientist accounts on a datasite.

Self sign-up stays disabled (PySyft's default, checked by the tests): the data
owner creates each account, and the password is either generated and shown once
or read from a file the owner controls, never passed on the command line where
``ps`` and shell history would keep it.
"""

from __future__ import annotations

import re
from pathlib import Path

from domains.errors import AccountError
from domains.site.audit import AuditLog, local_actor
from domains.site.connection import admin_client, quiet
from domains.site.datadir import AUDIT_FILE, DataDir, generate_password

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8


def read_password_file(path: Path) -> str:
    """First line of *path*, stripped; refuses short or unreadable files."""
    try:
        password = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise AccountError(
            f"cannot read a password from {path}; put it on the first line of that file"
        ) from exc
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            f"password in {path} is shorter than {MIN_PASSWORD} characters; use a longer one"
        )
    return password


def add_scientist(
    data_dir: DataDir, *, email: str, name: str | None = None, password: str | None = None
) -> str:
    """Create a data-scientist account; returns its password (generated if not given)."""
    if not EMAIL_RE.match(email):
        raise AccountError(f"{email!r} is not an email address; e.g. --email ana@uni.example")
    client = admin_client(data_dir)
    with quiet():
        existing = {u.email for u in client.users}
    if email in existing:
        raise AccountError(f"an account for {email} already exists on this datasite")
    password = password or generate_password()
    from syft.service.user.user_roles import ServiceRole

    with quiet():
        client.users.create(
            email=email, name=name or email.split("@")[0], password=password,
            password_verify=password, role=ServiceRole.DATA_SCIENTIST,
        )
    AuditLog(data_dir.file(AUDIT_FILE)).append(
        "account-created", actor=local_actor(), subject=email, role="data-scientist"
    )
    return password
