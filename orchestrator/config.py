"""A federated job as a data scientist writes it: ``job.toml``.

Example::

    [job]
    dataset = "chest-xray"        # the dataset name on every datasite
    model = "auto"                # small-cnn for <= 64 px, resnet18 above; or a registry name
    rounds = 3
    local_epochs = 1
    batch_size = 32
    optimizer = "adam"
    lr = 0.001
    fraction = 1.0                # share of sites asked each round
    min_sites = 2                 # quorum: fewer successful sites stops the job
    strategy = "fedavg"           # or "fedprox" (with proximal_mu), "fedmedian", "trimmed-mean",
                                  # or a server optimizer: "fedavgm", "fedadam", "fedyogi"
    # proximal_mu = 0.01          # FedProx's μ: a job constant, shown at review
    # trim_fraction = 0.2         # trimmed mean: share cut at each end, per coordinate
    # server_lr = 0.1             # server optimizers: η, β (or β1), β2, τ; Flower's defaults if unset
    # server_momentum = 0.9       #   (under HE a job constant: every site takes the step; fraction = 1)
    # server_beta2 = 0.99         #   FedAdam and FedYogi only
    # server_tau = 0.001          #   FedAdam and FedYogi only
    round_timeout = 120           # seconds a site may take per round
    approval_timeout = 600        # seconds to wait for every owner's approval
    run_dir = "runs/chest"        # checkpoints, history, plot, submitted code

    [[sites]]
    name = "hospital-a"
    url = "http://127.0.0.1:8081"
    email = "ana@uni.example"
    password_file = "secrets/hospital-a.txt"   # or password_env = "HOSPITAL_A_PASSWORD"

    [privacy]                     # on by default; turning either off is logged and shown at review
    dp = true
    noise_multiplier = 1.0        # or target_epsilon = 8.0 (each site derives its noise)
    max_grad_norm = 1.0           # per-sample clipping norm C
    eval_noise_multiplier = 5.0   # noise on the released validation counts
    he = true
    he_public_key = "keys/orchestrator-public.medsyftkey"   # from `medsyft keys init`
    roster = "keys/roster.json"   # from `medsyft keys init --site ...`: sites verify the sums
    weight_bound = 4.0            # fixed-point clamp of model weights under HE

    [baseline]                    # how the federation's data was made, for the centralized run
    source = "synthetic"          # or a path, e.g. "pneumoniamnist.npz"
    count = 3000
    partition = "dirichlet:0.5"
    seed = 0

Each table is checked by a strict pydantic model (``_JobTable``, ``_SiteTable``, ...): unknown keys,
values of the wrong TOML type (``rounds = "3"``, ``rounds = 3.5``, ``dp = 1``) and broken rules are
refused with one line naming the table and the key; an integer is accepted where a number is
expected. The validated tables become the frozen dataclasses the rest of medsyft reads.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from orchestrator.errors import ConfigError


@dataclass(frozen=True)
class SiteConfig:
    name: str
    url: str
    email: str
    password_file: str | None = None
    password_env: str | None = None

    def password(self, base: Path) -> str:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(f"site '{self.name}': environment variable {self.password_env} "
                                  "is not set; export it or use password_file")
            return value
        if self.password_file:
            path = (base / self.password_file).expanduser()
            try:
                return path.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(f"site '{self.name}': cannot read password_file {path}; "
                                  "put the password on its first line") from exc
        raise ConfigError(f"site '{self.name}' needs password_file or password_env")


@dataclass(frozen=True)
class BaselineConfig:
    source: str = "synthetic"
    count: int = 3000
    partition: str = "iid"
    seed: int = 0
    split: str = "train"
    image_size: int | None = None


DEFAULT_NOISE_MULTIPLIER = 1.0


@dataclass(frozen=True)
class PrivacyConfig:
    dp: bool = True
    noise_multiplier: float | None = None  # DEFAULT_NOISE_MULTIPLIER unless target_epsilon is given
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    eval_noise_multiplier: float = 5.0
    he: bool = True
    he_public_key: str | None = None
    roster: str | None = None  # roster.json: verifiable secure aggregation (without it, a warning)
    weight_bound: float = 4.0

    @property
    def sigma(self) -> float | None:
        """The configured σ: the default one unless a target ε was given instead."""
        if self.noise_multiplier is None and self.target_epsilon is None:
            return DEFAULT_NOISE_MULTIPLIER
        return self.noise_multiplier

    def dp_config(self) -> Any:
        """The job's :class:`privacy.accounting.DPConfig` (δ is the dataset's, set on each site)."""
        from privacy.accounting import DPConfig

        return DPConfig(noise_multiplier=self.sigma, target_epsilon=self.target_epsilon,
                        max_grad_norm=self.max_grad_norm,
                        eval_noise_multiplier=self.eval_noise_multiplier)

    def key_path(self, base: Path) -> Path:
        assert self.he_public_key is not None
        return (base / self.he_public_key).expanduser()

    def roster_path(self, base: Path) -> Path | None:
        """The federation's roster.json, or None: the job then aggregates without verification."""
        return (base / self.roster).expanduser() if self.he and self.roster else None


