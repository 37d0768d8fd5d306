"""Name-keyed registry of the networks a federation can train, all ready for DP-SGD.

The orchestrator and every datasite build the same network from a name and the dataset's
shape, so only a name and numpy weights travel. :func:`build_model` makes whatever a factory
returns Opacus-compatible (BatchNorm becomes GroupNorm, activations stop working in place) and
refuses a network that Opacus still rejects, so private training never fails late on a site.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from domains.runtime.device import CHANNELS_LAST_ATTR
from domains.runtime.errors import TrainingError, UnknownModel

ModelFactory = Callable[..., nn.Module]
"""Called as ``factory(*, in_channels, num_classes, image_size)``; returns a fresh network."""

_SMALL_IMAGE = 64  # below this the ImageNet stem (stride 2 + max-pool) leaves too few pixels
_MIN_IMAGE = 8  # smallest side every built-in network still reduces to at least 1x1
_GROUP_NORM = ("group", {"num_groups": 32})
_RELU = ("relu", {"inplace": False})
_REGISTRY: dict[str, ModelFactory] = {}
_CHANNELS_LAST: set[str] = set()


def register_model(
    name: str, factory: ModelFactory, *, force: bool = False, channels_last: bool = False
) -> None:
    """Add ``factory`` under ``name``; replacing an existing entry needs ``force=True``.

    *channels_last*: train (without DP: Opacus's per-sample gradients are wrong in that layout)
    and evaluate it with channels-last weights on the CPU
    (:func:`domains.runtime.device.memory_format`), for networks measured faster so.

    Raises:
        ValueError: when ``name`` is taken and ``force`` is false, so that two plug-ins cannot
            silently shadow each other and sites end up training different networks.
    """
    if name in _REGISTRY and not force:
        raise ValueError(f"model {name!r} is already registered; pass force=True to replace it")
    _REGISTRY[name] = factory
    (_CHANNELS_LAST.add if channels_last else _CHANNELS_LAST.discard)(name)


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def default_model(image_size: int) -> str:
    """The model to use when the data scientist names none: small and fast for small images.

    >>> default_model(28), default_model(224)
    ('small-cnn', 'resnet18')
    """
    return "small-cnn" if image_size <= _SMALL_IMAGE else "resnet18"


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, seed: int = 0
) -> nn.Module:
    """Build a registered network with deterministic initial weights, ready for Opacus.

    Args:
        name: one of :func:`available_models`.
        in_channels: image channels (1 grey, 3 RGB).
        num_classes: number of output logits ``K`` (2 for a binary task).
        image_size: square image side in px; small images get a stem that keeps resolution.
        seed: the same seed gives the same initial weights; the global torch RNG is restored.

    Raises:
        UnknownModel: for a name that is not registered (the message lists those that are).
        TrainingError: for sizes below 1 (channels, classes) or 8 (image), or a network that
            Opacus cannot train even after its automatic fixes.

    >>> model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    >>> model(torch.zeros(4, 1, 28, 28)).shape
    torch.Size([4, 2])
    """
    if name not in _REGISTRY:
        raise UnknownModel(f"unknown model {name!r}; choose one of {available_models()}")
    _check_shape(in_channels, num_classes, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    model = _make_private_ready(model, name)
    if name in _CHANNELS_LAST:
        setattr(model, CHANNELS_LAST_ATTR, True)  # a plain attribute: not in the state dict
    return model


def _check_shape(in_channels: int, num_classes: int, image_size: int) -> None:
    if in_channels < 1:
        raise TrainingError(f"in_channels must be >= 1 (got {in_channels}); use 1 or 3")
    if num_classes < 1:
        raise TrainingError(f"num_classes must be >= 1 (got {num_classes}); use the label count")
    if image_size < _MIN_IMAGE:
        raise TrainingError(f"image_size must be >= {_MIN_IMAGE} (got {image_size}); resize images")


def _make_private_ready(model: nn.Module, name: str) -> nn.Module:
    """Swap BatchNorm for GroupNorm and in-place activations for copies, then validate.

    In-place ops on the output of a hooked layer break the backward hooks Opacus uses for
    per-sample gradients ("Output 0 of BackwardHookFunction is a view and is being modified
    inplace"), which ``ModuleValidator`` does not detect, so they are switched off here.
    Validation is Opacus' own: supported layers, and no trainable layer holding buffers
    (their values would mix samples and escape the privacy accounting).
    """
    from opacus import GradSampleModule  # lazy: opacus takes seconds to import
    from opacus.validators import ModuleValidator

    _replace_batchnorm(model)
    model.train()
    if not ModuleValidator.is_valid(model):  # e.g. LSTM -> DPLSTM; fix() deep-copies via pickle
        model = ModuleValidator.fix(model)
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]  # a plain bool attribute
    errors = [*ModuleValidator.validate(model, strict=False), *GradSampleModule.validate(model, strict=False)]
    if errors:
        raise TrainingError(
            f"model {name!r} cannot be trained with DP-SGD: {'; '.join(map(str, errors))}; "
            "register a factory that uses GroupNorm and supported layers"
        )
    return model


def _replace_batchnorm(model: nn.Module) -> None:
    """BatchNorm -> GroupNorm in place, as Opacus' fixer does but without copying the model."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                groups = math.gcd(32, child.num_features)
                setattr(parent, child_name, nn.GroupNorm(groups, child.num_features, affine=child.affine))


def _small_cnn(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Three 3x3 convolutions and a two-layer head, about 47k weights at 28 px.

    The 4x4 pooled grid before the head keeps where a finding lies (which lung field), which a
    global average would throw away; it also makes the head independent of ``image_size``.
    """
    del image_size
    return nn.Sequential(
        *_conv_block(in_channels, 16), nn.MaxPool2d(2),
        *_conv_block(16, 32), nn.MaxPool2d(2),
        *_conv_block(32, 32),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(cout // 4, cout), nn.ReLU()]


def _resnet18(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from monai.networks.nets import ResNet
    from monai.networks.nets.resnet import get_inplanes

    small = image_size < _SMALL_IMAGE
    block: Any = _BasicBlock  # MONAI's annotation names its own block classes only
    return ResNet(
        block, [2, 2, 2, 2], get_inplanes(), spatial_dims=2,
        n_input_channels=in_channels, num_classes=num_classes,
        conv1_t_size=3 if small else 7, conv1_t_stride=1 if small else 2, no_max_pool=small,
        act=_RELU, norm=_GROUP_NORM,
    )


class _BasicBlock(nn.Module):
    """MONAI's 2-D ``ResNetBlock`` made Opacus-safe: GroupNorm, residual added out of place.

    MONAI's block adds the residual in place (``out += x``), which breaks Opacus' hooks, and
    its ``ResNet`` does not pass ``norm`` on to the blocks. Same attribute names as MONAI's,
    so state-dict keys read the same.
    """

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, spatial_dims: int = 2, stride: int = 1,
        downsample: nn.Module | None = None, **_: object,
    ) -> None:
        super().__init__()
        del spatial_dims  # built-in models are 2-D
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.GroupNorm(math.gcd(32, planes), planes)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.GroupNorm(math.gcd(32, planes), planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(out + residual)


def _densenet121(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from monai.networks.nets import DenseNet121

    model = DenseNet121(
        spatial_dims=2, in_channels=in_channels, out_channels=num_classes, act=_RELU, norm=_GROUP_NORM
    )
    if image_size < _SMALL_IMAGE:  # three transitions halve 7 px (28 px after the stem) to 0
        model.features.conv0 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(model.features.conv0.weight)  # as MONAI initialises its convs
        model.features.pool0 = nn.Identity()
    return model


register_model("small-cnn", _small_cnn, channels_last=True)
register_model("resnet18", _resnet18)
register_model("densenet121", _densenet121)
