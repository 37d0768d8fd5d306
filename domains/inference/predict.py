"""Per-image class probabilities from a released model.

Each file is read and preprocessed on its own, so one unreadable image is one line naming it and
the others are still predicted. Probabilities are the network's softmax (one class per image) or
its per-label sigmoid (multi-label jobs); the training loss's logit adjustment is not applied,
which is the point of it: the adjusted loss teaches logits whose plain argmax is balanced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from domains.errors import InferenceError
from domains.inference.artifact import ModelArtifact
from domains.inference.images import read_for_model

BATCH = 64


@dataclass
class Predictions:
    """``table``: one row per predicted image (``image``, ``predicted``, ``p(<label>)`` ...);
    ``failed``: the one-line reason per image that could not be read."""

    table: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)


def predict_files(artifact: ModelArtifact, files: list[Path], *,
                  on_progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Run the model on *files* in batches; unreadable files go to ``failed``, not into the table."""
    import torch

    from domains.runtime.local import to_tensor_images

    spec = artifact.spec
    network = artifact.network()
    rows: list[dict[str, object]] = []
    failed: dict[str, str] = {}
    for start in range(0, len(files), BATCH):
        chunk, batch = [], []
        for path in files[start:start + BATCH]:
            try:
                batch.append(read_for_model(path, image_size=spec.image_size, channels=spec.in_channels))
                chunk.append(path)
            except InferenceError as exc:
                failed[str(path)] = str(exc)
        if batch:
            with torch.no_grad():
                logits = network(to_tensor_images(np.stack(batch)))
            probs = (torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=1)).numpy()
            rows += [_row(path, p, artifact.label_names, multi_label=spec.multi_label)
                     for path, p in zip(chunk, probs, strict=True)]
        if on_progress is not None:
            on_progress(min(start + BATCH, len(files)), len(files))
    columns = ["image", "predicted", *(f"p({name})" for name in artifact.label_names)]
    return Predictions(pd.DataFrame(rows, columns=columns), failed)


def _row(path: Path, probs: np.ndarray, names: list[str], *, multi_label: bool) -> dict[str, object]:
    if multi_label:
        predicted = ";".join(n for n, p in zip(names, probs, strict=True) if p >= 0.5) or "(none)"
    else:
        predicted = names[int(np.argmax(probs))]
    return {"image": str(path), "predicted": predicted,
            **{f"p({n})": float(p) for n, p in zip(names, probs, strict=True)}}
