"""Name-keyed registry of source formats and the one entry point that loads any of them.

``load_source`` is what ``medsyft publish`` calls: it picks the format (or detects it),
checks the options, and returns an :class:`ImageSet` only when every image and label is
valid, so a datasite publishes all of a source or nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from domains.data.formats.dicom import load_dicom
from domains.data.formats.folder import load_folder
from domains.data.formats.harmonize import MIN_SIDE
from domains.data.formats.imageset import ImageSet, publish_error
from domains.data.formats.labels import LabelNames, check_label_names
from domains.data.formats.limits import SourceLimits
from domains.data.formats.npz import load_npz


class Loader(Protocol):
    """Reads one source; raises PublishError naming the file for any bad input.

    A loader must check what a file declares against ``limits`` before decoding it, and
    must not read anything outside ``path`` (see :mod:`domains.data.formats.paths`).
    """

    def __call__(
        self,
        path: Path,
        *,
        split: str = ...,
        image_size: int | None = ...,
        channels: int | None = ...,
        label_names: LabelNames | None = ...,
        limits: SourceLimits | None = ...,
    ) -> ImageSet: ...


FORMATS: dict[str, Loader] = {"npz": load_npz, "folder": load_folder, "dicom": load_dicom}


def register_format(name: str, loader: Loader, *, force: bool = False) -> None:
    """Add a loader under ``name``; replacing an existing one needs ``force=True``.

    Raises:
        ValueError: when ``name`` is taken and ``force`` is false, so that two plug-ins
            cannot silently shadow each other.
    """
    if name in FORMATS and not force:
        raise ValueError(f"format {name!r} is already registered; pass force=True to replace it")
    FORMATS[name] = loader


def detect_format(path: Path) -> str:
    """Guess the format: ``.npz`` file, folder with ``.dcm`` files, or class-folder tree.

    Raises:
        PublishError: when the path is missing or matches none of the formats.
    """
    path = Path(path)
    if not path.exists():
        raise publish_error(path, "no such file or folder", "check the path")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise publish_error(
            path, f"cannot tell the format of a {path.suffix or 'suffix-less'} file",
            f"give a .npz file or a folder, or pass fmt (one of {sorted(FORMATS)})",
        )
    visible = [p for p in path.rglob("*") if not _hidden(p.relative_to(path))]
    if any(p.suffix.lower() == ".dcm" and p.is_file() for p in visible):
        return "dicom"
    if any(p.is_dir() for p in visible):
        return "folder"
    raise publish_error(
        path,
        "folder holds neither .dcm files nor class subfolders",
        "use root/<class>/<image>.png, or .dcm files with labels.csv",
    )


def load_source(
    path: Path,
    *,
    fmt: str | None = None,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: LabelNames | None = None,
    limits: SourceLimits | None = None,
) -> ImageSet:
    """Load and fully validate one source, ready to publish.

    Args:
        path: a ``.npz`` file, a class-folder tree, or a DICOM folder.
        fmt: one of :data:`FORMATS`; default detected from ``path``.
        split: which split of an npz file; recorded in ``source`` for folders.
        image_size: square side every image is resized to; default kept / most common.
        channels: 1 (grey) or 3 (RGB); default from the images.
        label_names: the label schema, names in index order or a mapping from label
            values to names (``{"-1": "uncertain", "0": "normal", "1": "pneumonia"}``);
            default from the source (numeric labels only when they are ``0..K-1``).
        limits: how large images and npz arrays may be; default :class:`SourceLimits`.

    Raises:
        PublishError: one line naming the offending file, the problem and the fix.

    >>> load_source(Path("missing.npz"))
    Traceback (most recent call last):
    ...
    domains.errors.PublishError: missing.npz: no such file or folder; check the path
    """
    path = Path(path)
    _check_options(path, fmt, image_size, channels, label_names)
    name = fmt or detect_format(path)
    return FORMATS[name](
        path, split=split, image_size=image_size, channels=channels, label_names=label_names,
        limits=limits or SourceLimits(),
    )


def _check_options(
    path: Path,
    fmt: str | None,
    image_size: int | None,
    channels: int | None,
    label_names: LabelNames | None,
) -> None:
    if not path.exists():
        raise publish_error(path, "no such file or folder", "check the path")
    if fmt is not None and fmt not in FORMATS:
        raise publish_error(
            path, f"unknown format {fmt!r}", f"use one of {sorted(FORMATS)} or leave it out"
        )
    if image_size is not None and image_size < MIN_SIDE:
        raise publish_error(
            path, f"image_size must be at least {MIN_SIDE} (got {image_size})", "use e.g. 28"
        )
    if channels not in (None, 1, 3):
        raise publish_error(path, f"channels must be 1 or 3 (got {channels})", "use 1 or 3")
    if label_names is not None:
        check_label_names(label_names, path)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)
