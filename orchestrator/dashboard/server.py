"""The dashboard's web app (Starlette) and its server (uvicorn), on 127.0.0.1 only.

Routes: ``/`` the page, ``/static/*`` its script and style (from this package), ``/api/snapshot``
the JSON the page polls every second, ``/metrics`` Prometheus' text format. The server binds the
loopback address: the page shows no private data, but it is the scientist's view of the
federation, not something to publish on a hospital network.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.dashboard import metrics
from orchestrator.dashboard.health import HealthMonitor, SiteAddress
from orchestrator.dashboard.snapshot import snapshot
from orchestrator.errors import ConfigError

STATIC = Path(__file__).parent / "static"
HOST = "127.0.0.1"
_CACHE_S = 0.5  # a snapshot is re-read at most twice a second, however many tabs poll


class Dashboard:
    """The state behind the app: the run directory and the sites' health monitor."""

    def __init__(self, run_dir: Path, sites: list[SiteAddress], *, probe_interval: float = 2.0) -> None:
        self.run_dir = run_dir
        self.health = HealthMonitor(sites, interval=probe_interval)
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > _CACHE_S:
                self._cached = (now, snapshot(self.run_dir, self.health.current()))
            return self._cached[1]

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, JSONResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        registry = metrics.registry_for(self.snapshot)

        async def index(_: Request) -> FileResponse:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

        async def api(_: Request) -> JSONResponse:
            return JSONResponse(self.snapshot(), headers={"Cache-Control": "no-store"})

        async def prometheus(_: Request) -> Response:
            return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE_LATEST)

        return Starlette(routes=[
            Route("/", index), Route("/api/snapshot", api), Route("/metrics", prometheus),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static")])


class Server:
    """uvicorn serving a :class:`Dashboard` on a daemon thread (``train --dashboard``) or in the
    foreground (``medsyft dashboard``)."""

    def __init__(self, dashboard: Dashboard, port: int) -> None:
        import uvicorn

        self.dashboard = dashboard
        self.port = _check_port(port)
        config = uvicorn.Config(dashboard.app(), host=HOST, port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> Server:
        self.dashboard.health.start()
        self._thread = threading.Thread(target=self._server.run, name="medsyft-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        if not self._server.started:
            raise ConfigError(f"the dashboard could not start on {HOST}:{self.port}; choose another port")
        return self

    def serve_forever(self) -> None:
        self.dashboard.health.start()
        self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True
        self.dashboard.health.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _check_port(port: int) -> int:
    """*port*, or a free one for 0; ConfigError in one line when it is taken or out of range."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"dashboard port {port} is not 0..65535; give a free port, or 0 for any")
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(f"dashboard port {port} on {HOST} is in use ({exc.strerror}); give another "
                              "port, or 0 for any free one") from exc
        return int(probe.getsockname()[1])


def serve_job(config: Any, run_dir: Path, port: int) -> Server:
    """The dashboard of a job.toml's run, started in the background (``train``/``demo --dashboard``)."""
    return Server(Dashboard(run_dir, addresses_from_config(config)), port).start()


def addresses_from_config(config: Any) -> list[SiteAddress]:
    """The sites of a job.toml, with their TLS files resolved (what ``sites.json`` records)."""
    return [SiteAddress.from_config(site, config.base_dir) for site in config.sites]
