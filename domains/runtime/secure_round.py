"""One call of a roster job at a datasite: verify and add the previous call's parts, sign our own.

Under a job whose ``he.roster`` names the federation's roster, the orchestrator adds nothing. Call
r's payload carries the signed parts of call r−1 (none for call 1) and any mask recoveries, the
sorted datasite names asked in call r (``round_sites``, training calls) and this site's FedAvg
share (``weight``). The site, before it decrypts anything or reads any private image:

1. checks that its installed kit belongs to the job's roster and HE key, and that the round's
   site set names it, lies in the approved roster and holds at least ``min_contributions`` sites;
2. remembers which parts it was shown, then checks every part and recovery and adds them
   (:func:`privacy.secagg.aggregate_round`, with its own part's basis and name when it took part
   in call r−1), and decrypts only that sum (:func:`privacy.secagg.decrypt_round`): the global
   model. A refusal is an :class:`~privacy.errors.AggregationRefused` naming the rule and site.

After training it returns its own masked, signed part for call r (:func:`privacy.secagg.make_part`,
basis: the transcript of the sum it trained from). At the final call it keeps the verified sum as
the final model. A recovery (``{"recover": c, "survivors": [...]}``) reads no private data and takes
no call number: the site reveals its per-call seeds with the dropped sites, once per call and
survivor set (:func:`privacy.secagg.recover_masks`). What it must remember is in
:mod:`domains.runtime.secagg_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from domains.errors import SiteKeysError
from domains.runtime.errors import TrainingError
from domains.runtime.secagg_state import SecAggState
from domains.shared.codec import split_part
from domains.shared.spec import JobSpec
from domains.site import he_key, site_keys
from domains.site.datadir import DataDir
from privacy.errors import AggregationRefused

if TYPE_CHECKING:
    from privacy.he import HEContext
    from privacy.roster import SiteKit
    from privacy.secagg import VerifiedSum
    from privacy.secagg_messages import MaskRecovery, SignedPart


@dataclass
class SecureRound:
    """Everything one call checked before it started; :meth:`open` refuses bad input."""

    spec: JobSpec
    call: int
    site: str
    kit: SiteKit
    context: HEContext
    state: SecAggState
    parts: list[SignedPart]
    recoveries: list[MaskRecovery]
    round_sites: tuple[str, ...] | None  # None at the final call, which trains nothing
    verified: VerifiedSum | None = None

    @classmethod
    def open(cls, spec: JobSpec, call: int, payload: dict[str, Any], data_dir: DataDir, *,
             site: str) -> SecureRound:
        """Check the kit, the site set and the messages' form; nothing is added or decrypted yet."""
        kit, context = _keys(spec, data_dir, site)
        if payload.get("weights") is not None:
            raise AggregationRefused("this job's global model is the previous call's signed parts; a "
                                     "ciphertext in payload['weights'] is a sum no site signed and is "
                                     "refused", rule="malformed")
        shown, recoveries = _messages(payload)
        if call == 1 and (shown or recoveries):
            raise AggregationRefused("call 1 trains the initial model: it takes no parts or recoveries",
                                     rule="call")
        round_sites = _round_sites(spec, payload, site) if call <= spec.rounds else None
        return cls(spec, call, site, kit, context, SecAggState(data_dir, spec.job_id), shown, recoveries,
                   round_sites)

    def global_model(self) -> np.ndarray | None:
        """The verified, decrypted sum of call r−1's parts (None for call 1)."""
        from privacy.secagg import aggregate_round, decrypt_round

        if self.call == 1:
            return None
        previous = self.call - 1
        with self.state.lock:
            self.state.record_shown(previous, self.parts)
            own = self.state.own_part(previous)
        verified = aggregate_round(self.context, self.kit.roster, self.parts, job_id=self.spec.job_id,
                                   call=previous, recoveries=self.recoveries,
                                   min_sites=self.spec.min_contributions,
                                   basis=own.basis if own else None, site=self.site if own else None)
        mean = decrypt_round(self.context, verified)
        self.state.record_transcript(previous, verified.transcript)
        self.verified = verified
        return mean

    def sign(self, vector: np.ndarray, *, weight: float) -> dict[str, Any]:
        """This site's masked, signed part of this call, as the call returns it."""
        from privacy.secagg import make_part

        assert self.round_sites is not None, "only a training call signs a part"
        bound = self.spec.he.weight_bound if self.spec.he else 0.0
        part = make_part(self.kit, self.context, vector, weight=weight, bound=bound,
                         job_id=self.spec.job_id, call=self.call, round_sites=self.round_sites,
                         basis=self.verified.transcript if self.verified else "")
        self.state.keep_own(part)
        header, ciphertext = split_part(part)  # the call log stores the ciphertext as any encrypted update
        return {"weights": ciphertext, "part": header,
                "clamped": int(np.count_nonzero(np.abs(vector) > bound))}


