"""How the round loop reaches the datasites: one approved PySyft call per site, in parallel.

The loop (:mod:`orchestrator.runner`) and the strategies never touch PySyft. They hand a
:class:`Transport` one payload per site and get one :class:`CallOutcome` per site back, in the
order asked: ``ok`` with the call's result, ``error`` with a one-line reason, or ``timeout``.
:class:`SyftTransport` is the real one (upload, execute, fetch, the round timeout); the unit
tests drive the loop with a fake that answers as datasites would, without processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from domains.shared.codec import wire_payload
from orchestrator.site import Site, quiet


@dataclass
class CallOutcome:
    """One site's answer to one call, as the loop records it."""

    site: str
    status: str  # "ok" | "error" | "timeout"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    call_s: float = 0.0
    legs: dict[str, float] = field(default_factory=dict)  # upload_s, execute_s, get_s
    value: Any = None  # the result's update, decoded once by the strategy's accept (codec value)


class Transport(Protocol):
    """Asks sites in parallel; one outcome per asked site, in the order of *payloads*."""

    def ask(self, payloads: Mapping[str, dict[str, Any]]) -> list[CallOutcome]:
        """One call per site with its own payload, all within the transport's timeout."""
        ...


def call_site(site: Site, spec_function: str, labels: Any, job: dict[str, Any] | None,
              payload: dict[str, Any], *, constant_name: str = "job") -> CallOutcome:
    """One round trip: upload the payload, run the approved function, fetch the result.

    *labels* is the bound asset, or a callable that fetches it (so that a site that
    went down fails here, inside the guarded call, not before the round starts).
    *job* is normally None: the datasite always uses the constant it approved, and PySyft
    would upload any value passed for it as one more object per call (measured: ~25 ms).
    Tests pass one to show that a changed constant is ignored.
    """
    t0 = time.perf_counter()
    try:
        with quiet():
            import syft as sy

            if callable(labels):
                labels = labels()

            t_up = time.perf_counter()
            pointer = sy.ActionObject.from_obj(wire_payload(payload)).send(site.client)
            t_exec = time.perf_counter()
            function = getattr(site.client.code, spec_function)
            constant = {} if job is None else {constant_name: job}
            result = function(labels=labels, payload=pointer, **constant)
            t_get = time.perf_counter()
            value = fetch(result)
            t_end = time.perf_counter()
        legs = {"upload_s": t_exec - t_up, "execute_s": t_get - t_exec, "get_s": t_end - t_get}
    except Exception as exc:  # PySyft raises its own exception types for refusals
        return CallOutcome(site.name, "error", error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                           call_s=time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0
    if not isinstance(value, dict):
        return CallOutcome(site.name, "error", error=f"unexpected result {type(value).__name__}",
                           call_s=elapsed)
    if "error" in value:
        err = value["error"]
        return CallOutcome(site.name, "error", error=f"{err['type']}: {err['message']}",
                           call_s=elapsed)
    return CallOutcome(site.name, "ok", result=value, call_s=elapsed, legs=legs)


def fetch(result: Any) -> Any:
    """The value behind a call's result pointer, in one request.

    PySyft's ``ActionObject.get()`` makes two: the fetch, then a storage-permission check that
    only decides whether to print a "placeholder object" warning (which ``quiet`` hides
    anyway). This is its body without that second round trip; a refusal still raises.
    """
    if not hasattr(result, "refresh_object"):
        return result  # PySyft returned a value (an error message, say), not a pointer
    from syft.service.action.action_object import ActionObject
    from syft.types.errors import SyftException
    from syft.types.result import Err

    res = result.refresh_object()
    if not isinstance(res, ActionObject):
        raise SyftException(public_message=f"{res}")
    if issubclass(res.syft_action_data_type, Err):
        raise SyftException(public_message=f"{res.syft_action_data.err()}")
    return res.syft_action_data


Call = Callable[[str, dict[str, Any]], CallOutcome]


class SyftTransport:
    """The approved job function of every site, called over PySyft within ``round_timeout``.

    *call* replaces the PySyft round trip (``(site name, payload) -> CallOutcome``); the tests
    use it to show what a frozen site does to a round without starting one.
    """

    def __init__(self, sites: Mapping[str, Site], functions: Mapping[str, str], dataset: str, *,
                 round_timeout: float, sizes: Mapping[str, int] | None = None,
                 call: Call | None = None) -> None:
        self.sites = dict(sites)
        self.functions = dict(functions)
        self.dataset = dataset
        self.round_timeout = round_timeout
        self.sizes = dict(sizes or {})
        self._call = call or self._syft_call
        self._labels: dict[str, Any] = {}

    def _labels_of(self, name: str) -> Any:
        if name not in self._labels:
            self._labels[name] = self.sites[name].asset(self.dataset, "labels")
        return self._labels[name]

    def _syft_call(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        return call_site(self.sites[name], self.functions[name], lambda: self._labels_of(name), None, payload)

    def ask(self, payloads: Mapping[str, dict[str, Any]]) -> list[CallOutcome]:
        """One approved call per site, in parallel, each with its own payload, within round_timeout."""
        names = list(payloads)
        results: dict[str, CallOutcome] = {}

        def ask(name: str) -> None:
            results[name] = self._call(name, payloads[name])

        # Daemon threads, not a ThreadPoolExecutor: PySyft's HTTP calls have no timeout, and an
        # executor's workers are joined at exit, so a frozen datasite would keep this process
        # alive forever. An abandoned call to it simply dies with the process.
        # Largest site first: it trains longest, so the round waits on it, and the threads
        # that start first serialize their uploads first (the client holds one GIL).
        order = sorted(names, key=lambda n: -self.sizes.get(n, 1))
        threads = [threading.Thread(target=ask, args=(n,), name=f"medsyft-call-{n}", daemon=True)
                   for n in order]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.round_timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [
            results.get(n) or CallOutcome(n, "timeout",
                                          error=f"no answer within {self.round_timeout:.0f} s",
                                          call_s=self.round_timeout)
            for n in names
        ]
