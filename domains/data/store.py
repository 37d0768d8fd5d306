"""The datasite's training store: a private local copy of each published dataset.

PySyft reloads and deserializes a whole private asset on every call (~3 MB/s,
see NOTES), which would make every training round pay for its data again. So
publish also keeps the arrays in the data directory (0600 files in the 0700
``DIR/datasets/``), and approved medsyft training code reads them from there
once per datasite process. The copy never leaves the hospital: it is the same
data the datasite already holds, in a second format. Its SHA-256 fingerprint is
the one recorded in the dataset's public metadata and in the audit log.

Layout: ``NAME.images.npy`` and ``NAME.labels.npy`` (plain ``.npy``), and
``NAME.meta.json`` written last. The images are **memory-mapped** read-only on
load: a datasite serving several datasets, or several jobs with different
splits of one, holds no dataset in its own memory between calls; the operating
system's page cache keeps what is in use and drops the rest. Stores written
before 2026-12-02 (one ``NAME.npz``) are still read, into memory as before.

The fingerprint is checked at every load, over the whole file in chunks (no
second copy in memory). After a load, a running datasite reads pages from the
file as it trains: whoever can rewrite the data directory while it runs
already holds the hospital's data.
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

_CHUNK = 1 << 24  # bytes hashed at a time: 16 MiB


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
    """SHA-256 of the images' C-order bytes, hashed in chunks (a memory map is never copied whole).

    >>> fingerprint(np.zeros((2, 1, 2, 2), np.uint8)) == hashlib.sha256(bytes(8)).hexdigest()
    True
    """
    flat = np.ascontiguousarray(images).reshape(-1).view(np.uint8)
    digest = hashlib.sha256()
    for start in range(0, flat.size, _CHUNK):
        digest.update(flat[start:start + _CHUNK].data)  # a buffer over the map, not a copy
    return digest.hexdigest()


def _files(data_dir: DataDir, name: str) -> dict[str, Path]:
    base = data_dir.datasets_dir
    return {part: base / f"{name}.{part}" for part in ("images.npy", "labels.npy", "meta.json")}


def _legacy(data_dir: DataDir, name: str) -> Path:
    return data_dir.datasets_dir / f"{name}.npz"


def save(data_dir: DataDir, name: str, *, images: np.ndarray, labels: np.ndarray,
         meta: dict[str, Any]) -> Path:
    """Write the training copy, each file atomically and owner-only, the metadata last.

    A crash between the files leaves a copy that fails its fingerprint or lacks its metadata:
    named as damaged at load, never used. Returns the images file.
    """
    data_dir.datasets_dir.mkdir(mode=0o700, exist_ok=True)
    files = _files(data_dir, name)
    for part, array in (("images.npy", images), ("labels.npy", labels)):
        with atomic_writer(files[part], mode=0o600) as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    with atomic_writer(files["meta.json"], mode=0o600) as fh:
        fh.write(json.dumps(meta).encode())
    _legacy(data_dir, name).unlink(missing_ok=True)  # an older layout's copy is superseded
    return files["images.npy"]


def load(data_dir: DataDir, name: str) -> StoredDataset:
    """The training copy, images memory-mapped read-only, checked against its fingerprint."""
    files = _files(data_dir, name)
    legacy = _legacy(data_dir, name)
    shown = files["images.npy"]
    try:
        if files["meta.json"].exists() or files["images.npy"].exists():
            meta = json.loads(files["meta.json"].read_text())
            images = np.load(files["images.npy"], mmap_mode="r", allow_pickle=False)
            labels = np.load(files["labels.npy"], allow_pickle=False)
        elif legacy.exists():
            shown = legacy
            with np.load(legacy, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                images, labels = npz["images"], npz["labels"]
        else:
            raise StoreError(f"dataset '{name}' has no training copy on this datasite ({shown}); "
                             "publish it with this version of medsyft")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"training copy of '{name}' ({shown}) is damaged ({type(exc).__name__}: {exc}); "
                         "restore it from a backup or publish the dataset again") from exc
    digest = fingerprint(images)
    if digest != meta.get("fingerprint_sha256"):
        raise StoreError(f"training copy of '{name}' ({shown}) is damaged: it does not match its published "
                         "fingerprint; restore it from a backup or publish the dataset again")
    return StoredDataset(images, labels, list(meta["label_names"]), bool(meta["multi_label"]), digest)


def remove(data_dir: DataDir, name: str) -> None:
    for path in [*_files(data_dir, name).values(), _legacy(data_dir, name)]:
        path.unlink(missing_ok=True)
