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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from domains import budget, he_key, store
from domains.datadir import DataDir
from domains.errors import MedsyftDomainError
from domains.training import final
from domains.training.errors import TrainingError
from domains.training.evaluate import evaluate
from domains.training.ledger import JobLedger
from domains.training.local import train_local
from domains.training.models import build_model
from domains.training.plan import JobPlan, job_plan, split
from domains.training.release import noisy_release
from domains.training.spec import JobSpec
from domains.training.split import val_count
from domains.training.threads import configure_threads
from domains.training.weights import flatten, get_weights, set_weights, unflatten
from privacy.accounting import compact
from privacy.errors import PrivacyError

ALLOWED_ERRORS = (TrainingError, MedsyftDomainError, PrivacyError)


@dataclass
class _SiteData:
    images: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray


_CACHE: dict[tuple[str, str, float, int, bool], _SiteData] = {}


def _site_data(data_dir: DataDir, spec: JobSpec, bound_labels: np.ndarray) -> _SiteData:
    """The dataset and its split, loaded once per datasite process."""
    key = (str(data_dir.path), spec.dataset, spec.val_fraction, spec.split_seed, spec.dp is not None)
    if key not in _CACHE:
        stored = store.load(data_dir, spec.dataset)
        train_idx, val_idx = split(spec, stored.images, stored.labels)
        _CACHE[key] = _SiteData(stored.images, stored.labels, train_idx, val_idx)
    data = _CACHE[key]
    if not np.array_equal(np.asarray(bound_labels), data.labels):
        raise TrainingError(
            f"the approved labels asset does not match dataset '{spec.dataset}' on this datasite"
        )
    return data


def _incoming(spec: JobSpec, call: int, payload: dict[str, Any], model: Any, data_dir: DataDir
              ) -> None:
    """Load the global model the orchestrator sent (decrypting it under HE) into *model*."""
    sent = payload["weights"]
    if sent is None and call == 1:
        return  # round 1 starts from the registry's seeded initial model, built on this site
    if spec.he is not None:
        if not isinstance(sent, dict):
            raise TrainingError("this job aggregates under HE: the global model must arrive encrypted")
        from privacy.he import EncryptedVector

        context = he_key.load(data_dir, expect=spec.he.key_id)
        encrypted = EncryptedVector.from_dict(sent)
        vector = context.decrypt_mean(encrypted)
        set_weights(model, unflatten(vector, flatten(get_weights(model))[1]))
        if call == spec.max_calls:  # the final model: kept here for local use after its release
            final.keep_final(data_dir, spec, encrypted, vector)
    elif isinstance(sent, np.ndarray):  # one float32 vector travels faster than a dict
        set_weights(model, unflatten(sent, flatten(get_weights(model))[1]))
    elif isinstance(sent, dict):
        set_weights(model, sent)
    else:
        raise TrainingError("payload['weights'] must be the global model (a flat vector or a dict)")


def _outgoing(spec: JobSpec, payload: dict[str, Any], model: Any, data_dir: DataDir
              ) -> dict[str, Any]:
    """The trained model as it leaves the site: encrypted and pre-weighted under HE."""
    vector = flatten(get_weights(model))[0]
    if spec.he is None:
        return {"weights": vector}
    weight = payload.get("weight")
    if not isinstance(weight, int | float) or not 0.0 < float(weight) <= 1.0:
        raise TrainingError(f"payload['weight'] must be this site's FedAvg share in (0, 1] (got {weight!r})")
    context = he_key.load(data_dir, expect=spec.he.key_id)
    bound = spec.he.weight_bound
    encrypted = context.encrypt_weighted(vector, weight=float(weight), bound=bound)
    return {"weights": encrypted.to_dict(), "clamped": int(np.count_nonzero(np.abs(vector) > bound))}


def _public_n_train(spec: JobSpec, data: _SiteData) -> int:
    """The FedAvg weight: under DP the expected training size, a function of the public size only."""
    n = len(data.labels)
    if spec.dp is None:
        return len(data.train_idx)
    return n - val_count(n, val_fraction=spec.val_fraction)


def _evaluate(spec: JobSpec, model: Any, data: _SiteData) -> dict[str, Any]:
    metrics = evaluate(model, data.images[data.val_idx], data.labels[data.val_idx],
                       multi_label=spec.multi_label)
    if spec.dp is not None:
        metrics = noisy_release(metrics, eval_noise_multiplier=spec.dp.eval_noise_multiplier,
                                correct=round(metrics.accuracy * metrics.n))
    return metrics.to_dict()


