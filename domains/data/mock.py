"""The mock an outside data scientist sees in place of a hospital's private images.

What the mock is built from:

* images: synthetic chest phantoms from :func:`domains.data.phantom.generate_chest_phantoms`
  (a pool of at most :data:`POOL_SIZE`, generated from ``seed`` alone on a stream of
  its own), resized to the
  private height and width, repeated to the private channel count, then drawn with
  replacement with light Gaussian noise so that a large mock stays cheap;
* labels: drawn uniformly from the label schema (multi-label: each label an independent
  fair coin), so they carry neither the private labels nor the private class balance.

What it takes from the private data: only the images' shape and dtype, the labels' shape
and dtype, and the label names (the schema). No pixel, label value or statistic of the
private set (mean, prevalence, class counts) enters the mock, so code written against it
runs unchanged on the private data without revealing any individual image.
"""

from __future__ import annotations

import numpy as np

from domains.data.formats.harmonize import resize_chw
from domains.data.formats.imageset import ImageSet
from domains.data.phantom import generate_chest_phantoms

POOL_SIZE = 256
# Its own random stream, so that a mock of the default phantom dataset (seed 0) is not
# built from the very phantoms it stands in for.
_MOCK_STREAM = 0x6D6F636B
_NOISE_LEVELS = 3.0  # standard deviation of the per-pixel noise, in uint8 grey levels


def make_mock(imageset: ImageSet, *, seed: int = 0, images: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mock images and labels with the private set's shapes, dtypes and schema only.

    Args:
        imageset: the private set; only its shapes, dtypes and ``label_names`` are read.
        seed: seeds the phantoms, the sampling, the noise and the labels.
        images: how many mock images to make (default: as many as the private set has; a
            publish that keeps the pixels out of PySyft makes a sample).

    Returns:
        ``(images, labels)`` with the dtypes of ``imageset.images`` and ``imageset.labels``,
        the labels' shape and, by default, the images' shape.

    >>> from domains.data.phantom import generate_chest_phantoms
    >>> private = generate_chest_phantoms(5, seed=7)
    >>> images, labels = make_mock(private)
    >>> images.shape == private.images.shape, labels.dtype == private.labels.dtype
    (True, True)
    """
    rng = np.random.default_rng(seed)
    n, channels, height, width = imageset.images.shape
    mock = _mock_images(n if images is None else min(images, n), channels, (height, width), seed, rng)
    return mock.astype(imageset.images.dtype, copy=False), _mock_labels(imageset, rng)


def _mock_images(
    n: int, channels: int, size: tuple[int, int], seed: int, rng: np.random.Generator
) -> np.ndarray:
    if n == 0:
        return np.zeros((0, channels, *size), dtype=np.uint8)
    side = min(max(max(size), 28), 256)
    pool_seed = int(np.random.SeedSequence([seed, _MOCK_STREAM]).generate_state(1)[0])
    pool = generate_chest_phantoms(min(n, POOL_SIZE), image_size=side, seed=pool_seed).images
    if pool.shape[2:] != size:
        pool = resize_chw(pool[:, 0], size)[:, None]
    pick = rng.integers(0, len(pool), n)
    out = np.empty((n, channels, *size), dtype=np.uint8)
    for start in range(0, n, 1024):  # bounded float work for very large mocks
        idx = pick[start : start + 1024]
        noisy = pool[idx].astype(np.float32)
        noisy += rng.normal(0.0, _NOISE_LEVELS, noisy.shape).astype(np.float32)
        out[start : start + len(idx)] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def _mock_labels(imageset: ImageSet, rng: np.random.Generator) -> np.ndarray:
    private = imageset.labels
    # multi-label: a fair coin per label; multi-class: a uniform class index
    high = 2 if imageset.multi_label else len(imageset.label_names)
    return rng.integers(0, high, private.shape).astype(private.dtype)
