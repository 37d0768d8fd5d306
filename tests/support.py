"""Helpers shared by all tests: free ports, CLI runners, real datasites, tiny source files.

Not a conftest: test modules import these by name (``from support import ...``), and
``pyproject.toml`` puts ``tests/`` on pytest's ``pythonpath`` so that works from any folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domains.site.lifecycle import free_ports

REPO = Path(__file__).resolve().parent.parent
# The PneumoniaMNIST copy beside the checkout (never committed); tests that need it skip without it.
_NPZ_CANDIDATES = [
    Path(os.environ.get("MEDSYFT_PNEUMONIAMNIST", "/nonexistent")),
    REPO.parent / "shared" / "data" / "pneumoniamnist.npz",
    Path("/work/shared/data/pneumoniamnist.npz"),
]
PNEUMONIA_NPZ = next((p for p in _NPZ_CANDIDATES if p.is_file()), _NPZ_CANDIDATES[1])


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Run ``medsyft ARGS`` in this process (same code path as the console script)."""
    from medsyft.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> CliResult:
    """Run the installed ``medsyft`` console script as a user would (*env* adds variables)."""
    exe = Path(sys.executable).parent / "medsyft"
    proc = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def deploy_site(data_dir: Path, name: str, port: int | None = None, *, he_key: Path | None = None,
                site_keys: Path | None = None) -> Any:
    from domains import Datasite
    return Datasite.deploy(data_dir, name=name, port=port or free_port(), he_key_file=he_key,
                           site_keys_file=site_keys)


@dataclass
class Scientist:
    email: str
    password: str
    client: Any


def deploy_sites(root: Path, names: tuple[str, ...], **keys: Any) -> list[Any]:
    """One datasite per name under ``root/NAME``, deployed in parallel on free 127.0.0.1 ports;
    *keys* (``he_key=``, ``site_keys=``) go to every :func:`deploy_site`."""
    from concurrent.futures import ThreadPoolExecutor

    ports = free_ports(len(names))
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda n, p: deploy_site(root / n, n, p, **keys), names, ports))


def login(url: str, email: str, password: str) -> Any:
    from domains.site.connection import quiet

    with quiet():
        import syft as sy

        return sy.login(url=url, email=email, password=password)


