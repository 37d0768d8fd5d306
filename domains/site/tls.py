"""A datasite's TLS: the certificate it serves, the CA its clients must come from, and its own tools.

``medsyft domain deploy --kit DIR/NAME`` (or ``--tls-cert FILE --tls-key FILE [--tls-ca FILE]``)
checks the files first (:func:`check_files`: the key is the certificate's, it is in date, it is a
server certificate issued by the CA, it names this site and, when the datasite binds one address,
that address), then copies them into ``DIR/tls/`` so that a restart serves the same certificate
without the kit. With a CA (always, with a kit) the datasite asks every client for a certificate
from that CA and refuses the connection without one: mutual TLS, node authentication beyond
passwords (docs/deploy.md).

A datasite on a non-loopback address without TLS is refused (:func:`check_plain_http`): its
passwords would cross the network in clear. ``--insecure-http`` allows it, the log warns and
``medsyft domain status`` shows it.

The hospital's admin tools reach their datasite on loopback and trust exactly its certificate,
pinned (:func:`admin_tls`); with mutual TLS they present that same certificate, whose extended key
usage allows client authentication.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
from pathlib import Path
from typing import Any

from domains.errors import DeployError
from domains.shared.tls import TLSClient
from domains.site.datadir import DataDir, DatasiteConfig
from privacy.errors import PKIError

CERT_FILE, KEY_FILE, CA_FILE = "server.crt", "server.key", "ca.crt"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - binding every address is the operator's choice


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plain_http(host: str, *, insecure_http: bool) -> None:
    if not is_loopback(host) and not insecure_http:
        raise DeployError(f"refusing plain HTTP on {host or '*'}: passwords would cross the network in "
                          "clear; deploy with --kit DIR/NAME (from `medsyft federation init`), or pass "
                          "--insecure-http to accept the risk")


def kit_files(kit: str | os.PathLike[str]) -> dict[str, Path]:
    """The files of a site kit folder that exist (``cert``, ``key``, ``ca``, ``he_key``, ``site_keys``)."""
    folder = Path(kit)
    if not folder.is_dir():
        raise DeployError(f"--kit {kit}: no such folder; give the site's folder from `medsyft federation "
                          "init` (it holds server.crt, server.key and ca.crt)")
    names = {"cert": CERT_FILE, "key": KEY_FILE, "ca": CA_FILE,
             "he_key": "hospital-secret.medsyftkey", "site_keys": "site-keys.medsyftkey"}
    found = {what: folder / name for what, name in names.items() if (folder / name).is_file()}
    missing = [names[w] for w in ("cert", "key", "ca") if w not in found]
    if missing:
        raise DeployError(f"--kit {kit} lacks {', '.join(missing)}; copy the whole site folder from "
                          "`medsyft federation init`")
    return found


def check_files(cert: Path, key: Path, ca: Path | None, *, name: str | None, host: str) -> None:
    """Refuse TLS files a datasite must not serve with, in one line each (before anything starts)."""
    from privacy import pki

    try:
        meta = pki.check_pair(cert, key, ca, server=True)
    except PKIError as exc:
        raise DeployError(str(exc)) from exc
    if ca is not None and name is not None and meta.common_name != name:
        raise DeployError(f"{cert} is the certificate of site {meta.common_name!r}, not {name!r}; deploy "
                          "with this site's own kit")
    if host not in WILDCARD_HOSTS and not _covers(meta.hosts, host):
        raise DeployError(f"{cert} is for {', '.join(meta.hosts) or 'no host'}, not --host {host}; bind "
                          "the address the kit was issued for, or 0.0.0.0")


def check_stored(data_dir: DataDir, *, host: str) -> None:
    """The checks of :func:`check_files` on the certificate a restart would serve from ``DIR/tls``."""
    folder = data_dir.tls_dir
    ca = folder / CA_FILE
    check_files(folder / CERT_FILE, folder / KEY_FILE, ca if ca.exists() else None,
                name=data_dir.read_config().name, host=host)


def _covers(names: tuple[str, ...], host: str) -> bool:
    try:
        wanted = ipaddress.ip_address(host)
        return any(_ip(n) == wanted for n in names)
    except ValueError:
        return host.lower().rstrip(".") in {n.lower().rstrip(".") for n in names}


def _ip(name: str) -> Any:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def install(data_dir: DataDir, cert: Path, key: Path, ca: Path | None) -> None:
    """Copy the checked files into ``DIR/tls`` (key 0600): a restart serves them without the kit."""
    folder = data_dir.tls_dir
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    from privacy.durable import atomic_write

    atomic_write(folder / CERT_FILE, cert.read_bytes(), mode=0o644)
    atomic_write(folder / KEY_FILE, key.read_bytes(), mode=0o600)
    if ca is not None:
        atomic_write(folder / CA_FILE, ca.read_bytes(), mode=0o644)
    else:
        (folder / CA_FILE).unlink(missing_ok=True)


def remove(data_dir: DataDir) -> None:
    if data_dir.tls_dir.exists():
        shutil.rmtree(data_dir.tls_dir)


def certificate_name(data_dir: DataDir) -> str:
    """The common name of this datasite's own certificate (its admin tools present it)."""
    from privacy import pki

    return pki.info(pki.load_cert(data_dir.tls_dir / CERT_FILE)).common_name


def uvicorn_options(data_dir: DataDir, config: DatasiteConfig) -> dict[str, Any]:
    """The keyword arguments that make uvicorn serve this datasite's TLS (none for plain HTTP)."""
    if not config.tls:
        return {}
    from domains.site.http_protocol import protocol_class

    folder = data_dir.tls_dir
    # the protocol aborts idle TLS connections at a stop, and carries a client certificate's name
    options: dict[str, Any] = {"ssl_certfile": str(folder / CERT_FILE), "ssl_keyfile": str(folder / KEY_FILE),
                               "http": protocol_class()}
    if config.client_auth:
        options |= {"ssl_ca_certs": str(folder / CA_FILE), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def admin_tls(data_dir: DataDir, config: DatasiteConfig | None = None) -> TLSClient | None:
    """How this host's tools reach their own datasite: pinned to its certificate (None for HTTP)."""
    config = config or data_dir.read_config()
    if not config.tls:
        return None
    cert = data_dir.tls_dir / CERT_FILE
    client = (cert, data_dir.tls_dir / KEY_FILE) if config.client_auth else (None, None)
    return TLSClient(ca_file=cert, cert_file=client[0], key_file=client[1], pin=True)


def admin_context(data_dir: DataDir, config: DatasiteConfig | None = None) -> ssl.SSLContext | None:
    tls = admin_tls(data_dir, config)
    return tls.ssl_context() if tls else None
