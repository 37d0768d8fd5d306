"""The privacy part of a review: what a medsyft job will spend, and whether it may.

A medsyft job carries its whole description as the ``job`` constant, so the datasite can
compute from it, before approval, exactly what the job's calls will charge to the
dataset's ε ledger (:func:`domains.runtime.plan.site_plan`) and whether its encrypted
aggregation uses this datasite's key. Approval reserves that plan; denial releases it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domains import budget
from domains.errors import SiteKeysError
from domains.runtime.errors import TrainingError
from domains.runtime.plan import site_plan
from domains.shared.eval_spec import EvalSpec
from domains.shared.spec import JobSpec
from domains.site import he_key, site_keys
from domains.site.datadir import DataDir
from privacy.errors import PrivacyError


@dataclass
class PrivacyReview:
    """What an owner reads under "privacy" in a review."""

    dataset: str
    job_id: str
    dp: bool
    he: bool
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)  # why approval is impossible (also in warnings)

    def refuse(self, reason: str) -> None:
        self.warnings.append(reason)
        self.refusals.append(reason)


def _constant(code: Any, name: str) -> dict[str, Any] | None:
    for rules in (code.input_policy_init_kwargs or {}).values():
        rule = rules.get(name)
        value = getattr(rule, "val", None)
        if type(rule).__name__ == "Constant" and isinstance(value, dict):
            return value
    return None


def job_constant(code: Any) -> dict[str, Any] | None:
    """The ``job`` constant of a medsyft submission, or None for other code."""
    value = _constant(code, "job")
    return value if value is not None and "job_id" in value else None


def evaluation_constant(code: Any) -> dict[str, Any] | None:
    """The ``evaluation`` constant of a medsyft cross-site evaluation, or None for other code."""
    value = _constant(code, "evaluation")
    return value if value is not None and "eval_id" in value else None


def release_constant(code: Any) -> dict[str, Any] | None:
    """The ``release`` constant of a medsyft release request, or None for other code."""
    value = _constant(code, "release")
    return value if value is not None and isinstance(value.get("job"), dict) else None


def review_evaluation(data_dir: DataDir, evaluation: dict[str, Any]) -> PrivacyReview:
    """What scoring a job's final model on this site's test dataset costs, and whether it may run.

    The owner alone also sees how many of the test images are in the job's training dataset
    (by content): a test score on images the model trained on is no test score.
    """
    from domains.runtime import cross_eval
    from domains.runtime.final_model import FINAL_RECORD

    job = evaluation.get("job")
    job = job if isinstance(job, dict) else {}
    rev = PrivacyReview(str(evaluation.get("dataset")), str(evaluation.get("eval_id")), True,
                        job.get("he") is not None)
    try:
        ev = EvalSpec.from_dict(evaluation)
    except (TrainingError, PrivacyError) as exc:
        rev.refuse(f"the evaluation constant is malformed ({exc}); deny it")
        return rev
    what = ("the final model this datasite kept at the job's last call (not released to anyone)"
            if ev.model == "final" else "a plaintext model the scientist sends with the call")
    rev.lines += [
        f"CROSS-SITE EVALUATION {ev.eval_id} of job {ev.job.job_id} ({ev.job.model}): scores {what} "
        f"once on every image of dataset '{ev.dataset}'",
        f"releases only counts (image count, correct predictions, {ev.bins}-bin score histograms), each "
        f"with Gaussian noise σ_eval={ev.noise_multiplier:g} × its sensitivity; nothing per image",
    ]
    try:
        stored = cross_eval.check_dataset(data_dir, ev)
        numbers = budget.preview(data_dir, ev.dataset, cross_eval.plan(ev)[1], job_id=ev.ledger_id)
    except Exception as exc:  # a review must always print; approval re-checks and refuses
        rev.refuse(f"{exc}; the evaluation cannot run: deny it")
        return rev
    rev.numbers = numbers
    rev.lines.append(
        f"this evaluation: ε={numbers['job_epsilon']:.3f} at δ={numbers['delta']:g} on '{ev.dataset}' "
        f"(budget ε={numbers['epsilon_budget']:g}, spent ε={numbers['spent_epsilon']:.3f}, after "
        f"approval ε={numbers['epsilon_after']:.3f}); the training dataset '{ev.job.dataset}' is not charged")
    if not numbers["fits"]:
        rev.refuse("this evaluation does not fit the test dataset's remaining budget: approval will be "
                   "refused")
    if ev.model == "final" and not (data_dir.jobs_dir / ev.job.job_id / FINAL_RECORD).exists():
        rev.refuse(f"this datasite kept no final model of job {ev.job.job_id}: the evaluation will be "
                   "refused")
    overlap = _overlap(data_dir, ev.job.dataset, stored.images)
    if overlap:
        rev.warnings.append(f"{overlap} of the {len(stored.images)} images of '{ev.dataset}' are also in "
                            f"the training dataset '{ev.job.dataset}': their score is not a test score")
    return rev


def _overlap(data_dir: DataDir, training: str, images: Any) -> int:
    """How many test images (by content) are in *training*; 0 when it is not on this datasite."""
    import hashlib

    from domains.data import store

    try:
        train = store.load(data_dir, training)
    except Exception:
        return 0

    def digest(image: Any) -> bytes:
        return hashlib.blake2b(image.tobytes(), digest_size=16).digest()

    trained = {digest(image) for image in train.images}
    return sum(digest(image) in trained for image in images)


def review_release(data_dir: DataDir, release: dict[str, Any]) -> PrivacyReview:
    """What releasing a finished job's final model means for this site."""
    from domains.runtime.final_model import FINAL_RECORD, roster_position

    job = release["job"]
    rev = PrivacyReview(str(job.get("dataset")), str(job.get("job_id")), job.get("dp") is not None,
                        job.get("he") is not None)
    try:
        spec = JobSpec.from_dict(job)
    except (TrainingError, PrivacyError) as exc:
        rev.refuse(f"the release's job description is malformed ({exc}); deny it")
        return rev
    rev.lines += [
        f"RELEASE of job {rev.job_id}'s final model to the scientist, in plaintext",
        f"needs the approval of every site of the job's approved roster, all {len(spec.sites)}: "
        f"{', '.join(spec.sites)}; no site alone, and no smaller set, can release it",
        "costs no ε: the model is the output of the DP training already charged",
    ]
    if not (data_dir.jobs_dir / rev.job_id / FINAL_RECORD).exists():
        rev.refuse("this datasite did not evaluate this job's final model: the release will be refused")
    try:
        roster_position(data_dir, spec, release)
    except TrainingError as exc:
        rev.refuse(f"{exc}; the release will be refused: deny it")
    return rev


