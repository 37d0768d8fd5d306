"""The model registry: every network builds for the shapes sites have, and is DP-SGD ready."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from domains.runtime import (
    UnknownModel,
    available_models,
    build_model,
    default_model,
    get_weights,
    register_model,
)
from domains.runtime import models as registry
from domains.shared import TrainingError

BUILTIN = ["densenet121", "resnet18", "small-cnn"]
# (channels, classes, image size): grey binary MedMNIST-like, and RGB multi-class at 64 px
SHAPES = [(1, 2, 28), (3, 5, 64)]


class RunningScale(nn.Linear):
    """A trainable layer with a buffer: its state would mix samples, so Opacus refuses it."""

    def __init__(self) -> None:
        super().__init__(4, 2)
        self.register_buffer("running_mean", torch.zeros(4))


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register models without leaving them behind for other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_available_models_lists_builtins() -> None:
    assert set(BUILTIN) <= set(available_models())
    assert available_models() == sorted(available_models())


def test_default_model_small_images_get_small_cnn() -> None:
    assert default_model(28) == default_model(64) == "small-cnn"
    assert default_model(65) == default_model(224) == "resnet18"


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize(("channels", "classes", "size"), SHAPES)
def test_build_model_forward_gives_one_logit_per_class(
    name: str, channels: int, classes: int, size: int
) -> None:
    model = build_model(name, in_channels=channels, num_classes=classes, image_size=size)
    assert ModuleValidator.validate(model, strict=True) == []
    with torch.no_grad():
        out = model.eval()(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", BUILTIN)
def test_build_model_per_sample_gradients_work(name: str) -> None:
    """Opacus' hooks fail on in-place ops, which ModuleValidator does not catch: run them."""
    model = build_model(name, in_channels=1, num_classes=2, image_size=8)
    wrapped = GradSampleModule(model)
    try:
        wrapped(torch.rand(3, 1, 8, 8)).sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad_sample is not None and p.grad_sample.shape == (3, *p.shape), pname
    finally:
        wrapped._close()


def test_small_cnn_is_small_and_fast_sized() -> None:
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    assert 20_000 <= sum(p.numel() for p in model.parameters()) <= 120_000


@pytest.mark.parametrize("name", BUILTIN)
def test_build_model_same_seed_same_weights(name: str) -> None:
    state = torch.random.get_rng_state()
    a = get_weights(build_model(name, in_channels=1, num_classes=2, image_size=28, seed=3))
    b = get_weights(build_model(name, in_channels=1, num_classes=2, image_size=28, seed=3))
    c = get_weights(build_model(name, in_channels=1, num_classes=2, image_size=28, seed=4))
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG must be left as it was"
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)


def test_build_model_unknown_name_lists_choices() -> None:
    with pytest.raises(UnknownModel, match=r"unknown model 'vgg'; choose one of \[.*'small-cnn'\]"):
        build_model("vgg", in_channels=1, num_classes=2, image_size=28)
    with pytest.raises(ValueError):  # callers may catch it as a plain ValueError
        build_model("vgg", in_channels=1, num_classes=2, image_size=28)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0, "num_classes": 2, "image_size": 28}, "in_channels must be >= 1"),
        ({"in_channels": 1, "num_classes": 0, "image_size": 28}, "num_classes must be >= 1"),
        ({"in_channels": 1, "num_classes": 2, "image_size": 4}, "image_size must be >= 8"),
    ],
)
def test_build_model_bad_shape_is_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        build_model("small-cnn", **kwargs)


@pytest.mark.usefixtures("isolated_registry")
def test_register_model_duplicate_refused_unless_forced() -> None:
    with pytest.raises(ValueError, match="already registered; pass force=True"):
        register_model("small-cnn", lambda **kw: nn.Linear(1, 1))
    def linear(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))

    register_model("small-cnn", linear, force=True)
    model = build_model("small-cnn", in_channels=1, num_classes=3, image_size=8)
    assert model(torch.rand(1, 1, 2, 2)).shape == (1, 3)


@pytest.mark.usefixtures("isolated_registry")
def test_register_model_batchnorm_plugin_becomes_dp_ready() -> None:
    def factory(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        )

    register_model("bn-net", factory)
    model = build_model("bn-net", in_channels=1, num_classes=2, image_size=8)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert ModuleValidator.validate(model, strict=True) == []


@pytest.mark.usefixtures("isolated_registry")
def test_register_model_unfixable_plugin_refused() -> None:
    register_model("buffered", lambda **kw: RunningScale())
    with pytest.raises(TrainingError, match="model 'buffered' cannot be trained with DP-SGD"):
        build_model("buffered", in_channels=1, num_classes=2, image_size=8)
