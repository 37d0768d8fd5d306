"""Verifiable, masked secure aggregation: each site masks, encrypts and signs; each site verifies and adds.

One call of a job, at site i of the round's site set S (fixed by the orchestrator, signed by all):

1. :func:`make_part` quantizes i's update as today (:func:`privacy.he.quantize`), adds its pairwise
   masks mod t (:mod:`privacy.secagg_masks`), encrypts the residues and signs a statement binding
   job, call, site, weight, S, the roster fingerprint, the basis and the ciphertext digest
   (:mod:`privacy.secagg_messages`). The orchestrator forwards every part to every site.
2. :func:`aggregate_round` (at each site, the next call) checks every part against the roster and
   the rules below, adds the ciphertexts and returns the sum as an :class:`EncryptedVector`; the
   site then decrypts only that (:func:`decrypt_round`). A refusal raises
   :class:`AggregationRefused` naming the site and the rule before anything is added or decrypted.
3. Dropouts: if site k's part never arrives, each survivor runs :func:`recover_masks` once for the
   call and returns its per-call seeds with k, signed and bound to (job, call, S, survivors). Sites
   then add the survivors' parts and take k's masks out (:func:`aggregate_round` ``recoveries=``).

Rules of :func:`aggregate_round` (``rule`` of the refusal): the part's site is on the roster
(``off-roster``) and its signature verifies under that site's roster key (``signature``: a forged or
altered part, or one relabelled with another site's name); it names this roster (``roster``), job
(``job``) and call (``call``: a replay), the ciphertext it carries is the one signed
(``ciphertext``) with the signed weight and this key (``metadata``), and, when the site gives its own,
the same basis (``basis``). All parts name the same site set, a sorted subset of the roster
(``site-set``); no site twice (``duplicate``), none outside the set (``extra``), every missing
site covered by a recovery from every survivor (``missing``, ``recovery``); the verifying site's own
part is among them (``self``); weights sum to at most 1 (``weights``); at least ``min_sites``
survivors, never fewer than 2 (``minimum``).

What a malicious orchestrator can still do, and what not: see docs/privacy.md, "Verifiable secure
aggregation". In short it cannot forge, relabel, replay or re-weight a part, nor tell sites different
site sets; it chooses S (within ``min_sites``) and can lie about a dropout. If it holds k's part yet
tells the survivors k dropped, the recovered seeds and k's part together let it and one colluding
hospital read k's update: survivors refuse recovery for a site whose valid part they have seen, reveal
seeds for one survivor set per call only, and the transcript in the next call's basis exposes the
lie one call later; it does not prevent it.

>>> import tempfile
>>> from privacy.ceremony import init_federation
>>> from privacy.he import load_context
>>> from privacy.roster import load_site_kit
>>> keys = tempfile.TemporaryDirectory()
>>> fed = init_federation(keys.name + "/keys", ["st-mary", "general"])
>>> kits = {name: load_site_kit(folder) for name, folder in fed.kits.items()}
>>> hospital = load_context(fed.secret_path)
>>> parts = [make_part(kits[n], hospital, np.array([0.5, -1.0]), weight=0.5, bound=4.0, job_id="job-1",
...                    call=1, round_sites=["general", "st-mary"]) for n in kits]
>>> verified = aggregate_round(hospital, fed.roster, parts, job_id="job-1", call=1)
>>> decrypt_round(hospital, verified).round(4).tolist()
[0.5, -1.0]
>>> keys.cleanup()
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from privacy.errors import AggregationRefused, RecoveryRefused, SecAggError
from privacy.he import WEIGHT_SUM_SLACK, EncryptedVector, HEContext, fedavg_tolerance, quantize
from privacy.he_keys import MAX_PARTS, PLAIN_MODULUS, is_int
from privacy.roster import Roster, SiteKit, canonical_json
from privacy.secagg_masks import call_seed, dropout_correction, site_mask
from privacy.secagg_messages import MaskRecovery, SignedPart, statement_digest
from privacy.secagg_verify import check_parts, check_recoveries

_Message = TypeVar("_Message", SignedPart, MaskRecovery)
MIN_SITES = 2  # never 1 under HE: a lone part's "sum" would be that site's update


@dataclass(frozen=True)
class VerifiedSum:
    """The verified sum of one call's parts, the dropped sites' masks removed."""

    vector: EncryptedVector  # decrypts to Σ q_i over the survivors: n_parts and weight_sum are theirs
    round_sites: tuple[str, ...]
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    transcript: str  # SHA-256 of every accepted statement: the ``basis`` of the next call's parts


def make_part(kit: SiteKit, ctx: HEContext, vector: np.ndarray, *, weight: float, bound: float, job_id: str,
              call: int, round_sites: Sequence[str], basis: str = "") -> SignedPart:
    """Quantize, mask, encrypt and sign this site's update for one call of a job."""
    sites = _check_round(kit, ctx, job_id=job_id, call=call, round_sites=round_sites)
    if not (isinstance(basis, str) and (basis == "" or re.fullmatch(r"[0-9a-f]{64}", basis))):
        raise SecAggError(f"basis must be '' (the first call) or a VerifiedSum.transcript (got {basis!r})")
    q = quantize(vector, weight=weight, bound=bound)
    mask = site_mask(kit, job_id=job_id, call=call, round_sites=sites, length=q.size)
    enc = ctx.encrypt_residues((q + mask) % PLAIN_MODULUS, weight=weight, bound=bound)
    unsigned = SignedPart(site=kit.site, job_id=job_id, call=call, weight=float(weight), round_sites=sites,
                          roster=kit.roster.fingerprint, basis=basis, ciphertext=enc.digest(),
                          signature=b"", vector=enc)
    return _signed(kit, unsigned)


