"""Synthetic chest X-ray phantoms: the default dataset, needing no download and no patient.

Each phantom is a thorax ellipse with two dark lung fields, a mediastinum and heart shadow,
faint rib bands and lung texture, varied per image (scale, shift, rotation, contrast,
exposure, noise). "pneumonia" adds one to three blurred, patchy opacities inside a lung
field whose size and contrast vary widely, so some are faint. Small bright spots (nodules,
ECG leads) and hilar shadows appear in both classes so that "any bright blob" is not the
answer, and the exposure varies more than an opacity brightens the image, so the mean
pixel value alone barely separates the classes.

The goal is a set that a small CNN learns well above chance but not perfectly, so that
federated and private training show visible, non-trivial differences.

Everything is computed on whole batches with numpy (and MONAI's ``GaussianSmooth`` and
``Resize``) at a working size of at least 56 px, then area-downsampled to ``image_size``.
"""

from __future__ import annotations

import math

import numpy as np

from domains.data.formats.imageset import ImageSet
from domains.errors import PublishError

LABEL_NAMES = ["normal", "pneumonia"]
MODALITY = "synthetic chest phantom (not real patient data)"
_MIN_WORK = 56  # below this the anatomy is drawn at a multiple and downsampled
_CHUNK_PIXELS = 4_000_000  # float32 working memory per chunk, about 16 MB per array
_Param = np.ndarray | float  # a per-image (b, 1, 1) column or one value for all images


