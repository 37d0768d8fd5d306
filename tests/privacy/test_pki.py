"""The federation CA (privacy/pki.py): what it issues, and what a hospital's deploy refuses."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest

from privacy import pki
from privacy.errors import PKIError


@pytest.fixture(scope="module")
def ca() -> tuple[object, object]:
    return pki.new_ca("test federation", days=800)


def _write(tmp: Path, key: object, cert: object, stem: str) -> tuple[Path, Path]:
    pki.write_key(tmp / f"{stem}.key", key)  # type: ignore[arg-type]
    pki.write_cert(tmp / f"{stem}.crt", cert)  # type: ignore[arg-type]
    return tmp / f"{stem}.crt", tmp / f"{stem}.key"


def test_a_site_certificate_names_its_host_and_serves_and_authenticates(ca, tmp_path: Path) -> None:
    key, cert = pki.issue(*ca, common_name="st-mary", hosts=("10.0.0.2", "st-mary.example"),
                          server=True, client=True, days=365)
    meta = pki.info(cert)
    assert meta.common_name == "st-mary" and set(meta.hosts) == {"10.0.0.2", "st-mary.example"}
    assert meta.server and meta.client and 364 < meta.days_left() <= 365.01
    crt, k = _write(tmp_path, key, cert, "server")
    assert stat.S_IMODE(k.stat().st_mode) == 0o600 and stat.S_IMODE(crt.stat().st_mode) == 0o644
    pki.write_cert(tmp_path / "ca.crt", ca[1])
    assert pki.check_pair(crt, k, tmp_path / "ca.crt").sha256 == meta.sha256
    # the standard library accepts the chain: a server context loads it, a client context trusts the CA
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(crt, k)
    ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))


def test_a_scientist_certificate_cannot_serve(ca, tmp_path: Path) -> None:
    key, cert = pki.issue(*ca, common_name="ana@uni.example", server=False, client=True, days=30)
    assert not pki.info(cert).server and pki.info(cert).client and pki.info(cert).hosts == ()
    crt, k = _write(tmp_path, key, cert, "client")
    with pytest.raises(PKIError, match="not a server certificate"):
        pki.check_pair(crt, k)


def test_deploy_checks_refuse_an_expired_a_foreign_and_a_mismatched_certificate(ca, tmp_path: Path) -> None:
    pki.write_cert(tmp_path / "ca.crt", ca[1])
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    key, cert = pki.issue(*ca, common_name="s", hosts=("127.0.0.1",), server=True, client=True, days=2,
                          not_before=old)
    crt, k = _write(tmp_path, key, cert, "expired")
    with pytest.raises(PKIError, match="expired on"):
        pki.check_pair(crt, k, tmp_path / "ca.crt")
    other_ca = pki.new_ca("another federation", days=400)
    key2, cert2 = pki.issue(*other_ca, common_name="s", hosts=("127.0.0.1",), server=True, client=True,
                            days=30)
    crt2, k2 = _write(tmp_path, key2, cert2, "foreign")
    with pytest.raises(PKIError, match="not issued by the federation CA"):
        pki.check_pair(crt2, k2, tmp_path / "ca.crt")
    with pytest.raises(PKIError, match="is not the key of"):
        pki.check_pair(crt, k2)
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(PKIError, match="not a PEM certificate"):
        pki.load_cert(tmp_path / "junk.crt")


def test_lifetimes_and_hosts_are_checked(ca) -> None:
    with pytest.raises(PKIError, match=r"1\.\.3650 days"):
        pki.issue(*ca, common_name="s", hosts=("a.example",), server=True, client=True, days=0)
    with pytest.raises(PKIError, match="CA expires"):
        pki.issue(*ca, common_name="s", hosts=("a.example",), server=True, client=True, days=2000)
    with pytest.raises(PKIError, match="needs a host"):
        pki.issue(*ca, common_name="s", server=True, client=True, days=10)
    assert pki.check_host("St-Mary.Example") == "st-mary.example" and pki.check_host("::1") == "::1"
    for bad in ("", "under_score.example", "-x.example", "a b"):
        with pytest.raises(PKIError, match="neither an IP address nor a DNS name"):
            pki.check_host(bad)
