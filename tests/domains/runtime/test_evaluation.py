"""Evaluation on a site: exact metrics for known models, and pooled AUC that matches all data."""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc
from torch import nn

from domains.runtime import get_weights
from domains.runtime.evaluation import evaluate_model
from domains.shared import BINS, EvalResult, TrainingError, histogram_auc, pool
from domains.shared.counts import wire_form

if TYPE_CHECKING:
    from conftest import Trained  # fixtures' type only; never imported at run time


class PixelReader(nn.Module):
    """Reads logits from the first row of pixels: +-``gain`` for 0/1 codes, plus a noise row.

    Images are built so that row 0 holds the one-hot (or multi-hot) truth and row 1 holds
    noise; ``gain`` weighs truth against noise, so the test controls how good the model is.
    """

    def __init__(self, k: int, *, gain: float = 10.0, noise: float = 0.0) -> None:
        super().__init__()
        self.k, self.gain, self.noise = k, gain, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        truth, jitter = x[:, 0, 0, : self.k], x[:, 0, 1, : self.k]
        return self.gain * (2 * truth - 1) + self.noise * (2 * jitter - 1)


def _images(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row 0: the 0/1 codes as 0/255; row 1: uniform noise; 8x8 grey images."""
    n, k = codes.shape
    images = np.zeros((n, 1, 8, 8), np.uint8)
    images[:, 0, 0, :k] = codes * 255
    images[:, 0, 1, :k] = np.random.default_rng(seed).integers(0, 256, (n, k))
    return images


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.uint8)[labels]


@pytest.mark.parametrize("k", [2, 4])
def test_evaluate_perfect_multiclass(k: int) -> None:
    labels = np.arange(40, dtype=np.int64) % k
    result = evaluate_model(PixelReader(k), _images(_one_hot(labels, k)), labels)
    assert result.n == 40 and result.accuracy == 1.0 and result.auc == 1.0
    assert result.loss < 1e-6
    assert result.score_histograms.shape == (k, 2, BINS) and result.score_histograms.dtype == np.int64
    assert result.score_histograms.sum() == 40 * k  # every image once per class


def test_evaluate_perfect_multilabel() -> None:
    labels = np.random.default_rng(1).integers(0, 2, (50, 3)).astype(np.uint8)
    labels[:2] = [[0, 0, 0], [1, 1, 1]]  # every label has positives and negatives
    result = evaluate_model(PixelReader(3), _images(labels), labels, multi_label=True)
    assert result.accuracy == 1.0 and result.auc == 1.0 and result.multi_label


def _probs(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model.eval()(torch.from_numpy(images).float() / 255), dim=1)


def test_pool_auc_matches_monai_on_all_sites_data(trained: Trained) -> None:
    """A trained model's confident scores: the histogram AUC still lands within 0.01."""
    images, labels = trained.test.images, trained.test.labels
    sites = np.split(np.arange(len(labels)), [90, 290])  # 90, 200 and 310 images
    results = [evaluate_model(trained.model, images[i], labels[i]) for i in sites]
    pooled = pool(results)
    exact = float(compute_roc_auc(_probs(trained.model, images)[:, 1], torch.from_numpy(labels)))
    assert abs(pooled.auc - exact) < 0.01
    for r in results:  # and per site, against MONAI's exact AUC of that site
        assert abs(pool([r]).auc - r.auc) < 0.01
    whole = evaluate_model(trained.model, images, labels)
    assert pooled.n == whole.n == len(labels)
    assert pooled.accuracy == pytest.approx(whole.accuracy)
    assert pooled.loss == pytest.approx(whole.loss, rel=1e-5)
    assert np.array_equal(pooled.score_histograms, whole.score_histograms)


def test_pool_auc_matches_monai_macro_multiclass() -> None:
    labels = np.random.default_rng(3).integers(0, 3, 900)
    images = _images(_one_hot(labels, 3), seed=4)
    model = PixelReader(3, gain=1.0, noise=2.0)  # noise outweighs signal: AUC well below 1
    results = [evaluate_model(model, images[s], labels[s]) for s in np.array_split(np.arange(900), 4)]
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(images).float() / 255), dim=1)
    exact = float(compute_roc_auc(probs, torch.from_numpy(_one_hot(labels, 3)), average="macro"))
    assert 0.6 < exact < 0.95
    assert abs(pool(results).auc - exact) < 0.01


