"""What augmentation costs per batch: MONAI's per-image ``RandAffine`` against the batched warp
medsyft uses (:mod:`domains.runtime.augment`), side by side, beside one small-CNN training step.

Usage::

    .venv/bin/python benchmarks/augment_cost.py [--batch 64] [--size 28] [--repeats 20]

One torch thread, as a datasite trains. Prints milliseconds per batch for each and their ratio;
the numbers go to docs/training.md and the module docstring of domains/runtime/augment.py.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def per_batch_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # the first call pays imports and caches
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from monai.transforms import RandAffine

    from domains.runtime.augment import MAX_ROTATION, MAX_SCALE, MAX_SHIFT, augment_batch
    from domains.runtime.models import build_model

    x = torch.rand(args.batch, 1, args.size, args.size)
    shift = MAX_SHIFT * args.size
    per_image = RandAffine(prob=1.0, rotate_range=(MAX_ROTATION,), translate_range=(shift, shift),
                           scale_range=(MAX_SCALE, MAX_SCALE), padding_mode="zeros", cache_grid=True,
                           spatial_size=(args.size, args.size))
    per_image.set_random_state(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=args.size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    targets = torch.randint(0, 2, (args.batch,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), targets).backward()
        optimizer.step()

    rows = {
        "MONAI RandAffine, one image at a time": per_batch_ms(
            lambda: torch.stack([torch.as_tensor(per_image(img)) for img in x]), args.repeats),
        "batched AffineTransform (medsyft)": per_batch_ms(
            lambda: augment_batch(x, "affine", generator), args.repeats),
        "one small-CNN training step, for scale": per_batch_ms(step, args.repeats),
    }
    for what, ms in rows.items():
        print(f"{what:42s} {ms:8.2f} ms per batch of {args.batch}")
    ratio = rows["MONAI RandAffine, one image at a time"] / rows["batched AffineTransform (medsyft)"]
    print(f"per-image / batched: {ratio:.0f}x")


if __name__ == "__main__":
    main()
