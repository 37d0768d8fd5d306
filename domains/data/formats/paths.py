"""Files of a source folder, and only those: nothing a link or a ``labels.csv`` row points at elsewhere.

A data owner publishes the folder they name. A symlink inside it (``normal -> /mnt/pacs``,
``x.png -> ~/.ssh/id_rsa``) or a ``labels.csv`` row such as ``../other-study/x.dcm`` would
publish files from outside it without anyone having chosen them, so every path a loader
reads is resolved and must stay inside the source. Links that stay inside are fine.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Collection
from pathlib import Path, PureWindowsPath

from domains.data.formats.imageset import publish_error

_FIX = "copy the data into the source folder instead of linking to it, or remove the link"


def require_inside(root: Path, path: Path) -> None:
    """Refuse ``path`` when it, or a link on the way to it, resolves outside ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise publish_error(path, f"resolves outside the source folder {root} (to {real})", _FIX)


def source_files(top: Path, root: Path, suffixes: Collection[str]) -> list[Path]:
    """Non-hidden files under ``top`` whose suffix is in ``suffixes``, sorted by path.

    Hidden files and folders (``.name``) are skipped. Linked folders are not descended
    (a link to a parent would loop), but one that leaves ``root`` is refused rather than
    skipped, so a link never makes images disappear or appear silently.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            if (here / d).is_symlink():
                require_inside(root, here / d)
        for name in filenames:
            p = here / name
            if name.startswith(".") or p.suffix.lower() not in suffixes:
                continue
            if p.is_symlink():
                require_inside(root, p)
            if p.is_file():
                found.append(p)
    return sorted(found)


def relative_entry(name: str) -> str | None:
    """A ``labels.csv`` path, normalized (``a/./b.dcm`` -> ``a/b.dcm``); ``None`` if it leaves the folder.

    >>> relative_entry("sub/../img0.dcm"), relative_entry("../x.dcm"), relative_entry("/etc/x.dcm")
    ('img0.dcm', None, None)
    """
    norm = posixpath.normpath(name.replace("\\", "/"))
    if posixpath.isabs(norm) or PureWindowsPath(name).drive or norm == ".." or norm.startswith("../"):
        return None
    return norm
