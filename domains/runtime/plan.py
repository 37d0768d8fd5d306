"""What a job will spend on a dataset, computed the same way at review, approval and every call.

A datasite fixes the job's noise here (the configured σ, or the smallest σ that keeps the
whole job within its target ε) from the approved constants and the size of its own
training split, and lays out the per-call history the ε ledger reserves and charges:
calls 1..R evaluate the incoming model and train, call R + 1 only evaluates (with
``eval_every`` > 1 only the approved calls evaluate, and the others are charged training alone).
Review, approval and the runtime all call :func:`site_plan`, so the ε an owner approves is
the ε the calls charge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from domains import budget
from domains.data import store
from domains.runtime.noisy_metrics import hash_split
from domains.runtime.split import train_val_split
from domains.shared.spec import JobSpec
from domains.site.datadir import DataDir
from privacy.accounting import HistoryEntry, eval_entry, noise_multiplier_for, training_entry

_SIGMA: dict[tuple[str, int, float], float] = {}


@dataclass(frozen=True)
class JobPlan:
    """One job's privacy on one dataset.

    Attributes:
        n_train: images in the training split (sets the Poisson sampling rate).
        noise_multiplier: σ of DP-SGD (None without DP).
        delta: the dataset's δ, at which every ε here is stated.
        per_call: ``{call: history entries}`` the ledger reserves and each call charges.
    """

    dataset: str
    n_train: int
    noise_multiplier: float | None
    delta: float
    per_call: dict[int, list[HistoryEntry]]

    @property
    def history(self) -> list[HistoryEntry]:
        return [e for call in sorted(self.per_call) for e in self.per_call[call]]


def site_split(spec: JobSpec, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices: by content hash under DP (see ``release``), else stratified."""
    if spec.dp is not None:
        return hash_split(images, val_fraction=spec.val_fraction, seed=spec.split_seed)
    return train_val_split(labels, val_fraction=spec.val_fraction, seed=spec.split_seed)


def job_plan(spec: JobSpec, *, n_train: int, delta: float) -> JobPlan:
    """The plan for a training split of *n_train* images at the dataset's *delta*."""
    if spec.dp is None:
        return JobPlan(spec.dataset, n_train, None, delta, {})
    dp = replace(spec.dp, delta=delta)
    key = (spec.job_id, n_train, delta)
    if key not in _SIGMA:  # a target ε takes a bisection (~0.4 s): once per job and process
        _SIGMA[key] = noise_multiplier_for(dp, n_samples=n_train, batch_size=spec.train.batch_size,
                                           epochs_per_call=spec.train.epochs,
                                           training_calls=spec.rounds, eval_calls=len(spec.eval_calls))
    sigma = _SIGMA[key]
    train = training_entry(noise_multiplier=sigma, n_samples=n_train,
                           batch_size=spec.train.batch_size, epochs=spec.train.epochs)
    evaluation = eval_entry(eval_noise_multiplier=dp.eval_noise_multiplier)
    per_call = budget.round_plan(rounds=spec.rounds, training=train, evaluation=evaluation,
                                 eval_calls=spec.eval_calls)
    return JobPlan(spec.dataset, n_train, sigma, delta, per_call)


def site_plan(data_dir: DataDir, spec: JobSpec) -> JobPlan:
    """The plan on this datasite's copy of ``spec.dataset`` (loads it to size the split)."""
    stored = store.load(data_dir, spec.dataset)
    train_idx, _ = site_split(spec, stored.images, stored.labels)
    delta = budget.status(data_dir, spec.dataset).delta
    return job_plan(spec, n_train=len(train_idx), delta=delta)
