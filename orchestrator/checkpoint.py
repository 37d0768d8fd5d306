"""A run directory that survives the orchestrator: checkpoint after every round, resume later.

``RUN_DIR/state.json`` holds the job (its id and every approved constant), the
request per site and the last completed round; ``RUN_DIR/global-R.npz`` the
global model after round R (under HE the encrypted sum, and under a roster job the
round's signed parts and mask recoveries: the orchestrator never holds the plaintext);
``history.csv`` and ``metrics.csv`` what happened.
Files are replaced atomically, so a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains.training import parts
from domains.training.spec import JobSpec
from domains.training.weights import Weights
from orchestrator.secure import SignedRound
from orchestrator.submit import Submission
from privacy.he import EncryptedVector
from privacy.secagg_messages import MaskRecovery

_ENCRYPTED = "__encrypted__"  # the npz of an encrypted global model: metadata plus one array per chunk
_CHUNK = "chunk_"
_SIGNED = "__signed_round__"  # a roster job's round: the parts' headers and recoveries, one array per part
_PART = "part_"
GlobalModel = Weights | EncryptedVector | SignedRound | None


@dataclass
class RunState:
    spec: JobSpec
    submissions: list[Submission] = field(default_factory=list)
    completed_round: int = 0
    finished: bool = False
    sizes: dict[str, int] = field(default_factory=dict)  # public training-split sizes at submission


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return (self.path / "state.json").exists()

    def save_state(self, state: RunState) -> None:
        data = {"spec": state.spec.to_dict(), "submissions": [asdict(s) for s in state.submissions],
                "completed_round": state.completed_round, "finished": state.finished,
                "sizes": state.sizes}
        _atomic(self.path / "state.json", lambda fh: fh.write(json.dumps(data, indent=2).encode()))

    def load_state(self) -> RunState:
        data = json.loads((self.path / "state.json").read_text())
        return RunState(JobSpec.from_dict(data["spec"]),
                        [Submission(**s) for s in data["submissions"]],
                        int(data["completed_round"]), bool(data["finished"]),
                        {k: int(v) for k, v in data.get("sizes", {}).items()})

    def save_global(self, round_number: int, model: GlobalModel) -> None:
        """The global model after a round: plaintext weights, the encrypted sum under HE, or the
        signed parts under a roster job."""
        path = self.path / f"global-{round_number}.npz"
        if model is None:
            return  # round 0 under HE: the sites build the initial model themselves
        if isinstance(model, SignedRound):
            meta, arrays = _signed_arrays(model)
            _atomic(path, lambda fh: np.savez(fh, **{_SIGNED: np.array(json.dumps(meta))}, **arrays))
            return
        if isinstance(model, EncryptedVector):
            meta = {k: v for k, v in model.to_dict().items() if k != "chunks"}
            chunks = {f"{_CHUNK}{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(model.chunks)}
            _atomic(path, lambda fh: np.savez(fh, **{_ENCRYPTED: np.array(json.dumps(meta))}, **chunks))
            return
        _atomic(path, lambda fh: np.savez(fh, **model))

    def load_global(self, round_number: int) -> GlobalModel:
        path = self.path / f"global-{round_number}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as npz:
            if _SIGNED in npz.files:
                return _signed_round(json.loads(str(npz[_SIGNED])), npz)
            if _ENCRYPTED not in npz.files:
                return {k: npz[k] for k in npz.files}
            meta = json.loads(str(npz[_ENCRYPTED]))
            count = sum(1 for k in npz.files if k.startswith(_CHUNK))
            chunks = [npz[f"{_CHUNK}{i}"].tobytes() for i in range(count)]
        return EncryptedVector.from_dict({**meta, "chunks": chunks})

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        _atomic(self.path / f"{name}.csv", lambda fh: fh.write(frame.to_csv(index=False).encode()))

    def load_frame(self, name: str) -> pd.DataFrame:
        path = self.path / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _signed_arrays(model: SignedRound) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A signed round as JSON metadata plus each part's packed ciphertext (:mod:`domains.training.parts`)."""
    records, arrays = [], {}
    for i, part in enumerate(model.parts):
        record, arrays[f"{_PART}{i}"] = parts.to_record(part)
        records.append(record)
    meta = {"call": model.call, "parts": records, "recoveries": [r.to_dict() for r in model.recoveries]}
    return meta, arrays


def _signed_round(meta: dict[str, Any], npz: Any) -> SignedRound:
    found = tuple(parts.from_record(record, npz[f"{_PART}{i}"]) for i, record in enumerate(meta["parts"]))
    return SignedRound(call=int(meta["call"]), parts=found,
                       recoveries=tuple(MaskRecovery.from_dict(r) for r in meta["recoveries"]))
