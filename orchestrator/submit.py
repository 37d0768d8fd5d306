"""Submit one code request per datasite and wait for the data owners' decisions.

The submitted function is deliberately tiny: it binds the dataset's ``labels``
asset, takes the whole job description as a ``sy.Constant`` (fixed at approval)
and the per-round global model as the only scientist-owned input, and hands all
three to the datasite's installed medsyft runtime. The source is written to
``RUN_DIR/submitted/`` (PySyft reads a function's source file), which also
keeps a record of exactly what each owner was asked to approve.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from domains import JOB_TEMPLATE as TEMPLATE  # noqa: F401 - re-exported
from domains import job_source
from domains.shared.spec import JobSpec
from orchestrator.errors import NotApproved
from orchestrator.site import Site, quiet
from orchestrator.syft_api import add_code_endpoint


@dataclass
class Submission:
    site: str
    request_id: str
    function: str


def load_submitted(path: Path, site: Site, dataset: str, *, module_name: str,
                   constants: dict[str, Any]) -> Any:
    """Execute a written template for *site*: its client, the dataset's labels asset and the
    template's constants are module globals; returns the syft function named after the file."""
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module.client = site.client  # type: ignore[attr-defined]
    module.labels_asset = site.asset(dataset, "labels")  # type: ignore[attr-defined]
    for name, value in constants.items():
        setattr(module, name, value)
    with quiet():
        module_spec.loader.exec_module(module)
    return getattr(module, path.stem)


def _write_source(spec: JobSpec, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.function_name}.py"
    path.write_text(job_source(job_id=spec.job_id, limit=spec.max_calls))
    return path


def _submit_one(site: Site, spec: JobSpec, path: Path) -> Submission:
    function = load_submitted(path, site, spec.dataset, module_name=f"{spec.function_name}_{site.name}",
                              constants={"job_spec": spec.to_dict()})
    with quiet():
        request = site.client.code.request_code_execution(function)
    if not hasattr(request, "id"):
        raise NotApproved(f"site '{site.name}' refused the submission: {request}")
    with quiet():  # the function joins this client's API now, without fetching the whole API again
        add_code_endpoint(site.client, request, function)
    return Submission(site.name, str(request.id), spec.function_name)


def submit_all(sites: list[Site], spec: JobSpec, run_dir: Path) -> list[Submission]:
    """Create the code request for *spec* on every site, all at once: each request is its own
    datasite's work. The template is written once, before any thread reads it."""
    path = _write_source(spec, run_dir / "submitted")
    with ThreadPoolExecutor(max(1, len(sites))) as pool:
        return list(pool.map(lambda site: _submit_one(site, spec, path), sites))


def _status(site: Site, request_id: str) -> tuple[str, str]:
    record = _record(site, request_id)
    return str(record["status"]), str(record["reason"])


def _record(site: Site, request_id: str) -> dict[str, Any]:
    """What the scientist may read of their own request on *site*: its status, when it was made and
    when it was last decided (PySyft's ``updated_at``), and a denial's reason."""
    with quiet():
        for request in site.client.requests:
            if str(request.id) == request_id:
                status = str(request.status).rsplit(".", 1)[-1].lower()
                reason = ""
                if status == "rejected":
                    reason = str(getattr(request, "deny_reason", "") or "")
                return {"status": status, "reason": reason, "requested_at": _utc(request.request_time),
                        "decided_at": _utc(request.updated_at) if status != "pending" else None}
    return {"status": "missing", "reason": "", "requested_at": None, "decided_at": None}


def _utc(value: Any) -> str | None:
    from datetime import UTC, datetime

    stamp = getattr(value, "utc_timestamp", None)
    return None if stamp is None else datetime.fromtimestamp(float(stamp), UTC).isoformat(timespec="seconds")


def request_records(sites: list[Site], submissions: list[Submission]) -> pd.DataFrame:
    """One row per submission: site, request, function, status, requested_at, decided_at, reason."""
    by_name = {s.name: s for s in sites}
    return pd.DataFrame([{"site": sub.site, "request": sub.request_id, "function": sub.function,
                          **_record(by_name[sub.site], sub.request_id)} for sub in submissions],
                        columns=["site", "request", "function", "status", "requested_at", "decided_at",
                                 "reason"])


def approval_table(sites: list[Site], submissions: list[Submission]) -> pd.DataFrame:
    by_name = {s.name: s for s in sites}
    rows = []
    for sub in submissions:
        status, reason = _status(by_name[sub.site], sub.request_id)
        rows.append({"site": sub.site, "request": sub.request_id, "status": status,
                     "reason": reason})
    return pd.DataFrame(rows)


def wait_for_approval(
    sites: list[Site],
    submissions: list[Submission],
    *,
    timeout: float,
    poll: float = 2.0,
    on_update: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Block until every site approved; NotApproved on a denial or when *timeout* passes."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        table = approval_table(sites, submissions)
        if on_update is not None and table.to_string() != last:
            on_update(table)
            last = table.to_string()
        denied = table[table["status"] == "rejected"]
        if not denied.empty:
            row = denied.iloc[0]
            raise NotApproved(f"site '{row['site']}' denied the job: {row['reason'] or 'no reason'}")
        if (table["status"] == "approved").all():
            return table
        if time.monotonic() > deadline:
            pending = ", ".join(table.loc[table["status"] != "approved", "site"])
            raise NotApproved(f"not approved within {timeout:.0f} s by: {pending}; "
                              "ask those data owners to review, then run again (it resumes)")
        time.sleep(poll)
