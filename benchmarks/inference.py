"""Prediction at the hospital and export: images per second, where the time goes, export cost.

    .venv/bin/python benchmarks/inference.py [--images 512]

For the small CNN at 28 px and ResNet-18 at 64 px (random weights: speed does not depend on them),
writes ``--images`` PNGs of 256x256 px (a hospital's images are larger than the model's input, so
preprocessing resizes every one), then measures in one run:

- ``medsyft predict``'s path (``predict_files``): images per second, end to end;
- the same images decoded and preprocessed only (publish's functions), to show its share;
- the network alone on the preprocessed batch, torch against TorchScript and onnxruntime;
- the export itself: seconds and file size, TorchScript and ONNX.

Ratios are side by side from one run. The numbers go into docs/inference.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = [("small-cnn", 28), ("resnet18", 64)]


def _model_dir(folder: Path, model: str, size: int) -> Path:
    from domains.runtime.models import build_model
    from domains.runtime.weights import get_weights
    from domains.shared.spec import JobSpec

    spec = JobSpec(dataset="chest", model=model, in_channels=1, num_classes=2, image_size=size,
                   multi_label=False, rounds=1)
    folder.mkdir(parents=True)
    net = build_model(model, in_channels=1, num_classes=2, image_size=size)
    np.savez(folder / "model.npz", **get_weights(net))
    (folder / "model_card.json").write_text(json.dumps({"spec": spec.to_dict(),
                                                        "model": {"label_names": ["normal", "pneumonia"]}}))
    return folder


def _images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _timed(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def run(n_images: int) -> pd.DataFrame:
    import onnxruntime as ort
    import torch

    from domains.inference import export_model, load_model_dir, predict_files, read_for_model

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = _images(root / "images", n_images)
        for model, size in CASES:
            artifact = load_model_dir(_model_dir(root / f"{model}-{size}", model, size))
            predict_s = _timed(lambda a=artifact: predict_files(a, files), repeat=2)
            def prepare(s: int = size) -> list[np.ndarray]:
                return [read_for_model(f, image_size=s, channels=1) for f in files]

            prep_s = _timed(prepare, repeat=2)
            batch = np.stack(prepare()).astype(np.float32) / 255
            x = torch.from_numpy(batch)
            net = artifact.network()
            with torch.no_grad():
                torch_s = _timed(lambda n=net, x=x: n(x))
            t0 = time.perf_counter()
            ts = export_model(artifact, "torchscript", root / f"{model}.pt")
            ts_export_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            onnx = export_model(artifact, "onnx", root / f"{model}.onnx")
            onnx_export_s = time.perf_counter() - t0
            scripted = torch.jit.load(str(ts.path))
            with torch.no_grad():
                script_s = _timed(lambda m=scripted, x=x: m(x))
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(onnx.path), options, providers=["CPUExecutionProvider"])
            ort_s = _timed(lambda s=session, b=batch: s.run(None, {"images": b}))
            rows.append({
                "model": f"{model} {size}px", "images": n_images,
                "predict img/s": round(n_images / predict_s, 1),
                "preprocess share": round(prep_s / predict_s, 2),
                "network img/s (torch)": round(n_images / torch_s, 1),
                "TorchScript / torch": round(script_s / torch_s, 2),
                "onnxruntime / torch": round(ort_s / torch_s, 2),
                "TorchScript export s": round(ts_export_s, 2), "TorchScript MB": round(ts.bytes / 1e6, 2),
                "ONNX export s": round(onnx_export_s, 2), "ONNX MB": round(onnx.bytes / 1e6, 2),
                "max |diff| ONNX": f"{onnx.max_abs_diff:.1e}",
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    frame = run(args.images)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
