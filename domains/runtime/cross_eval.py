"""Cross-site evaluation inside a datasite: a final model scored once on this site's test data.

The approved code (:data:`domains.runtime.templates.EVALUATE_TEMPLATE`) calls
:func:`domains.runtime.entry.run_evaluation`, which runs :func:`prepare` then :func:`release` once
under a call log of its own (``DIR/jobs/EVAL_ID-evaluate/``; asking again returns the same release,
never a new one). In order, before any private image is read (:func:`prepare`):

1. the evaluation constant parses (:class:`~domains.shared.eval_spec.EvalSpec`), and its test
   dataset is not the dataset the job trained on;
2. the bound ``labels`` asset is this test dataset's, and its images have the job's shape;
3. the model is the one named: the final model kept at the job's final call (which this site
   must have run), or a plaintext model sent in the payload whose layout is the job's model's;
4. the release is charged to the test dataset's ε ledger (approval reserved it).

Then the model is evaluated on every test image, and only counts leave, with Gaussian noise of
``noise_multiplier`` × their sensitivity (:mod:`domains.runtime.noisy_metrics`). The same noise
and the same charge apply to every job, DP or not: the test images were never part of training,
so they have their own budget. Any failure after the charge is the one fixed message of
:func:`domains.runtime.entry` (its reason goes to the datasite's log).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from domains import budget
from domains.data import store
from domains.runtime import final_model
from domains.runtime.errors import TrainingError
from domains.runtime.tasks import task_for
from domains.runtime.threads import configure_threads
from domains.runtime.weights import layout_of, load_plain
from domains.shared import codec
from domains.shared.eval_spec import EvalSpec
from domains.shared.plain_model import PlainModel
from domains.site.datadir import DataDir
from privacy.accounting import HistoryEntry, eval_entry


def plan(ev: EvalSpec) -> dict[int, list[HistoryEntry]]:
    """What the evaluation reserves and charges on its test dataset: one Gaussian release."""
    return {1: [eval_entry(eval_noise_multiplier=ev.noise_multiplier)]}


def check_dataset(data_dir: DataDir, ev: EvalSpec) -> store.StoredDataset:
    """The stored test dataset, once its images fit the job's model (public metadata only)."""
    stored = store.load(data_dir, ev.dataset)
    job = ev.job
    shape = tuple(stored.images.shape[1:])
    wanted = (job.in_channels, job.image_size, job.image_size)
    if shape != wanted:
        raise TrainingError(f"dataset '{ev.dataset}' holds {'x'.join(map(str, shape))} images but job "
                            f"{job.job_id}'s model takes {'x'.join(map(str, wanted))}; publish the test "
                            "split at the training data's size")
    names = list(stored.label_names)
    if len(names) != job.num_classes or stored.multi_label != job.multi_label:
        raise TrainingError(f"dataset '{ev.dataset}' has labels {names} but job {job.job_id} "
                            f"classifies {job.num_classes} {'labels' if job.multi_label else 'classes'}")
    return stored


def _model(data_dir: DataDir, ev: EvalSpec, payload: dict[str, Any]) -> Any:
    """The job's network with the weights to score, checked against the approved model."""
    task = task_for(ev.job)
    model = task.build_model(ev.job)
    layout = layout_of(model)
    if ev.model == "final":
        vector = final_model.kept_model(data_dir, ev.job)
        load_plain(model, PlainModel(vector, layout))  # refuses a vector of another length
        return model
    sent = payload.get("weights") if isinstance(payload, dict) else None
    if sent is None:
        raise TrainingError("this evaluation scores a model you send: payload['weights'] must be the model "
                            "(its medsyft-model/1 form)")
    received = codec.from_wire(sent, layout=layout)
    if not isinstance(received, PlainModel):
        raise TrainingError(f"payload['weights'] must be a plaintext model, not a {type(received).__name__}")
    load_plain(model, received)
    return model


def prepare(data_dir: DataDir, ev: EvalSpec, bound_labels: Any, payload: dict[str, Any]
            ) -> tuple[Any, store.StoredDataset]:
    """Steps 1-4 of the module docstring: the model to score and the test data, once charged.

    Raises :class:`TrainingError` or :class:`~domains.errors.PrivacyBudgetExceeded` before the
    charge; what runs after it (:func:`release`) is the caller's to guard, as its errors may
    depend on the data.
    """
    configure_threads()
    stored = check_dataset(data_dir, ev)
    if not np.array_equal(np.asarray(bound_labels), stored.labels):
        raise TrainingError(f"the approved labels asset does not match dataset '{ev.dataset}' on this "
                            "datasite")
    model = _model(data_dir, ev, payload)
    entries = plan(ev)[1]
    budget.charge(data_dir, ev.dataset, job_id=ev.ledger_id, call=1, entries=entries)
    return model, stored


def release(ev: EvalSpec, model: Any, stored: store.StoredDataset) -> dict[str, Any]:
    """Evaluate on every test image and release the counts with noise (after the charge)."""
    t0 = time.perf_counter()
    task = task_for(ev.job)
    counts = task.evaluate(model, stored.images, stored.labels)
    noisy = task.add_noise(counts, eval_noise_multiplier=ev.noise_multiplier, bins=ev.bins)
    return {"step": "test", "eval": noisy.to_dict(), "eval_seconds": time.perf_counter() - t0}


def privacy_report(data_dir: DataDir, ev: EvalSpec) -> dict[str, Any]:
    """ε numbers the scientist may see: this release's and the test dataset's."""
    status = budget.status(data_dir, ev.dataset)
    mine = next((j for j in status.jobs if j.job_id == ev.ledger_id), None)
    return {"dataset": ev.dataset, "noise_multiplier": ev.noise_multiplier, "delta": status.delta,
            "epsilon": mine.spent_epsilon if mine else 0.0,
            "dataset_epsilon_spent": status.spent_epsilon, "dataset_epsilon_budget": status.epsilon_budget,
            "dataset_epsilon_remaining": status.remaining_epsilon}
