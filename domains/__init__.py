"""What a hospital runs: a PySyft datasite, its imaging datasets, the owner's review and ε budget.

Subpackages, one job each:

- :mod:`domains.site` - one datasite: data directory, process, keys, accounts, audit log, sandbox
- :mod:`domains.data` - imaging sources, publishing them privately, the mock, the phantoms, shards
- :mod:`domains.review` - the data owner's review workflow and review aid, and the site policy
- :mod:`domains.budget` - the per-dataset ε ledger every job's calls are charged to
- :mod:`domains.runtime` - what an approved job runs at the site: training, evaluation, HE rounds
- :mod:`domains.inference` - a released model at the hospital: prediction on its images, export
- :mod:`domains.shared` - the torch-free values both rooms share: job spec, metric counts, codec

This package's names are the whole of ``domains`` that the orchestrator's room may use besides
:mod:`domains.shared` (a test holds it to that): the data owner's API (:class:`Datasite`,
:class:`PublishRequest`, ...), and what a data scientist's side needs to build the same models,
run the central baseline on the same split and submit the one approved job template. Names are
imported on first use (:mod:`domains.lazy`), so ``import domains`` stays cheap for the CLI.
Errors: :mod:`domains.errors` (and :mod:`domains.runtime.errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.budget.ledger import BudgetStatus, budget_status
    from domains.data.formats import ImageSet, load_source
    from domains.data.metadata import datasite_metadata, parse_metadata
    from domains.data.mock import make_mock
    from domains.data.partition import ShardSpec, parse_partition, parse_shard, shard, shard_indices
    from domains.data.phantom import generate_chest_phantoms
    from domains.data.publish import PublishRequest, PublishResult
    from domains.review.catalog import Flag
    from domains.review.code_review import review_code
    from domains.review.requests import ReviewReport
    from domains.runtime.errors import TrainingError
    from domains.runtime.evaluation import evaluate_model
    from domains.runtime.local import train_local
    from domains.runtime.models import build_model, default_model
    from domains.runtime.plan import site_split
    from domains.runtime.split import val_count
    from domains.runtime.tasks import task_for
    from domains.runtime.templates import (
        JOB_TEMPLATE,
        evaluate_function_name,
        evaluate_source,
        job_source,
        release_function_name,
        release_source,
    )
    from domains.runtime.threads import configure_threads
    from domains.runtime.weights import (
        Weights,
        check_same_layout,
        fedavg,
        get_weights,
        layout_of,
        set_weights,
    )
    from domains.site.audit import AuditLog
    from domains.site.datasite import Datasite
    from domains.site.quiet import quiet

_MODULES = {
    "budget.ledger": ["BudgetStatus", "budget_status"],
    "data.formats": ["ImageSet", "load_source"],
    "data.metadata": ["datasite_metadata", "parse_metadata"],
    "data.mock": ["make_mock"],
    "data.partition": ["ShardSpec", "parse_partition", "parse_shard", "shard", "shard_indices"],
    "data.phantom": ["generate_chest_phantoms"],
    "data.publish": ["PublishRequest", "PublishResult"],
    "review.catalog": ["Flag"],
    "review.code_review": ["review_code"],
    "review.requests": ["ReviewReport"],
    "runtime.errors": ["TrainingError"],
    "runtime.evaluation": ["evaluate_model"],
    "runtime.local": ["train_local"],
    "runtime.models": ["build_model", "default_model"],
    "runtime.plan": ["site_split"],
    "runtime.split": ["val_count"],
    "runtime.tasks": ["task_for"],
    "runtime.templates": ["JOB_TEMPLATE", "evaluate_function_name", "evaluate_source", "job_source",
                          "release_function_name", "release_source"],
    "runtime.threads": ["configure_threads"],
    "runtime.weights": ["Weights", "check_same_layout", "fedavg", "get_weights", "layout_of", "set_weights"],
    "site.audit": ["AuditLog"],
    "site.datasite": ["Datasite"],
    "site.quiet": ["quiet"],
}

__all__, __getattr__, __dir__ = lazy_exports(
    "domains", {name: f"domains.{module}" for module, names in _MODULES.items() for name in names})
