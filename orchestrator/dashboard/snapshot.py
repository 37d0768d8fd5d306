"""Everything the dashboard shows, as one JSON-able dict read from the run directory.

The run directory is the single source: the orchestrator checkpoints ``state.json``,
``history.csv``, ``metrics.csv`` and ``privacy.csv`` after every round, and writes the approval
table while it waits (``approvals.json``). So the same page serves a job that is running in this
process (``medsyft train --dashboard``), one running in another, and a finished one
(``medsyft dashboard --run-dir``). Reading is cheap: small CSVs, re-read at most once a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from domains.shared.release_files import MODEL_FILE, RELEASE_DIR
from orchestrator.checkpoint import RunDir
from orchestrator.result import latest_privacy

SITES_FILE = "sites.json"  # where each site is and its TLS files, written at submission


def site_addresses(run_dir: Path) -> list[Any]:
    """The sites a run was submitted to (:class:`~orchestrator.dashboard.health.SiteAddress`)."""
    from orchestrator.dashboard.health import SiteAddress

    data = RunDir(run_dir).load_json(SITES_FILE.removesuffix(".json")) or []
    return [SiteAddress(**s) for s in data]


def snapshot(run_dir: Path, health: list[dict[str, Any]]) -> dict[str, Any]:
    run = RunDir(run_dir)
    out: dict[str, Any] = {"run_dir": str(run_dir), "health": _clean(health), "job": None,
                           "round": {"completed": 0, "total": 0}, "approvals": [], "release": [],
                           "metrics": [], "history": [], "epsilon": [], "wire": [], "finished": False}
    if not run.exists():
        out["state"] = "not submitted"
        return out
    state = run.load_state()
    spec = state.spec
    out["job"] = {"id": spec.job_id, "model": spec.model, "dataset": spec.dataset, "rounds": spec.rounds,
                  "dp": spec.dp is not None, "he": spec.he is not None, "sites": list(spec.sites)}
    out["round"] = {"completed": state.completed_round, "total": spec.rounds}
    out["finished"] = state.finished
    out["released"] = (run.path / RELEASE_DIR / MODEL_FILE).exists()
    out["state"] = _state(state, out["released"])
    out["approvals"] = _clean(run.load_json("approvals") or [])
    out["release"] = _clean(run.load_json("release/approvals") or [])
    metrics = run.load_frame("metrics")
    if not metrics.empty:
        out["metrics"] = _records(metrics.drop(columns=["global_state_hash"], errors="ignore"))
    history = run.load_frame("history")
    if not history.empty:
        out["history"] = _records(history[["round", "site", "status", "error", "update_bytes"]])
        out["wire"] = _wire(history)
    privacy = run.load_frame("privacy")
    if not privacy.empty:
        out["epsilon"] = _epsilon(privacy)
    return out


def _state(state: Any, released: bool) -> str:
    if released:
        return "finished; final model " + ("released by every owner" if state.spec.he else "in release/")
    if state.finished:
        return "finished" + ("; the encrypted final model awaits release" if state.spec.he else "")
    if state.completed_round:
        return f"training: round {state.completed_round} of {state.spec.rounds} done"
    return "submitted: waiting for the data owners' approval"


def _wire(history: pd.DataFrame) -> list[dict[str, Any]]:
    """Bytes of the updates the sites sent, per round: the total and the largest single update."""
    ok = history[history["status"] == "ok"]
    rows = []
    for r, group in ok.groupby("round"):
        sizes = group["update_bytes"].fillna(0).astype(float)
        rows.append({"round": int(r), "bytes_up": float(sizes.sum()), "bytes_per_site": float(sizes.max()),
                     "sites": len(group)})
    return rows


def _epsilon(privacy: pd.DataFrame) -> list[dict[str, Any]]:
    last = latest_privacy(privacy).sort_index()
    return [{"site": str(site), "job_spent": float(r["job_epsilon_spent"]),
             "dataset_spent": float(r["dataset_epsilon_spent"]),
             "budget": float(r["dataset_epsilon_budget"]), "remaining": float(r["dataset_epsilon_remaining"]),
             "delta": float(r["delta"])} for site, r in last.iterrows()]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return _clean(json.loads(frame.to_json(orient="records")))


def _clean(value: Any) -> Any:
    """JSON without NaN or infinity (a browser's JSON.parse refuses them)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
