"""The datasite's training store: a private local copy of each published dataset.

PySyft reloads and deserializes a whole private asset on every call (~3 MB/s,
see NOTES), which would make every training round pay for its data again. So
publish also keeps the arrays in ``DIR/datasets/NAME.npz`` (0600, inside the
0700 data directory), and approved medsyft training code reads them from there
once per datasite process. The copy never leaves the hospital: it is the same
data the datasite already holds, in a second format. Its SHA-256 fingerprint is
the one recorded in the dataset's public metadata and in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domains.errors import MedsyftDomainError
from domains.site.datadir import DataDir
from privacy.durable import atomic_writer


class StoreError(MedsyftDomainError, LookupError):
    """Raised when a dataset's training copy is missing or does not match what was published."""


@dataclass
class StoredDataset:
    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    multi_label: bool
    fingerprint: str


def fingerprint(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def _path(data_dir: DataDir, name: str) -> Path:
    return data_dir.datasets_dir / f"{name}.npz"


def save(data_dir: DataDir, name: str, *, images: np.ndarray, labels: np.ndarray,
         meta: dict[str, Any]) -> Path:
    """Write the training copy atomically (temp file + rename), owner-only."""
    data_dir.datasets_dir.mkdir(mode=0o700, exist_ok=True)
    with atomic_writer(_path(data_dir, name), mode=0o600) as fh:
        np.savez(fh, images=images, labels=labels, meta=np.array(json.dumps(meta)))
    return _path(data_dir, name)


def load(data_dir: DataDir, name: str) -> StoredDataset:
    path = _path(data_dir, name)
    if not path.exists():
        raise StoreError(f"dataset '{name}' has no training copy on this datasite ({path}); "
                         "publish it with this version of medsyft")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"training copy of '{name}' ({path}) is damaged ({type(exc).__name__}: {exc}); "
                         "restore it from a backup or publish the dataset again") from exc
    digest = fingerprint(images)
    if digest != meta.get("fingerprint_sha256"):
        raise StoreError(f"training copy of '{name}' does not match its published fingerprint; "
                         "publish the dataset again")
    return StoredDataset(images, labels, list(meta["label_names"]), bool(meta["multi_label"]), digest)


def remove(data_dir: DataDir, name: str) -> None:
    _path(data_dir, name).unlink(missing_ok=True)