def review_privacy(data_dir: DataDir, job: dict[str, Any]) -> PrivacyReview:
    """Compute the review's privacy section; problems become warnings, not exceptions."""
    try:
        spec = JobSpec.from_dict(job)
    except (TrainingError, PrivacyError) as exc:
        rev = PrivacyReview("?", str(job.get("job_id")), False, False)
        rev.refuse(f"the job constant is malformed ({exc}); deny it")
        return rev
    rev = PrivacyReview(spec.dataset, spec.job_id, spec.dp is not None, spec.he is not None)
    _roster_section(data_dir, spec, rev)
    _fedprox_line(spec, rev)
    _class_weights_line(spec, rev)
    _logit_adjustment_line(spec, rev)
    _augment_and_schedule_lines(spec, rev)
    _server_line(spec, rev)
    _dp_section(data_dir, spec, rev)
    _he_section(data_dir, spec, rev)
    return rev


def _roster_section(data_dir: DataDir, spec: JobSpec, rev: PrivacyReview) -> None:
    names = ", ".join(spec.sites) or "none"
    rev.lines.append(f"roster, fixed at approval: {len(spec.sites)} site(s): {names}; "
                     f"an aggregate must sum at least {spec.min_contributions} of them")
    name = data_dir.read_config().name
    if name not in spec.sites:
        rev.refuse(f"this datasite ('{name}') is not on the job's roster: approval will be refused")


def _fedprox_line(spec: JobSpec, rev: PrivacyReview) -> None:
    """FedProx changes what local training optimises, so the owner sees μ; μ = 0 adds nothing."""
    mu = spec.train.proximal_mu
    if mu > 0:
        rev.lines.append(f"FedProx proximal term μ = {mu:g}: local training is pulled towards the global "
                         "model it was sent; under DP the pull is added after clipping and noise and "
                         "spends no ε")


