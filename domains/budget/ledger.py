"""The per-dataset ε ledger: what approved jobs may spend and what their calls did spend.

One JSON file per dataset, ``DIR/privacy/NAME.json`` (0600, folder 0700), so the
ledger survives restarts and travels with the data directory. Every change holds
an exclusive lock on ``DIR/privacy/.lock`` and replaces the file atomically;
a ledger that does not parse raises :class:`BudgetError` and is never reset.

The life of a job on a dataset:

- :func:`set_budget` at publish: ε budget and δ, fixed once anything is spent.
- :func:`reserve` at approval: the job's *plan*, ``{call: history entries}``, must
  fit together with everything spent and everything other approved jobs may
  still spend; otherwise :class:`PrivacyBudgetExceeded`.
- :func:`charge` when a call runs: records that call's actual entries, once per
  (job, call), so a replayed call is free. A charged call replaces its planned part.
- :func:`cancel_reservation` on deny or cancel: the job's uncharged calls stop
  counting; what it already spent stays spent.

All ε values are Opacus RDP (:func:`privacy.accounting.epsilon`) of the
concatenated history, at the dataset's δ.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from domains.budget.ledger_file import Job as _Job
from domains.budget.ledger_file import Ledger as _Ledger
from domains.budget.ledger_file import ledger_dir as _dir
from domains.budget.ledger_file import ledger_path as _path
from domains.budget.ledger_file import locked as _locked
from domains.budget.ledger_file import read as _read
from domains.budget.ledger_file import require as _require
from domains.budget.ledger_file import write as _write
from domains.errors import BudgetError, PrivacyBudgetExceeded
from domains.site.datadir import DataDir
from privacy.accounting import History, HistoryEntry, compact
from privacy.durable import utc_stamp as _now
from privacy.errors import DPConfigError

DEFAULT_EPSILON_BUDGET = 10.0
DEFAULT_DELTA = 1e-5
Plan = Mapping[int, Sequence[HistoryEntry]]


@dataclass(frozen=True)
class JobBudget:
    """One job's line in a dataset's ledger."""

    job_id: str
    description: str
    state: str  # "reserved" or "released"
    calls_charged: int
    calls_planned: int
    spent_epsilon: float  # its charged calls alone
    epsilon: float  # charged plus still outstanding calls, this job alone


@dataclass(frozen=True)
class BudgetStatus:
    """Where a dataset stands; ``reserved_epsilon`` is what approvals are checked against."""

    dataset: str
    epsilon_budget: float
    delta: float
    n_samples: int
    spent_epsilon: float
    reserved_epsilon: float
    jobs: list[JobBudget] = field(default_factory=list)

    @property
    def remaining_epsilon(self) -> float:
        return self.epsilon_budget - self.reserved_epsilon


# -- budget -------------------------------------------------------------------
def default_delta(n_samples: int) -> float:
    """:data:`DEFAULT_DELTA`, or 0.1/n for datasets so large that δ must be smaller."""
    return min(DEFAULT_DELTA, 0.1 / n_samples)


def check_budget(*, epsilon_budget: float, delta: float, n_samples: int) -> None:
    """Raise :class:`BudgetError` unless ε > 0 is finite and 0 < δ < 1/n (checked before publishing)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise BudgetError(f"n_samples must be an integer >= 1 (got {n_samples!r})")
    if not (isinstance(epsilon_budget, numbers.Real) and 0 < epsilon_budget < math.inf):
        raise BudgetError(f"epsilon budget must be a finite number > 0 (got {epsilon_budget!r})")
    if not (isinstance(delta, numbers.Real) and 0.0 < float(delta) < 1.0 / int(n_samples)):
        raise BudgetError(
            f"delta must be in (0, 1/n) = (0, {1.0 / n_samples:.3g}) for a dataset of {n_samples} "
            f"samples (got {delta!r}): a larger δ allows releasing a whole record; "
            f"use delta={default_delta(n_samples):g}"
        )


def has_ledger(data_dir: DataDir, dataset: str) -> bool:
    """Whether *dataset* has a budget ledger (publish rolls back only one it created)."""
    return _path(data_dir, dataset).exists()


def remove_ledger(data_dir: DataDir, dataset: str) -> None:
    """Delete an unused ledger (a publish that failed); one with spending or reservations stays."""
    path = _path(data_dir, dataset)
    with _locked(data_dir):
        ledger = _read(path)
        if ledger is not None and ledger.committed():
            raise BudgetError(f"the ε ledger of dataset {dataset!r} records spending or reservations; "
                              "it is never removed")
        path.unlink(missing_ok=True)


