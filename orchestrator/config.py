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
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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

    def __post_init__(self) -> None:
        if self.dp:
            from privacy.errors import DPConfigError

            try:
                self.dp_config().validate()
            except DPConfigError as exc:
                raise ConfigError(f"[privacy] {exc}") from exc
        if not (isinstance(self.weight_bound, int | float) and self.weight_bound > 0):
            raise ConfigError(f"[privacy] weight_bound must be > 0 (got {self.weight_bound!r})")
        if self.he and not self.he_public_key:
            raise ConfigError("[privacy] he is on by default: set he_public_key = \"PATH\" (the "
                              "orchestrator-public.medsyftkey of `medsyft keys init`) or he = false")
        if self.roster is not None and not self.roster.strip():
            raise ConfigError("[privacy] roster must be the path of roster.json from `medsyft keys init "
                              "--site ...` (got an empty string); remove the line to run unverified")

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
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    base_dir: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, f"rounds must be >= 1 (got {self.rounds})"),
            (self.local_epochs >= 1, f"local_epochs must be >= 1 (got {self.local_epochs})"),
            (0 < self.fraction <= 1, f"fraction must be in (0, 1] (got {self.fraction})"),
            (len(self.sites) >= 1, "at least one [[sites]] entry is needed"),
            (1 <= self.min_sites <= len(self.sites),
             f"min_sites must be between 1 and the number of sites ({len(self.sites)}), "
             f"got {self.min_sites}"),
            (self.round_timeout > 0, f"round_timeout must be > 0 (got {self.round_timeout})"),
            (self.approval_timeout > 0,
             f"approval_timeout must be > 0 (got {self.approval_timeout})"),
            (self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})"),
            (self.lr > 0, f"lr must be > 0 (got {self.lr})"),
            (0 < self.val_fraction < 1, f"val_fraction must be in (0, 1) (got {self.val_fraction})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ConfigError(f"site names must be unique (got {names})")

    @property
    def run_path(self) -> Path:
        return (self.base_dir / self.run_dir).resolve()


# What TOML value each annotation admits, and how an error names it.
_KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_TABLES = {"job": "[job]", "sites": "[[sites]]", "privacy": "[privacy]", "baseline": "[baseline]"}
_NESTED = {"sites", "baseline", "privacy", "base_dir"}  # JobConfig fields that are not [job] keys


def _refuse_unknown(keys: typing.Iterable[str], known: set[str], where: str) -> None:
    """Typos are errors: a misspelt ``noise_multipler`` would otherwise train with the default σ."""
    unknown = sorted(set(keys) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {sorted(known)}"
        raise ConfigError(f"{where}: unknown key(s) {unknown}; {hint}")


def _is_a(value: Any, kind: Any) -> bool:
    if kind is float:  # TOML writes 1 for 1.0; a bool is an int to Python but never a number here
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_types(cls: type, table: dict[str, Any], where: str) -> None:
    """Each value has its field's type: ``rounds = "3"`` is refused, not coerced or crashed on."""
    hints = typing.get_type_hints(cls)
    for key, value in table.items():
        kinds = [k for k in typing.get_args(hints[key]) or (hints[key],) if k is not type(None)]
        if not any(_is_a(value, k) for k in kinds):
            wanted = " or ".join(_KINDS.get(k, getattr(k, "__name__", str(k))) for k in kinds)
            raise ConfigError(f"{where}: {key} must be {wanted} (got {value!r})")


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of key = value lines (got {table!r})")
    _refuse_unknown(table, {f.name for f in fields(cls)}, where)
    _check_types(cls, table, where)
    try:
        return cls(**table)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{where}: {exc}") from exc


def _tables(file: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The [job] table and the [[sites]] array, after refusing unknown or misshapen tables."""
    unknown = sorted(set(raw) - set(_TABLES))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(_TABLES), n=1)
        hint = f"did you mean {_TABLES[close[0]]}?" if close else f"known: {', '.join(_TABLES.values())}"
        raise ConfigError(f"{file}: unknown table or key(s) {unknown}; {hint}")
    job, sites = raw.get("job", {}), raw.get("sites", [])
    if not isinstance(job, dict):
        raise ConfigError(f"{file}: [job] must be a table (got job = {job!r})")
    if not isinstance(sites, list):
        raise ConfigError(f"{file}: sites must be [[sites]] tables, one per datasite "
                          f"(got {type(sites).__name__})")
    if "dataset" not in job:
        raise ConfigError(f"{file}: [job] needs dataset = \"NAME\"")
    return job, sites


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
    job, site_tables = _tables(file, raw)
    sites = [_build(SiteConfig, s, f"{file} [[sites]] #{i + 1}") for i, s in enumerate(site_tables)]
    baseline = _build(BaselineConfig, raw.get("baseline", {}), f"{file} [baseline]")
    privacy = _build(PrivacyConfig, raw.get("privacy", {}), f"{file} [privacy]")
    where = f"{file} [job]"
    _refuse_unknown(job, {f.name for f in fields(JobConfig)} - _NESTED, where)
    _check_types(JobConfig, job, where)
    return JobConfig(sites=sites, baseline=baseline, privacy=privacy, base_dir=file.parent.resolve(),
                     **job)