# -- source data builders (tiny, written on the fly) ---------------------------------
def write_png_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], *, mode: str = "L") -> Path:
    """``root/<class>/<i>.png`` with one random image per size listed under each class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(shapes):
            channels = (h, w, 3) if mode == "RGB" else (h, w)
            pixels = rng.integers(0, 256, channels, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / cls / f"{i}.png")
    return root


def save_image(path: Path, array: np.ndarray, mode: str | None = None, **save: Any) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save)
    return path


def write_dicom(
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



def write_dicom_folder(root: Path, labels: list[str], *, size: int = 32) -> Path:
    """``root/img<i>.dcm`` plus ``labels.csv`` (file,label)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = ["file,label"]
    for i, label in enumerate(labels):
        write_dicom(root / f"img{i}.dcm", rng.integers(0, 4096, (size, size)).astype(np.uint16))
        rows.append(f"img{i}.dcm,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def write_medmnist_npz(path: Path, n: int = 40, *, size: int = 28, multi_label: int = 0) -> Path:
    """A MedMNIST-style npz (train/val/test) with random images; multi-label if K > 0."""
    rng = np.random.default_rng(2)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        if multi_label:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, multi_label), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def write_npz_bomb(path: Path, *, real: int = 1 << 20, declared: int | None = None) -> Path:
    """An npz whose ``train_images`` are ``real`` bytes of zeros, deflated about 1000x.

    With ``declared``, the zip's central directory and the ``.npy`` header claim that many
    bytes instead (a crafted archive: a few KiB on disk that says it expands to, e.g., 64 GiB).
    """
    import zipfile

    side = 64
    claim = declared or real
    shape = (claim // (side * side), side, side)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("train_images.npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array_header_2_0(
                fp, {"descr": "|u1", "fortran_order": False, "shape": shape})
            chunk = bytes(1 << 20)
            for start in range(0, real, len(chunk)):
                fp.write(chunk[: real - start])
        if declared:
            archive.getinfo("train_images.npy").file_size = declared  # written at close()
        labels = io.BytesIO()
        np.save(labels, np.zeros((real // (side * side), 1), np.uint8))
        archive.writestr("train_labels.npy", labels.getvalue())
    return path


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` grey pixels in ~60 bytes (its data is a stub).

    Enough for any reader that checks the header before decoding, which is the point.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(width + 1))) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def owner_images(site: Any, dataset: str | None = None) -> Any:
    """Private images as the owner reads them: one dataset's array, or sha256 per dataset."""
    import hashlib

    from domains.site.connection import admin_client, quiet

    with quiet():
        datasets = admin_client(site.data_dir).datasets
        if dataset is not None:
            return np.asarray(datasets[dataset].assets["images"].data)
        return {
            d.name: hashlib.sha256(np.asarray(d.assets["images"].data).tobytes()).hexdigest()
            for d in datasets
        }


def submit_code(client: Any, source: str, *, dataset: str, function: str, tmp: Path) -> Any:
    """Play the scientist: write *source* to a module (PySyft reads the function's source
    file), bind ``client`` and ``asset`` (*dataset*'s images) in it, and request *function*."""
    import importlib.util

    from domains.site.connection import quiet

    path = tmp / f"scientist_{function}.py"
    path.write_text("import syft as sy\n" + source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with quiet():
        module.client = client  # type: ignore[attr-defined]
        module.asset = client.datasets[dataset].assets["images"]  # type: ignore[attr-defined]
        spec.loader.exec_module(module)
        return client.code.request_code_execution(getattr(module, function))


class Crash(Exception):
    """Stands for the orchestrator process dying between rounds."""


def run_and_crash_after_round_1(job: Any) -> None:
    """Run *job* and 'crash' as soon as its first round is checkpointed."""
    import pytest

    def die(_: Any) -> None:
        raise Crash

    with pytest.raises(Crash):
        job.run(progress=False, on_round=die)


def ledger_calls(root: Path, site: str, job_id: str) -> list[int]:
    """The call numbers a datasite's own ledger recorded as done for a job, in order."""
    path = root / site / "jobs" / job_id / "ledger.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e["call"] for e in entries if e.get("state", "done") == "done"]


def ledger_states(root: Path, site: str, job_id: str, call: int) -> list[str]:
    """Every state a datasite's ledger recorded for one call of a job, in order."""
    path = root / site / "jobs" / job_id / "ledger.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e.get("state", "done") for e in entries if e["call"] == call]


def write_job_toml(root: Path, run: str, sites: list[Any], lines: list[str],
                   email: str = "ds@lab.example") -> Path:
    """``ROOT/RUN.toml``: the given [job] and [privacy] lines, then one [[sites]] table per datasite,
    each reading the scientist's password from ``ROOT/secrets/NAME.txt``."""
    lines = list(lines)
    for site in sites:
        lines += ["", "[[sites]]", f'name = "{site.config.name}"', f'url = "{site.url}"',
                  f'email = "{email}"', f'password_file = "secrets/{site.config.name}.txt"']
    path = root / f"{run}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def approve_all(sites: list[Any], only: tuple[str, ...] | None = None) -> None:
    """Play every data owner (or those named in *only*): approve each pending request."""
    from domains.review.requests import RequestBook

    for site in sites:
        if only is None or site.config.name in only:
            book = RequestBook(site.data_dir)
            for row in book.table().itertuples():
                if row.status == "pending":
                    book.approve(row.id)


def rewrite_audit_unkeyed(path: Path) -> None:
    """Play someone who can write ``DIR/audit.jsonl`` but not read ``DIR/audit.key``: strip every
    MAC and recompute the plain SHA-256 chain of the old, unkeyed format over the whole log."""
    import hashlib

    prev, lines = "0" * 64, []
    for line in path.read_text().splitlines():
        entry = {k: v for k, v in json.loads(line).items() if k != "mac"}
        lines.append(json.dumps({**entry, "prev": prev}, sort_keys=True))
        prev = hashlib.sha256(lines[-1].encode()).hexdigest()
    path.write_text("\n".join(lines) + "\n")
