"""The datasite's own count of what an approved job has run (PySyft 0.9.5 does not count).

``DIR/jobs/JOB/ledger.jsonl`` gets one line per executed call and
``DIR/jobs/JOB/call-N.npz`` keeps that call's result. A job may run calls
1..max_calls, each at most once: a call number outside that range is refused
(:class:`ExecutionLimitReached`), and asking again for a call that already ran
returns its stored result instead of computing anew, so an orchestrator that
crashed mid-round can resume without a round running twice or being lost, and
without releasing anything it had not already released.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from domains.training.errors import ExecutionLimitReached

_WEIGHT_PREFIX = "w::"
_FLAT = "__flat__"  # weights sent as one flattened vector come back the same way
_ARRAY_PREFIX = "a::"  # other array results, e.g. a release share
_CHUNK_PREFIX = "c::"  # an encrypted update's ciphertexts, one uint8 array each (older results)
_PACKED = "packed::"  # an encrypted update's ciphertexts packed into one uint8 array


def _save_result(path: Path, result: dict[str, Any]) -> None:
    weights = result.get("weights")
    meta = {k: v for k, v in result.items() if k != "weights" and not isinstance(v, np.ndarray)}
    arrays = {f"{_ARRAY_PREFIX}{k}": v for k, v in result.items()
              if k != "weights" and isinstance(v, np.ndarray)}
    if isinstance(weights, dict) and "chunks" in weights:  # encrypted: metadata + packed ciphertexts
        meta["encrypted"] = {k: v for k, v in weights.items() if k != "chunks"}
        arrays[_PACKED] = np.asarray(weights["chunks"], dtype=np.uint8)
    else:
        named = {_FLAT: weights} if isinstance(weights, np.ndarray) else (weights or {})
        arrays.update({f"{_WEIGHT_PREFIX}{k}": v for k, v in named.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, default=float)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_result(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as npz:
        result: dict[str, Any] = json.loads(str(npz["__meta__"]))
        weights = {k[len(_WEIGHT_PREFIX):]: npz[k] for k in npz.files if k.startswith(_WEIGHT_PREFIX)}
        result.update({k[len(_ARRAY_PREFIX):]: npz[k] for k in npz.files if k.startswith(_ARRAY_PREFIX)})
        chunks = sorted((int(k[len(_CHUNK_PREFIX):]), npz[k].tobytes()) for k in npz.files
                        if k.startswith(_CHUNK_PREFIX))
        packed = npz[_PACKED] if _PACKED in npz.files else None
    encrypted = result.pop("encrypted", None)
    if encrypted is not None:
        result["weights"] = {**encrypted, "chunks": packed if packed is not None else [c for _, c in chunks]}
        return result
    result["weights"] = weights.get(_FLAT, weights) if weights else None
    return result


class JobLedger:
    """Executions of one job on one datasite."""

    def __init__(self, jobs_dir: Path, job_id: str, max_calls: int) -> None:
        self.dir = jobs_dir / job_id
        self.max_calls = max_calls
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "ledger.jsonl"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def run(self, call: int, compute: Any) -> dict[str, Any]:
        """Return call *call*'s result: stored if it already ran, else ``compute()`` once."""
        if not 1 <= call <= self.max_calls:
            raise ExecutionLimitReached(
                f"call {call} is outside the approved 1..{self.max_calls} for this job; "
                "submit a new job for more rounds"
            )
        stored = self.dir / f"call-{call}.npz"
        with self._lock():  # one call at a time per job: a replay waits for the original
            if stored.exists():
                result = _load_result(stored)
                result["replayed"] = True
                return result
            result = dict(compute())
            _save_result(stored, result)
            with self.path.open("a") as fh:
                fh.write(json.dumps({
                    "call": call, "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "task": result.get("task"), "n_train": result.get("n_train"),
                    "opacus_history": result.get("opacus_history"),
                }) + "\n")
        result["replayed"] = False
        return result
