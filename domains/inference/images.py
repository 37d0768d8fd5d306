"""Images to predict on: PNG, JPEG or DICOM files (or folders of them), decoded as publish decodes them.

Decoding is publish's own (``domains.data.formats.folder.read_image`` and ``dicom.read_dicom``: 16-bit
stretching, DICOM rescale, VOI window and MONOCHROME1), and so is the preprocessing to the model's
input (:func:`domains.data.formats.preprocess_image`), so a model sees a hospital's new image as it saw
the published ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from domains.errors import InferenceError, PublishError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


def image_files(paths: list[str | Path]) -> list[Path]:
    """Every image a list of files and folders names: folders are searched recursively (hidden
    entries skipped) for PNG, JPEG and DICOM files, files are taken whatever their name."""
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            out += sorted(f for f in _walk(path) if _is_image(f))
        elif path.exists():
            out.append(path)
        else:
            raise InferenceError(f"--images {path} does not exist; give image files or a folder of them")
    if not out:
        raise InferenceError(f"no PNG, JPEG or DICOM files under {', '.join(map(str, paths))}; give image "
                             "files or a folder of them")
    return out


def _walk(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES or _has_dicom_magic(path)


def _has_dicom_magic(path: Path) -> bool:
    """A DICOM Part 10 file, whatever its name: 128 bytes of preamble, then ``DICM``."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_for_model(path: Path, *, image_size: int, channels: int) -> np.ndarray:
    """One file as the model's input ``(C, image_size, image_size)`` uint8; InferenceError names it."""
    from domains.data.formats import preprocess_image
    from domains.data.formats.dicom import read_dicom
    from domains.data.formats.folder import read_image

    try:
        if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_magic(path):
            image, _ = read_dicom(path)
        else:
            image = read_image(path)
        return preprocess_image(image, str(path), size=(image_size, image_size), channels=channels)
    except PublishError as exc:
        raise InferenceError(str(exc)) from exc
