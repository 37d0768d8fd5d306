"""The mock: same shapes, dtypes and schema as the private set, and nothing of its pixels."""

from __future__ import annotations

import time

import numpy as np

from domains.data.formats import ImageSet
from domains.data.formats.medmnist_info import MEDMNIST_2D
from domains.data.mock import make_mock
from domains.data.phantom import generate_chest_phantoms


def _private(n: int, channels: int, h: int, w: int, seed: int = 0) -> ImageSet:
    g = np.random.default_rng(seed)
    return ImageSet(
        images=g.integers(0, 256, (n, channels, h, w), dtype=np.uint8),
        labels=g.integers(0, 3, n),
        label_names=["a", "b", "c"],
        multi_label=False,
        modality="CR",
        source="private",
    )


def _no_image_shared(mock: np.ndarray, private: np.ndarray) -> bool:
    flat_mock = {m.tobytes() for m in mock}
    return not any(p.tobytes() in flat_mock for p in private)


def test_mock_matches_shapes_dtypes_schema() -> None:
    private = _private(30, 1, 28, 28)
    images, labels = make_mock(private)
    assert images.shape == private.images.shape and images.dtype == private.images.dtype
    assert labels.shape == private.labels.shape and labels.dtype == private.labels.dtype
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_mock_of_default_phantoms_shares_no_image() -> None:
    private = generate_chest_phantoms(300, seed=0)
    images, _ = make_mock(private, seed=0)
    assert _no_image_shared(images, private.images)


def test_mock_ignores_private_pixels_and_labels() -> None:
    """Two private sets that differ in every pixel and label give the same mock."""
    a, b = _private(20, 1, 32, 32, seed=1), _private(20, 1, 32, 32, seed=2)
    assert not np.array_equal(a.labels, b.labels)
    mock_a, mock_b = make_mock(a, seed=5), make_mock(b, seed=5)
    assert np.array_equal(mock_a[0], mock_b[0]) and np.array_equal(mock_a[1], mock_b[1])
    assert not np.array_equal(make_mock(a, seed=6)[0], mock_a[0])


def test_mock_colour_non_square() -> None:
    private = _private(12, 3, 32, 40)
    images, _ = make_mock(private)
    assert images.shape == (12, 3, 32, 40)
    assert np.array_equal(images[:, 0], images[:, 2])  # grey phantoms repeated to RGB
    assert _no_image_shared(images, private.images)


def test_mock_multi_label_uses_fair_coins_not_prevalence() -> None:
    names = list(MEDMNIST_2D["chestmnist"].label_names)
    private = ImageSet(
        images=np.zeros((400, 1, 28, 28), np.uint8),
        labels=np.zeros((400, 14), np.uint8),  # no finding at all in the private set
        label_names=names,
        multi_label=True,
        modality="chest X-ray",
        source="private",
    )
    images, labels = make_mock(private)
    assert labels.shape == (400, 14) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1}
    assert 0.4 < labels.mean() < 0.6
    assert _no_image_shared(images, private.images)


def test_mock_large_n_is_fast() -> None:
    private = _private(20000, 1, 28, 28)
    start = time.perf_counter()
    images, labels = make_mock(private)
    assert time.perf_counter() - start < 5
    assert images.shape == (20000, 1, 28, 28) and len(np.unique(labels)) == 3


def test_mock_small_images() -> None:
    private = _private(5, 1, 12, 12)
    images, _ = make_mock(private)
    assert images.shape == (5, 1, 12, 12) and images.std() > 5
