"""The one in-memory shape every source format is loaded into before it is published.

Every loader (npz, folder, DICOM) and the synthetic phantoms return an :class:`ImageSet`,
so the publishing code, the mock builder and the training code deal with one layout only:
images ``(N, C, H, W)`` uint8 and labels in a fixed schema. The class checks that layout
when it is built, so a loader bug cannot hand a half-valid set to a datasite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domains.errors import PublishError


def publish_error(where: str | Path, problem: str, fix: str) -> PublishError:
    """Build the one-line ``"<file>: <problem>; <how to fix>"`` error every loader raises.

    Exception texts from Pillow or pydicom may span lines; the CLI prints one line, so
    newlines are folded here rather than in every caller.

    >>> str(publish_error("a.png", "truncated image", "export it again"))
    'a.png: truncated image; export it again'
    """
    text = f"{where}: {problem}; {fix}"
    return PublishError(" ".join(text.split()))


@dataclass
class ImageSet:
    """Images and labels from one source, in the layout a datasite publishes.

    Attributes:
        images: ``(N, C, H, W)`` uint8 with ``C`` in {1, 3}.
        labels: multi-class ``(N,)`` int64 in ``[0, K)``; multi-label ``(N, K)`` uint8 in {0, 1}.
        label_names: the label schema, ``K`` names, in index order.
        multi_label: whether an image may carry several labels at once.
        modality: what produced the images, e.g. ``"CR"`` or ``"chest X-ray"``.
        source: where the images came from (path and split), for people reading metadata.
        synthetic: ``True`` for generated data that shows no patient.

    Raises:
        PublishError: when the arrays do not have that layout (the message starts with
            ``source``).
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    multi_label: bool
    modality: str
    source: str
    synthetic: bool = False

    def __post_init__(self) -> None:
        _check_images(self.images, self.source)
        _check_labels(self.labels, self.label_names, self.multi_label, self.source)
        if len(self.labels) != len(self.images):
            raise publish_error(
                self.source,
                f"{len(self.images)} images but {len(self.labels)} labels",
                "give exactly one label entry per image",
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        """Images per label name (multi-label: positives per label), for balance checks."""
        if self.multi_label:
            counts = self.labels.sum(axis=0, dtype=np.int64)
        else:
            counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts, strict=True)}

    def describe(self) -> dict[str, object]:
        """JSON-able metadata that a data scientist may see without seeing any image."""
        return {
            "n": len(self),
            "image_size": [int(self.images.shape[2]), int(self.images.shape[3])],
            "channels": int(self.images.shape[1]),
            "dtype": str(self.images.dtype),
            "label_names": list(self.label_names),
            "multi_label": self.multi_label,
            "modality": self.modality,
            "class_counts": self.class_counts(),
            "synthetic": self.synthetic,
            "source": self.source,
        }

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The images at ``idx`` (indices or boolean mask), same schema; arrays are copies."""
        idx = np.asarray(idx)
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            label_names=list(self.label_names),
            multi_label=self.multi_label,
            modality=self.modality,
            source=self.source,
            synthetic=self.synthetic,
        )


def _check_images(images: np.ndarray, source: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise publish_error(
            source, f"images must be a (N, C, H, W) uint8 array (got {got})", "convert them first"
        )
    if images.shape[1] not in (1, 3):
        raise publish_error(
            source,
            f"images must have 1 or 3 channels (got {images.shape[1]})",
            "use grey or RGB images",
        )


def _check_labels(labels: np.ndarray, names: list[str], multi_label: bool, source: str) -> None:
    k = len(names)
    if k == 0:
        raise publish_error(source, "the label schema is empty", "give at least one label name")
    if len(set(names)) != k:
        raise publish_error(source, f"label names repeat: {names}", "give each label once")
    if multi_label:
        if labels.dtype != np.uint8 or labels.ndim != 2 or labels.shape[1] != k:
            raise publish_error(
                source,
                f"multi-label labels must be (N, {k}) uint8 (got {labels.dtype} {labels.shape})",
                "give one 0/1 column per label name",
            )
        if labels.size and labels.max() > 1:
            raise publish_error(source, "multi-label labels must be 0 or 1", "binarize them")
        return
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise publish_error(
            source,
            f"multi-class labels must be (N,) int64 (got {labels.dtype} {labels.shape})",
            "give one class index per image",
        )
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise publish_error(
            source,
            f"class index out of range [0, {k}) (got {labels.min()}..{labels.max()})",
            f"use indices into the schema {names}",
        )
