"""What a hospital runs: a PySyft datasite, its imaging datasets, and the owner's review workflow.

Public API (imported lazily, so ``import domains`` stays cheap for the CLI):

- :class:`Datasite` - the data owner's handle on one datasite (deploy, publish, review, audit)
- :class:`PublishRequest`, :class:`PublishResult` - what to publish and what was published
- :class:`ReviewReport`, :func:`review_code`, :class:`Flag` - the review aid
- :class:`ImageSet`, :func:`load_source`, :func:`generate_chest_phantoms`, :func:`make_mock`
- :func:`parse_shard`, :func:`parse_partition`, :func:`shard_indices`
- :class:`AuditLog`
- :class:`BudgetStatus`, :func:`budget_status` - the per-dataset ε ledger (see :mod:`domains.budget`)
- errors: see :mod:`domains.errors`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Datasite": "domains.datasite",
    "PublishRequest": "domains.publish",
    "PublishResult": "domains.publish",
    "ReviewReport": "domains.requests",
    "review_code": "domains.review",
    "Flag": "domains.review",
    "ImageSet": "domains.formats",
    "load_source": "domains.formats",
    "generate_chest_phantoms": "domains.phantom",
    "make_mock": "domains.mock",
    "parse_shard": "domains.partition",
    "parse_partition": "domains.partition",
    "shard_indices": "domains.partition",
    "AuditLog": "domains.audit",
    "BudgetStatus": "domains.budget",
    "budget_status": "domains.budget",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'domains' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
