"""Run the rounds of an approved job across datasites, in parallel, with checkpoints.

Round r sends the global model to the selected sites at once; each site first
evaluates it on its validation split (metrics for model r-1) and then trains it
(update r). A site that errors or misses ``round_timeout`` is skipped for that
round and recorded; the round aggregates what arrived if at least ``min_sites``
sites succeeded, else the job stops with :class:`QuorumLost`. After R rounds
one more call evaluates the final model. Every round ends with a checkpoint, so
``run`` called again on the same run directory continues after the last
completed round (datasites replay, never recompute, a call they already ran).

Under a roster job (verifiable secure aggregation, :mod:`orchestrator.secure`) the global
model of round r is the signed parts of call r−1, forwarded unchanged; each returned part is
pre-checked, and when a site of the round failed, every survivor is asked once, in parallel,
for its mask recovery before the next round. Fewer survivors than the quorum, or a recovery
that fails, stops the job with :class:`QuorumLost` after checkpointing the previous round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from domains.training import parts
from domains.training.evaluate import EvalResult, pool
from domains.training.weights import Layout, flatten, unflatten
from orchestrator.checkpoint import GlobalModel, RunDir, RunState
from orchestrator.errors import QuorumLost
from orchestrator.secure import SecureAggregation, SignedRound
from orchestrator.site import Site, quiet
from orchestrator.strategy import Strategy
from privacy.errors import PrivacyError
from privacy.he import EncryptedVector
from privacy.secagg_messages import MaskRecovery, SignedPart

SITE_COLUMNS = ["round", "site", "status", "error", "train_loss", "n_train", "train_s",
                "eval_s", "site_s", "upload_s", "execute_s", "get_s", "call_s", "update_bytes",
                "clamped"]
PRIVACY_COLUMNS = ["call", "site", "noise_multiplier", "delta", "job_epsilon_spent",
                   "job_epsilon_planned", "dataset_epsilon_spent", "dataset_epsilon_budget",
                   "dataset_epsilon_remaining"]
METRIC_COLUMNS = ["model_round", "site", "n", "loss", "accuracy", "auc"]


@dataclass
class CallOutcome:
    site: str
    status: str  # "ok" | "error" | "timeout"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    call_s: float = 0.0
    legs: dict[str, float] = field(default_factory=dict)  # upload_s, execute_s, get_s


def call_site(site: Site, spec_function: str, labels: Any, job: dict[str, Any] | None,
              payload: dict[str, Any], *, constant_name: str = "job") -> CallOutcome:
    """One round trip: upload the payload, run the approved function, fetch the result.

    *labels* is the bound asset, or a callable that fetches it (so that a site that
    went down fails here, inside the guarded call, not before the round starts).
    *job* is normally None: the datasite always uses the constant it approved, and PySyft
    would upload any value passed for it as one more object per call (measured: ~25 ms).
    Tests pass one to show that a changed constant is ignored.
    """
    t0 = time.perf_counter()
    try:
        with quiet():
            import syft as sy

            if callable(labels):
                labels = labels()

            t_up = time.perf_counter()
            pointer = sy.ActionObject.from_obj(payload).send(site.client)
            t_exec = time.perf_counter()
            function = getattr(site.client.code, spec_function)
            constant = {} if job is None else {constant_name: job}
            result = function(labels=labels, payload=pointer, **constant)
            t_get = time.perf_counter()
            value = fetch(result)
            t_end = time.perf_counter()
        legs = {"upload_s": t_exec - t_up, "execute_s": t_get - t_exec, "get_s": t_end - t_get}
    except Exception as exc:  # PySyft raises its own exception types for refusals
        return CallOutcome(site.name, "error", error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                           call_s=time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0
    if not isinstance(value, dict):
        return CallOutcome(site.name, "error", error=f"unexpected result {type(value).__name__}",
                           call_s=elapsed)
    if "error" in value:
        err = value["error"]
        return CallOutcome(site.name, "error", error=f"{err['type']}: {err['message']}",
                           call_s=elapsed)
    return CallOutcome(site.name, "ok", result=value, call_s=elapsed, legs=legs)


def fetch(result: Any) -> Any:
    """The value behind a call's result pointer, in one request.

    PySyft's ``ActionObject.get()`` makes two: the fetch, then a storage-permission check that
    only decides whether to print a "placeholder object" warning (which ``quiet`` hides
    anyway). This is its body without that second round trip; a refusal still raises.
    """
    if not hasattr(result, "refresh_object"):
        return result  # PySyft returned a value (an error message, say), not a pointer
    from syft.service.action.action_object import ActionObject
    from syft.types.errors import SyftException
    from syft.types.result import Err

    res = result.refresh_object()
    if not isinstance(res, ActionObject):
        raise SyftException(public_message=f"{res}")
    if issubclass(res.syft_action_data_type, Err):
        raise SyftException(public_message=f"{res.syft_action_data.err()}")
    return res.syft_action_data


class Federation:
    """Drives an approved job to completion over a set of connected sites."""

    def __init__(self, sites: list[Site], state: RunState, run_dir: RunDir,
                 strategy: Strategy | SecureAggregation, *, round_timeout: float,
                 sizes: dict[str, int] | None = None,
                 on_round: Callable[[pd.DataFrame], None] | None = None) -> None:
        self.sites = {s.name: s for s in sites}
        self.server_names = {s.name: s.server_name or s.name for s in sites}  # the roster's names
        self.sizes = sizes or {s.name: 1 for s in sites}  # FedAvg shares under HE (public sizes)
        self.state = state
        self.run_dir = run_dir
        self.strategy = strategy
        self.round_timeout = round_timeout
        self.on_round = on_round
        self.functions = {s.site: s.function for s in state.submissions}
        self._labels: dict[str, Any] = {}
        self.layout: Layout = []
        self.site_rows = run_dir.load_frame("history").to_dict("records")
        self.metric_rows = run_dir.load_frame("metrics").to_dict("records")
        self.timing_rows = run_dir.load_frame("timing").to_dict("records")
        self.privacy_rows = run_dir.load_frame("privacy").to_dict("records")

    @property
    def encrypted(self) -> bool:
        return isinstance(self.strategy, SecureAggregation)

    @property
    def verifiable(self) -> bool:
        """A roster job: sites verify and add the signed parts; the orchestrator only forwards."""
        return isinstance(self.strategy, SecureAggregation) and self.strategy.verifiable

    def _labels_of(self, name: str) -> Any:
        if name not in self._labels:
            self._labels[name] = self.sites[name].asset(self.state.spec.dataset, "labels")
        return self._labels[name]

    # -- one call on many sites -----------------------------------------------------
    def _payloads(self, names: list[str], call: int, model: GlobalModel) -> dict[str, dict[str, Any]]:
        if isinstance(model, EncryptedVector):
            sent: Any = model.to_dict()
        elif model is None or isinstance(model, SignedRound):
            sent = None
        else:  # one float32 vector: PySyft serializes it far faster than a dict of many arrays
            sent, self.layout = flatten(model)
        # Calls run in order on every site: the calls before this one that a site was not asked
        # (or did not finish) are given up explicitly, and can then never run there.
        skipped = list(range(1, call))
        if not self.encrypted:
            return {n: {"call": call, "weights": sent, "skipped": skipped} for n in names}
        base: dict[str, Any] = {"call": call, "weights": sent, "skipped": skipped}
        if self.verifiable:
            signed = model.payload() if isinstance(model, SignedRound) else {"parts": [], "recoveries": []}
            base.update(signed)
            if call <= self.state.spec.rounds:  # the final call trains nothing: no site set
                base["round_sites"] = self._round_sites(names)
        shares = SecureAggregation.shares(names, self.sizes)
        return {n: {**base, "weight": shares[n]} for n in names}

    def _round_sites(self, names: list[str]) -> list[str]:
        return sorted(self.server_names[n] for n in names)

    def _call_many(self, names: list[str], call: int, model: GlobalModel) -> list[CallOutcome]:
        return self._ask(self._payloads(names, call, model))

    def _ask(self, payloads: dict[str, dict[str, Any]]) -> list[CallOutcome]:
        """One approved call per site, in parallel, each with its own payload, within round_timeout."""
        names = list(payloads)
        results: dict[str, CallOutcome] = {}

        def ask(name: str) -> None:
            results[name] = call_site(self.sites[name], self.functions[name],
                                      lambda: self._labels_of(name), None, payloads[name])

        # Daemon threads, not a ThreadPoolExecutor: PySyft's HTTP calls have no timeout, and an
        # executor's workers are joined at exit, so a frozen datasite would keep this process
        # alive forever. An abandoned call to it simply dies with the process.
        # Largest site first: it trains longest, so the round waits on it, and the threads
        # that start first serialize their uploads first (the client holds one GIL).
        order = sorted(names, key=lambda n: -self.sizes.get(n, 1))
        threads = [threading.Thread(target=ask, args=(n,), name=f"medsyft-call-{n}", daemon=True)
                   for n in order]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.round_timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [
            results.get(n) or CallOutcome(n, "timeout",
                                          error=f"no answer within {self.round_timeout:.0f} s",
                                          call_s=self.round_timeout)
            for n in names
        ]

    def _record_privacy(self, call: int, outcomes: list[CallOutcome]) -> None:
        for o in outcomes:
            if o.status == "ok" and isinstance(o.result.get("privacy"), dict):
                self.privacy_rows.append({"call": call, "site": o.site, **o.result["privacy"]})

    def _record_metrics(self, model_round: int, outcomes: list[CallOutcome]) -> None:
        self._record_privacy(model_round + 1, outcomes)
        results = []
        for o in outcomes:
            if o.status != "ok":
                continue
            ev = EvalResult.from_dict(o.result["eval"])
            results.append(ev)
            self.metric_rows.append({"model_round": model_round, "site": o.site, "n": ev.n,
                                     "loss": ev.loss, "accuracy": ev.accuracy, "auc": ev.auc})
        if results:
            pooled = pool(results)
            self.metric_rows.append({"model_round": model_round, "site": "pooled", "n": pooled.n,
                                     "loss": pooled.loss, "accuracy": pooled.accuracy,
                                     "auc": pooled.auc})

    # -- rounds ---------------------------------------------------------------------------
    def _round(self, r: int, weights: GlobalModel) -> GlobalModel:
        t0 = time.perf_counter()
        names = self.strategy.select(r, list(self.sites))
        outcomes = self._call_many(names, r, weights)
        signed = self._accept_parts(r, names, outcomes) if self.verifiable else {}
        wall = time.perf_counter() - t0
        self._record_calls(r, outcomes)
        self._record_metrics(r - 1, outcomes)
        ok = [o for o in outcomes if o.status == "ok" and o.result.get("weights") is not None]
        quorum = self._quorum()
        if len(ok) < quorum:
            failed = "; ".join(f"{o.site}: {o.error}" for o in outcomes if o.status != "ok")
            self._stop(r, weights, f"only {len(ok)} of {len(names)} sites succeeded, {quorum} needed "
                                   f"({failed})")
        t1 = time.perf_counter()
        new, params = self._aggregate(r, names, ok, signed, weights)
        agg_s = time.perf_counter() - t1
        update_bytes = max(_nbytes(o.result["weights"]) for o in ok)
        slowest = max(ok, key=lambda o: o.call_s)
        train_s = max((o.result.get("train_seconds") or 0) for o in ok)
        self.timing_rows.append({
            "round": r, "round_s": wall + agg_s,
            "train_s": train_s,
            "site_compute_s": max((o.result.get("site_seconds") or 0) for o in ok),
            "upload_s": slowest.legs.get("upload_s"), "execute_s": slowest.legs.get("execute_s"),
            "get_s": slowest.legs.get("get_s"), "aggregate_s": agg_s,
            "round_per_train": (wall + agg_s) / max(1e-9, train_s),
            "params": params, "update_MB": update_bytes / 2**20,
            "bytes_per_param": update_bytes / params, "x_float32": update_bytes / (4 * params),
            "sites_ok": len(ok), "sites_asked": len(names), **self._forwarded(weights, new),
        })
        self.state.completed_round = r
        self._save(r, new)
        return new

    def _record_calls(self, r: int, outcomes: list[CallOutcome]) -> None:
        for o in outcomes:
            res = o.result
            self.site_rows.append({"round": r, "site": o.site, "status": o.status, "error": o.error,
                                   "train_loss": res.get("train_loss"), "n_train": res.get("n_train"),
                                   "train_s": res.get("train_seconds"), "eval_s": res.get("eval_seconds"),
                                   "site_s": res.get("site_seconds"), **o.legs,
                                   "call_s": o.call_s, "update_bytes": _nbytes(res.get("weights")),
                                   "clamped": res.get("clamped")})

    def _quorum(self) -> int:
        """Sites a round needs; a roster job never sums fewer than the approved min_contributions."""
        if self.verifiable:
            return max(self.strategy.min_sites, self.state.spec.min_contributions)
        return self.strategy.min_sites

    def _stop(self, r: int, weights: GlobalModel, why: str) -> NoReturn:
        """Checkpoint the last completed round and stop the job; running again resumes there."""
        self._save(r - 1, weights)
        raise QuorumLost(f"round {r}: {why}; fix the sites and run again to resume from round "
                         f"{self.state.completed_round + 1}")

    def _aggregate(self, r: int, names: list[str], ok: list[CallOutcome], signed: dict[str, SignedPart],
                   weights: GlobalModel) -> tuple[GlobalModel, int]:
        """The next global model and its parameter count."""
        if self.verifiable:
            new_round = self._signed_round(r, names, signed, weights)
            return new_round, new_round.parts[0].vector.length
        if isinstance(self.strategy, SecureAggregation):
            summed = self.strategy.aggregate([o.result["weights"] for o in ok])
            return summed, summed.length
        mean = self.strategy.aggregate([(unflatten(o.result["weights"], self.layout),
                                         int(o.result["n_train"])) for o in ok])
        return mean, sum(int(v.size) for v in mean.values())

    # -- roster jobs: forward signed parts, recover the masks of dropped sites -----------------
    def _accept_parts(self, r: int, names: list[str], outcomes: list[CallOutcome]) -> dict[str, SignedPart]:
        """Each returned part, pre-checked alone; a part that would be refused counts as a failure."""
        assert isinstance(self.strategy, SecureAggregation)
        shares = SecureAggregation.shares(names, self.sizes)
        round_sites = self._round_sites(names)
        accepted = {}
        for o in outcomes:
            if o.status != "ok" or o.result.get("weights") is None:
                continue
            try:
                part = parts.join(o.result.get("part"), o.result["weights"])
                self.strategy.accept_part(part, job_id=self.state.spec.job_id, call=r,
                                          site=self.server_names[o.site], round_sites=round_sites,
                                          weight=shares[o.site])
            except PrivacyError as exc:
                o.status, o.error = "error", f"its part was refused: {exc} [rule {getattr(exc, 'rule', '?')}]"
                continue
            accepted[o.site] = part
        return accepted

    def _signed_round(self, r: int, names: list[str], signed: dict[str, SignedPart],
                      weights: GlobalModel) -> SignedRound:
        """The round's parts, with every survivor's mask recovery when a site dropped; pre-checked."""
        assert isinstance(self.strategy, SecureAggregation)
        survivors = [n for n in names if n in signed]
        recoveries = self._recover(r, survivors, weights) if len(survivors) < len(names) else []
        new = SignedRound(call=r, parts=tuple(sorted(signed.values(), key=lambda p: p.site)),
                          recoveries=tuple(sorted(recoveries, key=lambda m: m.site)))
        try:
            spec = self.state.spec
            self.strategy.verify(new, job_id=spec.job_id, min_sites=spec.min_contributions)
        except PrivacyError as exc:
            self._stop(r, weights, f"the round's signed parts do not verify ({exc})")
        return new

    def _recover(self, r: int, survivors: list[str], weights: GlobalModel) -> list[MaskRecovery]:
        """Ask every survivor, in parallel, to reveal its masks with the sites that dropped out."""
        names = self._round_sites(survivors)
        outcomes = self._ask({n: {"recover": r, "survivors": names} for n in survivors})
        if failed := [o for o in outcomes if o.status != "ok"]:
            why = "; ".join(f"{o.site}: {o.error}" for o in failed)
            self._stop(r, weights, f"mask recovery failed at {why}")
        try:
            return [MaskRecovery.from_dict(o.result.get("recovery")) for o in outcomes]
        except PrivacyError as exc:
            self._stop(r, weights, f"a survivor sent an unreadable mask recovery ({exc})")

    @staticmethod
    def _forwarded(previous: GlobalModel, new: GlobalModel) -> dict[str, Any]:
        """Under a roster job: what each site downloaded this round and how many recoveries it took."""
        if not isinstance(new, SignedRound):
            return {}
        download = previous.nbytes if isinstance(previous, SignedRound) else 0
        return {"download_MB": download / 2**20, "recoveries": len(new.recoveries)}

    def _save(self, r: int, weights: GlobalModel) -> None:
        self.run_dir.save_global(r, weights)
        self.run_dir.save_frame("history", pd.DataFrame(self.site_rows, columns=SITE_COLUMNS))
        self.run_dir.save_frame("metrics", pd.DataFrame(self.metric_rows, columns=METRIC_COLUMNS))
        self.run_dir.save_frame("timing", pd.DataFrame(self.timing_rows))
        self.run_dir.save_frame("privacy", pd.DataFrame(self.privacy_rows, columns=PRIVACY_COLUMNS))
        self.run_dir.save_state(self.state)
        if self.on_round is not None:
            self.on_round(self.metrics())

    def run(self, initial: GlobalModel, *, progress: bool = True) -> GlobalModel:
        """Rounds from the last checkpoint on; *initial* is the round-0 model (None under HE)."""
        spec = self.state.spec
        start = self.state.completed_round
        weights = self.run_dir.load_global(start) if start else initial
        if start == 0:
            self.run_dir.save_global(0, initial)
        bar = tqdm(total=spec.rounds, initial=start, desc="rounds", unit="round",
                   disable=not progress)
        for r in range(start + 1, spec.rounds + 1):
            weights = self._round(r, weights)
            bar.update(1)
        bar.close()
        if not self.state.finished:
            final = self._call_many(list(self.sites), spec.rounds + 1, weights)
            self._record_metrics(spec.rounds, final)
            self.state.finished = True
            self._save(spec.rounds, weights)
        return weights

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.site_rows, columns=SITE_COLUMNS)

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.metric_rows, columns=METRIC_COLUMNS)

    def timing(self) -> pd.DataFrame:
        return pd.DataFrame(self.timing_rows)

    def privacy(self) -> pd.DataFrame:
        return pd.DataFrame(self.privacy_rows, columns=PRIVACY_COLUMNS)


def _nbytes(sent: Any) -> int:
    """Bytes of one site's update as it travelled: ciphertext chunks or float32 values."""
    if isinstance(sent, dict) and "chunks" in sent:
        return EncryptedVector.from_dict(sent).nbytes
    if isinstance(sent, np.ndarray):
        return int(sent.nbytes)
    if isinstance(sent, dict):
        return sum(int(np.asarray(v).nbytes) for v in sent.values())
    return 0
