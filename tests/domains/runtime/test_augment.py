"""Augmentation and the learning-rate schedule: each image's warp is its own (what DP-SGD needs),
plain training stays repeatable from the seed, DP training draws its warps from the OS, and a
cosine schedule reaches the sites' and the baseline's configuration of every round."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from domains.data.formats.imageset import ImageSet
from domains.runtime import build_model, get_weights, train_local
from domains.runtime.augment import MAX_SHIFT, augment_batch, random_affines
from domains.runtime.weights import flatten
from domains.shared import TrainConfig, TrainConfigError
from domains.shared.spec import DPTraining
from privacy.accounting import compact, training_entry


def _bright_square(n: int) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    return x


def test_affine_warps_each_image_differently_and_keeps_it_an_image() -> None:
    x = _bright_square(16)
    out = augment_batch(x, "affine", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    assert not torch.equal(out, x)
    assert len({out[i].numpy().tobytes() for i in range(16)}) == 16  # one warp per image
    mass = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))  # ±10% scale: the square keeps ~its area
    assert float(mass.min()) > 0.7 and float(mass.max()) < 1.3


def test_an_images_warp_depends_on_no_other_image() -> None:
    """DP-SGD bounds a gradient per image; the warp of image i must not read image j."""
    x = torch.rand(8, 1, 28, 28)
    y = x.clone()
    y[1:] = torch.rand(7, 1, 28, 28)  # every other image changed
    a = augment_batch(x, "affine", torch.Generator().manual_seed(3))
    b = augment_batch(y, "affine", torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_the_warp_is_the_seeds_and_none_is_the_identity() -> None:
    x = torch.rand(4, 1, 28, 28)
    first = augment_batch(x, "affine", torch.Generator().manual_seed(7))
    assert torch.equal(first, augment_batch(x, "affine", torch.Generator().manual_seed(7)))
    assert augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="unknown augment 'mixup'"):
        augment_batch(x, "mixup", torch.Generator())
    theta = random_affines(500, torch.Generator().manual_seed(0))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    assert float(angles.abs().max()) <= math.radians(10) + 1e-6
    assert float(theta[:, :, 2].abs().max()) <= 2 * MAX_SHIFT


def _train(train: ImageSet, config: TrainConfig, dp: DPTraining | None = None) -> np.ndarray:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    result = train_local(model, train.images, train.labels, config=config, dp=dp)
    if dp is not None:  # the warps change nothing Opacus counts
        assert compact(result.privacy_history) == [training_entry(
            noise_multiplier=dp.noise_multiplier, n_samples=len(train.labels),
            batch_size=config.batch_size, epochs=config.epochs)]
    return flatten(get_weights(model))[0]


def test_augmented_plain_training_repeats_for_a_seed(phantoms: tuple[ImageSet, ImageSet]) -> None:
    train = phantoms[0].subset(np.arange(300))
    config = TrainConfig(epochs=1, batch_size=32, augment="affine")
    once, again = _train(train, config), _train(train, config)
    assert np.array_equal(once, again)
    assert not np.array_equal(once, _train(train, TrainConfig(epochs=1, batch_size=32)))


def test_augmented_dp_training_draws_fresh_warps(phantoms: tuple[ImageSet, ImageSet]) -> None:
    train = phantoms[0].subset(np.arange(300))
    config = TrainConfig(epochs=1, batch_size=32, augment="affine")
    dp = DPTraining(noise_multiplier=1.0, max_grad_norm=1.0)
    assert not np.array_equal(_train(train, config, dp), _train(train, config, dp))


def test_augmentation_still_learns(phantoms: tuple[ImageSet, ImageSet]) -> None:
    from domains.runtime.evaluation import evaluate_model

    train, test = phantoms[0].subset(np.arange(1000)), phantoms[1]
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    train_local(model, train.images, train.labels, config=TrainConfig(epochs=3, augment="affine"))
    assert evaluate_model(model, test.images, test.labels).auc > 0.8


def test_cosine_schedule_per_round() -> None:
    config = TrainConfig(lr=0.2, seed=4, lr_schedule="cosine")
    rates = [config.for_round(r, 5).lr for r in range(1, 6)]
    assert rates[0] == 0.2 and all(a > b > 0 for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(0.2 * (1 + math.cos(math.pi * 4 / 5)) / 2)
    assert [config.for_round(r, 5).seed for r in (1, 5)] == [5, 9]
    assert {TrainConfig(lr=0.2).for_round(r, 5).lr for r in range(1, 6)} == {0.2}
    with pytest.raises(TrainConfigError, match=r"round must be in 1\.\.5 \(got 6\)"):
        config.for_round(6, 5)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("augment", "mixup", "unknown augment 'mixup'; choose one of ['none', 'affine']"),
    ("lr_schedule", "step", "unknown lr_schedule 'step'; choose one of ['constant', 'cosine']"),
])
def test_unknown_augment_or_schedule_is_refused(field: str, value: str, message: str) -> None:
    with pytest.raises(TrainConfigError) as err:
        TrainConfig(**{field: value}).validate()  # type: ignore[arg-type]
    assert str(err.value) == message


def test_multiplicity_needs_a_warp_and_a_bound() -> None:
    TrainConfig(augment="affine", augment_multiplicity=4).validate()
    with pytest.raises(TrainConfigError, match='augment_multiplicity 4 needs augment = "affine"'):
        TrainConfig(augment_multiplicity=4).validate()
    with pytest.raises(TrainConfigError, match=r"augment_multiplicity must be an integer in 1\.\.32"):
        TrainConfig(augment="affine", augment_multiplicity=0).validate()


def test_copies_are_averaged_into_one_gradient_per_image_before_clipping() -> None:
    """Opacus's per-sample gradients over k copies of each image, averaged by mean_over_copies, are
    each image's gradient of its mean loss over its k copies, computed here without Opacus."""
    from opacus import GradSampleModule

    from domains.runtime.local import _copies, mean_over_copies

    k, batch = 3, 4
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    x = _copies(torch.rand(batch, 1, 28, 28), k) + 0.05 * torch.rand(batch * k, 1, 28, 28)  # k "warps"
    y = _copies(torch.tensor([0, 1, 1, 0]), k)
    reference = copy.deepcopy(model)  # the same weights, without Opacus's hooks
    private = GradSampleModule(model)
    torch.nn.functional.cross_entropy(private(x), y).backward()
    mean_over_copies(private, k)
    params = [p for p in model.parameters() if p.requires_grad]
    plain = [p for p in reference.parameters() if p.requires_grad]
    for i in range(batch):
        rows = slice(i * k, (i + 1) * k)
        expected = torch.autograd.grad(torch.nn.functional.cross_entropy(reference(x[rows]), y[rows]), plain)
        for param, want in zip(params, expected, strict=True):
            assert param.grad_sample.shape[0] == batch  # type: ignore[attr-defined]
            torch.testing.assert_close(param.grad_sample[i], want, rtol=1e-4, atol=1e-6)  # type: ignore[attr-defined]
    private._close()


def test_dp_training_with_multiplicity_spends_what_it_would_without(
        phantoms: tuple[ImageSet, ImageSet]) -> None:
    train = phantoms[0].subset(np.arange(300))
    dp = DPTraining(noise_multiplier=1.0, max_grad_norm=1.0)
    config = TrainConfig(epochs=1, batch_size=32, augment="affine", augment_multiplicity=3)
    weights = _train(train, config, dp)
    assert np.isfinite(weights).all()  # _train checks the history: one clipped gradient per image
