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


def _conv_layouts(model: torch.nn.Module) -> list[bool]:
    """Whether each 4-D weight is channels-last (and not also contiguous, as one input channel is)."""
    return [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]


def test_the_small_cnn_trains_channels_last_on_the_cpu_and_returns_in_the_default_layout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _data()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.01, seed=3)
    results, seen = [], []
    for switch in ("1", "0"):  # MEDSYFT_CHANNELS_LAST=0: PyTorch's default layout throughout
        monkeypatch.setenv(dev.CHANNELS_LAST_ENV, switch)
        model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
        model.register_forward_pre_hook(lambda m, _, s=switch: seen.append((s, all(_conv_layouts(m)))))
        train_local(model, images, labels, config=config)
        assert not any(_conv_layouts(model)) and all(p.is_contiguous() for p in model.parameters())
        results.append(get_weights(model))
    assert {s for s, cl in seen if cl} == {"1"} and {s for s, cl in seen if not cl} == {"0"}
    for name in results[0]:  # the same seeded steps in either layout: the same weights up to rounding
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-3, atol=1e-4)


def test_dp_sgd_keeps_the_default_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opacus's per-sample gradients are wrong for channels-last convolutions (next test)."""
    monkeypatch.setenv(dev.CHANNELS_LAST_ENV, "1")
    images, labels = _data()
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, _: seen.append(any(_conv_layouts(m))))
    train_local(model, images, labels, config=TrainConfig(epochs=1, batch_size=16, lr=0.01, seed=3),
                dp=DPTraining(noise_multiplier=1.0, max_grad_norm=1.0))
    assert seen and not any(seen)
    assert dev.memory_format(model, torch.device("cpu"), private=True) == torch.contiguous_format


@pytest.mark.parametrize(("name", "n"), [("small-cnn", 48), ("resnet18", 12)])
def test_what_dp_sgd_clips_is_each_images_own_gradient(monkeypatch: pytest.MonkeyPatch, name: str,
                                                       n: int) -> None:
    """The first DP-SGD step's per-sample gradients, as Opacus is about to clip them inside
    ``train_local``, against autograd's gradient of each image's loss alone.

    DP-SGD's guarantee and its utility both rest on these rows: a layout or hook that breaks them
    (channels-last convolutions did, for the small CNN) must fail here.
    """
    from opacus.optimizers import DPOptimizer

    monkeypatch.setenv(dev.CHANNELS_LAST_ENV, "1")  # the default a site runs with
    images, labels = _data()
    images, labels = images[:n], labels[:n]
    model = build_model(name, in_channels=1, num_classes=2, image_size=28)
    captured: dict[str, list[torch.Tensor]] = {}
    clip = DPOptimizer.clip_and_accumulate

    def capture(self: DPOptimizer) -> None:
        if not captured and self.params[0].grad_sample is not None and len(self.params[0].grad_sample):
            captured["rows"] = [p.grad_sample.detach().clone() for p in self.params]
            captured["weights"] = [p.detach().clone() for p in self.params]
        clip(self)

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", capture)
    batches: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, args: batches.append(args[0].detach().clone()))
    train_local(model, images, labels, config=TrainConfig(epochs=1, batch_size=n // 2, lr=0.01, seed=3),
                dp=DPTraining(noise_multiplier=1.0, max_grad_norm=1.0))
    assert captured, "no DP-SGD step with images was seen"
    batch = next(b for b in batches if len(b))  # the first step's images (Poisson: some may be empty)
    flat = torch.from_numpy(images.reshape(n, -1).astype(np.float32) / 255.0)
    rows = torch.cdist(batch.reshape(len(batch), -1).contiguous(), flat).argmin(dim=1)

    exact = build_model(name, in_channels=1, num_classes=2, image_size=28)
    params = [p for p in exact.parameters() if p.requires_grad]
    with torch.no_grad():
        for p, w in zip(params, captured["weights"], strict=True):
            p.copy_(w)
    exact.train()
    for j, row in enumerate(rows.tolist()):
        exact.zero_grad()
        target = torch.tensor([int(labels[row])])
        torch.nn.functional.cross_entropy(exact(batch[j:j + 1].contiguous()), target).backward()
        for p, got in zip(params, captured["rows"], strict=True):
            assert p.grad is not None
            torch.testing.assert_close(got[j], p.grad, rtol=1e-3, atol=1e-5)


def test_evaluation_is_the_same_in_either_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _data()
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    scores = []
    for switch in ("1", "0"):
        monkeypatch.setenv(dev.CHANNELS_LAST_ENV, switch)
        scores.append(evaluate_model(model, images, labels))
        assert not any(_conv_layouts(model))
    assert scores[0].n == scores[1].n and abs(scores[0].loss - scores[1].loss) < 1e-5


def test_only_networks_measured_faster_take_channels_last() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    small = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28)
    resnet = build_model("resnet18", in_channels=1, num_classes=2, image_size=28)
    assert dev.memory_format(small, cpu) == torch.channels_last
    assert dev.memory_format(small, gpu) == torch.contiguous_format  # not measured on a GPU
    assert dev.memory_format(resnet, cpu) == torch.contiguous_format  # measured slower so
    assert "_medsyft_channels_last" not in small.state_dict() and dev.CHANNELS_LAST_ATTR not in str(
        list(small.state_dict()))
