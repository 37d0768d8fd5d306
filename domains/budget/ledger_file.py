"""The ε ledger's file: its in-memory form, JSON encoding, lock and atomic writes.

:mod:`domains.budget.ledger` holds the rules (reserve, charge, release); this module only keeps a
dataset's ledger safe on disk: one JSON file per dataset under ``DIR/privacy/`` (0600,
folder 0700), changed under an exclusive lock on ``DIR/privacy/.lock`` and replaced atomically
(:mod:`privacy.durable`). A file that
does not parse raises :class:`BudgetError` and is never reset.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from domains.errors import BudgetError
from domains.site.datadir import DataDir
from privacy.accounting import History, HistoryEntry, epsilon
from privacy.durable import atomic_write, file_lock

LEDGER_ACCOUNTANT = "rdp"
_VERSION = 1


# -- the ledger in memory ----------------------------------------------------
@dataclass
class Job:
    description: str
    reserved_at: str
    plan: dict[int, list[HistoryEntry]]
    charges: dict[int, list[HistoryEntry]] = field(default_factory=dict)
    charged_at: dict[int, str] = field(default_factory=dict)
    released_at: str | None = None

    def spent(self) -> list[HistoryEntry]:
        return [e for call in sorted(self.charges) for e in self.charges[call]]

    def outstanding(self) -> list[HistoryEntry]:
        if self.released_at is not None:
            return []
        return [e for call in sorted(self.plan) if call not in self.charges for e in self.plan[call]]


@dataclass
class Ledger:
    dataset: str
    epsilon_budget: float
    delta: float
    n_samples: int
    jobs: dict[str, Job] = field(default_factory=dict)

    def spent(self) -> list[HistoryEntry]:
        return [e for job in self.jobs.values() for e in job.spent()]

    def committed(self, *, without: str | None = None) -> list[HistoryEntry]:
        """Spent by every job plus still outstanding for approved ones, less job *without*."""
        others = [job for jid, job in self.jobs.items() if jid != without]
        return [e for job in others for e in job.spent() + job.outstanding()]

    def eps(self, history: History) -> float:
        return epsilon(history, delta=self.delta, accountant=LEDGER_ACCOUNTANT)


# -- files --------------------------------------------------------------------
def ledger_dir(data_dir: DataDir) -> Path:
    path = data_dir.path / "privacy"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def ledger_path(data_dir: DataDir, dataset: str) -> Path:
    """Percent-encoded so any dataset name is one safe file name."""
    encoded = quote(dataset, safe="")
    if not dataset or len(encoded) > 200:
        raise BudgetError(f"dataset name {dataset!r} cannot name a budget ledger (empty or too long)")
    return ledger_dir(data_dir) / f"{encoded}.json"


@contextlib.contextmanager
def locked(data_dir: DataDir) -> Iterator[None]:
    """Every dataset's ledger of *data_dir* at once: reservations weigh all jobs together."""
    with file_lock(ledger_dir(data_dir) / ".lock"):
        yield


def _entries(raw: Any) -> list[HistoryEntry]:
    return [(float(s), float(q), int(n)) for s, q, n in raw]


def _decode(raw: dict[str, Any]) -> Ledger:
    if raw.get("version") != _VERSION:
        raise ValueError(f"unknown version {raw.get('version')!r}")
    jobs = {
        jid: Job(
            description=str(j["description"]), reserved_at=str(j["reserved_at"]),
            plan={int(c): _entries(e) for c, e in j["plan"].items()},
            charges={int(c): _entries(e) for c, e in j["charges"].items()},
            charged_at={int(c): str(t) for c, t in j["charged_at"].items()},
            released_at=j["released_at"],
        )
        for jid, j in raw["jobs"].items()
    }
    return Ledger(str(raw["dataset"]), float(raw["epsilon_budget"]), float(raw["delta"]),
                   int(raw["n_samples"]), jobs)


def read(path: Path) -> Ledger | None:
    if not path.exists():
        return None
    try:
        return _decode(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BudgetError(
            f"privacy budget ledger {path} is unreadable or damaged ({exc}); it is never reset "
            "automatically: restore it from a backup, or ask the privacy officer"
        ) from exc


def require(path: Path, dataset: str) -> Ledger:
    ledger = read(path)
    if ledger is None:
        raise BudgetError(
            f"dataset {dataset!r} has no ε budget (no {path}); give it one with `medsyft domain "
            f"budget --set {dataset} --epsilon-budget E`"
        )
    return ledger


def write(path: Path, ledger: Ledger) -> None:
    raw = {"version": _VERSION, "accountant": LEDGER_ACCOUNTANT, **asdict(ledger)}
    atomic_write(path, json.dumps(raw, indent=1), mode=0o600)


