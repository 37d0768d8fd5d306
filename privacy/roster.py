"""The federation's roster: who the sites are, and the keys that prove a message came from one.

The key ceremony (:func:`privacy.ceremony.init_federation`, ``medsyft keys init --site``)
gives every hospital two key pairs from the ``cryptography`` package: Ed25519 to sign its parts
of a round, X25519 to agree pairwise mask seeds with every other site (:mod:`privacy.secagg_masks`).
The roster lists, in a fixed order, each site's name and both public keys, beside the federation
id and the HE key id of the same ceremony. Its fingerprint is the SHA-256 of its canonical JSON
(without the fingerprint). Every part a site signs names the fingerprint, so sites agree on one
roster; the roster itself is trusted because every hospital gets it out of band from the ceremony
(compare the fingerprint by phone, as with an SSH host key): a file whose fingerprint does not match
its content is refused as tampered, not trusted.

Files: ``roster.json`` (public) and, per site, ``site-keys.medsyftkey`` (mode 0600: that site's
two private keys and the roster). Both are JSON with a ``format`` and a ``role``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privacy.errors import RosterError
from privacy.he_keys import MAX_PARTS

ROSTER_FILE = "roster.json"
SITE_KEYS_FILE = "site-keys.medsyftkey"
ROSTER_FORMAT = "medsyft-roster/1"
SITE_KEYS_FORMAT = "medsyft-site-keys/1"
ROLE_ROSTER = "roster"
ROLE_SITE_KEYS = "site-keys"
# The datasite name rule of domains/site/lifecycle.py (privacy/ may not import it): a kit's folder is
# named after its site, and the site's datasite keeps the same name.
SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_FIX = "copy it again from the key ceremony's output (`medsyft keys init --site ...`)"


def canonical_json(value: Any) -> bytes:
    """The one encoding that is hashed or signed: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def check_site_names(names: Sequence[str]) -> tuple[str, ...]:
    """Valid, distinct site names (case-insensitively: a kit folder per site); :class:`RosterError` if not."""
    if isinstance(names, str) or not names:
        raise RosterError("a federation needs at least one site name (--site NAME, once per hospital)")
    if len(names) > MAX_PARTS:
        raise RosterError(f"a federation has at most {MAX_PARTS} sites, the most one sum may hold "
                          f"(got {len(names)})")
    seen: dict[str, str] = {}
    for name in names:
        if not (isinstance(name, str) and SITE_NAME_RE.match(name)):
            raise RosterError(f"invalid site name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit (the hospital's datasite name)")
        if name.lower() in seen:
            raise RosterError(f"site name {name!r} is given twice (as {seen[name.lower()]!r}); "
                              "every hospital needs its own name")
        seen[name.lower()] = name
    return tuple(names)


@dataclass(frozen=True)
class SiteEntry:
    """One roster line: a site's name and its raw 32-byte Ed25519 and X25519 public keys."""

    name: str
    ed25519: bytes
    x25519: bytes

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "ed25519": self.ed25519.hex(), "x25519": self.x25519.hex()}


