"""Keep PySyft's banners, progress bars and warnings out of medsyft's output.

PySyft prints on most calls, and draws progress bars on stderr. ``contextlib.redirect_stdout``
would do, except that it swaps ``sys.stdout`` for the whole process: the orchestrator calls sites from
parallel threads, and a call abandoned after a round timeout may sit inside the
block for minutes, silencing everyone else. So silence is per thread: while any
thread is inside :func:`quiet`, ``sys.stdout`` is a proxy that drops the writes of
threads inside the block and passes every other thread's through. Warnings and
log records below ERROR are process-wide in Python and are muted while any thread
is inside. Shared by ``domains`` and ``orchestrator``; ``MEDSYFT_VERBOSE=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

_lock = threading.Lock()
_local = threading.local()
_active = 0
_saved: dict[str, Any] = {}


class _PerThreadStream:
    """Forwards to the real stream, except for threads inside :func:`quiet`."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def write(self, text: str) -> int:
        if getattr(_local, "depth", 0):
            return len(text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence this thread's stdout and stderr (PySyft's progress bars), and warnings and log
    records below ERROR, in the block. Exceptions still propagate as exceptions."""
    global _active
    if os.environ.get("MEDSYFT_VERBOSE"):
        yield
        return
    with _lock:
        if _active == 0:
            _saved.update(stdout=sys.stdout, stderr=sys.stderr, filters=list(warnings.filters),
                          logging=logging.root.manager.disable)
            sys.stdout = _PerThreadStream(sys.stdout)
            sys.stderr = _PerThreadStream(sys.stderr)
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
        _active += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _active -= 1
            if _active == 0:
                sys.stdout, sys.stderr = _saved["stdout"], _saved["stderr"]
                warnings.filters[:] = _saved["filters"]  # type: ignore[index]
                getattr(warnings, "_filters_mutated", lambda: None)()  # as catch_warnings does
                logging.disable(_saved["logging"])
