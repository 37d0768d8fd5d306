"""Which device a datasite trains and evaluates on: its GPU when it has one, else its CPU.

``MEDSYFT_DEVICE`` (default ``auto``) is the hospital's choice: ``auto`` takes CUDA when torch
sees a GPU, ``cpu`` never does, ``cuda`` or ``cuda:N`` insists on that GPU and fails clearly
without it. The model moves to the device for a call and back to the CPU afterwards, so
everything that travels (weights, encrypted updates) is made from CPU tensors as before. DP-SGD's
noise comes from a generator on the same device: Opacus draws it where the gradients are.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

from domains.runtime.errors import TrainingError

ENV = "MEDSYFT_DEVICE"


def site_device(choice: str | None = None) -> torch.device:
    """The device named by *choice* (default: ``MEDSYFT_DEVICE``, else ``auto``).

    Raises:
        TrainingError: for a name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or a
            GPU this datasite does not have.

    >>> site_device("cpu")
    device(type='cpu')
    """
    name = (os.environ.get(ENV, "auto") if choice is None else choice).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"{ENV}={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise TrainingError(f"{ENV}={name!r}: medsyft trains on cpu or cuda only; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise TrainingError(f"{ENV}={name} but torch sees no CUDA GPU on this datasite; set {ENV}=auto "
                            "or cpu, or install a CUDA build of torch")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainingError(f"{ENV}={name} but this datasite has {torch.cuda.device_count()} GPU(s); "
                            f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def noise_generator(device: torch.device) -> torch.Generator:
    """A generator for DP-SGD's noise on *device*, seeded by the operating system (never by a
    seed the scientist knows, which would let them subtract the noise)."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


CHANNELS_LAST_ATTR = "_medsyft_channels_last"
"""Set (True) on a network by :func:`domains.runtime.models.build_model` when its registry entry
asks for channels-last convolutions on the CPU."""
CHANNELS_LAST_ENV = "MEDSYFT_CHANNELS_LAST"  # "0": every network keeps PyTorch's default layout


def memory_format(model: nn.Module, device: torch.device, *, private: bool = False) -> torch.memory_format:
    """The layout *model*'s 4-D weights take for a call on *device*.

    Channels-last on the CPU for a network marked with :data:`CHANNELS_LAST_ATTR` (the small CNN:
    its max-pooling is slow in PyTorch's default layout there), else the default. Measured here on
    one torch thread: an epoch of plain training 0.76x, evaluation 0.6x; MONAI's ResNet-18 1.10x,
    so it is not marked. The weights that travel are the same numbers in either layout, and the
    model returns to the default layout after the call.

    Never for *private* (DP-SGD) training: Opacus 1.6's per-sample gradients of a convolution
    whose input is channels-last are wrong. For the small CNN's second and third convolutions,
    every value was off; each image's row still depended on that image alone, so the clipping
    bound held, but the model learned from scrambled gradients. A test compares the per-sample
    gradients of the DP path with autograd's, one image at a time
    (``tests/domains/runtime/test_device.py``).
    """
    wanted = getattr(model, CHANNELS_LAST_ATTR, False) and device.type == "cpu" and not private
    if not wanted or os.environ.get(CHANNELS_LAST_ENV, "1") == "0":
        return torch.contiguous_format
    return torch.channels_last


@contextmanager
def on_device(model: nn.Module, device: torch.device, *, private: bool = False) -> Iterator[nn.Module]:
    """Move *model* to *device*, in its :func:`memory_format` (*private*: for DP-SGD), for the
    block; afterwards back to where it was and to PyTorch's default layout, also on error."""
    home = next(model.parameters(), torch.empty(0)).device
    layout = memory_format(model, device, private=private)
    movable = cast(Any, model)  # torch's stubs omit Module.to's memory_format
    movable.to(device, memory_format=layout)
    try:
        yield model
    finally:
        if layout == torch.contiguous_format:
            model.to(home)
        else:
            movable.to(home, memory_format=torch.contiguous_format)
