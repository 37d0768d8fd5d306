"""Simulate N hospitals from one public dataset: which samples hospital I of N holds.

``medsyft domain publish --shard I/N --partition P`` publishes one share of a
public dataset, so that N datasites on one machine behave like N hospitals.
Every hospital computes the same split from the same ``seed`` and keeps its own
share, so no coordination is needed: the shares are disjoint, together they are
the whole dataset, and they do not depend on the process, platform or
``PYTHONHASHSEED`` (only :func:`numpy.random.default_rng` is used, never global
random state).

Two partitions:

* ``iid``: a seeded permutation cut into N shares as even as possible (sizes
  differ by at most one). Every hospital sees the same label mix.
* ``dirichlet:ALPHA``: label skew as in Hsu et al. 2019 ("Measuring the
  effects of non-identical data distribution") and Flower's
  ``DirichletPartitioner``. For each class, proportions are drawn from
  Dir(ALPHA, ..., ALPHA) over the N hospitals and the class's shuffled samples
  are cut in those proportions. Small ALPHA (0.1) gives hospitals dominated by a
  few classes; large ALPHA (1000) is close to ``iid``.

A Dirichlet draw can leave a hospital with no sample at all, which no real
hospital would publish and which breaks training there. When there are at least
N samples, each empty hospital is repaired by moving one sample (chosen with the
same seeded generator) from the currently largest hospital. This barely changes
the skew: it moves N-1 samples at most.

Labels may be class ids of shape ``(n,)`` or ``(n, 1)``, or multi-label 0/1
indicators of shape ``(n, K)`` (e.g. ChestX-ray14 findings). For multi-label
data the class used for the split is the first positive label, or ``K`` for a
sample with none ("no finding").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from domains.errors import PublishError, ShardSpecError

__all__ = [
    "Partition",
    "ShardSpec",
    "class_keys",
    "label_distribution",
    "parse_partition",
    "parse_shard",
    "shard",
    "shard_indices",
]

_SHARD_EXAMPLE = "e.g. --shard 1/3"
_PARTITION_FORMS = "'iid' or 'dirichlet:ALPHA' with ALPHA a number > 0, e.g. dirichlet:0.5"


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_shard(index: int, count: int, shown: str) -> None:
    if not (_is_int(index) and _is_int(count)):
        raise ShardSpecError(
            f"--shard {shown}: I and N must be whole numbers (hospital I of N); {_SHARD_EXAMPLE}"
        )
    if count < 1:
        raise ShardSpecError(f"--shard {shown}: N must be at least 1 (got N={count}); "
                             f"{_SHARD_EXAMPLE}")
    if not 1 <= index <= count:
        raise ShardSpecError(f"--shard {shown}: I must be between 1 and N (got I={index}, "
                             f"N={count}); {_SHARD_EXAMPLE}")


@dataclass(frozen=True)
class ShardSpec:
    """Hospital ``index`` (1-based) of ``count`` simulated hospitals.

    Raises:
        ShardSpecError: if ``index`` is not between 1 and ``count``.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        _check_shard(self.index, self.count, f"{self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """Read a ``--shard I/N`` value.

    >>> parse_shard("2/3")
    ShardSpec(index=2, count=3)

    Raises:
        ShardSpecError: naming the problem and an example, for anything but
            two whole numbers with 1 <= I <= N.
    """
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ShardSpecError(f"--shard {text}: expected I/N, hospital I of N hospitals "
                             f"(got {text!r}); {_SHARD_EXAMPLE}")
    index, count = (int(p) for p in parts)
    _check_shard(index, count, text.strip())
    return ShardSpec(index, count)


@dataclass(frozen=True)
class Partition:
    """How samples are spread over hospitals: ``iid``, or ``dirichlet`` label skew.

    Attributes:
        kind: ``"iid"`` or ``"dirichlet"``.
        alpha: Dirichlet concentration (finite, > 0) for ``"dirichlet"``, else None.
    """

    kind: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "iid" and self.alpha is None:
            return
        if self.kind == "dirichlet":
            _check_alpha(self.alpha, f"dirichlet:{self.alpha}")
            return
        raise ShardSpecError(f"--partition {self}: expected {_PARTITION_FORMS}")

    def __str__(self) -> str:
        """The ``--partition`` text that parses back to this partition."""
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha!r}"


def _check_alpha(alpha: float | None, shown: str) -> None:
    number = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not (number and alpha is not None and math.isfinite(alpha) and alpha > 0):
        raise ShardSpecError(f"--partition {shown}: ALPHA must be a finite number > 0 "
                             f"(got {alpha}); e.g. dirichlet:0.5 (smaller is more skewed)")


def parse_partition(text: str) -> Partition:
    """Read a ``--partition`` value: ``iid`` or ``dirichlet:ALPHA``.

    >>> parse_partition("dirichlet:0.5")
    Partition(kind='dirichlet', alpha=0.5)

    Raises:
        ShardSpecError: naming the accepted forms, for anything else.
    """
    kind, sep, rest = text.strip().lower().partition(":")
    if kind == "iid" and not sep:
        return Partition("iid")
    if kind == "dirichlet" and sep:
        try:
            alpha = float(rest)
        except ValueError:
            raise ShardSpecError(f"--partition {text}: ALPHA must be a number "
                                 f"(got {rest!r}); expected {_PARTITION_FORMS}") from None
        _check_alpha(alpha, text.strip())
        return Partition("dirichlet", alpha)
    raise ShardSpecError(f"--partition {text}: expected {_PARTITION_FORMS}")


def class_keys(labels: np.ndarray) -> np.ndarray:
    """One class id per sample, ``0..C-1``, that the label-skewed split groups by.

    ``(n,)`` and ``(n, 1)`` labels map their distinct values, in sorted order,
    to ``0..C-1``. ``(n, K)`` multi-label indicators give the first positive
    label, or ``K`` when a sample has none.

    Raises:
        PublishError: for labels of any other shape.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 0:
        return np.zeros(len(labels), dtype=np.int64)  # K = 0: nobody has a positive label
    if labels.ndim == 2:
        positive = labels != 0
        first = positive.argmax(axis=1)
        return np.where(positive.any(axis=1), first, labels.shape[1]).astype(np.int64)
    raise PublishError(f"labels must have shape (n,), (n, 1) or (n, K) multi-label "
                       f"(got shape {labels.shape}); pass one label row per sample")


def shard_indices(
    labels: np.ndarray, count: int, partition: Partition, *, seed: int
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` over ``count`` hospitals.

    Args:
        labels: One label row per sample (see :func:`class_keys`).
        count: Number of hospitals N.
        partition: ``iid`` or ``dirichlet`` (see the module docstring).
        seed: Non-negative integer; the same seed gives the same split everywhere.

    Returns:
        ``count`` sorted int64 arrays, pairwise disjoint, together exactly
        ``0..len(labels)-1``; none is empty when ``len(labels) >= count``.

    >>> [s.tolist() for s in shard_indices(np.array([0, 0, 1, 1]), 2, Partition("iid"), seed=0)]
    [[0, 2], [1, 3]]
    """
    _check_shard(1, count, f"1/{count}")
    if not _is_int(seed) or seed < 0:
        raise ShardSpecError(f"seed must be a non-negative integer (got {seed!r}); e.g. --seed 0")
    keys = class_keys(labels)
    rng = np.random.default_rng(seed)
    if partition.kind == "iid":
        parts = np.array_split(rng.permutation(len(keys)), count)
    else:
        assert partition.alpha is not None  # Partition guarantees it
        parts = _dirichlet_split(keys, count, partition.alpha, rng)
        _fill_empty(parts, rng)
    return [np.sort(part).astype(np.int64) for part in parts]


def _dirichlet_split(
    keys: np.ndarray, count: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(count)]
    for key in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == key))
        share = rng.dirichlet(np.full(count, alpha))
        if not np.all(np.isfinite(share)) or share.sum() <= 0:
            # Alpha so small that every draw underflowed: the limit is one hospital.
            share = np.eye(count)[rng.integers(count)]
        cuts = (np.cumsum(share)[:-1] * len(members)).astype(np.int64)
        for hospital, piece in enumerate(np.split(members, cuts)):
            pieces[hospital].append(piece)
    return [np.concatenate(p) if p else np.empty(0, np.int64) for p in pieces]


def _fill_empty(parts: list[np.ndarray], rng: np.random.Generator) -> None:
    """Give each empty hospital one sample of the largest (only if there are enough)."""
    while sum(len(p) for p in parts) >= len(parts):
        empty = [i for i, part in enumerate(parts) if len(part) == 0]
        if not empty:
            return
        largest = int(np.argmax([len(p) for p in parts]))
        moved = int(rng.integers(len(parts[largest])))
        parts[empty[0]] = parts[largest][moved : moved + 1]
        parts[largest] = np.delete(parts[largest], moved)


def shard(labels: np.ndarray, spec: ShardSpec, partition: Partition, *, seed: int) -> np.ndarray:
    """Indices of the samples hospital ``spec.index`` of ``spec.count`` holds.

    >>> shard(np.arange(6) % 2, parse_shard("1/3"), parse_partition("iid"), seed=0).tolist()
    [2, 3]
    """
    return shard_indices(labels, spec.count, partition, seed=seed)[spec.index - 1]


def label_distribution(labels: np.ndarray, shards: list[np.ndarray]) -> pd.DataFrame:
    """Samples per class at each hospital, to show how skewed a partition is.

    Rows are hospitals ``1..N`` (index named ``hospital``). For class-id labels
    the columns are the label values; for ``(n, K)`` multi-label data they are
    the K labels (a sample counts once per positive label) and ``K`` for
    samples with no positive label.

    Ten samples of each of two classes over three hospitals, label-skewed with
    seed 7: hospital 1 holds class 1 only, hospital 2 class 0 only, and every
    sample is in exactly one shard.

    >>> labels = np.repeat([0, 1], 10)
    >>> shards = shard_indices(labels, 3, parse_partition("dirichlet:0.5"), seed=7)
    >>> label_distribution(labels, shards).to_numpy().tolist()
    [[0, 9], [9, 0], [1, 1]]
    >>> sorted(np.concatenate(shards).tolist()) == list(range(20))
    True
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    rows = [_class_counts(labels, np.asarray(part, dtype=np.int64)) for part in shards]
    columns = _class_columns(labels)
    frame = pd.DataFrame(rows, columns=columns, index=pd.RangeIndex(1, len(shards) + 1))
    frame.index.name = "hospital"
    return frame.fillna(0).astype(np.int64)


def _class_columns(labels: np.ndarray) -> list[object]:
    if labels.ndim == 2:
        return list(range(labels.shape[1] + 1))
    return list(np.unique(labels).tolist())


def _class_counts(labels: np.ndarray, part: np.ndarray) -> dict[object, int]:
    if labels.ndim == 2:
        held = labels[part] != 0
        counts: dict[object, int] = dict(enumerate(held.sum(axis=0).tolist()))
        counts[labels.shape[1]] = int((~held.any(axis=1)).sum())
        return counts
    values, counts_ = np.unique(labels[part], return_counts=True)
    return dict(zip(values.tolist(), counts_.tolist(), strict=True))
