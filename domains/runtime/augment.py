"""Training-time augmentation: each image gets its own random warp every time a batch uses it.

``TrainConfig.augment = "affine"`` warps every image of a training batch by a random rotation
(±10°), isotropic scale (±10%) and shift (±10% of the side), the usual light geometry for chest
X-rays (no flips: the heart's side is anatomy, not noise). The warp is MONAI's batched
:class:`monai.networks.layers.AffineTransform` on the batch as a whole. On one CPU thread here,
a per-image ``monai.transforms.RandAffine`` costs about 44 ms a batch of 64, more than twice the
small CNN's training step (18 ms); the batched warp costs about 0.5 ms
(``benchmarks/augment_cost.py``).

Why this is safe under DP-SGD: image *i*'s warp is drawn from the generator alone, never from
another image, so its per-sample gradient is still a function of image *i* only and clipping
bounds it as before; the ε accounting is unchanged. Under DP the generator is seeded from the
operating system (as the noise is), so a scientist cannot replay it.
"""

from __future__ import annotations

import math

import torch

MAX_ROTATION = math.radians(10.0)
MAX_SCALE = 0.10
MAX_SHIFT = 0.10  # of the image side; AffineTransform's normalized coordinates span 2 per side


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """*images* ``(B, C, H, W)`` float, warped per image for ``kind = "affine"``, as-is for ``"none"``.

    The random draws come from *generator* (on the CPU, so the same seed gives the same warps on
    any device); the warp runs on the images' device.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(3, 1, 8, 8)
    >>> augment_batch(x, "none", g) is x, augment_batch(x, "affine", g).shape
    (True, torch.Size([3, 1, 8, 8]))
    """
    if kind == "none" or len(images) == 0:
        return images
    if kind != "affine":
        raise ValueError(f"unknown augment {kind!r}; choose 'none' or 'affine'")
    from monai.networks.layers import AffineTransform

    theta = random_affines(len(images), generator).to(images.device, images.dtype)
    warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warp(images, theta)


def random_affines(n: int, generator: torch.Generator) -> torch.Tensor:
    """*n* random ``(2, 3)`` affine matrices in normalized coordinates: rotation, scale, shift.

    >>> theta = random_affines(1000, torch.Generator().manual_seed(1))
    >>> bool(theta[:, :, 2].abs().max() <= 2 * MAX_SHIFT)
    True
    """
    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0

    angle = uniform(n) * MAX_ROTATION
    scale = 1.0 + uniform(n) * MAX_SCALE
    shift = uniform(n, 2) * (2.0 * MAX_SHIFT)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    rows = (torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1))
    return torch.stack(rows, dim=1)
