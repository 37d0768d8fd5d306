"""Fixtures for the training tests: learnable phantom sets and one small CNN trained on them.

Generating phantoms and training take a few seconds, so both are made once per session and
shared by the local-training and evaluation tests.

Everything here runs on one torch thread. On a CPU shared with other processes, torch's
worker threads spend most of their time waiting for each other: 3 epochs of the small CNN
took 20-35 s on 2 threads and 1.5-3.5 s on 1 thread on the same busy 2-core machine. The
library leaves the thread count to its caller; here the tests are the caller, and they
restore the setting so that other test folders run as configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from domains.data.formats.imageset import ImageSet
from domains.data.phantom import generate_chest_phantoms
from domains.runtime import LocalResult, build_model, train_local
from domains.shared import TrainConfig


@dataclass
class Trained:
    """A small CNN after :func:`train_local` on ``train``, with the run's report."""

    model: nn.Module
    result: LocalResult
    train: ImageSet
    test: ImageSet


@contextmanager
def single_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def phantoms() -> tuple[ImageSet, ImageSet]:
    """1500 training and 600 held-out 28 px chest phantoms (different seeds, so disjoint)."""
    with single_torch_thread():
        return generate_chest_phantoms(1500, image_size=28, seed=1), generate_chest_phantoms(600, seed=2)


@pytest.fixture(scope="session")
def trained(phantoms: tuple[ImageSet, ImageSet]) -> Trained:
    train, test = phantoms
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=0)
    config = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=1e-3, seed=0)
    with single_torch_thread():
        result = train_local(model, train.images, train.labels, config=config)
    return Trained(model, result, train, test)
