"""One key ceremony for a federation: the HE keys, the roster and every hospital's kit.

``init_federation(out, ["st-mary", "st-john"])`` writes::

    out/                                  (0700)
      orchestrator-public.medsyftkey      for the orchestrator (HE parameters, no key)
      roster.json                         for everyone (public keys, fingerprint)
      hospital-secret.medsyftkey          the shared HE secret key (also in every kit)
      st-mary/                            (0700) st-mary's kit: copy it to st-mary only
        site-keys.medsyftkey              (0600) its Ed25519 + X25519 private keys and the roster
        hospital-secret.medsyftkey        (0600) the HE secret key
      st-john/ ...

Nothing is written unless every name is valid and distinct and, without ``overwrite``, no file
it would write exists already.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privacy.durable import atomic_write
from privacy.errors import RosterError
from privacy.he_keys import (
    PUBLIC_FILE,
    SECRET_FILE,
    _make_private_dir,
    init_keys,
)
from privacy.roster import (
    ROSTER_FILE,
    SITE_KEYS_FILE,
    Roster,
    SiteKit,
    canonical_json,
    check_site_names,
    new_roster,
    site_entry,
)

_TOP_LEVEL = (ROSTER_FILE, SECRET_FILE, PUBLIC_FILE)


@dataclass(frozen=True)
class Federation:
    """What a ceremony wrote: the roster and where each file is."""

    roster: Roster
    roster_path: Path
    secret_path: Path
    public_path: Path
    kits: dict[str, Path] = field(default_factory=dict)  # site name -> its kit folder


def init_federation(out_dir: str | os.PathLike[str], sites: list[str], *,
                    overwrite: bool = False) -> Federation:
    """Run the ceremony for ``sites`` (roster order = this order); :class:`RosterError` if refused."""
    out = Path(out_dir)
    names = check_site_names(sites)
    if clash := [n for n in names if n in _TOP_LEVEL]:
        raise RosterError(f"site name {clash[0]!r} is the name of a ceremony file; choose another name")
    if not overwrite and (existing := _existing(out, names)):
        raise RosterError(f"{existing} already exists; keep it, or pass --force (overwrite=True) to make "
                          "a new federation (parts signed under the old roster are then refused)")
    secret_path, public_path, he_key_id = init_keys(out, overwrite=overwrite)
    keys = {n: (Ed25519PrivateKey.generate(), X25519PrivateKey.generate()) for n in names}
    roster = new_roster(federation_id=secrets.token_hex(16), he_key_id=he_key_id,
                        sites=[site_entry(n, *keys[n]) for n in names])
    roster_path = out / ROSTER_FILE
    atomic_write(roster_path, canonical_json(roster.to_dict()) + b"\n", mode=0o644)
    secret = secret_path.read_bytes()
    kits = {}
    for name in names:
        kit = SiteKit(site=name, roster=roster, _signing=keys[name][0], _agreement=keys[name][1])
        kits[name] = _write_kit(out / name, kit, secret)
    return Federation(roster=roster, roster_path=roster_path, secret_path=secret_path,
                      public_path=public_path, kits=kits)


def _existing(out: Path, names: tuple[str, ...]) -> Path | None:
    paths = [out / n for n in _TOP_LEVEL]
    paths += [out / n / f for n in names for f in (SITE_KEYS_FILE, SECRET_FILE)]
    return next((p for p in paths if p.exists()), None)


def _write_kit(folder: Path, kit: SiteKit, he_secret: bytes) -> Path:
    _make_private_dir(folder)
    atomic_write(folder / SITE_KEYS_FILE, canonical_json(kit.to_dict()) + b"\n", mode=0o600)
    atomic_write(folder / SECRET_FILE, he_secret, mode=0o600)
    return folder