@dataclass(frozen=True)
class JobConfig:
    dataset: str
    sites: list[SiteConfig]
    model: str = "auto"
    rounds: int = 3
    local_epochs: int = 1
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    fraction: float = 1.0
    min_sites: int = 1
    round_timeout: float = 300.0
    approval_timeout: float = 600.0
    val_fraction: float = 0.2
    seed: int = 0
    run_dir: str = "runs/job"
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    trim_fraction: float = 0.2
    server_lr: float | None = None  # server optimizers (SERVER_STRATEGIES); None: Flower's default
    server_momentum: float | None = None
    server_beta2: float | None = None
    server_tau: float | None = None
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    base_dir: Path = field(default=Path("."), compare=False)

    @property
    def run_path(self) -> Path:
        return (self.base_dir / self.run_dir).resolve()

    def server_step(self) -> Any:
        """The :class:`~domains.shared.server_step.ServerStep` of a server-optimizer strategy, else None."""
        if self.strategy not in SERVER_STRATEGIES:
            return None
        from domains.shared.server_step import ServerStep

        return ServerStep.of(self.strategy, lr=self.server_lr, momentum=self.server_momentum,
                             beta2=self.server_beta2, tau=self.server_tau)


SERVER_STRATEGIES = ("fedavgm", "fedadam", "fedyogi")  # a server optimizer after FedAvg's mean
_ADAPTIVE = ("fedadam", "fedyogi")
_SERVER_KEYS = {  # key -> (the strategies that use it, what it is)
    "server_lr": (SERVER_STRATEGIES, "a server optimizer's learning rate η"),
    "server_momentum": (SERVER_STRATEGIES, "a server optimizer's momentum β (FedAvgM) or β1"),
    "server_beta2": (_ADAPTIVE, "FedAdam's and FedYogi's second-moment decay β2"),
    "server_tau": (_ADAPTIVE, "FedAdam's and FedYogi's adaptivity τ"),
}


# The schema of job.toml. Defaults are the dataclasses' own, so each lives in one place.


class _Table(BaseModel):
    """A TOML table: no unknown keys, no coercion (``"3"`` is not 3, 3.5 is not 3, true is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Broken(ValueError):
    """A rule across tables, raised at the file's root but named after the table it concerns."""

    def __init__(self, table: str | None, message: str) -> None:
        super().__init__(message)
        self.table = table


