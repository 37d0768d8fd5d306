"""What a data scientist runs: connect to datasites, submit a job once, train R rounds.

Public API (imported lazily so ``import orchestrator`` stays cheap):

- :func:`load_config`, :class:`JobConfig`, :class:`SiteConfig` - job.toml
- :class:`FederatedJob` - connect, submit, wait for approval, run (resumes from its run dir)
- :class:`FederatedResult` - history, metrics, timing tables, plot, final model
- :class:`Site` - one logged-in datasite: datasets, metadata, mocks, health
- :class:`Strategy`, :class:`FedAvg` - site selection and aggregation; :class:`ServerOptimizer` -
  FedAvgM, FedAdam, FedYogi (a :class:`~domains.shared.server_step.ServerStep` after FedAvg's mean)
- :func:`train_centralized`, :func:`comparison` - the centralized baseline
- errors: see :mod:`orchestrator.errors`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_config": "orchestrator.config",
    "JobConfig": "orchestrator.config",
    "SiteConfig": "orchestrator.config",
    "FederatedJob": "orchestrator.job",
    "FederatedResult": "orchestrator.result",
    "Site": "orchestrator.site",
    "Strategy": "orchestrator.strategy",
    "FedAvg": "orchestrator.strategy",
    "ServerOptimizer": "orchestrator.strategy",
    "train_centralized": "orchestrator.baseline",
    "comparison": "orchestrator.baseline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
