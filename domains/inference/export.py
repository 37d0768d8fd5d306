"""A released model as TorchScript or ONNX, for a hospital's own inference stack.

Both exports are checked before they are kept: the exported model is run on the given (or
phantom) inputs and must give the torch model's outputs within :data:`TOLERANCE`. ONNX needs
the ``export`` extra (``pip install 'medsyft[export]'``: onnx, onnxscript, onnxruntime); the
check runs it in onnxruntime. Both take any batch size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domains.errors import InferenceError
from domains.inference.artifact import ModelArtifact

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    max_abs_diff: float  # between the export and the torch model, on the check inputs
    bytes: int


def export_model(artifact: ModelArtifact, fmt: str, out: Path, *, inputs: np.ndarray | None = None
                 ) -> Exported:
    """Write *artifact*'s network to *out* in *fmt*; refused (nothing kept) if its outputs differ."""
    import torch

    if fmt not in FORMATS:
        raise InferenceError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    spec = artifact.spec
    network = artifact.network()
    if inputs is None:
        inputs = _check_inputs(spec.in_channels, spec.image_size)
    x = torch.from_numpy(np.asarray(inputs, np.float32))
    with torch.no_grad():
        expected = network(x).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        got = _torchscript(network, x, tmp) if fmt == "torchscript" else _onnx(network, x, tmp)
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= TOLERANCE:
            raise InferenceError(f"the {fmt} export differs from the torch model by {diff:.2e} (more than "
                                 f"{TOLERANCE:g}); it was not kept")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(out, fmt, diff, out.stat().st_size)


def _check_inputs(channels: int, size: int) -> np.ndarray:
    """Chest-X-ray phantoms at the model's input size, scaled to [0, 1] as training scales them."""
    from domains.data.formats import preprocess_image
    from domains.data.phantom import generate_chest_phantoms

    phantoms = generate_chest_phantoms(8, image_size=size, seed=0).images
    batch = np.stack([preprocess_image(np.moveaxis(im, 0, -1), "phantom", size=(size, size),
                                       channels=channels) for im in phantoms])
    return batch.astype(np.float32) / 255.0


def _torchscript(network: object, x: object, path: Path) -> np.ndarray:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # GroupNorm's batch-size check
        scripted = torch.jit.trace(network, x)
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return np.asarray(loaded(x).numpy())


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs its steps and a warning per torchvision operator it skips; none are ours."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _onnx(network: object, x: object, path: Path) -> np.ndarray:
    import torch

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise InferenceError("ONNX export needs the export extra: pip install 'medsyft[export]' "
                             "(onnx, onnxscript, onnxruntime)") from exc
    try:
        with _quiet_exporter():
            program = torch.onnx.export(network, (x,), dynamo=True, input_names=["images"],  # type: ignore[arg-type]
                                        output_names=["logits"], external_data=False, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
    except ImportError as exc:
        raise InferenceError(f"ONNX export needs the export extra: pip install 'medsyft[export]' "
                             f"({exc})") from exc
    assert program is not None
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": np.asarray(x.numpy())})[0])  # type: ignore[attr-defined]
