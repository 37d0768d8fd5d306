"""Load a MedMNIST-style ``.npz``: ``{split}_images`` and ``{split}_labels`` arrays.

This is the layout of every 2D MedMNIST set (and easy to write from any pipeline with
``np.savez``), so it is the quickest way for a hospital to publish a prepared dataset.
Labels of shape ``(N, 1)`` are one class per image; ``(N, K)`` with ``K > 1`` are K 0/1
flags (ChestMNIST's 14 findings).

An npz is a zip archive, and ``np.load`` expands whatever its members claim. So the
archive is read here directly: the sizes its central directory declares and the shape
in each ``.npy`` header are checked against :class:`SourceLimits` before a single array
byte is expanded (see :func:`_check_archive` and :func:`_read_member`).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from domains.data.formats.harmonize import harmonize_batch
from domains.data.formats.imageset import ImageSet, publish_error
from domains.data.formats.labels import LabelNames, class_indices, schema
from domains.data.formats.limits import RATIO_FLOOR_BYTES, SourceLimits, check_pixels, format_size
from domains.data.formats.medmnist_info import MedMNISTInfo, lookup
from domains.errors import PublishError

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError)


def load_npz(
    path: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: LabelNames | None = None,
    limits: SourceLimits | None = None,
) -> ImageSet:
    """Read one split of an npz file and check its labels against the schema.

    Args:
        path: the ``.npz`` file.
        split: key prefix, e.g. ``"train"`` reads ``train_images`` and ``train_labels``.
        image_size: square side to resize to; default keep the stored size.
        channels: 1 or 3; default as stored.
        label_names: the schema (names in index order, or a value-to-name mapping); default
            the MedMNIST names for a known file stem, else ``class_0`` ... ``class_{K-1}``
            when the labels are exactly ``0..K-1``.
        limits: what the archive may declare; default :class:`SourceLimits`.

    Raises:
        PublishError: naming the file, for a missing split, a corrupt archive, an archive
            that would expand past ``limits``, a count mismatch or labels outside the schema.
    """
    images, labels = _read_split(path, split, limits or SourceLimits())
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


def _read_split(path: Path, split: str, limits: SourceLimits) -> tuple[np.ndarray, np.ndarray]:
    want = (f"{split}_images", f"{split}_labels")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
            _check_archive(path, archive.infolist(), limits)
            if not all(k in members for k in want):
                splits = sorted(k.removesuffix("_images") for k in members if k.endswith("_images"))
                raise publish_error(
                    path,
                    f"no {want[0]}/{want[1]} arrays (splits present: {splits or 'none'})",
                    f"choose one of {splits} or save the file with np.savez",
                )
            images = _read_member(archive, members[want[0]], path, limits, image=True)
            return images, _read_member(archive, members[want[1]], path, limits, image=False)
    except PublishError:
        raise
    except _READ_ERRORS as exc:
        raise publish_error(
            path,
            f"cannot read the npz archive ({type(exc).__name__}: {exc})",
            "the file is truncated or not an npz; copy or download it again",
        ) from exc


def _check_archive(path: Path, infos: list[zipfile.ZipInfo], limits: SourceLimits) -> None:
    """Refuse, from the central directory alone, an archive that would expand past the limits."""
    total = sum(i.file_size for i in infos)
    if total > limits.max_npz_bytes:
        raise publish_error(
            path,
            f"the archive declares {format_size(total)} of arrays, above the limit of "
            f"{format_size(limits.max_npz_bytes)}; refused before expanding anything",
            "if the file is genuine, publish one split per file or raise --max-npz-bytes",
        )
    for info in infos:
        if info.file_size > limits.max_npz_member_bytes:
            raise publish_error(
                path,
                f"member {info.filename} declares {format_size(info.file_size)}, above the "
                f"limit of {format_size(limits.max_npz_member_bytes)}; refused before expanding it",
                "if the file is genuine, raise --max-npz-member-bytes",
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > limits.max_npz_ratio:
            raise publish_error(
                path,
                f"member {info.filename} expands {ratio:.0f}x ({format_size(info.compress_size)} to "
                f"{format_size(info.file_size)}), above the limit of {limits.max_npz_ratio:g}x: "
                "a zip bomb, or near-constant data; refused before expanding it",
                "if the file is genuine, raise --max-npz-ratio",
            )


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limits: SourceLimits, *, image: bool
) -> np.ndarray:
    """Check the ``.npy`` header's shape against the member's declared size, then read it.

    numpy allocates the whole array the header declares before reading any data, so a
    header that claims more than the member holds is refused here, not allocated.
    """
    with archive.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(fp)
        offset = fp.tell()
    if dtype.hasobject:
        raise publish_error(
            path, f"{info.filename} holds Python objects, which are never loaded",
            "save plain numeric arrays with np.savez",
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes > info.file_size:
        raise publish_error(
            path,
            f"{info.filename} declares a {shape} {dtype} array ({format_size(nbytes)}) but holds "
            f"only {format_size(info.file_size - offset)}",
            "the file is corrupt or crafted; export it again with np.savez",
        )
    if image and len(shape) >= 3:
        check_pixels(int(shape[1]), int(shape[2]), limits, f"{path} ({info.filename})")
    with archive.open(info) as fp:
        return np.asarray(np.lib.format.read_array(fp, allow_pickle=False))


def _labels(
    path: Path,
    split: str,
    labels: np.ndarray,
    label_names: LabelNames | None,
    known: MedMNISTInfo | None,
) -> tuple[list[str], bool, np.ndarray]:
    if labels.dtype.kind not in "iub" or labels.ndim not in (1, 2):
        raise publish_error(
            path,
            f"{split}_labels must be integer (N,) or (N, K) (got {labels.dtype} {labels.shape})",
            "save class indices or 0/1 flags as integers",
        )
    flags = labels.ndim == 2 and labels.shape[1] > 1
    names = label_names if label_names else list(known.label_names) if known else None
    if flags or (known is not None and known.multi_label):
        if isinstance(names, Mapping):
            raise publish_error(
                path,
                f"{split}_labels are 0/1 flags, one column per label; a VALUE:NAME mapping "
                "names class values",
                "give one name per column in order, e.g. --label-names a,b,c",
            )
        return _multi_label(path, split, labels.reshape(len(labels), -1), names)
    return _multi_class(path, split, labels.reshape(-1).astype(np.int64), names)


def _multi_label(
    path: Path, split: str, labels: np.ndarray, label_names: LabelNames | None
) -> tuple[list[str], bool, np.ndarray]:
    k = labels.shape[1]
    names = schema(label_names) if label_names else [f"class_{i}" for i in range(k)]
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
    path: Path, split: str, labels: np.ndarray, label_names: LabelNames | None
) -> tuple[list[str], bool, np.ndarray]:
    """Class indices under the schema; the distinct values are few, so look each up once."""
    values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    texts = [str(int(v)) for v in values]
    first_row = dict(zip(texts, (int(i) for i in first), strict=True))

    def subject(value: str) -> tuple[Path, str]:
        return path, f"label {value} ({split}_labels[{first_row[value]}])"

    names, index = class_indices(texts, label_names, subject, by_name=False,
                                 default_name=lambda i: f"class_{i}")
    lookup = np.array([index[t] for t in texts], dtype=np.int64)
    return names, False, lookup[inverse.reshape(-1)]
