"""DP-SGD in local training and the noisy metric release: real Opacus, no mocks."""

from __future__ import annotations

import numpy as np
import pytest

from domains.data.formats.imageset import ImageSet
from domains.runtime.errors import TrainConfigError
from domains.runtime.evaluation import evaluate_model
from domains.runtime.local import train_local
from domains.runtime.models import build_model
from domains.runtime.noisy_metrics import add_metric_noise, hash_split, sensitivity
from domains.runtime.weights import flatten, get_weights
from domains.shared.counts import EvalResult, pool
from domains.shared.spec import DPTraining, TrainConfig
from privacy.accounting import compact, epsilon, training_entry


def _model() -> object:
    return build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)


def test_dp_training_history_is_the_accounted_one(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    config = TrainConfig(epochs=2, batch_size=32)
    result = train_local(_model(), images, labels, config=config,
                         dp=DPTraining(noise_multiplier=1.1, max_grad_norm=1.0))
    planned = training_entry(noise_multiplier=1.1, n_samples=200, batch_size=32, epochs=2)
    assert compact(result.privacy_history) == [planned]  # what Opacus counted is what we charge
    assert result.steps == planned[2]
    assert epsilon(result.privacy_history, delta=1e-5) == epsilon([planned], delta=1e-5)


def test_dp_noise_is_not_reproducible_from_the_seed(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:96], phantoms[0].labels[:96]
    dp, config = DPTraining(noise_multiplier=1.0, max_grad_norm=1.0), TrainConfig(batch_size=32)
    runs = []
    for _ in range(2):
        model = _model()
        train_local(model, images, labels, config=config, dp=dp)
        runs.append(flatten(get_weights(model))[0])
    assert not np.allclose(runs[0], runs[1])  # same job seed, different noise: the scientist can't redo it


def test_dp_clipping_bounds_the_update(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:64], phantoms[0].labels[:64]
    config = TrainConfig(batch_size=32, optimizer="sgd", lr=0.5, momentum=0.0)
    start = flatten(get_weights(_model()))[0]
    deltas = {}
    for name, dp in (("plain", None), ("clipped", DPTraining(noise_multiplier=1e-3, max_grad_norm=1e-6))):
        model = _model()
        train_local(model, images, labels, config=config, dp=dp)
        deltas[name] = float(np.linalg.norm(flatten(get_weights(model))[0] - start))
    # each step moves the weights by at most lr * (C + noise) per sample, averaged: tiny here
    assert deltas["clipped"] < 1e-4 < deltas["plain"]


def test_dp_parameters_are_validated() -> None:
    with pytest.raises(TrainConfigError, match="noise_multiplier must be > 0"):
        DPTraining(noise_multiplier=0.0, max_grad_norm=1.0).validate()
    with pytest.raises(TrainConfigError, match="max_grad_norm must be > 0"):
        DPTraining(noise_multiplier=1.0, max_grad_norm=-1.0).validate()


def _result(n: int = 200, accuracy: float = 0.8) -> EvalResult:
    hist = np.zeros((2, 2, 200), np.int64)
    hist[1, 1, 150] = hist[0, 0, 49] = n // 2   # positives score high, negatives low
    hist[1, 0, 50] = hist[0, 1, 149] = n // 2
    return EvalResult(n=n, loss=0.3, accuracy=accuracy, auc=1.0, score_histograms=hist)


def test_metric_noise_noise_matches_the_charged_mechanism() -> None:
    rng = np.random.default_rng(0)
    exact = _result()
    draws = [add_metric_noise(exact, eval_noise_multiplier=5.0, correct=160, rng=rng) for _ in range(2000)]
    std = sensitivity(2, multi_label=False) * 5.0
    assert std == pytest.approx(5.0 * np.sqrt(3))  # one histogram channel + n + correct
    counts = np.array([d.n for d in draws])
    assert counts.std() == pytest.approx(std, rel=0.1) and counts.mean() == pytest.approx(200, abs=1)
    assert np.mean([d.accuracy for d in draws]) == pytest.approx(0.8, abs=0.01)
    assert np.mean([d.auc for d in draws]) == pytest.approx(1.0, abs=0.05)


def test_metric_noise_hides_the_exact_values() -> None:
    exact = _result()
    released = add_metric_noise(exact, eval_noise_multiplier=5.0, correct=160)
    assert released.score_histograms.shape == (2, 2, 4)  # coarse bins only
    assert (released.n, released.accuracy) != (exact.n, exact.accuracy)
    pooled = pool([released, add_metric_noise(exact, eval_noise_multiplier=5.0, correct=160)])
    assert pooled.score_histograms.shape == (2, 2, 4)


def test_metric_noise_multiclass_and_multilabel(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images = phantoms[1].images[:60]
    model = build_model("small-cnn", in_channels=1, num_classes=3, image_size=28, seed=0)
    multi = evaluate_model(model, images, np.arange(60) % 3)
    out = add_metric_noise(multi, eval_noise_multiplier=2.0, correct=round(multi.accuracy * 60))
    assert out.score_histograms.shape == (3, 2, 4) and 0 <= out.accuracy <= 1
    assert sensitivity(3, multi_label=False) == pytest.approx(np.sqrt(5))
    labels = (np.arange(120).reshape(60, 2) % 3 == 0).astype(np.int64)
    ml = evaluate_model(build_model("small-cnn", in_channels=1, num_classes=2, image_size=28), images,
                  labels, multi_label=True)
    out = add_metric_noise(ml, eval_noise_multiplier=2.0)
    assert out.multi_label and sensitivity(2, multi_label=True) == pytest.approx(np.sqrt(3))


def test_hash_split_moves_only_the_added_image() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (300, 1, 8, 8), dtype=np.uint8)
    train, val = hash_split(images, val_fraction=0.2, seed=3)
    grown = np.concatenate([images, rng.integers(0, 255, (1, 1, 8, 8), dtype=np.uint8)])
    train2, val2 = hash_split(grown, val_fraction=0.2, seed=3)
    assert set(val2) - {300} == set(val) and set(train2) - {300} == set(train)
    assert 30 < len(val) < 90  # about a fifth


def _spread(exact: EvalResult, correct: int, *, sigma: float, bins: int, sites: int, rng: np.random.Generator
            ) -> tuple[list[EvalResult], EvalResult]:
    """Many pooled releases of *sites* copies of *exact*, and one of them to read the sd from."""
    pooled = [pool([add_metric_noise(exact, eval_noise_multiplier=sigma, correct=correct, rng=rng, bins=bins)
                    for _ in range(sites)]) for _ in range(400)]
    return pooled, pooled[0]


def test_the_reported_noise_sd_is_the_spread_of_the_release(phantoms: tuple[ImageSet, ImageSet]) -> None:
    """The "± (noise sd)" medsyft evaluate prints is computed from released numbers only; it must
    be the spread the noise really gives the pooled accuracy and AUC."""
    from domains.shared.counts import noise_sd

    rng = np.random.default_rng(1)
    images, labels = phantoms[1].images[:200], phantoms[1].labels[:200]
    exact = evaluate_model(_model(), images, labels)
    correct = round(exact.accuracy * exact.n)
    pooled, one = _spread(exact, correct, sigma=2.0, bins=10, sites=3, rng=rng)
    acc_sd, auc_sd = noise_sd(one, eval_noise_multiplier=2.0, sites=3, rng=rng)
    assert np.std([p.accuracy for p in pooled]) == pytest.approx(acc_sd, rel=0.25)
    assert np.std([p.auc for p in pooled]) == pytest.approx(auc_sd, rel=0.35)
    assert one.score_histograms.shape == (2, 2, 10)  # the bins asked for


def test_released_bins_must_divide_the_histogram() -> None:
    from domains.runtime.errors import TrainingError

    with pytest.raises(TrainingError, match="must divide 200"):
        add_metric_noise(_result(), eval_noise_multiplier=1.0, correct=160, bins=7)