def _compute(spec: JobSpec, call: int, data: _SiteData, payload: dict[str, Any], data_dir: DataDir
             ) -> dict[str, Any]:
    configure_threads()
    if spec.he is not None:  # a job for another federation's key is refused before any work
        he_key.load(data_dir, expect=spec.he.key_id)
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    _incoming(spec, call, payload, model, data_dir)
    plan = None
    if spec.dp is not None:  # charge before any private image is touched
        plan = job_plan(spec, n_train=len(data.train_idx),
                        delta=budget.status(data_dir, spec.dataset).delta)
        budget.charge(data_dir, spec.dataset, job_id=spec.job_id, call=call,
                      entries=plan.per_call[call])
    t0 = time.perf_counter()
    result: dict[str, Any] = {"task": "evaluate", "call": call, "eval": _evaluate(spec, model, data),
                              "eval_seconds": time.perf_counter() - t0,
                              "n_train": _public_n_train(spec, data), "weights": None}
    if call <= spec.rounds:
        config = replace(spec.train, seed=spec.train.seed + call)  # a new shuffle each round
        dp = spec.dp_training(plan.noise_multiplier) if plan and plan.noise_multiplier else None
        local = train_local(model, data.images[data.train_idx], data.labels[data.train_idx],
                            config=config, multi_label=spec.multi_label, dp=dp)
        if plan is not None and compact(local.privacy_history) != compact(plan.per_call[call][1:]):
            raise TrainingError(  # a bug, never expected: the charge must be what Opacus counted
                f"Opacus recorded {local.privacy_history} but the ledger charged {plan.per_call[call]}")
        result.update(task="train", train_loss=None if dp else local.mean_loss,
                      train_seconds=local.seconds, steps=local.steps,
                      opacus_history=local.privacy_history, **_outgoing(spec, payload, model, data_dir))
    if plan is not None:
        result["privacy"] = _privacy_report(data_dir, spec, plan)
    return result


def _privacy_report(data_dir: DataDir, spec: JobSpec, plan: JobPlan) -> dict[str, Any]:
    """ε numbers the scientist may see: the job's and the dataset's, never anything per image."""
    status = budget.status(data_dir, spec.dataset)
    job = next((j for j in status.jobs if j.job_id == spec.job_id), None)
    return {"noise_multiplier": plan.noise_multiplier, "delta": status.delta,
            "job_epsilon_spent": job.spent_epsilon if job else 0.0,
            "job_epsilon_planned": job.epsilon if job else None,
            "dataset_epsilon_spent": status.spent_epsilon,
            "dataset_epsilon_budget": status.epsilon_budget,
            "dataset_epsilon_remaining": status.remaining_epsilon}


def run_task(labels: Any, job: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of approved code: one call of one job on this datasite."""
    started = time.perf_counter()

    def call_once() -> dict[str, Any]:
        spec = JobSpec.from_dict(job)
        if not isinstance(payload, dict) or not {"call", "weights"} <= set(payload):
            raise TrainingError("payload must be a dict with 'call' and 'weights'")
        call = int(payload["call"])
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        data = _site_data(data_dir, spec, labels)
        ledger = JobLedger(data_dir.jobs_dir, spec.job_id, spec.max_calls)
        result = ledger.run(call, lambda: _compute(spec, call, data, payload, data_dir))
        result["site_seconds"] = time.perf_counter() - started
        return result

    return _guarded(call_once)


def run_release(labels: Any, release: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of an approved release request (see :mod:`domains.training.final`)."""
    def release_once() -> dict[str, Any]:
        spec = JobSpec.from_dict(release["job"])
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        _site_data(data_dir, spec, labels)  # the release is bound to the same dataset
        ledger = JobLedger(data_dir.jobs_dir, f"{spec.job_id}-release", 1)
        return ledger.run(1, lambda: final.run_release(release, payload))

    return _guarded(release_once)


def _guarded(task: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Expected errors as a message for the scientist; unexpected ones only by type (log has it)."""
    try:
        return task()
    except ALLOWED_ERRORS as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"error": {"type": type(exc).__name__,
                          "message": "unexpected error inside the datasite; its log has the details"}}
