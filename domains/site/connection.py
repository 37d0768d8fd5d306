"""Log in to a running datasite as its admin, using the credentials in its data directory.

A PySyft login costs about a second here (round trips, the server's bcrypt check, the API
download), and one owner command or demo logs in to the same datasite several times (publish,
accounts, review, release). So a process keeps one admin client per running datasite process:
the cache key holds the datasite's pid and start time and the credentials, so a restarted
datasite or a rotated password logs in afresh, never with a stale session.

PySyft's own output is kept out of the owner's terminal by :func:`domains.site.quiet.quiet`
(re-exported here for the modules that already import it from this one).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from domains.errors import DatasiteNotRunning
from domains.shared.tls import syft_login
from domains.site.datadir import DataDir
from domains.site.lifecycle import datasite_identity, metadata
from domains.site.quiet import quiet
from domains.site.tls import admin_context, admin_tls

__all__ = ["admin_client", "forget_clients", "quiet", "require_running"]


def require_running(data_dir: DataDir) -> str:
    """The datasite's URL, or DatasiteNotRunning with the command that starts it."""
    config = data_dir.read_config()
    if metadata(config.url, context=admin_context(data_dir, config)) is None:
        raise DatasiteNotRunning(
            f"datasite '{config.name}' is not running at {config.url}; start it with "
            f"`medsyft domain deploy --data-dir {data_dir.path} --detach`"
        )
    return config.url


_clients: dict[Path, tuple[tuple[Any, ...], Any]] = {}
_clients_lock = threading.Lock()  # guards the two dicts, held only to read or change them
_login_locks: dict[Path, threading.Lock] = {}  # one login at a time per datasite, sites at once


def admin_client(data_dir: DataDir) -> Any:
    """A PySyft client logged in as this datasite's admin (one login per datasite process)."""
    url = require_running(data_dir)
    creds = data_dir.read_credentials()
    key = (datasite_identity(data_dir), url, creds.email, creds.password)
    path = data_dir.path.resolve()
    with _clients_lock:
        login_lock = _login_locks.setdefault(path, threading.Lock())
    with login_lock:
        with _clients_lock:
            cached = _clients.get(path)
        if cached is not None and cached[0] == key and key[0] is not None:
            return cached[1]
        with quiet():
            client = syft_login(url, email=creds.email, password=creds.password, tls=admin_tls(data_dir))
        with _clients_lock:
            _clients[path] = (key, client)  # replaces a restarted datasite's client
        return client


def forget_clients() -> None:
    """Drop every cached admin client (the next call logs in again)."""
    with _clients_lock:
        _clients.clear()
