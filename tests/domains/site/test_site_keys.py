"""``medsyft domain deploy --site-keys``: a hospital's kit is checked before anything starts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from support import run_cli

from domains.errors import SiteKeysError
from domains.site import he_key, site_keys
from domains.site.datadir import DataDir
from privacy.ceremony import Federation, init_federation
from privacy.he_keys import SECRET_FILE
from privacy.roster import SITE_KEYS_FILE


@pytest.fixture(scope="module")
def feds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Federation, Federation]:
    """Two ceremonies that both name st-mary: their kits must never be mixed."""
    root = tmp_path_factory.mktemp("ceremonies")
    return (init_federation(root / "a", ["st-mary", "general"]),
            init_federation(root / "b", ["st-mary", "general"]))


def _deploy(data_dir: Path, *extra: str) -> tuple[int, str]:
    result = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "st-mary", "--port", "1",
                     *extra)
    return result.code, result.err


def test_deploy_refuses_a_bad_kit_before_starting(feds: tuple[Federation, Federation],
                                                  tmp_path: Path) -> None:
    a, b = feds
    not_a_kit = tmp_path / "notes.txt"
    not_a_kit.write_text("not json")
    cases = [
        (["--site-keys", str(not_a_kit)], "not site-keys.medsyftkey"),
        (["--site-keys", str(tmp_path / "missing.medsyftkey")], "no such file"),
        (["--site-keys", str(a.kits["st-mary"] / SECRET_FILE)], "not site-keys.medsyftkey"),  # the HE key
        (["--site-keys", str(a.kits["general"] / SITE_KEYS_FILE)], "kit of site 'general'"),
        (["--he-key", str(a.kits["st-mary"] / SECRET_FILE), "--site-keys",
          str(b.kits["st-mary"] / SITE_KEYS_FILE)], "another key ceremony"),
    ]
    for args, needle in cases:
        data_dir = tmp_path / "site"
        code, err = _deploy(data_dir, *args)
        assert code == 2 and err.count("\n") == 1 and needle in err, (args, err)
        assert not data_dir.exists()  # nothing was created or started


def test_deploy_refuses_a_kit_of_another_ceremony_than_the_installed_he_key(
        feds: tuple[Federation, Federation], tmp_path: Path) -> None:
    a, b = feds
    data_dir = DataDir(tmp_path / "site")
    data_dir.path.mkdir()
    he_key.install(data_dir, a.kits["st-mary"] / SECRET_FILE)  # installed at an earlier deploy
    before = sorted(p.name for p in data_dir.path.iterdir())
    code, err = _deploy(data_dir.path, "--site-keys", str(b.kits["st-mary"]))  # a kit folder works too
    assert code == 2 and err.count("\n") == 1 and "another key ceremony" in err
    assert sorted(p.name for p in data_dir.path.iterdir()) == before  # nothing stored changed


def test_installed_kit_is_private_and_loading_checks_roster_and_site(
        feds: tuple[Federation, Federation], tmp_path: Path) -> None:
    a, b = feds
    data_dir = DataDir(tmp_path / "site")
    data_dir.path.mkdir()
    kit = site_keys.install(data_dir, a.kits["st-mary"] / SITE_KEYS_FILE)
    installed = data_dir.file(site_keys.SITE_KEYS_FILE)
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert installed.read_bytes() == (a.kits["st-mary"] / SITE_KEYS_FILE).read_bytes()
    assert site_keys.roster_fingerprint(data_dir) == kit.roster.fingerprint == a.roster.fingerprint
    assert site_keys.load(data_dir, roster=a.roster.fingerprint, site="st-mary").site == "st-mary"
    with pytest.raises(SiteKeysError, match="belong to roster"):
        site_keys.load(data_dir, roster=b.roster.fingerprint)
    with pytest.raises(SiteKeysError, match="not of this datasite"):
        site_keys.load(data_dir, site="general")
    with pytest.raises(SiteKeysError, match="holds no site keys"):
        site_keys.load(DataDir(tmp_path / "empty"))
