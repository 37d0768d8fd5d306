"""The federation's certificate authority: TLS certificates for datasites, scientists and admin tools.

``medsyft federation init`` (:mod:`medsyft.federation`) makes one CA per federation and issues
from it, the way NVIDIA FLARE's provisioning hands each site a startup kit:

- a **site certificate** per hospital: subject CN = the site's name, subject alternative name =
  the host the scientist dials (a DNS name or an IP address), extended key usage serverAuth *and*
  clientAuth. The datasite serves HTTPS with it, and its own admin tools present it as a client
  certificate when the datasite asks for one (mutual TLS);
- a **scientist certificate** per data scientist: CN = the e-mail address, clientAuth only, so it
  can never pass as a datasite.

Both sides trust this module: hospitals check their kit with it before deploying, scientists'
tools name its errors. Keys are ECDSA P-256 (fast to make and to handshake; 128-bit security);
certificates are signed with SHA-256. A key is written unencrypted with mode 0600, as web servers
read theirs; the folder it lives in is the secret (docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privacy.durable import atomic_write
from privacy.errors import PKIError

DEFAULT_DAYS = 365
CA_DAYS_MARGIN = 365  # the CA outlives the certificates it issues by a year, so kits can be renewed
ORGANIZATION = "medsyft federation"
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says, in the terms a hospital's IT checks."""

    common_name: str
    hosts: tuple[str, ...]       # subject alternative names (DNS names and IP addresses)
    not_before: dt.datetime
    not_after: dt.datetime
    server: bool                 # extended key usage serverAuth
    client: bool                 # extended key usage clientAuth
    sha256: str                  # fingerprint of the DER encoding, as `openssl x509 -fingerprint`

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400.0


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(name: str, *, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may issue end-entity certificates only (path length 0)."""
    _check_days(days)
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, common_name: str,
          hosts: tuple[str, ...] = (), server: bool, client: bool, days: int,
          not_before: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and its certificate, signed by the CA.

    *hosts* become the subject alternative names (a server certificate needs at least one);
    *not_before* is for tests that need a certificate that has already expired.
    """
    _check_days(days)
    if server and not hosts:
        raise PKIError(f"a server certificate for {common_name!r} needs a host name or IP address")
    key = new_key()
    start = not_before or dt.datetime.now(dt.UTC) - _BACKDATE
    end = start + _BACKDATE + dt.timedelta(days=days)
    if end > ca_cert.not_valid_after_utc:
        raise PKIError(f"the federation CA expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}, before a "
                       f"{days}-day certificate would; issue a shorter one (--days) or make a new federation")
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                              (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=True,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]),
                                        critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _check_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise PKIError(f"a certificate's lifetime must be 1..3650 days (got {days!r})")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def check_host(host: str) -> str:
    """*host* if it can be a certificate's subject alternative name, else :class:`PKIError`."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(
            0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            and not label.startswith("-") and not label.endswith("-") for label in labels):
        raise PKIError(f"{host!r} is neither an IP address nor a DNS name; give the host the scientist "
                       "dials, e.g. st-mary.hospital.example or 10.0.0.2")
    return host.lower()


# -- files -----------------------------------------------------------------------------------------
def write_key(path: str | os.PathLike[str], key: ec.EllipticCurvePrivateKey) -> None:
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)


def write_cert(path: str | os.PathLike[str], cert: x509.Certificate) -> None:
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def load_cert(path: str | os.PathLike[str]) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise PKIError(f"cannot read certificate {path} ({exc.strerror}); check the path") from exc
    except ValueError as exc:
        raise PKIError(f"{path} is not a PEM certificate; give the .crt file from the federation kit"
                       ) from exc


def load_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise PKIError(f"cannot read key {path} ({exc.strerror}); check the path") from exc
    except (ValueError, TypeError) as exc:
        raise PKIError(f"{path} is not an unencrypted PEM private key; give the .key file from the "
                       "federation kit") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} holds a {type(key).__name__}, not the P-256 key of a federation kit")
    return key


def info(cert: x509.Certificate) -> CertInfo:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple([*names.get_values_for_type(x509.DNSName),
                       *(str(ip) for ip in names.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        hosts = ()
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(common_name=str(cns[0].value) if cns else "", hosts=hosts,
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    server=ExtendedKeyUsageOID.SERVER_AUTH in usages,
                    client=ExtendedKeyUsageOID.CLIENT_AUTH in usages,
                    sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest())


def check_pair(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
               ca_path: str | os.PathLike[str] | None = None, *, server: bool = True,
               now: dt.datetime | None = None) -> CertInfo:
    """Check a certificate before a datasite serves with it: the key is its key, it is in date,
    it is for a server, and (given *ca_path*) the CA signed it. :class:`PKIError` names the problem."""
    cert, key = load_cert(cert_path), load_key(key_path)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise PKIError(f"{key_path} is not the key of {cert_path}; copy both from the same kit")
    meta = info(cert)
    now = now or dt.datetime.now(dt.UTC)
    if now > meta.not_after:
        raise PKIError(f"{cert_path} expired on {meta.not_after:%Y-%m-%d}; issue a new kit with "
                       "`medsyft federation add-site --renew`")
    if now < meta.not_before:
        raise PKIError(f"{cert_path} is not valid before {meta.not_before:%Y-%m-%d %H:%M} UTC; "
                       "check this host's clock")
    if server and not meta.server:
        raise PKIError(f"{cert_path} is not a server certificate (a scientist's?); deploy with the "
                       "site's kit")
    if ca_path is not None:
        verify_signed_by(cert, load_cert(ca_path), what=str(cert_path))
    return meta


def verify_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate, *, what: str) -> None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PKIError(f"{what} was not issued by the federation CA given; use the kit's ca.crt") from exc
