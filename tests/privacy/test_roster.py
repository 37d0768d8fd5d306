"""The key ceremony's roster and site kits: what is written, with which modes, and what loading refuses."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from privacy.ceremony import Federation, init_federation
from privacy.errors import RosterError
from privacy.he import load_context
from privacy.he_keys import PUBLIC_FILE, SECRET_FILE
from privacy.roster import ROSTER_FILE, SITE_KEYS_FILE, load_roster, load_site_kit

SITES = ["st-mary", "general", "st-john"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return init_federation(tmp_path_factory.mktemp("roster") / "keys", SITES)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ceremony_writes_roster_kits_and_he_files_with_modes(fed: Federation) -> None:
    out = fed.roster_path.parent
    assert _mode(out) == 0o700 and _mode(fed.roster_path) == 0o644
    assert {p.name for p in out.iterdir()} == {ROSTER_FILE, SECRET_FILE, PUBLIC_FILE, *SITES}
    for name in SITES:
        kit_dir = fed.kits[name]
        assert kit_dir == out / name and _mode(kit_dir) == 0o700
        assert {p.name for p in kit_dir.iterdir()} == {SITE_KEYS_FILE, SECRET_FILE}
        assert _mode(kit_dir / SITE_KEYS_FILE) == 0o600 and _mode(kit_dir / SECRET_FILE) == 0o600
        assert (kit_dir / SECRET_FILE).read_bytes() == fed.secret_path.read_bytes()  # one ceremony


def test_roster_is_public_and_names_every_site_and_the_he_key(fed: Federation) -> None:
    roster = load_roster(fed.roster_path)
    assert roster == fed.roster and roster.names == tuple(SITES)  # the order given is the roster order
    assert roster.he_key_id == load_context(fed.public_path).key_id
    raw = json.loads(fed.roster_path.read_text())
    assert raw["fingerprint"] == roster.fingerprint and len(raw["federation_id"]) == 32
    assert "private" not in fed.roster_path.read_text()


def test_every_kit_carries_the_roster_and_its_own_keys(fed: Federation) -> None:
    kits = {name: load_site_kit(fed.kits[name] / SITE_KEYS_FILE) for name in SITES}
    for name, kit in kits.items():
        assert kit.site == name and kit.roster == fed.roster
        signature = kit.sign(b"hello")
        assert kit.roster.verify(name, signature, b"hello")
        assert not kit.roster.verify(name, signature, b"hello!")
        assert not any(kit.roster.verify(other, signature, b"hello") for other in SITES if other != name)
    a, b, c = (kits[n] for n in SITES)
    assert a.shared_secret("general") == b.shared_secret("st-mary") != a.shared_secret("st-john")
    assert c.shared_secret("general") == b.shared_secret("st-john")


def test_kit_repr_shows_no_private_key(fed: Federation) -> None:
    kit = load_site_kit(fed.kits["general"] / SITE_KEYS_FILE)
    secrets = (kit.to_dict()["ed25519_private"], kit.to_dict()["x25519_private"])
    assert not any(s in repr(kit) for s in secrets)


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ([], "at least one site"),
        (["a", "a"], "given twice"),
        (["st-mary", "St-Mary"], "given twice"),
        (["../etc"], "invalid site name"),
        (["a b"], "invalid site name"),
        (["-a"], "invalid site name"),
        ([""], "invalid site name"),
        (["roster.json"], "name of a ceremony file"),
    ],
)
def test_ceremony_refuses_bad_site_names_and_writes_nothing(tmp_path: Path, sites: list[str],
                                                            message: str) -> None:
    with pytest.raises(RosterError, match=message):
        init_federation(tmp_path / "keys", sites)
    assert not (tmp_path / "keys").exists()


def test_ceremony_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = init_federation(tmp_path / "keys", ["a", "b"])
    before = {p: p.read_bytes() for p in (tmp_path / "keys").rglob("*") if p.is_file()}
    for sites in (["a", "b"], ["b", "c"]):  # any file it would write is enough to refuse
        with pytest.raises(RosterError, match=r"already exists.*--force"):
            init_federation(tmp_path / "keys", sites)
    assert {p: p.read_bytes() for p in (tmp_path / "keys").rglob("*") if p.is_file()} == before
    second = init_federation(tmp_path / "keys", ["a", "b"], overwrite=True)
    assert second.roster.federation_id != first.roster.federation_id
    assert load_roster(second.roster_path) == second.roster


def _edit(path: Path, target: Path, change: dict[str, object], *, in_roster: bool = False) -> Path:
    data = json.loads(path.read_text())
    (data["roster"] if in_roster else data).update(change)
    target.write_text(json.dumps(data))
    target.chmod(0o600)
    return target


def test_tampered_roster_is_refused(fed: Federation, tmp_path: Path) -> None:
    roster = json.loads(fed.roster_path.read_text())
    swapped = [dict(s) for s in roster["sites"]]
    swapped[0]["ed25519"], swapped[1]["ed25519"] = swapped[1]["ed25519"], swapped[0]["ed25519"]
    with pytest.raises(RosterError, match="fingerprint does not match"):
        load_roster(_edit(fed.roster_path, tmp_path / "r.json", {"sites": swapped}))
    kit_file = fed.kits["general"] / SITE_KEYS_FILE
    with pytest.raises(RosterError, match="fingerprint does not match"):
        load_site_kit(_edit(kit_file, tmp_path / "k", {"sites": swapped}, in_roster=True))
    with pytest.raises(RosterError, match="fingerprint does not match"):
        load_roster(_edit(fed.roster_path, tmp_path / "r2.json", {"he_key_id": "0" * 32}))


def test_wrong_role_and_foreign_files_are_refused(fed: Federation) -> None:
    kit_file = fed.kits["general"] / SITE_KEYS_FILE
    with pytest.raises(RosterError, match="not a site-keys file"):
        load_site_kit(fed.roster_path)
    with pytest.raises(RosterError, match="not a federation roster"):
        load_roster(kit_file)
    with pytest.raises(RosterError, match="not JSON"):
        load_site_kit(fed.secret_path)
    with pytest.raises(RosterError, match="no such file"):
        load_roster(fed.roster_path.parent / "missing.json")


def test_site_not_in_roster_or_foreign_keys_are_refused(fed: Federation, tmp_path: Path) -> None:
    kit_file = fed.kits["general"] / SITE_KEYS_FILE
    with pytest.raises(RosterError, match="'elsewhere' is not in the roster"):
        load_site_kit(_edit(kit_file, tmp_path / "k1", {"site": "elsewhere"}))
    with pytest.raises(RosterError, match="do not match site 'st-mary'"):
        load_site_kit(_edit(kit_file, tmp_path / "k2", {"site": "st-mary"}))  # general's keys, relabelled
    with pytest.raises(RosterError, match="private keys unreadable"):
        load_site_kit(_edit(kit_file, tmp_path / "k3", {"x25519_private": "zz"}))


def test_readable_site_keys_warn(fed: Federation, tmp_path: Path) -> None:
    copy = tmp_path / SITE_KEYS_FILE
    copy.write_bytes((fed.kits["st-john"] / SITE_KEYS_FILE).read_bytes())
    os.chmod(copy, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        load_site_kit(copy)
