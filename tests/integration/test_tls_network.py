"""A datasite deployed with its federation kit, over real HTTPS with mutual TLS on 127.0.0.1.

One datasite process serves the whole module. The scientist's tools verify it against the
federation CA and present the scientist's client certificate; every way the connection can be
misconfigured (another CA, a host name the certificate does not name, ``http://`` to HTTPS, no
client certificate, one from another federation, an expired certificate) is one line and exit 2,
and none of them gets as far as reading the password. The hospital's own admin commands work
against the TLS datasite, and plain HTTP on a network address is refused unless asked for.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import free_port, run_cli

from privacy import pki

pytestmark = pytest.mark.slow

SCIENTIST = "ana@uni.example"
_UNSET = "MEDSYFT_TEST_TLS_PASSWORD_UNSET"  # never set: a run that reads the password fails on it


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tls")
    port = free_port()
    made = run_cli("federation", "init", "--out", str(root / "fed"), "--site", f"st-mary=127.0.0.1:{port}",
                   "--scientist", SCIENTIST)
    assert made.code == 0, made.err
    data_dir = root / "st-mary"
    up = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "st-mary", "--port", str(port),
                 "--kit", str(root / "fed" / "st-mary"), "--detach")
    assert up.code == 0, up.err
    assert f"https://127.0.0.1:{port}" in up.out and "mutual TLS" in up.out
    try:
        yield {"root": root, "fed": root / "fed", "dir": data_dir, "port": port}
    finally:
        run_cli("domain", "stop", "--data-dir", str(data_dir))


def _job(fed: dict[str, Any], name: str, *, url: str | None = None, password_env: str = _UNSET,
         tls: dict[str, str] | None = None) -> Path:
    """A job file beside the scientist kit (its paths are relative to it), changed as asked."""
    sci = fed["fed"] / "scientist"
    files = {"ca_file": "ca.crt", "client_cert": "client.crt", "client_key": "client.key"}
    files.update(tls or {})
    table = "".join(f'{k} = "{v}"\n' for k, v in files.items() if v)
    url = url or f"https://127.0.0.1:{fed['port']}"
    run_dir = fed["root"] / "runs" / name
    text = (f'[job]\ndataset = "chest-xray"\nrounds = 1\nrun_dir = "{run_dir}"\n'
            f"[tls]\n{table}"
            f'[[sites]]\nname = "st-mary"\nurl = "{url}"\n'
            f'email = "{SCIENTIST}"\npassword_env = "{password_env}"\n'
            "[privacy]\ndp = false\nhe = false\n")
    path = sci / f"{name}.toml"
    path.write_text(text)
    return path


def _train(job: Path) -> Any:
    return run_cli("train", "--config", str(job), "--approval-timeout", "5", "--quiet")


def test_the_hospitals_admin_commands_work_against_its_tls_datasite(fed: dict[str, Any]) -> None:
    d = str(fed["dir"])
    status = run_cli("domain", "status", "--data-dir", d)
    assert status.code == 0, status.err
    assert "HTTPS, mutual TLS, certificate st-mary for 127.0.0.1" in status.out and "days left" in status.out
    published = run_cli("domain", "publish", "--data-dir", d, "--name", "chest-xray",
                        "--count", "80")
    assert published.code == 0, published.err
    added = run_cli("domain", "add-scientist", "--data-dir", d, "--email", SCIENTIST)
    assert added.code == 0, added.err
    fed["password"] = added.out.strip().rsplit(" ", 1)[-1]
    for command in (("requests",), ("budget",), ("audit",), ("audit", "--verify"), ("policy",)):
        result = run_cli("domain", *command, "--data-dir", d)
        assert result.code == 0, (command, result.err)
    assert "chest-xray" in run_cli("domain", "status", "--data-dir", d).out
    assert "st-mary" in (fed["dir"] / "datasite.log").read_text()  # and the log says what it serves
    assert "mutual TLS" in (fed["dir"] / "datasite.log").read_text()


def test_a_scientist_with_the_kit_logs_in_and_sees_the_mock(fed: dict[str, Any]) -> None:
    if "password" not in fed:
        pytest.skip("needs the account of the admin test")
    from orchestrator.config import load_config
    from orchestrator.site import Site

    os.environ["MEDSYFT_TEST_TLS_PASSWORD"] = fed["password"]
    try:
        job = _job(fed, "ok", password_env="MEDSYFT_TEST_TLS_PASSWORD")
        config = load_config(job)
        site = Site.connect(config.sites[0], job.parent)
    finally:
        del os.environ["MEDSYFT_TEST_TLS_PASSWORD"]
    assert site.server_name == "st-mary" and site.healthy()
    assert site.datasets()["dataset"].tolist() == ["chest-xray"]
    fetches = []
    fetch_api = site.client._fetch_api
    site.client._fetch_api = lambda credentials: fetches.append(1) or fetch_api(credentials)
    images, labels = site.mock("chest-xray")
    assert len(images) == len(labels) == 80
    assert site.asset("chest-xray", "labels").name == "labels"
    assert fetches == []  # PySyft's client.datasets[name] would re-fetch the whole API each time


def test_status_shows_each_site_as_the_scientist_sees_it_over_mutual_tls(fed: dict[str, Any]) -> None:
    """``medsyft status``: the live site and its certificate, versions, dataset and this scientist's
    requests; a second site whose datasite is not running is a row that says so."""
    if "password" not in fed:
        pytest.skip("needs the account of the admin test")
    from orchestrator import FederatedJob, load_config

    job = _job(fed, "status", password_env="MEDSYFT_TEST_TLS_PASSWORD")
    dead = free_port()
    job.write_text(job.read_text() + f'[[sites]]\nname = "st-jude"\nurl = "https://127.0.0.1:{dead}"\n'
                   f'email = "{SCIENTIST}"\npassword_env = "{_UNSET}"\n')
    os.environ["MEDSYFT_TEST_TLS_PASSWORD"] = fed["password"]
    try:
        before = run_cli("status", "--config", str(job))
        lone = job.parent / "status-one.toml"
        lone.write_text(job.read_text().split("[[sites]]\nname = \"st-jude\"")[0])
        FederatedJob(load_config(lone)).submit()
        after = run_cli("status", "--config", str(lone))
        watched = run_cli("status", "--config", str(lone), "--watch", "0.2", "--times", "2")
    finally:
        del os.environ["MEDSYFT_TEST_TLS_PASSWORD"]
    assert before.code == 1, before.err  # a site is down: the exit code says so
    lines = {line.split()[0]: line for line in before.out.splitlines() if line.startswith("st-")}
    assert "does not answer" in lines["st-jude"] and "False" in lines["st-jude"]
    assert "True" in lines["st-mary"] and "0.1.0" in lines["st-mary"] and "0.9.5" in lines["st-mary"]
    assert "job: not submitted yet" in before.out
    from orchestrator.status import StatusProbe

    os.environ["MEDSYFT_TEST_TLS_PASSWORD"] = fed["password"]
    try:
        row = StatusProbe(load_config(lone)).table().iloc[0]
    finally:
        del os.environ["MEDSYFT_TEST_TLS_PASSWORD"]
    assert 360 < row["cert_days"] <= 366 and row["images"] == 80 and row["pending"] >= 1  # a 1-year kit
    assert row["state"] == "submitted" and row["error"] is None
    from orchestrator.dashboard.health import probe
    from orchestrator.dashboard.server import addresses_from_config

    live, down = (probe(a) for a in addresses_from_config(load_config(job)))  # the dashboard's probe
    assert live["up"] and live["latency_ms"] is not None  # over mutual TLS, with the kit's files
    assert not down["up"] and "does not answer" in down["error"]
    assert after.code == 0 and "waiting for approval" in after.out
    assert watched.code == 0 and watched.out.count("\x1b[H\x1b[2J") == 2


def test_an_account_signs_in_only_with_the_certificate_issued_for_it(fed: dict[str, Any]) -> None:
    """Mutual TLS authenticates the node; the datasite also binds each login to its own certificate.
    Ana's password with Bob's certificate, Bob's with Ana's, and another hospital's certificate are
    refused before any account is looked up (an unknown account gets the same answer)."""
    if "password" not in fed:
        pytest.skip("needs the account of the admin test")
    from orchestrator.config import load_config
    from orchestrator.errors import SiteUnavailable
    from orchestrator.site import Site

    bob = "bob@uni.example"
    added = run_cli("domain", "add-scientist", "--data-dir", str(fed["dir"]), "--email", bob)
    assert added.code == 0, added.err
    bob_password = added.out.strip().rsplit(" ", 1)[-1]
    assert run_cli("federation", "add-scientist", "--out", str(fed["fed"]), bob).code == 0
    assert run_cli("federation", "add-site", "--out", str(fed["fed"]), "st-jude=127.0.0.1").code == 0
    kits = {"ana": fed["fed"] / "scientist", "bob": fed["fed"] / "scientist-bob_uni.example",
            "st-jude": fed["fed"] / "st-jude"}
    passwords = {SCIENTIST: fed["password"], bob: bob_password, "nobody@uni.example": "x" * 20}

    def connect(email: str, kit: str) -> Any:
        folder = kits[kit]
        files = ({"client_cert": str(folder / "server.crt"), "client_key": str(folder / "server.key")}
                 if kit == "st-jude" else
                 {"client_cert": str(folder / "client.crt"), "client_key": str(folder / "client.key")})
        job = _job(fed, f"bind-{kit}-{email.split('@')[0]}", password_env="MEDSYFT_TEST_TLS_PASSWORD",
                   tls=files)
        job.write_text(job.read_text().replace(f'email = "{SCIENTIST}"', f'email = "{email}"'))
        os.environ["MEDSYFT_TEST_TLS_PASSWORD"] = passwords[email]
        try:
            config = load_config(job)
            return Site.connect(config.sites[0], job.parent)
        finally:
            del os.environ["MEDSYFT_TEST_TLS_PASSWORD"]

    assert connect(bob, "bob").datasets()["dataset"].tolist() == ["chest-xray"]  # his own kit
    assert connect(SCIENTIST, "ana").server_name == "st-mary"
    wrong = ((bob, "ana", SCIENTIST), (SCIENTIST, "bob", bob), (SCIENTIST, "st-jude", "st-jude"),
             ("nobody@uni.example", "ana", SCIENTIST))
    for email, kit, presented in wrong:
        with pytest.raises(SiteUnavailable) as refused:
            connect(email, kit)
        message = str(refused.value)
        assert "binds accounts to client certificates" in message and f"presents {presented!r}'s" in message
        assert "\n" not in message
    assert "logins bound to client certificates" in (fed["dir"] / "datasite.log").read_text()


@pytest.mark.parametrize(("case", "needle"), [
    ("wrong-ca", "not issued by the CA in"),
    ("host-mismatch", "is for 127.0.0.1, not localhost"),
    ("http-to-https", "serves HTTPS"),
    ("no-client-cert", "asks for a client certificate"),
    ("foreign-client-cert", "refused the client certificate"),
])
def test_a_misconfigured_connection_is_one_line_before_any_password(fed: dict[str, Any], case: str,
                                                                    needle: str) -> None:
    port = fed["port"]
    other = fed["root"] / f"other-{case}"
    assert run_cli("federation", "init", "--out", str(other), "--site", f"st-mary=127.0.0.1:{port}",
                   "--scientist", SCIENTIST).code == 0
    job = {
        "wrong-ca": lambda: _job(fed, case, tls={"ca_file": str(other / "scientist" / "ca.crt")}),
        "host-mismatch": lambda: _job(fed, case, url=f"https://localhost:{port}"),
        "http-to-https": lambda: _job(fed, case, url=f"http://127.0.0.1:{port}"),
        "no-client-cert": lambda: _job(fed, case, tls={"client_cert": "", "client_key": ""}),
        "foreign-client-cert": lambda: _job(fed, case, tls={
            "client_cert": str(other / "scientist" / "client.crt"),
            "client_key": str(other / "scientist" / "client.key")}),
    }[case]()
    result = _train(job)
    assert result.code == 2, (result.out, result.err)
    assert result.err.count("\n") == 1 and "site 'st-mary'" in result.err and needle in result.err, result.err
    assert _UNSET not in result.err  # refused before the password (an unset variable) was read


def test_without_a_client_certificate_the_login_cannot_be_reached(fed: dict[str, Any]) -> None:
    """Mutual TLS: the datasite ends the connection before any HTTP request reaches PySyft."""
    url = f"https://127.0.0.1:{fed['port']}/api/v2/login"
    trusting = ssl.create_default_context(cafile=str(fed["fed"] / "ca" / "ca.crt"))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.request.URLError)):
        urllib.request.urlopen(urllib.request.Request(url, data=b"x"), context=trusting, timeout=10)
    other = fed["root"] / "other-raw"
    run_cli("federation", "init", "--out", str(other), "--site", "x=127.0.0.1", "--scientist", SCIENTIST)
    foreign = ssl.create_default_context(cafile=str(fed["fed"] / "ca" / "ca.crt"))
    foreign.load_cert_chain(other / "scientist" / "client.crt", other / "scientist" / "client.key")
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.request.URLError)):
        urllib.request.urlopen(urllib.request.Request(url, data=b"x"), context=foreign, timeout=10)
    member = ssl.create_default_context(cafile=str(fed["fed"] / "ca" / "ca.crt"))
    member.load_cert_chain(fed["fed"] / "scientist" / "client.crt", fed["fed"] / "scientist" / "client.key")
    with urllib.request.urlopen(f"https://127.0.0.1:{fed['port']}/api/v2/metadata", context=member,
                                timeout=10) as resp:
        assert b"st-mary" in resp.read()  # the same request with the federation's certificate works


def test_plain_http_on_a_network_address_is_refused_unless_asked_for(tmp_path: Path) -> None:
    data_dir = tmp_path / "open"
    port = free_port()
    refused = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "open", "--host", "0.0.0.0",
                      "--port", str(port), "--detach")
    assert refused.code == 2 and refused.err.count("\n") == 1 and "--insecure-http" in refused.err
    assert not data_dir.exists()
    allowed = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "open", "--host", "0.0.0.0",
                      "--port", str(port), "--detach", "--insecure-http")
    try:
        assert allowed.code == 0, allowed.err
        assert "WARNING: plain HTTP" in allowed.out
        assert "INSECURE plain HTTP" in run_cli("domain", "status", "--data-dir", str(data_dir)).out
        assert "WARNING: plain HTTP" in (data_dir / "datasite.log").read_text()
    finally:
        run_cli("domain", "stop", "--data-dir", str(data_dir))


def test_an_expired_certificate_is_named_by_the_scientist_and_refused_at_restart(tmp_path: Path) -> None:
    """A certificate that expires while its datasite runs (issued here to last 25 s)."""
    port = free_port()
    out = tmp_path / "fed"
    assert run_cli("federation", "init", "--out", str(out), "--site", f"s=127.0.0.1:{port}",
                   "--scientist", SCIENTIST).code == 0
    ca_key, ca_cert = pki.load_key(out / "ca" / "ca.key"), pki.load_cert(out / "ca" / "ca.crt")
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=25)
    key, cert = pki.issue(ca_key, ca_cert, common_name="s", hosts=("127.0.0.1",), server=True, client=True,
                          days=1, not_before=ends - dt.timedelta(days=1, minutes=5))
    pki.write_key(out / "s" / "server.key", key)
    pki.write_cert(out / "s" / "server.crt", cert)
    data_dir = tmp_path / "s"
    up = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "s", "--port", str(port),
                 "--kit", str(out / "s"), "--detach")
    assert up.code == 0, up.err
    try:
        time.sleep(max(0.0, (ends - dt.datetime.now(dt.UTC)).total_seconds() + 1))
        job = out / "scientist" / "expired.toml"
        job.write_text(f'[job]\ndataset = "d"\nrun_dir = "{tmp_path / "run"}"\n'
                       '[tls]\nca_file = "ca.crt"\nclient_cert = "client.crt"\nclient_key = "client.key"\n'
                       f'[[sites]]\nname = "s"\nurl = "https://127.0.0.1:{port}"\nemail = "{SCIENTIST}"\n'
                       f'password_env = "{_UNSET}"\n[privacy]\ndp = false\nhe = false\n')
        result = _train(job)
        assert result.code == 2 and result.err.count("\n") == 1, result.err
        assert "site 's'" in result.err and "expired" in result.err and "--renew" in result.err
    finally:
        run_cli("domain", "stop", "--data-dir", str(data_dir))
    again = run_cli("domain", "deploy", "--data-dir", str(data_dir), "--port", str(port), "--detach")
    assert again.code == 2 and again.err.count("\n") == 1 and "expired on" in again.err
    assert (data_dir / "tls" / "server.crt").read_bytes() == (out / "s" / "server.crt").read_bytes()


def test_a_stop_drops_an_idle_tls_connection_instead_of_waiting_on_it(tmp_path: Path) -> None:
    """A client's idle keep-alive connection (a notebook's session) never sends the TLS close_notify
    that a close waits for; the stop aborts it rather than sitting out the graceful-shutdown timeout."""
    import http.client

    port = free_port()
    out = tmp_path / "fed"
    assert run_cli("federation", "init", "--out", str(out), "--site", f"s=127.0.0.1:{port}",
                   "--scientist", SCIENTIST).code == 0
    data_dir = tmp_path / "s"
    assert run_cli("domain", "deploy", "--data-dir", str(data_dir), "--name", "s", "--port", str(port),
                   "--kit", str(out / "s"), "--detach").code == 0
    member = ssl.create_default_context(cafile=str(out / "ca" / "ca.crt"))
    member.load_cert_chain(out / "scientist" / "client.crt", out / "scientist" / "client.key")
    idle = http.client.HTTPSConnection("127.0.0.1", port, context=member, timeout=30)
    try:
        idle.request("GET", "/api/v2/metadata")
        response = idle.getresponse()
        assert response.status == 200 and b'"s"' in response.read()  # kept alive, now idle
        stopped = run_cli("domain", "stop", "--data-dir", str(data_dir))
        assert stopped.code == 0, stopped.err
        log = (data_dir / "datasite.log").read_text()
        assert "graceful shutdown exceeded" not in log, log
        with pytest.raises((ConnectionError, ssl.SSLError, http.client.HTTPException, OSError)):
            idle.request("GET", "/api/v2/metadata")  # the connection is gone, not half-open
            idle.getresponse()
    finally:
        idle.close()
        run_cli("domain", "stop", "--data-dir", str(data_dir))
