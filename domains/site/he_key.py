"""The hospital's share of the key ceremony: installing and loading its HE secret context.

``medsyft domain deploy --he-key FILE`` copies the secret context from ``medsyft keys init``
into the data directory (``he-secret.medsyftkey``, 0600), so a restart keeps it and nothing
outside the directory is needed. Approved code loads it once per datasite process; a job
made for another key id is refused before any data is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from domains.errors import HEKeyError
from domains.site.datadir import DataDir
from privacy.durable import atomic_write
from privacy.errors import HEError

HE_KEY_FILE = "he-secret.medsyftkey"

_CACHE: dict[str, Any] = {}


def check(source: str | os.PathLike[str]) -> str:
    """Validate a hospital secret context file before anything starts; returns its key id."""
    from privacy.he import load_context

    try:
        context = load_context(source)
    except HEError as exc:
        raise HEKeyError(str(exc)) from exc
    if not context.has_secret:
        raise HEKeyError(
            f"{source} holds no secret key (it is the orchestrator's public context); pass the "
            "hospital-secret.medsyftkey file from `medsyft keys init`"
        )
    return str(context.key_id)


def install(data_dir: DataDir, source: str | os.PathLike[str]) -> str:
    """Copy a hospital secret context into *data_dir*; returns its key id."""
    key = check(source)
    target = data_dir.file(HE_KEY_FILE)
    atomic_write(target, Path(source).read_bytes(), mode=0o600)
    _CACHE.pop(str(target), None)
    return key


def key_id(data_dir: DataDir) -> str | None:
    """The installed key's id, or None when this datasite has no HE key."""
    path = data_dir.file(HE_KEY_FILE)
    return load(data_dir).key_id if path.exists() else None


def load(data_dir: DataDir, *, expect: str | None = None) -> Any:
    """The datasite's secret context (cached per process); *expect* checks the key id."""
    from privacy.he import load_context

    path = data_dir.file(HE_KEY_FILE)
    if str(path) not in _CACHE:
        if not path.exists():
            raise HEKeyError(
                "this datasite holds no HE key; its IT must deploy it with "
                "`medsyft domain deploy --he-key hospital-secret.medsyftkey`"
            )
        try:
            _CACHE[str(path)] = load_context(path)
        except HEError as exc:
            raise HEKeyError(f"{path}: {exc}") from exc
    context = _CACHE[str(path)]
    if expect is not None and context.key_id != expect:
        raise HEKeyError(
            f"the job was encrypted for key {expect[:8]} but this datasite holds key "
            f"{context.key_id[:8]}; run the job with the federation's public key "
            "(or deploy this datasite with the federation's --he-key)"
        )
    return context

