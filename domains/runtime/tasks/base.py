"""What the datasite runtime needs from a learning task, behind one interface.

The round loop, the call log, the ε budget and HE never look inside a task: they move a model's
weights (whatever its layout) and a task's metric counts (whatever they count). A task says

- how to **build the model** a job names (:meth:`Task.build_model`),
- what its **labels** must look like and how they become loss targets (:meth:`Task.check_data`,
  :meth:`Task.targets`, :meth:`Task.check_outputs`),
- the **training loss** (:meth:`Task.loss`): a mean over the batch, so Opacus can clip per sample,
- how to **evaluate into counts** (:meth:`Task.evaluate`): sums over images that can be released,
- how to **release those counts with noise** (:meth:`Task.add_noise`): Gaussian noise of standard
  deviation ``eval_noise_multiplier`` times the counts' L2 sensitivity to one image, so that the
  ε the datasite charges for an evaluation (:func:`privacy.accounting.eval_entry`) holds for
  every task without the budget knowing which task ran.

Pooling the counts into federation metrics is torch-free and lives with the counts type in
:mod:`domains.shared.counts` (:class:`~domains.shared.counts.Counts`), so the orchestrator pools
without importing a task. Classification (:mod:`domains.runtime.tasks.classification`) is the
first task; ``docs/training.md`` says what a new one implements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from domains.runtime.noisy_metrics import RELEASE_BINS
from domains.shared.counts import Counts
from domains.shared.spec import JobSpec


class Task(ABC):
    """One learning task (classification, segmentation, ...) as the datasite runtime runs it.

    A task object is built from a :class:`~domains.shared.spec.JobSpec` (:func:`task_for`) and
    holds what it needs of the spec (e.g. whether labels are multi-label).
    """

    kind: ClassVar[str]
    """The task's name in ``JobSpec.task`` and in :data:`domains.shared.counts.COUNTS`."""

    @abstractmethod
    def build_model(self, spec: JobSpec) -> nn.Module:
        """The network the job names, ready for DP-SGD (no BatchNorm, no in-place ops)."""

    @abstractmethod
    def check_data(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Raise :class:`~domains.shared.errors.TrainingError` for labels this task cannot train on."""

    @abstractmethod
    def targets(self, labels: np.ndarray) -> torch.Tensor:
        """The labels as the loss reads them (one row per image)."""

    @abstractmethod
    def check_outputs(self, outputs: torch.Tensor, labels: np.ndarray) -> None:
        """Raise a clear error when the model's outputs do not fit the labels (checked once)."""

    @abstractmethod
    def loss(self) -> nn.Module:
        """The training loss: ``loss(outputs, targets)``, a mean over the batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, images: np.ndarray, labels: np.ndarray) -> Counts:
        """The model's metric counts on these images; only these leave the datasite."""

    @abstractmethod
    def add_noise(self, counts: Counts, *, eval_noise_multiplier: float, bins: int = RELEASE_BINS) -> Counts:
        """A DP release of *counts*: Gaussian noise of std ``eval_noise_multiplier`` × their L2
        sensitivity to adding or removing one image, with every metric computed from noisy counts;
        *bins* is the resolution of released score histograms, where the counts have any."""
