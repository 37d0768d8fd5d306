"""A datasite trains on its GPU when it has one; the code path is the same on the CPU (tested here).

No GPU exists on these machines: these tests run the device plumbing on the CPU and check the
choice logic with torch's CUDA probe monkeypatched (no CUDA call is made).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.runtime import device as dev
from domains.runtime.errors import TrainingError
from domains.runtime.evaluation import evaluate_model
from domains.runtime.local import train_local
from domains.runtime.models import build_model
from domains.runtime.weights import get_weights
from domains.shared.spec import DPTraining, TrainConfig


def test_auto_takes_the_gpu_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dev.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.site_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.site_device() == torch.device("cuda")
    monkeypatch.setenv(dev.ENV, "cpu")
    assert dev.site_device() == torch.device("cpu")  # the hospital can keep it off the GPU


@pytest.mark.parametrize(("choice", "message"), [
    ("cuda", "torch sees no CUDA GPU"), ("cuda:3", "torch sees no CUDA GPU"),
    ("mps", "cpu or cuda only"), ("tpu", "is not a device"), ("not a device!", "is not a device"),
])
def test_a_device_the_site_cannot_use_is_named(monkeypatch: pytest.MonkeyPatch, choice: str,
                                               message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match=message):
        dev.site_device(choice)


def test_a_gpu_index_beyond_the_sites_gpus_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TrainingError, match="has 2 GPU"):
        dev.site_device("cuda:2")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (48, 1, 28, 28), dtype=np.uint8), np.arange(48) % 2


@pytest.mark.parametrize("dp", [None, DPTraining(noise_multiplier=1.0, max_grad_norm=1.0)])
def test_training_through_the_device_path_matches_and_returns_the_model_home(dp: DPTraining | None) -> None:
    images, labels = _data()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.01, seed=3)
    results = []
    for device in (None, torch.device("cpu")):  # the default (auto) and an explicit device
        model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
        local = train_local(model, images, labels, config=config, dp=dp, device=device)
        assert next(model.parameters()).device == torch.device("cpu") and local.steps > 0
        results.append(get_weights(model))
    if dp is None:  # without DP the run is seeded: the same weights either way
        for name in results[0]:
            np.testing.assert_array_equal(results[0][name], results[1][name])


def test_noise_comes_from_a_generator_on_the_training_device() -> None:
    generator = dev.noise_generator(torch.device("cpu"))
    assert generator.device == torch.device("cpu")
    assert dev.noise_generator(torch.device("cpu")).initial_seed() != generator.initial_seed()


def test_evaluation_runs_on_the_site_device_and_leaves_the_model_where_it_was() -> None:
    images, labels = _data()
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    result = evaluate_model(model, images, labels)
    assert result.n == 48 and next(model.parameters()).device == torch.device("cpu")
