"""Publish imaging data to a datasite as a private dataset with a public mock.

Order matters for "bad input loses nothing": every check that can fail (shard
spec, datasite reachable, source readable and consistent, dataset name free)
runs before the first byte is uploaded, and PySyft registers a dataset only
after all its assets arrived. Each dataset has two assets, ``images`` (N, C, H, W) uint8 and
``labels``; its description carries the metadata as JSON so that a scientist,
and later the training code, can read the label schema without the private data.

What PySyft holds, and what it need not (``--pysyft-images``). medsyft's approved jobs never read
pixels through PySyft: their one asset input is ``labels``, and they read the pixels from the
site's memory-mapped training store (:mod:`domains.data.store`). PySyft's upload moves about
3 MB/s, and a ``full`` images asset is a second copy of every private pixel in PySyft's store.
So:

- ``full``: the private ``images`` asset holds every pixel, and its mock has as many images.
  Custom code the owner allowed (``--allow-custom-code``) may read them.
- ``mock-only``: the private ``images`` asset holds no image (a ``(0, C, H, W)`` array, with the
  asset's shape set to the real ``(N, C, H, W)``); its mock is a sample of
  :data:`MOCK_SAMPLE` phantoms, enough for a scientist to see the format. The pixels live in
  the training store only. Custom code bound to these images is refused at approval.
- ``auto`` (the default): ``full`` up to :data:`FULL_IMAGES_LIMIT` bytes of images, ``mock-only``
  above, so the demo and small sets keep PySyft's own workflow and a hospital's 20,000 images
  do not wait on PySyft's upload.

Which one a dataset got is in its public metadata (``pysyft_images``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domains import budget
from domains.data import store
from domains.data.formats import ImageSet, LabelNames, SourceLimits, load_source
from domains.data.metadata import format_metadata
from domains.data.mock import make_mock
from domains.data.partition import Partition, ShardSpec, parse_partition, parse_shard, shard
from domains.data.phantom import generate_chest_phantoms
from domains.errors import MedsyftDomainError, PublishError
from domains.site.audit import AuditLog, local_actor
from domains.site.connection import admin_client, quiet, require_running
from domains.site.datadir import AUDIT_FILE, DataDir

DEFAULT_SYNTHETIC_COUNT = 3000
PYSYFT_IMAGES = ("auto", "full", "mock-only")
FULL_IMAGES_LIMIT = 64 * 2**20  # auto: above this many bytes of images, PySyft holds no pixel
MOCK_SAMPLE = 256  # mock-only: phantoms in the images asset's mock


@dataclass
class PublishRequest:
    """Everything ``medsyft domain publish`` was asked to do, validated by :func:`publish`."""

    source: Path | None = None
    fmt: str | None = None
    split: str = "train"
    shard: str | None = None
    partition: str = "iid"
    seed: int = 0
    name: str | None = None
    image_size: int | None = None
    channels: int | None = None
    label_names: LabelNames | None = None  # names in index order, or {label value: name}
    limits: SourceLimits = field(default_factory=SourceLimits)  # what the source may declare
    synthetic_count: int = DEFAULT_SYNTHETIC_COUNT
    epsilon_budget: float = budget.DEFAULT_EPSILON_BUDGET
    delta: float | None = None  # default: budget.default_delta(N)
    pysyft_images: str = "auto"  # "full" | "mock-only" | "auto": what PySyft's images asset holds


@dataclass
class PublishResult:
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _dataset_name(req: PublishRequest, spec: ShardSpec | None) -> str:
    if req.name:
        base = req.name
    elif req.source is None:
        base = "synthetic-chest-phantom"
    else:
        base = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', req.source.stem)}-{req.split}"
    if spec is not None and not req.name:
        base += f"-shard{spec.index}of{spec.count}"
    return base


def load_images(req: PublishRequest) -> ImageSet:
    """The whole source as one validated ImageSet (synthetic phantoms without --source)."""
    if req.source is None:
        if req.synthetic_count < 1:
            raise PublishError(f"--count must be at least 1 (got {req.synthetic_count})")
        return generate_chest_phantoms(
            req.synthetic_count, image_size=req.image_size or 28, seed=req.seed
        )
    return load_source(
        req.source, fmt=req.fmt, split=req.split, image_size=req.image_size,
        channels=req.channels, label_names=req.label_names, limits=req.limits,
    )


def prepare(req: PublishRequest) -> tuple[str, ImageSet, dict[str, Any]]:
    """Load, validate and shard the source; returns (dataset name, images, metadata)."""
    spec = parse_shard(req.shard) if req.shard else None
    partition: Partition = parse_partition(req.partition)
    full = load_images(req)
    images = full
    if spec is not None:
        idx = shard(full.labels, spec, partition, seed=req.seed)
        images = full.subset(idx)
    meta = images.describe()
    meta.update(
        {
            # The full server path can name a ward or patient: publish only the file name.
            "source": "synthetic" if req.source is None else f"{req.source.name} ({req.split})",
            "fingerprint_sha256": store.fingerprint(images.images),
            "shard": None if spec is None else f"{spec.index}/{spec.count}",
            "partition": None if spec is None else req.partition,
            "seed": req.seed,
            "mock": "synthetic chest phantoms + uniform labels (no private pixel or label)",
        }
    )
    return _dataset_name(req, spec), images, meta


def pysyft_images_mode(requested: str, nbytes: int) -> str:
    """``full`` or ``mock-only`` for a set of *nbytes* of images (see the module docstring).

    >>> pysyft_images_mode("auto", 3 * 2**20), pysyft_images_mode("auto", 300 * 2**20)
    ('full', 'mock-only')
    >>> pysyft_images_mode("full", 300 * 2**20)
    'full'
    """
    if requested not in PYSYFT_IMAGES:
        raise PublishError(f"--pysyft-images must be one of {', '.join(PYSYFT_IMAGES)} (got {requested!r})")
    if requested == "auto":
        return "full" if nbytes <= FULL_IMAGES_LIMIT else "mock-only"
    return requested


def _description(meta: dict[str, Any]) -> str:
    warning = "SYNTHETIC DATA - not real patients. " if meta.get("synthetic") else ""
    counts = ", ".join(f"{k}: {v}" for k, v in meta["class_counts"].items())
    return (
        f"{warning}{meta['n']} {meta['modality']} images, "
        f"{meta['channels']}x{meta['image_size'][0]}x{meta['image_size'][1]} uint8; "
        f"labels {counts}.\n\n{format_metadata(meta)}"
    )


def _build_dataset(name: str, images: ImageSet, meta: dict[str, Any], owner_email: str) -> Any:
    import syft as sy

    full = meta["pysyft_images"] == "full"
    mock_images, mock_labels = make_mock(images, seed=meta["seed"], images=None if full else MOCK_SAMPLE)
    description = _description(meta)
    dataset = sy.Dataset(name=name, summary=description.split("\n")[0], description=description)
    dataset.add_contributor(name="data owner", email=owner_email, role="Uploader")
    if full:
        asset = sy.Asset(name="images", data=images.images, mock=mock_images,
                         description="(N, C, H, W) uint8 images; mock: synthetic phantoms")
    else:  # the pixels stay in the training store; the mock is a sample, the shape the real one
        n, c, h, w = images.images.shape
        asset = sy.Asset(name="images", data=np.zeros((0, c, h, w), np.uint8), mock=mock_images,
                         shape=(n, c, h, w),
                         description=f"({n}, {c}, {h}, {w}) uint8 images, held in the datasite's "
                                     f"training store only, not in PySyft; mock: {len(mock_images)} "
                                     "synthetic phantoms")
    dataset.add_asset(asset)
    dataset.add_asset(
        sy.Asset(name="labels", data=images.labels, mock=mock_labels,
                 description=f"labels over {images.label_names}; mock: uniform random")
    )
    return dataset


def publish(data_dir: DataDir, req: PublishRequest) -> PublishResult:
    """Validate everything, then upload one dataset; nothing is left behind on failure."""
    data_dir.require_initialized()
    if req.shard:
        parse_shard(req.shard)  # fail on a bad spec before any heavy work
    parse_partition(req.partition)
    pysyft_images_mode(req.pysyft_images, 0)  # a bad mode fails before the source is read
    require_running(data_dir)
    name, images, meta = prepare(req)
    client = admin_client(data_dir)
    with quiet():
        existing = {d.name for d in client.datasets}
    if name in existing:
        raise PublishError(
            f"dataset '{name}' already exists on this datasite; choose another --name"
        )
    delta = budget.default_delta(meta["n"]) if req.delta is None else req.delta
    budget.check_budget(epsilon_budget=req.epsilon_budget, delta=delta, n_samples=meta["n"])
    meta.update(epsilon_budget=req.epsilon_budget, delta=delta,
                pysyft_images=pysyft_images_mode(req.pysyft_images, images.images.nbytes))
    dataset = _build_dataset(name, images, meta, data_dir.read_credentials().email)
    had_ledger = budget.has_ledger(data_dir, name)
    store.save(data_dir, name, images=images.images, labels=images.labels, meta=meta)
    try:
        budget.set_budget(data_dir, name, n_samples=meta["n"], epsilon_budget=req.epsilon_budget,
                          delta=delta)
        # PySyft uploads the assets, then registers the dataset in one final call
        # (dataset.add): if anything fails, no dataset becomes visible.
        with quiet():
            client.upload_dataset(dataset)
    except Exception as exc:
        store.remove(data_dir, name)
        if not had_ledger:
            budget.remove_ledger(data_dir, name)
        if isinstance(exc, MedsyftDomainError):
            raise
        raise PublishError(f"upload of dataset '{name}' failed ({exc}); nothing was published") from exc
    AuditLog(data_dir.file(AUDIT_FILE)).append(
        "publish", actor=local_actor(), subject=name,
        n=meta["n"], class_counts=meta["class_counts"], shard=meta["shard"],
        fingerprint_sha256=meta["fingerprint_sha256"],
        source=meta["source"],
    )
    return PublishResult(name=name, metadata=meta)

