"""The schema of ``job.toml`` (documented in :mod:`orchestrator.config`): one strict pydantic model
per table. Defaults are the dataclasses' own, so each lives in one place; a broken rule between
keys raises :class:`Broken`, naming the table it belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domains.shared.counts import BINS
from domains.shared.spec import MAX_MULTIPLICITY
from orchestrator.config import (
    ROBUST_STRATEGIES,
    SERVER_STRATEGIES,
    BaselineConfig,
    EvaluationConfig,
    JobConfig,
    PrivacyConfig,
    SiteConfig,
    TrackingConfig,
)

_ADAPTIVE = ("fedadam", "fedyogi")
_SERVER_KEYS = {  # key -> (the strategies that use it, what it is)
    "server_lr": (SERVER_STRATEGIES, "a server optimizer's learning rate η"),
    "server_momentum": (SERVER_STRATEGIES, "a server optimizer's momentum β (FedAvgM) or β1"),
    "server_beta2": (_ADAPTIVE, "FedAdam's and FedYogi's second-moment decay β2"),
    "server_tau": (_ADAPTIVE, "FedAdam's and FedYogi's adaptivity τ"),
}





class _Table(BaseModel):
    """A TOML table: no unknown keys, no coercion (``"3"`` is not 3, 3.5 is not 3, true is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Broken(ValueError):
    """A rule across tables, raised at the file's root but named after the table it concerns."""

    def __init__(self, table: str | None, message: str) -> None:
        super().__init__(message)
        self.table = table


class _TLSTable(_Table):
    """``[tls]``, and the same keys in a ``[[sites]]`` entry (which override it for that site)."""

    _table: ClassVar[str] = "tls"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if bool(self.client_cert) != bool(self.client_key):
            raise Broken(self._table, "client_cert and client_key go together; give both (the scientist "
                         "kit's client.crt and client.key)")
        return self


class _SiteTable(_TLSTable):
    _table: ClassVar[str] = "sites"
    name: str = Field(examples=["hospital-a"])
    url: str = Field(examples=["http://127.0.0.1:8081"])
    email: str = Field(examples=["you@uni.example"])
    password_file: str | None = None
    password_env: str | None = None


class _BaselineTable(_Table):
    source: str = BaselineConfig.source
    count: int = BaselineConfig.count
    partition: str = BaselineConfig.partition
    seed: int = BaselineConfig.seed
    split: str = BaselineConfig.split
    image_size: int | None = None
    test_split: str = BaselineConfig.test_split


class _EvaluationTable(_Table):
    dataset: str | None = None
    noise_multiplier: float = EvaluationConfig.noise_multiplier
    bins: int = EvaluationConfig.bins

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0 (got {self.noise_multiplier}): the test counts "
                             "are always released with DP noise")
        if self.bins < 2 or BINS % self.bins:
            raise ValueError(f"bins must divide {BINS} and be at least 2 (got {self.bins}); e.g. 4, 10 or 20")
        return self


class _TrackingTable(_Table):
    backend: Literal["mlflow", "tensorboard"] | None = None
    uri: str | None = None
    experiment: str = TrackingConfig.experiment

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if self.backend is None and self.uri is not None:
            raise ValueError('uri needs a backend: set backend = "mlflow" or "tensorboard"')
        if not self.experiment.strip():
            raise ValueError("experiment must not be empty; name the experiment the rounds are logged to")
        return self


class _PrivacyTable(_Table):
    dp: bool = PrivacyConfig.dp
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = PrivacyConfig.max_grad_norm
    eval_noise_multiplier: float = PrivacyConfig.eval_noise_multiplier
    he: bool = PrivacyConfig.he
    he_public_key: str | None = None
    roster: str | None = None
    weight_bound: float = Field(PrivacyConfig.weight_bound, gt=0)

    @field_validator("roster")
    @classmethod
    def _roster_is_a_path(cls, roster: str | None) -> str | None:
        if roster is not None and not roster.strip():
            raise ValueError("roster must be the path of roster.json from `medsyft keys init --site ...` "
                             "(got an empty string); remove the line to run unverified")
        return roster

    @model_validator(mode="after")
    def _protections_are_complete(self) -> Self:
        """DP's rules are privacy's own (DPConfig); they bind only while DP is on, as at the sites."""
        from privacy.errors import DPConfigError

        if self.dp:
            try:
                PrivacyConfig(**self.model_dump()).dp_config().validate()
            except DPConfigError as exc:
                raise ValueError(str(exc)) from exc
        if self.he and not self.he_public_key:
            raise ValueError("he is on by default: set he_public_key = \"PATH\" (the "
                             "orchestrator-public.medsyftkey of `medsyft keys init`) or he = false")
        return self


