"""Run the rounds of an approved job across datasites, in parallel, with checkpoints.

Round r sends the global model to the selected sites at once; each site first
evaluates it on its validation split (metrics for model r-1) and then trains it
(update r). A site that errors or misses ``round_timeout`` is skipped for that
round and recorded; the round aggregates what arrived if at least ``min_sites``
sites succeeded, else the job stops with :class:`QuorumLost`. After R rounds
one more call evaluates the final model. Every round ends with a checkpoint, so
``run`` called again on the same run directory continues after the last
completed round (datasites replay, never recompute, a call they already ran).

The loop owns no protocol: the :class:`~orchestrator.strategy.Strategy` decides who is asked,
what each site receives and how the results become the next global model (a plaintext mean,
an encrypted sum, or a roster job's signed parts with any mask recoveries), and a
:class:`~orchestrator.transport.Transport` makes the calls. A strategy that cannot complete a
round raises :class:`~orchestrator.errors.RoundFailed`; the loop then checkpoints the previous
round and stops with :class:`QuorumLost`, as when too few sites answered. What a strategy
carries between rounds (:meth:`~orchestrator.strategy.Strategy.state`) is checkpointed with each
round and restored on resume. Under HE with a server optimizer every site reports the public hash
of its own global state (``global_state_hash``): the history and the metrics record it per site.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

import pandas as pd
from tqdm.auto import tqdm

from domains.shared.codec import nbytes
from domains.shared.counts import counts_type
from domains.shared.plain_model import PlainModel
from orchestrator.checkpoint import GlobalModel, RunDir, RunState
from orchestrator.errors import QuorumLost, RoundFailed
from orchestrator.site import Site
from orchestrator.strategy import JobContext, Strategy
from orchestrator.transport import CallOutcome, SyftTransport, Transport

if TYPE_CHECKING:
    from domains import Weights

SITE_COLUMNS = ["round", "site", "status", "error", "train_loss", "n_train", "train_lr", "train_s",
                "eval_s", "site_s", "upload_s", "execute_s", "get_s", "call_s", "update_bytes",
                "clamped", "global_state_hash"]
PRIVACY_COLUMNS = ["call", "site", "noise_multiplier", "delta", "job_epsilon_spent",
                   "job_epsilon_planned", "dataset_epsilon_spent", "dataset_epsilon_budget",
                   "dataset_epsilon_remaining"]
def metric_columns(task: str) -> list[str]:
    """The metrics table's columns: the task's own metrics between the site and the state hash."""
    return ["model_round", "site", "n", *counts_type(task).metrics, "global_state_hash"]


__all__ = ["CallOutcome", "Federation"]


class Federation:
    """Drives an approved job to completion over a set of connected sites.

    *transport* defaults to :class:`SyftTransport` over *sites*; the tests pass a fake one.
    """

    def __init__(self, sites: Sequence[Site], state: RunState, run_dir: RunDir, strategy: Strategy, *,
                 round_timeout: float, sizes: dict[str, int] | None = None,
                 on_round: Callable[[pd.DataFrame], None] | None = None,
                 transport: Transport | None = None, site_names: Sequence[str] | None = None) -> None:
        self.names = list(site_names) if site_names is not None else [s.name for s in sites]
        self.sizes = sizes or {n: 1 for n in self.names}  # FedAvg shares under HE (public sizes)
        self.state = state
        self.run_dir = run_dir
        self.strategy = strategy
        self.round_timeout = round_timeout
        self.on_round = on_round
        functions = {s.site: s.function for s in state.submissions}
        self.transport = transport or SyftTransport({s.name: s for s in sites}, functions, state.spec.dataset,
                                                    round_timeout=round_timeout, sizes=self.sizes)
        spec = state.spec
        strategy.bind(JobContext(job_id=spec.job_id, rounds=spec.rounds, sizes=self.sizes,
                                 server_names={s.name: s.server_name or s.name for s in sites},
                                 min_contributions=spec.min_contributions))
        self.site_rows = run_dir.load_frame("history").to_dict("records")
        self.metric_rows = run_dir.load_frame("metrics").to_dict("records")
        self.timing_rows = run_dir.load_frame("timing").to_dict("records")
        self.privacy_rows = run_dir.load_frame("privacy").to_dict("records")

    def _call_many(self, names: list[str], call: int, model: GlobalModel) -> list[CallOutcome]:
        return self.transport.ask(self.strategy.configure(call, names, model))

    def _record_privacy(self, call: int, outcomes: list[CallOutcome]) -> None:
        for o in outcomes:
            if o.status == "ok" and isinstance(o.result.get("privacy"), dict):
                self.privacy_rows.append({"call": call, "site": o.site, **o.result["privacy"]})

    def _record_metrics(self, model_round: int, outcomes: list[CallOutcome]) -> None:
        self._record_privacy(model_round + 1, outcomes)
        kind = counts_type(self.state.spec.task)  # the job's task decides what its counts are
        results = []
        for o in outcomes:
            if o.status != "ok" or o.result.get("eval") is None:
                continue  # a failed call, or one the job does not evaluate at (eval_every)
            counts = kind.from_dict(o.result["eval"])
            results.append(counts)
            self.metric_rows.append({"model_round": model_round, "site": o.site, "n": counts.n,
                                     **counts.summary(),
                                     "global_state_hash": o.result.get("global_state_hash")})
        if results:
            pooled = kind.pool(results)
            self.metric_rows.append({"model_round": model_round, "site": "pooled", "n": pooled.n,
                                     **pooled.summary()})

    def _metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metric_rows, columns=metric_columns(self.state.spec.task))

    # -- rounds ---------------------------------------------------------------------------
    def _round(self, r: int, weights: GlobalModel) -> GlobalModel:
        t0 = time.perf_counter()
        names = self.strategy.select(r, self.names)
        outcomes = self._call_many(names, r, weights)
        self.strategy.accept(r, names, outcomes)
        wall = time.perf_counter() - t0
        self._record_calls(r, outcomes)
        self._record_metrics(r - 1, outcomes)
        ok = [o for o in outcomes if o.status == "ok" and o.value is not None]
        quorum = self.strategy.quorum()
        if len(ok) < quorum:
            failed = "; ".join(f"{o.site}: {o.error}" for o in outcomes if o.status != "ok")
            self._stop(r, weights, f"only {len(ok)} of {len(names)} sites succeeded, {quorum} needed "
                                   f"({failed})")
        t1 = time.perf_counter()
        try:
            new = self.strategy.next_model(r, names, ok, weights, self.transport)
        except RoundFailed as exc:
            self._stop(r, weights, str(exc))
        agg_s = time.perf_counter() - t1
        update_bytes = max(_nbytes(o) for o in ok)
        slowest = max(ok, key=lambda o: o.call_s)
        train_s = max((o.result.get("train_seconds") or 0) for o in ok)
        self.timing_rows.append({
            "round": r, "round_s": wall + agg_s,
            "train_s": train_s,
            "site_compute_s": max((o.result.get("site_seconds") or 0) for o in ok),
            "upload_s": slowest.legs.get("upload_s"), "execute_s": slowest.legs.get("execute_s"),
            "get_s": slowest.legs.get("get_s"), "aggregate_s": agg_s,
            "round_per_train": (wall + agg_s) / max(1e-9, train_s),
            "params": new.params, "update_MB": update_bytes / 2**20,
            "bytes_per_param": update_bytes / new.params, "x_float32": update_bytes / (4 * new.params),
            "sites_ok": len(ok), "sites_asked": len(names), **new.stats,
        })
        self.state.completed_round = r
        self._save(r, new.model)
        return new.model

    def _record_calls(self, r: int, outcomes: list[CallOutcome]) -> None:
        for o in outcomes:
            res = o.result
            self.site_rows.append({"round": r, "site": o.site, "status": o.status, "error": o.error,
                                   "train_loss": res.get("train_loss"), "n_train": res.get("n_train"),
                                   "train_lr": res.get("train_lr"),
                                   "train_s": res.get("train_seconds"), "eval_s": res.get("eval_seconds"),
                                   "site_s": res.get("site_seconds"), **o.legs,
                                   "call_s": o.call_s, "update_bytes": _nbytes(o),
                                   "clamped": res.get("clamped"),
                                   "global_state_hash": res.get("global_state_hash")})

    def _stop(self, r: int, weights: GlobalModel, why: str) -> NoReturn:
        """Checkpoint the last completed round and stop the job; running again resumes there."""
        self._save(r - 1, weights)
        raise QuorumLost(f"round {r}: {why}; fix the sites and run again to resume from round "
                         f"{self.state.completed_round + 1}")

    def _save(self, r: int, weights: GlobalModel) -> None:
        self.run_dir.save_global(r, weights)
        self.run_dir.save_strategy(r, self.strategy.state())
        self.run_dir.save_frame("history", pd.DataFrame(self.site_rows, columns=SITE_COLUMNS))
        self.run_dir.save_frame("metrics", self._metrics_frame())
        self.run_dir.save_frame("timing", pd.DataFrame(self.timing_rows))
        self.run_dir.save_frame("privacy", pd.DataFrame(self.privacy_rows, columns=PRIVACY_COLUMNS))
        self.run_dir.save_state(self.state)
        if self.on_round is not None:
            self.on_round(self.metrics())

    def run(self, initial: GlobalModel | Weights, *, progress: bool = True) -> GlobalModel:
        """Rounds from the last checkpoint on; *initial* is the round-0 model (None under HE)."""
        if isinstance(initial, Mapping):  # named arrays: the plaintext model travels with its layout
            initial = PlainModel.from_weights(initial)
        spec = self.state.spec
        start = self.state.completed_round
        weights = self.run_dir.load_global(start) if start else initial
        if start == 0:
            self.run_dir.save_global(0, initial)
        else:
            self.strategy.restore(self.run_dir.load_strategy(start))
        bar = tqdm(total=spec.rounds, initial=start, desc="rounds", unit="round",
                   disable=not progress)
        for r in range(start + 1, spec.rounds + 1):
            weights = self._round(r, weights)
            bar.update(1)
        bar.close()
        if not self.state.finished:
            final = self._call_many(list(self.names), spec.rounds + 1, weights)
            self._record_metrics(spec.rounds, final)
            self.state.finished = True
            self._save(spec.rounds, weights)
        return weights

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.site_rows, columns=SITE_COLUMNS)

    def metrics(self) -> pd.DataFrame:
        return self._metrics_frame()

    def timing(self) -> pd.DataFrame:
        return pd.DataFrame(self.timing_rows)

    def privacy(self) -> pd.DataFrame:
        return pd.DataFrame(self.privacy_rows, columns=PRIVACY_COLUMNS)


def _nbytes(outcome: CallOutcome) -> int:
    """Bytes of one site's update as it travelled (ciphertext chunks or float32 values), read from
    the update the strategy decoded once."""
    return 0 if outcome.value is None else nbytes(outcome.value)
