"""A data scientist's federated job, end to end: connect, submit, wait for approval, train.

>>> from orchestrator import FederatedJob, load_config
>>> job = FederatedJob(load_config("job.toml"))        # doctest: +SKIP
>>> job.submit()                                        # doctest: +SKIP
>>> result = job.run()                                  # doctest: +SKIP
>>> result.summary()                                    # doctest: +SKIP

The run directory is the job's memory: once a job is submitted, running the
same config again reuses its job id, its requests and approvals, and continues
after the last completed round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains import TrainingError, Weights, build_model, default_model, get_weights, val_count
from domains.shared.eval_spec import EvalSpec
from domains.shared.plain_model import PlainModel
from domains.shared.release_files import MODEL_FILE, RELEASE_DIR, RELEASE_JSON
from domains.shared.spec import HESpec, JobSpec, TrainConfig, balanced_weights, logit_offsets
from orchestrator import evaluate, release
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.config import JobConfig
from orchestrator.errors import ConfigError, NotApproved, ReleaseRequired
from orchestrator.evaluate import CrossSiteResult
from orchestrator.result import FederatedResult
from orchestrator.runner import Federation
from orchestrator.secure import SecureAggregation
from orchestrator.site import Site, connect_all
from orchestrator.strategy import FedAvg, FedMedian, FedProx, ServerOptimizer, Strategy, TrimmedMean
from orchestrator.submit import approval_table, request_records, submit_all, wait_for_approval
from privacy.durable import atomic_writer
from privacy.errors import HEError, PrivacyError, RosterError
from privacy.he import HEContext, load_context
from privacy.roster import Roster, load_roster

log = logging.getLogger("medsyft")


def strategy_for(config: JobConfig) -> Strategy:
    """The orchestrator's side of ``[job] strategy`` (FedProx's term itself runs at the sites, and so
    does a server optimizer's step under HE)."""
    common: dict[str, Any] = {"fraction": config.fraction, "min_sites": config.min_sites, "seed": config.seed}
    if (step := config.server_step()) is not None:
        return ServerOptimizer(step, **common)
    if config.strategy == "fedprox":
        return FedProx(proximal_mu=config.proximal_mu, **common)
    if config.strategy == "fedmedian":
        return FedMedian(**common)
    if config.strategy == "trimmed-mean":
        return TrimmedMean(beta=config.trim_fraction, **common)
    return FedAvg(**common)


def describe_strategy(strategy: Strategy, *, he: bool) -> dict[str, Any]:
    """What ran: the strategy's class and its settings (kept in ``RUN_DIR/strategy.json`` for the
    model card), and whether the orchestrator only summed ciphertexts (HE)."""
    from dataclasses import asdict, is_dataclass

    settings = {k: (asdict(v) if is_dataclass(v) and not isinstance(v, type) else v)
                for k, v in vars(strategy).items()
                if not k.startswith("_") and (isinstance(v, int | float | str | bool) or is_dataclass(v))}
    return {"name": type(strategy).__name__, "settings": settings, "encrypted_aggregation": he}


def _class_totals(names: tuple[str, ...], metas: dict[str, dict[str, Any]]) -> list[int]:
    """Images per class over every site, in *names*' order, from the sites' public class counts."""
    return [sum(int(m.get("class_counts", {}).get(name, 0)) for m in metas.values()) for name in names]


