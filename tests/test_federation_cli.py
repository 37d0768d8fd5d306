"""``medsyft federation init | add-site | add-scientist``: the kits a federation is provisioned with."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from support import run_cli

from privacy import pki
from privacy.roster import load_roster, load_site_kit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_every_site_kit_and_the_scientist_kit(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    result = run_cli("federation", "init", "--out", str(out), "--site", "st-mary=10.0.0.2:9443",
                     "--site", "general=general.hospital.example", "--scientist", "ana@uni.example",
                     "--days", "90")
    assert result.code == 0, result.err
    ca = pki.load_cert(out / "ca" / "ca.crt")
    assert _mode(out) == 0o700 and _mode(out / "ca" / "ca.key") == 0o600
    roster = load_roster(out / "roster.json")
    assert roster.names == ("st-mary", "general") and roster.fingerprint in result.out
    for name, host in (("st-mary", "10.0.0.2"), ("general", "general.hospital.example")):
        kit = out / name
        assert _mode(kit) == 0o700
        for secret in ("server.key", "hospital-secret.medsyftkey", "site-keys.medsyftkey"):
            assert _mode(kit / secret) == 0o600
        meta = pki.check_pair(kit / "server.crt", kit / "server.key", kit / "ca.crt")
        assert meta.common_name == name and meta.hosts == (host,) and meta.server and meta.client
        assert 89 < meta.days_left() <= 90.01
        assert (kit / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
        assert load_site_kit(kit / "site-keys.medsyftkey").roster == roster
        assert "--kit" in (kit / "README.txt").read_text()
    sci = out / "scientist"
    client = pki.info(pki.load_cert(sci / "client.crt"))
    assert client.common_name == "ana@uni.example" and client.client and not client.server
    pki.verify_signed_by(pki.load_cert(sci / "client.crt"), ca, what="client.crt")
    assert _mode(sci / "client.key") == 0o600
    job = tomllib.loads((sci / "job.toml").read_text())
    assert [s["url"] for s in job["sites"]] == ["https://10.0.0.2:9443", "https://general.hospital.example:8443"]
    assert job["tls"] == {"ca_file": "ca.crt", "client_cert": "client.crt", "client_key": "client.key"}
    assert all((sci / f).is_file() for f in ("ca.crt", "roster.json", "orchestrator-public.medsyftkey"))
    from orchestrator.config import load_config
    config = load_config(sci / "job.toml")  # the skeleton is a valid job file as it stands
    assert config.sites[0].tls(sci).ca_file == sci / "ca.crt"


def test_init_refuses_an_existing_folder_and_bad_sites_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    assert run_cli("federation", "init", "--out", str(out), "--site", "a=127.0.0.1",
                   "--scientist", "x@y.example").code == 0
    before = (out / "ca" / "ca.key").read_bytes()
    again = run_cli("federation", "init", "--out", str(out), "--site", "a=127.0.0.1",
                    "--scientist", "x@y.example")
    assert again.code == 2 and again.err.count("\n") == 1 and "add-site" in again.err
    assert (out / "ca" / "ca.key").read_bytes() == before
    for site, needle in (("a", "NAME=HOST"), ("a=bad_host", "neither an IP"),
                         ("a=h.example:99999", "1..65535"), ("ca=h.example", "kit folder")):
        bad = run_cli("federation", "init", "--out", str(tmp_path / "new"), "--site", site,
                      "--scientist", "x@y.example")
        assert bad.code == 2 and bad.err.count("\n") == 1 and needle in bad.err, bad.err
        assert not (tmp_path / "new").exists()
    bad = run_cli("federation", "init", "--out", str(tmp_path / "new"), "--site", "a=h.example",
                  "--scientist", "not-an-email")
    assert bad.code == 2 and "e-mail" in bad.err and not (tmp_path / "new").exists()


def test_add_site_grows_the_roster_and_renew_reissues_a_certificate(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    assert run_cli("federation", "init", "--out", str(out), "--site", "a=127.0.0.1:9001",
                   "--scientist", "x@y.example").code == 0
    old_roster = load_roster(out / "roster.json")
    old_a = load_site_kit(out / "a" / "site-keys.medsyftkey")
    added = run_cli("federation", "add-site", "--out", str(out), "b=127.0.0.2:9002")
    assert added.code == 0, added.err
    roster = load_roster(out / "roster.json")
    assert roster.names == ("a", "b") and roster.federation_id == old_roster.federation_id
    assert roster.he_key_id == old_roster.he_key_id
    a = load_site_kit(out / "a" / "site-keys.medsyftkey")  # a keeps its keys, with the new roster
    assert a.roster == roster and a.sign(b"m") != b"" and roster.entry("a") == old_roster.entry("a")
    assert a.shared_secret("b") == load_site_kit(out / "b" / "site-keys.medsyftkey").shared_secret("a")
    assert old_a.roster != roster
    he_secret = "hospital-secret.medsyftkey"
    assert (out / "b" / he_secret).read_bytes() == (out / "a" / he_secret).read_bytes()
    assert pki.info(pki.load_cert(out / "b" / "server.crt")).hosts == ("127.0.0.2",)
    job = tomllib.loads((out / "scientist" / "job.toml").read_text())
    assert [s["name"] for s in job["sites"]] == ["a", "b"]
    assert load_roster(out / "scientist" / "roster.json") == roster
    twice = run_cli("federation", "add-site", "--out", str(out), "b=127.0.0.2:9002")
    assert twice.code == 2 and "--renew" in twice.err
    before = pki.info(pki.load_cert(out / "a" / "server.crt")).sha256
    renewed = run_cli("federation", "add-site", "--out", str(out), "a=a.hospital.example:9001", "--renew")
    assert renewed.code == 0, renewed.err
    after = pki.info(pki.load_cert(out / "a" / "server.crt"))
    assert after.sha256 != before and after.hosts == ("a.hospital.example",)
    assert load_roster(out / "roster.json") == roster  # a renewal does not touch the roster
    sci = run_cli("federation", "add-scientist", "--out", str(out), "bo@uni.example")
    assert sci.code == 0, sci.err
    bo = pki.info(pki.load_cert(out / "scientist-bo_uni.example" / "client.crt"))
    assert bo.common_name == "bo@uni.example"
    nowhere = run_cli("federation", "add-site", "--out", str(tmp_path / "none"), "c=127.0.0.3")
    assert nowhere.code == 2 and "not a federation folder" in nowhere.err
