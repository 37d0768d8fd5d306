"""``medsyft keys init`` and ``deploy --he-key``: what a user types, and the one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

from support import run_cli


def test_keys_init_writes_a_secret_and_a_keyless_public_file(tmp_path: Path) -> None:
    out = run_cli("keys", "init", "--out", str(tmp_path / "keys"))
    assert out.code == 0 and "for every hospital" in out.out and "no secret key" in out.out
    secret = tmp_path / "keys" / "hospital-secret.medsyftkey"
    public = tmp_path / "keys" / "orchestrator-public.medsyftkey"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert public.stat().st_size < 1000 < secret.stat().st_size
    before = secret.read_bytes()
    again = run_cli("keys", "init", "--out", str(tmp_path / "keys"))
    assert again.code == 2 and again.err.count("\n") == 1 and "--force" in again.err
    assert secret.read_bytes() == before  # the federation's key is not replaced by accident
    assert run_cli("keys", "init", "--out", str(tmp_path / "keys"), "--force").code == 0


def test_deploy_refuses_a_bad_he_key_before_starting(tmp_path: Path) -> None:
    run_cli("keys", "init", "--out", str(tmp_path / "keys"))
    data_dir = tmp_path / "site"
    for key, needle in ((tmp_path / "keys" / "orchestrator-public.medsyftkey", "holds no secret key"),
                        (tmp_path / "missing.key", "missing.key")):
        result = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "s", "--port", "1",
                         "--he-key", str(key))
        assert result.code == 2 and result.err.count("\n") == 1 and needle in result.err
        assert not data_dir.exists()  # nothing was created or started


def test_keys_init_with_sites_writes_the_roster_and_a_kit_per_site(tmp_path: Path) -> None:
    from privacy.roster import load_roster, load_site_kit

    out = run_cli("keys", "init", "--out", str(tmp_path / "keys"), "--site", "st-mary", "--site", "general")
    assert out.code == 0, out.err
    keys = tmp_path / "keys"
    roster = load_roster(keys / "roster.json")
    assert roster.names == ("st-mary", "general") and roster.fingerprint in out.out
    assert stat.S_IMODE((keys / "roster.json").stat().st_mode) == 0o644
    for name in roster.names:
        kit = keys / name
        assert f"to hospital {name} only" in out.out and str(kit) in out.out
        assert stat.S_IMODE(kit.stat().st_mode) == 0o700
        for file in ("site-keys.medsyftkey", "hospital-secret.medsyftkey"):
            assert stat.S_IMODE((kit / file).stat().st_mode) == 0o600
        assert load_site_kit(kit / "site-keys.medsyftkey").roster == roster
    assert "roster.json" in out.out and "orchestrator-public.medsyftkey" in out.out
    before = (keys / "st-mary" / "site-keys.medsyftkey").read_bytes()
    again = run_cli("keys", "init", "--out", str(keys), "--site", "st-mary", "--site", "general")
    assert again.code == 2 and again.err.count("\n") == 1 and "--force" in again.err
    assert (keys / "st-mary" / "site-keys.medsyftkey").read_bytes() == before
    forced = run_cli("keys", "init", "--out", str(keys), "--site", "st-mary", "--site", "general", "--force")
    assert forced.code == 0 and load_roster(keys / "roster.json").fingerprint != roster.fingerprint


def test_keys_init_refuses_bad_site_names_before_writing(tmp_path: Path) -> None:
    for sites, needle in ((["a", "a"], "given twice"), (["a", "../b"], "invalid site name")):
        args = [arg for site in sites for arg in ("--site", site)]
        result = run_cli("keys", "init", "--out", str(tmp_path / "keys"), *args)
        assert result.code == 2 and result.err.count("\n") == 1 and needle in result.err
        assert not (tmp_path / "keys").exists()