class _JobTable(_Table):
    recipe: str | None = None
    dataset: str = Field(examples=["chest-xray"])
    model: str = JobConfig.model
    rounds: int = Field(JobConfig.rounds, ge=1)
    local_epochs: int = Field(JobConfig.local_epochs, ge=1)
    batch_size: int = Field(JobConfig.batch_size, ge=1)
    optimizer: str = JobConfig.optimizer
    lr: float = Field(JobConfig.lr, gt=0)
    fraction: float = Field(JobConfig.fraction, gt=0, le=1)
    min_sites: int = JobConfig.min_sites  # 1..len(sites): checked by JobFile
    round_timeout: float = Field(JobConfig.round_timeout, gt=0)
    approval_timeout: float = Field(JobConfig.approval_timeout, gt=0)
    val_fraction: float = Field(JobConfig.val_fraction, gt=0, lt=1)
    eval_every: int = Field(JobConfig.eval_every, ge=1)  # rounds + 1 or more: the final model only
    seed: int = JobConfig.seed
    run_dir: str = JobConfig.run_dir
    strategy: Literal["fedavg", "fedprox", "fedmedian", "trimmed-mean", "fedavgm", "fedadam",
                      "fedyogi"] = "fedavg"
    proximal_mu: float = Field(JobConfig.proximal_mu, ge=0)
    class_weights: Literal["none", "balanced"] = "none"
    loss: Literal["cross-entropy", "logit-adjusted"] = "cross-entropy"
    logit_tau: float = Field(JobConfig.logit_tau, gt=0)
    augment: Literal["none", "affine"] = "none"
    augment_multiplicity: int = Field(JobConfig.augment_multiplicity, ge=1, le=MAX_MULTIPLICITY)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    trim_fraction: float = Field(JobConfig.trim_fraction, ge=0, lt=0.5)
    server_lr: float | None = Field(None, gt=0)
    server_momentum: float | None = Field(None, ge=0, lt=1)
    server_beta2: float | None = Field(None, ge=0, lt=1)
    server_tau: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _recipe_fills_in_defaults(cls, data: Any) -> Any:
        """A named recipe's values under the keys the file leaves out (orchestrator.recipes)."""
        if isinstance(data, dict) and isinstance(data.get("recipe"), str):
            from orchestrator.recipes import recipe_defaults

            return {**recipe_defaults(data["recipe"]), **data}
        return data

    @model_validator(mode="after")
    def _strategy_has_its_parameters(self) -> Self:
        if self.strategy == "fedprox" and self.proximal_mu == 0:
            raise ValueError('strategy = "fedprox" needs proximal_mu = 0.01 (the proximal term μ > 0; '
                             "Li et al. 2020 try 0.001 to 1)")
        if self.strategy != "fedprox" and self.proximal_mu != 0:
            raise ValueError(f'proximal_mu is FedProx\'s term: set strategy = "fedprox" or remove it '
                             f"(strategy is {self.strategy!r})")
        for key, (users, what) in _SERVER_KEYS.items():
            if getattr(self, key) is not None and self.strategy not in users:
                wanted = " or ".join(f'"{u}"' for u in users)
                raise ValueError(f"{key} is {what}: set strategy = {wanted}, or remove it "
                                 f"(strategy is {self.strategy!r})")
        if self.augment_multiplicity > 1 and self.augment == "none":
            raise ValueError(f'augment_multiplicity = {self.augment_multiplicity} needs augment = "affine": '
                             "copies of an image without a warp are the same image")
        return self




def _empty_table() -> Any:
    return {}


class JobFile(_Table):
    """The whole file; a missing table is validated as an empty one, so its own rules still apply."""

    job: _JobTable = Field(default_factory=_empty_table, validate_default=True)
    sites: list[_SiteTable] = Field(default_factory=list)
    tls: _TLSTable = Field(default_factory=_empty_table, validate_default=True)
    privacy: _PrivacyTable = Field(default_factory=_empty_table, validate_default=True)
    baseline: _BaselineTable = Field(default_factory=_empty_table, validate_default=True)
    evaluation: _EvaluationTable = Field(default_factory=_empty_table, validate_default=True)
    tracking: _TrackingTable = Field(default_factory=_empty_table, validate_default=True)

    @model_validator(mode="after")
    def _sites_fit_the_job(self) -> Self:
        if not self.sites:
            raise Broken(None, "at least one [[sites]] entry is needed")
        n, names = len(self.sites), [s.name for s in self.sites]
        if not 1 <= self.job.min_sites <= n:
            raise Broken("job", f"min_sites must be between 1 and the number of sites ({n}), "
                          f"got {self.job.min_sites}")
        if len(set(names)) != len(names):
            raise Broken("sites", f"site names must be unique (got {names})")
        if self.privacy.he and self.job.strategy in ROBUST_STRATEGIES:
            raise Broken("job", f"strategy = {self.job.strategy!r} cannot run under encrypted aggregation: "
                          "additive HE can only add the sites' updates, and a median or a trimmed mean is "
                          'not a sum; use "fedavg" or "fedprox", or set [privacy] he = false')
        if self.privacy.he and self.job.strategy in SERVER_STRATEGIES and self.job.fraction < 1:
            raise Broken("job", f"strategy = {self.job.strategy!r} under encrypted aggregation needs "
                          f"fraction = 1.0 (got {self.job.fraction}): every site takes the server step "
                          "itself, and one that misses a round's aggregate cannot update its optimizer state")
        return self

    def _with_tls(self, site: _SiteTable) -> dict[str, Any]:
        """A site's keys, its TLS files taken from [tls] where the site names none of its own."""
        values = site.model_dump()
        if not (site.client_cert or site.client_key):
            values["client_cert"], values["client_key"] = self.tls.client_cert, self.tls.client_key
        values["ca_file"] = site.ca_file or self.tls.ca_file
        return values

    def to_config(self, base_dir: Path) -> JobConfig:
        return JobConfig(**self.job.model_dump(), base_dir=base_dir,
                         sites=[SiteConfig(**self._with_tls(s)) for s in self.sites],
                         privacy=PrivacyConfig(**self.privacy.model_dump()),
                         baseline=BaselineConfig(**self.baseline.model_dump()),
                         evaluation=EvaluationConfig(**self.evaluation.model_dump()),
                         tracking=TrackingConfig(**self.tracking.model_dump()))
