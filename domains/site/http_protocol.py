"""The HTTP protocol a datasite serves with: uvicorn's httptools protocol, with two changes.

- **The client certificate's name in every request.** uvicorn does not hand an ASGI app the peer's
  certificate; under mutual TLS the login binding (:mod:`domains.site.client_cert`) needs its
  common name, so each request's scope carries it under the ASGI TLS extension's
  ``client_cert_name``.
- **A stop drops idle connections at once.** On SIGTERM uvicorn closes every idle keep-alive
  connection and waits for it to go. A TLS close waits for the peer's ``close_notify``, which an
  idle client (a requests session in a notebook) never sends, so every stop sat out the whole
  graceful-shutdown timeout. An idle connection carries no request, so it is aborted instead;
  a request still in flight is finished as before, within the timeout.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def protocol_class() -> type:
    """:class:`DatasiteHttpTools`, made on first use (the CLI never imports uvicorn's protocols)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from domains.site.client_cert import common_name

    class DatasiteHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol: the certificate's common name in every scope, and idle
        connections aborted (not closed, which under TLS waits on the peer) when the server stops."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._medsyft_cert_name = common_name(transport.get_extra_info("peercert"))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            extensions = self.scope.setdefault("extensions", {})
            extensions["tls"] = {"client_cert_name": self._medsyft_cert_name}

        def shutdown(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()  # idle: nothing in flight to finish
            else:
                super().shutdown()  # the response completes, then the connection closes

    return DatasiteHttpTools