@dataclass(frozen=True)
class Roster:
    """The federation's public roster; build with :func:`new_roster` or :func:`load_roster`."""

    federation_id: str
    he_key_id: str
    sites: tuple[SiteEntry, ...]
    fingerprint: str

    @property
    def names(self) -> tuple[str, ...]:
        """Site names in roster order (the order that decides each pairwise mask's sign)."""
        return tuple(s.name for s in self.sites)

    def index(self, name: str) -> int:
        """The site's position in the roster; :class:`RosterError` for a name it does not list."""
        for i, entry in enumerate(self.sites):
            if entry.name == name:
                return i
        raise RosterError(f"site {name!r} is not in the roster of federation {self.federation_id[:8]} "
                          f"(sites: {', '.join(self.names)})")

    def entry(self, name: str) -> SiteEntry:
        """The roster line of ``name``."""
        return self.sites[self.index(name)]

    def verify(self, name: str, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is ``name``'s Ed25519 signature of ``message`` (False, never raises)."""
        try:
            key = Ed25519PublicKey.from_public_bytes(self.entry(name).ed25519)
            key.verify(signature, message)
        except (InvalidSignature, RosterError, ValueError, TypeError):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The roster.json content, fingerprint included."""
        return {**_body(self.federation_id, self.he_key_id, self.sites), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<roster>") -> Roster:
        """Parse and check a roster: format, role, fields, distinct names, keys and fingerprint."""
        if not isinstance(d, Mapping) or d.get("role") != ROLE_ROSTER:
            role = d.get("role") if isinstance(d, Mapping) else None
            raise RosterError(f"{source}: not a federation roster (role {role!r}); use {ROSTER_FILE} "
                              "from the key ceremony")
        if d.get("format") != ROSTER_FORMAT:
            raise RosterError(f"{source}: unsupported roster format {d.get('format')!r} "
                              f"(this medsyft reads {ROSTER_FORMAT}); {_FIX}")
        ids = (d.get("federation_id"), d.get("he_key_id"))
        if not all(isinstance(v, str) and _HEX32.match(v) for v in ids):
            raise RosterError(f"{source}: corrupt roster (federation_id and he_key_id must be 32 hex "
                              f"characters); {_FIX}")
        sites = _entries(d.get("sites"), source)
        roster = new_roster(federation_id=str(ids[0]), he_key_id=str(ids[1]), sites=sites)
        if d.get("fingerprint") != roster.fingerprint:
            raise RosterError(f"{source}: the roster's fingerprint does not match its content "
                              f"(tampered or damaged); {_FIX}")
        return roster


def new_roster(*, federation_id: str, he_key_id: str, sites: Sequence[SiteEntry]) -> Roster:
    """A roster with its fingerprint computed (names checked, order kept)."""
    check_site_names([s.name for s in sites])
    fingerprint = hashlib.sha256(canonical_json(_body(federation_id, he_key_id, sites))).hexdigest()
    return Roster(federation_id=federation_id, he_key_id=he_key_id, sites=tuple(sites),
                  fingerprint=fingerprint)


def _body(federation_id: str, he_key_id: str, sites: Sequence[SiteEntry]) -> dict[str, Any]:
    return {"format": ROSTER_FORMAT, "role": ROLE_ROSTER, "federation_id": federation_id,
            "he_key_id": he_key_id, "sites": [s.to_dict() for s in sites]}


def _entries(raw: Any, source: str) -> list[SiteEntry]:
    if not isinstance(raw, list) or not raw:
        raise RosterError(f"{source}: corrupt roster (no list of sites); {_FIX}")
    entries = []
    for item in raw:
        if not (isinstance(item, Mapping) and set(item) == {"name", "ed25519", "x25519"}):
            raise RosterError(f"{source}: corrupt roster (a site needs exactly name, ed25519, x25519); "
                              f"{_FIX}")
        try:
            keys = bytes.fromhex(item["ed25519"]), bytes.fromhex(item["x25519"])
        except (TypeError, ValueError):
            keys = b"", b""
        if not all(len(k) == 32 for k in keys):
            raise RosterError(f"{source}: corrupt roster (site {item['name']!r} has a public key that is "
                              f"not 32 bytes of hex); {_FIX}")
        entries.append(SiteEntry(name=item["name"], ed25519=keys[0], x25519=keys[1]))
    return entries


@dataclass(frozen=True)
class SiteKit:
    """One hospital's signing and key-agreement keys, with the roster; build with :func:`load_site_kit`."""

    site: str
    roster: Roster
    _signing: Ed25519PrivateKey = field(repr=False, compare=False)
    _agreement: X25519PrivateKey = field(repr=False, compare=False)

    def sign(self, message: bytes) -> bytes:
        """This site's Ed25519 signature of ``message``."""
        return self._signing.sign(message)

    def shared_secret(self, other: str) -> bytes:
        """X25519 with ``other``'s roster key: the same 32 bytes on both sides, known to no third site."""
        if other == self.site:
            raise RosterError(f"site {other!r} has no pairwise secret with itself")
        peer = X25519PublicKey.from_public_bytes(self.roster.entry(other).x25519)
        return self._agreement.exchange(peer)

    def to_dict(self) -> dict[str, Any]:
        """The site-keys file content (private keys in raw hex: keep it 0600)."""
        return {"format": SITE_KEYS_FORMAT, "role": ROLE_SITE_KEYS, "site": self.site,
                "ed25519_private": _raw_private(self._signing).hex(),
                "x25519_private": _raw_private(self._agreement).hex(), "roster": self.roster.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<site keys>") -> SiteKit:
        """Parse a site-keys file and check it belongs to its roster."""
        if not isinstance(d, Mapping) or d.get("role") != ROLE_SITE_KEYS:
            role = d.get("role") if isinstance(d, Mapping) else None
            raise RosterError(f"{source}: not a site-keys file (role {role!r}); give the hospital's "
                              f"{SITE_KEYS_FILE} from the key ceremony")
        if d.get("format") != SITE_KEYS_FORMAT:
            raise RosterError(f"{source}: unsupported site-keys format {d.get('format')!r}; {_FIX}")
        roster = Roster.from_dict(d.get("roster"), source=f"{source} (its roster)")
        site = d.get("site")
        if not isinstance(site, str) or site not in roster.names:
            raise RosterError(f"{source}: site {site!r} is not in the roster it carries "
                              f"({', '.join(roster.names)}); {_FIX}")
        return cls(site=site, roster=roster, **_private_keys(d, roster.entry(site), source))


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_keys(d: Mapping[str, Any], entry: SiteEntry, source: str) -> dict[str, Any]:
    try:
        signing = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(d["ed25519_private"]))
        agreement = X25519PrivateKey.from_private_bytes(bytes.fromhex(d["x25519_private"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RosterError(f"{source}: corrupt site-keys file (private keys unreadable); {_FIX}") from exc
    if (_raw_public(signing), _raw_public(agreement)) != (entry.ed25519, entry.x25519):
        raise RosterError(f"{source}: its private keys do not match site {entry.name!r}'s public keys in "
                          f"the roster; {_FIX}")
    return {"_signing": signing, "_agreement": agreement}


def site_entry(name: str, signing: Ed25519PrivateKey, agreement: X25519PrivateKey) -> SiteEntry:
    """The roster line of a site holding these two private keys."""
    return SiteEntry(name=name, ed25519=_raw_public(signing), x25519=_raw_public(agreement))


def load_roster(path: str | os.PathLike[str]) -> Roster:
    """Read and check ``roster.json``."""
    return Roster.from_dict(_read_json(Path(path), ROSTER_FILE), source=str(path))


def load_site_kit(path: str | os.PathLike[str]) -> SiteKit:
    """Read and check a hospital's ``site-keys.medsyftkey`` or its kit folder; warns if others can read it."""
    where = Path(path)
    if where.is_dir():
        where = where / SITE_KEYS_FILE
    kit = SiteKit.from_dict(_read_json(where, SITE_KEYS_FILE), source=str(where))
    if where.stat().st_mode & 0o077:
        warnings.warn(f"{where} holds private keys but others may read it; chmod 600 {where}", stacklevel=2)
    return kit


def _read_json(path: Path, expected: str) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise RosterError(f"{path}: no such file; give the path to {expected} from the key ceremony") from exc
    except OSError as exc:
        raise RosterError(f"{path}: cannot read it ({exc.strerror}); check the path and its permissions"
                          ) from exc
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RosterError(f"{path}: not {expected} (not JSON: an HE key file or another file?); "
                          f"give the path to {expected} from the key ceremony") from exc

