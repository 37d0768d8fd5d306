"""``GET /medsyft/v1/version``: which medsyft and PySyft a datasite runs, for anyone who may reach it.

PySyft's own metadata route names its version but not medsyft's, and a scientist's ``medsyft status``
should show both before a job's code meets a runtime it was not written for. The route tells no more
than a version string (over the datasite's TLS, so only to clients mutual TLS let in).
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

PATH = "/medsyft/v1/version"


def versions() -> dict[str, str]:
    import syft

    try:
        medsyft = metadata.version("medsyft")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        medsyft = "unknown"
    return {"medsyft": medsyft, "pysyft": str(syft.__version__)}


class VersionRoute:
    """ASGI wrapper: answers :data:`PATH` itself and hands everything else to *app*."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body = json.dumps(versions()).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == PATH and scope.get("method") in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(self.body)).encode())]})
            await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
            return
        await self.app(scope, receive, send)
