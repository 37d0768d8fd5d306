"""A cross-site evaluation as the data owner approves it: one job's final model, scored once on
each hospital's private test dataset, released as noisy counts and charged to that dataset's ε.

In a real federation the test split is private: each hospital publishes it as a dataset of its
own (``medsyft domain publish --split test``), with its own ε budget, and never trains on it. An
:class:`EvalSpec` is the ``evaluation`` constant of the evaluation request
(:data:`domains.runtime.templates.EVALUATE_TEMPLATE`); review reads it, approval reserves one
Gaussian release on the test dataset's ledger, and the one call charges it.

What is scored (``model``):

* ``"final"``: the model this datasite decrypted and kept at the job's final call
  (:mod:`domains.runtime.final_model`), for an encrypted job, whose final model the scientist
  cannot read before every owner released it;
* ``"sent"``: a plaintext model in the call's payload, checked against the approved job's model
  layout (a plaintext job's final model, or a released one).

Whatever the model, only counts leave, with Gaussian noise calibrated to one image
(:mod:`domains.runtime.noisy_metrics`), so a model built to leak learns no more than the ε
charged. ``bins`` is the number of probability bins the released histograms keep: more bins
give a less biased ROC-AUC but a noisier one (``benchmarks/eval_noise.py`` measures both).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from domains.shared.counts import BINS
from domains.shared.errors import TrainingError
from domains.shared.spec import JobSpec

EVAL_MODELS = ("final", "sent")
DEFAULT_TEST_NOISE = 2.0  # σ_eval: ε ≈ 2.2 at δ = 1e-5 for the one release (privacy.accounting)
DEFAULT_TEST_BINS = 10
_ID = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass(frozen=True)
class EvalSpec:
    """One cross-site evaluation of ``job``'s final model on each site's ``dataset``.

    Attributes:
        job: the approved job whose model is scored (it fixes the model and the image shape).
        dataset: the test dataset's name, the same at every site; never the job's own dataset.
        noise_multiplier: σ of the Gaussian noise on every released count, in units of its L2
            sensitivity; the release costs ``eval_entry(σ)`` on the test dataset's ledger.
        bins: probability bins per released histogram (a divisor of 200, from 2).
        model: ``"final"`` (the model kept at the job's final call, HE jobs) or ``"sent"``.
        eval_id: names the request and its ledger line.
    """

    job: JobSpec
    dataset: str
    noise_multiplier: float = DEFAULT_TEST_NOISE
    bins: int = DEFAULT_TEST_BINS
    model: str = "final"
    eval_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise TrainingError("an evaluation needs the test dataset's name (e.g. pneumoniamnist-test)")
        if self.dataset == self.job.dataset:
            raise TrainingError(f"dataset '{self.dataset}' is the one job {self.job.job_id} trained on; a "
                                "test score needs a dataset the model never saw (publish it with "
                                "--split test)")
        noise = self.noise_multiplier
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise > 0:
            raise TrainingError(f"the evaluation's noise_multiplier must be > 0 (got {noise!r}); "
                                "its counts are always released with DP noise")
        bins = self.bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or BINS % bins:
            raise TrainingError(f"the evaluation's bins must divide {BINS} and be at least 2 (got {bins!r}); "
                                "e.g. 4, 10 or 20")
        if self.model not in EVAL_MODELS:
            raise TrainingError(f"the evaluation's model must be one of {', '.join(EVAL_MODELS)} "
                                f"(got {self.model!r})")
        if self.model == "final" and self.job.he is None:
            raise TrainingError(f"job {self.job.job_id} trained in plaintext: its sites kept no final "
                                "model; evaluate the model you hold (model = \"sent\")")
        if not isinstance(self.eval_id, str) or not _ID.match(self.eval_id):
            raise TrainingError(f"eval_id must be 6-64 lowercase hex digits (got {self.eval_id!r})")

    @property
    def ledger_id(self) -> str:
        """The evaluation's line in the test dataset's ε ledger."""
        return f"eval-{self.eval_id}"

    def to_dict(self) -> dict[str, Any]:
        return {"eval_id": self.eval_id, "job": self.job.to_dict(), "dataset": self.dataset,
                "noise_multiplier": float(self.noise_multiplier), "bins": self.bins, "model": self.model}

    @classmethod
    def from_dict(cls, data: Any) -> EvalSpec:
        if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
            raise TrainingError("the evaluation constant must be a dict naming its job")
        values = dict(data)
        unknown = set(values) - {"eval_id", "job", "dataset", "noise_multiplier", "bins", "model"}
        if unknown:
            raise TrainingError(f"the evaluation constant has unknown fields {sorted(unknown)}")
        values["job"] = JobSpec.from_dict(values["job"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise TrainingError(f"the evaluation constant is malformed ({exc})") from exc
