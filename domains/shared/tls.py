"""Reaching a datasite over TLS, for the scientist's tools and the hospital's own admin tools alike.

PySyft 0.9.5's client verifies certificates only against the system's trust store (``verify=True``
on every request, or nothing at all with ``IGNORE_TLS_ERRORS``), takes no client certificate, and
dials port 443 for every ``https://`` URL, whatever port it names.
A federation has its own CA and, with mutual TLS, every client holds a certificate from it. So
medsyft gives PySyft's connection a ``requests`` session whose adapter trusts exactly the CA it is
given and presents the client certificate (:func:`session`, :func:`syft_login`); nothing else in
PySyft changes.

Two ways to trust a datasite:

- a **scientist** trusts the federation CA and checks that the certificate names the host dialled
  (``TLSClient(ca_file=ca.crt)``), as any HTTPS client does;
- a hospital's **admin tools** on the datasite's own host trust exactly that datasite's certificate
  (``TLSClient(ca_file=server.crt, pin=True)``): they dial 127.0.0.1 whatever host the certificate
  names, and a pinned certificate cannot be substituted.

:func:`preflight` runs before any password is sent: it opens the connection itself and turns each
way it can fail (unknown CA, expired or not yet valid certificate, host name mismatch, ``http://``
to an HTTPS datasite or the reverse, a client certificate missing or refused) into one line that
names the site and says what to fix.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domains.shared.errors import TLSProblem

_PREFLIGHT_TIMEOUT_S = 10.0
# OpenSSL's X509_V_ERR_* codes that ssl.SSLCertVerificationError carries in verify_code
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID, _HOST_MISMATCH, _IP_MISMATCH = 10, 9, 62, 64


@dataclass(frozen=True)
class TLSClient:
    """What a client trusts and presents; ``ca_file=None`` trusts the system's store."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    pin: bool = False  # trust exactly the certificate in ca_file; do not match the host name

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2 or newer, certificates always verified."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.pin:
                ctx.check_hostname = False
                ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf as its own trust anchor
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert_file:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            which = [str(p) for p in (self.ca_file, self.cert_file, self.key_file) if p]
            raise TLSProblem(f"cannot load TLS files {', '.join(which)} ({_reason(exc)}); give the PEM "
                             "files of the federation kit") from exc
        return ctx


def is_https(url: str) -> bool:
    return urlsplit(url).scheme == "https"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TLSProblem(f"{url!r} is not an http:// or https:// URL of a datasite")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc).strip()


