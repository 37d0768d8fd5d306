"""What a federated run gives back: tables, a plot, and the final model.

``metrics`` has one row per evaluated global model and site, plus a ``pooled``
row per model (loss and accuracy weighted by validation size, ROC-AUC from the
sites' summed score histograms). ``history`` has one row per round and site,
including skipped sites and why. ``timing`` breaks each round down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from domains import Weights, build_model, set_weights
from domains.shared.plain_model import PlainModel
from domains.shared.spec import JobSpec
from orchestrator.checkpoint import RunDir
from orchestrator.errors import ReleaseRequired


def latest_privacy(privacy: pd.DataFrame) -> pd.DataFrame:
    """Each site's last row of ``privacy.csv`` (its ledger as of its last call), indexed by site."""
    if privacy.empty:
        return pd.DataFrame()
    return privacy.sort_values("call").groupby("site").tail(1).set_index("site")


def model_with(spec: JobSpec, weights: Weights) -> Any:
    """The job's network holding *weights* (a final, released or checkpointed model)."""
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size)
    set_weights(model, weights)
    return model


@dataclass
class FederatedResult:
    """``weights`` is None under HE: the orchestrator never holds the plaintext model; it
    arrives only through a release every data owner approves (:mod:`orchestrator.release`)."""

    spec: JobSpec
    weights: Weights | None
    history: pd.DataFrame
    metrics: pd.DataFrame
    timing: pd.DataFrame
    wall_seconds: float
    run_dir: Path
    privacy: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def load(cls, run_dir: Path, spec: JobSpec) -> FederatedResult:
        def frame(name: str) -> pd.DataFrame:
            path = run_dir / f"{name}.csv"
            return pd.read_csv(path) if path.exists() else pd.DataFrame()

        weights = None
        if spec.he is None:  # the last checkpoint, in the codec's stored form (or an older one)
            final = RunDir(run_dir).load_global(spec.rounds)
            weights = final.to_weights() if isinstance(final, PlainModel) else None
        timing = frame("timing")
        wall = float(timing["round_s"].sum()) if "round_s" in timing else float("nan")  # rounds only
        return cls(spec, weights, frame("history"), frame("metrics"), timing, wall, run_dir,
                   frame("privacy"))

    def epsilon(self) -> pd.DataFrame:
        """ε per site after the run: this job's spend and the dataset's budget, spent and left."""
        last = latest_privacy(self.privacy)
        if last.empty:
            return last
        return last[["job_epsilon_spent", "dataset_epsilon_spent", "dataset_epsilon_budget",
                     "dataset_epsilon_remaining", "noise_multiplier", "delta"]]

    def wire_cost(self) -> str | None:
        """One line on what an encrypted round put on the wire per site; None without HE."""
        if self.spec.he is None or "x_float32" not in self.timing or self.timing.empty:
            return None
        t = self.timing.iloc[-1]
        return (f"HE wire cost per round: {t['update_MB']:.2f} MB per site for {int(t['params'])} "
                f"parameters = {t['bytes_per_param']:.2f} bytes/parameter ({t['x_float32']:.2f}x float32)")

    def final_model(self) -> object:
        if self.weights is None:
            raise ReleaseRequired(
                "the final model is encrypted (HE): request its release with "
                "`medsyft release --config job.toml` and fetch it once every data owner approved"
            )
        return model_with(self.spec, self.weights)

    def pooled(self) -> pd.DataFrame:
        """Pooled validation metrics per global model (round 0 = the initial model)."""
        rows = self.metrics[self.metrics["site"] == "pooled"]
        return rows.drop(columns=["site", "global_state_hash"], errors="ignore").set_index("model_round")

    def summary(self) -> dict[str, float]:
        last = self.pooled().iloc[-1]
        return {"accuracy": float(last["accuracy"]), "auc": float(last["auc"]),
                "loss": float(last["loss"]), "wall_s": self.wall_seconds}

    def plot(self, path: str | Path | None = None) -> Path:
        """Accuracy and ROC-AUC per round, pooled and per site; saved as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, metric in zip(axes, ("accuracy", "auc", "loss"), strict=True):
            for site, rows in self.metrics.groupby("site"):
                pooled = site == "pooled"
                ax.plot(rows["model_round"], rows[metric], marker="o" if pooled else ".",
                        linewidth=2.5 if pooled else 1, alpha=1 if pooled else 0.6, label=site)
            ax.set_xlabel("round (0 = initial model)")
            ax.set_title(f"validation {metric}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"federated {self.spec.model} on '{self.spec.dataset}' (job {self.spec.job_id})")
        fig.tight_layout()
        out = Path(path) if path is not None else self.run_dir / "curves.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out