class _SiteTable(_Table):
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
    dataset: str = Field(examples=["chest-xray"])
    model: str = JobConfig.model
    rounds: int = Field(JobConfig.rounds, ge=1)
    local_epochs: int = Field(JobConfig.local_epochs, ge=1)
    batch_size: int = Field(JobConfig.batch_size, ge=1)
    optimizer: str = JobConfig.optimizer
    lr: float = Field(JobConfig.lr, gt=0)
    fraction: float = Field(JobConfig.fraction, gt=0, le=1)
    min_sites: int = JobConfig.min_sites  # 1..len(sites): checked by _JobFile
    round_timeout: float = Field(JobConfig.round_timeout, gt=0)
    approval_timeout: float = Field(JobConfig.approval_timeout, gt=0)
    val_fraction: float = Field(JobConfig.val_fraction, gt=0, lt=1)
    seed: int = JobConfig.seed
    run_dir: str = JobConfig.run_dir
    strategy: Literal["fedavg", "fedprox", "fedmedian", "trimmed-mean", "fedavgm", "fedadam",
                      "fedyogi"] = "fedavg"
    proximal_mu: float = Field(JobConfig.proximal_mu, ge=0)
    trim_fraction: float = Field(JobConfig.trim_fraction, ge=0, lt=0.5)
    server_lr: float | None = Field(None, gt=0)
    server_momentum: float | None = Field(None, ge=0, lt=1)
    server_beta2: float | None = Field(None, ge=0, lt=1)
    server_tau: float | None = Field(None, gt=0)

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
        return self


ROBUST_STRATEGIES = ("fedmedian", "trimmed-mean")  # order statistics: they need plaintext updates


def _empty_table() -> Any:
    return {}


class _JobFile(_Table):
    """The whole file; a missing table is validated as an empty one, so its own rules still apply."""

    job: _JobTable = Field(default_factory=_empty_table, validate_default=True)
    sites: list[_SiteTable] = Field(default_factory=list)
    privacy: _PrivacyTable = Field(default_factory=_empty_table, validate_default=True)
    baseline: _BaselineTable = Field(default_factory=_empty_table, validate_default=True)

    @model_validator(mode="after")
    def _sites_fit_the_job(self) -> Self:
        if not self.sites:
            raise _Broken(None, "at least one [[sites]] entry is needed")
        n, names = len(self.sites), [s.name for s in self.sites]
        if not 1 <= self.job.min_sites <= n:
            raise _Broken("job", f"min_sites must be between 1 and the number of sites ({n}), "
                          f"got {self.job.min_sites}")
        if len(set(names)) != len(names):
            raise _Broken("sites", f"site names must be unique (got {names})")
        if self.privacy.he and self.job.strategy in ROBUST_STRATEGIES:
            raise _Broken("job", f"strategy = {self.job.strategy!r} cannot run under encrypted aggregation: "
                          "additive HE can only add the sites' updates, and a median or a trimmed mean is "
                          'not a sum; use "fedavg" or "fedprox", or set [privacy] he = false')
        if self.privacy.he and self.job.strategy in SERVER_STRATEGIES and self.job.fraction < 1:
            raise _Broken("job", f"strategy = {self.job.strategy!r} under encrypted aggregation needs "
                          f"fraction = 1.0 (got {self.job.fraction}): every site takes the server step "
                          "itself, and one that misses a round's aggregate cannot update its optimizer state")
        return self

    def to_config(self, base_dir: Path) -> JobConfig:
        return JobConfig(**self.job.model_dump(), base_dir=base_dir,
                         sites=[SiteConfig(**s.model_dump()) for s in self.sites],
                         privacy=PrivacyConfig(**self.privacy.model_dump()),
                         baseline=BaselineConfig(**self.baseline.model_dump()))


# From pydantic's errors to one line that names the table and the key as the user wrote them.

_MODELS: dict[str, type[BaseModel]] = {
    "job": _JobTable, "sites": _SiteTable, "privacy": _PrivacyTable, "baseline": _BaselineTable}
_LABELS = {"job": "[job]", "sites": "[[sites]]", "privacy": "[privacy]", "baseline": "[baseline]"}
_WANTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
           "string_type": "a string"}
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _where(file: Path, loc: tuple[Any, ...]) -> str:
    """``job.toml [job]`` or ``job.toml [[sites]] #2`` for the table an error location is in."""
    if not loc:
        return str(file)
    if loc[0] == "sites" and len(loc) > 1 and isinstance(loc[1], int):
        return f"{file} [[sites]] #{loc[1] + 1}"
    return f"{file} {_LABELS[loc[0]]}"


