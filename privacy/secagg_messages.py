"""The two signed messages of verifiable secure aggregation and their one wire form.

A :class:`SignedPart` is one site's masked, encrypted update for one call; a :class:`MaskRecovery`
is a survivor's reveal of its per-call mask seeds with the sites that dropped. Each signs (Ed25519,
the site's roster key) a canonical encoding of its statement: a domain tag, then the statement's
canonical JSON (:func:`privacy.roster.canonical_json`). A part's statement binds the job id, the call
number, the site's name, its FedAvg weight, the round's site set (sorted), the roster fingerprint,
the basis (the transcript of the aggregate the update was trained from, "" for the first) and the
ciphertext's digest: :meth:`privacy.he.EncryptedVector.digest`, a SHA-256 over the ciphertext's
metadata and the SHA-256 of each ciphertext chunk's bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from privacy.errors import AggregationRefused, HEError
from privacy.he import EncryptedVector
from privacy.roster import canonical_json

PART_FORMAT = "medsyft-secagg-part/1"
RECOVERY_FORMAT = "medsyft-secagg-recovery/1"
_PART_TAG = b"medsyft/secagg/part/v1\0"
_RECOVERY_TAG = b"medsyft/secagg/recovery/v1\0"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SignedPart:
    """One site's masked, encrypted, signed update for one call of a job."""

    site: str
    job_id: str
    call: int
    weight: float
    round_sites: tuple[str, ...]
    roster: str  # the roster fingerprint
    basis: str
    ciphertext: str  # vector.digest() at signing time
    signature: bytes = field(repr=False)
    vector: EncryptedVector = field(repr=False)

    def statement(self) -> bytes:
        """The exact bytes the site signed."""
        fields = {"site": self.site, "job_id": self.job_id, "call": self.call, "weight": float(self.weight),
                  "round_sites": list(self.round_sites), "roster": self.roster, "basis": self.basis,
                  "ciphertext": self.ciphertext}
        return _PART_TAG + canonical_json(fields)

    def to_dict(self) -> dict[str, Any]:
        """Wire form: the statement's fields, the signature in hex and the vector's own wire form."""
        return {"format": PART_FORMAT, "site": self.site, "job_id": self.job_id, "call": self.call,
                "weight": float(self.weight), "round_sites": list(self.round_sites), "roster": self.roster,
                "basis": self.basis, "ciphertext": self.ciphertext, "signature": self.signature.hex(),
                "vector": self.vector.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> SignedPart:
        """Rebuild a forwarded part; :class:`AggregationRefused` (rule ``malformed``) if it is not one."""
        _check_format(d, PART_FORMAT, "part")
        site = _text(d, "site")
        try:
            vector = EncryptedVector.from_dict(d.get("vector"))
        except HEError as exc:
            raise AggregationRefused(f"the part labelled {site!r} carries no valid ciphertext ({exc})",
                                     site=site, rule="malformed") from exc
        weight = d.get("weight")
        if not (isinstance(weight, float | int) and not isinstance(weight, bool) and math.isfinite(weight)):
            raise AggregationRefused(f"the part labelled {site!r} has no numeric weight", site=site,
                                     rule="malformed")
        return cls(site=site, job_id=_text(d, "job_id"), call=_call(d), weight=float(weight),
                   round_sites=_names(d, "round_sites"), roster=_hex(d, "roster"), basis=_basis(d),
                   ciphertext=_hex(d, "ciphertext"), signature=_signature(d), vector=vector)


@dataclass(frozen=True)
class MaskRecovery:
    """A survivor's per-call mask seeds with the dropped sites, for one survivor set of one call."""

    site: str
    job_id: str
    call: int
    round_sites: tuple[str, ...]
    survivors: tuple[str, ...]
    roster: str
    seeds: dict[str, bytes] = field(repr=False)  # dropped site -> k_{site, dropped} for this call
    signature: bytes = field(repr=False)

    @property
    def dropped(self) -> tuple[str, ...]:
        """The round's sites this recovery declares dropped (sorted)."""
        return tuple(sorted(self.seeds))

    def statement(self) -> bytes:
        """The exact bytes the survivor signed (the seeds included: they are the content)."""
        fields = {"site": self.site, "job_id": self.job_id, "call": self.call,
                  "round_sites": list(self.round_sites), "survivors": list(self.survivors),
                  "roster": self.roster, "seeds": {k: v.hex() for k, v in sorted(self.seeds.items())}}
        return _RECOVERY_TAG + canonical_json(fields)

    def to_dict(self) -> dict[str, Any]:
        """Wire form (small: 32 bytes per dropped site)."""
        return {"format": RECOVERY_FORMAT, "site": self.site, "job_id": self.job_id, "call": self.call,
                "round_sites": list(self.round_sites), "survivors": list(self.survivors),
                "roster": self.roster, "seeds": {k: v.hex() for k, v in sorted(self.seeds.items())},
                "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, d: Any) -> MaskRecovery:
        """Rebuild a forwarded recovery; :class:`AggregationRefused` (rule ``malformed``) if it is not one."""
        _check_format(d, RECOVERY_FORMAT, "mask recovery")
        raw = d.get("seeds")
        if not (isinstance(raw, Mapping) and all(isinstance(k, str) and isinstance(v, str) and _HEX64.match(v)
                                                 for k, v in raw.items())):
            raise AggregationRefused("a mask recovery's seeds must map site names to 32 bytes of hex",
                                     site=d.get("site") if isinstance(d.get("site"), str) else None,
                                     rule="malformed")
        return cls(site=_text(d, "site"), job_id=_text(d, "job_id"), call=_call(d),
                   round_sites=_names(d, "round_sites"), survivors=_names(d, "survivors"),
                   roster=_hex(d, "roster"), seeds={k: bytes.fromhex(v) for k, v in raw.items()},
                   signature=_signature(d))


def statement_digest(message: SignedPart | MaskRecovery) -> str:
    """SHA-256 of a message's signed statement (what a transcript hashes)."""
    return hashlib.sha256(message.statement()).hexdigest()


def _malformed(what: str) -> AggregationRefused:
    return AggregationRefused(f"malformed secure-aggregation message: {what}", rule="malformed")


def _check_format(d: Any, expected: str, what: str) -> None:
    if not (isinstance(d, Mapping) and d.get("format") == expected):
        raise _malformed(f"expected a {what} dict with format {expected!r}")


def _text(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not (isinstance(value, str) and value):
        raise _malformed(f"{key} must be a non-empty string (got {value!r})")
    return value


def _call(d: Mapping[str, Any]) -> int:
    value = d.get("call")
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise _malformed(f"call must be an int ≥ 0 (got {value!r})")
    return value


def _names(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if not (isinstance(value, list | tuple) and all(isinstance(n, str) for n in value)):
        raise _malformed(f"{key} must be a list of site names")
    return tuple(value)


def _hex(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not (isinstance(value, str) and _HEX64.match(value)):
        raise _malformed(f"{key} must be a SHA-256 in lowercase hex (got {value!r})")
    return value


def _basis(d: Mapping[str, Any]) -> str:
    value = d.get("basis")
    if not (isinstance(value, str) and (value == "" or _HEX64.match(value))):
        raise _malformed(f"basis must be '' or a SHA-256 in lowercase hex (got {value!r})")
    return value


def _signature(d: Mapping[str, Any]) -> bytes:
    value = d.get("signature")
    if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{128}", value)):
        raise _malformed("signature must be 64 bytes of lowercase hex")
    return bytes.fromhex(value)
