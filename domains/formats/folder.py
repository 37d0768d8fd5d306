"""Load a folder of PNG/JPEG images with one subfolder per class (``root/<class>/<image>``).

This is how most hospital exports and Kaggle-style datasets arrive. Every image is fully
decoded (``Image.load()``) before anything is returned, so a truncated file fails the whole
publish instead of surfacing half-way through someone's training run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from domains.formats.harmonize import harmonize, minmax_to_uint8
from domains.formats.imageset import ImageSet, publish_error

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# An RGB export of a grey X-ray: JPEG chroma rounding leaves channels a few levels apart.
_GREY_TOLERANCE = 3


def load_folder(
    path: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: list[str] | None = None,
) -> ImageSet:
    """Read every image under ``path/<class>/`` and label it by its class folder.

    Args:
        path: the root folder; hidden files and folders (``.name``) are ignored.
        split: recorded in ``source`` only; a folder holds one split.
        image_size: square side to resize to; default the most common size.
        channels: 1 or 3; default 3 when any image is colour.
        label_names: the schema; every class folder must be one of these names. Default
            the sorted folder names.

    Raises:
        PublishError: naming the folder or file that is empty, unreadable or outside the
            schema.
    """
    files = _class_files(path, label_names)
    names = list(label_names) if label_names else sorted({cls for cls, _ in files})
    arrays = [read_image(f) for _, f in files]
    labels = np.array([names.index(cls) for cls, _ in files], dtype=np.int64)
    return ImageSet(
        images=harmonize(arrays, [str(f) for _, f in files], image_size=image_size,
                         channels=channels),
        labels=labels,
        label_names=names,
        multi_label=False,
        modality="unknown",
        source=f"{path} [{split}]",
    )


def _class_files(root: Path, label_names: list[str] | None) -> list[tuple[str, Path]]:
    """(class, file) pairs in a stable order: by class folder, then by path."""
    if not root.is_dir():
        raise publish_error(root, "not a folder", "give the folder that holds the class folders")
    pairs: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        if _hidden(entry.name):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            raise publish_error(
                entry, "image outside a class folder", "move it into root/<class>/"
            )
        if not entry.is_dir():
            continue
        if label_names and entry.name not in label_names:
            raise publish_error(
                entry,
                f"class folder {entry.name!r} is not in the label schema {label_names}",
                "rename the folder or add the class to label_names",
            )
        images = [p for p in sorted(entry.rglob("*")) if _is_image(p, entry)]
        if not images:
            raise publish_error(
                entry, "class folder holds no .png/.jpg/.jpeg images", "add images or remove it"
            )
        pairs += [(entry.name, p) for p in images]
    if not pairs:
        raise publish_error(
            root, "no class subfolders with images", "put images in root/<class>/ folders"
        )
    return pairs


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image(p: Path, top: Path) -> bool:
    rel = p.relative_to(top).parts
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(map(_hidden, rel))


def read_image(path: Path) -> np.ndarray:
    """Decode one file to ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8.

    Transparency is composited on black (the background of a radiograph); 16-bit and float
    grey are stretched from their own min to max (see :func:`minmax_to_uint8`); RGB whose
    channels agree is grey, so an RGB export of an X-ray does not make the set colour.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = _to_array(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise publish_error(
            path,
            f"cannot decode image ({type(exc).__name__}: {exc})",
            "the file is truncated or not a PNG/JPEG; export it again",
        ) from exc
    if arr.ndim == 3 and int(np.ptp(arr.astype(np.int16), axis=2).max()) <= _GREY_TOLERANCE:
        arr = arr[..., 1]  # green carries most of the luma; the channels agree anyway
    return arr


def _to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return minmax_to_uint8(np.asarray(im, dtype=np.float64))
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if "A" in im.mode or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)