def recover_masks(kit: SiteKit, own_part: SignedPart, *, survivors: Sequence[str],
                  seen_parts: Sequence[SignedPart] = (), issued: Sequence[MaskRecovery] = (),
                  min_sites: int = MIN_SITES) -> MaskRecovery:
    """Reveal this survivor's seeds with the dropped sites of ``own_part``'s call, or refuse.

    ``seen_parts`` are the parts of other sites this site has seen (any call) and ``issued`` the
    recoveries it has already signed; the runtime keeps both on disk. Refused (:class:`RecoveryRefused`)
    when a "dropped" site's valid part for this call was seen, when another survivor set of the
    same call was already recovered (two sums over different sets would reveal the difference), and
    when the request does not fit this site's own part.
    """
    survivor_set = _check_survivors(kit, own_part, survivors, min_sites)
    dropped = tuple(sorted(set(own_part.round_sites) - set(survivor_set)))
    for part in seen_parts:
        if part.site in dropped and (part.job_id, part.call) == (own_part.job_id, own_part.call) and \
                kit.roster.verify(part.site, part.signature, part.statement()):
            raise RecoveryRefused(f"site {part.site!r} did not drop: its signed part for call {part.call} of "
                                  f"job {part.job_id!r} was seen here; forward it instead of recovering")
    if previous := _previous(issued, own_part, survivor_set):
        return previous
    seeds = {k: call_seed(kit, k, job_id=own_part.job_id, call=own_part.call) for k in dropped}
    unsigned = MaskRecovery(site=kit.site, job_id=own_part.job_id, call=own_part.call,
                            round_sites=own_part.round_sites, survivors=survivor_set,
                            roster=kit.roster.fingerprint, seeds=seeds, signature=b"")
    return _signed(kit, unsigned)


def aggregate_round(ctx: HEContext, roster: Roster, parts: Sequence[SignedPart], *, job_id: str, call: int,
                    recoveries: Sequence[MaskRecovery] = (), min_sites: int = MIN_SITES,
                    basis: str | None = None, site: str | None = None) -> VerifiedSum:
    """Verify every part (and recovery) of a call, then add them and remove dropped sites' masks.

    Needs no secret key (the orchestrator may pre-check with the public context). ``basis``: the
    verifying site's own basis for this call, which every part must share; ``site``: its name, whose
    part must be among the survivors.
    """
    if not (is_int(min_sites) and MIN_SITES <= min_sites <= MAX_PARTS):
        raise SecAggError(f"min_sites must be an int in [{MIN_SITES}, {MAX_PARTS}] (got {min_sites!r}): "
                          "a sum of one part under HE is that site's update")
    round_sites = check_parts(roster, parts, job_id=job_id, call=call, basis=basis, key_id=ctx.key_id)
    survivors = tuple(sorted(p.site for p in parts))
    dropped = tuple(sorted(set(round_sites) - set(survivors)))
    check_recoveries(roster, recoveries, job_id=job_id, call=call, round_sites=round_sites,
                     survivors=survivors, dropped=dropped)
    _check_round_rules(parts, survivors, min_sites=min_sites, site=site)
    total = ctx.aggregate([p.vector for p in parts])
    if dropped:
        seeds = [(r.site, k, r.seeds[k]) for r in recoveries for k in dropped]
        total = ctx.add_residues(total, dropout_correction(roster, seeds, total.length))
    return VerifiedSum(vector=total, round_sites=round_sites, survivors=survivors, dropped=dropped,
                       transcript=_transcript(parts, recoveries))


