"""Load a MedMNIST-style ``.npz``: ``{split}_images`` and ``{split}_labels`` arrays.

This is the layout of every 2D MedMNIST set (and easy to write from any pipeline with
``np.savez``), so it is the quickest way for a hospital to publish a prepared dataset.
Labels of shape ``(N, 1)`` are one class per image; ``(N, K)`` with ``K > 1`` are K 0/1
flags (ChestMNIST's 14 findings).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from domains.formats.harmonize import harmonize_batch
from domains.formats.imageset import ImageSet, publish_error
from domains.formats.medmnist_info import MedMNISTInfo, lookup

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError)


def load_npz(
    path: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: list[str] | None = None,
) -> ImageSet:
    """Read one split of an npz file and check its labels against the schema.

    Args:
        path: the ``.npz`` file.
        split: key prefix, e.g. ``"train"`` reads ``train_images`` and ``train_labels``.
        image_size: square side to resize to; default keep the stored size.
        channels: 1 or 3; default as stored.
        label_names: the schema; default the MedMNIST names for a known file stem, else
            ``class_0`` ... ``class_{K-1}``.

    Raises:
        PublishError: naming the file, for a missing split, a corrupt archive, a count
            mismatch or labels outside the schema.
    """
    images, labels = _read_split(path, split)
    if images.dtype != np.uint8:
        raise publish_error(
            path, f"{split}_images are {images.dtype}, not uint8", "save the images as 8-bit"
        )
    if len(images) == 0:
        raise publish_error(path, f"split {split!r} holds no images", "choose a non-empty split")
    if len(images) != len(labels):
        raise publish_error(
            path,
            f"{len(images)} {split}_images but {len(labels)} {split}_labels",
            "save exactly one label row per image",
        )
    info = lookup(path)
    names, multi_label, out_labels = _labels(path, split, labels, label_names, info)
    return ImageSet(
        images=harmonize_batch(images, str(path), image_size=image_size, channels=channels),
        labels=out_labels,
        label_names=names,
        multi_label=multi_label,
        modality=info.modality if info else "unknown",
        source=f"{path} [{split}]",
    )


def _read_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            want = (f"{split}_images", f"{split}_labels")
            if not all(k in keys for k in want):
                splits = sorted(k.removesuffix("_images") for k in keys if k.endswith("_images"))
                raise publish_error(
                    path,
                    f"no {want[0]}/{want[1]} arrays (splits present: {splits or 'none'})",
                    f"choose one of {splits} or save the file with np.savez",
                )
            return np.asarray(data[want[0]]), np.asarray(data[want[1]])
    except _READ_ERRORS as exc:
        raise publish_error(
            path,
            f"cannot read the npz archive ({type(exc).__name__}: {exc})",
            "the file is truncated or not an npz; copy or download it again",
        ) from exc


def _labels(
    path: Path,
    split: str,
    labels: np.ndarray,
    label_names: list[str] | None,
    known: MedMNISTInfo | None,
) -> tuple[list[str], bool, np.ndarray]:
    if labels.dtype.kind not in "iub" or labels.ndim not in (1, 2):
        raise publish_error(
            path,
            f"{split}_labels must be integer (N,) or (N, K) (got {labels.dtype} {labels.shape})",
            "save class indices or 0/1 flags as integers",
        )
    flags = labels.ndim == 2 and labels.shape[1] > 1
    names = list(label_names) if label_names else list(known.label_names) if known else None
    if flags or (known is not None and known.multi_label):
        return _multi_label(path, split, labels.reshape(len(labels), -1), names)
    return _multi_class(path, split, labels.reshape(-1).astype(np.int64), names)


def _multi_label(
    path: Path, split: str, labels: np.ndarray, names: list[str] | None
) -> tuple[list[str], bool, np.ndarray]:
    k = labels.shape[1]
    names = names or [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise publish_error(
            path,
            f"{split}_labels have {k} columns but the schema has {len(names)} names",
            "give one label name per column",
        )
    bad = np.argwhere((labels != 0) & (labels != 1))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise publish_error(
            path,
            f"{split}_labels[{row}, {col}] is {labels[row, col]}, not 0 or 1 "
            f"(multi-label schema {names})",
            "store each label as a 0/1 flag",
        )
    return names, True, labels.astype(np.uint8)


def _multi_class(
    path: Path, split: str, labels: np.ndarray, names: list[str] | None
) -> tuple[list[str], bool, np.ndarray]:
    if names is None:
        k = int(labels.max()) + 1 if labels.size else 1
        names = [f"class_{i}" for i in range(max(k, 1))]
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(bad):
        i = int(bad[0])
        raise publish_error(
            path,
            f"{split}_labels[{i}] is {labels[i]}, outside the schema "
            f"{names} (indices 0..{len(names) - 1})",
            "fix the label or pass label_names with every class",
        )
    return names, False, labels
