"""Make a just-requested function callable without re-fetching the site's whole PySyft API.

PySyft 0.9.5's client learns of a new user function only by fetching and deserializing its whole
API again (``client.refresh()``, or the first ``client.code.<name>`` that misses): about 0.3 s of
this process's CPU per site, measured in the demo's submission. The API it fetches adds one
endpoint per user function, built from the function's name, its signature and the code's uid
(``SyftAPI.for_user``). :func:`add_code_endpoint` adds that same endpoint to this client's API
from the submitted function and its request, so nothing is fetched.

Nothing here is trusted by the site: every call still goes to the site's ``code.call`` with the
code's uid, and the datasite checks the caller, the approval and the policies as before. If
PySyft's internals are not the expected ones (another version), it falls back to the refresh.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def add_code_endpoint(client: Any, request: Any, function: Any) -> None:
    """Give *client*'s API the endpoint of *function* (a ``SubmitUserCode``), whose code request
    is *request*, as PySyft's API refresh would; the refresh itself where that fails."""
    name = function.func_name  # PySyft names the user function (service_func_name) so
    try:
        _add(client, request.code_id, name, function.signature)
    except Exception as exc:
        log.debug("adding %s's endpoint locally failed (%s); refreshing the API", name, exc)
        getattr(client.code, name, None)  # PySyft re-fetches the API on the miss


def _add(client: Any, code_id: Any, name: str, signature: Any) -> None:
    from syft.client.api import APIEndpoint, generate_remote_function, signature_remove

    api = client.api
    endpoint = APIEndpoint(  # as SyftAPI.for_user builds a user function's endpoint
        service_path="code.call", module_path="code.call", name=name, description="",
        doc_string=f"Users custom func {name}", signature=signature, has_self=False,
        pre_kwargs={"uid": code_id},
    )
    remote = generate_remote_function(  # as SyftAPI.generate_endpoints turns it into a function
        api, api.server_uid, signature_remove(signature, ["context", "self"]), endpoint.service_path,
        api.make_call, pre_kwargs=endpoint.pre_kwargs, warning=None,
        communication_protocol=api.communication_protocol, unwrap_on_success=endpoint.unwrap_on_success,
    )
    remote.__doc__ = endpoint.doc_string
    api.endpoints[f"code.call_{name}"] = endpoint
    api._add_route(api.services, endpoint, remote)