def set_budget(
    data_dir: DataDir, dataset: str, *, n_samples: int,
    epsilon_budget: float = DEFAULT_EPSILON_BUDGET, delta: float | None = None,
) -> BudgetStatus:
    """Give *dataset* its (ε, δ) budget; re-publishing with the same budget keeps its spending.

    A budget cannot change once anything was spent or reserved on it: raising it
    after the fact would make past approvals' checks meaningless, and lowering it
    could leave approved jobs over budget.
    """
    delta = default_delta(n_samples) if delta is None else delta
    check_budget(epsilon_budget=epsilon_budget, delta=delta, n_samples=n_samples)
    epsilon_budget, delta, n_samples = float(epsilon_budget), float(delta), int(n_samples)
    path = _path(data_dir, dataset)
    with _locked(data_dir):
        ledger = _read(path) or _Ledger(dataset, epsilon_budget, delta, n_samples)
        if (ledger.epsilon_budget, ledger.delta) != (epsilon_budget, delta) and ledger.committed():
            raise BudgetError(
                f"dataset {dataset!r} already has ε={ledger.eps(ledger.committed()):.3f} spent or reserved "
                f"under its budget ε={ledger.epsilon_budget:g}, δ={ledger.delta:g}; a budget cannot change "
                "once used (publish under a new name for a new budget)"
            )
        ledger = replace(ledger, epsilon_budget=epsilon_budget, delta=delta, n_samples=n_samples)
        _write(path, ledger)
    return status(data_dir, dataset)


# -- jobs ---------------------------------------------------------------------
def _checked_plan(plan: Plan) -> dict[int, list[HistoryEntry]]:
    try:
        checked = {int(call): compact(entries) for call, entries in plan.items()}
    except (DPConfigError, TypeError, ValueError, AttributeError) as exc:
        raise BudgetError(f"a job's plan must map call numbers to history entries ({exc})") from exc
    if not checked or min(checked) < 1:
        raise BudgetError(f"a job's plan must name calls 1, 2, ... (got calls {sorted(checked)})")
    return checked


def round_plan(
    *, rounds: int, training: HistoryEntry, evaluation: HistoryEntry,
    eval_calls: Collection[int] | None = None,
) -> dict[int, list[HistoryEntry]]:
    """The plan of an R-round job: calls 1..R evaluate then train, call R+1 evaluates only.

    With *eval_calls* (:attr:`domains.shared.spec.JobSpec.eval_calls`) only those calls
    evaluate; the others train and release nothing else. This is the call layout of
    :class:`domains.shared.spec.JobSpec`.
    """
    evaluating = set(range(1, rounds + 2)) if eval_calls is None else set(eval_calls)
    plan = {call: [evaluation, training] if call in evaluating else [training]
            for call in range(1, rounds + 1)}
    plan[rounds + 1] = [evaluation] if rounds + 1 in evaluating else []
    return plan


def _numbers(ledger: _Ledger, job_history: History, *, without: str | None) -> dict[str, Any]:
    before = ledger.committed(without=without)
    after = ledger.eps(before + list(job_history))
    return {
        "dataset": ledger.dataset, "epsilon_budget": ledger.epsilon_budget, "delta": ledger.delta,
        "job_epsilon": ledger.eps(job_history), "spent_epsilon": ledger.eps(ledger.spent()),
        "epsilon_before": ledger.eps(before), "epsilon_after": after,
        "remaining_after": ledger.epsilon_budget - after, "fits": after <= ledger.epsilon_budget,
    }


def _refusal(what: str, n: dict[str, Any]) -> PrivacyBudgetExceeded:
    return PrivacyBudgetExceeded(
        f"{what} would bring dataset {n['dataset']!r} to ε={n['epsilon_after']:.3f} of its budget "
        f"ε={n['epsilon_budget']:g} (δ={n['delta']:g}): it needs ε={n['job_epsilon']:.3f} on its own and "
        f"ε={n['epsilon_budget'] - n['epsilon_before']:.3f} remains (ε={n['spent_epsilon']:.3f} spent, the "
        "rest reserved by approved jobs); lower rounds or epochs, raise the noise, or deny it"
    )


def preview(
    data_dir: DataDir, dataset: str, history: History, *, job_id: str | None = None
) -> dict[str, Any]:
    """What a reviewer sees before approving: ε of the job alone and of the dataset after it.

    With *job_id*, that job's own ledger lines are left out, so previewing an
    already-reserved job does not count it twice.
    """
    ledger = _require(_path(data_dir, dataset), dataset)
    return _numbers(ledger, compact(history), without=job_id)


