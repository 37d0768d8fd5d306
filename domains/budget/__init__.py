"""The per-dataset ε budget a datasite enforces across all jobs (see :mod:`domains.budget.ledger`).

:mod:`~domains.budget.ledger` is the API: :func:`set_budget` at publish, :func:`reserve` at approval,
:func:`charge` per call, :func:`cancel_reservation` on deny, :func:`status` for the owner.
:mod:`~domains.budget.ledger_file` is its file: JSON, locked, written atomically.

The ledger's functions are re-exported here, so callers write ``from domains import budget`` and
``budget.reserve(...)``; the package is light (no torch, no PySyft).
"""

from __future__ import annotations

from domains.budget.ledger import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON_BUDGET,
    BudgetStatus,
    JobBudget,
    cancel_reservation,
    charge,
    check_budget,
    default_delta,
    has_ledger,
    preview,
    remove_ledger,
    reserve,
    round_plan,
    set_budget,
    status,
    status_frame,
)
from domains.errors import BudgetError, PrivacyBudgetExceeded

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON_BUDGET",
    "BudgetError",
    "BudgetStatus",
    "JobBudget",
    "PrivacyBudgetExceeded",
    "cancel_reservation",
    "charge",
    "check_budget",
    "default_delta",
    "has_ledger",
    "preview",
    "remove_ledger",
    "reserve",
    "round_plan",
    "set_budget",
    "status",
    "status_frame",
]
