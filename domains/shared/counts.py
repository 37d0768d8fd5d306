"""The metric counts of a classification evaluation, and how several sites' counts pool.

Torch-free, so both rooms read them: a datasite computes an :class:`EvalResult` on its own images
(:func:`domains.runtime.evaluation.evaluate_model`), adds noise to it under DP
(:mod:`domains.runtime.noisy_metrics`), and the orchestrator pools the sites' results
(:func:`pool`) into the federation's metrics.

Besides loss, accuracy and MONAI's exact ROC-AUC, a site reports histograms of its predicted
probabilities split by the true label. Summed across sites they give a pooled AUC over all
images, which averaging per-site AUCs does not (and which exists even when one site has a
single class), without any per-image value leaving a site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from domains.shared.errors import TrainingError

BINS = 200


class Counts(Protocol):
    """What every task's metric counts are: JSON-able, sized, summarised, and pooled across sites.

    A task's counts must be sums over images (or derived only from such sums), so that pooling
    several sites' counts equals evaluating on all their images at once, and so that noise of a
    known sensitivity protects one image (:meth:`domains.runtime.tasks.Task.add_noise`).
    """

    n: int
    metrics: ClassVar[tuple[str, ...]]
    """The names :meth:`summary` returns: the columns of the federation's metrics table."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`, which also reads :func:`wire_form` (lists as arrays)."""
        ...

    def summary(self) -> dict[str, float]: ...

    @classmethod
    def pool(cls, results: Sequence[Self]) -> Self: ...


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
    metrics: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "auc")

    def summary(self) -> dict[str, float]:
        """The metrics a table shows: loss, accuracy, ROC-AUC."""
        return {"loss": self.loss, "accuracy": self.accuracy, "auc": self.auc}

    @classmethod
    def pool(cls, results: Sequence[EvalResult]) -> EvalResult:
        """:func:`pool`, as the :class:`Counts` protocol names it."""
        return pool(results)

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


def wire_form(counts: dict[str, Any]) -> dict[str, Any]:
    """*counts* (a :meth:`Counts.to_dict`) as a PySyft result carries it: each list of numbers
    as one numpy array, which :meth:`Counts.from_dict` reads alike.

    PySyft serializes a list item by item; a site's score histograms are 800 ints at two classes,
    and a result passes PySyft's serializers several times between the approved code and the
    orchestrator (stored, checked, read back, fetched, answered). One capnp pass over a plaintext
    round's result (the small CNN's 47k weights included) took 7.0 ms with the lists and 1.4 ms
    with an array, and the lists added 80 kB to it.
    JSON files keep :meth:`~Counts.to_dict`'s lists.

    >>> w = wire_form({"n": 3, "score_histograms": [[1, 2], [0, 0]], "multi_label": False})
    >>> w["score_histograms"].dtype, w["n"]
    (dtype('int64'), 3)
    """
    out: dict[str, Any] = {}
    for key, value in counts.items():
        out[key] = value
        if isinstance(value, list) and value:
            try:
                array = np.asarray(value)
            except ValueError:  # ragged: as it is
                continue
            if array.dtype.kind in "iuf":  # not None, text or objects
                out[key] = array
    return out


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _from_json_float(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _binary(num_classes: int, multi_label: bool) -> bool:
    """A two-class multi-class task reports the AUC of class 1, as clinicians read it."""
    return num_classes == 2 and not multi_label


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


def noise_channels(num_classes: int, *, multi_label: bool) -> tuple[int, bool]:
    """Released histogram channels and whether a correct-count is released too."""
    if num_classes == 2 and not multi_label:
        return 1, True
    return num_classes, not multi_label


def sensitivity(num_classes: int, *, multi_label: bool) -> float:
    """L2 sensitivity of the released count vector to adding or removing one image."""
    channels, correct = noise_channels(num_classes, multi_label=multi_label)
    return math.sqrt(channels + int(correct) + 1)


def noise_sd(released: EvalResult, *, eval_noise_multiplier: float, sites: int = 1, draws: int = 400,
             rng: np.random.Generator | None = None) -> tuple[float, float]:
    """The standard deviation the DP noise gives the accuracy and the ROC-AUC of *released*.

    *released* is the noisy release of *sites* sites (pooled or not); each released count carries
    Gaussian noise of std ``eval_noise_multiplier × sensitivity`` per site, a public number. The
    accuracy's comes from the noisy correct and image counts (first order); the AUC's from
    *draws* fresh noise draws of that std on the released histograms (a parametric bootstrap, so
    it costs no ε: only released numbers are used).
    """
    rng = rng or np.random.default_rng(0)
    hist = np.asarray(released.score_histograms, dtype=np.float64)
    k = hist.shape[0]
    std = eval_noise_multiplier * sensitivity(k, multi_label=released.multi_label) * math.sqrt(sites)
    n = max(1.0, float(released.n))
    acc_sd = std * math.sqrt(1.0 + released.accuracy ** 2) / n
    channels, _ = noise_channels(k, multi_label=released.multi_label)
    aucs = []
    for _ in range(draws):
        noisy = hist.copy()
        noisy[k - channels:] += rng.normal(0.0, std, noisy[k - channels:].shape)
        if channels == 1 and k == 2:
            noisy[0] = noisy[1, ::-1, ::-1]
        aucs.append(histogram_auc(noisy, multi_label=released.multi_label))
    finite = [a for a in aucs if math.isfinite(a)]
    return acc_sd, float(np.std(finite)) if finite else float("nan")


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
    auc = histogram_auc(hist, multi_label=first.multi_label)
    return EvalResult(
        n=n,
        loss=sum(r.n * r.loss for r in results) / n,
        accuracy=sum(r.n * r.accuracy for r in results) / n,
        # released (noisy) counts may be negative, and their AUC may leave [0, 1]: clipped, as each
        # site's own noisy AUC is (domains.runtime.noisy_metrics); exact counts are unchanged
        auc=float(np.clip(auc, 0.0, 1.0)) if math.isfinite(auc) else auc,
        score_histograms=hist,
        multi_label=first.multi_label,
    )


COUNTS: dict[str, type[Counts]] = {"classification": EvalResult}
"""Each task's counts type, by ``JobSpec.task``: how the orchestrator reads and pools its metrics."""


def counts_type(task: str) -> type[Counts]:
    """The counts type of *task*, for reading and pooling what its sites report."""
    try:
        return COUNTS[task]
    except KeyError:
        raise TrainingError(f"unknown task {task!r}; choose one of {sorted(COUNTS)}") from None
