"""Which sites answer, probed in the background so that the page never waits on a dead one.

Each probe is PySyft's public metadata route over the site's own TLS settings (the federation CA
and the scientist's client certificate), the check ``medsyft status`` starts with; no login, no
password. A site counts as down after one failed probe and up again after one answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domains import datasite_metadata

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class SiteAddress:
    """Where a site is and how to reach it (no secret: the TLS files are paths)."""

    name: str
    url: str
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def from_config(cls, site: Any, base_dir: Path) -> SiteAddress:
        """A job.toml's site (:class:`~orchestrator.config.SiteConfig`), its TLS files made absolute."""
        tls = site.tls(base_dir)  # ConfigError in one line when a named file does not exist
        if tls is None:
            return cls(site.name, site.url)
        files = (tls.ca_file, tls.cert_file, tls.key_file)
        return cls(site.name, site.url, *(str(Path(f).resolve()) if f else None for f in files))

    def context(self) -> Any:
        from domains.shared.tls import TLSClient, is_https

        if not (is_https(self.url) or self.ca_file):
            return None
        return TLSClient(ca_file=Path(self.ca_file) if self.ca_file else None,
                         cert_file=Path(self.client_cert) if self.client_cert else None,
                         key_file=Path(self.client_key) if self.client_key else None).ssl_context()


def probe(site: SiteAddress, *, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """One look at *site*: up, its answer time and the PySyft version its public metadata names."""
    started = time.perf_counter()
    try:
        meta = datasite_metadata(site.url, timeout, context=site.context())
    except Exception as exc:  # a TLS file that cannot be read is this site's problem, shown as such
        return {"site": site.name, "url": site.url, "up": False, "latency_ms": None, "pysyft": None,
                "checked": time.time(), "error": " ".join(str(exc).split())}
    up = bool(meta and meta.get("name"))
    return {"site": site.name, "url": site.url, "up": up,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1) if up else None,
            "pysyft": (meta or {}).get("syft_version"), "checked": time.time(),
            "error": None if up else f"does not answer at {site.url}"}


class HealthMonitor:
    """Probes every site every *interval* seconds on a daemon thread; :meth:`current` never blocks."""

    def __init__(self, sites: list[SiteAddress], *, interval: float = 2.0) -> None:
        self.sites = sites
        self.interval = interval
        self._latest: dict[str, dict[str, Any]] = {
            s.name: {"site": s.name, "url": s.url, "up": None, "latency_ms": None, "checked": None,
                     "error": "not probed yet"} for s in sites}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="medsyft-dashboard-health", daemon=True)

    def start(self) -> HealthMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def current(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._latest[s.name]) for s in self.sites]

    def _loop(self) -> None:
        while not self._stop.is_set():
            for site in self.sites:  # one at a time: a handful of sites, each bounded by the timeout
                result = probe(site)
                with self._lock:
                    self._latest[site.name] = result
            self._stop.wait(self.interval)
