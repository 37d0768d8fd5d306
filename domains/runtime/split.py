"""Stratified train/validation split of one site's images, computed on the site.

Stratifying keeps each class's share the same in both parts, so a small site's validation set
does not lose a rare class by chance; the split depends only on the labels and the seed, so a
site can repeat it every round without storing it.
"""

from __future__ import annotations

import numpy as np

from domains.runtime.errors import TrainingError


def val_count(n: int, *, val_fraction: float) -> int:
    """Validation images of a site with *n* images: ``round(n * val_fraction)``, kept in [1, n - 1].

    A function of the public dataset size only, so the orchestrator can compute the FedAvg
    weights (``n - val_count``) from published metadata.

    >>> val_count(10, val_fraction=0.2), val_count(2, val_fraction=0.01)
    (2, 1)
    """
    return min(n - 1, max(1, round(n * val_fraction)))


def train_val_split(
    labels: np.ndarray, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split image indices into sorted, disjoint train and validation index arrays.

    Classes are the multi-class label, or for multi-label sets the first positive label
    (images with none form their own class). The validation part gets
    ``round(N * val_fraction)`` images, at least 1 and at most ``N - 1`` (training always
    keeps one image), shared between classes by largest remainder.

    Raises:
        TrainingError: for ``val_fraction`` outside (0, 1), or labels that are empty or not
            ``(N,)`` / ``(N, K)``.

    >>> train, val = train_val_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), val_fraction=0.25, seed=0)
    >>> len(train), len(val), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[val])
    (6, 2, [0, 1])
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in (0, 1) (got {val_fraction}); use e.g. 0.2")
    keys = _class_keys(np.asarray(labels))
    n = len(keys)
    n_val = val_count(n, val_fraction=val_fraction)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(keys, return_inverse=True)
    groups = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    quotas = _largest_remainder(np.array([len(g) for g in groups]), n_val)
    val = [rng.permutation(g)[:q] for g, q in zip(groups, quotas, strict=True)]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n, dtype=np.int64), val_idx)
    return train_idx, val_idx


def _class_keys(labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 1 and len(labels) > 0:
        return labels
    if labels.ndim == 2 and len(labels) > 0:
        positive = labels.astype(bool)
        return np.where(positive.any(axis=1), positive.argmax(axis=1), -1)  # -1: no label set
    raise TrainingError(
        f"labels must be a non-empty (N,) or (N, K) array (got shape {labels.shape}); pass ImageSet.labels"
    )


def _largest_remainder(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to ``sizes`` that sum to ``total`` (Hamilton's method)."""
    exact = sizes * (total / sizes.sum())
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: total - quotas.sum()]] += 1
    return quotas
