"""Warm a datasite's runtime while it waits for work: its first call otherwise pays the imports.

A job's first call imports torch, Opacus, MONAI and TenSEAL inside the datasite process, which
made round 1 several times a steady round. :func:`start` imports them in a daemon thread when the
datasite starts serving, so the cost overlaps with publishing, review and approval, when the
process is idle anyway. Importing runs no job code and reads no data. ``MEDSYFT_WARM_RUNTIME=0``
turns it off (for A/B measurements, and for test suites that deploy many datasites that never
train).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import socket
import sys
import threading
import time

ENV_SWITCH = "MEDSYFT_WARM_RUNTIME"
LOW_PRIORITY = 10  # niceness of the warming thread
# torch._dynamo: torch imports it at the first optimizer a process builds (0.47 s of a site's round 1)
MODULES = ("domains.runtime.entry", "domains.runtime.evaluation", "opacus", "monai.metrics", "privacy.he",
           "torch._dynamo")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def warm(modules: tuple[str, ...] = MODULES) -> float:
    """Import *modules*; returns the seconds it took. An import that fails is left to the call
    that needs it, which reports it as it would have without warming."""
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # warming must never take the datasite down
            print(f"medsyft: warming {name} failed ({type(exc).__name__}); the first call imports it",
                  file=sys.stderr, flush=True)
    return time.perf_counter() - started


def freeze_heap() -> None:
    """Move every object this process holds now out of the garbage collector's reach
    (``gc.freeze``): what imports create lives as long as the process.

    PySyft, torch and their imports leave about a million objects, and every full collection
    walks them all. With ``torch._dynamo`` also imported, one full collection took 0.8 s of a
    datasite's approval here (py-spy, native frames). Frozen objects are never walked, and a
    forked child does not write to their pages when it collects, so more memory stays shared
    (Python's documented use before a fork). Objects made later are collected as usual.
    """
    gc.freeze()


def wait_until_serving(host: str, port: int, timeout: float = 300.0) -> bool:
    """Block until something accepts connections on *host*:*port*; False after *timeout* s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def lower_priority(niceness: int = LOW_PRIORITY) -> None:
    """Make the calling *thread* nicer (Linux schedules threads: ``setpriority`` on its id), so
    that warming yields the cores to the datasite's own start-up and its neighbours'."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def start(serving: tuple[str, int] | None = None) -> threading.Thread | None:
    """Warm in a daemon thread unless turned off; logs the time to the datasite's log.

    With *serving* ``(host, port)``, the thread first waits until the datasite answers there and
    then imports at low priority. Measured with three datasites deployed at once on two cores:
    warming from the start made the deploy 15.7 s against 9.1 s without it, because the imports
    competed with every site's server start-up; after it, they overlap publishing and review.
    """
    if not enabled():
        return None

    def run() -> None:
        if serving is not None:
            wait_until_serving(*serving)
            lower_priority()
        seconds = warm()
        freeze_heap()  # what the imports made is never collected: no full collection walks it
        print(f"medsyft: runtime warmed in {seconds:.1f} s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name="medsyft-warm", daemon=True)
    thread.start()
    return thread