def generate_chest_phantoms(
    n: int, *, image_size: int = 28, seed: int = 0, pneumonia_fraction: float = 0.5
) -> ImageSet:
    """Generate ``n`` labelled synthetic chest phantoms ``(n, 1, image_size, image_size)``.

    Args:
        n: number of images (at least 1).
        image_size: square side in px; tuned for 28..256.
        seed: the same seed (and arguments) gives the same images and labels.
        pneumonia_fraction: share of "pneumonia" images, rounded to a whole count.

    Returns:
        An :class:`ImageSet` with ``synthetic=True`` and labels ``["normal", "pneumonia"]``.

    Raises:
        PublishError: for ``n < 1``, a size outside 8..512 or a fraction outside [0, 1].

    >>> s = generate_chest_phantoms(4, seed=1)
    >>> s.images.shape, s.label_names, s.synthetic
    ((4, 1, 28, 28), ['normal', 'pneumonia'], True)
    """
    _check_args(n, image_size, pneumonia_fraction)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int64)
    labels[: round(n * pneumonia_fraction)] = 1
    labels = rng.permutation(labels)
    work = image_size * math.ceil(_MIN_WORK / image_size)
    chunk = max(1, _CHUNK_PIXELS // (work * work))
    images = np.empty((n, 1, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, chunk):
        sick = labels[start : start + chunk].astype(bool)
        batch = _draw(sick, work, rng)
        images[start : start + len(sick), 0] = _to_uint8(batch, image_size)
    return ImageSet(
        images=images,
        labels=labels,
        label_names=list(LABEL_NAMES),
        multi_label=False,
        modality=MODALITY,
        source=(
            f"generate_chest_phantoms(n={n}, image_size={image_size}, seed={seed}, "
            f"pneumonia_fraction={pneumonia_fraction})"
        ),
        synthetic=True,
    )


def _check_args(n: int, image_size: int, fraction: float) -> None:
    where = "generate_chest_phantoms"
    if n < 1:
        raise PublishError(f"{where}: n must be at least 1 (got {n}); ask for some images")
    if not 8 <= image_size <= 512:
        raise PublishError(f"{where}: image_size must be in 8..512 (got {image_size}); use 28")
    if not 0.0 <= fraction <= 1.0:
        raise PublishError(
            f"{where}: pneumonia_fraction must be in [0, 1] (got {fraction}); use e.g. 0.5"
        )


def _draw(sick: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Float images in about [0, 1], shape ``(b, size, size)``, for one chunk."""
    b = len(sick)
    x, y = _pose(b, size, rng)
    lungs = _lungs(x, y, b, rng)
    img = _body(x, y, lungs, b, rng)
    img += _texture(b, size, rng, sigma=size / 40) * lungs * rng.uniform(0.015, 0.035, (b, 1, 1))
    img += _opacities(x, y, lungs, b, size, rng) * sick[:, None, None]
    img += _spots(x, y, b, rng)
    return _expose(img, b, size, rng)


def _col(rng: np.random.Generator, lo: float, hi: float, b: int) -> np.ndarray:
    return rng.uniform(lo, hi, (b, 1, 1)).astype(np.float32)


def _pose(b: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates per image: a random scale, shift and small rotation of the grid."""
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    u, v = grid[None, None, :], grid[None, :, None]
    scale, theta = _col(rng, 0.85, 1.08, b), _col(rng, -0.12, 0.12, b)
    du, dv = _col(rng, -0.07, 0.07, b), _col(rng, -0.07, 0.07, b)
    cos, sin = np.cos(theta), np.sin(theta)
    x = ((u - du) * cos + (v - dv) * sin) / scale
    y = (-(u - du) * sin + (v - dv) * cos) / scale
    return x, y


def _ellipse(x: np.ndarray, y: np.ndarray, cx: _Param, cy: _Param, ax: _Param, ay: _Param,
             edge: float = 0.05) -> np.ndarray:
    """Soft 0..1 mask of an ellipse (a sigmoid across its border, ``edge`` wide)."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) / edge, 30.0)))


def _lungs(x: np.ndarray, y: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    ax, ay = _col(rng, 0.24, 0.32, b), _col(rng, 0.52, 0.66, b)
    gap = _col(rng, 0.33, 0.42, b)
    left = _ellipse(x, y, -gap, -0.08, ax, ay, 0.08)
    right = _ellipse(x, y, gap, -0.08, ax * _col(rng, 0.9, 1.05, b), ay, 0.08)
    return np.maximum(left, right)


def _body(x: np.ndarray, y: np.ndarray, lungs: np.ndarray, b: int,
          rng: np.random.Generator) -> np.ndarray:
    """Thorax, lungs, mediastinum, heart, hila and ribs, before exposure."""
    thorax = _ellipse(x, y, 0.0, 0.05, _col(rng, 0.78, 0.9, b), _col(rng, 0.88, 1.0, b), 0.04)
    img = 0.06 + 0.55 * thorax - _col(rng, 0.28, 0.4, b) * lungs * thorax
    img += 0.18 * np.exp(-(x / 0.1) ** 2) * thorax  # mediastinum
    img += _col(rng, 0.12, 0.22, b) * _ellipse(
        x, y, _col(rng, 0.04, 0.14, b), _col(rng, 0.3, 0.4, b),
        _col(rng, 0.28, 0.36, b), _col(rng, 0.2, 0.27, b), 0.1,
    )  # heart
    for side in (-1.0, 1.0):  # hila: bright vessels at the lung roots, both classes
        img += _col(rng, 0.04, 0.14, b) * _gauss(x, y, side * 0.2, -0.05, _col(rng, 0.05, 0.1, b))
    rib_phase = _col(rng, 0.0, 2 * np.pi, b)
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * 5.5 * (y - 0.35 * x**2) + rib_phase)
    img += _col(rng, 0.03, 0.07, b) * ribs**3 * lungs
    return img.astype(np.float32)


def _gauss(x: np.ndarray, y: np.ndarray, cx: _Param, cy: _Param, sigma: _Param) -> np.ndarray:
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def _texture(b: int, size: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Smooth zero-mean noise with unit spread (lung markings, patchiness of opacities)."""
    import torch
    from monai.transforms.intensity.array import GaussianSmooth

    white = torch.from_numpy(rng.standard_normal((b, size, size), dtype=np.float32))
    smooth = torch.as_tensor(GaussianSmooth(sigma)(white)).numpy()
    return smooth / (smooth.std(axis=(1, 2), keepdims=True) + 1e-6)


def _opacities(x: np.ndarray, y: np.ndarray, lungs: np.ndarray, b: int, size: int,
               rng: np.random.Generator) -> np.ndarray:
    """One to three patchy, blurred consolidations, each centred inside a lung field."""
    out = np.zeros_like(x * lungs)
    count = 1 + rng.binomial(2, 0.3, b)
    patchy = np.clip(0.8 + 0.35 * _texture(b, size, rng, sigma=size / 25), 0.0, None)
    for k in range(3):
        side = rng.choice([-1.0, 1.0], (b, 1, 1))
        radius, angle = np.sqrt(_col(rng, 0.0, 1.0, b)), _col(rng, 0.0, 2 * np.pi, b)
        cx = side * 0.37 + 0.18 * radius * np.cos(angle)
        cy = -0.08 + 0.42 * radius * np.sin(angle)
        sigma = np.exp(_col(rng, np.log(0.15), np.log(0.35), b))
        # sqrt(U) puts most opacities at moderate contrast and leaves a tail of faint ones
        amp = (0.08 + 0.62 * np.sqrt(_col(rng, 0.0, 1.0, b))) * (count[:, None, None] > k)
        out += amp * _gauss(x, y, cx, cy, sigma)
    return out * lungs * patchy


def _spots(x: np.ndarray, y: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Nodules and ECG leads: small bright spots anywhere in the chest, in both classes."""
    out = np.zeros_like(x + y)
    for _ in range(4):
        present = rng.random((b, 1, 1)) < 0.4
        cx, cy = _col(rng, -0.75, 0.75, b), _col(rng, -0.8, 0.8, b)
        amp = _col(rng, 0.15, 0.5, b) * present
        out += amp * _gauss(x, y, cx, cy, _col(rng, 0.015, 0.035, b))
    return out


def _expose(img: np.ndarray, b: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast and gamma of the acquisition, then detector noise."""
    img = np.clip(img * _col(rng, 0.7, 1.3, b) + _col(rng, -0.12, 0.12, b), 0.0, None)
    img = img ** _col(rng, 0.8, 1.25, b)
    return img + _col(rng, 0.01, 0.04, b) * rng.standard_normal(img.shape, dtype=np.float32)


def _to_uint8(batch: np.ndarray, image_size: int) -> np.ndarray:
    if batch.shape[-1] != image_size:
        import torch
        from monai.transforms.spatial.array import Resize

        resized = Resize((image_size, image_size), mode="area")(torch.from_numpy(batch))
        batch = torch.as_tensor(resized).numpy()
    return np.clip(np.rint(batch * 255.0), 0, 255).astype(np.uint8)
