"""The default synthetic dataset: labelled as synthetic, deterministic, fast, learnable, not trivial."""

from __future__ import annotations

import time

import numpy as np
import pytest

from domains.data.formats import ImageSet
from domains.data.phantom import generate_chest_phantoms
from domains.errors import PublishError


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for the positive class (ties are rare for floats)."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
    pos = int(y.sum())
    neg = len(y) - pos
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _logistic_accuracy(train: ImageSet, test: ImageSet) -> float:
    """Held-out accuracy of L2-regularized logistic regression on standardized pixels."""
    x_train = train.images.reshape(len(train), -1).astype(np.float64)
    x_test = test.images.reshape(len(test), -1).astype(np.float64)
    mu, sd = x_train.mean(0), x_train.std(0) + 1.0
    z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
    w, b, y = np.zeros(z_train.shape[1]), 0.0, train.labels
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-(z_train @ w + b)))
        w -= 0.1 * (z_train.T @ (p - y) / len(y) + 1e-2 * w)
        b -= 0.1 * float((p - y).mean())
    return float((((z_test @ w + b) > 0) == test.labels).mean())


@pytest.fixture(scope="module")
def phantoms_3000() -> tuple[ImageSet, float]:
    generate_chest_phantoms(2)  # import MONAI outside the timed call
    start = time.perf_counter()
    s = generate_chest_phantoms(3000, seed=0)
    return s, time.perf_counter() - start


def test_phantom_is_labelled_synthetic() -> None:
    s = generate_chest_phantoms(10, seed=3)
    assert s.synthetic and s.label_names == ["normal", "pneumonia"] and not s.multi_label
    assert "synthetic" in s.modality and "not real patient data" in s.modality
    assert s.images.shape == (10, 1, 28, 28) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int64 and s.describe()["synthetic"] is True


def test_phantom_deterministic_for_seed() -> None:
    a, b = generate_chest_phantoms(40, seed=7), generate_chest_phantoms(40, seed=7)
    c = generate_chest_phantoms(40, seed=8)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_phantom_pneumonia_fraction(fraction: float) -> None:
    s = generate_chest_phantoms(50, seed=1, pneumonia_fraction=fraction)
    assert s.class_counts()["pneumonia"] == round(50 * fraction)


@pytest.mark.parametrize("size", [28, 64, 100, 256])
def test_phantom_any_size(size: int) -> None:
    s = generate_chest_phantoms(4, image_size=size, seed=2)
    assert s.images.shape == (4, 1, size, size)
    # a chest, not a blank: dark corners (air), brighter centre (body)
    corner, centre = s.images[:, 0, :3, :3].mean(), s.images[:, 0, size // 3 : -size // 3].mean()
    assert centre > corner + 30


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"n": 0}, "n must be"),
    ({"n": 5, "image_size": 4}, "image_size"),
    ({"n": 5, "pneumonia_fraction": 1.5}, "pneumonia_fraction"),
])  # fmt: skip
def test_phantom_bad_arguments(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(PublishError, match=problem):
        generate_chest_phantoms(**kwargs)  # type: ignore[arg-type]


def test_phantom_3000_is_fast(phantoms_3000: tuple[ImageSet, float]) -> None:
    _, seconds = phantoms_3000
    assert seconds < 10, f"3000 phantoms at 28 px took {seconds:.1f} s"


def test_phantom_mean_intensity_does_not_separate(phantoms_3000: tuple[ImageSet, float]) -> None:
    s, _ = phantoms_3000
    auc = _auc(s.images.mean(axis=(1, 2, 3)), s.labels)
    assert max(auc, 1 - auc) < 0.75, f"mean-intensity AUC {auc:.3f} makes the task trivial"


def test_phantom_learnable_above_chance(phantoms_3000: tuple[ImageSet, float]) -> None:
    s, _ = phantoms_3000
    idx = np.arange(len(s))
    accuracy = _logistic_accuracy(s.subset(idx[:2000]), s.subset(idx[2000:]))
    assert 0.65 < accuracy < 0.97, f"logistic regression accuracy {accuracy:.3f}"
