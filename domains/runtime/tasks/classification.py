"""Image classification, multi-class or multi-label: the first :class:`~domains.runtime.tasks.Task`.

Cross-entropy over ``(N,)`` integer labels, or BCE-with-logits over ``(N, K)`` 0/1 labels;
counts are :class:`~domains.shared.counts.EvalResult` (loss, accuracy, ROC-AUC and per-class
score histograms that pool into an AUC over all sites), released under DP by
:func:`domains.runtime.noisy_metrics.add_metric_noise`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from domains.runtime import evaluation, local, models, noisy_metrics
from domains.runtime.noisy_metrics import RELEASE_BINS
from domains.runtime.tasks.base import Task
from domains.shared.counts import Counts, EvalResult
from domains.shared.errors import TrainingError
from domains.shared.spec import JobSpec


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with each image's loss scaled by its class's weight, averaged over images,
    of the logits plus fixed per-class offsets (the logit-adjusted loss; none: zeros).

    Not ``nn.CrossEntropyLoss(weight=...)``: that divides by the batch's summed weights, so one
    image's gradient would depend on the other images' labels, which DP-SGD's per-sample clipping
    does not bound. Here image i's gradient is ``w[y_i] ∇l_i(z_i + b)``, its own.
    """

    def __init__(self, weights: tuple[float, ...], offsets: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.weights = torch.tensor(weights, dtype=torch.float32) if weights else None
        self.offsets = torch.tensor(offsets, dtype=torch.float32) if offsets else None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.offsets is not None:
            logits = logits + self.offsets.to(logits.device)
        per_image = nn.functional.cross_entropy(logits, targets, reduction="none")
        if self.weights is not None:
            per_image = per_image * self.weights.to(logits.device)[targets]
        return per_image.mean()


class Classification(Task):
    """Classification with the spec's label schema (``multi_label``) and class weights."""

    kind: ClassVar[str] = "classification"

    def __init__(self, *, multi_label: bool = False, class_weights: tuple[float, ...] = (),
                 logit_adjustment: tuple[float, ...] = ()) -> None:
        if (class_weights or logit_adjustment) and multi_label:
            raise TrainingError("class_weights and logit_adjustment apply to multi-class labels, not "
                                "multi-label ones")
        self.multi_label = multi_label
        self.class_weights = tuple(class_weights)
        self.logit_adjustment = tuple(logit_adjustment)

    @classmethod
    def of(cls, spec: JobSpec) -> Classification:
        return cls(multi_label=spec.multi_label, class_weights=spec.train.class_weights,
                   logit_adjustment=spec.train.logit_adjustment)

    def build_model(self, spec: JobSpec) -> nn.Module:
        return models.build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                                  image_size=spec.image_size, seed=spec.train.seed)

    def check_data(self, images: np.ndarray, labels: np.ndarray) -> None:
        local.check_arrays(images, labels, multi_label=self.multi_label)

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        return local.label_tensor(labels, multi_label=self.multi_label)

    def check_outputs(self, outputs: torch.Tensor, labels: np.ndarray) -> None:
        local.check_logits(outputs, labels, multi_label=self.multi_label)

    def loss(self) -> nn.Module:
        if self.multi_label:
            return nn.BCEWithLogitsLoss()
        if self.class_weights or self.logit_adjustment:
            return WeightedCrossEntropy(self.class_weights, self.logit_adjustment)
        return nn.CrossEntropyLoss()

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: np.ndarray) -> EvalResult:
        return evaluation.evaluate_model(model, images, labels, multi_label=self.multi_label)

    def add_noise(self, counts: Counts, *, eval_noise_multiplier: float,
                  bins: int = RELEASE_BINS) -> EvalResult:
        if not isinstance(counts, EvalResult):
            raise TrainingError(f"classification releases EvalResult counts, not {type(counts).__name__}")
        return noisy_metrics.add_metric_noise(counts, eval_noise_multiplier=eval_noise_multiplier,
                                              correct=round(counts.accuracy * counts.n), bins=bins)
