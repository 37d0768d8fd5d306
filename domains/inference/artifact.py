"""A released model as the hospital loads it: the job's network, its weights and its label names.

Two places hold one:

- a model directory (``RUN_DIR/release/``, or a copy of it): ``model.npz`` (the weights by name) and
  ``model_card.json``, whose ``spec`` is the approved job (architecture, input size and channels,
  classes) and whose ``model.label_names`` names the outputs. A directory from before model cards
  has ``release.json`` with the spec and no names (outputs are then named ``class 0``, ...);
- a datasite's own copy (``DIR/jobs/JOB/final-model.npz``), which this hospital may use once its
  owner approved the release (:func:`domains.runtime.final_model.released_model`); the label names
  come from the hospital's own published dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domains.errors import InferenceError
from domains.shared.release_files import CARD_JSON, MODEL_FILE, RELEASE_JSON
from domains.shared.spec import JobSpec


@dataclass
class ModelArtifact:
    """The job that trained the model, its weights (name -> array) and the name of each output."""

    spec: JobSpec
    weights: dict[str, np.ndarray]
    label_names: list[str]
    source: str

    def network(self) -> Any:
        """The job's network holding the weights, in eval mode, on the CPU."""
        from domains.runtime.models import build_model
        from domains.runtime.weights import set_weights

        spec = self.spec
        model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                            image_size=spec.image_size, seed=spec.train.seed)
        try:
            set_weights(model, self.weights)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise InferenceError(f"the weights in {self.source} do not fit job {spec.job_id}'s {spec.model} "
                                 f"({exc}); the directory mixes files of two models") from exc
        return model.eval()


def load_model_dir(path: str | Path) -> ModelArtifact:
    """The model in a release directory; InferenceError in one line when it is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise InferenceError(f"--model {folder} is not a directory; give the run's release/ folder "
                             "(it holds model.npz and model_card.json)")
    weights_file = folder / MODEL_FILE
    if not weights_file.is_file():
        raise InferenceError(f"{folder} holds no {MODEL_FILE}: the model is not released yet "
                             "(`medsyft release --config job.toml`), or this is not a release folder")
    card = _read_json(folder / CARD_JSON)
    record = card if card is not None else _read_json(folder / RELEASE_JSON)
    if record is None or "spec" not in record:
        raise InferenceError(f"{folder} has no {CARD_JSON} (or {RELEASE_JSON}) naming the job that trained "
                             "the model; copy the whole release folder")
    try:
        spec = JobSpec.from_dict(record["spec"])
        with np.load(weights_file, allow_pickle=False) as npz:
            weights = {k: np.asarray(npz[k]) for k in npz.files}
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise InferenceError(f"cannot read the model in {folder} ({type(exc).__name__}: {exc}); copy the "
                             "release folder again") from exc
    names = list((card or {}).get("model", {}).get("label_names") or [])
    return ModelArtifact(spec, weights, _label_names(names, spec), str(folder))


def load_datasite_copy(data_dir: Any, job_id: str) -> ModelArtifact:
    """This datasite's own copy of job *job_id*'s final model, once its owner approved the release."""
    from domains.data import store
    from domains.runtime.errors import TrainingError
    from domains.runtime.final_model import FINAL_RECORD, released_model
    from domains.shared.plain_model import PlainModel, frozen_layout

    try:
        spec, vector = released_model(data_dir, job_id)
    except TrainingError as exc:
        raise InferenceError(str(exc)) from exc
    record = json.loads((data_dir.jobs_dir / job_id / FINAL_RECORD).read_text())
    if "layout" in record:
        weights = PlainModel(np.asarray(vector, np.float32), frozen_layout(record["layout"])).to_weights()
    else:  # kept before the codec: the vector in the job's own model's order
        from domains.runtime.models import build_model
        from domains.runtime.weights import layout_of

        model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                            image_size=spec.image_size, seed=spec.train.seed)
        weights = PlainModel(np.asarray(vector, np.float32), layout_of(model)).to_weights()
    try:
        names = store.load(data_dir, spec.dataset).label_names
    except store.StoreError:
        names = []
    return ModelArtifact(spec, weights, _label_names(names, spec),
                         str(data_dir.jobs_dir / job_id))


def _label_names(names: list[str], spec: JobSpec) -> list[str]:
    return names if len(names) == spec.num_classes else [f"class {k}" for k in range(spec.num_classes)]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{path} is not readable JSON ({exc}); copy the release folder again") from exc
    return data if isinstance(data, dict) else None
