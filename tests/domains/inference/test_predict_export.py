"""``medsyft predict`` and ``medsyft export`` on a model directory.

The directory here is written by the test in the released format (weights by name and a model
card naming the job and its labels); the integration test of the release (test_private_training)
runs both on a model released by real datasites.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import run_cli, save_image, write_dicom

from domains.data.formats import harmonize_batch, preprocess_image
from domains.data.formats.dicom import load_dicom
from domains.data.formats.folder import load_folder
from domains.inference.artifact import load_model_dir
from domains.inference.images import read_for_model
from domains.runtime.models import build_model
from domains.runtime.weights import get_weights
from domains.shared.spec import JobSpec

LABELS = ["normal", "pneumonia"]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    spec = JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=1)
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=3)
    folder = tmp_path / "release"
    folder.mkdir()
    np.savez(folder / "model.npz", **get_weights(model))
    (folder / "model_card.json").write_text(json.dumps({"spec": spec.to_dict(),
                                                        "model": {"label_names": LABELS}}))
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "incoming"
    save_image(root / "normal" / "a.png", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    save_image(root / "normal" / "b.jpg", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), quality=95)
    write_dicom(root / "c" / "c.dcm", rng.integers(0, 4096, (56, 56)).astype(np.uint16))
    (root / "broken").mkdir()
    (root / "broken" / "cut.png").write_bytes(
        (root / "normal" / "a.png").read_bytes()[:60])  # truncated
    (root / "broken" / "notes.jpeg").write_text("not an image")
    return root


def test_predict_gives_probabilities_and_names_each_unreadable_image(model_dir: Path, images: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    result = run_cli("predict", "--model", str(model_dir), "--images", str(images), "--csv", str(out))
    assert result.code == 1, result.err  # some failed: the exit code says so
    errors = [line for line in result.err.splitlines() if line.startswith("medsyft: error:")]
    assert len(errors) == 2 and any("cut.png" in e for e in errors) and any("notes.jpeg" in e for e in errors)
    table = pd.read_csv(out)
    assert sorted(Path(p).name for p in table["image"]) == ["a.png", "b.jpg", "c.dcm"]
    probs = table[[f"p({n})" for n in LABELS]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and ((probs >= 0) & (probs <= 1)).all()
    assert set(table["predicted"]) <= set(LABELS)
    assert "p(pneumonia)" in result.out and "c.dcm" in result.out
    ok = run_cli("predict", "--model", str(model_dir), "--images", str(images / "normal"))
    assert ok.code == 0, ok.err


def test_predicted_probabilities_are_the_networks_on_the_preprocessed_image(model_dir: Path,
                                                                           images: Path) -> None:
    import torch

    from domains.inference.predict import predict_files

    artifact = load_model_dir(model_dir)
    path = images / "normal" / "b.jpg"
    table = predict_files(artifact, [path]).table
    x = torch.from_numpy(read_for_model(path, image_size=28, channels=1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        expected = torch.softmax(artifact.network()(x), dim=1).numpy()[0]
    assert np.allclose(table[["p(normal)", "p(pneumonia)"]].to_numpy()[0], expected, atol=1e-6)


def test_publish_and_predict_preprocess_an_image_identically(images: Path, tmp_path: Path) -> None:
    """The one preprocessing: what publish stores for a file is what predict feeds the model."""
    folder = tmp_path / "set"
    for name in ("normal/a.png", "normal/b.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((images / name).read_bytes())
    stored = load_folder(folder, image_size=28, channels=1)
    for i, name in enumerate(("normal/a.png", "normal/b.jpg")):
        assert np.array_equal(stored.images[i], read_for_model(folder / name, image_size=28, channels=1))
    dicoms = tmp_path / "dicoms"
    (dicoms / "x.dcm").parent.mkdir()
    (dicoms / "x.dcm").write_bytes((images / "c" / "c.dcm").read_bytes())
    (dicoms / "labels.csv").write_text("file,label\nx.dcm,normal\n")
    stored_dicom = load_dicom(dicoms, image_size=28, channels=1)
    assert np.array_equal(stored_dicom.images[0], read_for_model(dicoms / "x.dcm", image_size=28, channels=1))
    batch = np.random.default_rng(1).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)  # an npz source
    expected = np.stack([preprocess_image(im, "x", size=(28, 28), channels=1) for im in batch])
    assert np.array_equal(harmonize_batch(batch, "x", image_size=28, channels=1), expected)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_gives_the_torch_models_outputs_on_real_inputs(model_dir: Path, images: Path,
                                                                 fmt: str) -> None:
    import torch

    result = run_cli("export", "--model", str(model_dir), "--format", fmt)
    assert result.code == 0, result.err
    path = model_dir / ("model.pt" if fmt == "torchscript" else "model.onnx")
    files = [images / "normal" / "a.png", images / "normal" / "b.jpg", images / "c" / "c.dcm"]
    x = np.stack([read_for_model(f, image_size=28, channels=1) for f in files]).astype(np.float32) / 255
    with torch.no_grad():
        expected = load_model_dir(model_dir).network()(torch.from_numpy(x)).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(path))(torch.from_numpy(x)).detach().numpy()
    else:
        import onnxruntime as ort

        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert got.shape == expected.shape == (3, 2)  # another batch size than the export was traced with
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_a_wrong_model_source_is_one_line(model_dir: Path, images: Path, tmp_path: Path) -> None:
    cases = [
        (["--model", str(tmp_path / "nowhere")], "is not a directory"),
        (["--model", str(tmp_path)], "holds no model.npz"),
        (["--model", str(model_dir), "--data-dir", str(tmp_path)], "not both"),
        (["--data-dir", str(tmp_path)], "needs --job"),
        (["--model", str(model_dir), "--job", "abc"], "--job goes with --data-dir"),
    ]
    for args, problem in cases:
        result = run_cli("predict", *args, "--images", str(images))
        assert result.code == 2 and problem in result.err and result.err.count("\n") == 1, (args, result.err)
    none = run_cli("predict", "--model", str(model_dir), "--images", str(tmp_path / "missing.png"))
    assert none.code == 2 and "does not exist" in none.err
    (model_dir / "model.npz").write_bytes(b"damaged")
    before = (model_dir / "model.npz").read_bytes()
    damaged = run_cli("export", "--model", str(model_dir), "--format", "torchscript")
    assert damaged.code == 2 and "cannot read the model" in damaged.err
    assert (model_dir / "model.npz").read_bytes() == before and not (model_dir / "model.pt").exists()
