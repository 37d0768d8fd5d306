"""A training job as the data owner approves it: every hyperparameter, fixed.

The orchestrator turns a :class:`JobSpec` into a ``sy.Constant`` input of the
submitted code, so the owner sees all of it at review and the scientist cannot
change any of it afterwards (a Constant holds whatever a later call passes).
Only the global model travels as a scientist-owned input, once per round.

The calls an approval allows are counted here too: round ``r`` (1..R) is one
call that first evaluates the incoming global model on the site's validation
split and then trains on its training split; call ``R + 1`` only evaluates the
final model. So a job of R rounds needs ``R + 1`` calls per datasite.

``eval_every = k`` thins the evaluations: call ``r`` evaluates only when ``R + 1 − r`` is a
multiple of k, counting back from the final call, which always evaluates (k = 1, the default:
every call; k ≥ R + 1: the final model only). Under DP every evaluation is a noisy release
charged to the ledger, so the ε the monitoring does not spend goes to training (a smaller σ for
the same target ε). Which calls evaluate is fixed at approval with the rest of the spec; the
orchestrator cannot ask for more.

The roster (``sites``, the datasites' own names) is fixed at approval too, with the minimum
number of site updates an aggregate must sum (``min_contributions``: never 1 under HE). A
datasite that is not on the roster refuses the job, and a release needs every site of it.

``dp`` and ``he`` are on by default in the orchestrator; a spec with either set to ``None``
is a job without that protection, which review shows as a warning.

``server`` is the server optimizer (FedAvgM, FedAdam, FedYogi) that every site applies to the
decrypted aggregate under HE (:mod:`domains.runtime.site_global`); None for the other strategies,
and always without HE, where the orchestrator applies it. Older specs load with None.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from domains.shared.counts import COUNTS
from domains.shared.errors import TrainConfigError, TrainingError
from domains.shared.server_step import ServerStep
from privacy.accounting import DPConfig

OPTIMIZERS = ("adam", "sgd")
AUGMENTATIONS = ("none", "affine")  # domains.runtime.augment
MAX_MULTIPLICITY = 32  # augmentation multiplicity: warps per image and step (the compute grows as much)
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one local training run.

    Attributes:
        epochs: passes over the local data per call.
        batch_size: images per optimizer step (the last batch of an epoch may be smaller).
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum; ignored by Adam.
        weight_decay: L2 penalty passed to the optimizer.
        seed: fixes shuffling and any random layers, so runs are repeatable.
        proximal_mu: FedProx's μ: local training adds (μ/2)·||w − w_global||², pulling the
            model towards the global model the site was sent (see
            :mod:`domains.runtime.proximal`, also for how it applies under DP). 0 (the
            default) is plain local training, FedAvg's.
        class_weights: one weight per class for the training loss (multi-class only), a job
            constant computed from the sites' *public* class counts (:func:`balanced_weights`), so
            that under DP it is data-independent; each image's loss is scaled by its own class's
            weight and the batch is averaged over images, so its gradient depends on no other
            image. Empty (the default): every image weighs the same.
        logit_adjustment: one offset per class added to the logits inside the training loss only,
            ``τ · log π_k`` from the sites' *public* class counts (the logit-adjusted loss of Menon
            et al. 2021, :func:`logit_offsets`): the network learns logits whose argmax does not
            favour the common class. Each image's loss still depends on its own logits alone, so
            per-sample clipping bounds it. Empty (the default): plain cross-entropy.
        augment: ``"affine"``: every training image is drawn with its own random rotation, scale
            and shift (MONAI's batched affine warp, :mod:`domains.runtime.augment`) each time it
            is used; ``"none"`` (the default) trains on the images as they are. Each image's
            warp depends on nothing but fresh randomness, so under DP an image's gradient still
            depends on that image alone.
        augment_multiplicity: with ``augment``, each image of a batch is drawn this many times,
            each with its own warp, and its gradient is the mean over them before it is clipped
            (De et al. 2022, "augmentation multiplicity"). Under DP the clipped gradient is still
            one per image, so the sensitivity and the ε accounting are as with 1 (the default):
            only the compute grows, *k*-fold.
        lr_schedule: ``"cosine"``: round ``r`` of ``R`` trains at
            ``lr · (1 + cos(π (r − 1) / R)) / 2`` (:meth:`for_round`), from ``lr`` in round 1
            down towards 0; ``"constant"`` (the default): ``lr`` in every round. Within a round
            the rate is constant: the optimizer starts afresh each round anyway.
    """

    epochs: int = 1
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    proximal_mu: float = 0.0
    class_weights: tuple[float, ...] = ()
    logit_adjustment: tuple[float, ...] = ()
    augment: str = "none"
    lr_schedule: str = "constant"
    augment_multiplicity: int = 1

    def for_round(self, call: int, rounds: int) -> TrainConfig:
        """The configuration round *call* (1..*rounds*) trains with: a new shuffle each round
        (``seed + call``) and the scheduled learning rate.

        >>> [round(TrainConfig(lr=1.0, lr_schedule="cosine").for_round(r, 4).lr, 4) for r in (1, 2, 4)]
        [1.0, 0.8536, 0.1464]
        >>> TrainConfig(lr=0.1).for_round(3, 4).lr, TrainConfig(seed=5).for_round(3, 4).seed
        (0.1, 8)
        """
        if not (_is_int(call) and _is_int(rounds) and 1 <= call <= rounds):
            raise TrainConfigError(f"round must be in 1..{rounds} (got {call!r})")
        lr = self.lr
        if self.lr_schedule == "cosine":
            lr = self.lr * (1.0 + math.cos(math.pi * (call - 1) / rounds)) / 2.0
        return replace(self, seed=self.seed + call, lr=lr)

    def validate(self) -> None:
        """Check every field, so a bad value fails before any site spends time training.

        Raises:
            TrainConfigError: naming the first broken rule and the value given.

        >>> TrainConfig(epochs=0).validate()
        Traceback (most recent call last):
        ...
        domains.shared.errors.TrainConfigError: epochs must be >= 1 (got 0)
        """
        rules = [
            (_is_int(self.epochs) and self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs!r})"),
            (
                _is_int(self.batch_size) and self.batch_size >= 1,
                f"batch_size must be >= 1 (got {self.batch_size!r})",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}",
            ),
            (_is_real(self.lr) and self.lr > 0, f"lr must be > 0 (got {self.lr!r})"),
            (
                _is_real(self.momentum) and 0 <= self.momentum < 1,
                f"momentum must be in [0, 1) (got {self.momentum!r})",
            ),
            (
                _is_real(self.weight_decay) and self.weight_decay >= 0,
                f"weight_decay must be >= 0 (got {self.weight_decay!r})",
            ),
            (_is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0 (got {self.seed!r})"),
            (
                _is_real(self.proximal_mu) and self.proximal_mu >= 0,
                f"proximal_mu must be a finite number >= 0 (got {self.proximal_mu!r})",
            ),
            (
                isinstance(self.class_weights, tuple)
                and all(_is_real(w) and w > 0 for w in self.class_weights),
                f"class_weights must be finite numbers > 0, one per class (got {self.class_weights!r})",
            ),
            (
                isinstance(self.logit_adjustment, tuple) and all(_is_real(w) for w in self.logit_adjustment),
                f"logit_adjustment must be finite numbers, one per class (got {self.logit_adjustment!r})",
            ),
            (
                self.augment in AUGMENTATIONS,
                f"unknown augment {self.augment!r}; choose one of {list(AUGMENTATIONS)}",
            ),
            (
                _is_int(self.augment_multiplicity) and 1 <= self.augment_multiplicity <= MAX_MULTIPLICITY,
                f"augment_multiplicity must be an integer in 1..{MAX_MULTIPLICITY} "
                f"(got {self.augment_multiplicity!r})",
            ),
            (
                self.augment_multiplicity == 1 or self.augment != "none",
                f"augment_multiplicity {self.augment_multiplicity} needs augment = \"affine\": "
                "copies of an image without a warp are the same image",
            ),
            (
                self.lr_schedule in LR_SCHEDULES,
                f"unknown lr_schedule {self.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}",
            ),
        ]
        for ok, message in rules:
            if not ok:
                raise TrainConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float | np.floating) and math.isfinite(value))


