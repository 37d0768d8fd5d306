"""What a datasite remembers of a job's verifiable secure aggregation, in ``DIR/jobs/JOB/secagg/``.

- ``part-C.npz``: the part this site signed for call C (header and ciphertext), written once:
  a site never signs two parts for one call, and :func:`privacy.secagg.recover_masks` needs it;
- ``state.json``: per call, the headers of the parts this site was shown (a survivor refuses to
  reveal its masks with a site whose valid part it has seen), the transcript of the sum it
  verified (the basis of its next part), and every mask recovery it signed (a call's masks are
  revealed for one survivor set only).

Files are 0600 and replaced atomically under a lock; a damaged file raises
:class:`~domains.runtime.errors.CallLogCorrupt` naming it and is never reset.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from domains.runtime import parts
from domains.runtime.errors import CallLogCorrupt, TrainingError
from domains.site.datadir import DataDir
from privacy.durable import atomic_write, file_lock
from privacy.errors import PrivacyError

if TYPE_CHECKING:
    from privacy.secagg_messages import MaskRecovery, SignedPart

STATE_FORMAT = "medsyft-secagg-state/1"
_EMPTY: dict[str, Any] = {"format": STATE_FORMAT, "shown": {}, "transcripts": {}, "issued": []}


class SecAggState:
    """One job's secure-aggregation record on one datasite."""

    def __init__(self, data_dir: DataDir, job_id: str) -> None:
        self.dir = data_dir.jobs_dir / job_id / "secagg"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "state.json"
        self.lock = file_lock(self.dir / ".lock")  # reentrant: composite steps hold it around the parts

    # -- this site's own parts ----------------------------------------------------------
    def own_part(self, call: int) -> SignedPart | None:
        """The part this site signed for *call*, or None."""
        path = self._part_path(call)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                record, chunks = json.loads(str(npz["header"])), npz["chunks"]
            return parts.from_record(record, chunks)
        except (OSError, ValueError, KeyError, PrivacyError) as exc:
            raise CallLogCorrupt(f"{path} is damaged ({exc}); this site's signed part of call {call} "
                                "cannot be trusted: restore it from a backup") from exc

    def keep_own(self, part: SignedPart) -> None:
        """Keep a freshly signed part; refuses a second part for the same call."""
        with self.lock:
            path = self._part_path(part.call)
            if path.exists():
                raise TrainingError(f"this site already signed a part for call {part.call}; it never "
                                    "signs two parts of one call")
            record, chunks = parts.to_record(part)
            buffer = io.BytesIO()
            np.savez(buffer, header=np.array(json.dumps(record)), chunks=chunks)
            atomic_write(path, buffer.getvalue(), mode=0o600)

    # -- what it was shown, verified and revealed -------------------------------------------
    def record_shown(self, call: int, shown: list[SignedPart]) -> None:
        """Remember the headers of the parts of *call* this site was shown (before it checks them)."""
        with self.lock:
            state = self._read()
            headers = state["shown"].setdefault(str(call), [])
            for part in shown:
                header, _ = parts.split(part)
                if header not in headers:
                    headers.append(header)
            self._save(state)

    def shown(self, call: int) -> list[SignedPart]:
        """The parts of *call* this site was shown, each with this site's own ciphertext of that call:
        only their signed statements are kept, and only the statements are checked against them."""
        own = self.own_part(call)
        if own is None:
            return []
        _, vector = parts.split(own)
        return [parts.join(header, vector) for header in self._read()["shown"].get(str(call), [])]

    def record_transcript(self, call: int, transcript: str) -> None:
        """The transcript of the sum of *call*'s parts this site verified (the basis of its next part)."""
        with self.lock:
            state = self._read()
            state["transcripts"][str(call)] = transcript
            self._save(state)

    def issued(self) -> list[MaskRecovery]:
        from privacy.secagg_messages import MaskRecovery

        try:
            return [MaskRecovery.from_dict(d) for d in self._read()["issued"]]
        except PrivacyError as exc:
            raise CallLogCorrupt(f"{self.path} holds a damaged mask recovery ({exc}); restore it from a "
                                "backup") from exc

    def record_issued(self, recovery: MaskRecovery) -> None:
        with self.lock:
            state = self._read()
            if recovery.to_dict() not in state["issued"]:
                state["issued"].append(recovery.to_dict())
            self._save(state)

    # -- files ---------------------------------------------------------------------------------
    def _part_path(self, call: int) -> Path:
        return self.dir / f"part-{int(call)}.npz"

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return json.loads(json.dumps(_EMPTY))
        try:
            state = json.loads(self.path.read_text())
            if not (isinstance(state, dict) and state.get("format") == STATE_FORMAT
                    and set(_EMPTY) <= set(state)):
                raise ValueError(f"not a {STATE_FORMAT} file")
        except (OSError, ValueError) as exc:
            raise CallLogCorrupt(f"{self.path} is damaged ({exc}); the job's secure-aggregation record "
                                "cannot be trusted: restore it from a backup") from exc
        return state

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(state, indent=1).encode(), mode=0o600)
