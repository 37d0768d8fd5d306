"""Local training: learns the phantoms, repeats exactly for a seed, and refuses bad settings."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from domains.formats.imageset import ImageSet
from domains.training import (
    TrainConfig,
    TrainConfigError,
    TrainingError,
    build_model,
    get_weights,
    to_tensor_images,
    train_local,
)
from domains.training.evaluate import evaluate

if TYPE_CHECKING:
    from conftest import Trained  # fixtures' type only; never imported at run time


def test_train_local_small_cnn_learns_phantoms(trained: Trained) -> None:
    """3 epochs on 1500 phantoms beat chance (0.5) clearly on 600 held-out phantoms."""
    held_out = evaluate(trained.model, trained.test.images, trained.test.labels)
    print(f"\nsmall-cnn 3 epochs x 1500 images: {trained.result.seconds:.2f} s, "
          f"held-out accuracy {held_out.accuracy:.3f}, AUC {held_out.auc:.3f}")
    assert held_out.accuracy > 0.7
    assert held_out.auc > 0.8
    assert trained.result.n_samples == 1500
    assert trained.result.steps == 3 * math.ceil(1500 / 32)
    assert 0 < trained.result.mean_loss < math.log(2)  # below the loss of guessing 50/50


def test_train_local_one_epoch_of_1000_images_is_fast(phantoms: tuple[ImageSet, ImageSet]) -> None:
    """The default model must keep a federated round cheap: about a second per 1000 images."""
    train = phantoms[0].subset(np.arange(1000))
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    result = train_local(model, train.images, train.labels, config=TrainConfig(epochs=1))
    print(f"\nsmall-cnn, one epoch over 1000 28px images: {result.seconds:.3f} s")
    assert result.seconds < 10  # generous: CI machines are shared; typically well under 1 s


def _run(config: TrainConfig, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    train_local(model, images, labels, config=config)
    return get_weights(model)


def test_train_local_same_seed_same_weights(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    rng_before = torch.random.get_rng_state()
    a = _run(TrainConfig(seed=5, batch_size=16), images, labels)
    b = _run(TrainConfig(seed=5, batch_size=16), images, labels)
    c = _run(TrainConfig(seed=6, batch_size=16), images, labels)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "global RNG must be left as it was"
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_train_local_sgd_with_momentum_reduces_loss(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:400], phantoms[0].labels[:400]
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1)
    first = train_local(model, images, labels, config=config)
    later = train_local(model, images, labels, config=replace(config, epochs=3, seed=1))
    assert later.mean_loss < first.mean_loss


def test_train_local_multi_label_path(phantoms: tuple[ImageSet, ImageSet]) -> None:
    """(N, K) 0/1 labels train with BCE: label 0 = pneumonia (learnable), 1 = its complement."""
    images, y = phantoms[0].images[:600], phantoms[0].labels[:600]
    labels = np.stack([y, 1 - y, np.zeros_like(y)], axis=1).astype(np.uint8)
    model = build_model("small-cnn", in_channels=1, num_classes=3, image_size=28)
    result = train_local(model, images, labels, config=TrainConfig(epochs=2), multi_label=True)
    assert result.n_samples == 600 and result.steps == 2 * math.ceil(600 / 32)
    assert 0 < result.mean_loss < math.log(2)
    assert evaluate(model, images, labels, multi_label=True).accuracy > 0.8


def test_train_local_restores_mode_and_leaves_arrays(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:64].copy(), phantoms[0].labels[:64].copy()
    images.setflags(write=False)  # arrays from a store may be read-only
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28).eval()
    train_local(model, images, labels, config=TrainConfig())
    assert not model.training
    assert np.array_equal(images, phantoms[0].images[:64])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(epochs=0), r"epochs must be >= 1 \(got 0\)"),
        (TrainConfig(batch_size=0), r"batch_size must be >= 1 \(got 0\)"),
        (TrainConfig(optimizer="rmsprop"), r"unknown optimizer 'rmsprop'; choose one of \['adam', 'sgd'\]"),
        (TrainConfig(lr=0.0), r"lr must be > 0 \(got 0.0\)"),
        (TrainConfig(lr=float("nan")), r"lr must be > 0 \(got nan\)"),
        (TrainConfig(momentum=1.0), r"momentum must be in \[0, 1\) \(got 1.0\)"),
        (TrainConfig(weight_decay=-0.1), r"weight_decay must be >= 0 \(got -0.1\)"),
        (TrainConfig(epochs=1.5), r"epochs must be >= 1 \(got 1.5\)"),  # type: ignore[arg-type]
        (TrainConfig(seed=-1), r"seed must be an integer >= 0 \(got -1\)"),
    ],
)
def test_train_config_validate_names_the_rule(config: TrainConfig, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        config.validate()


def test_train_config_defaults_are_valid() -> None:
    TrainConfig().validate()


def test_train_local_refuses_bad_config_before_training() -> None:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    before = get_weights(model)
    with pytest.raises(TrainConfigError):
        train_local(model, np.zeros((4, 1, 28, 28), np.uint8), np.zeros(4, np.int64),
                    config=TrainConfig(lr=-1.0))
    assert all(np.array_equal(get_weights(model)[k], v) for k, v in before.items())


@pytest.mark.parametrize(
    ("images", "labels", "multi_label", "message"),
    [
        (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64), False, r"\(N, C, H, W\) uint8"),
        (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64), False, r"\(N, C, H, W\) uint8"),
        (np.zeros((4, 1, 28, 28), np.uint8), np.zeros(3, np.int64), False, "4 images, 3 labels"),
        (np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64), False, "at least one image"),
        (np.zeros((4, 1, 28, 28), np.uint8), np.zeros(4, np.int64), True, r"\(N, K\) 0/1"),
        (np.zeros((4, 1, 28, 28), np.uint8), np.array([0, 1, 4, 1]), False, "num_classes"),
        (np.zeros((4, 1, 28, 28), np.uint8), np.zeros((4, 3), np.uint8), True, "num_classes"),
    ],
)
def test_train_local_bad_arrays_refused(
    images: np.ndarray, labels: np.ndarray, multi_label: bool, message: str
) -> None:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28).eval()
    with pytest.raises(TrainingError, match=message):
        train_local(model, images, labels, config=TrainConfig(), multi_label=multi_label)
    assert not model.training  # mode restored even when training stops early


def test_train_local_diverging_loss_reported() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    with pytest.raises(TrainingError, match="lower lr"):
        config = TrainConfig(optimizer="sgd", lr=1e30, epochs=2)
        train_local(model, images, rng.integers(0, 2, 64), config=config)


def test_to_tensor_images_scales_to_unit_range() -> None:
    images = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3)
    out = to_tensor_images(images)
    assert out.dtype == torch.float32 and out.shape == (1, 1, 1, 3)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    with pytest.raises(TrainingError):
        to_tensor_images(images.astype(np.float32))


def test_train_local_timing_is_measured(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:64], phantoms[0].labels[:64]
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    start = time.perf_counter()
    result = train_local(model, images, labels, config=TrainConfig())
    assert 0 < result.seconds <= time.perf_counter() - start
    assert result.to_dict() == {"n_samples": 64, "mean_loss": result.mean_loss, "steps": 2,
                                "seconds": result.seconds, "privacy_history": []}
