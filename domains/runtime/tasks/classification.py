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
from domains.runtime.tasks.base import Task
from domains.shared.counts import Counts, EvalResult
from domains.shared.errors import TrainingError
from domains.shared.spec import JobSpec


class Classification(Task):
    """Classification with the spec's label schema (``multi_label``)."""

    kind: ClassVar[str] = "classification"

    def __init__(self, *, multi_label: bool = False) -> None:
        self.multi_label = multi_label

    @classmethod
    def of(cls, spec: JobSpec) -> Classification:
        return cls(multi_label=spec.multi_label)

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
        return nn.BCEWithLogitsLoss() if self.multi_label else nn.CrossEntropyLoss()

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: np.ndarray) -> EvalResult:
        return evaluation.evaluate_model(model, images, labels, multi_label=self.multi_label)

    def add_noise(self, counts: Counts, *, eval_noise_multiplier: float) -> EvalResult:
        if not isinstance(counts, EvalResult):
            raise TrainingError(f"classification releases EvalResult counts, not {type(counts).__name__}")
        return noisy_metrics.add_metric_noise(counts, eval_noise_multiplier=eval_noise_multiplier,
                                              correct=round(counts.accuracy * counts.n))
