"""Using a released model at the hospital: load it, predict on images, export it.

- :mod:`domains.inference.artifact` - a model directory (weights and model card) or a datasite's own
  copy of a released model, loaded as the job's network with its label names
- :mod:`domains.inference.images` - PNG/JPEG/DICOM files, decoded and preprocessed exactly as publish did
- :mod:`domains.inference.predict` - per-image class probabilities, as a table and CSV
- :mod:`domains.inference.export` - TorchScript and ONNX, checked against the torch model
- :mod:`domains.inference.cli` - ``medsyft predict`` and ``medsyft export``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.inference.artifact import ModelArtifact, load_datasite_copy, load_model_dir
    from domains.inference.export import Exported, export_model
    from domains.inference.images import image_files, read_for_model
    from domains.inference.predict import Predictions, predict_files

__all__, __getattr__, __dir__ = lazy_exports("domains.inference", {
    "ModelArtifact": "domains.inference.artifact",
    "load_datasite_copy": "domains.inference.artifact",
    "load_model_dir": "domains.inference.artifact",
    "Exported": "domains.inference.export",
    "export_model": "domains.inference.export",
    "image_files": "domains.inference.images",
    "read_for_model": "domains.inference.images",
    "Predictions": "domains.inference.predict",
    "predict_files": "domains.inference.predict",
})
