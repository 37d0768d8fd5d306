"""The hospital's share of the federation's roster: installing and loading its site-keys kit.

``medsyft domain deploy --site-keys FILE`` takes the ``site-keys.medsyftkey`` that
``medsyft keys init --site NAME`` made for this hospital. Before anything starts it checks that
the kit is one (:func:`privacy.roster.load_site_kit`), that its site is this datasite's name, and
that its roster's HE key is the HE key this datasite holds (or is given with ``--he-key``): a kit
of another site or another ceremony would sign parts nobody can verify. It then copies the kit
into the data directory (``site-keys.medsyftkey``, 0600), as :mod:`domains.site.he_key` does for the
HE key, so a restart keeps it. Approved code loads it once per datasite process to verify and sign
the parts of verifiable secure aggregation (docs/privacy.md); a job naming another roster is
refused before any data is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from domains.errors import SiteKeysError
from domains.site import he_key
from domains.site.datadir import DataDir
from privacy.durable import atomic_write
from privacy.errors import RosterError

if TYPE_CHECKING:
    from privacy.roster import SiteKit

SITE_KEYS_FILE = "site-keys.medsyftkey"
_CEREMONY = "the hospital-secret.medsyftkey and site-keys.medsyftkey of the same `medsyft keys init`"

_CACHE: dict[str, SiteKit] = {}


def check(source: str | os.PathLike[str], *, site: str | None, he_key_id: str | None) -> SiteKit:
    """Validate a kit for a datasite named *site* holding HE key *he_key_id* (None: not checked)."""
    from privacy.roster import load_site_kit

    try:
        kit = load_site_kit(source)
    except RosterError as exc:
        raise SiteKeysError(str(exc)) from exc
    if site is not None and kit.site != site:
        raise SiteKeysError(f"{source} is the kit of site {kit.site!r}, but this datasite is {site!r}; "
                            f"pass {site}/{SITE_KEYS_FILE} from the key ceremony's output")
    if he_key_id is not None and kit.roster.he_key_id != he_key_id:
        raise SiteKeysError(f"{source} comes from another key ceremony: its roster's HE key is "
                            f"{kit.roster.he_key_id[:8]}, this datasite's is {he_key_id[:8]}; deploy with "
                            f"{_CEREMONY}")
    return kit


def check_deploy(data_dir: DataDir, source: str | os.PathLike[str], *, name: str | None,
                 he_key_id: str | None) -> SiteKit:
    """:func:`check` against what the deploy will leave: the given or stored name, the given or
    installed HE key."""
    if name is None and data_dir.is_initialized:
        name = data_dir.read_config().name
    if he_key_id is None:
        he_key_id = he_key.key_id(data_dir)
    return check(source, site=name, he_key_id=he_key_id)


def install(data_dir: DataDir, source: str | os.PathLike[str]) -> SiteKit:
    """Copy a checked kit into *data_dir* (0600, atomically); returns it."""
    kit = check(source, site=None, he_key_id=None)
    path = Path(source)
    raw = (path / SITE_KEYS_FILE if path.is_dir() else path).read_bytes()
    target = data_dir.file(SITE_KEYS_FILE)
    atomic_write(target, raw, mode=0o600)
    _CACHE.pop(str(target), None)
    return kit


def roster_fingerprint(data_dir: DataDir) -> str | None:
    """The installed kit's roster fingerprint, or None when this datasite holds no kit."""
    return load(data_dir).roster.fingerprint if data_dir.file(SITE_KEYS_FILE).exists() else None


def load(data_dir: DataDir, *, roster: str | None = None, site: str | None = None) -> SiteKit:
    """The datasite's kit (cached per process); *roster* and *site* check its fingerprint and name."""
    path = data_dir.file(SITE_KEYS_FILE)
    if str(path) not in _CACHE:
        if not path.exists():
            raise SiteKeysError("this datasite holds no site keys; its IT must deploy it with "
                                f"`medsyft domain deploy --site-keys NAME/{SITE_KEYS_FILE}` "
                                "(from `medsyft keys init --site NAME`)")
        _CACHE[str(path)] = check(path, site=None, he_key_id=None)
    kit = _CACHE[str(path)]
    if roster is not None and kit.roster.fingerprint != roster:
        raise SiteKeysError(f"the job names roster {roster[:12]} but this datasite's site keys belong to "
                            f"roster {kit.roster.fingerprint[:12]}; run the job with this federation's "
                            "roster.json (or deploy this datasite with that ceremony's --site-keys)")
    if site is not None and kit.site != site:
        raise SiteKeysError(f"{path} is the kit of site {kit.site!r}, not of this datasite ({site!r}); "
                            f"deploy again with --site-keys {site}/{SITE_KEYS_FILE}")
    return kit
