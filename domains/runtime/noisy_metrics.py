"""What leaves a datasite when a job runs under differential privacy, and what it costs.

A model update trained with DP-SGD is private by Opacus's accounting. Evaluation is a second
release: the validation metrics of every round. Here it is a Gaussian mechanism of its own,
charged to the same ε ledger, so that "evaluation is free" is never claimed:

* The site releases only counts: per class, a histogram of predicted probabilities in
  :data:`RELEASE_BINS` bins split by the true label, the number of images, and (unless
  multi-label) the number of correct argmax predictions. Adding or removing one image
  changes one count per released class channel, the image count and the correct count by
  at most 1 each, so the L2 sensitivity is ``sqrt(channels + 2)`` (``+ 1`` multi-label).
  A binary task releases only the positive class's channel: the other is its mirror image.
  Separate image and correct counts keep accuracy steady: read off the histograms, it
  would sum the noise of many bins.
* Gaussian noise of standard deviation ``eval_noise_multiplier * sensitivity`` is added to every
  count. The Rényi DP of that mechanism is ``α / (2 σ²)``, the same as one DP-SGD step with
  sampling rate 1, so the ledger records it as ``(σ, 1.0, 1)``.
* Everything reported (accuracy, ROC-AUC, a binned loss, the pooled metrics across sites) is
  computed from the noisy counts: post-processing, which costs nothing more.

The exact per-image probabilities, the exact AUC and the training loss never leave the site.

The validation split under DP is by a keyed hash of each image's bytes, not stratified: with a
stratified split, adding one image can move many others between training and validation, and
DP-SGD's guarantee assumes neighbouring training sets differ by one image.
"""

from __future__ import annotations

import hashlib
import math
import secrets

import numpy as np

from domains.runtime.errors import TrainingError
from domains.shared.counts import BINS, EvalResult, histogram_auc, noise_channels, sensitivity

__all__ = ["RELEASE_BINS", "add_metric_noise", "binned_loss", "coarsen", "hash_split", "noise_channels",
           "sensitivity"]

RELEASE_BINS = 4  # coarse bins: fewer noisy counts give a steadier AUC (measured: sd 0.04 vs 0.07 for 10)


def add_metric_noise(result: EvalResult, *, eval_noise_multiplier: float, correct: int | None = None,
                     rng: np.random.Generator | None = None, bins: int = RELEASE_BINS) -> EvalResult:
    """A DP version of *result*: coarsened, noised counts and metrics computed only from them.

    *correct* is the exact number of correct argmax predictions (needed unless multi-label).
    The returned ``n`` is the noisy image count; ``score_histograms`` are the noisy
    ``(K, 2, bins)`` counts, rounded and unclamped (a count may be negative). The number of
    bins does not change the sensitivity: an image falls in one bin per channel.
    """
    if not eval_noise_multiplier > 0:
        raise TrainingError(f"eval_noise_multiplier must be > 0 (got {eval_noise_multiplier})")
    rng = rng or np.random.default_rng(secrets.randbits(128))
    hist = coarsen(np.asarray(result.score_histograms, dtype=np.float64), bins=bins)
    k = hist.shape[0]
    channels, with_correct = noise_channels(k, multi_label=result.multi_label)
    std = eval_noise_multiplier * sensitivity(k, multi_label=result.multi_label)
    # Counts stay unclamped (some may be negative): clamping at 0 would bias every sum upwards.
    released = np.rint(hist[k - channels:] + rng.normal(0.0, std, hist[k - channels:].shape))
    if channels == 1 and k == 2:  # binary: class 0 is the mirror of class 1
        mirror = released[0, ::-1, ::-1]
        released = np.stack([mirror, released[0]])
    n = max(1.0, float(np.rint(result.n + rng.normal(0.0, std))))
    accuracy = _threshold_accuracy(released, result.multi_label, n)
    if with_correct:
        if correct is None:
            raise TrainingError("add_metric_noise needs the correct-prediction count unless multi-label")
        accuracy = float(np.rint(correct + rng.normal(0.0, std))) / n
    auc = histogram_auc(released, multi_label=result.multi_label)
    return EvalResult(
        n=int(n), loss=binned_loss(np.maximum(released, 0), multi_label=result.multi_label),
        accuracy=float(np.clip(accuracy, 0.0, 1.0)),
        auc=float(np.clip(auc, 0.0, 1.0)) if math.isfinite(auc) else auc,
        score_histograms=released.astype(np.int64), multi_label=result.multi_label,
    )


def coarsen(hist: np.ndarray, *, bins: int = RELEASE_BINS) -> np.ndarray:
    """``(K, 2, BINS)`` → ``(K, 2, bins)`` by summing neighbouring bins (*bins* divides BINS)."""
    if bins < 1 or BINS % bins:
        raise TrainingError(f"the released histograms' bins must divide {BINS} (got {bins})")
    return hist.reshape(hist.shape[0], 2, bins, BINS // bins).sum(axis=3)


def _threshold_accuracy(hist: np.ndarray, multi_label: bool, n: float) -> float:
    """Accuracy at probability 0.5 (argmax for two classes), read off the histograms."""
    half = hist.shape[2] // 2
    if multi_label:
        right = hist[:, 0, :half].sum() + hist[:, 1, half:].sum()
        return float(right) / max(1.0, n * hist.shape[0])
    positive = hist[-1]
    return float(positive[0, :half].sum() + positive[1, half:].sum()) / max(1.0, n)


def binned_loss(hist: np.ndarray, *, multi_label: bool) -> float:
    """Cross-entropy (or mean BCE) estimated at the bin centres: a coarse, free loss curve."""
    b = hist.shape[2]
    centres = (np.arange(b) + 0.5) / b
    pos, neg = hist[:, 1, :], hist[:, 0, :]
    n = max(1.0, float(hist[0].sum()))
    if multi_label:
        per_label = -(pos @ np.log(centres) + neg @ np.log1p(-centres)) / n
        return float(per_label.mean())
    return float(-(pos @ np.log(centres)).sum() / n)


def hash_split(images: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices by a keyed hash of each image's bytes (see the module docstring).

    >>> imgs = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    >>> train, val = hash_split(imgs, val_fraction=0.25, seed=0)
    >>> len(train) + len(val), bool(set(train) & set(val))
    (40, False)
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in (0, 1) (got {val_fraction}); use e.g. 0.2")
    key = seed.to_bytes(8, "little", signed=False)
    threshold = int(val_fraction * 2**64)
    draws = np.array([
        int.from_bytes(hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=8,
                                       key=key).digest(), "little")
        for img in images
    ], dtype=np.uint64)
    val = draws < np.uint64(threshold)
    return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)
