"""What every peer's client does, in torch and numpy only, so it runs in any peer's venv.

The local step copies medsyft's plaintext one (``domains.runtime.local._run_epochs``): the
optimizer is made fresh each round, images are scaled by 1/255, batches follow a
``torch.randperm`` seeded by the job's seed, cross-entropy loss. Before training, a client
scores the model it received on its validation hold-out, as a medsyft datasite does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# One torch thread per client, as medsyft's datasites (domains/runtime/threads.py): on two cores,
# torch's default of two threads made one epoch 14x slower, which would measure contention, not
# the framework.
torch.set_num_threads(1)


def load_job(bundle: Path) -> dict[str, Any]:
    job: dict[str, Any] = json.loads((bundle / "job.json").read_text())
    return job


def load_site(bundle: Path, site: int) -> dict[str, np.ndarray]:
    with np.load(bundle / "data.npz") as data:
        return {key: data[f"site{site}_{key}"] for key in ("train_x", "train_y", "val_x", "val_y")}


class BundleModel(nn.Module):
    """The bundle's TorchScript network as a plain module (NVIDIA FLARE builds it by class path).

    Its state dict names carry a ``net.`` prefix; the harness strips it when scoring.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.net = torch.jit.load(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(y.reshape(-1).astype(np.int64))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, job: dict[str, Any]) -> int:
    """``local_epochs`` of the job's optimizer over (x, y); returns the steps taken."""
    model.train()
    pixels, targets = torch.from_numpy(x), _labels(y)
    params = [p for p in model.parameters() if p.requires_grad]
    if job["optimizer"] == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=job["lr"], momentum=0.9)
    else:
        optimizer = torch.optim.Adam(params, lr=job["lr"])
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(job["seed"])
    steps = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job["seed"])
        for _ in range(job["local_epochs"]):
            for idx in torch.randperm(len(pixels), generator=shuffle).split(job["batch_size"]):
                loss = loss_fn(model(pixels[idx].float().div_(255.0)), targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
    return steps


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of *model* on (x, y)."""
    model.eval()
    logits = torch.cat([model(torch.from_numpy(b).float().div_(255.0)) for b in np.array_split(x, 8)])
    targets = _labels(y)
    accuracy = float((logits.argmax(1) == targets).double().mean())
    return accuracy, float(nn.functional.cross_entropy(logits, targets))


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of a plaintext update's values (float32): what a peer sends before any framing."""
    return int(sum(a.nbytes for a in arrays.values()))


def write_result(out: Path, result: dict[str, Any], final: dict[str, np.ndarray] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if final is not None:
        np.savez(out / "final.npz", **final)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def now() -> float:
    """Wall clock (not perf_counter): timestamps from different processes must compare."""
    return time.time()
