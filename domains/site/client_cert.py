"""Under mutual TLS, a scientist's account signs in only with the certificate issued for it.

Mutual TLS alone authenticates the node: any holder of a federation certificate reaches the login,
and a password is then all that tells one scientist from another. A leaked password is enough to act
as its owner from any federation member's machine. So a datasite that requires client
certificates also binds each login to one: a login as ``EMAIL`` must come over a connection whose
certificate's common name is ``EMAIL``, which is how ``medsyft federation init`` and
``add-scientist`` issue a scientist's certificate. The datasite's own certificate, which its
admin tools present on this host, may sign in as any account: whoever holds that key runs the
datasite.

The rule is checked before any account is looked up, from the e-mail typed and the certificate
presented alone, so its refusal tells nothing about which accounts exist or whether the password
was right. Another hospital's certificate cannot sign in as anyone here.

uvicorn does not hand an ASGI app the peer's certificate, so the datasite's HTTP protocol
(:func:`domains.site.http_protocol.protocol_class`) adds its common name to each request's scope,
under the ASGI TLS extension's ``client_cert_name``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# the common name of the certificate the current HTTP request came with (None: not over mTLS)
certificate_name: ContextVar[str | None] = ContextVar("medsyft_client_cert_name", default=None)


def common_name(peercert: Any) -> str | None:
    """The subject's commonName of ``SSLSocket.getpeercert()``'s dict, if there is one."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass(frozen=True)
class Binding:
    """Logins bound to certificates: *own_name* is the common name of this datasite's certificate."""

    own_name: str

    def refusal(self, email: str, presented: str | None) -> str | None:
        """Why a login as *email* over a connection with certificate *presented* is refused (None: not)."""
        if presented is None:  # not an HTTP request over mutual TLS: the process's own calls
            return None
        if presented == self.own_name or presented.strip().lower() == email.strip().lower():
            return None
        return (f"this datasite binds accounts to client certificates: a login as {email} needs the "
                f"certificate issued for {email}, and this connection presents {presented!r}'s; use your "
                "own scientist kit (medsyft federation add-scientist issues one)")


_binding: Binding | None = None


def enable(own_name: str) -> None:
    """Bind logins to certificates in this datasite process (at start-up, under mutual TLS)."""
    global _binding
    _binding = Binding(own_name)


def binding() -> Binding | None:
    return _binding


def scope_name(scope: dict[str, Any]) -> str | None:
    """The certificate name the datasite's HTTP protocol put in an ASGI scope."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    name = tls.get("client_cert_name")
    return str(name) if name else None
