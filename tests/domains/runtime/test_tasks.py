"""The task interface is open: a second task plugs in without touching the loop, ledger, budget or HE.

The segmentation task here is a test's own (foreground of bright pixels, per-image Dice), written
only against :class:`domains.runtime.tasks.Task` and :class:`domains.shared.counts.Counts`. It
trains under real Opacus DP-SGD through :func:`train_local`, evaluates into counts that pool as a
sum and are released with noise of a known sensitivity, and a job spec naming it is accepted.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pytest
import torch
from torch import nn

from domains.runtime import Classification, Task, register_task, task_for, train_local
from domains.runtime import tasks as task_registry
from domains.shared import COUNTS, EvalResult, JobSpec, TrainConfig, TrainingError, counts_type
from domains.shared.spec import DPTraining

REPO = Path(__file__).resolve().parents[3]


@dataclass
class DiceCounts:
    """Per-image Dice summed over images: one image moves ``n`` by 1 and ``dice_sum`` by ≤ 1."""

    n: int
    dice_sum: float
    metrics: ClassVar[tuple[str, ...]] = ("dice",)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "dice_sum": self.dice_sum}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(n=int(d["n"]), dice_sum=float(d["dice_sum"]))

    def summary(self) -> dict[str, float]:
        return {"dice": self.dice_sum / max(1, self.n)}

    @classmethod
    def pool(cls, results: Sequence[Self]) -> Self:
        return cls(n=sum(r.n for r in results), dice_sum=sum(r.dice_sum for r in results))


class BrightSegmentation(Task):
    kind: ClassVar[str] = "bright-segmentation"

    def build_model(self, spec: JobSpec) -> nn.Module:
        torch.manual_seed(spec.train.seed)
        return nn.Sequential(nn.Conv2d(spec.in_channels, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 1, 3, padding=1))

    def check_data(self, images: np.ndarray, labels: np.ndarray) -> None:
        if labels.shape != (len(images), *images.shape[2:]):
            raise TrainingError(f"masks must be (N, H, W) (got {labels.shape})")

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(labels.astype(np.float32))[:, None]

    def check_outputs(self, outputs: torch.Tensor, labels: np.ndarray) -> None:
        if outputs.shape[1:] != (1, *labels.shape[1:]):
            raise TrainingError(f"outputs {tuple(outputs.shape)} do not fit masks {labels.shape}")

    def loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: np.ndarray) -> DiceCounts:
        with torch.no_grad():
            pred = model(torch.from_numpy(images).float().div(255.0))[:, 0] > 0
        truth = torch.from_numpy(labels.astype(bool))
        inter = (pred & truth).sum(dim=(1, 2)).double()
        dice = (2 * inter + 1e-6) / (pred.sum(dim=(1, 2)) + truth.sum(dim=(1, 2)) + 1e-6)
        return DiceCounts(n=len(images), dice_sum=float(dice.sum()))

    def add_noise(self, counts: Any, *, eval_noise_multiplier: float) -> DiceCounts:
        std = eval_noise_multiplier * math.sqrt(2.0)  # L2 sensitivity of (n, dice_sum)
        rng = np.random.default_rng()
        return DiceCounts(n=max(1, round(counts.n + rng.normal(0, std))),
                          dice_sum=float(counts.dice_sum + rng.normal(0, std)))


@pytest.fixture
def bright() -> Iterator[BrightSegmentation]:
    task = BrightSegmentation()
    COUNTS[task.kind] = DiceCounts  # type: ignore[assignment]
    register_task(task.kind, lambda spec: task)
    yield task
    del COUNTS[task.kind]
    del task_registry._TASKS[task.kind]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 12, 12), dtype=np.uint8)
    return images, (images[:, 0] > 160).astype(np.uint8)


def _spec(task: str) -> JobSpec:
    return JobSpec(dataset="scans", model="any", in_channels=1, num_classes=1, image_size=12,
                   multi_label=False, rounds=1, task=task, train=TrainConfig(lr=0.05, epochs=8))


def test_a_new_task_trains_under_dp_sgd_and_its_counts_pool_as_a_sum(bright: BrightSegmentation) -> None:
    spec = _spec(bright.kind)
    task = task_for(spec)
    assert task is bright and counts_type(spec.task) is DiceCounts
    model = task.build_model(spec)
    images, masks = _data(96, seed=1)
    before = task.evaluate(model, images, masks).summary()["dice"]
    plain = train_local(model, images, masks, config=spec.train, task=task)
    after = task.evaluate(model, images, masks).summary()["dice"]
    assert plain.steps == 24 and after > before + 0.1, (before, after)

    private = task.build_model(spec)
    dp = train_local(private, images, masks, config=spec.train, task=task,
                     dp=DPTraining(noise_multiplier=1.0, max_grad_norm=1.0))
    assert dp.privacy_history and dp.privacy_history[0][0] == 1.0  # Opacus accounted the run

    halves = [task.evaluate(model, images[s], masks[s]) for s in (slice(0, 40), slice(40, None))]
    pooled = DiceCounts.pool(halves)
    whole = task.evaluate(model, images, masks)
    assert pooled.n == whole.n and math.isclose(pooled.dice_sum, whole.dice_sum, rel_tol=1e-9)
    noisy = task.add_noise(whole, eval_noise_multiplier=2.0)
    assert DiceCounts.from_dict(noisy.to_dict()) == noisy and noisy != whole


def test_the_task_checks_its_own_labels(bright: BrightSegmentation) -> None:
    model = bright.build_model(_spec(bright.kind))
    images, masks = _data(8, seed=2)
    with pytest.raises(TrainingError, match=r"masks must be \(N, H, W\)"):
        train_local(model, images, masks[:, :6], config=TrainConfig(), task=bright)


def test_a_job_for_a_task_no_one_has_is_refused_by_name() -> None:
    with pytest.raises(TrainingError, match=r"unknown task 'detection'; choose one of \['classification'\]"):
        _spec("detection")


def test_classification_is_the_default_and_older_specs_read_as_it() -> None:
    spec = JobSpec.from_dict({k: v for k, v in _spec("classification").to_dict().items() if k != "task"})
    assert spec.task == "classification" and isinstance(task_for(spec), Classification)
    assert counts_type("classification") is EvalResult


@pytest.mark.parametrize("path, banned", [
    ("domains/runtime/entry.py", {"evaluate_model", "add_metric_noise", "EvalResult", "build_model",
                                  "nn", "multi_label"}),
    ("orchestrator/runner.py", {"EvalResult", "pool", "accuracy", "auc", "multi_label"}),
])
def test_the_loop_and_the_runtime_reach_a_task_only_by_its_interface(path: str, banned: set[str]) -> None:
    """Neither names a classification function, type or label schema: ``task.x`` and ``kind.x`` only."""
    tree = ast.parse((REPO / path).read_text())
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "multi_label"}
    used |= {str(c.value) for c in ast.walk(tree) if isinstance(c, ast.Constant) and c.value in banned}
    assert not used & banned


def test_a_class_weighted_loss_gives_each_image_its_own_gradient() -> None:
    """DP-SGD clips per image: image i's gradient must not depend on the other images' labels,
    which ``nn.CrossEntropyLoss(weight=...)`` (dividing by the batch's summed weights) breaks."""
    task = Classification(class_weights=(5.0, 0.5))
    loss = task.loss()
    torch.manual_seed(0)
    logits = torch.randn(4, 2, requires_grad=True)
    for labels in ([0, 1, 1, 1], [0, 0, 0, 1]):  # image 0 is class 0 in both batches
        targets = torch.tensor(labels)
        (grad,) = torch.autograd.grad(loss(logits, targets) * len(labels), logits)
        alone = torch.autograd.grad(nn.functional.cross_entropy(logits[:1], targets[:1]), logits)[0][0]
        assert torch.allclose(grad[0], 5.0 * alone)
    with pytest.raises(TrainingError, match="multi-class labels, not multi-label"):
        Classification(multi_label=True, class_weights=(1.0, 2.0))


def test_a_logit_adjusted_loss_gives_each_image_its_own_gradient() -> None:
    """The logit-adjusted loss is cross-entropy of z_i + b for fixed offsets b: image i's gradient
    is its own, with or without class weights, and without offsets it is plain cross-entropy."""
    offsets = (-2.3, -0.1)
    loss = Classification(class_weights=(5.0, 0.5), logit_adjustment=offsets).loss()
    torch.manual_seed(0)
    logits = torch.randn(4, 2, requires_grad=True)
    for labels in ([0, 1, 1, 1], [0, 0, 0, 1]):
        targets = torch.tensor(labels)
        (grad,) = torch.autograd.grad(loss(logits, targets) * len(labels), logits)
        shifted = logits[:1] + torch.tensor(offsets)
        alone = torch.autograd.grad(nn.functional.cross_entropy(shifted, targets[:1]), logits)[0][0]
        assert torch.allclose(grad[0], 5.0 * alone)
    plain = Classification(logit_adjustment=offsets).loss()
    targets = torch.tensor([0, 1, 1, 1])
    expected = nn.functional.cross_entropy(logits + torch.tensor(offsets), targets)
    assert torch.allclose(plain(logits, targets), expected)
    with pytest.raises(TrainingError, match="multi-class labels, not multi-label"):
        Classification(multi_label=True, logit_adjustment=offsets)


def test_a_class_weighted_job_trains_under_dp_sgd() -> None:
    spec = JobSpec(dataset="scans", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=1, train=TrainConfig(class_weights=(3.0, 0.6)))
    task = task_for(spec)
    assert isinstance(task, Classification) and task.class_weights == (3.0, 0.6)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 28, 28), dtype=np.uint8)
    result = train_local(task.build_model(spec), images, rng.integers(0, 2, 40), config=spec.train, task=task,
                         dp=DPTraining(noise_multiplier=1.0, max_grad_norm=1.0))
    assert result.privacy_history and math.isfinite(result.mean_loss)
