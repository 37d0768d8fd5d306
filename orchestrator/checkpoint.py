"""A run directory that survives the orchestrator: checkpoint after every round, resume later.

``RUN_DIR/state.json`` holds the job (its id and every approved constant), the
request per site and the last completed round; ``RUN_DIR/global-R.npz`` the
global model after round R (the plaintext model with its layout; under HE the encrypted sum, and
under a roster job the round's signed parts and mask recoveries: the orchestrator never holds the
plaintext), in the one codec's stored form (:func:`domains.shared.codec.to_npz`; the forms older
run directories hold still load);
``RUN_DIR/strategy-R.npz`` what the strategy carries into round R+1 (a server optimizer's
moments; absent for strategies that keep none);
``history.csv`` and ``metrics.csv`` what happened.
Files are replaced atomically and fsync'ed (:mod:`privacy.durable`), so a crash leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains.shared import codec
from domains.shared.plain_model import PlainModel
from domains.shared.signed_round import SignedRound
from domains.shared.spec import JobSpec
from orchestrator.submit import Submission
from privacy.durable import atomic_writer
from privacy.he import EncryptedVector

GlobalModel = PlainModel | EncryptedVector | SignedRound | None


@dataclass
class RunState:
    spec: JobSpec
    submissions: list[Submission] = field(default_factory=list)
    completed_round: int = 0
    finished: bool = False
    sizes: dict[str, int] = field(default_factory=dict)  # public training-split sizes at submission


def _atomic(path: Path, write: Any) -> None:
    """*write(fh)* fills the file that replaces *path* (0600, as checkpoints always were)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, mode=0o600) as fh:
        write(fh)


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
        """The global model after a round, in the codec's stored form (:mod:`domains.shared.codec`):
        the plaintext model, the encrypted sum under HE, or the signed parts under a roster job."""
        if model is None:
            return  # round 0 under HE: the sites build the initial model themselves
        self.path.mkdir(parents=True, exist_ok=True)
        codec.to_npz(self.path / f"global-{round_number}.npz", codec.as_value(model))

    def load_global(self, round_number: int) -> GlobalModel:
        """The model :meth:`save_global` kept (or an older run directory's); None if none was."""
        path = self.path / f"global-{round_number}.npz"
        if not path.exists():
            return None
        model: GlobalModel = codec.from_npz(path)
        return model

    def save_strategy(self, round_number: int, state: dict[str, np.ndarray]) -> None:
        """The strategy's state after a round (:meth:`orchestrator.strategy.Strategy.state`), if any."""
        if state:
            _atomic(self.path / f"strategy-{round_number}.npz", lambda fh: np.savez(fh, **state))

    def load_strategy(self, round_number: int) -> dict[str, np.ndarray]:
        """The state :meth:`save_strategy` kept after round *round_number*; empty if none was."""
        path = self.path / f"strategy-{round_number}.npz"
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        _atomic(self.path / f"{name}.csv", lambda fh: fh.write(frame.to_csv(index=False).encode()))

    def save_json(self, name: str, data: Any) -> None:
        text = json.dumps(data, indent=2, default=str)
        _atomic(self.path / f"{name}.json", lambda fh: fh.write(text.encode()))

    def load_json(self, name: str) -> Any:
        path = self.path / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def load_frame(self, name: str) -> pd.DataFrame:
        path = self.path / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