def reserve(
    data_dir: DataDir, dataset: str, *, job_id: str, plan: Plan, description: str = ""
) -> dict[str, Any]:
    """Approve *plan* against the budget, or raise :class:`PrivacyBudgetExceeded`.

    Idempotent: reserving a job again with the same plan changes nothing. A job
    released earlier may be reserved again; its charged calls stay charged.
    """
    checked = _checked_plan(plan)
    path = _path(data_dir, dataset)
    with _locked(data_dir):
        ledger = _require(path, dataset)
        old = ledger.jobs.get(job_id)
        if old is not None and old.released_at is None:
            if old.plan != checked:
                raise BudgetError(f"job {job_id} already holds a different reservation on {dataset!r}; "
                                  "release it first")
            return _numbers(ledger, old.spent() + old.outstanding(), without=job_id)
        job = _Job(description=description, reserved_at=_now(), plan=checked)
        if old is not None:  # re-approval after a release: what ran stays charged
            job.charges, job.charged_at = old.charges, old.charged_at
        numbers = _numbers(ledger, job.spent() + job.outstanding(), without=job_id)
        if not numbers["fits"]:
            raise _refusal(f"approving job {job_id}", numbers)
        ledger.jobs[job_id] = job
        _write(path, ledger)
    return numbers


def cancel_reservation(data_dir: DataDir, dataset: str, job_id: str) -> bool:
    """Stop counting *job_id*'s uncharged calls; False when it held no reservation."""
    path = _path(data_dir, dataset)
    with _locked(data_dir):
        ledger = _read(path)
        job = ledger.jobs.get(job_id) if ledger else None
        if ledger is None or job is None or job.released_at is not None:
            return False
        job.released_at = _now()
        _write(path, ledger)
    return True


def charge(data_dir: DataDir, dataset: str, *, job_id: str, call: int, entries: History) -> bool:
    """Record what call *call* of *job_id* spent; False (and nothing charged) for a replay.

    Refused when the job holds no reservation for that call, or when the actual
    entries would exceed the budget: approval already checked, this is the last line.
    """
    if isinstance(call, bool) or not isinstance(call, int) or call < 1:
        raise BudgetError(f"call must be an integer >= 1 (got {call!r})")
    spent = _checked_plan({call: entries})[call]
    path = _path(data_dir, dataset)
    with _locked(data_dir):
        ledger = _require(path, dataset)
        job = ledger.jobs.get(job_id)
        if job is not None and call in job.charges:
            return False
        if job is None or job.released_at is not None or call not in job.plan:
            raise PrivacyBudgetExceeded(
                f"call {call} of job {job_id} holds no ε reservation on dataset {dataset!r}; "
                "only approved calls of approved jobs may run"
            )
        trial = replace(job, charges={**job.charges, call: spent})
        numbers = _numbers(ledger, trial.spent() + trial.outstanding(), without=job_id)
        if not numbers["fits"]:
            raise _refusal(f"running call {call} of job {job_id}", numbers)
        job.charges[call], job.charged_at[call] = spent, _now()
        _write(path, ledger)
    return True


# -- reports ------------------------------------------------------------------
def _job_row(ledger: _Ledger, job_id: str, job: _Job) -> JobBudget:
    return JobBudget(
        job_id=job_id, description=job.description,
        state="released" if job.released_at else "reserved",
        calls_charged=len(job.charges), calls_planned=len(job.plan),
        spent_epsilon=ledger.eps(job.spent()), epsilon=ledger.eps(job.spent() + job.outstanding()),
    )


def _status_of(ledger: _Ledger) -> BudgetStatus:
    return BudgetStatus(
        dataset=ledger.dataset, epsilon_budget=ledger.epsilon_budget, delta=ledger.delta,
        n_samples=ledger.n_samples, spent_epsilon=ledger.eps(ledger.spent()),
        reserved_epsilon=ledger.eps(ledger.committed()),
        jobs=[_job_row(ledger, jid, job) for jid, job in ledger.jobs.items()],
    )


def status(data_dir: DataDir, dataset: str) -> BudgetStatus:
    """Budget, spent and reserved ε of *dataset*, with one row per job."""
    return _status_of(_require(_path(data_dir, dataset), dataset))


STATUS_COLUMNS = ["dataset", "epsilon_budget", "delta", "spent_epsilon", "reserved_epsilon",
                  "remaining_epsilon", "jobs"]


def status_frame(data_dir: DataDir) -> pd.DataFrame:
    """One row per dataset with a budget, for ``medsyft domain budget``."""
    rows = []
    for path in sorted(_dir(data_dir).glob("*.json")):
        st = _status_of(_require(path, path.stem))
        rows.append({**{c: getattr(st, c) for c in STATUS_COLUMNS[:-1]}, "jobs": len(st.jobs)})
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


budget_status = status  # the name domains re-exports