def _class_weights_line(spec: JobSpec, rev: PrivacyReview) -> None:
    """Class weights change what local training optimises; they come from public class counts."""
    if spec.train.class_weights:
        weights = ", ".join(f"{w:g}" for w in spec.train.class_weights)
        rev.lines.append(f"class-weighted loss ({weights}, one per class): each image's loss is scaled by "
                         "its class's weight, from the sites' published class counts; no ε is spent on it")


def _logit_adjustment_line(spec: JobSpec, rev: PrivacyReview) -> None:
    """A logit-adjusted loss changes what training optimises; its offsets come from public counts."""
    if spec.train.logit_adjustment:
        offsets = ", ".join(f"{b:g}" for b in spec.train.logit_adjustment)
        rev.lines.append(f"logit-adjusted loss (offsets {offsets}, one per class): the training loss adds "
                         "each class's scaled log prior, from the sites' published class counts, to the "
                         "logits; each image's loss depends on its own logits only; no ε is spent on it")


def _augment_and_schedule_lines(spec: JobSpec, rev: PrivacyReview) -> None:
    """Augmentation changes what training sees, a schedule how far it steps: both are shown."""
    t = spec.train
    if t.augment == "affine":
        rev.lines.append("augmentation: every training image is warped by its own random rotation (±10°), "
                         "scale and shift (±10%) each time it is used; each warp depends on that image "
                         "and fresh randomness only, so no ε is spent on it")
    if t.augment_multiplicity > 1:
        rev.lines.append(f"augmentation multiplicity {t.augment_multiplicity}: each image is drawn "
                         f"{t.augment_multiplicity} times per step, and the mean of its gradients is "
                         "clipped as its one gradient; the ε is the same, training costs "
                         f"{t.augment_multiplicity}× the compute")
    if t.lr_schedule == "cosine":
        last = t.for_round(spec.rounds, spec.rounds).lr
        rev.lines.append(f"cosine learning-rate schedule: {t.lr:g} in round 1 down to {last:.3g} in round "
                         f"{spec.rounds}")


def _server_line(spec: JobSpec, rev: PrivacyReview) -> None:
    """A server optimizer runs here, on the decrypted aggregate: the owner sees which, with its numbers."""
    if spec.server is not None:
        rev.lines.append(f"server optimizer {spec.server.describe()}, applied at each site to the decrypted "
                         "aggregate; every call asks every site, and a site that misses an aggregate "
                         "takes no further part in the job")


def _dp_section(data_dir: DataDir, spec: JobSpec, rev: PrivacyReview) -> None:
    if spec.dp is None:
        rev.warnings.append("DP is OFF for this job: its model updates and metrics are not "
                            "differentially private and it spends no ε; approve only if you accept that")
        return
    try:
        plan = site_plan(data_dir, spec)
        numbers = budget.preview(data_dir, spec.dataset, plan.history, job_id=spec.job_id)
    except Exception as exc:  # a review must always print; approval re-checks and refuses
        rev.warnings.append(f"cannot compute this job's ε on '{spec.dataset}': {exc}")
        return
    rev.numbers = {**numbers, "noise_multiplier": plan.noise_multiplier, "n_train": plan.n_train}
    t, dp = spec.train, spec.dp
    rev.lines += [
        f"DP-SGD (Opacus, Poisson sampling): noise σ={plan.noise_multiplier:.3f}"
        f"{' (derived from target ε=' + str(dp.target_epsilon) + ')' if dp.target_epsilon else ''}, "
        f"clipping C={dp.max_grad_norm}, batch {t.batch_size} of {plan.n_train} training images, "
        f"{t.epochs} epoch(s) x {spec.rounds} round(s)",
        f"evaluation: {len(spec.eval_calls)} noisy metric releases "
        f"(Gaussian, σ_eval={dp.eval_noise_multiplier})"
        + ("" if spec.eval_every == 1 else f" at calls {', '.join(map(str, spec.eval_calls))} only "
           f"(eval_every {spec.eval_every}); the other calls release none"),
        f"this job alone: ε={numbers['job_epsilon']:.3f} at δ={numbers['delta']:g} (RDP accountant)",
        f"dataset '{spec.dataset}': budget ε={numbers['epsilon_budget']:g}, spent "
        f"ε={numbers['spent_epsilon']:.3f}, committed before this job ε={numbers['epsilon_before']:.3f}, "
        f"after approval ε={numbers['epsilon_after']:.3f}, remaining ε={numbers['remaining_after']:.3f}",
    ]
    if not numbers["fits"]:
        rev.warnings.append("this job does not fit the remaining budget: approval will be refused")


