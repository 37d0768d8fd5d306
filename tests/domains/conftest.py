"""Fixture builders shared by the format, phantom and mock tests: small files made on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import support

PNEUMONIAMNIST = support.PNEUMONIA_NPZ


@pytest.fixture
def save_image() -> Callable[..., Path]:
    """``save_image(path, array, mode=None, **pillow_save_args)`` writes a PNG/JPEG."""
    return support.save_image


@pytest.fixture
def save_dicom() -> Callable[..., Path]:
    """``save_dicom(path, pixels, modality=..., photometric=..., **dicom_attrs)``."""
    return support.write_dicom


@pytest.fixture
def write_labels() -> Callable[[Path, list[tuple[str, str]]], Path]:
    """``write_labels(folder, rows)`` writes ``folder/labels.csv`` with header ``file,label``."""

    def write(folder: Path, rows: list[tuple[str, str]]) -> Path:
        text = "file,label\n" + "".join(f"{f},{label}\n" for f, label in rows)
        (folder / "labels.csv").write_text(text)
        return folder / "labels.csv"

    return write


@pytest.fixture
def pneumoniamnist() -> Path:
    """The real PneumoniaMNIST copy, or a skip when this machine does not have it."""
    if not PNEUMONIAMNIST.is_file():
        pytest.skip(f"{PNEUMONIAMNIST} is not on this machine (optional real-data check)")
    return PNEUMONIAMNIST


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
