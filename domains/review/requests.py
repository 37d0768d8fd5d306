"""The data owner's review workflow: list code requests, review one, approve or deny it.

A request is addressed by its PySyft id or any unique prefix of it (as git does
with commits). Review shows what an owner must judge before private data is
touched: the code, which inputs are fixed at approval (assets and constants)
and which the scientist may change at every call, how many runs the approval
allows, and the flags of :mod:`domains.review.code_review`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from domains.errors import MedsyftDomainError, PolicyRefused, RequestNotFound
from domains.review.code_policy import CodeVerdict, classify, load_policy, record_custom_approval
from domains.review.code_review import Flag, review_code
from domains.review.privacy import (
    PrivacyReview,
    cancel_evaluation,
    evaluation_constant,
    job_constant,
    release_for,
    reserve_evaluation,
    reserve_for,
    review_evaluation,
    review_privacy,
    review_release,
)
from domains.site.audit import AuditLog, local_actor
from domains.site.connection import admin_client, quiet
from domains.site.datadir import AUDIT_FILE, DataDir
from privacy.durable import utc_stamp

REQUEST_COLUMNS = [
    "id", "requester", "function", "status", "executions allowed", "executions used", "submitted",
]


@dataclass
class InputSpec:
    """One argument of submitted code and who controls it."""

    name: str
    kind: str  # "asset" | "constant" | "scientist-owned"
    value: str  # dataset/asset name, the constant's repr, or the accepted type


@dataclass
class ReviewReport:
    request_id: str
    requester: str
    function: str
    status: str
    code: str
    inputs: list[InputSpec] = field(default_factory=list)
    executions_allowed: int | None = None
    executions_used: int = 0
    flags: list[Flag] = field(default_factory=list)
    privacy: PrivacyReview | None = None
    verdict: CodeVerdict | None = None  # the site policy's reading: medsyft job, release, evaluate or custom


def _status(request: Any) -> str:
    return str(request.status).rsplit(".", 1)[-1].lower()


def _limit(code: Any) -> int | None:
    kwargs = code.output_policy_init_kwargs or {}
    if "limit" in kwargs:
        return int(kwargs["limit"])
    name = getattr(code.output_policy_type, "__name__", "")
    return 1 if name == "OutputPolicyExecuteOnce" else None


def _used(code: Any) -> int:
    with quiet():
        history = code.output_history
    return len(history) if isinstance(history, list) else 0


def _asset_names(client: Any) -> dict[str, str]:
    """Map asset action ids to "dataset/asset", so review shows names, not UIDs."""
    names: dict[str, str] = {}
    for ds in client.datasets:
        for asset in ds.assets:
            names[str(asset.action_id)] = f"{ds.name}/{asset.name}"
    return names


def _inputs(code: Any, asset_names: dict[str, str]) -> list[InputSpec]:
    specs: list[InputSpec] = []
    for rules in (code.input_policy_init_kwargs or {}).values():
        for kw, rule in rules.items():
            kind = type(rule).__name__
            if kind == "Constant":
                specs.append(InputSpec(kw, "constant", repr(rule.val)))
            elif kind == "UserOwned":
                specs.append(InputSpec(kw, "scientist-owned", getattr(rule.type, "__name__", "?")))
            else:
                uid = str(getattr(rule, "val", rule))
                specs.append(InputSpec(kw, "asset", asset_names.get(uid, f"object {uid}")))
    return specs


class RequestBook:
    """The code requests of one datasite, through its admin client."""

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self.client = admin_client(data_dir)
        self.audit = AuditLog(data_dir.file(AUDIT_FILE))

    def all(self) -> list[Any]:
        with quiet():
            return list(self.client.requests)

    def find(self, request_id: str) -> Any:
        prefix = request_id.strip().lower().replace("-", "")
        matches = [r for r in self.all() if str(r.id).startswith(prefix)] if prefix else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RequestNotFound(
                f"no request with id {request_id!r} on this datasite; "
                "list them with `medsyft domain requests`"
            )
        raise RequestNotFound(f"request id {request_id!r} is ambiguous; give more characters")

    def table(self) -> pd.DataFrame:
        rows = []
        for r in self.all():
            code = r.code
            rows.append({
                "id": str(r.id), "requester": r.requesting_user_email,
                "function": code.service_func_name, "status": _status(r),
                "executions allowed": _limit(code), "executions used": _used(code),
                "submitted": str(r.request_time),
            })
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def review(self, request_id: str) -> ReviewReport:
        return self._report(self.find(request_id))

    def _report(self, r: Any) -> ReviewReport:
        code = r.code
        with quiet():
            inputs = _inputs(code, _asset_names(self.client))
        assets = [i.name for i in inputs if i.kind == "asset"]
        verdict = classify(code)
        return ReviewReport(
            request_id=str(r.id), requester=r.requesting_user_email,
            function=code.service_func_name, status=_status(r), code=code.raw_code,
            inputs=inputs, executions_allowed=_limit(code), executions_used=_used(code),
            flags=review_code(code.raw_code, asset_args=assets, function_name=code.service_func_name),
            privacy=self._privacy(verdict, inputs), verdict=verdict,
        )

    def _privacy(self, verdict: CodeVerdict, inputs: list[InputSpec]) -> PrivacyReview | None:
        """The privacy section of medsyft code, read from the constant the policy recognised."""
        if verdict.constant is None:  # custom code: no medsyft accounting applies to it
            return None
        if verdict.kind == "job":
            return review_privacy(self.data_dir, verdict.constant)
        if verdict.kind == "evaluate":
            rev = review_evaluation(self.data_dir, verdict.constant)
            bound = next((i.value for i in inputs if i.name == "labels"), "?")
            if bound != f"{rev.dataset}/labels":
                rev.refuse(f"the code is bound to {bound}, not to the test dataset '{rev.dataset}' the "
                           "evaluation names; deny it")
            return rev
        return review_release(self.data_dir, verdict.constant)

    def approve(self, request_id: str, *, allow_custom_code: bool = False) -> ReviewReport:
        """Approve a request that the site policy allows (see :mod:`domains.review.code_policy`).

        medsyft's own job and release code is approved as it is; a job reserves its ε plan
        first (PrivacyBudgetExceeded when it does not fit). Anything else is custom code and
        needs *allow_custom_code* on a datasite whose policy allows it.
        """
        request = self.find(request_id)
        report = self._report(request)
        verdict = report.verdict or classify(request.code)
        self._check_policy(report, verdict, code=request.code, allow_custom_code=allow_custom_code)
        job = verdict.constant if verdict.kind == "job" else None
        evaluation = verdict.constant if verdict.kind == "evaluate" else None
        reserved = None
        description = f"{report.function} from {report.requester}"
        if report.status != "approved":  # refuses a job or an evaluation over budget
            if job is not None:
                reserved = reserve_for(self.data_dir, job, description=description)
            elif evaluation is not None:
                reserved = reserve_evaluation(self.data_dir, evaluation, description=description)
        try:
            if verdict.kind == "custom":
                record_custom_approval(self.data_dir, verdict, request_id=report.request_id)
            with quiet():
                request.approve(disable_warnings=True)
        except BaseException:
            if reserved is not None and job is not None:
                release_for(self.data_dir, job)
            if reserved is not None and evaluation is not None:
                cancel_evaluation(self.data_dir, evaluation)
            raise
        self.audit.append(
            "approve", actor=local_actor(), subject=report.request_id,
            function=report.function, requester=report.requester,
            executions_allowed=report.executions_allowed, code=verdict.kind,
            code_sha256=verdict.code_hash, flags=[f.rule for f in report.flags],
            epsilon_reserved=None if reserved is None else round(reserved["job_epsilon"], 6),
        )
        return report

    def _check_policy(self, report: ReviewReport, verdict: CodeVerdict, *, code: Any,
                      allow_custom_code: bool) -> None:
        if verdict.kind == "custom":
            why = verdict.reasons[0] if verdict.reasons else "not a medsyft template"
            if _own_policy_class(code):
                raise PolicyRefused(
                    f"request {report.request_id[:8]} brings its own input or output policy class, code "
                    "that PySyft runs inside the datasite process, outside any sandbox; deny it")
            if not allow_custom_code:
                raise PolicyRefused(
                    f"request {report.request_id[:8]} is not medsyft's own job or release code ({why}); "
                    "this datasite approves only those. If you have read it and accept that it runs "
                    "code of the scientist's choosing, approve it with --allow-custom-code")
            if not load_policy(self.data_dir).allow_custom_code:
                raise PolicyRefused(
                    f"request {report.request_id[:8]} is custom code and this datasite does not allow "
                    "custom code; turn it on first with `medsyft domain policy --allow-custom-code on`")
            for dataset in self._pixels_outside_pysyft(report.inputs):
                raise PolicyRefused(
                    f"request {report.request_id[:8]} reads the images of '{dataset}', which PySyft does "
                    "not hold (published with --pysyft-images mock-only): the code would see no image; "
                    "deny it, or publish the dataset again with --pysyft-images full")
            return
        for reason in report.privacy.refusals if report.privacy else []:
            raise PolicyRefused(f"request {report.request_id[:8]} cannot be approved: {reason}")

    def _pixels_outside_pysyft(self, inputs: list[InputSpec]) -> list[str]:
        """Datasets whose images asset an input binds but whose pixels are in the training store only."""
        from domains.data.metadata import parse_metadata

        bound = {i.value.split("/")[0] for i in inputs if i.kind == "asset" and i.value.endswith("/images")}
        with quiet():
            datasets = [ds for ds in self.client.datasets if ds.name in bound]
        outside = [parse_metadata(ds.description).get("pysyft_images") == "mock-only" for ds in datasets]
        return [ds.name for ds, out in zip(datasets, outside, strict=True) if out]

    def deny(self, request_id: str, *, reason: str) -> ReviewReport:
        request = self.find(request_id)
        report = self._report(request)
        with quiet():
            request.deny(reason=reason)
        job = job_constant(request.code)
        if job is not None:
            release_for(self.data_dir, job)
        evaluation = evaluation_constant(request.code)
        if evaluation is not None:
            cancel_evaluation(self.data_dir, evaluation)
        self.audit.append(
            "deny", actor=local_actor(), subject=report.request_id,
            function=report.function, requester=report.requester, reason=reason,
        )
        return report

    def sync_executions(self) -> int:
        """Copy runs recorded by PySyft into the audit log, each at the time it really happened;
        returns how many were new.

        PySyft 0.9.5's ``ExecutionOutput.created_at`` is a class default evaluated once, at
        import, so it gives every run the datasite's start time. The true time is that output's
        row in PySyft's own store, inserted as the run finished (``time_source: "pysyft-store"``).
        A run whose row cannot be read is stamped with this sync's time and says so
        (``time_source: "synced"``), rather than with a time nobody knows.
        """
        seen = self.audit.keys("execution", "output_id")
        new = []
        for r in self.all():
            code = r.code
            new += [(r, code, out) for out in _history(code) if str(out.id) not in seen]
        if not new:
            return 0
        stored, synced = _stored_output_times(self.data_dir), utc_stamp()
        runs = sorted(((stored.get(_uid_hex(out.id)), r, code, out) for r, code, out in new),
                      key=lambda run: run[0] or synced)
        emails: dict[str, str] = {}
        for when, r, code, out in runs:
            user = str(out.executing_user_verify_key)
            if user not in emails:
                emails[user] = self._email_of(out.executing_user_verify_key)
            self.audit.append(
                "execution", time=when or synced, actor=emails[user], subject=str(r.id),
                function=code.service_func_name, output_id=str(out.id),
                time_source="pysyft-store" if when else "synced", synced_at=synced,
            )
        return len(new)

    def _email_of(self, verify_key: Any) -> str:
        try:
            with quiet():
                return str(self.client.api.services.user.get_by_verify_key(verify_key).email)
        except Exception:
            return f"unknown user {str(verify_key)[:12]}"


def _history(code: Any) -> list[Any]:
    with quiet():
        history = code.output_history
    return history if isinstance(history, list) else []


def _uid_hex(uid: Any) -> str:
    return str(uid).replace("-", "").lower()


def _stored_output_times(data_dir: DataDir) -> dict[str, str]:
    """When PySyft stored each run's output, by output id: the ``_created_at`` its database set
    on the ExecutionOutput row (UTC, to the second). Read-only; empty when the store is not a
    SQLite file here or cannot be read, so that those runs say their time is unknown."""
    if data_dir.read_config().db:
        return _postgres_output_times(data_dir)
    prefix = "sqlite:///"
    db = Path(data_dir.db_url[len(prefix):]) if data_dir.db_url.startswith(prefix) else None
    if db is None or not db.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as con:
            rows = con.execute('SELECT id, _created_at FROM "ExecutionOutput"').fetchall()
    except sqlite3.Error:
        return {}
    return {_uid_hex(uid): _iso(str(at)) for uid, at in rows if at}


def _postgres_output_times(data_dir: DataDir) -> dict[str, str]:
    """:func:`_stored_output_times` for a store in PostgreSQL (``deploy --db``), read-only."""
    import psycopg2

    from domains.site import database

    try:
        conn = psycopg2.connect(**database.connect_arguments(data_dir.read_config().db or "",
                                                             data_dir.db_password(), timeout=10))
    except (psycopg2.Error, MedsyftDomainError):
        return {}
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute('SELECT id, _created_at FROM "ExecutionOutput"')
            rows = cur.fetchall()
    except psycopg2.Error:
        return {}
    finally:
        conn.close()
    return {_uid_hex(uid): _iso(str(at)) for uid, at in rows if at}


def _own_policy_class(code: Any) -> bool:
    """Whether the code brings policy classes, which PySyft loads and runs in its own process."""
    return not all(isinstance(getattr(code, attr, None), type)
                   for attr in ("input_policy_type", "output_policy_type"))


def _iso(syft_time: str) -> str:
    """PySyft prints 'YYYY-MM-DD HH:MM:SS' in UTC; make it ISO 8601 like our own entries."""
    return syft_time.replace(" ", "T") + "+00:00" if "T" not in syft_time else syft_time