# -- before the password: one line per way the connection can fail ----------------------------------
def preflight(url: str, tls: TLSClient | None, *, site: str) -> None:
    """Check that *url* can be reached as configured before anything secret is sent.

    ``http://``: refused if the port speaks TLS (the site is HTTPS). ``https://``: the handshake,
    the certificate (CA, dates, host) and, if the datasite wants one, the client certificate.
    Raises :class:`TLSProblem` with one line naming *site*; a site that does not answer at all is
    left to the caller, which names it as down.
    """
    host, port = _host_port(url)
    if not is_https(url):
        if _speaks_tls(host, port):
            raise TLSProblem(f"site '{site}' serves HTTPS at {host}:{port}, but its url is {url}; write "
                             f"https://{host}:{port} and name the federation CA (ca_file)")
        return
    ctx = (tls or TLSClient()).ssl_context()
    try:
        with socket.create_connection((host, port), timeout=_PREFLIGHT_TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as conn:
            # TLS 1.3 finishes the client's side of the handshake before the server has checked
            # the client's certificate; a refusal arrives as an alert on the first read.
            conn.sendall(f"GET /api/v2/metadata HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            if not conn.recv(1):  # closed without an answer: the server refused our certificate
                raise ConnectionResetError("closed without an HTTP answer")
    except ssl.SSLCertVerificationError as exc:
        raise TLSProblem(_verify_message(exc, site, host, port, tls)) from exc
    except ssl.SSLError as exc:
        raise TLSProblem(_ssl_message(exc, site, host, port, tls)) from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        if tls is None or tls.cert_file is None:
            raise TLSProblem(f"site '{site}' closed the TLS connection at {host}:{port}: it asks for a "
                             "client certificate; set client_cert and client_key (the scientist kit's "
                             "client.crt, client.key)") from exc
        raise TLSProblem(f"site '{site}' closed the TLS connection at {host}:{port}: it refused the client "
                         f"certificate {tls.cert_file}; use the scientist kit's client.crt and client.key "
                         "from this federation") from exc
    except OSError:
        return  # not answering: the caller names the site as down


def _speaks_tls(host: str, port: int) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=_PREFLIGHT_TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _peer_certificate(host: str, port: int) -> Any:
    """The certificate the server presents, read without trusting it (for the error message)."""
    from cryptography import x509

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=_PREFLIGHT_TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as conn:
            der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def _verify_message(exc: ssl.SSLCertVerificationError, site: str, host: str, port: int,
                    tls: TLSClient | None) -> str:
    code = exc.verify_code
    where = f"site '{site}' ({host}:{port})"
    cert = _peer_certificate(host, port)
    if code == _EXPIRED:
        when = f" on {cert.not_valid_after_utc:%Y-%m-%d}" if cert is not None else ""
        return (f"{where}: its TLS certificate expired{when}; the hospital must deploy with a renewed "
                "kit (`medsyft federation add-site NAME=HOST --renew`)")
    if code == _NOT_YET_VALID:
        return f"{where}: its TLS certificate is not valid yet; check the clocks of both hosts"
    if code in (_HOST_MISMATCH, _IP_MISMATCH):
        names = ", ".join(_sans(cert)) or "no host"
        return (f"{where}: its TLS certificate is for {names}, not {host}; use the host name its kit "
                "was issued for in the site's url")
    if code in _UNKNOWN_ISSUER:
        ca = f"the CA in {tls.ca_file}" if tls and tls.ca_file else "the system's trusted CAs"
        return (f"{where}: its TLS certificate is not issued by {ca}; set ca_file to the federation's "
                "ca.crt (from the scientist kit)")
    return f"{where}: TLS certificate refused ({exc.verify_message}); check ca_file and the site's kit"


def _sans(cert: Any) -> list[str]:
    if cert is None:
        return []
    from cryptography import x509
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(i) for i in names.get_values_for_type(x509.IPAddress)]
    return [*names.get_values_for_type(x509.DNSName), *ips]


def _ssl_message(exc: ssl.SSLError, site: str, host: str, port: int, tls: TLSClient | None) -> str:
    reason = (exc.reason or str(exc)).upper()
    where = f"site '{site}' ({host}:{port})"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason or "HTTP_REQUEST" in reason:
        return (f"{where} speaks plain HTTP, not HTTPS; write http://{host}:{port}, or ask the hospital "
                "to deploy it with its kit (--kit)")
    if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and not (tls and tls.cert_file)):
        return (f"{where} asks for a client certificate from the federation CA; set client_cert and "
                "client_key (the scientist kit's client.crt and client.key)")
    if any(k in reason for k in ("UNKNOWN_CA", "BAD_CERTIFICATE", "DECRYPT_ERROR", "CERTIFICATE_UNKNOWN",
                                 "UNSUPPORTED_CERTIFICATE")):
        return (f"{where} refused the client certificate {tls.cert_file if tls else ''}: it is not "
                "from this federation's CA; use the scientist kit's client.crt and client.key")
    return f"{where}: TLS failed ({exc.reason or exc}); check the url, ca_file and the site's kit"


# -- requests and PySyft -----------------------------------------------------------------------------
def session(tls: TLSClient) -> Any:
    """A ``requests.Session`` that verifies against *tls* and presents its client certificate,
    whatever ``verify`` and ``cert`` the caller (PySyft) passes."""
    import requests  # type: ignore[import-untyped]
    from requests.adapters import HTTPAdapter  # type: ignore[import-untyped]
    from urllib3.util.retry import Retry

    ctx = tls.ssl_context()
    verify: str | bool = str(tls.ca_file) if tls.ca_file else True
    cert = (str(tls.cert_file), str(tls.key_file)) if tls.cert_file and tls.key_file else None

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            if tls.pin:
                kwargs["assert_hostname"] = False
            super().init_poolmanager(*args, **kwargs)

        def send(self, request: Any, **kwargs: Any) -> Any:
            kwargs["verify"], kwargs["cert"] = verify, cert
            return super().send(request, **kwargs)

    s = requests.Session()
    s._medsyft_tls = True  # HTTPConnection.make_call sends through this session (_route_api_calls)
    adapter = _Adapter(max_retries=Retry(total=3, backoff_factor=0.5))  # as PySyft's own session
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