def _model(table: tuple[Any, ...]) -> type[BaseModel]:
    return _MODELS[table[0]] if table else _JobFile


def _range(table: tuple[Any, ...], key: str) -> str:
    """``>= 1``, ``> 0`` or ``in (0, 1]``, from the bounds the field declares."""
    meta = _model(table).model_fields[key].metadata
    bound = {k: getattr(m, k) for m in meta for k in _SIGNS if hasattr(m, k)}
    low = [k for k in bound if k in ("gt", "ge")]
    high = [k for k in bound if k in ("lt", "le")]
    if low and high:  # an interval: "in (0, 1]" reads better than "> 0 and <= 1"
        opening, closing = "(" if low[0] == "gt" else "[", ")" if high[0] == "lt" else "]"
        return f"in {opening}{bound[low[0]]}, {bound[high[0]]}{closing}"
    return " and ".join(f"{_SIGNS[k]} {v}" for k, v in bound.items())


def _unknown(file: Path, table: tuple[Any, ...], errors: list[ErrorDetails]) -> str:
    """Typos are errors: a misspelt ``noise_multipler`` would otherwise train with the default σ."""
    unknown = sorted(str(e["loc"][-1]) for e in errors if e["loc"][:-1] == table)
    known = sorted(_model(table).model_fields)
    close = difflib.get_close_matches(unknown[0], known, n=1)
    if not table:
        hint = f"did you mean {_LABELS[close[0]]}?" if close else f"known: {', '.join(_LABELS.values())}"
        return f"{file}: unknown table or key(s) {unknown}; {hint}"
    hint = f"did you mean {close[0]!r}?" if close else f"known: {known}"
    return f"{_where(file, table)}: unknown key(s) {unknown}; {hint}"


def _describe(file: Path, error: ErrorDetails) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error["input"]
    if kind == "value_error":
        broken = error.get("ctx", {}).get("error")
        table = (broken.table,) if isinstance(broken, _Broken) and broken.table else loc
        return f"{_where(file, table)}: {broken}"
    if kind == "model_type":
        got = f"{loc[0]} = {value!r}" if len(loc) == 1 else repr(value)
        return f"{_where(file, loc)} must be a table (got {got})"
    if kind == "list_type":
        return f"{file}: sites must be [[sites]] tables, one per datasite (got {type(value).__name__})"
    table, key = loc[:-1], str(loc[-1])
    if kind == "missing":
        example = json.dumps((_model(table).model_fields[key].examples or ["..."])[0])
        return f"{_where(file, table)} needs {key} = {example}"
    if kind in _WANTED:
        return f"{_where(file, table)}: {key} must be {_WANTED[kind]} (got {value!r})"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected")
        return f"{_where(file, table)}: {key} must be one of {expected} (got {value!r})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{_where(file, table)}: {key} must be {_range(table, key)} (got {value!r})"
    return f"{_where(file, table)}: {key}: {error['msg']} (got {value!r})"


def _one_line(file: Path, exc: ValidationError) -> str:
    """The first problem; an unknown key first of all, since a typo explains the errors after it."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        return _unknown(file, tuple(extra[0]["loc"][:-1]), extra)
    return _describe(file, errors[0])


def load_config(path: str | os.PathLike[str]) -> JobConfig:
    """Read and validate a job file; every problem is one ConfigError naming the key.

    Unknown tables and keys are refused (typos must not fall back to defaults), and every
    value must have its key's type: ``rounds = "abc"`` or ``dp = "no"`` is an error naming
    ``rounds`` or ``dp``, never a coerced value or a TypeError.
    """
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file} ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML ({exc})") from exc
    try:
        tables = _JobFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(file, exc)) from exc
    return tables.to_config(file.parent.resolve())