def _he_section(data_dir: DataDir, spec: JobSpec, rev: PrivacyReview) -> None:
    if spec.he is None:
        rev.warnings.append("HE is OFF for this job: the orchestrator sees every site's model in plaintext")
        return
    mine = he_key.key_id(data_dir)
    rev.lines.append(f"encrypted aggregation (BFV) under key {spec.he.key_id[:8]}, weights clamped "
                     f"to ±{spec.he.weight_bound}")
    if mine is None:
        rev.warnings.append("this datasite holds no HE key: the job's calls will fail "
                            "(deploy with --he-key)")
    elif mine != spec.he.key_id:
        rev.warnings.append(f"the job uses key {spec.he.key_id[:8]} but this datasite holds key "
                            f"{mine[:8]}: its calls will be refused")
    _roster_lines(data_dir, spec.he.roster, rev)


def _roster_lines(data_dir: DataDir, roster: str, rev: PrivacyReview) -> None:
    """Whether the sums are verifiable, and whether this datasite's kit belongs to the job's roster."""
    if not roster:
        rev.warnings.append("the encrypted sums are NOT verifiable (the job names no roster): the "
                            "orchestrator adds the ciphertexts, and could forge a sum from a known model, "
                            "or, with a hospital holding the HE key, read one site's update")
        return
    rev.lines.append(f"verifiable secure aggregation: roster {roster[:12]}, parts masked pairwise, signed, "
                     "verified and added at each site")
    try:
        mine = site_keys.roster_fingerprint(data_dir)
    except SiteKeysError as exc:
        rev.warnings.append(f"this datasite's site keys are unreadable ({exc}): the job's calls will fail")
        return
    if mine is None:
        rev.warnings.append("this datasite holds no site keys: the job's calls will fail "
                            "(deploy with --site-keys)")
    elif mine != roster:
        rev.warnings.append(f"the job names roster {roster[:12]} but this datasite's site keys belong to "
                            f"roster {mine[:12]}: its calls will be refused")


def reserve_for(data_dir: DataDir, job: dict[str, Any], *, description: str) -> dict[str, Any] | None:
    """At approval: reserve the job's plan (PrivacyBudgetExceeded when it does not fit)."""
    spec = JobSpec.from_dict(job)
    if spec.dp is None:
        return None
    plan = site_plan(data_dir, spec)
    return budget.reserve(data_dir, spec.dataset, job_id=spec.job_id, plan=plan.per_call,
                          description=description)


def reserve_evaluation(data_dir: DataDir, evaluation: dict[str, Any], *, description: str) -> dict[str, Any]:
    """At approval: reserve the evaluation's one release on its test dataset."""
    from domains.runtime import cross_eval

    ev = EvalSpec.from_dict(evaluation)
    return budget.reserve(data_dir, ev.dataset, job_id=ev.ledger_id, plan=cross_eval.plan(ev),
                          description=description)


def cancel_evaluation(data_dir: DataDir, evaluation: dict[str, Any]) -> bool:
    """At denial: the evaluation's uncharged release stops counting."""
    try:
        ev = EvalSpec.from_dict(evaluation)
    except (TrainingError, PrivacyError):
        return False
    return budget.cancel_reservation(data_dir, ev.dataset, ev.ledger_id)


def release_for(data_dir: DataDir, job: dict[str, Any]) -> bool:
    """At denial: the job's uncharged calls stop counting."""
    try:
        spec = JobSpec.from_dict(job)
    except (TrainingError, PrivacyError):
        return False
    if spec.dp is None:
        return False
    return budget.cancel_reservation(data_dir, spec.dataset, spec.job_id)
