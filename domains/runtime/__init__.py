"""What a datasite runs for an approved medsyft job: train, evaluate, count calls, aggregate under HE.

:func:`domains.runtime.entry.run_job` is what the approved job code calls inside the datasite
process: it asks the job's learning task (:mod:`~domains.runtime.tasks`: build the model, the
training loss, evaluate into counts, release them with noise) and loads the site's data
(:mod:`~domains.runtime.plan`, :mod:`~domains.runtime.split`),
checks the incoming global model, evaluates it (:mod:`~domains.runtime.evaluation`, noised by
:mod:`~domains.runtime.noisy_metrics` under DP), trains it (:mod:`~domains.runtime.local`, with
:mod:`~domains.runtime.proximal` for FedProx) and records the call exactly once
(:mod:`~domains.runtime.call_log`). Under HE it decrypts and re-encrypts with the site's key share
(:mod:`~domains.runtime.secure_round`, :mod:`~domains.runtime.secagg_state`,
:mod:`~domains.runtime.site_global` for the server optimizers) and keeps the final model until its
release (:mod:`~domains.runtime.final_model`). :mod:`~domains.runtime.models` and
:mod:`~domains.runtime.weights` are the networks and their numpy state; the orchestrator's central
baseline runs the same training and evaluation code.

The torch-free values a job exchanges (spec, metric counts, server step, codec) are in
:mod:`domains.shared`. Names are imported on first use (:mod:`domains.lazy`): torch, MONAI and
Opacus take seconds to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.runtime.errors import UnknownModel
    from domains.runtime.evaluation import evaluate_model
    from domains.runtime.local import LocalResult, to_tensor_images, train_local
    from domains.runtime.models import available_models, build_model, default_model, register_model
    from domains.runtime.plan import JobPlan, job_plan, site_split
    from domains.runtime.split import train_val_split, val_count
    from domains.runtime.tasks import Classification, Task, register_task, task_for
    from domains.runtime.templates import job_source, release_function_name, release_source
    from domains.runtime.threads import configure_threads
    from domains.runtime.weights import (
        Weights,
        check_same_layout,
        fedavg,
        flatten,
        get_weights,
        layout_of,
        load_plain,
        set_weights,
        unflatten,
        weights_nbytes,
    )

_MODULES = {
    "errors": ["UnknownModel"],
    "evaluation": ["evaluate_model"],
    "local": ["LocalResult", "to_tensor_images", "train_local"],
    "models": ["available_models", "build_model", "default_model", "register_model"],
    "plan": ["JobPlan", "job_plan", "site_split"],
    "split": ["train_val_split", "val_count"],
    "tasks": ["Classification", "Task", "register_task", "task_for"],
    "templates": ["job_source", "release_function_name", "release_source"],
    "threads": ["configure_threads"],
    "weights": [
        "Weights", "check_same_layout", "fedavg", "flatten", "get_weights", "layout_of", "load_plain",
        "set_weights", "unflatten", "weights_nbytes",
    ],
}

__all__, __getattr__, __dir__ = lazy_exports(
    "domains.runtime",
    {name: f"domains.runtime.{module}" for module, names in _MODULES.items() for name in names},
)