def keep_https_ports() -> None:
    """Make PySyft's ``ServerURL.from_url`` keep the port an ``https://`` URL names.

    PySyft 0.9.5 sets port 443 for every ``https://`` URL, and re-parses its URL on every request
    (``with_path`` copies through ``from_url``), so a datasite on ``https://host:8443`` is dialled
    on 443. The fix keeps an explicit port and 443 as the default; ``http://`` is unchanged.
    """
    from syft.types.server_url import ServerURL

    original = ServerURL.__dict__["from_url"].__func__
    if getattr(original, "_medsyft_keeps_port", False):
        return

    def from_url(cls: Any, url: Any) -> Any:
        parsed = original(cls, url)
        if isinstance(url, str) and parsed.protocol == "https":
            port = urlsplit(url if "://" in url else f"https://{url}").port
            parsed.port = port or 443
        return parsed

    from_url._medsyft_keeps_port = True  # type: ignore[attr-defined]
    ServerURL.from_url = classmethod(from_url)


def _route_api_calls() -> None:
    """Send PySyft's API calls through the connection's session when it is a medsyft TLS session.

    PySyft 0.9.5's ``HTTPConnection.make_call`` (every API call after the login) posts with the
    module-level ``requests.post``: no session, so neither the federation CA nor the client
    certificate. Other connections keep PySyft's own code path.
    """
    import requests
    from syft.client.client import HTTPConnection
    from syft.serde.deserialize import _deserialize
    from syft.serde.serialize import _serialize

    original = HTTPConnection.make_call
    if getattr(original, "_medsyft_tls", False):
        return

    def make_call(self: Any, signed_call: Any) -> Any:
        tls_session = self.session_cache
        if tls_session is None or not getattr(tls_session, "_medsyft_tls", False) or self.rtunnel_token:
            return original(self, signed_call)
        response = tls_session.post(url=str(self.api_url), data=_serialize(obj=signed_call, to_bytes=True),
                                    headers=self.headers)
        if response.status_code != 200:
            raise requests.ConnectionError(f"API call to {self.url} failed with HTTP {response.status_code}")
        return _deserialize(response.content, from_bytes=True)

    make_call._medsyft_tls = True  # type: ignore[attr-defined]
    HTTPConnection.make_call = make_call


def syft_login(url: str, *, email: str, password: str, tls: TLSClient | None) -> Any:
    """``sy.login`` over *tls* (plain ``sy.login`` for an ``http://`` url with no TLS settings)."""
    import syft as sy

    from domains.shared import syft_client_speedups

    syft_client_speedups.apply()  # once per process: each API signature deserialized once
    if not is_https(url) and tls is None:
        return sy.login(url=url, email=email, password=password)
    from syft.client.client import HTTPConnection

    keep_https_ports()
    _route_api_calls()
    connection = HTTPConnection(url=url)
    connection.session_cache = session(tls or TLSClient())
    client = connection.get_client_type().unwrap()(connection=connection)
    return client.login(email=email, password=password)


def days_left(url: str, tls: TLSClient | None) -> float | None:
    """Days until the datasite's certificate expires (verified as *tls* says); None for http://."""
    if not is_https(url):
        return None
    host, port = _host_port(url)
    ctx = (tls or TLSClient()).ssl_context()
    with socket.create_connection((host, port), timeout=_PREFLIGHT_TIMEOUT_S) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as conn:
        der = conn.getpeercert(binary_form=True)
    from cryptography import x509
    if der is None:
        raise TLSProblem(f"{url} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400.0