def recover(spec: JobSpec, payload: dict[str, Any], data_dir: DataDir, *, site: str) -> dict[str, Any]:
    """A survivor's signed mask seeds with the dropped sites of one call (reads no private data)."""
    from privacy.errors import RecoveryRefused
    from privacy.secagg import recover_masks

    kit, _ = _keys(spec, data_dir, site)
    call, survivors = payload.get("recover"), payload.get("survivors")
    if not (isinstance(call, int) and 1 <= call <= spec.rounds):
        raise TrainingError(f"payload['recover'] must be a training call of this job, 1..{spec.rounds} "
                            f"(got {call!r})")
    if not (isinstance(survivors, list) and all(isinstance(s, str) for s in survivors)):
        raise TrainingError("payload['survivors'] must list the datasite names whose parts arrived")
    state = SecAggState(data_dir, spec.job_id)
    with state.lock:
        own = state.own_part(call)
        if own is None:
            raise RecoveryRefused(f"this site signed no part for call {call} of job {spec.job_id}: it has "
                                  "no masks of that call to reveal")
        recovery = recover_masks(kit, own, survivors=survivors, seen_parts=state.shown(call),
                                 issued=state.issued(), min_sites=spec.min_contributions)
        state.record_issued(recovery)
    return {"step": "recover", "call": call, "recovery": recovery.to_dict()}


def _keys(spec: JobSpec, data_dir: DataDir, site: str) -> tuple[SiteKit, HEContext]:
    """The kit of the job's roster and the HE key of the roster's ceremony, or a refusal."""
    if spec.he is None or not spec.he.roster:
        raise TrainingError(f"job {spec.job_id} names no roster: it has no verifiable secure aggregation")
    kit = site_keys.load(data_dir, roster=spec.he.roster, site=site)
    if kit.roster.he_key_id != spec.he.key_id:
        raise SiteKeysError(f"job {spec.job_id} names HE key {spec.he.key_id[:8]} but its roster belongs to "
                            f"HE key {kit.roster.he_key_id[:8]}; submit it again with this federation's "
                            "keys")
    return kit, he_key.load(data_dir, expect=spec.he.key_id)


def _messages(payload: dict[str, Any]) -> tuple[list[SignedPart], list[MaskRecovery]]:
    from privacy.secagg_messages import MaskRecovery, SignedPart

    raw_parts, raw_recoveries = payload.get("parts", []), payload.get("recoveries", [])
    if not (isinstance(raw_parts, list | tuple) and isinstance(raw_recoveries, list | tuple)):
        raise AggregationRefused("payload['parts'] and payload['recoveries'] must be lists",
                                 rule="malformed")
    return [SignedPart.from_dict(p) for p in raw_parts], [MaskRecovery.from_dict(r) for r in raw_recoveries]


def _round_sites(spec: JobSpec, payload: dict[str, Any], site: str) -> tuple[str, ...]:
    """The call's site set: sorted, distinct, on the job's roster, with this site, large enough."""
    raw = payload.get("round_sites")
    if not (isinstance(raw, list | tuple) and all(isinstance(s, str) for s in raw)
            and list(raw) == sorted(set(raw))):
        raise TrainingError(f"payload['round_sites'] must be the sorted, distinct datasite names asked in "
                            f"call {payload.get('call')} (got {raw!r})")
    if site not in raw or (off := [s for s in raw if s not in spec.sites]):
        missing = f"names {off[0]!r}, which is not on the job's roster" if site in raw else f"omits {site!r}"
        raise TrainingError(f"payload['round_sites'] {list(raw)} {missing}")
    if len(raw) < spec.min_contributions:
        raise AggregationRefused(f"call {payload.get('call')} asks {len(raw)} site(s), fewer than the "
                                 f"{spec.min_contributions} every sum of this job must hold: its parts "
                                 "could never be added", site=site, rule="minimum")
    return tuple(raw)
