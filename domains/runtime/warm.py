"""Warm a datasite's runtime while it waits for work: its first call otherwise pays the imports.

A job's first call imports torch, Opacus, MONAI and TenSEAL inside the datasite process, which
made round 1 several times a steady round. :func:`start` imports them in a daemon thread when the
datasite starts serving, so the cost overlaps with publishing, review and approval, when the
process is idle anyway. Importing runs no job code and reads no data. ``MEDSYFT_WARM_RUNTIME=0``
turns it off (for A/B measurements, and for test suites that deploy many datasites that never
train).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time

ENV_SWITCH = "MEDSYFT_WARM_RUNTIME"
MODULES = ("domains.runtime.entry", "domains.runtime.evaluation", "opacus", "monai.metrics", "privacy.he")


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


def start() -> threading.Thread | None:
    """Warm in a daemon thread unless turned off; logs the time to the datasite's log."""
    if not enabled():
        return None

    def run() -> None:
        seconds = warm()
        print(f"medsyft: runtime warmed in {seconds:.1f} s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name="medsyft-warm", daemon=True)
    thread.start()
    return thread
