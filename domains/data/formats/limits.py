"""Ceilings on what a source may make ``publish`` allocate, checked from headers before decoding.

A hostile or broken source can ask for far more memory than it takes on disk: an npz of zeros
expands a thousandfold, a 200-byte PNG header can claim 15000x15000 px. Every loader compares
what a file *declares* (zip central directory, ``.npy`` header, image header, DICOM
Rows x Columns) with these limits first, so such a file is refused in milliseconds, before
anything is expanded or decoded. The defaults admit every MedMNIST file and any radiograph
or mammogram; a data owner with larger genuine data raises them explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from domains.data.formats.imageset import publish_error

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_MAX_PIXELS = 8192 * 8192  # above the largest digital mammograms; below Pillow's 89 Mpx warning
# A member smaller than this is never refused for its compression ratio: a label array of one
# repeated class legitimately compresses several hundredfold and costs nothing to expand.
RATIO_FLOOR_BYTES = 1 * MiB
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}


@dataclass(frozen=True)
class SourceLimits:
    """What one publish may read; each limit names the ``medsyft domain publish`` option that sets it.

    Attributes:
        max_pixels: pixels (height x width) of one image (``--max-pixels``).
        max_npz_bytes: declared uncompressed size of all arrays of an npz (``--max-npz-bytes``).
        max_npz_member_bytes: declared uncompressed size of one array (``--max-npz-member-bytes``).
        max_npz_ratio: uncompressed / compressed size of one array above 1 MiB (``--max-npz-ratio``);
            deflate tops out near 1030x, and only near-constant data gets there.

    Raises:
        PublishError: when a limit is not positive.

    >>> SourceLimits(max_pixels=0)
    Traceback (most recent call last):
    ...
    domains.errors.PublishError: max_pixels: must be positive (got 0); use e.g. 67108864
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_npz_bytes: int = 8 * GiB
    max_npz_member_bytes: int = 4 * GiB
    max_npz_ratio: float = 200.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise publish_error(f.name, f"must be positive (got {value})", f"use e.g. {f.default}")


def check_pixels(height: int, width: int, limits: SourceLimits, where: str | Path) -> None:
    """Refuse an image whose header declares more than ``limits.max_pixels`` pixels."""
    if height * width > limits.max_pixels:
        raise publish_error(
            where,
            f"image is {height}x{width} px ({height * width:,} pixels), above the limit of "
            f"{limits.max_pixels:,} pixels; refused before decoding",
            "downscale it first, or raise --max-pixels if images this large are intended",
        )


def parse_size(text: str) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"4GiB"`` or a plain number (binary units).

    Raises:
        ValueError: for anything else, with a message that shows the accepted forms.

    >>> parse_size("8G"), parse_size("1.5 KiB"), parse_size("100")
    (8589934592, 1536, 100)
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 8G, 512M or 1048576, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(n: int) -> str:
    """``"8.0 GiB"``: sizes in errors read the same way the options take them."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
