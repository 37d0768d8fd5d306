"""The checks a site runs on forwarded parts and recoveries before it adds anything.

Pure checks against the roster, no HE work: each refusal is an :class:`AggregationRefused` naming
the site and the rule (listed in :mod:`privacy.secagg`).
"""

from __future__ import annotations

from collections.abc import Sequence

from privacy.errors import AggregationRefused
from privacy.roster import Roster
from privacy.secagg_messages import MaskRecovery, SignedPart


def check_parts(roster: Roster, parts: Sequence[SignedPart], *, job_id: str, call: int, basis: str | None,
                key_id: str) -> tuple[str, ...]:
    """Every part authentic, of this job and call, one per site of one shared site set; returns that set."""
    if not parts:
        raise AggregationRefused(f"no parts were forwarded for call {call} of job {job_id!r}", rule="missing")
    for part in parts:
        _check_part(roster, part, job_id=job_id, call=call, basis=basis, key_id=key_id)
    round_sites = parts[0].round_sites
    _check_site_set(roster, round_sites, parts[0].site)
    shape = (parts[0].vector.length, parts[0].vector.bound)
    seen: set[str] = set()
    for part in parts:
        if (part.vector.length, part.vector.bound) != shape:
            raise AggregationRefused(f"site {part.site!r} encrypted {part.vector.length} values at bound "
                                     f"{part.vector.bound}, site {parts[0].site!r} {shape[0]} at {shape[1]}",
                                     site=part.site, rule="metadata")
        if part.round_sites != round_sites:
            raise AggregationRefused(f"site {part.site!r} signed the site set {list(part.round_sites)} but "
                                     f"site {parts[0].site!r} signed {list(round_sites)}: the orchestrator "
                                     "told sites different sets", site=part.site, rule="site-set")
        if part.site in seen:
            raise AggregationRefused(f"two parts of site {part.site!r} for call {call}", site=part.site,
                                     rule="duplicate")
        if part.site not in round_sites:
            raise AggregationRefused(f"site {part.site!r} is not in the call's site set {list(round_sites)}",
                                     site=part.site, rule="extra")
        seen.add(part.site)
    return round_sites


def _check_part(roster: Roster, part: SignedPart, *, job_id: str, call: int, basis: str | None,
                key_id: str) -> None:
    if not isinstance(part, SignedPart):
        raise AggregationRefused(f"expected a SignedPart (got {type(part).__name__}); rebuild a received "
                                 "dict with SignedPart.from_dict", rule="malformed")
    site = part.site
    if site not in roster.names:
        raise AggregationRefused(f"site {site!r} is not on the federation's roster: its part is refused",
                                 site=site, rule="off-roster")
    if not roster.verify(site, part.signature, part.statement()):
        raise AggregationRefused(f"the signature on the part labelled {site!r} does not verify under "
                                 f"{site!r}'s roster key: forged, altered or relabelled", site=site,
                                 rule="signature")
    if part.roster != roster.fingerprint:
        raise AggregationRefused(f"site {site!r} signed its part under another roster "
                                 f"({part.roster[:8]}, not {roster.fingerprint[:8]})", site=site,
                                 rule="roster")
    if part.job_id != job_id:
        raise AggregationRefused(f"the part of site {site!r} belongs to job {part.job_id!r}, not {job_id!r}: "
                                 "replayed from another job", site=site, rule="job")
    if part.call != call:
        raise AggregationRefused(f"the part of site {site!r} belongs to call {part.call}, not {call}: "
                                 "replayed from another call", site=site, rule="call")
    _check_vector(part, key_id)
    if basis is not None and part.basis != basis:
        raise AggregationRefused(f"site {site!r} trained from another aggregate ({part.basis[:8] or 'none'}, "
                                 f"this site from {basis[:8] or 'none'}): the orchestrator showed sites "
                                 "different sums", site=site, rule="basis")


def _check_vector(part: SignedPart, key_id: str) -> None:
    vector = part.vector
    if vector.digest() != part.ciphertext:
        raise AggregationRefused(f"the ciphertext beside site {part.site!r}'s part is not the one it signed",
                                 site=part.site, rule="ciphertext")
    if vector.key_id != key_id or vector.n_parts != 1 or vector.weight_sum != part.weight:
        raise AggregationRefused(f"site {part.site!r}'s ciphertext must be one fresh part under key "
                                 f"{key_id[:8]} with the signed weight {part.weight}", site=part.site,
                                 rule="metadata")


def _check_site_set(roster: Roster, round_sites: tuple[str, ...], signer: str) -> None:
    if list(round_sites) != sorted(set(round_sites)):
        raise AggregationRefused(f"site {signer!r} signed a site set that is not sorted and distinct "
                                 f"({list(round_sites)})", site=signer, rule="site-set")
    if off := [s for s in round_sites if s not in roster.names]:
        raise AggregationRefused(f"the call's site set names {off[0]!r}, which is not on the roster",
                                 site=off[0], rule="off-roster")


def check_recoveries(roster: Roster, recoveries: Sequence[MaskRecovery], *, job_id: str, call: int,
                     round_sites: tuple[str, ...], survivors: tuple[str, ...],
                     dropped: tuple[str, ...]) -> None:
    """Missing sites need exactly one valid recovery from every survivor, for exactly this survivor set."""
    if not dropped:
        if recoveries:
            raise AggregationRefused("mask recoveries were forwarded but no site of the call is missing",
                                     site=recoveries[0].site, rule="recovery")
        return
    if not recoveries:
        raise AggregationRefused(f"the parts of {', '.join(map(repr, dropped))} are missing and no survivor "
                                 "recovered their masks", site=dropped[0], rule="missing")
    by_site: dict[str, MaskRecovery] = {}
    for rec in recoveries:
        _check_recovery(roster, rec, job_id=job_id, call=call, round_sites=round_sites, survivors=survivors,
                        dropped=dropped)
        if rec.site in by_site:
            raise AggregationRefused(f"two mask recoveries of site {rec.site!r}", site=rec.site,
                                     rule="duplicate")
        by_site[rec.site] = rec
    if absent := [s for s in survivors if s not in by_site]:
        raise AggregationRefused(f"survivor {absent[0]!r} sent no mask recovery for the dropped sites",
                                 site=absent[0], rule="recovery")


def _check_recovery(roster: Roster, rec: MaskRecovery, *, job_id: str, call: int,
                    round_sites: tuple[str, ...], survivors: tuple[str, ...],
                    dropped: tuple[str, ...]) -> None:
    if not isinstance(rec, MaskRecovery) or rec.site not in roster.names or \
            not roster.verify(rec.site, rec.signature, rec.statement()):
        name = getattr(rec, "site", None)
        raise AggregationRefused(f"the mask recovery labelled {name!r} is not signed by an on-roster site",
                                 site=name if isinstance(name, str) else None, rule="signature")
    expected = (roster.fingerprint, job_id, call, round_sites, survivors, dropped)
    if (rec.roster, rec.job_id, rec.call, rec.round_sites, rec.survivors, rec.dropped) != expected:
        raise AggregationRefused(f"the mask recovery of site {rec.site!r} is for another roster, job, call "
                                 f"or survivor set (survivors {list(rec.survivors)}, call {rec.call})",
                                 site=rec.site, rule="recovery")
    if rec.site not in survivors:
        raise AggregationRefused(f"site {rec.site!r} sent a mask recovery but has no part in the call",
                                 site=rec.site, rule="recovery")
