"""Bring images of different sizes and colour layouts to one ``(N, C, H, W)`` uint8 array.

A model trained across hospitals needs one input shape, so every source is resized to a
common square or to its own most common size. Resizing is refused when it would distort
anatomy (aspect ratio off by more than :data:`MAX_ASPECT_CHANGE`) or would invent detail
from a thumbnail (side under :data:`MIN_SIDE` px): a silently squashed chest X-ray trains a
worse model than an error that asks for cropped images.

MONAI is imported inside the functions: it takes seconds to import, and the CLI only
needs it when images are actually loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from domains.data.formats.imageset import publish_error

MAX_ASPECT_CHANGE = 1.25
MIN_SIDE = 8
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
_CHUNK = 1024


def harmonize(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    image_size: int | None = None,
    channels: int | None = None,
) -> np.ndarray:
    """Stack 2D images ``(H, W)`` or ``(H, W, C)`` of any size into ``(N, C, H, W)`` uint8.

    Args:
        images: uint8 arrays, grey ``(H, W)`` / ``(H, W, 1)`` or colour ``(H, W, 3)``.
        names: the file each image came from, used in error messages.
        image_size: square target side; default the most common ``(H, W)`` among the images.
        channels: 1 or 3; default 3 when any image is colour, else 1.

    Returns:
        The stacked array, allocated once.

    Raises:
        PublishError: naming the first image that cannot be brought to the target size.

    >>> harmonize([np.zeros((10, 12), np.uint8)], ["a.png"], channels=3).shape
    (1, 3, 10, 12)
    """
    if not images:
        raise publish_error("(no files)", "no images to harmonize", "add images to the source")
    grey = [_as_hwc(im, name) for im, name in zip(images, names, strict=True)]
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in grey]
    target = _target_size(sizes, image_size)
    n_ch = channels or (3 if any(im.shape[2] == 3 for im in grey) else 1)
    for size, name in zip(sizes, names, strict=True):
        check_resizable(size, target, name)  # every image is checked before the first is resized
    out = np.empty((len(grey), n_ch, *target), dtype=np.uint8)
    for i, (im, name) in enumerate(zip(grey, names, strict=True)):
        out[i] = preprocess_image(im, name, size=target, channels=n_ch)
    return out


def preprocess_image(image: np.ndarray, name: str, *, size: tuple[int, int], channels: int) -> np.ndarray:
    """One decoded image ``(H, W)`` or ``(H, W, C)`` uint8 as the model sees it: ``(C, *size)`` uint8.

    The one preprocessing of a published image, and of every image ``medsyft predict`` is given:
    grey to RGB by repeating, RGB to grey by BT.601 luma, then area-downsampling or bilinear
    upsampling to *size*, refused when it would distort the aspect ratio or blow up a thumbnail.
    (:func:`harmonize_batch` does the same to an array of equal-sized images in chunks; a test holds
    them equal.) The network then reads it as ``uint8 / 255`` (``domains.runtime.local``).

    >>> preprocess_image(np.full((8, 8, 3), 200, np.uint8), "a.png", size=(16, 16), channels=1).shape
    (1, 16, 16)
    """
    hwc = _as_hwc(image, name)
    check_resizable((int(hwc.shape[0]), int(hwc.shape[1])), size, name)
    return resize_chw(_convert_channels(np.moveaxis(hwc, -1, 0), channels), size)


def harmonize_batch(
    images: np.ndarray, name: str, *, image_size: int | None = None, channels: int | None = None
) -> np.ndarray:
    """Like :func:`harmonize` for an array of equal-sized images ``(N, H, W[, C])``.

    Works in chunks so that a 100k-image MedMNIST split is resized without a float copy
    of the whole set; when nothing changes the result is a plain transpose.
    """
    hwc = images[..., None] if images.ndim == 3 else images
    if hwc.ndim != 4 or hwc.shape[-1] not in (1, 3) or hwc.dtype != np.uint8:
        raise publish_error(
            name,
            f"images must be (N, H, W) or (N, H, W, 3) uint8 (got {images.dtype} {images.shape})",
            "export the images as 8-bit grey or RGB",
        )
    size = (int(hwc.shape[1]), int(hwc.shape[2]))
    target = (image_size, image_size) if image_size else size
    check_resizable(size, target, name)
    n_ch = channels or int(hwc.shape[-1])
    out = np.empty((hwc.shape[0], n_ch, *target), dtype=np.uint8)
    for start in range(0, hwc.shape[0], _CHUNK):
        chunk = _convert_channels(np.moveaxis(hwc[start : start + _CHUNK], -1, 1), n_ch)
        flat = chunk.reshape(-1, *size)  # resize treats the first axis as channels
        out[start : start + len(chunk)] = resize_chw(flat, target).reshape(-1, n_ch, *target)
    return out


def check_resizable(size: tuple[int, int], target: tuple[int, int], name: str) -> None:
    """Refuse a resize that would distort anatomy or blow up a thumbnail."""
    h, w = size
    if min(h, w) < MIN_SIDE:
        raise publish_error(
            name,
            f"image is {h}x{w} px, smaller than {MIN_SIDE} px on a side",
            "use the original, larger image",
        )
    change = (w / h) / (target[1] / target[0])
    if max(change, 1 / change) > MAX_ASPECT_CHANGE:
        raise publish_error(
            name,
            f"image is {h}x{w} px but the set is brought to {target[0]}x{target[1]} px; "
            f"resizing would distort its aspect ratio by {max(change, 1 / change):.2f}x "
            f"(more than {MAX_ASPECT_CHANGE}x)",
            "crop the source images to a common aspect ratio first",
        )


def resize_chw(chw: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``target`` and round back to uint8 (area down, bilinear up)."""
    if chw.shape[1:] == target:
        return chw.astype(np.uint8, copy=False)
    import torch
    from monai.transforms.spatial.array import Resize

    shrinking = chw.shape[1] * chw.shape[2] > target[0] * target[1]
    mode = "area" if shrinking else "bilinear"
    resized = Resize(target, mode=mode)(torch.from_numpy(chw.astype(np.float32)))
    arr = torch.as_tensor(resized).detach().cpu().numpy()
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def minmax_to_uint8(values: np.ndarray) -> np.ndarray:
    """Stretch an image's own min..max to 0..255 (a flat image becomes all zeros).

    Used when a file says nothing about how to display it (no DICOM window, 16-bit PNG):
    detector data often fills only 10-12 of 16 bits and would otherwise look black.
    """
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _as_hwc(im: np.ndarray, name: str) -> np.ndarray:
    hwc = im[..., None] if im.ndim == 2 else im
    if hwc.ndim != 3 or hwc.shape[2] not in (1, 3) or hwc.dtype != np.uint8:
        raise publish_error(
            name,
            f"expected a 2D grey or RGB uint8 image (got {im.dtype} {im.shape})",
            "export it as an 8-bit grey or RGB image",
        )
    return hwc


def _target_size(sizes: list[tuple[int, int]], image_size: int | None) -> tuple[int, int]:
    if image_size:
        return (image_size, image_size)
    return Counter(sizes).most_common(1)[0][0]


def _convert_channels(chw: np.ndarray, n_ch: int) -> np.ndarray:
    """Grey to RGB by repeating; RGB to grey by BT.601 luma (what a grey monitor shows).

    The channel axis is the third from the end, so ``(C, H, W)`` and ``(B, C, H, W)`` both work.
    """
    if chw.shape[-3] == n_ch:
        return chw
    if n_ch == 3:
        return np.repeat(chw, 3, axis=-3)
    luma = np.einsum("c,...chw->...hw", _LUMA, chw.astype(np.float32))
    return np.expand_dims(np.clip(np.rint(luma), 0, 255).astype(np.uint8), -3)