@dataclass(frozen=True)
class DPTraining:
    """DP-SGD as a datasite runs it: Opacus per-sample clipping, Gaussian noise, Poisson sampling.

    Attributes:
        noise_multiplier: σ, the noise standard deviation in units of ``max_grad_norm``.
        max_grad_norm: C, the L2 bound every per-sample gradient is clipped to.
    """

    noise_multiplier: float
    max_grad_norm: float

    def validate(self) -> None:
        """Refuse parameters under which DP-SGD would protect nothing.

        >>> DPTraining(noise_multiplier=0.0, max_grad_norm=1.0).validate()
        Traceback (most recent call last):
        ...
        domains.shared.errors.TrainConfigError: noise_multiplier must be > 0 under DP (got 0.0)
        """
        if not (_is_real(self.noise_multiplier) and self.noise_multiplier > 0):
            raise TrainConfigError(f"noise_multiplier must be > 0 under DP (got {self.noise_multiplier!r})")
        if not (_is_real(self.max_grad_norm) and self.max_grad_norm > 0):
            raise TrainConfigError(f"max_grad_norm must be > 0 under DP (got {self.max_grad_norm!r})")


@dataclass(frozen=True)
class HESpec:
    """Encrypted aggregation as approved: which key, and the fixed-point clamp of the weights.

    Attributes:
        key_id: the key ceremony's id; a datasite holding another key refuses the job.
        weight_bound: every model weight is clamped to ``[-weight_bound, weight_bound]``
            before encryption, so that encrypted sums cannot wrap around (see
            :mod:`privacy.he`). The run reports how many weights the clamp touched.
        roster: the fingerprint of the federation's roster (``medsyft keys init --site``), or
            ``""``. With a roster, sites sign masked parts and verify and add each other's
            parts themselves (:mod:`domains.runtime.secure_round`); without one (older jobs
            load with ``""``) the orchestrator adds ciphertexts and sites cannot verify the sum.
    """

    key_id: str
    weight_bound: float = 4.0
    roster: str = ""

    def validate(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise TrainingError("he.key_id must be the key ceremony's id (see `medsyft keys init`)")
        if not (isinstance(self.weight_bound, int | float) and 0 < self.weight_bound <= 1e6):
            raise TrainingError(f"he.weight_bound must be in (0, 1e6] (got {self.weight_bound!r})")
        if not (isinstance(self.roster, str) and re.fullmatch(r"(|[0-9a-f]{64})", self.roster)):
            raise TrainingError(f"he.roster must be '' or a roster fingerprint, 64 lowercase hex "
                                f"characters (got {self.roster!r})")


@dataclass(frozen=True)
class JobSpec:
    """What one datasite is asked to approve for one federated job."""

    dataset: str
    model: str
    in_channels: int
    num_classes: int
    image_size: int
    multi_label: bool
    rounds: int
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.2
    split_seed: int = 0
    dp: DPConfig | None = None
    he: HESpec | None = None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    sites: tuple[str, ...] = ()
    min_contributions: int = 0  # 0: the default, 2 under HE and 1 without
    server: ServerStep | None = None  # the sites' server optimizer (HE only)
    task: str = "classification"  # the learning task (domains.runtime.tasks); older specs: classification
    eval_every: int = 1  # call r evaluates when (R + 1 - r) % eval_every == 0; older specs: every call

    def __post_init__(self) -> None:
        if self.task not in COUNTS:
            raise TrainingError(f"unknown task {self.task!r}; choose one of {sorted(COUNTS)}")
        if self.rounds < 1:
            raise TrainingError(f"rounds must be >= 1 (got {self.rounds})")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrainingError(f"val_fraction must be in (0, 1) (got {self.val_fraction})")
        if not (_is_int(self.eval_every) and self.eval_every >= 1):
            raise TrainingError(f"eval_every must be an integer >= 1: 1 evaluates every call, "
                                f"rounds + 1 or more the final model only (got {self.eval_every!r})")
        self.train.validate()
        if self.dp is not None:
            self.dp.validate()
        if self.he is not None:
            self.he.validate()
        if self.server is not None:
            self.server.validate()
            if self.he is None:
                raise TrainingError("server names the optimizer each site applies to the decrypted "
                                    "aggregate, which only HE jobs have; without HE the orchestrator "
                                    "applies it")
        self._validate_class_weights()
        self._validate_roster()

    def _validate_class_weights(self) -> None:
        for name in ("class_weights", "logit_adjustment"):
            values = getattr(self.train, name)
            if values and (self.multi_label or len(values) != self.num_classes):
                raise TrainingError(f"{name} need one value per class of a multi-class job "
                                    f"({self.num_classes} classes, multi_label={self.multi_label}; "
                                    f"got {len(values)})")

    def _validate_roster(self) -> None:
        """The roster names every site of the job; an aggregate needs min_contributions of them."""
        if not all(isinstance(s, str) and s for s in self.sites) or len(set(self.sites)) != len(self.sites):
            raise TrainingError(f"sites must be distinct datasite names (got {list(self.sites)})")
        low = 2 if self.he is not None else 1
        if self.min_contributions == 0:
            object.__setattr__(self, "min_contributions", low)
        if not isinstance(self.min_contributions, int) or self.min_contributions < low:
            raise TrainingError(f"min_contributions must be at least {low}"
                                f"{' under HE (one site alone would be readable)' if low == 2 else ''} "
                                f"(got {self.min_contributions!r})")
        if self.sites and self.min_contributions > len(self.sites):
            raise TrainingError(f"min_contributions ({self.min_contributions}) exceeds the roster's "
                                f"{len(self.sites)} sites")

    def dp_training(self, noise_multiplier: float) -> DPTraining | None:
        """The DP-SGD parameters of one call, once the site has fixed σ (see runtime)."""
        if self.dp is None:
            return None
        return DPTraining(noise_multiplier=noise_multiplier, max_grad_norm=self.dp.max_grad_norm)

    @property
    def max_calls(self) -> int:
        """Calls one approval allows: R training rounds plus the final evaluation."""
        return self.rounds + 1

    @property
    def eval_calls(self) -> tuple[int, ...]:
        """The calls that evaluate, in order: the final one and every ``eval_every``-th before it.

        >>> JobSpec(dataset="d", model="m", in_channels=1, num_classes=2, image_size=28,
        ...         multi_label=False, rounds=15, eval_every=5).eval_calls
        (1, 6, 11, 16)
        """
        last = self.max_calls
        return tuple(call for call in range(1, last + 1) if (last - call) % self.eval_every == 0)

    def evaluates(self, call: int) -> bool:
        """Whether call *call* evaluates the incoming model (and, under DP, releases noisy counts)."""
        return 1 <= call <= self.max_calls and (self.max_calls - call) % self.eval_every == 0

    @property
    def function_name(self) -> str:
        """The PySyft function name, unique per job so resubmission never collides."""
        return f"medsyft_job_{self.job_id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        try:
            values = dict(data)
            train = dict(values.get("train", {}))
            train["class_weights"] = tuple(train.get("class_weights", ()))  # a list after JSON
            train["logit_adjustment"] = tuple(train.get("logit_adjustment", ()))
            values["train"] = TrainConfig(**train)
            if values.get("dp") is not None:
                values["dp"] = DPConfig(**values["dp"])
            if values.get("he") is not None:
                values["he"] = HESpec(**values["he"])
            if values.get("server") is not None:
                values["server"] = ServerStep.from_dict(values["server"])
            values["sites"] = tuple(values.get("sites", ()))
            return cls(**values)
        except TypeError as exc:
            raise TrainingError(f"job description is malformed ({exc})") from exc


def balanced_weights(class_counts: Sequence[int]) -> tuple[float, ...]:
    """Class weights ``w_k = N / (K · n_k)`` from class counts: every class weighs the same in
    total, and the weights average to 1 over the images, so the loss keeps its scale.

    >>> balanced_weights([388, 3494])
    (5.0026, 0.5555)

    Raises:
        TrainConfigError: for a class with no image (its weight would be infinite).
    """
    counts = [int(c) for c in class_counts]
    if not counts or min(counts) <= 0:
        raise TrainConfigError(f"balanced class weights need an image of every class (got {counts})")
    total, k = sum(counts), len(counts)
    return tuple(round(total / (k * c), 4) for c in counts)


def logit_offsets(class_counts: Sequence[int], *, tau: float = 1.0) -> tuple[float, ...]:
    """The logit-adjusted loss's offsets ``τ · log(n_k / N)`` from class counts.

    >>> logit_offsets([388, 3494])
    (-2.3031, -0.1053)

    Raises:
        TrainConfigError: for a class with no image (its log prior would be -inf) or τ <= 0.
    """
    counts = [int(c) for c in class_counts]
    if not counts or min(counts) <= 0:
        raise TrainConfigError(f"a logit-adjusted loss needs an image of every class (got {counts})")
    if not (_is_real(tau) and tau > 0):
        raise TrainConfigError(f"logit_tau must be > 0 (got {tau!r})")
    total = sum(counts)
    return tuple(round(tau * math.log(c / total), 4) for c in counts)
