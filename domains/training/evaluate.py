"""Metrics computed where the data is: only aggregates leave the datasite.

Besides loss, accuracy and MONAI's exact ROC-AUC, a site reports histograms of its predicted
probabilities split by the true label. Summed across sites they give a pooled AUC over all
images, which averaging per-site AUCs does not (and which exists even when one site has a
single class), without any per-image value leaving a site.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from domains.training.errors import TrainingError
from domains.training.local import check_arrays, check_logits, label_tensor, to_tensor_images

BINS = 200
# Small forward batches stay in the CPU caches: on one torch thread the small CNN evaluated
# 230 images at 64 px in 0.17 s in batches of 16 against 0.33 s in batches of 256 (0.64 s
# against 1.45 s at 128 px); ResNet-18 and DenseNet-121 are no slower. Outputs do not depend
# on the batch (eval mode; GroupNorm normalizes each image on its own).
EVAL_BATCH = 16


@dataclass
class EvalResult:
    """Evaluation of one model on one site's images (or on several sites, via :func:`pool`).

    Attributes:
        n: images evaluated.
        loss: mean cross-entropy (multi-class) or BCE-with-logits (multi-label).
        accuracy: argmax accuracy; multi-label: mean per-label accuracy at probability 0.5.
        auc: ROC-AUC; binary: of the positive class; multi-class: macro one-vs-rest;
            multi-label: macro over labels. ``nan`` when some class is all positive or all
            negative here (AUC undefined); :func:`pool` still uses this site's histograms.
        score_histograms: ``(K, 2, BINS)`` int64; ``[k, t, b]`` counts images whose
            probability for class ``k`` falls in bin ``b`` of ``[0, 1]`` and whose one-vs-rest
            truth for ``k`` is ``t``.
        multi_label: whether the labels were multi-label (decides how ``pool`` averages AUC).
    """

    n: int
    loss: float
    accuracy: float
    auc: float
    score_histograms: np.ndarray
    multi_label: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; NaN and infinite numbers become ``None`` (strict JSON has no NaN)."""
        return {
            "n": int(self.n),
            "loss": _json_float(self.loss),
            "accuracy": _json_float(self.accuracy),
            "auc": _json_float(self.auc),
            "score_histograms": np.asarray(self.score_histograms, dtype=np.int64).tolist(),
            "multi_label": bool(self.multi_label),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict` (``None`` reads back as NaN)."""
        return cls(
            n=int(d["n"]),
            loss=_from_json_float(d["loss"]),
            accuracy=_from_json_float(d["accuracy"]),
            auc=_from_json_float(d["auc"]),
            score_histograms=np.asarray(d["score_histograms"], dtype=np.int64),
            multi_label=bool(d.get("multi_label", False)),
        )


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _from_json_float(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def evaluate(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    multi_label: bool = False,
    batch_size: int = EVAL_BATCH,
) -> EvalResult:
    """Evaluate ``model`` on one site's images without changing it.

    Raises:
        TrainingError: for arrays not in the ImageSet layout, labels that do not fit the
            model's outputs, or ``batch_size < 1``.

    >>> from domains.training.models import build_model
    >>> model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    >>> images, labels = np.zeros((4, 1, 28, 28), np.uint8), np.array([0, 1, 0, 1])
    >>> r = evaluate(model, images, labels)
    >>> r.n, r.score_histograms.shape
    (4, (2, 2, 200))
    """
    check_arrays(images, labels, multi_label=multi_label)
    if batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1 (got {batch_size})")
    logits = _predict(model, images, batch_size)
    check_logits(logits, labels, multi_label=multi_label)
    targets = label_tensor(labels, multi_label=multi_label)
    if multi_label:
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        probs, truth = torch.sigmoid(logits), targets.bool()
        accuracy = float(((logits > 0) == truth).double().mean())
    else:
        loss = nn.functional.cross_entropy(logits, targets)
        probs = torch.softmax(logits, dim=1)
        truth = nn.functional.one_hot(targets, num_classes=logits.shape[1]).bool()
        accuracy = float((logits.argmax(dim=1) == targets).double().mean())
    return EvalResult(
        n=len(images),
        loss=float(loss),
        accuracy=accuracy,
        auc=_exact_auc(probs, truth, multi_label=multi_label),
        score_histograms=_histograms(probs.numpy(), truth.numpy()),
        multi_label=multi_label,
    )


def _predict(model: nn.Module, images: np.ndarray, batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            starts = range(0, len(images), batch_size)
            parts = [model(to_tensor_images(images[i : i + batch_size])) for i in starts]
    finally:
        model.train(was_training)
    return torch.cat(parts).float()


def _binary(num_classes: int, multi_label: bool) -> bool:
    """A two-class multi-class task reports the AUC of class 1, as clinicians read it."""
    return num_classes == 2 and not multi_label


def _exact_auc(probs: torch.Tensor, truth: torch.Tensor, *, multi_label: bool) -> float:
    """MONAI's exact ROC-AUC; NaN (without MONAI's warning) when a class is absent or universal."""
    from monai.metrics import compute_roc_auc  # lazy: MONAI takes seconds to import
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y values can not be all")
        if _binary(probs.shape[1], multi_label):
            auc = compute_roc_auc(probs[:, 1], truth[:, 1].long())
        else:
            auc = compute_roc_auc(probs, truth.long(), average="macro")
    return float(np.asarray(auc))


def _histograms(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    bins = np.clip(np.floor(probs.astype(np.float64) * BINS), 0, BINS - 1).astype(np.int64)
    flat = np.arange(k)[None, :] * (2 * BINS) + truth.astype(np.int64) * BINS + bins
    return np.bincount(flat.ravel(), minlength=k * 2 * BINS).reshape(k, 2, BINS).astype(np.int64)


def histogram_auc(score_histograms: np.ndarray, *, multi_label: bool = False) -> float:
    """ROC-AUC from ``(K, 2, BINS)`` histograms, as :class:`EvalResult` reports ``auc``.

    Each positive counts the negatives in lower bins plus half of those in its own bin (a tie),
    which is the trapezoid rule over the binned ROC curve. NaN when a class has no positives or
    no negatives.
    """
    h = np.asarray(score_histograms, dtype=np.float64)
    neg, pos = h[:, 0, :], h[:, 1, :]
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / pairs, np.nan)
    if _binary(h.shape[0], multi_label):
        return float(per_class[1])
    return float(np.mean(per_class))


def pool(results: Sequence[EvalResult]) -> EvalResult:
    """Combine several sites' results as if evaluated on all their images at once.

    Loss and accuracy are ``n``-weighted means; AUC comes from the summed histograms (within
    about 0.01 of the exact AUC over all images for 200 bins, unless scores pile up in a few
    bins).

    Raises:
        TrainingError: for no results, zero images, or results from different label schemas.
    """
    if not results:
        raise TrainingError("pool needs at least one EvalResult; evaluate on a site first")
    first = results[0]
    for i, r in enumerate(results[1:], start=1):
        if r.score_histograms.shape != first.score_histograms.shape or r.multi_label != first.multi_label:
            raise TrainingError(
                f"result {i} has histograms {r.score_histograms.shape} (multi_label={r.multi_label}) "
                f"but result 0 has {first.score_histograms.shape} (multi_label={first.multi_label}); "
                "pool only results of the same model and label schema"
            )
    n = sum(int(r.n) for r in results)
    if n <= 0:
        raise TrainingError("pool: the results cover 0 images; evaluate on non-empty sites")
    hist = np.sum([np.asarray(r.score_histograms, dtype=np.int64) for r in results], axis=0)
    return EvalResult(
        n=n,
        loss=sum(r.n * r.loss for r in results) / n,
        accuracy=sum(r.n * r.accuracy for r in results) / n,
        auc=histogram_auc(hist, multi_label=first.multi_label),
        score_histograms=hist,
        multi_label=first.multi_label,
    )
