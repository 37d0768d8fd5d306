"""The job every system runs, written once by medsyft's checkout so the peers cannot drift from it.

A bundle folder holds:

- ``model.pt``: the network medsyft trains (``build_model``), as TorchScript, holding the exact
  initial weights of medsyft's run (its ``global-0``): a peer needs only torch to load it;
- ``data.npz``: every site's train and validation images, cut exactly as medsyft's datasites cut
  them (the same shard of the train split, the same stratified hold-out), and the test split;
- ``job.json``: rounds, local epochs, optimizer, learning rate, batch size and seed.

Only the harness (medsyft's venv) imports this module; the peers read the folder with
``peer_common.py``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Job:
    """What every system trains: FedAvg over ``sites`` IID shards of the source's train split."""

    rounds: int = 15
    local_epochs: int = 1
    optimizer: str = "adam"
    lr: float = 0.01
    batch_size: int = 64
    val_fraction: float = 0.2
    partition: str = "iid"
    seed: int = 0
    sites: int = 3

    def demo_flags(self) -> list[str]:
        """The same job as ``medsyft demo`` flags (the demo always runs three hospitals)."""
        if self.sites != 3:
            raise ValueError(f"medsyft demo runs 3 hospitals (got sites={self.sites})")
        return ["--partition", self.partition, "--seed", str(self.seed), "--rounds", str(self.rounds),
                "--local-epochs", str(self.local_epochs), "--optimizer", self.optimizer, "--lr",
                str(self.lr), "--batch-size", str(self.batch_size), "--val-fraction", str(self.val_fraction)]


def site_splits(source: Path, job: Job) -> list[dict[str, np.ndarray]]:
    """Each hospital's train and validation arrays, by the code medsyft's datasites run."""
    from domains.data.publish import PublishRequest, prepare
    from domains.runtime.split import train_val_split

    sites = []
    for i in range(1, job.sites + 1):
        req = PublishRequest(source=source, shard=f"{i}/{job.sites}", partition=job.partition,
                             seed=job.seed, name="chest-xray")
        _, images, _ = prepare(req)
        train, val = train_val_split(images.labels, val_fraction=job.val_fraction, seed=job.seed)
        sites.append({"train_x": images.images[train], "train_y": images.labels[train],
                      "val_x": images.images[val], "val_y": images.labels[val]})
    return sites


def write(folder: Path, source: Path, job: Job, initial: dict[str, np.ndarray]) -> Path:
    """Write the bundle for *job* on *source*, starting from medsyft's *initial* weights."""
    import torch

    from domains.runtime.weights import set_weights

    folder.mkdir(parents=True, exist_ok=True)
    test = test_split(source)
    arrays: dict[str, np.ndarray] = {"test_x": test.images, "test_y": test.labels}
    for i, site in enumerate(site_splits(source, job)):
        arrays.update({f"site{i}_{key}": value for key, value in site.items()})
    np.savez(folder / "data.npz", **arrays)
    model = model_for(test)
    set_weights(model, initial)
    scripted = torch.jit.script(model)
    scripted.save(str(folder / "model.pt"))
    (folder / "job.json").write_text(json.dumps(asdict(job), indent=2) + "\n")
    return folder


@functools.lru_cache(maxsize=4)
def test_split(source: Path) -> Any:
    """The source's official test split, loaded once per process (every system is scored on it)."""
    from domains.data.formats.registry import load_source

    return load_source(source, split="test")


def model_for(test: Any, seed: int = 0) -> Any:
    """medsyft's default network for the test split's images and classes (small-cnn at 28 px)."""
    from domains.runtime.models import build_model, default_model

    _, channels, size, _ = test.images.shape
    return build_model(default_model(size), in_channels=channels, num_classes=int(test.labels.max()) + 1,
                       image_size=size, seed=seed)


def initial_weights(source: Path, job: Job) -> dict[str, np.ndarray]:
    """The round-0 model of a medsyft job with *job*'s seed (``FederatedJob.run`` builds the same)."""
    from domains.runtime.weights import get_weights

    return dict(get_weights(model_for(test_split(source), seed=job.seed)))


def score(source: Path, weights: dict[str, np.ndarray]) -> tuple[float, float]:
    """Exact test ACC and ROC-AUC of *weights* on the source's official test split.

    Every system's final model goes through this one function, so scores differ only by
    what the systems trained.
    """
    from domains.runtime.evaluation import evaluate_model
    from domains.runtime.weights import set_weights

    test = test_split(source)
    model = model_for(test)
    set_weights(model, {name.removeprefix("net."): value for name, value in weights.items()})
    result = evaluate_model(model, test.images, test.labels)
    return result.accuracy, result.auc
