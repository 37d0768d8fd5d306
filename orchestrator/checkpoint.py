"""A run directory that survives the orchestrator: checkpoint after every round, resume later.

``RUN_DIR/state.json`` holds the job (its id and every approved constant), the
request per site and the last completed round; ``RUN_DIR/global-R.npz`` the
global model after round R; ``history.csv`` and ``metrics.csv`` what happened.
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

from domains.training.spec import JobSpec
from domains.training.weights import Weights
from orchestrator.submit import Submission


@dataclass
class RunState:
    spec: JobSpec
    submissions: list[Submission] = field(default_factory=list)
    completed_round: int = 0
    finished: bool = False


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
                "completed_round": state.completed_round, "finished": state.finished}
        _atomic(self.path / "state.json", lambda fh: fh.write(json.dumps(data, indent=2).encode()))

    def load_state(self) -> RunState:
        data = json.loads((self.path / "state.json").read_text())
        return RunState(JobSpec.from_dict(data["spec"]),
                        [Submission(**s) for s in data["submissions"]],
                        int(data["completed_round"]), bool(data["finished"]))

    def save_weights(self, round_number: int, weights: Weights) -> None:
        _atomic(self.path / f"global-{round_number}.npz", lambda fh: np.savez(fh, **weights))

    def load_weights(self, round_number: int) -> Weights:
        with np.load(self.path / f"global-{round_number}.npz") as npz:
            return {k: npz[k] for k in npz.files}

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        _atomic(self.path / f"{name}.csv", lambda fh: fh.write(frame.to_csv(index=False).encode()))

    def load_frame(self, name: str) -> pd.DataFrame:
        path = self.path / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()