def test_evaluate_single_class_site_has_nan_auc_and_still_pools() -> None:
    model = PixelReader(2, gain=1.0, noise=2.0)
    healthy, sick = np.zeros(30, np.int64), np.ones(20, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI's "y values can not be all 0" must not leak
        only_healthy = evaluate_model(model, _images(_one_hot(healthy, 2), seed=1), healthy)
        only_sick = evaluate_model(model, _images(_one_hot(sick, 2), seed=2), sick)
    assert math.isnan(only_healthy.auc) and math.isnan(only_sick.auc)
    assert 0 <= only_healthy.accuracy <= 1
    pooled = pool([only_healthy, only_sick])  # neither site alone has an AUC; together they do
    assert 0.5 < pooled.auc <= 1.0 and pooled.n == 50


def test_eval_result_dict_round_trip_is_strict_json() -> None:
    labels = np.zeros(10, np.int64)
    result = evaluate_model(PixelReader(2), _images(_one_hot(labels, 2)), labels)
    assert math.isnan(result.auc)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    back = EvalResult.from_dict(d)
    assert (back.n, back.loss, back.accuracy, back.multi_label) == (
        result.n, result.loss, result.accuracy, result.multi_label)
    assert math.isnan(back.auc)
    assert np.array_equal(back.score_histograms, result.score_histograms)
    assert back.score_histograms.dtype == np.int64


def test_the_wire_form_reads_back_the_same_and_serializes_smaller_in_pysyft() -> None:
    from syft.serde.serialize import _serialize

    labels = np.arange(40) % 2
    result = evaluate_model(PixelReader(2), _images(_one_hot(labels, 2)), labels)
    as_json = result.to_dict()
    wire = wire_form(as_json)
    assert isinstance(wire["score_histograms"], np.ndarray) and wire["score_histograms"].dtype == np.int64
    assert {k: v for k, v in wire.items() if k != "score_histograms"} == {
        k: v for k, v in as_json.items() if k != "score_histograms"}
    back = EvalResult.from_dict(wire)
    assert back.to_dict() == as_json  # the same counts, whichever form travelled
    # the point of it: PySyft serializes one array, not 800 numbers one by one
    assert len(_serialize(wire, to_bytes=True)) < len(_serialize(as_json, to_bytes=True)) / 5


def test_the_wire_form_leaves_lists_that_are_not_numbers_alone() -> None:
    counts = {"n": 2, "names": ["a", "b"], "gaps": [1, None], "ragged": [[1], [1, 2]], "empty": []}
    assert wire_form(counts) == counts


def test_pool_weights_loss_and_accuracy_by_n() -> None:
    hist = np.zeros((2, 2, BINS), np.int64)
    a = EvalResult(n=10, loss=1.0, accuracy=0.5, auc=float("nan"), score_histograms=hist)
    b = EvalResult(n=30, loss=2.0, accuracy=0.9, auc=float("nan"), score_histograms=hist)
    pooled = pool([a, b])
    assert pooled.n == 40
    assert pooled.loss == pytest.approx((10 * 1.0 + 30 * 2.0) / 40)
    assert pooled.accuracy == pytest.approx((10 * 0.5 + 30 * 0.9) / 40)


def test_histogram_auc_counts_ties_as_half() -> None:
    hist = np.zeros((2, 2, BINS), np.int64)
    hist[1, 0, [10, 50]] = 1  # negatives of class 1 at bins 10 and 50
    hist[1, 1, [50, 90]] = 1  # positives at bins 50 (tie) and 90
    # pairs: (50 vs 10) win, (50 vs 50) tie, (90 vs 10) win, (90 vs 50) win -> 3.5 / 4
    assert histogram_auc(hist) == pytest.approx(0.875)
    assert math.isnan(histogram_auc(np.zeros((2, 2, BINS))))


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([], "at least one EvalResult"),
        (
            [EvalResult(1, 0.0, 1.0, 1.0, np.zeros((2, 2, BINS), np.int64)),
             EvalResult(1, 0.0, 1.0, 1.0, np.zeros((3, 2, BINS), np.int64))],
            "same model and label schema",
        ),
    ],
)
def test_pool_refuses_empty_or_mixed(results: list[EvalResult], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        pool(results)


def test_evaluate_leaves_model_alone_and_batches_do_not_matter(trained: Trained) -> None:
    images, labels = trained.test.images[:100], trained.test.labels[:100]
    before = get_weights(trained.model)
    trained.model.train()
    small = evaluate_model(trained.model, images, labels, batch_size=7)
    large = evaluate_model(trained.model, images, labels)
    assert trained.model.training
    assert all(np.array_equal(get_weights(trained.model)[k], v) for k, v in before.items())
    assert np.array_equal(small.score_histograms, large.score_histograms)
    assert small.accuracy == large.accuracy and small.loss == pytest.approx(large.loss, rel=1e-5)
    with pytest.raises(TrainingError, match="batch_size must be >= 1"):
        evaluate_model(trained.model, images, labels, batch_size=0)


def test_a_pooled_auc_of_noisy_counts_stays_in_0_1() -> None:
    """Released counts can be negative; their pooled AUC is clipped as each site's own is."""
    hist = np.zeros((2, 2, BINS), dtype=np.int64)
    hist[1, 1, 0], hist[1, 0, -1], hist[1, 0, 0] = 5, 6, -2  # noise made a negative count
    hist[0] = hist[1, ::-1, ::-1]
    assert not 0.0 <= histogram_auc(hist) <= 1.0  # the raw trapezoid leaves the range
    one = EvalResult(n=10, loss=0.5, accuracy=0.5, auc=0.5, score_histograms=hist, multi_label=False)
    assert 0.0 <= pool([one, one]).auc <= 1.0
