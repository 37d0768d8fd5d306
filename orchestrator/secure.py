"""Encrypted aggregation: a strategy wrapper under which the orchestrator never sees a model.

As in Flower, privacy wraps a strategy rather than subclassing it:
:class:`SecureAggregation` is itself a :class:`~orchestrator.strategy.Strategy` that forwards
site selection and quorum to the one it wraps, and replaces what travels and how it is added.
Each site encrypts its model already multiplied by its FedAvg share
``n_i / Σ n`` (shares come from the public dataset sizes), so the sum of the ciphertexts is the
encrypted weighted mean up to the factor ``weight_sum``, which the sites divide out after
decrypting. A site that fails simply contributes nothing: the mean is over the sites that
succeeded. The orchestrator's context holds no secret key (``privacy.he``): it can add but never
decrypt.

Two ways to aggregate:

- **With the federation's roster** (``[privacy] roster``, verifiable secure aggregation): the
  orchestrator adds nothing. A round's global model is the :class:`SignedRound` of the previous
  call, every site's masked, signed part plus any mask recoveries, forwarded unchanged to every
  site of the next call, which verifies and adds them itself (``privacy.secagg``). The
  orchestrator pre-checks the parts with its public context, so a bad part is named early, and
  asks the survivors for mask recoveries when a site dropped out.
- **Without a roster** (older jobs): the orchestrator adds the ciphertexts and sends the sum back;
  the sites cannot check it (docs/privacy.md, "Known limits").

Wrapping a :class:`~orchestrator.strategy.ServerOptimizer` (FedAvgM, FedAdam, FedYogi) changes
nothing here: the orchestrator adds or forwards as for FedAvg, and every site takes the server
step itself from the decrypted mean (the job constant's ``server``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from domains.shared.codec import to_wire
from domains.shared.signed_round import SignedRound
from orchestrator.errors import RoundFailed
from orchestrator.strategy import FedAvg, JobContext, NextModel, ServerOptimizer, Strategy, refuse
from privacy.errors import AggregationRefused, PrivacyError
from privacy.he import EncryptedVector, HEContext
from privacy.roster import Roster
from privacy.secagg import VerifiedSum, aggregate_round
from privacy.secagg_messages import MaskRecovery, SignedPart
from privacy.secagg_verify import check_parts

if TYPE_CHECKING:
    from orchestrator.transport import CallOutcome, Transport

__all__ = ["SecureAggregation", "SignedRound"]  # SignedRound lives in domains.shared: datasites read it too


class SecureAggregation(Strategy):
    """Wraps a FedAvg strategy; aggregation by adding ciphertexts, or by forwarding signed parts."""

    def __init__(self, strategy: Strategy, context: HEContext, *, roster: Roster | None = None) -> None:
        if not isinstance(strategy, FedAvg):
            raise TypeError("encrypted aggregation can only compute a weighted mean: wrap a FedAvg strategy")
        if isinstance(strategy, ServerOptimizer) and strategy.fraction < 1:
            raise ValueError("under HE a server optimizer runs at every site, and a site that misses a "
                             "round's aggregate cannot follow it: ask every site each round (fraction is "
                             f"{strategy.fraction})")
        if roster is not None and roster.he_key_id != context.key_id:
            raise ValueError(f"the roster belongs to HE key {roster.he_key_id[:8]}, the context is "
                             f"{context.key_id[:8]}")
        super().__init__(fraction=strategy.fraction, min_sites=strategy.min_sites, seed=strategy.seed)
        self.strategy = strategy
        self.context = context
        self.roster = roster
        self.update_type = SignedPart if roster is not None else EncryptedVector

    @property
    def key_id(self) -> str:
        return self.context.key_id

    @property
    def verifiable(self) -> bool:
        """Whether the sites verify and add signed parts themselves (a roster job)."""
        return self.roster is not None

    # -- forwarded to the wrapped strategy ------------------------------------------------------
    def bind(self, job: JobContext) -> None:
        super().bind(job)
        self.strategy.bind(job)

    def select(self, round_number: int, sites: Sequence[str]) -> list[str]:
        return self.strategy.select(round_number, sites)

    def quorum(self) -> int:
        """A roster job never sums fewer parts than the approved ``min_contributions``."""
        if self.verifiable:
            return max(self.strategy.quorum(), self.job.min_contributions)
        return self.strategy.quorum()

    # -- what travels ---------------------------------------------------------------------------
    @staticmethod
    def shares(names: Sequence[str], sizes: Mapping[str, int]) -> dict[str, float]:
        """Each asked site's FedAvg weight; they sum to 1, so encrypted sums cannot wrap."""
        total = sum(sizes[n] for n in names)
        return {n: sizes[n] / total for n in names}

    def encode(self, model: Any) -> Any:
        """The encrypted sum as it travels; None under a roster (the parts travel instead) and
        at call 1, whose model each site builds itself."""
        self._layout = None
        return to_wire(model) if isinstance(model, EncryptedVector) else None

    def configure(self, call: int, sites: Sequence[str], model: Any) -> dict[str, dict[str, Any]]:
        """The base payload plus, under a roster, the signed parts, and each site's FedAvg share."""
        extra: dict[str, Any] = {}
        if self.verifiable:
            extra = model.payload() if isinstance(model, SignedRound) else {"parts": [], "recoveries": []}
            if call <= self.job.rounds:  # the final call trains nothing: no site set
                extra["round_sites"] = self._round_sites(sites)
        shares = self.shares(sites, self.job.sizes)
        return {n: {**payload, **extra, "weight": shares[n]}
                for n, payload in super().configure(call, sites, model).items()}

    def _round_sites(self, sites: Sequence[str]) -> list[str]:
        return sorted(self.job.server_name(n) for n in sites)

    def add(self, updates: Sequence[EncryptedVector]) -> EncryptedVector:
        """Add the sites' encrypted updates into the next global model."""
        return self.context.aggregate(list(updates))

    # -- results --------------------------------------------------------------------------------
    def accept(self, call: int, sites: Sequence[str], outcomes: Sequence[CallOutcome]) -> None:
        """Decode each returned ciphertext or part once (:meth:`Strategy.accept`); under a roster,
        pre-check each part alone: one that every site would refuse counts as its site's failure,
        named with the rule (its masks are then recovered)."""
        super().accept(call, sites, outcomes)
        if not self.verifiable:
            return
        shares = self.shares(sites, self.job.sizes)
        round_sites = self._round_sites(sites)
        for o in outcomes:
            if o.status != "ok" or o.value is None:
                continue
            try:
                self.accept_part(o.value, job_id=self.job.job_id, call=call,
                                 site=self.job.server_name(o.site), round_sites=round_sites,
                                 weight=shares[o.site])
            except PrivacyError as exc:
                refuse(o, f"its part was refused: {exc}", exc)

    def next_model(self, call: int, sites: Sequence[str], ok: Sequence[CallOutcome], model: Any,
                   transport: Transport) -> NextModel:
        if not self.verifiable:
            summed = self.add([o.value for o in ok])
            return NextModel(summed, summed.length)
        signed = self._signed_round(call, sites, {o.site: o.value for o in ok}, transport)
        download = model.nbytes if isinstance(model, SignedRound) else 0
        return NextModel(signed, signed.parts[0].vector.length,
                         {"download_MB": download / 2**20, "recoveries": len(signed.recoveries)})

    def _signed_round(self, call: int, sites: Sequence[str], accepted: Mapping[str, SignedPart],
                      transport: Transport) -> SignedRound:
        """The call's accepted parts (the results :meth:`accept` let through), with every
        survivor's mask recovery when a site dropped."""
        survivors = [n for n in sites if n in accepted]
        recoveries = self._recover(call, survivors, transport) if len(survivors) < len(sites) else []
        new = SignedRound(call=call, parts=tuple(sorted(accepted.values(), key=lambda p: p.site)),
                          recoveries=tuple(sorted(recoveries, key=lambda m: m.site)))
        try:
            self.verify(new, job_id=self.job.job_id, min_sites=self.job.min_contributions)
        except PrivacyError as exc:
            raise RoundFailed(f"the round's signed parts do not verify ({exc})") from exc
        return new

    def _recover(self, call: int, survivors: list[str], transport: Transport) -> list[MaskRecovery]:
        """Ask every survivor, in parallel, to reveal its masks with the sites that dropped out."""
        names = self._round_sites(survivors)
        outcomes = transport.ask({n: {"recover": call, "survivors": names} for n in survivors})
        if failed := [o for o in outcomes if o.status != "ok"]:
            raise RoundFailed("mask recovery failed at " + "; ".join(f"{o.site}: {o.error}" for o in failed))
        try:
            return [MaskRecovery.from_dict(o.result.get("recovery")) for o in outcomes]
        except PrivacyError as exc:
            raise RoundFailed(f"a survivor sent an unreadable mask recovery ({exc})") from exc

    # -- roster checks, also used by the release -------------------------------------------------
    def accept_part(self, part: SignedPart, *, job_id: str, call: int, site: str,
                    round_sites: Sequence[str], weight: float) -> None:
        """Pre-check one returned part alone: authentic, of this call, and what ``site`` was asked for.

        Raises :class:`AggregationRefused` naming the rule, so the runner can drop that part (and
        recover its masks) instead of forwarding something every site would refuse.
        """
        assert self.roster is not None
        check_parts(self.roster, [part], job_id=job_id, call=call, basis=None, key_id=self.key_id)
        if part.site != site:
            raise AggregationRefused(f"site {site!r} returned a part of site {part.site!r}", site=site,
                                     rule="extra")
        if part.round_sites != tuple(sorted(round_sites)):
            raise AggregationRefused(f"site {site!r} signed the site set {list(part.round_sites)}, not the "
                                     f"{sorted(round_sites)} it was asked in", site=site, rule="site-set")
        if not math.isclose(part.weight, weight, rel_tol=1e-12):
            raise AggregationRefused(f"site {site!r} signed weight {part.weight}, not its share {weight}",
                                     site=site, rule="weights")

    def verify(self, signed: SignedRound, *, job_id: str, min_sites: int) -> VerifiedSum:
        """What every site will compute from ``signed``; the orchestrator's pre-check and the
        release's final model (it needs no secret key, and decrypts nothing)."""
        assert self.roster is not None
        return aggregate_round(self.context, self.roster, signed.parts, job_id=job_id, call=signed.call,
                               recoveries=signed.recoveries, min_sites=min_sites)