def decrypt_round(ctx: HEContext, verified: VerifiedSum) -> np.ndarray:
    """The FedAvg mean of a verified sum (hospital key), refused if it lies outside ±(bound + tolerance).

    Honest parts cannot leave that range (:mod:`privacy.he`); seeds or masks that do not match make the
    residues uniform in Z_t, which lands outside it at almost every coordinate.
    """
    enc = verified.vector
    mean = ctx.decrypt_mean(enc)
    limit = enc.bound + fedavg_tolerance(n_parts=enc.n_parts, scale=enc.scale, weight_sum=enc.weight_sum,
                                         bound=enc.bound)
    if (outside := int(np.count_nonzero(np.abs(mean) > limit))):
        raise AggregationRefused(f"the verified sum decrypts outside ±{enc.bound} at {outside} of "
                                 f"{enc.length} values: some site's masks or recovered seeds do not match; "
                                 "the round's sum is unusable", rule="range")
    return mean


def _check_round(kit: SiteKit, ctx: HEContext, *, job_id: str, call: int,
                 round_sites: Sequence[str]) -> tuple[str, ...]:
    if not (isinstance(job_id, str) and job_id) or not (is_int(call) and call >= 0):
        raise SecAggError(f"job_id must be a non-empty string and call an int ≥ 0 (got {job_id!r}, {call!r})")
    if ctx.key_id != kit.roster.he_key_id:
        raise SecAggError(f"the HE key {ctx.key_id[:8]} is not the roster's ({kit.roster.he_key_id[:8]}); "
                          "use the hospital-secret.medsyftkey of the same ceremony as site-keys.medsyftkey")
    sites = tuple(sorted(set(round_sites)))
    if len(sites) != len(round_sites) or kit.site not in sites or len(sites) < MIN_SITES:
        raise SecAggError(f"round_sites must be ≥ {MIN_SITES} distinct sites including {kit.site!r} "
                          f"(got {list(round_sites)})")
    for name in sites:
        kit.roster.index(name)  # RosterError for an off-roster name
    return sites


def _check_survivors(kit: SiteKit, own: SignedPart, survivors: Sequence[str],
                     min_sites: int) -> tuple[str, ...]:
    if own.site != kit.site or not kit.roster.verify(kit.site, own.signature, own.statement()):
        raise RecoveryRefused(f"own_part must be this site's ({kit.site!r}) own signed part of the call")
    survivor_set = tuple(sorted(set(survivors)))
    if not (kit.site in survivor_set and set(survivor_set) < set(own.round_sites)):
        raise RecoveryRefused(f"survivors {sorted(survivors)} must include {kit.site!r} and be a strict "
                              f"subset of the call's sites {list(own.round_sites)}")
    if len(survivor_set) < max(min_sites, MIN_SITES):
        raise RecoveryRefused(f"only {len(survivor_set)} survivors of call {own.call}, below the minimum "
                              f"{max(min_sites, MIN_SITES)}: their sum would expose too few sites' updates")
    return survivor_set


def _previous(issued: Sequence[MaskRecovery], own: SignedPart,
              survivors: tuple[str, ...]) -> MaskRecovery | None:
    for old in issued:
        if (old.job_id, old.call) != (own.job_id, own.call):
            continue
        if (old.round_sites, old.survivors) == (own.round_sites, survivors):
            return old
        raise RecoveryRefused(f"masks of call {own.call} of job {own.job_id!r} were already revealed for "
                              f"survivors {list(old.survivors)}; a call's masks are revealed for one "
                              "survivor set only, since two sums over different sets reveal their difference")
    return None


def _check_round_rules(parts: Sequence[SignedPart], survivors: tuple[str, ...], *, min_sites: int,
                       site: str | None) -> None:
    if site is not None and site in parts[0].round_sites and site not in survivors:
        raise AggregationRefused(f"this site's own part ({site!r}) is not among the call's parts: the "
                                 "orchestrator dropped it", site=site, rule="self")
    if len(survivors) < min_sites:
        raise AggregationRefused(f"only {len(survivors)} parts, below the minimum of {min_sites} sites per "
                                 "sum", rule="minimum")
    weight_sum = math.fsum(p.weight for p in parts)
    if weight_sum > 1.0 + WEIGHT_SUM_SLACK:
        raise AggregationRefused(f"the signed weights sum to {weight_sum!r} > 1: the fixed-point sum could "
                                 "wrap around", rule="weights")


def _signed(kit: SiteKit, unsigned: _Message) -> _Message:
    return dataclasses.replace(unsigned, signature=kit.sign(unsigned.statement()))


def _transcript(parts: Sequence[SignedPart], recoveries: Sequence[MaskRecovery]) -> str:
    body = {"parts": sorted(map(statement_digest, parts)),
            "recoveries": sorted(map(statement_digest, recoveries))}
    return hashlib.sha256(canonical_json(body)).hexdigest()
