"""Fixture builders shared by the format, phantom and mock tests: small files made on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

PNEUMONIAMNIST = Path("/work/shared/data/pneumoniamnist.npz")


def _save_image(path: Path, array: np.ndarray, mode: str | None = None, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save)
    return path


def _save_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    **attrs: Any,
) -> Path:
    """Write an uncompressed Explicit VR Little Endian DICOM with ``pixels`` (uint8/uint16)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    frames = pixels.ndim == 3 and not colour
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def save_image() -> Callable[..., Path]:
    """``save_image(path, array, mode=None, **pillow_save_args)`` writes a PNG/JPEG."""
    return _save_image


@pytest.fixture
def save_dicom() -> Callable[..., Path]:
    """``save_dicom(path, pixels, modality=..., photometric=..., **dicom_attrs)``."""
    return _save_dicom


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