class FederatedJob:
    """One job over the sites of a :class:`JobConfig`."""

    def __init__(self, config: JobConfig, *, strategy: Strategy | None = None) -> None:
        self.config = config
        self.run_dir = RunDir(config.run_path)
        self.strategy = strategy or strategy_for(config)
        self.tracker: Any = None  # the [tracking] backend of the last run(), if any
        self._sites: list[Site] | None = None
        self._context: HEContext | None = None
        self._roster: Roster | None = None
        self._metas: dict[str, dict[str, Any]] | None = None

    @property
    def he_context(self) -> HEContext | None:
        """The orchestrator's public HE context (no secret key), or None with HE off."""
        privacy = self.config.privacy
        if not privacy.he:
            return None
        if self._context is None:
            try:
                self._context = load_context(privacy.key_path(self.config.base_dir))
            except HEError as exc:
                raise ConfigError(f"[privacy] he_public_key: {exc}") from exc
            if self._context.has_secret:
                raise ConfigError("[privacy] he_public_key is a hospital SECRET key: the orchestrator "
                                  "must hold only orchestrator-public.medsyftkey; move the secret file "
                                  "to the hospitals")
        return self._context

    @property
    def roster(self) -> Roster | None:
        """The federation's roster (``[privacy] roster``), or None: HE sums are then unverifiable."""
        path = self.config.privacy.roster_path(self.config.base_dir)
        if path is None:
            return None
        if self._roster is None:
            try:
                self._roster = load_roster(path)
            except RosterError as exc:
                raise ConfigError(f"[privacy] roster: {exc}") from exc
        return self._roster

    def _he_spec(self) -> HESpec | None:
        """The job's HE constants; under a roster, every site and the HE key must be the roster's."""
        context, p = self.he_context, self.config.privacy
        if context is None:
            return None
        roster = self.roster
        if roster is None:
            log.warning("HE sums are NOT verifiable for this job ([privacy] roster is not set): the "
                        "orchestrator adds ciphertexts and every owner's review says so; run "
                        "`medsyft keys init --site ...` and set roster = \"keys/roster.json\"")
            return HESpec(key_id=context.key_id, weight_bound=p.weight_bound)
        if roster.he_key_id != context.key_id:
            raise ConfigError(f"[privacy] roster belongs to HE key {roster.he_key_id[:8]} but he_public_key "
                              f"is key {context.key_id[:8]}: use both files of the same key ceremony")
        if off := [s.server_name for s in self.sites if s.server_name not in roster.names]:
            raise ConfigError(f"datasite {off[0]!r} is not on the federation's roster "
                              f"({', '.join(roster.names)}); every [[sites]] entry must be a hospital of "
                              "the key ceremony (`medsyft keys init --site NAME`)")
        return HESpec(key_id=context.key_id, weight_bound=p.weight_bound, roster=roster.fingerprint)

    @property
    def sites(self) -> list[Site]:
        if self._sites is None:
            self._sites = connect_all(self.config.sites, self.config.base_dir)
        return self._sites

    def datasets(self) -> pd.DataFrame:
        """Every dataset on every site, with its public metadata."""
        return pd.concat([s.datasets() for s in self.sites], ignore_index=True)

    def make_spec(self) -> JobSpec:
        """The job's constants, sized from the dataset metadata every site publishes."""
        _ = self.roster  # a bad roster file fails before any site is contacted
        metas = self.site_metadata()
        shapes = {(m["channels"], tuple(m["image_size"]), tuple(m["label_names"]), m["multi_label"])
                  for m in metas.values()}
        if len(shapes) != 1:
            raise ConfigError(f"sites disagree on dataset '{self.config.dataset}' "
                              f"(channels, size, labels): {metas}")
        channels, size, names, multi = shapes.pop()
        c, p = self.config, self.config.privacy
        model = default_model(size[0]) if c.model == "auto" else c.model
        dp = p.dp_config() if p.dp else None
        he = self._he_spec()
        roster = tuple(s.server_name for s in self.sites)
        if he is not None and len(roster) < 2:
            raise ConfigError("an encrypted (HE) job needs at least 2 sites: one site's aggregate is "
                              "its own update; add a site or set [privacy] he = false")
        try:
            return JobSpec(
                dataset=c.dataset, model=model, in_channels=channels, num_classes=len(names),
                image_size=size[0], multi_label=multi, rounds=c.rounds, val_fraction=c.val_fraction,
                eval_every=c.eval_every,
                split_seed=c.seed, dp=dp, he=he, sites=roster,
                server=c.server_step() if he is not None else None,  # under HE the sites take the step
                min_contributions=max(c.min_sites, 2 if he is not None else 1),
                train=TrainConfig(epochs=c.local_epochs, batch_size=c.batch_size,
                                  optimizer=c.optimizer, lr=c.lr, seed=c.seed,
                                  proximal_mu=c.proximal_mu,
                                  class_weights=self._class_weights(names, metas),
                                  logit_adjustment=self._logit_adjustment(names, metas),
                                  augment=c.augment, augment_multiplicity=c.augment_multiplicity,
                                  lr_schedule=c.lr_schedule),
            )
        except (TrainingError, PrivacyError) as exc:
            raise ConfigError(str(exc)) from exc

    def _class_weights(self, names: tuple[str, ...], metas: dict[str, dict[str, Any]]) -> tuple[float, ...]:
        """``class_weights = "balanced"``: from the class counts every site publishes (public)."""
        if self.config.class_weights == "none":
            return ()  # a multi-label dataset's weights are refused by JobSpec, naming the rule
        return balanced_weights(_class_totals(names, metas))

    def _logit_adjustment(self, names: tuple[str, ...], metas: dict[str, dict[str, Any]]
                          ) -> tuple[float, ...]:
        """``loss = "logit-adjusted"``: τ·log priors from the class counts every site publishes."""
        if self.config.loss == "cross-entropy":
            return ()
        return logit_offsets(_class_totals(names, metas), tau=self.config.logit_tau)

    def sizes(self) -> dict[str, int]:
        """Each site's expected training-split size from its public dataset size (FedAvg weights)."""
        out = {}
        for name, meta in self.site_metadata().items():
            n = int(meta["n"])
            out[name] = n - val_count(n, val_fraction=self.config.val_fraction)
        return out

    def site_metadata(self) -> dict[str, dict[str, Any]]:
        """Every site's public metadata of the dataset, fetched once per job object."""
        if self._metas is None:
            with ThreadPoolExecutor(max(1, len(self.sites))) as pool:  # each a listing call to its site
                metas = pool.map(lambda s: s.metadata(self.config.dataset), self.sites)
                self._metas = dict(zip([s.name for s in self.sites], metas, strict=True))
        return self._metas

    def state(self) -> RunState | None:
        return self.run_dir.load_state() if self.run_dir.exists() else None

    def submit(self) -> pd.DataFrame:
        """Send one code request per site (once per run directory); returns their status."""
        state = self.state()
        if state is None:
            spec = self.make_spec()
            for off in [name for name, on in (("DP", spec.dp), ("HE", spec.he)) if on is None]:
                log.warning("%s is OFF for job %s ([privacy] %s = false): every owner's review "
                            "says so", off, spec.job_id, off.lower())
            state = RunState(spec, sizes=self.sizes())
            state.submissions = submit_all(self.sites, spec, self.run_dir.path)
            self.run_dir.save_json("datasets", self.site_metadata())  # public: for the model card
            self.run_dir.save_state(state)
        self.save_site_addresses()
        return approval_table(self.sites, state.submissions)

    def save_site_addresses(self) -> None:
        """``RUN_DIR/sites.json``: each site's URL and TLS file paths (no secret), so that a dashboard
        of this run can probe the sites from another process (``medsyft dashboard --run-dir``)."""
        from dataclasses import asdict

        from orchestrator.dashboard.server import addresses_from_config

        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self.run_dir.save_json("sites", [asdict(a) for a in addresses_from_config(self.config)])

    def wait_for_approval(self, *, timeout: float | None = None,
                          on_update: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
        state = self.state()
        if state is None:
            raise NotApproved("nothing submitted yet; call submit() first")
        def updated(table: pd.DataFrame) -> None:
            self.run_dir.save_json("approvals", table.to_dict("records"))  # the dashboard's view
            if on_update is not None:
                on_update(table)

        table = wait_for_approval(self.sites, state.submissions,
                                  timeout=self.config.approval_timeout if timeout is None else timeout,
                                  on_update=updated)
        self.run_dir.save_json("approvals", request_records(self.sites, state.submissions).to_dict("records"))
        return table

    def run(self, *, progress: bool = True, on_round: Callable[[pd.DataFrame], None] | None = None
            ) -> FederatedResult:
        state = self.state()
        if state is None:
            raise NotApproved("nothing submitted yet; call submit() first")
        spec = state.spec
        strategy: Strategy = self.strategy
        initial: Weights | None = None
        if spec.he is not None:
            strategy = self._aggregation(spec)
        else:
            initial = get_weights(build_model(spec.model, in_channels=spec.in_channels,
                                              num_classes=spec.num_classes, image_size=spec.image_size,
                                              seed=spec.train.seed))
        self.run_dir.save_json("strategy", describe_strategy(self.strategy, he=spec.he is not None))
        from orchestrator import tracking

        self.tracker = tracking.open_tracker(self.config.tracking, self.run_dir, self.config.base_dir, spec)

        def round_done(metrics: pd.DataFrame) -> None:
            if self.tracker is not None:
                self.tracker.sync()
            if on_round is not None:
                on_round(metrics)

        federation = Federation(self.sites, state, self.run_dir, strategy,
                                round_timeout=self.config.round_timeout, sizes=state.sizes,
                                on_round=round_done)
        started = time.perf_counter()
        final = federation.run(initial, progress=progress)
        if self.tracker is not None:
            self.tracker.sync(finished=True)
        weights = final.to_weights() if isinstance(final, PlainModel) else None
        result = FederatedResult(spec=spec, weights=weights,
                                 history=federation.history(), privacy=federation.privacy(),
                                 metrics=federation.metrics(), timing=federation.timing(),
                                 wall_seconds=time.perf_counter() - started,
                                 run_dir=self.run_dir.path)
        if weights is not None:  # plaintext: the model is the scientist's already; under HE, at release
            self.write_model_card(result)
        return result

    def _aggregation(self, spec: JobSpec) -> SecureAggregation:
        """The submitted job's encrypted aggregation, with the roster it was approved with."""
        assert spec.he is not None
        context = self.he_context
        if context is None or context.key_id != spec.he.key_id:
            raise ConfigError(f"job {spec.job_id} was submitted for HE key {spec.he.key_id[:8]}; "
                              "set [privacy] he_public_key to that key's public file")
        roster = self.roster if spec.he.roster else None
        if spec.he.roster and (roster is None or roster.fingerprint != spec.he.roster):
            raise ConfigError(f"job {spec.job_id} was approved for roster {spec.he.roster[:12]}; set "
                              "[privacy] roster to that federation's roster.json")
        return SecureAggregation(self.strategy, context, roster=roster)

    # -- release of an encrypted run's final model -------------------------------------
    def request_release(self) -> pd.DataFrame:
        """Ask every data owner to release the final model (once); returns their status."""
        state = self.state()
        if state is None:
            raise NotApproved("nothing submitted yet; call submit() first")
        release.submit_release(self.sites, state, self.run_dir)
        return self.release_status()

    def release_status(self) -> pd.DataFrame:
        return release.release_table(self.sites, self.run_dir)

    def fetch_release(self) -> FederatedResult:
        """The run's result with the unmasked final model; ReleaseRequired until all approved."""
        state = self.state()
        result = self.result()
        if state is None or result is None:
            raise ReleaseRequired("no finished run to release; run the job first")
        aggregation = self._aggregation(state.spec) if state.spec.he is not None else None
        weights, record = release.fetch_release(self.sites, state, self.run_dir, aggregation=aggregation)
        result.weights = weights
        self.write_model_card(result, release=record)
        return result

    def write_model_card(self, result: FederatedResult, *, release: dict[str, Any] | None = None) -> Path:
        """``RUN_DIR/release/``'s card (and, for a plaintext run, its weights): the model as it ran."""
        from orchestrator import model_card

        folder = self.run_dir.path / RELEASE_DIR
        if release is None and (folder / RELEASE_JSON).exists():  # a card written again after the release
            release = json.loads((folder / RELEASE_JSON).read_text())
        if result.spec.he is None and result.weights is not None:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_writer(folder / MODEL_FILE, mode=0o644) as fh:
                np.savez(fh, **result.weights)
        try:
            card = model_card.build_card(self, result, release=release)
        except (OSError, ValueError, KeyError, TrainingError, PrivacyError) as exc:
            # the model is kept whatever happens to its card; say what is missing and why
            log.warning("the model card of job %s was not written (%s: %s); the model is in %s",
                        result.spec.job_id, type(exc).__name__, exc, folder)
            return folder
        model_card.write_card(folder, card)
        return folder

    # -- cross-site evaluation on every hospital's private test split -----------------------
    def request_evaluation(self, *, new: bool = False) -> pd.DataFrame:
        """Ask every site to score the final model on its test dataset (``[evaluation]``), once per
        run directory unless *new*; returns the owners' decisions so far."""
        state = self.state()
        if state is None:
            raise NotApproved("nothing submitted yet; train the job first")
        found = None if new else evaluate.latest(self.run_dir)
        if found is None:
            result = self.result()
            ev = evaluate.make_spec(state, self.config.evaluation,
                                    have_weights=result is not None and result.weights is not None)
            submissions = evaluate.submit_evaluation(self.sites, ev, self.run_dir)
        else:
            ev, submissions = found
        return approval_table(self.sites, submissions)

    def evaluation_spec(self) -> EvalSpec | None:
        found = evaluate.latest(self.run_dir)
        return found[0] if found else None

    def fetch_evaluation(self) -> CrossSiteResult:
        """The pooled noisy test score of every approved site; NotApproved while any owner is deciding."""
        found = evaluate.latest(self.run_dir)
        if found is None:
            raise NotApproved("no evaluation requested yet; call request_evaluation() first")
        result = self.result()
        return evaluate.fetch_evaluation(self.sites, found[0], found[1], self.run_dir,
                                         result.weights if result is not None else None)

    def result(self) -> FederatedResult | None:
        """The stored result of a finished run, without contacting any site."""
        state = self.state()
        if state is None or not state.finished:
            return None
        result = FederatedResult.load(self.run_dir.path, state.spec)
        released = self.run_dir.path / "release" / "model.npz"
        if result.weights is None and released.exists():
            with np.load(released) as npz:
                result.weights = {k: npz[k] for k in npz.files}
        return result
