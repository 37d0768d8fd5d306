"""The data owner's review workflow: list code requests, review one, approve or deny it.

A request is addressed by its PySyft id or any unique prefix of it (as git does
with commits). Review shows what an owner must judge before private data is
touched: the code, which inputs are fixed at approval (assets and constants)
and which the scientist may change at every call, how many runs the approval
allows, and the flags of :mod:`domains.review`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from domains.audit import AuditLog, local_actor
from domains.connection import admin_client, quiet
from domains.datadir import AUDIT_FILE, DataDir
from domains.errors import RequestNotFound
from domains.privacy_review import (
    PrivacyReview,
    job_constant,
    release_constant,
    release_for,
    reserve_for,
    review_privacy,
    review_release,
)
from domains.review import Flag, review_code

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
        return ReviewReport(
            request_id=str(r.id), requester=r.requesting_user_email,
            function=code.service_func_name, status=_status(r), code=code.raw_code,
            inputs=inputs, executions_allowed=_limit(code), executions_used=_used(code),
            flags=review_code(code.raw_code, asset_args=assets, function_name=code.service_func_name),
            privacy=self._privacy(code),
        )

    def _privacy(self, code: Any) -> PrivacyReview | None:
        job = job_constant(code)
        if job is not None:
            return review_privacy(self.data_dir, job)
        release = release_constant(code)
        return None if release is None else review_release(self.data_dir, release)

    def approve(self, request_id: str) -> ReviewReport:
        request = self.find(request_id)
        report = self._report(request)
        job = job_constant(request.code)
        reserved = None
        if job is not None and report.status != "approved":  # refuses a job over budget
            reserved = reserve_for(self.data_dir, job,
                                   description=f"{report.function} from {report.requester}")
        try:
            with quiet():
                request.approve(disable_warnings=True)
        except BaseException:
            if reserved is not None and job is not None:
                release_for(self.data_dir, job)
            raise
        self.audit.append(
            "approve", actor=local_actor(), subject=report.request_id,
            function=report.function, requester=report.requester,
            executions_allowed=report.executions_allowed,
            flags=[f.rule for f in report.flags],
            epsilon_reserved=None if reserved is None else round(reserved["job_epsilon"], 6),
        )
        return report

    def deny(self, request_id: str, *, reason: str) -> ReviewReport:
        request = self.find(request_id)
        report = self._report(request)
        with quiet():
            request.deny(reason=reason)
        job = job_constant(request.code)
        if job is not None:
            release_for(self.data_dir, job)
        self.audit.append(
            "deny", actor=local_actor(), subject=report.request_id,
            function=report.function, requester=report.requester, reason=reason,
        )
        return report

    def sync_executions(self) -> int:
        """Copy runs recorded by PySyft into the audit log; returns how many were new."""
        seen = self.audit.keys("execution", "output_id")
        new = []
        for r in self.all():
            with quiet():
                history = r.code.output_history
            for out in history if isinstance(history, list) else []:
                if str(out.id) not in seen:
                    new.append((str(out.created_at), r, out))
        emails: dict[str, str] = {}
        for when, r, out in sorted(new, key=lambda item: item[0]):
            key = out.executing_user_verify_key
            if str(key) not in emails:
                emails[str(key)] = self._email_of(key)
            self.audit.append(
                "execution", time=_iso(when), actor=emails[str(key)],
                subject=str(r.id), function=r.code.service_func_name, output_id=str(out.id),
            )
        return len(new)

    def _email_of(self, verify_key: Any) -> str:
        try:
            with quiet():
                return str(self.client.api.services.user.get_by_verify_key(verify_key).email)
        except Exception:
            return f"unknown user {str(verify_key)[:12]}"


def _iso(syft_time: str) -> str:
    """PySyft prints 'YYYY-MM-DD HH:MM:SS' in UTC; make it ISO 8601 like our own entries."""
    return syft_time.replace(" ", "T") + "+00:00" if "T" not in syft_time else syft_time
