"""A federated job as a data scientist writes it: ``job.toml``.

Example::

    [job]
    dataset = "chest-xray"        # the dataset name on every datasite
    # recipe = "dp-logit-adjusted"  # a measured recipe's values for every key left out (recipes.py)
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
    # class_weights = "balanced"  # weigh each class's images by N / (K · n_k), from public counts
    # loss = "logit-adjusted"     # add τ·log(n_k / N) to the logits in training (Menon et al.):
    # logit_tau = 2.0             #   a decision threshold that does not favour the common class
    # augment = "affine"          # a random rotation, scale and shift of every training image
    # augment_multiplicity = 4    #   with augment: warps per image and step, averaged before clipping
    # lr_schedule = "cosine"      # round r of R trains at lr · (1 + cos(π (r − 1) / R)) / 2
    # eval_every = 5              # validate every 5th round's model (and the final): under DP the
                                  #   releases left out spend no ε, so training may take it
    # trim_fraction = 0.2         # trimmed mean: share cut at each end, per coordinate
    # server_lr = 0.1             # server optimizers: η, β (or β1), β2, τ; Flower's defaults if unset
    # server_momentum = 0.9       #   (under HE a job constant: every site takes the step; fraction = 1)
    # server_beta2 = 0.99         #   FedAdam and FedYogi only
    # server_tau = 0.001          #   FedAdam and FedYogi only
    round_timeout = 120           # seconds a site may take per round
    approval_timeout = 600        # seconds to wait for every owner's approval
    run_dir = "runs/chest"        # checkpoints, history, plot, submitted code

    [tls]                         # from the scientist kit of `medsyft federation init`; per site too
    ca_file = "kit/ca.crt"        # the federation CA: every https:// site's certificate must be from it
    client_cert = "kit/client.crt"  # mutual TLS: proves to each datasite that you are in the federation
    client_key = "kit/client.key"

    [[sites]]
    name = "hospital-a"
    url = "https://hospital-a.example:8443"   # http:// only for a datasite on this machine's loopback
    email = "ana@uni.example"
    password_file = "secrets/hospital-a.txt"   # or password_env = "HOSPITAL_A_PASSWORD"
    # ca_file, client_cert, client_key here override [tls] for this site

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
    # test_split = "test"         # the source's split the final model is scored on ("none": skip)

    [evaluation]                  # `medsyft evaluate`: the final model on every hospital's test data
    dataset = "pneumoniamnist-test"   # each site's own test split, published with --split test
    noise_multiplier = 2.0        # DP noise on the released counts, charged to that dataset's ε
    bins = 10                     # score-histogram bins released (more: less biased, noisier AUC)

    [tracking]                    # optional: every round's metrics also go to an experiment tracker
    backend = "mlflow"            # or "tensorboard" (pip install 'medsyft[tracking]')
    # uri = "sqlite:///mlflow.db" # MLflow's store (default RUN_DIR/mlflow.db); TensorBoard: a folder
    experiment = "chest-xray"

Each table is checked by a strict pydantic model (:mod:`orchestrator.config_tables`): unknown keys,
values of the wrong TOML type (``rounds = "3"``, ``rounds = 3.5``, ``dp = 1``) and broken rules are
refused with one line naming the table and the key; an integer is accepted where a number is
expected; :mod:`orchestrator.config_messages` turns pydantic's errors into that line. The validated
tables become the frozen dataclasses below, which the rest of medsyft reads.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

SERVER_STRATEGIES = ("fedavgm", "fedadam", "fedyogi")  # a server optimizer after FedAvg's mean
ROBUST_STRATEGIES = ("fedmedian", "trimmed-mean")  # order statistics: they need plaintext updates


@dataclass(frozen=True)
class SiteConfig:
    name: str
    url: str
    email: str
    password_file: str | None = None
    password_env: str | None = None
    ca_file: str | None = None      # the federation CA (else the system's trusted CAs, for https://)
    client_cert: str | None = None  # the scientist's client certificate (mutual TLS) and its key
    client_key: str | None = None

    def tls(self, base: Path) -> Any:
        """The :class:`domains.shared.tls.TLSClient` to reach this site with (None: plain HTTP)."""
        from domains.shared.tls import TLSClient, is_https

        if not is_https(self.url) and not (self.ca_file or self.client_cert):
            return None
        paths = {}
        for key in ("ca_file", "client_cert", "client_key"):
            value = getattr(self, key)
            if value:
                path = (base / value).expanduser()
                if not path.is_file():
                    raise ConfigError(f"site '{self.name}': {key} {path} does not exist; give the file from "
                                      "the scientist kit of `medsyft federation init`")
                paths[key] = path
        return TLSClient(ca_file=paths.get("ca_file"), cert_file=paths.get("client_cert"),
                         key_file=paths.get("client_key"))

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
    test_split: str = "test"  # scored in the simulation (orchestrator.holdout); "none": no test score


@dataclass(frozen=True)
class EvaluationConfig:
    """``[evaluation]``: the cross-site evaluation of the final model on each hospital's own test
    dataset (``medsyft evaluate``; :mod:`orchestrator.evaluate`)."""

    dataset: str | None = None  # the test dataset's name on every datasite (published --split test)
    noise_multiplier: float = 2.0  # σ on the released counts: ε ≈ 2.2 at δ = 1e-5, once per evaluation
    bins: int = 10  # score-histogram bins of the release (a divisor of 200)


@dataclass(frozen=True)
class TrackingConfig:
    """``[tracking]``: each round's metrics also logged to MLflow or TensorBoard
    (:mod:`orchestrator.tracking`). Off unless ``backend`` is set."""

    backend: str | None = None  # "mlflow" or "tensorboard"
    uri: str | None = None  # MLflow: default sqlite:///RUN_DIR/mlflow.db; TensorBoard: a log folder
    experiment: str = "medsyft"  # MLflow's experiment (TensorBoard: the log folder's sub-folder)


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
    eval_every: int = 1  # every k-th call evaluates, counted back from the final one (always evaluated)
    seed: int = 0
    run_dir: str = "runs/job"
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    recipe: str | None = None  # a named recipe whose values filled in the keys left out (recipes.py)
    class_weights: str = "none"  # "balanced": from the sites' public class counts (multi-class)
    loss: str = "cross-entropy"  # "logit-adjusted": τ·log prior offsets from the public class counts
    logit_tau: float = 1.0
    augment: str = "none"  # "affine": a random rotation, scale and shift per image each time it is used
    augment_multiplicity: int = 1  # with augment: warps per image per step, its gradient their mean
    lr_schedule: str = "constant"  # "cosine": lr falls from lr in round 1 towards 0 in the last
    trim_fraction: float = 0.2
    server_lr: float | None = None  # server optimizers (SERVER_STRATEGIES); None: Flower's default
    server_momentum: float | None = None
    server_beta2: float | None = None
    server_tau: float | None = None
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
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


def load_config(path: str | os.PathLike[str]) -> JobConfig:
    """Read and validate a job file; every problem is one ConfigError naming the key.

    Unknown tables and keys are refused (typos must not fall back to defaults), and every
    value must have its key's type: ``rounds = "abc"`` or ``dp = "no"`` is an error naming
    ``rounds`` or ``dp``, never a coerced value or a TypeError.
    """
    from pydantic import ValidationError  # pydantic loads only when a file is read

    from orchestrator.config_messages import one_line
    from orchestrator.config_tables import JobFile

    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file} ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML ({exc})") from exc
    try:
        tables = JobFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(one_line(file, exc)) from exc
    return tables.to_config(file.parent.resolve())
