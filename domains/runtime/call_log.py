"""The datasite's own count of what an approved job has run (PySyft 0.9.5 does not count).

``DIR/jobs/JOB/ledger.jsonl`` gets one fsync'ed line per event of a call (``started``, then
``done`` or ``failed``, or ``refused`` when an expected check stopped it before any private
data was read, which may be tried again; ``skipped`` when the orchestrator gave a call up) and
``DIR/jobs/JOB/call-N.npz`` keeps a finished call's result (its update in the codec's stored
form, :func:`domains.shared.codec.to_npz`; results stored by older versions still replay). A job may run calls
1..max_calls, in order, each at most once: a call number outside that range is refused
(:class:`ExecutionLimitReached`), a call before its predecessor was resolved is refused
(:class:`CallOutOfOrder`), and a call that failed or was interrupted is never tried again
(:class:`CallNotRepeatable`), because it may already have touched private data. Asking
again for a call that finished returns its stored result instead of computing anew, so an
orchestrator that crashed mid-round can resume without a round running twice or being
lost, and without releasing anything it had not already released.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from domains.errors import MedsyftDomainError
from domains.runtime.errors import (
    CallLogCorrupt,
    CallNotRepeatable,
    CallOutOfOrder,
    ExecutionLimitReached,
    PrivateComputationFailed,
)
from domains.shared import codec
from domains.shared.errors import CodecError
from privacy.durable import file_lock, utc_stamp
from privacy.errors import PrivacyError


def _save_result(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a finished call's result, its update through the codec; returns the result as the call
    returns it (the update in its wire form)."""
    value = result.get("weights")
    value = None if value is None else codec.as_value(value)
    codec.to_npz(path, value, fields={k: v for k, v in result.items() if k != "weights"})
    return {**result, "weights": codec.to_wire(value)} if value is not None else result


def _load_result(path: Path) -> dict[str, Any]:
    """A stored result as the call returned it; older forms read too (:mod:`domains.shared.legacy`)."""
    try:
        stored = codec.read_npz(path)
    except CodecError as exc:
        raise CallLogCorrupt(f"{exc}; the call's stored result cannot be replayed: restore it from a "
                            "backup") from exc
    return {**stored.fields, "weights": None if stored.value is None else codec.to_wire(stored.value)}


class CallLog:
    """Executions of one job on one datasite."""

    def __init__(self, jobs_dir: Path, job_id: str, max_calls: int, *, retry_failed: bool = False) -> None:
        self.dir = jobs_dir / job_id
        self.max_calls = max_calls
        self.retry_failed = retry_failed  # only for calls that compute on no private data
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "ledger.jsonl"

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise CallLogCorrupt(f"{self.path} line {number} is damaged ({exc}); the job's call "
                                    "record cannot be trusted: restore it from a backup") from exc
        return out

    def states(self) -> dict[int, str]:
        """Each call's state: ``done``, ``failed``, ``skipped``, or ``started`` (never finished).

        A call whose log says ``started`` and that is not running now was interrupted (the
        datasite died during it): it counts as failed, since it may have touched private data.
        """
        states: dict[int, str] = {}
        for entry in self.entries():
            states[int(entry["call"])] = str(entry.get("state", "done"))  # older lines: done
            if states[int(entry["call"])] == "refused":  # stopped before private data: may run
                del states[int(entry["call"])]
        for call in range(1, self.max_calls + 1):
            if (self.dir / f"call-{call}.npz").exists():
                states[call] = "done"
        return states

    def run(self, call: int, compute: Any, *, skipped: Iterable[int] = ()) -> dict[str, Any]:
        """Return call *call*'s result: stored if it already ran, else ``compute()`` once.

        Calls run in order: call k needs every earlier call to be resolved on this site (done,
        failed, or given up by the orchestrator in *skipped*; a skipped call never runs later).
        Every attempt is written before it starts, and one that failed, or was interrupted, is
        never retried: it may already have touched private data, and its ε was charged.
        """
        if not 1 <= call <= self.max_calls:
            raise ExecutionLimitReached(
                f"call {call} is outside the approved 1..{self.max_calls} for this job; "
                "submit a new job for more rounds"
            )
        stored = self.dir / f"call-{call}.npz"
        with file_lock(self.dir / ".lock"):  # one call at a time per job: a replay waits for the original
            if stored.exists():
                result = _load_result(stored)
                result["replayed"] = True
                return result
            states = self._resolve_skips(call, skipped)
            if self.retry_failed and states.get(call) in ("failed", "started"):
                del states[call]
            if call in states:
                raise CallNotRepeatable(
                    f"call {call} of this job already {_PAST[states[call]]} on this datasite and is not "
                    "run again (every attempt on private data counts); submit a new job")
            missing = [c for c in range(1, call) if c not in states]
            if missing:
                raise CallOutOfOrder(f"call {call} needs call {missing[-1]} to have completed on "
                                     "this datasite first; calls run in order")
            self._append({"call": call, "state": "started"})
            try:
                result = dict(compute())
            except BaseException as exc:
                self._append({"call": call, "state": "failed" if _reached_data(exc) else "refused",
                              "error": type(exc).__name__})
                raise
            result = _save_result(stored, result)
            self._append({"call": call, "state": "done", "step": result.get("step"),
                          "n_train": result.get("n_train"),
                          "opacus_history": result.get("opacus_history")})
        result["replayed"] = False
        return result

    def _resolve_skips(self, call: int, skipped: Iterable[int]) -> dict[int, str]:
        states = self.states()
        for c in sorted({int(c) for c in skipped}):
            if 1 <= c < call and c not in states:
                self._append({"call": c, "state": "skipped"})
                states[c] = "skipped"
        return states

    def _append(self, entry: dict[str, Any]) -> None:
        """One fsync'ed line per event, stamped with the time it happened."""
        line = json.dumps({**entry, "time": utc_stamp("milliseconds")})
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _reached_data(exc: BaseException) -> bool:
    """Whether a failed call may have touched private data (anything but an expected refusal)."""
    return isinstance(exc, PrivateComputationFailed) or not isinstance(exc, MedsyftDomainError | PrivacyError)


_PAST = {"failed": "failed", "started": "was interrupted", "skipped": "was skipped", "done": "ran"}
