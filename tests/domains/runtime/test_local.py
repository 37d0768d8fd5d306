"""Local training: learns the phantoms, repeats exactly for a seed, refuses bad settings, and
applies FedProx's proximal term with and without DP."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from torch import nn

import domains.runtime.device as device_module
import domains.runtime.local as local_module
from domains.data.formats.imageset import ImageSet
from domains.runtime import LocalResult, build_model, get_weights, to_tensor_images, train_local
from domains.runtime.evaluation import evaluate_model
from domains.runtime.proximal import ProximalTerm, dp_step
from domains.runtime.weights import flatten
from domains.shared import TrainConfig, TrainConfigError, TrainingError
from domains.shared.spec import DPTraining
from privacy.accounting import compact, epsilon, training_entry

if TYPE_CHECKING:
    from conftest import Trained  # fixtures' type only; never imported at run time


def test_train_local_small_cnn_learns_phantoms(trained: Trained) -> None:
    """3 epochs on 1500 phantoms beat chance (0.5) clearly on 600 held-out phantoms."""
    held_out = evaluate_model(trained.model, trained.test.images, trained.test.labels)
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
    assert evaluate_model(model, images, labels, multi_label=True).accuracy > 0.8


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


# -- FedProx: the proximal term, with and without DP --------------------------------------------
DP = DPTraining(noise_multiplier=1.0, max_grad_norm=1.0)


@pytest.fixture
def fixed_dp_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """DP draws its sampling and noise seeds from the OS; fixed here so two runs can be compared."""
    fixed = SimpleNamespace(randbits=lambda bits: 12345)
    monkeypatch.setattr(local_module, "secrets", fixed)  # Poisson sampling's seed
    monkeypatch.setattr(device_module, "secrets", fixed)  # the noise generator's seed


def _trained_vector(config: TrainConfig, images: np.ndarray, labels: np.ndarray,
                    dp: DPTraining | None) -> tuple[np.ndarray, LocalResult]:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    result = train_local(model, images, labels, config=config, dp=dp)
    return flatten(get_weights(model))[0], result


def _global_vector() -> np.ndarray:
    return flatten(get_weights(build_model("small-cnn", in_channels=1, num_classes=2, image_size=28,
                                           seed=0)))[0]


@pytest.mark.parametrize("dp", [None, DP], ids=["plain", "dp"])
def test_train_local_proximal_mu_zero_trains_as_before(
    phantoms: tuple[ImageSet, ImageSet], dp: DPTraining | None, fixed_dp_randomness: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """μ = 0, and a config stored before the field existed, train bit for bit alike, and never
    build a proximal term (so nothing of FedProx runs: training is what it was)."""
    images, labels = phantoms[0].images[:160], phantoms[0].labels[:160]
    stored: dict[str, Any] = {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
              "weight_decay": 0.0, "seed": 3}  # a train dict as older job constants hold it
    before, _ = _trained_vector(TrainConfig(**stored), images, labels, dp)

    def no_term(*args: object, **kwargs: object) -> None:
        raise AssertionError("μ = 0 must not build a proximal term")

    monkeypatch.setattr(ProximalTerm, "__init__", no_term)
    after, _ = _trained_vector(TrainConfig(**stored, proximal_mu=0.0), images, labels, dp)
    assert TrainConfig(**stored).proximal_mu == 0.0
    assert np.array_equal(before, after)


@pytest.mark.parametrize("dp", [None, DP], ids=["plain", "dp"])
def test_train_local_proximal_term_keeps_weights_near_the_global_model(
    phantoms: tuple[ImageSet, ImageSet], dp: DPTraining | None, fixed_dp_randomness: None,
) -> None:
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    start = _global_vector()
    drift = {}
    for mu in (0.0, 10.0):
        config = TrainConfig(epochs=2, batch_size=16, seed=3, proximal_mu=mu)
        drift[mu] = float(np.linalg.norm(_trained_vector(config, images, labels, dp)[0] - start))
    print(f"\n||w - w_global|| after 2 epochs ({'DP' if dp else 'plain'}): {drift}")
    assert drift[10.0] < 0.5 * drift[0.0]  # measured here: 0.09 vs 1.09 plain, 0.41 vs 1.28 under DP


def _one_dp_step(mode: str, *, mu: float = 2.0, lr: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One Opacus DP-SGD step from weights moved away from the global model; the weights after it,
    and the pull μ(w − w_global) at the start. *mode*: "none" (no term), "loss" (the term added to
    the loss, the wrong way) or "dp_step" (the term added after privatizing)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    term = ProximalTerm(model, mu=mu)  # anchored at the global model
    moved = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=moved))
    pull = mu * (flatten(get_weights(model))[0] - _global_vector())
    private = GradSampleModule(model)
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=lr), noise_multiplier=1.0,
                            max_grad_norm=1.0, expected_batch_size=8,
                            generator=torch.Generator().manual_seed(0))
    batch = torch.Generator().manual_seed(2)
    images = torch.rand((8, 1, 28, 28), generator=batch)
    labels = torch.randint(0, 2, (8,), generator=batch)
    loss = nn.CrossEntropyLoss()(private(images), labels)
    if mode == "loss":
        loss = loss + term.penalty()
    loss.backward()
    dp_step(optimizer, term if mode == "dp_step" else None)
    private.remove_hooks()
    return flatten(get_weights(model))[0], pull


def test_dp_step_applies_the_proximal_gradient_opacus_would_drop() -> None:
    plain, pull = _one_dp_step("none")
    in_loss, _ = _one_dp_step("loss")
    proximal, _ = _one_dp_step("dp_step")
    assert np.array_equal(in_loss, plain)  # Opacus replaced p.grad: a loss term is silently lost
    assert np.linalg.norm(pull) > 0.1
    # SGD: the update moved by exactly lr · μ(w − w_global) more, towards the global model
    np.testing.assert_allclose(plain - proximal, 0.1 * pull, rtol=1e-4, atol=1e-6)


def test_dp_proximal_term_costs_no_epsilon(phantoms: tuple[ImageSet, ImageSet]) -> None:
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    histories = {}
    for mu in (0.0, 1.0):
        config = TrainConfig(epochs=2, batch_size=32, proximal_mu=mu)
        histories[mu] = _trained_vector(config, images, labels, DP)[1].privacy_history
    planned = training_entry(noise_multiplier=1.0, n_samples=200, batch_size=32, epochs=2)
    assert compact(histories[1.0]) == compact(histories[0.0]) == [planned]
    assert epsilon(histories[1.0], delta=1e-5) == epsilon(histories[0.0], delta=1e-5) > 0


@pytest.mark.parametrize("mu", [-0.01, float("nan"), float("inf"), "0.01", True, None])
def test_train_config_refuses_bad_proximal_mu(mu: object) -> None:
    with pytest.raises(TrainConfigError) as caught:
        TrainConfig(proximal_mu=mu).validate()  # type: ignore[arg-type]
    message = str(caught.value)
    assert message == f"proximal_mu must be a finite number >= 0 (got {mu!r})"
    assert "\n" not in message


@pytest.mark.parametrize("dp", [None, DP], ids=["plain", "dp"])
def test_training_on_indices_of_a_memory_map_is_training_on_the_gathered_split(
    phantoms: tuple[ImageSet, ImageSet], dp: DPTraining | None, fixed_dp_randomness: None,
    tmp_path: Path,
) -> None:
    """A site trains on its store's split batch by batch: bit for bit what the copied split gives."""
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")  # read-only, as the store loads it
    split = np.sort(np.random.default_rng(1).choice(200, size=150, replace=False))
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3)
    copied, first = _trained_vector(config, images[split], labels[split], dp)
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    second = train_local(model, mapped, labels, indices=split, config=config, dp=dp)
    assert np.array_equal(copied, flatten(get_weights(model))[0])
    assert second.n_samples == first.n_samples == 150 and second.steps == first.steps


@pytest.mark.parametrize("bad", [np.array([], np.int64), np.array([0, 200]), np.array([[1]]),
                                 np.array([0.5])])
def test_indices_outside_the_images_are_refused(phantoms: tuple[ImageSet, ImageSet], bad: np.ndarray) -> None:
    images, labels = phantoms[0].images[:200], phantoms[0].labels[:200]
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    with pytest.raises(TrainingError, match="indices must"):
        train_local(model, images, labels, indices=bad, config=TrainConfig(epochs=1, batch_size=16))
