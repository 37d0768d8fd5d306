"""Load a folder of single-frame DICOM images labelled by a ``labels.csv`` (``file,label``).

DICOM is what a PACS exports, but it carries no diagnosis label, so the hospital supplies
one per file in ``labels.csv`` (paths relative to the folder). Pixel values go through the
chain a viewer applies (rescale slope/intercept, VOI window, MONOCHROME1 inversion) so that
the published uint8 image looks like what a radiologist saw; without a window the image's
own min..max is used.
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from domains.data.formats.harmonize import harmonize, minmax_to_uint8
from domains.data.formats.imageset import ImageSet, publish_error
from domains.data.formats.labels import LabelNames, class_indices
from domains.data.formats.limits import SourceLimits, check_pixels
from domains.data.formats.paths import relative_entry, require_inside, source_files
from domains.errors import PublishError

LABELS_FILE = "labels.csv"

_READ_ERRORS = (
    InvalidDicomError, BytesLengthException, struct.error, OSError, EOFError, ValueError,
    KeyError, AttributeError, TypeError, IndexError, RuntimeError, NotImplementedError,
)  # fmt: skip


def load_dicom(
    path: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: LabelNames | None = None,
    limits: SourceLimits | None = None,
) -> ImageSet:
    """Read every ``.dcm`` under ``path`` with its label from ``path/labels.csv``.

    Args:
        path: the folder; hidden files and folders are ignored.
        split: recorded in ``source`` only.
        image_size: square side to resize to; default the most common size.
        channels: 1 or 3; default 3 when any image is colour.
        label_names: the schema: names in index order (labels in the csv may be these
            names or indices into them) or a value-to-name mapping such as
            ``{"-1": "uncertain", "0": "normal", "1": "pneumonia"}``. Default: the sorted
            distinct labels of the csv, or ``0..K-1`` when they are exactly those numbers.
        limits: the largest image (Rows x Columns) that may be decoded.

    Raises:
        PublishError: naming the file: not DICOM, multi-frame, too large, unreadable pixels,
            a link or ``labels.csv`` row pointing outside the folder, or a ``labels.csv`` row
            that is missing, duplicated, empty or outside the schema.
    """
    limits = limits or SourceLimits()
    files = dicom_files(path)
    names, index = label_indices(path, read_labels_csv(path / LABELS_FILE, files), label_names)
    order = sorted(files)
    decoded = [read_dicom(path / rel, limits) for rel in order]
    modalities = sorted({modality for _, modality in decoded} - {""})
    return ImageSet(
        images=harmonize(
            [arr for arr, _ in decoded],
            [str(path / rel) for rel in order],
            image_size=image_size,
            channels=channels,
        ),
        labels=np.array([index[rel] for rel in order], dtype=np.int64),
        label_names=names,
        multi_label=False,
        modality=", ".join(modalities) or "unknown",
        source=f"{path} [{split}]",
    )


def dicom_files(root: Path) -> set[str]:
    """Paths (relative, ``/``-separated) of the non-hidden ``.dcm`` files under ``root``.

    Raises:
        PublishError: when there are none, or a link among them resolves outside ``root``.
    """
    found = {p.relative_to(root).as_posix() for p in source_files(root, root, {".dcm"})}
    if not found:
        raise publish_error(root, "no .dcm files", "export the images from PACS as DICOM")
    return found


def read_dicom(path: Path, limits: SourceLimits | None = None) -> tuple[np.ndarray, str]:
    """Decode one single-frame DICOM to uint8 ``(H, W)`` or ``(H, W, 3)`` and its Modality.

    pydicom parses elements lazily, so a damaged file can fail at any attribute access;
    every such failure is reported against the file rather than as a traceback. Rows x
    Columns is checked against ``limits.max_pixels`` before the pixel data is decoded.
    """
    try:
        ds = pydicom.dcmread(path)  # no force: a renamed text file must fail here
    except _READ_ERRORS as exc:
        raise publish_error(
            path,
            f"not a readable DICOM file ({type(exc).__name__}: {exc})",
            "export it again from PACS or remove it and its labels.csv row",
        ) from exc
    try:
        return _decode(ds, path, limits or SourceLimits())
    except PublishError:
        raise
    except _READ_ERRORS as exc:
        raise publish_error(
            path,
            f"cannot decode the image ({type(exc).__name__}: {exc})",
            "export it again uncompressed, or install the pydicom decoder plugin it needs",
        ) from exc


def _decode(ds: pydicom.Dataset, path: Path, limits: SourceLimits) -> tuple[np.ndarray, str]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise publish_error(
            path, f"multi-frame DICOM ({frames} frames)", "export single 2D images only"
        )
    check_pixels(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), limits, path)
    pixels = np.asarray(ds.pixel_array)
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    if pixels.ndim != (3 if colour else 2):
        raise publish_error(
            path, f"pixel data is {pixels.ndim}D {pixels.shape}", "export single 2D images only"
        )
    arr = _colour_to_uint8(pixels) if colour else _grey_to_uint8(ds, pixels, path)
    return arr, str(ds.get("Modality", "") or "")


def _colour_to_uint8(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype == np.uint8 else minmax_to_uint8(pixels)


def _grey_to_uint8(ds: pydicom.Dataset, pixels: np.ndarray, path: Path) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = pixels.astype(np.float64) * slope + intercept
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None:
        if width < 1:
            raise publish_error(
                path, f"WindowWidth is {width}, below 1", "fix the VOI window or remove it"
            )
        # Linear VOI function of DICOM PS3.3 C.11.2.1.2.1.
        out = np.clip((values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5, 0.0, 1.0) * 255.0
        arr = np.rint(out).astype(np.uint8)
    else:
        arr = minmax_to_uint8(values)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = 255 - arr  # MONOCHROME1 stores bone dark; show it bright like MONOCHROME2
    return arr


def _first(value: object) -> float | None:
    """Window values may be multi-valued (several presets); the first is the default."""
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes) or not hasattr(value, "__getitem__"):
        return float(value)  # type: ignore[arg-type]
    return float(value[0]) if len(value) else None  # type: ignore[arg-type, index]


def read_labels_csv(csv_path: Path, files: set[str]) -> dict[str, str]:
    """Map each ``.dcm`` (relative path) to its raw label, refusing any inconsistency.

    Every row must name an existing ``.dcm`` inside the folder and every ``.dcm`` must have
    exactly one row: a silently unlabelled or doubly labelled image would change the
    published class counts.
    """
    if csv_path.is_symlink():
        require_inside(csv_path.parent, csv_path)
    if not csv_path.is_file():
        raise publish_error(
            csv_path, "missing", "write a labels.csv with header 'file,label' and one row per .dcm"
        )
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise publish_error(
            csv_path, f"not a UTF-8 CSV file ({exc})", "save it as UTF-8 CSV with 'file,label'"
        ) from exc
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header[:2] != ["file", "label"]:
        raise publish_error(
            csv_path, f"header is {rows[0] if rows else 'empty'}", "start it with 'file,label'"
        )
    raw: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        name = row[0].strip().replace("\\", "/") if row else ""
        label = row[1].strip() if len(row) > 1 else ""
        where = f"{csv_path}:{line} ({name or 'no file'})"
        inside = relative_entry(name) if name else name
        if inside is None:
            raise publish_error(
                where, f"{name} points outside the source folder",
                "name each file by its path relative to the folder that holds labels.csv",
            )
        name = inside
        if name in raw:
            raise publish_error(where, f"{name} is listed twice", "keep one row per file")
        if not label:
            raise publish_error(where, f"empty label for {name}", "give every file a label")
        if name not in files:
            raise publish_error(
                csv_path.parent / name,
                f"named in {csv_path.name} line {line} but no such .dcm file exists",
                "fix the path (relative to the folder) or remove the row",
            )
        raw[name] = label
    unlabelled = sorted(files - raw.keys())
    if unlabelled:
        raise publish_error(
            csv_path.parent / unlabelled[0],
            f"has no row in {csv_path.name} ({len(unlabelled)} unlabelled .dcm files)",
            "add a 'file,label' row for it or move it out of the folder",
        )
    return raw


def label_indices(
    root: Path, raw: dict[str, str], label_names: LabelNames | None
) -> tuple[list[str], dict[str, int]]:
    """The schema and each file's class index; labels may be names, indices or mapped values."""
    first = {label: rel for rel, label in sorted(raw.items(), reverse=True)}  # first file, by path
    names, by_label = class_indices(
        sorted(set(raw.values())), label_names, lambda v: (root / first[v], f"label {v!r}")
    )
    return names, {rel: by_label[label] for rel, label in raw.items()}
