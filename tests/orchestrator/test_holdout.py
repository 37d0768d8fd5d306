"""The simulation's test split: which images it is, and that a model is scored exactly on them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from domains import build_model, evaluate_model, generate_chest_phantoms, get_weights
from domains.shared.spec import JobSpec
from orchestrator import holdout
from orchestrator.config import BaselineConfig, JobConfig, SiteConfig

SITES = [SiteConfig(name="a", url="http://127.0.0.1:1", email="e")]


def _spec() -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=1)


def _config(tmp_path: Path, **baseline: object) -> JobConfig:
    return JobConfig(dataset="chest", sites=SITES, baseline=BaselineConfig(**baseline),  # type: ignore[arg-type]
                     base_dir=tmp_path)


def _npz(path: Path, splits: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in splits.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_an_npz_source_is_scored_on_its_own_test_split(tmp_path: Path) -> None:
    _npz(tmp_path / "xray.npz", {"train": 40, "val": 10, "test": 24})
    test, why = holdout.load_test(_config(tmp_path, source="xray.npz"), _spec())
    assert test is not None and why == ""
    assert test.source == "xray.npz [test]" and len(test.images.images) == 24
    with np.load(tmp_path / "xray.npz") as npz:
        assert np.array_equal(test.images.images[:, 0], npz["test_images"])


@pytest.mark.parametrize("baseline, reason", [
    ({"source": "train-only.npz"}, "train-only.npz has no 'test' split"),
    ({"source": "xray.npz", "test_split": "none"}, 'test_split = "none"'),
    ({"source": "synthetic", "test_split": "none"}, 'test_split = "none"'),
    ({"source": "xray.npz", "test_split": "train"}, "is the split the sites trained on"),
    ({"source": "folder"}, "folder has no 'test' split"),
])
def test_no_test_score_says_why(tmp_path: Path, baseline: dict[str, str], reason: str) -> None:
    _npz(tmp_path / "xray.npz", {"train": 10, "test": 4})
    _npz(tmp_path / "train-only.npz", {"train": 10})
    (tmp_path / "folder").mkdir()
    test, why = holdout.load_test(_config(tmp_path, **baseline), _spec())
    assert test is None and reason in why


def test_synthetic_test_phantoms_are_a_fresh_draw_no_site_holds(tmp_path: Path) -> None:
    config = _config(tmp_path, source="synthetic", count=1200, seed=3)
    test, _ = holdout.load_test(config, _spec())
    assert test is not None and len(test.images.images) == 300
    assert test.source == f"fresh synthetic phantoms, seed {3 + holdout.SYNTHETIC_TEST_SEED_OFFSET}"
    published = generate_chest_phantoms(1200, image_size=28, seed=3)  # what the sites were given
    digests = {hashlib.sha256(image.tobytes()).digest() for image in published.images}
    assert not any(hashlib.sha256(image.tobytes()).digest() in digests for image in test.images.images)
    small, _ = holdout.load_test(_config(tmp_path, source="synthetic", count=100), _spec())
    assert small is not None and len(small.images.images) == holdout.MIN_SYNTHETIC_TEST


def test_the_score_is_the_exact_evaluation_of_those_weights(tmp_path: Path) -> None:
    spec = _spec()
    config = _config(tmp_path, source="synthetic", count=800)
    model = build_model("small-cnn", in_channels=1, num_classes=2, image_size=28, seed=5)
    score, why = holdout.score_job(config, spec, get_weights(model))
    assert score is not None and why == ""
    test, _ = holdout.load_test(config, spec)
    assert test is not None
    exact = evaluate_model(model, test.images.images, test.images.labels)
    got = score.metrics
    assert (got.n, got.accuracy, got.auc) == (exact.n, exact.accuracy, exact.auc)
    seed = holdout.SYNTHETIC_TEST_SEED_OFFSET
    assert score.line().startswith(f"test split (fresh synthetic phantoms, seed {seed}, 200 images never "
                                   "trained, tuned or validated on): accuracy ")


def test_a_real_federation_is_not_scored_on_the_default_phantoms(tmp_path: Path) -> None:
    """[baseline] defaults to the phantoms; sites that publish real images get no such score."""
    config = _config(tmp_path)  # no [baseline] table: source = "synthetic"
    real = [{"synthetic": False, "n": 500}, {"synthetic": False, "n": 400}]
    test, why = holdout.load_test(config, _spec(), real)
    assert test is None and "the sites hold real images" in why
    simulated, _ = holdout.load_test(config, _spec(), [{"synthetic": True}, {"synthetic": True}])
    assert simulated is not None
