"""Load a folder of PNG/JPEG images with one subfolder per class (``root/<class>/<image>``).

This is how most hospital exports and Kaggle-style datasets arrive. Every image is fully
decoded (``Image.load()``) before anything is returned, so a truncated file fails the whole
publish instead of surfacing half-way through someone's training run.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from domains.data.formats.harmonize import harmonize, minmax_to_uint8
from domains.data.formats.imageset import ImageSet, publish_error
from domains.data.formats.labels import LabelNames, class_indices
from domains.data.formats.limits import SourceLimits, check_pixels
from domains.data.formats.paths import require_inside, source_files
from domains.errors import PublishError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# An RGB export of a grey X-ray: JPEG chroma rounding leaves channels a few levels apart.
_GREY_TOLERANCE = 3


def load_folder(
    path: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    label_names: LabelNames | None = None,
    limits: SourceLimits | None = None,
) -> ImageSet:
    """Read every image under ``path/<class>/`` and label it by its class folder.

    Args:
        path: the root folder; hidden files and folders (``.name``) are ignored, and links
            that resolve outside it are refused.
        split: recorded in ``source`` only; a folder holds one split.
        image_size: square side to resize to; default the most common size.
        channels: 1 or 3; default 3 when any image is colour.
        label_names: the schema: names in index order (a class folder is a name or an
            index into them) or a folder-to-name mapping. Default the sorted folder names,
            or ``0..K-1`` when every folder is a number.
        limits: the largest image (pixels) that may be decoded; default :class:`SourceLimits`.

    Raises:
        PublishError: naming the folder or file that is empty, unreadable, too large, a link
            out of the folder, or outside the schema.
    """
    limits = limits or SourceLimits()
    files = _class_files(path)
    folders = list(dict.fromkeys(cls for cls, _ in files))
    names, index = class_indices(
        folders, label_names, lambda cls: (path / cls, f"class folder {cls!r}")
    )
    arrays = [read_image(f, limits) for _, f in files]
    labels = np.array([index[cls] for cls, _ in files], dtype=np.int64)
    return ImageSet(
        images=harmonize(arrays, [str(f) for _, f in files], image_size=image_size,
                         channels=channels),
        labels=labels,
        label_names=names,
        multi_label=False,
        modality="unknown",
        source=f"{path} [{split}]",
    )


def _class_files(root: Path) -> list[tuple[str, Path]]:
    """(class, file) pairs in a stable order: by class folder, then by path."""
    if not root.is_dir():
        raise publish_error(root, "not a folder", "give the folder that holds the class folders")
    pairs: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        if _hidden(entry.name):
            continue
        if entry.is_symlink() and (entry.is_dir() or entry.suffix.lower() in IMAGE_SUFFIXES):
            require_inside(root, entry)  # a linked README is never read, so it may point anywhere
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            raise publish_error(
                entry, "image outside a class folder", "move it into root/<class>/"
            )
        if not entry.is_dir():
            continue
        images = source_files(entry, root, IMAGE_SUFFIXES)
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


def read_image(path: Path, limits: SourceLimits | None = None) -> np.ndarray:
    """Decode one file to ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8.

    The header's size is checked against ``limits.max_pixels`` before decoding. Pillow's
    own decompression-bomb guard (an error from 2x its 89 Mpx default) also becomes a
    one-line error; its warning is silenced because our limit has already decided.

    Transparency is composited on black (the background of a radiograph); 16-bit and float
    grey are stretched from their own min to max (see :func:`minmax_to_uint8`); RGB whose
    channels agree is grey, so an RGB export of an X-ray does not make the set colour.
    """
    limits = limits or SourceLimits()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixels(im.height, im.width, limits, path)
                im.load()
                arr = _to_array(im)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, exc, limits) from exc
    except PublishError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise publish_error(
            path,
            f"cannot decode image ({type(exc).__name__}: {exc})",
            "the file is truncated or not a PNG/JPEG; export it again",
        ) from exc
    if arr.ndim == 3 and int(np.ptp(arr.astype(np.int16), axis=2).max()) <= _GREY_TOLERANCE:
        arr = arr[..., 1]  # green carries most of the luma; the channels agree anyway
    return arr


def _bomb_error(path: Path, exc: Exception, limits: SourceLimits) -> PublishError:
    """Pillow refused the header before we saw it; say so in the terms of our own limit."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow decodes"
    return publish_error(
        path,
        f"image has {size}, above the limit of {limits.max_pixels:,} pixels (Pillow refuses "
        "it as a possible decompression bomb); refused before decoding",
        "downscale it first",
    )


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

