"""Start several datasites on one host from one process that imported their code once.

A datasite spends most of its start-up importing: PySyft (about 3.4 s of CPU here), then torch,
Opacus, MONAI and TenSEAL for its first job (about 1.8 s, :mod:`domains.runtime.warm`). A host that
starts several at once (the demo's three hospitals, a benchmark's ten) pays that once per process,
and on two cores the imports queue for the same CPUs. A :class:`Launcher` starts
``python -m domains.site.launcher`` once. It imports what a datasite runs, with no datasite's
environment: no secret, no data directory, nothing read from one. Then it forks one child per
:meth:`Launcher.spawn`.

Each child is the datasite ``python -m domains.site.server`` would be. It gets its own process,
session and log, and the environment that start would have had: the deploying process's at the
time of the deploy, without its secrets. Its start-up is the same
(:func:`domains.site.server.serve`). PySyft's identity and root account come from the child's own
data directory. They are set as the values PySyft reads at import, so no secret passes through
``os.environ`` at all. Two things differ:

- a child's command line is the launcher's, so its pid file's start time is what identifies it
  (:mod:`domains.site.lifecycle`);
- a child's parent is the launcher, which reaps it, not the deploying process.

Forked children share the launcher's memory as it was at the fork. It holds imported code only.
numpy's global generator was seeded from the OS when numpy was imported, so every child re-seeds
it from the OS; Python's ``random`` re-seeds itself at a fork. Keys, UIDs and DP noise come from
the OS in any case. The children also share Python's string-hash seed, which only spreads dict
keys; sites on one host gain nothing from knowing each other's.

``medsyft demo`` and the benchmarks start their datasites this way. ``medsyft domain deploy``
starts its one datasite as its own process, as before: a launcher saves nothing for one site.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import IO, Any, NoReturn

import psutil

from domains.errors import DeployError
from domains.site.datadir import LOG_FILE, DataDir
from domains.site.lifecycle import child_environment

# What a datasite imports before it serves (domains.site.server.serve) and for its first call
# (domains.runtime.warm.MODULES, added when warming is on).
SERVER_MODULES = ("syft", "syft.server.uvicorn", "uvicorn", "uvicorn.protocols.http.httptools_impl",
                  "domains.site.server", "domains.site.syft_speedups", "domains.site.syft_policy",
                  "domains.site.syft_guard", "domains.site.http_protocol", "domains.site.database",
                  "domains.runtime.warm")
READY_TIMEOUT_S = 300.0


class Spawned:
    """A forked datasite, with the part of ``subprocess.Popen``'s interface that deploy uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._process = psutil.Process(pid)

    def poll(self) -> int | None:
        """None while it runs; once it has gone, 1 (its exit status went to the launcher)."""
        if self.returncode is None:
            try:
                gone = self._process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                self.returncode = 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Until it has gone (``psutil.TimeoutExpired`` after *timeout* s); then as :meth:`poll`."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.wait(timeout)
        self.returncode = 1 if self.returncode is None else self.returncode
        return self.returncode

    def terminate(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.terminate()

    def kill(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.kill()


class Launcher:
    """``python -m domains.site.launcher``, driven over its stdin and stdout; a context manager.

    Closing it sends no more requests; the datasites it forked keep running, and the launcher
    process with them, as the parent that reaps each one when it stops.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "domains.site.launcher"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=child_environment(), start_new_session=True,
        )
        self._ready: float | None = None
        self._lock = threading.Lock()  # one request and its answer at a time: deploys run in threads

    @property
    def pid(self) -> int:
        """The launcher process's pid: every datasite it forks is its child."""
        return self._proc.pid

    def ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until the launcher has imported everything; returns the seconds its imports took."""
        with self._lock:
            if self._ready is None:
                self._ready = float(self._read(timeout)["ready"])
            return self._ready

    def spawn(self, data_dir: DataDir, *, timeout: float = READY_TIMEOUT_S) -> Spawned:
        """Fork the datasite of *data_dir* (initialized, not running); returns once it exists."""
        self.ready(timeout)
        assert self._proc.stdin is not None
        request = {"data_dir": str(data_dir.path), "env": child_environment()}  # as _spawn would give it
        with self._lock:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            reply = self._read(timeout)
        if "pid" not in reply:
            raise DeployError(f"the datasite launcher could not start {data_dir.path}: {reply.get('error')}")
        return Spawned(int(reply["pid"]))

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = _readline(self._proc.stdout, timeout)
        if not line:
            code = self._proc.poll()
            raise DeployError(f"the datasite launcher exited (status {code}) before answering; run "
                              "`python -m domains.site.launcher` to see why")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        """Send no more requests. The launcher process stays until the last datasite it forked has
        exited (it reaps them), then ends by itself."""
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def wait(self, timeout: float | None = None) -> int:
        """Until the launcher process has ended (after :meth:`close` and its last datasite's exit);
        its exit status. ``subprocess.TimeoutExpired`` after *timeout* s."""
        return self._proc.wait(timeout)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from the launcher, or b"" if none came within *timeout* s."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return b""
    return stream.readline()


# ---- the launcher process ------------------------------------------------------------------------

def _preload() -> float:
    """Import what every datasite runs; the seconds it took."""
    started = time.perf_counter()
    os.environ["TRACING"] = "False"  # PySyft reads it at import (server_environment sets the same)
    from domains.runtime import warm

    for name in SERVER_MODULES + (warm.MODULES if warm.enabled() else ()):
        importlib.import_module(name)
    from domains.site.syft_guard import dummy_hash

    dummy_hash()  # shared by the children: it guards no secret (its docstring says why)
    warm.freeze_heap()  # before any fork: the children's collections never walk the imports
    return time.perf_counter() - started


def _reap(*_: Any) -> None:
    """SIGCHLD: collect every datasite that has exited, so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _child(data_dir: DataDir, environment: dict[str, str]) -> NoReturn:
    """In the forked child: become the datasite of *data_dir*, with the *environment* the deploying
    process gave it now (not the launcher's, from when it started), and never return."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(environment)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the datasite waits on its own sandboxes
        os.setsid()
        os.umask(0o077)  # the store holds private images: owner-only files
        log = os.open(data_dir.file(LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)  # also closes the launcher's pipes in this process
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        import numpy as np

        np.random.seed()  # the launcher's global generator state is every child's: draw afresh
        from domains.site import server

        server.serve(data_dir, forked=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a datasite's crash goes to its log, not to the launcher
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


def main() -> int:
    """Preload, say so, then fork one datasite per request line until stdin closes."""
    seconds = _preload()
    signal.signal(signal.SIGCHLD, _reap)
    out = sys.stdout
    out.write(json.dumps({"ready": round(seconds, 3)}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            data_dir = DataDir(request["data_dir"])
            data_dir.require_initialized()
            environment = {str(k): str(v) for k, v in request["env"].items()}
        except Exception as exc:  # answered, and the launcher keeps serving
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            out.flush()
            continue
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(data_dir, environment)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
    _outlive_children()
    return 0


def _outlive_children() -> None:
    """Stay until every datasite forked here has exited, reaping each at once: an orphan's zombie
    waits on the host's init, and a stop waits on the zombie."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


if __name__ == "__main__":
    sys.exit(main())
