"""What approved medsyft code does inside a datasite process.

The code a scientist submits is three lines that call :func:`run_task`; the
training logic is this installed, reviewed package, and every hyperparameter
is in the approved :class:`~domains.training.spec.JobSpec` constant. The
function is bound to the dataset's ``labels`` asset: the runtime checks that
those labels are the ones in its training store before touching the images.

Errors: PySyft shows the scientist only "contact the admin" for an exception,
so expected failures come back as ``{"error": {"type", "message"}}`` with a
message written for the scientist; anything unexpected returns only its type,
and its traceback goes to the datasite log.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from domains import store
from domains.datadir import DataDir
from domains.errors import MedsyftDomainError
from domains.training.errors import TrainingError
from domains.training.evaluate import evaluate
from domains.training.ledger import JobLedger
from domains.training.local import train_local
from domains.training.models import build_model
from domains.training.spec import JobSpec
from domains.training.split import train_val_split
from domains.training.threads import configure_threads
from domains.training.weights import Weights, flatten, get_weights, set_weights, unflatten

ALLOWED_ERRORS = (TrainingError, MedsyftDomainError)


@dataclass
class _SiteData:
    images: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray


_CACHE: dict[tuple[str, str, float, int], _SiteData] = {}


def _site_data(data_dir: DataDir, spec: JobSpec, bound_labels: np.ndarray) -> _SiteData:
    """The dataset and its split, loaded once per datasite process."""
    key = (str(data_dir.path), spec.dataset, spec.val_fraction, spec.split_seed)
    if key not in _CACHE:
        stored = store.load(data_dir, spec.dataset)
        train_idx, val_idx = train_val_split(
            stored.labels, val_fraction=spec.val_fraction, seed=spec.split_seed
        )
        _CACHE[key] = _SiteData(stored.images, stored.labels, train_idx, val_idx)
    data = _CACHE[key]
    if not np.array_equal(np.asarray(bound_labels), data.labels):
        raise TrainingError(
            f"the approved labels asset does not match dataset '{spec.dataset}' on this datasite"
        )
    return data


def _compute(spec: JobSpec, call: int, data: _SiteData, weights: Weights | np.ndarray
             ) -> dict[str, Any]:
    configure_threads()
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    flat = isinstance(weights, np.ndarray)  # one float32 vector travels faster than a dict
    if isinstance(weights, np.ndarray):
        weights = unflatten(weights, flatten(get_weights(model))[1])
    set_weights(model, weights)
    t0 = time.perf_counter()
    metrics = evaluate(model, data.images[data.val_idx], data.labels[data.val_idx],
                       multi_label=spec.multi_label)
    eval_s = time.perf_counter() - t0
    result: dict[str, Any] = {"task": "evaluate", "call": call, "eval": metrics.to_dict(),
                              "eval_seconds": eval_s, "n_train": len(data.train_idx),
                              "weights": None}
    if call <= spec.rounds:
        config = replace(spec.train, seed=spec.train.seed + call)  # a new shuffle each round
        local = train_local(model, data.images[data.train_idx], data.labels[data.train_idx],
                            config=config, multi_label=spec.multi_label)
        trained = get_weights(model)
        result.update(task="train", weights=flatten(trained)[0] if flat else trained,
                      train_loss=local.mean_loss,
                      train_seconds=local.seconds, steps=local.steps)
    return result


def run_task(labels: Any, job: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of approved code: one call of one job on this datasite."""
    started = time.perf_counter()
    try:
        spec = JobSpec.from_dict(job)
        if not isinstance(payload, dict) or not {"call", "weights"} <= set(payload):
            raise TrainingError("payload must be a dict with 'call' and 'weights'")
        call = int(payload["call"])
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        data = _site_data(data_dir, spec, labels)
        ledger = JobLedger(data_dir.jobs_dir, spec.job_id, spec.max_calls)
        result = ledger.run(call, lambda: _compute(spec, call, data, payload["weights"]))
    except ALLOWED_ERRORS as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"error": {"type": type(exc).__name__,
                          "message": "unexpected error inside the datasite; its log has the details"}}
    result["site_seconds"] = time.perf_counter() - started
    return result
