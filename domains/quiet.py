"""Keep PySyft's banners, progress bars and warnings out of medsyft's output.

PySyft prints on most calls. ``contextlib.redirect_stdout`` would do, except that
it swaps ``sys.stdout`` for the whole process: when the orchestrator's per-site
threads enter and leave it out of order, the last one out restores another
thread's sink and stdout stays swallowed for good. So this is one process-wide,
reference-counted switch: the first thread in silences, the last thread out
restores. Shared by ``domains`` and ``orchestrator``; ``MEDSYFT_VERBOSE=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_depth = 0
_saved: dict[str, Any] = {}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout, warnings and log records below ERROR inside the block (thread-safe)."""
    global _depth
    if os.environ.get("MEDSYFT_VERBOSE"):
        yield
        return
    with _lock:
        if _depth == 0:
            _saved.update(stdout=sys.stdout, filters=list(warnings.filters),
                          logging=logging.root.manager.disable)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed by the last thread out
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                sys.stdout.close()
                sys.stdout = _saved["stdout"]
                warnings.filters[:] = _saved["filters"]  # type: ignore[index]
                getattr(warnings, "_filters_mutated", lambda: None)()  # as catch_warnings does
                logging.disable(_saved["logging"])
