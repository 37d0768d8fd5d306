"""The centralized baseline: the same model and hyperparameters, one process, all the data.

Only possible in a simulation, where the federation's data was published from one
source with ``--shard I/N``: the ``[baseline]`` table of job.toml says how
(source, count, partition, seed), sites are listed in shard order, and this module
rebuilds each hospital's shard and the very same train/validation split the
datasites use. The model trains for ``rounds × local_epochs`` epochs over the
union of the training parts and is scored on the union of the validation parts,
so the federated and centralized numbers are comparable.

This is the one place the orchestrator reads data itself; it uses the domains
package's data tools (formats, phantoms, partition) as shared code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from domains import (
    ImageSet,
    ShardSpec,
    Weights,
    configure_threads,
    evaluate_model,
    generate_chest_phantoms,
    get_weights,
    load_source,
    parse_partition,
    shard,
    site_split,
    task_for,
    train_local,
)
from domains.shared.counts import EvalResult
from domains.shared.spec import JobSpec
from orchestrator import holdout
from orchestrator.config import JobConfig
from orchestrator.holdout import TestScore
from orchestrator.result import model_with
from privacy.accounting import noise_multiplier_for


@dataclass
class BaselineResult:
    """The central model's exact metrics on the union of the sites' validation images and, where
    the source has one, on the test split (:mod:`orchestrator.holdout`)."""

    metrics: EvalResult
    wall_seconds: float
    n_train: int
    n_val: int
    test: TestScore | None = None
    no_test: str = ""  # why there is no test score


def load_union(config: JobConfig, spec: JobSpec) -> tuple[ImageSet, np.ndarray, np.ndarray]:
    """The source plus the union of every site's train and validation indices."""
    b = config.baseline
    if b.source == "synthetic":
        data = generate_chest_phantoms(b.count, image_size=b.image_size or spec.image_size,
                                       seed=b.seed)
    else:
        data = load_source(config.base_dir / b.source, split=b.split, image_size=b.image_size)
    partition = parse_partition(b.partition)
    n_sites = len(config.sites)
    train_parts, val_parts = [], []
    for i in range(1, n_sites + 1):
        idx = shard(data.labels, ShardSpec(i, n_sites), partition, seed=b.seed)
        tr, va = site_split(spec, data.images[idx], data.labels[idx])  # the sites' own split
        train_parts.append(idx[tr])
        val_parts.append(idx[va])
    return data, np.concatenate(train_parts), np.concatenate(val_parts)


def train_centralized(config: JobConfig, spec: JobSpec) -> BaselineResult:
    configure_threads()
    data, train_idx, val_idx = load_union(config, spec)
    task = task_for(spec)  # the sites' own loss, class weights included
    model = task.build_model(spec)
    dp = None
    if spec.dp is not None:  # the same DP-SGD: σ as configured, or for the same target ε
        sigma = noise_multiplier_for(spec.dp, n_samples=len(train_idx), batch_size=spec.train.batch_size,
                                     epochs_per_call=spec.train.epochs, training_calls=spec.rounds,
                                     eval_calls=0)
        dp = spec.dp_training(sigma)
    started = time.perf_counter()
    for r in range(1, spec.rounds + 1):  # the same shuffles and learning rates per "round" as the sites'
        train_local(model, data.images[train_idx], data.labels[train_idx],
                    config=spec.train.for_round(r, spec.rounds), dp=dp, task=task)
    wall = time.perf_counter() - started
    metrics = evaluate_model(model, data.images[val_idx], data.labels[val_idx],
                       multi_label=spec.multi_label)
    test, no_test = holdout.score_job(config, spec, get_weights(model))
    return BaselineResult(metrics, wall, len(train_idx), len(val_idx), test, no_test)


def evaluate_weights(config: JobConfig, spec: JobSpec, weights: Weights) -> EvalResult:
    """Score a model (e.g. the released federated one) exactly on the union's validation images."""
    configure_threads()
    data, _, val_idx = load_union(config, spec)
    model = model_with(spec, weights)
    return evaluate_model(model, data.images[val_idx], data.labels[val_idx], multi_label=spec.multi_label)


def comparison(federated: dict[str, float], central: BaselineResult, *,
               federated_test: TestScore | None = None, strategy: str = "FedAvg") -> pd.DataFrame:
    """Side by side: federated vs centralized, on the test split first (the headline: images
    neither model trained or tuned on), then on the same validation images."""
    nan = float("nan")
    rows = [
        {"training": f"federated ({strategy})",
         "test_accuracy": federated_test.metrics.accuracy if federated_test else nan,
         "test_roc_auc": federated_test.metrics.auc if federated_test else nan,
         "val_accuracy": federated["accuracy"], "val_roc_auc": federated["auc"],
         "wall_s": federated.get("wall_s", nan)},
        {"training": "centralized",
         "test_accuracy": central.test.metrics.accuracy if central.test else nan,
         "test_roc_auc": central.test.metrics.auc if central.test else nan,
         "val_accuracy": central.metrics.accuracy, "val_roc_auc": central.metrics.auc,
         "wall_s": central.wall_seconds},
    ]
    frame = pd.DataFrame(rows).set_index("training")
    if federated_test is None and central.test is None:
        frame = frame.drop(columns=["test_accuracy", "test_roc_auc"])
    return frame


def save(result: BaselineResult, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    test = result.test.metrics if result.test else None
    pd.DataFrame([{"accuracy": result.metrics.accuracy, "auc": result.metrics.auc,
                   "loss": result.metrics.loss, "wall_s": result.wall_seconds,
                   "n_train": result.n_train, "n_val": result.n_val,
                   "test_accuracy": test.accuracy if test else None, "test_auc": test.auc if test else None,
                   "n_test": test.n if test else 0}]
                 ).to_csv(run_dir / "baseline.csv", index=False)
