"""The privacy part of a review shows what shapes training on the site's data, such as FedProx's μ."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.review.privacy import review_privacy
from domains.shared.spec import JobSpec, TrainConfig
from domains.site.datadir import DataDir, DatasiteConfig


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    """A datasite's data directory with only its name: enough for a job without DP or HE."""
    data_dir = DataDir(tmp_path / "h1")
    data_dir.path.mkdir()
    data_dir.write_config(DatasiteConfig(name="h1", host="127.0.0.1", port=8081, server_uid="0" * 32))
    return data_dir


def _job(mu: float) -> dict[str, object]:
    spec = JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, train=TrainConfig(proximal_mu=mu), sites=("h1", "h2"),
                   job_id="fedprox00001")
    return spec.to_dict()


def test_review_shows_fedprox_mu(data_dir: DataDir) -> None:
    rev = review_privacy(data_dir, _job(0.01))
    shown = [line for line in rev.lines if "FedProx" in line]
    assert len(shown) == 1 and shown[0].startswith("FedProx proximal term μ = 0.01")
    assert "spends no ε" in shown[0] and not rev.refusals


def test_review_of_mu_zero_shows_nothing_new(data_dir: DataDir) -> None:
    older = _job(0.0)
    del older["train"]["proximal_mu"]  # type: ignore[attr-defined]  # a job from before FedProx
    rev = review_privacy(data_dir, _job(0.0))
    assert rev.lines == review_privacy(data_dir, older).lines
    assert not any("FedProx" in line or "proximal" in line for line in rev.lines + rev.warnings)


def test_review_refuses_a_job_with_a_bad_mu(data_dir: DataDir) -> None:
    job = _job(0.01)
    job["train"]["proximal_mu"] = -0.5  # type: ignore[index]
    rev = review_privacy(data_dir, job)
    assert rev.refusals and "proximal_mu must be a finite number >= 0 (got -0.5)" in rev.refusals[0]


def test_review_shows_augmentation_multiplicity(data_dir: DataDir) -> None:
    spec = JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, sites=("h1", "h2"), job_id="multiplicity1",
                   train=TrainConfig(augment="affine", augment_multiplicity=4))
    shown = [line for line in review_privacy(data_dir, spec.to_dict()).lines if "multiplicity" in line]
    assert shown == ["augmentation multiplicity 4: each image is drawn 4 times per step, and the mean of its "
                     "gradients is clipped as its one gradient; the ε is the same, training costs 4× the "
                     "compute"]
