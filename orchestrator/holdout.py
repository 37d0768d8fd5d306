"""The simulation's test split: images no site trained on, tuned on or validated on.

A federation's validation figures come from each site's own hold-out, cut from the same training
data (PneumoniaMNIST's is 74% pneumonia), and the data scientist tunes on them. They are not a
headline. In a simulation the scientist holds the public source, so the final model is scored
here on its **test split** as well:

- a MedMNIST-style ``.npz`` source: its ``test`` split (``[baseline] test_split``), the official
  one the published numbers use (PneumoniaMNIST: 624 images);
- the synthetic phantoms: a fresh draw of ``count // 4`` images (at least 200) under another seed,
  :data:`SYNTHETIC_TEST_SEED_OFFSET` above the training seed, so no phantom is in both;
- a source without that split (an image folder, DICOM, an npz with only ``train``): no test score,
  and the reason says so.

In a real federation the test split is private to each hospital; scoring there is a cross-site
evaluation call (:mod:`orchestrator.evaluate`), not this module.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domains import (
    ImageSet,
    Weights,
    evaluate_model,
    generate_chest_phantoms,
    load_source,
)
from domains.shared.counts import EvalResult
from domains.shared.spec import JobSpec
from orchestrator.config import JobConfig
from orchestrator.result import model_with

SYNTHETIC_TEST_SEED_OFFSET = 1_000_003
MIN_SYNTHETIC_TEST = 200


@dataclass(frozen=True)
class TestSet:
    """The test images of a simulation, and where they came from (for the report)."""

    images: ImageSet
    source: str


@dataclass(frozen=True)
class TestScore:
    """A model's exact metrics on the test split."""

    metrics: EvalResult
    source: str

    def line(self) -> str:
        m = self.metrics
        return (f"test split ({self.source}, {m.n} images never trained, tuned or validated on): "
                f"accuracy {m.accuracy:.3f}, ROC-AUC {m.auc:.3f}")


def _npz_has(path: Path, split: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {f"{split}_images.npy", f"{split}_labels.npy"} <= names


def load_test(config: JobConfig, spec: JobSpec, site_metadata: Iterable[dict[str, Any]] = ()
              ) -> tuple[TestSet | None, str]:
    """The test split of the job's ``[baseline]`` source, or None and the reason there is none.

    *site_metadata* (the sites' public dataset metadata) guards a real federation: ``[baseline]``
    defaults to the synthetic phantoms, and a model trained on real images is not scored on them.
    """
    b = config.baseline
    if b.test_split == "none":
        return None, "[baseline] test_split = \"none\""
    metas = list(site_metadata)
    if b.source == "synthetic" and metas and not all(m.get("synthetic") for m in metas):
        return None, ("the sites hold real images, not [baseline]'s synthetic phantoms; in a real "
                      "federation the test split is each hospital's own: `medsyft evaluate --config ...` "
                      "scores the final model on it")
    if b.source == "synthetic":
        count = max(MIN_SYNTHETIC_TEST, b.count // 4)
        seed = b.seed + SYNTHETIC_TEST_SEED_OFFSET
        images = generate_chest_phantoms(count, image_size=b.image_size or spec.image_size, seed=seed)
        return TestSet(images, f"fresh synthetic phantoms, seed {seed}"), ""
    path = config.base_dir / b.source
    if path.suffix != ".npz" or not _npz_has(path, b.test_split):
        return None, f"{b.source} has no {b.test_split!r} split"
    if b.test_split == b.split:
        return None, f"test_split {b.test_split!r} is the split the sites trained on"
    images = load_source(path, split=b.test_split, image_size=b.image_size)
    return TestSet(images, f"{path.name} [{b.test_split}]"), ""


def score(test: TestSet, spec: JobSpec, weights: Weights) -> TestScore:
    """The model with *weights* scored exactly on *test* (no noise: these images are public)."""
    metrics = evaluate_model(model_with(spec, weights), test.images.images, test.images.labels,
                             multi_label=spec.multi_label)
    return TestScore(metrics, test.source)


def score_job(config: JobConfig, spec: JobSpec, weights: Weights,
              site_metadata: Iterable[dict[str, Any]] = ()) -> tuple[TestScore | None, str]:
    """:func:`load_test` then :func:`score`: the final model's test score, or None and why not."""
    test, why = load_test(config, spec, site_metadata)
    return (None, why) if test is None else (score(test, spec, weights), "")
