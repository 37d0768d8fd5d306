"""A datasite's own copy of a server-optimizer job's global model: ``DIR/jobs/JOB/server-state.npz``.

Under HE with a server optimizer (``spec.server``: FedAvgM, FedAdam, FedYogi) the orchestrator
never sees a model, so it cannot take the optimizer's step; every site takes it, on its own copy
of the global model, with the same maths (:mod:`domains.shared.server_step`). The aggregate of
call r−1 decrypts to the same mean at every site, so every site holds the same global state:

- call 1 trains the registry's seeded initial model x₀; no file is written yet;
- call r ≥ 2 needs the state of call r−1 (x_{r−2} and the moments). The site steps with the
  decrypted mean of call r−1 and keeps the state of call r (x_{r−1}), written atomically (0600)
  with the digest of the mean it stepped with, before any private image is read;
- the same call asked again (after a refusal, which may be retried) finds the state already at r:
  with the same mean it is used as it is, with another it is refused: a step is applied once;
- a state at any other call means the site missed an aggregate (it was down, or refused a call
  before its step). The moments cannot be rebuilt without it, so the call is refused with
  :class:`~domains.runtime.errors.MissedAggregate`, and so is every later call of the job.

A damaged file is refused by name (:class:`~domains.runtime.errors.CallLogCorrupt`), never reset.
Every call's result carries :meth:`GlobalState.digest`, a public SHA-256 of the state after the
step, so the orchestrator can see that all sites hold the same state without seeing it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from domains.runtime.errors import CallLogCorrupt, MissedAggregate, TrainingError
from domains.shared.server_step import ServerState, server_update
from domains.shared.spec import JobSpec
from domains.site.datadir import DataDir
from privacy.durable import atomic_writer

STATE_FILE = "server-state.npz"
STATE_FORMAT = "medsyft-server-state/1"
_HASH_DOMAIN = b"medsyft/global-state/v1\0"


@dataclass(frozen=True)
class GlobalState:
    """The global model a site evaluates and trains at ``call`` and the optimizer state after its step."""

    call: int
    model: np.ndarray  # float32, x_{call−1}
    optimizer: ServerState
    mean_digest: str = ""  # SHA-256 of the decrypted mean it was stepped from ("" at call 1)

    def digest(self, job_id: str) -> str:
        """SHA-256 of the job, the call, the model and the moments (fixed byte order and dtypes)."""
        h = hashlib.sha256(_HASH_DOMAIN)
        h.update(json.dumps({"job_id": job_id, "call": self.call}, sort_keys=True).encode())
        arrays = {"model": self.model.astype("<f4"), **{k: v.astype("<f8")
                                                         for k, v in self.optimizer.to_arrays().items()}}
        for name in ("model", "momentum", "second_moment"):
            array = arrays.get(name)
            h.update(f"\0{name}:{'none' if array is None else array.size}\0".encode())
            if array is not None:
                h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


def mean_digest(mean: np.ndarray) -> str:
    """The digest a state keeps of the mean it was stepped from."""
    return hashlib.sha256(np.ascontiguousarray(mean, dtype="<f4").tobytes()).hexdigest()


class SiteGlobal:
    """One server-optimizer job's global state on one datasite."""

    def __init__(self, data_dir: DataDir, spec: JobSpec) -> None:
        if spec.server is None:
            raise TrainingError(f"job {spec.job_id} has no server optimizer: its sites keep no global state")
        self.spec, self.step = spec, spec.server
        self.path = data_dir.jobs_dir / spec.job_id / STATE_FILE

    def at(self, call: int, mean: np.ndarray | None, *, initial: np.ndarray) -> GlobalState:
        """The global state of *call*: x₀ at call 1, else the step from call r−1's *mean* (kept on disk)."""
        if call == 1:
            if mean is not None:
                raise TrainingError("call 1 trains the registry's initial model: it takes no global model")
            return GlobalState(1, np.asarray(initial, np.float32), ServerState())
        if mean is None:
            raise TrainingError(f"call {call} of a server-optimizer job needs the aggregate of call "
                                f"{call - 1}")
        current = self.load() or GlobalState(1, np.asarray(initial, np.float32), ServerState())
        digest = mean_digest(mean)
        job = self.spec.job_id
        if current.call == call:
            if current.mean_digest != digest:
                raise TrainingError(f"this site already stepped its global model for call {call} of job "
                                    f"{job} from another aggregate; a step is applied once per call")
            return current
        if current.call != call - 1:
            raise MissedAggregate(f"this site missed an aggregate of job {job} (its global state is at call "
                                  f"{current.call}, call {call} needs call {call - 1}): a server optimizer's "
                                  "state cannot be rebuilt, so it takes no further part in the job")
        model, optimizer = server_update(self.step, current.model, np.asarray(mean), current.optimizer)
        state = GlobalState(call, model, optimizer, digest)
        self._save(state)
        return state

    def load(self) -> GlobalState | None:
        """The kept state, or None before call 2; a damaged file is refused by name."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["__meta__"]))
                if meta.get("format") != STATE_FORMAT:
                    raise ValueError(f"not a {STATE_FORMAT} file")
                moments = {k: npz[k] for k in npz.files if k in ("momentum", "second_moment")}
                model = np.asarray(npz["model"])
            state = GlobalState(int(meta["call"]), model, ServerState.from_arrays(moments),
                                str(meta["mean_digest"]))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, TrainingError) as exc:
            raise CallLogCorrupt(f"{self.path} is damaged ({exc}); this site's copy of the global model "
                                "cannot be trusted: restore it from a backup") from exc
        if state.model.dtype != np.float32 or state.model.ndim != 1:
            raise CallLogCorrupt(f"{self.path} is damaged (its model is not one float32 vector); restore it "
                                "from a backup")
        return state

    def _save(self, state: GlobalState) -> None:
        meta = {"format": STATE_FORMAT, "call": state.call, "mean_digest": state.mean_digest,
                "server": self.step.to_dict()}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_writer(self.path, mode=0o600) as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta)), model=state.model,
                     **state.optimizer.to_arrays())


def step_global(data_dir: DataDir, spec: JobSpec, call: int, mean: np.ndarray | None, *,
                initial: np.ndarray) -> tuple[np.ndarray, str]:
    """What a server-optimizer call evaluates and trains, and the public hash of the site's state."""
    state = SiteGlobal(data_dir, spec).at(call, mean, initial=initial)
    return state.model, state.digest(spec.job_id)
