"""``[tracking]``: every evaluated model's metrics, ε and update bytes, also in MLflow or TensorBoard.

The run directory stays the record (``metrics.csv``, ``privacy.csv``, ``history.csv``); after each
round the tracker logs what is new there, so a resumed run continues the same MLflow run (its id is
kept in ``RUN_DIR/tracking.json``) and never logs a round twice. Steps are model rounds (0 = the
initial model), as in ``metrics.csv``.

- MLflow (``backend = "mlflow"``): a local SQLite store by default, ``RUN_DIR/mlflow.db`` (MLflow 3
  keeps its plain-folder store in maintenance mode); any tracking URI MLflow takes otherwise. The
  job's constants are the run's parameters; metrics are ``<site>/<metric>`` (``pooled/accuracy``...).
- TensorBoard (``backend = "tensorboard"``): event files under ``RUN_DIR/tensorboard/EXPERIMENT/JOB``
  (or *uri*), scalars ``<metric>/<site>``, so one chart shows every site.

Both are optional packages (``pip install 'medsyft[tracking]'``); a missing one is one line naming it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.checkpoint import RunDir
from orchestrator.config import TrackingConfig
from orchestrator.errors import ConfigError

STATE = "tracking"  # RUN_DIR/tracking.json
METRICS = ("accuracy", "auc", "loss")


def rows_to_log(run: RunDir, after: int) -> list[tuple[int, dict[str, float]]]:
    """``(model_round, {name: value})`` for each evaluated model after *after*: its metrics, each
    site's ε as reported by the call that evaluated it (so the last step holds the job's total, the
    final evaluation's noise included) and the bytes of the updates that made it."""
    metrics = run.load_frame("metrics")
    if metrics.empty:
        return []
    privacy, history = run.load_frame("privacy"), run.load_frame("history")
    out = []
    for model_round, group in metrics.groupby("model_round"):
        r = int(model_round)
        if r <= after:
            continue
        values: dict[str, float] = {}
        for _, row in group.iterrows():
            for metric in METRICS:
                if metric in row and pd.notna(row[metric]):
                    values[f"{row['site']}/{metric}"] = float(row[metric])
        if not privacy.empty:  # the call that evaluated model r is call r + 1
            for _, row in privacy[privacy["call"] == r + 1].iterrows():
                values[f"{row['site']}/epsilon_spent"] = float(row["job_epsilon_spent"])
        if not history.empty and r >= 1:
            sent = history[(history["round"] == r) & (history["status"] == "ok")]["update_bytes"]
            if not sent.empty:
                values["update_bytes"] = float(sent.fillna(0).sum())
        out.append((r, values))
    return out


class Tracker(ABC):
    """Logs a run's new rows; :meth:`sync` is called after every round and once at the end."""

    def __init__(self, run: RunDir, state: dict[str, Any]) -> None:
        self.run = run
        self.state = state

    def sync(self, *, finished: bool = False) -> int:
        """Log every model evaluated since the last sync; returns how many were logged."""
        rows = rows_to_log(self.run, int(self.state.get("logged_round", -1)))
        for model_round, values in rows:
            self.log(model_round, values)
            self.state["logged_round"] = model_round
        if finished and not self.state.get("finished"):
            self.finish()
            self.state["finished"] = True
        self.run.save_json(STATE, self.state)
        return len(rows)

    @abstractmethod
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def finish(self) -> None:  # noqa: B027 - a backend with nothing to close keeps this
        """Close the run in the backend."""


class MLflowTracker(Tracker):
    def __init__(self, run: RunDir, state: dict[str, Any], *, uri: str, experiment: str,
                 spec: Any, strategy: dict[str, Any] | None) -> None:
        super().__init__(run, state)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError('[tracking] backend = "mlflow" needs MLflow: pip install '
                              "'medsyft[tracking]' (mlflow-skinny, alembic)") from exc
        self.client = MlflowClient(tracking_uri=uri)
        if "run_id" not in state:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            tags = {"medsyft.job_id": spec.job_id, "medsyft.dataset": spec.dataset}
            created = self.client.create_run(experiment_id, run_name=f"job {spec.job_id}", tags=tags)
            state.update(run_id=created.info.run_id, experiment_id=experiment_id, uri=uri)
            self._log_params(spec, strategy)

    def _log_params(self, spec: Any, strategy: dict[str, Any] | None) -> None:
        from mlflow.entities import Param

        flat = {"model": spec.model, "rounds": spec.rounds, "dataset": spec.dataset,
                "sites": ",".join(spec.sites), "dp": spec.dp is not None, "he": spec.he is not None,
                **{f"train.{k}": v for k, v in asdict(spec.train).items()}}
        if spec.dp is not None:
            flat.update({"dp.noise_multiplier": spec.dp.noise_multiplier,
                         "dp.max_grad_norm": spec.dp.max_grad_norm, "dp.delta": spec.dp.delta})
        if strategy:
            flat["strategy"] = strategy.get("name")
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        self.client.log_batch(self.state["run_id"], params=params)

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        self.client.log_batch(self.state["run_id"], metrics=metrics)

    def finish(self) -> None:
        self.client.set_terminated(self.state["run_id"])


class TensorBoardTracker(Tracker):
    def __init__(self, run: RunDir, state: dict[str, Any], *, log_dir: Path) -> None:
        super().__init__(run, state)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError('[tracking] backend = "tensorboard" needs TensorBoard: pip install '
                              "'medsyft[tracking]' (tensorboard)") from exc
        state.setdefault("log_dir", str(log_dir))
        self.writer = SummaryWriter(log_dir=state["log_dir"])

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            site, _, metric = key.rpartition("/")
            self.writer.add_scalar(f"{metric}/{site}" if site else metric, value, step)
        self.writer.flush()

    def sync(self, *, finished: bool = False) -> int:
        logged = super().sync(finished=finished)
        if finished:
            self.writer.close()
        return logged


def open_tracker(config: TrackingConfig, run: RunDir, base_dir: Path, spec: Any) -> Tracker | None:
    """The tracker ``[tracking]`` asks for (None when it asks for none), resuming its saved state."""
    if config.backend is None:
        return None
    state: dict[str, Any] = run.load_json(STATE) or {}
    if state.get("backend", config.backend) != config.backend:
        raise ConfigError(f"[tracking] backend is {config.backend!r} but this run was tracked with "
                          f"{state['backend']!r}; keep the backend, or use a new run_dir")
    state["backend"] = config.backend
    if config.backend == "mlflow":
        uri = state.get("uri") or _mlflow_uri(config.uri, run.path, base_dir)
        return MLflowTracker(run, state, uri=uri, experiment=config.experiment, spec=spec,
                             strategy=run.load_json("strategy"))
    folder = Path(config.uri).expanduser() if config.uri else run.path / "tensorboard"
    if not folder.is_absolute():
        folder = base_dir / folder
    return TensorBoardTracker(run, state, log_dir=folder / config.experiment / spec.job_id)


def _mlflow_uri(uri: str | None, run_dir: Path, base_dir: Path) -> str:
    if uri is None:
        return f"sqlite:///{run_dir / 'mlflow.db'}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return f"{prefix}{(base_dir / uri[len(prefix):]).resolve()}"
    return uri


def describe(tracker: Tracker | None) -> str | None:
    """One line saying where the rounds went, for the CLI."""
    if tracker is None:
        return None
    state = tracker.state
    if state["backend"] == "mlflow":
        return f"tracking: MLflow run {state['run_id']} at {state['uri']}"
    return f"tracking: TensorBoard events in {state['log_dir']} (tensorboard --logdir {state['log_dir']})"

