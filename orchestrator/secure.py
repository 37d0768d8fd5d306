"""Encrypted aggregation: a strategy wrapper under which the orchestrator never sees a model.

As in Flower, privacy wraps a strategy rather than subclassing it:
:class:`SecureAggregation` keeps the wrapped strategy's site selection and quorum, and
replaces its aggregation. Each site encrypts its model already multiplied by its FedAvg share
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.strategy import FedAvg, Strategy
from privacy.errors import AggregationRefused
from privacy.he import EncryptedVector, HEContext
from privacy.roster import Roster
from privacy.secagg import VerifiedSum, aggregate_round
from privacy.secagg_messages import MaskRecovery, SignedPart
from privacy.secagg_verify import check_parts


@dataclass(frozen=True)
class SignedRound:
    """A roster job's global model after call ``call``: the sites' signed parts and recoveries."""

    call: int
    parts: tuple[SignedPart, ...]
    recoveries: tuple[MaskRecovery, ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        """The datasite names whose parts it holds (the survivors of the call)."""
        return tuple(p.site for p in self.parts)

    @property
    def nbytes(self) -> int:
        """What one site downloads to verify it: every part's ciphertext."""
        return sum(p.vector.nbytes for p in self.parts)

    def payload(self) -> dict[str, Any]:
        """The next call's ``parts`` and ``recoveries``, exactly as the sites signed them."""
        return {"parts": [p.to_dict() for p in self.parts],
                "recoveries": [r.to_dict() for r in self.recoveries]}


class SecureAggregation:
    """Wraps a FedAvg strategy; aggregation by adding ciphertexts, or by forwarding signed parts."""

    def __init__(self, strategy: Strategy, context: HEContext, *, roster: Roster | None = None) -> None:
        if not isinstance(strategy, FedAvg):
            raise TypeError("encrypted aggregation can only compute a weighted mean: wrap a FedAvg strategy")
        if roster is not None and roster.he_key_id != context.key_id:
            raise ValueError(f"the roster belongs to HE key {roster.he_key_id[:8]}, the context is "
                             f"{context.key_id[:8]}")
        self.strategy = strategy
        self.context = context
        self.roster = roster

    @property
    def min_sites(self) -> int:
        return self.strategy.min_sites

    @property
    def key_id(self) -> str:
        return self.context.key_id

    @property
    def verifiable(self) -> bool:
        """Whether the sites verify and add signed parts themselves (a roster job)."""
        return self.roster is not None

    def select(self, round_number: int, sites: Sequence[str]) -> list[str]:
        return self.strategy.select(round_number, sites)

    @staticmethod
    def shares(names: Sequence[str], sizes: Mapping[str, int]) -> dict[str, float]:
        """Each asked site's FedAvg weight; they sum to 1, so encrypted sums cannot wrap."""
        total = sum(sizes[n] for n in names)
        return {n: sizes[n] / total for n in names}

    def aggregate(self, updates: Sequence[Mapping[str, Any]]) -> EncryptedVector:
        """Add the sites' encrypted updates (their ``to_dict`` form) into the next global model."""
        return self.context.aggregate([EncryptedVector.from_dict(u) for u in updates])

    # -- roster jobs ------------------------------------------------------------------------
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
