"""Custom code runs in its own sandboxed process (bubblewrap), never in the datasite's.

The datasite process holds everything worth stealing: the private assets, ``DIR``'s
credentials, signing key, HE secret key and audit key, the network. So code that is not
medsyft's own job or release template (:mod:`domains.review.code_policy`) runs one call at a time in
a fresh ``bwrap`` sandbox:

- its inputs are *values*: the arrays and JSON values PySyft resolved for the call, written
  into a fresh 0700 job directory (``.npy`` without pickles, tagged JSON) that the sandbox
  sees read-only at ``/scratch/in``; nothing of ``DIR`` is bound;
- read-only binds of ``/usr`` and of the Python install and site-packages only; the
  writable places are size-limited tmpfs at ``/scratch`` and ``/tmp`` (the sandbox's own), plus a
  small ``/dev/shm``; the root and ``/dev`` are remounted read-only;
- new user (uid 65534, no capabilities, no further user namespaces), pid (``/proc`` shows the
  sandbox's processes only), network (nothing but a loopback of its own), IPC, UTS and cgroup
  namespaces; an environment with ``PATH``, ``HOME``, ``TMPDIR`` and ``LANG`` only;
- address-space and CPU-time limits set before the code runs, and a wall-clock kill.

The result comes back as tagged JSON on the worker's stdout, read with a size cap and decoded
strictly (:func:`domains.site.sandbox_worker.decode`); nothing the worker sends is unpickled. When
``bwrap`` is missing or cannot create its namespaces, :class:`SandboxError` says so and how to
fix it: custom code never runs unsandboxed.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domains.errors import SandboxError
from domains.site import sandbox_worker as worker
from domains.site.datadir import DataDir

INSTALL_HINT = "install bubblewrap on the datasite's host (Debian/Ubuntu: `apt-get install bubblewrap`)"
JOB_PREFIX = "medsyft-sandbox-"
MAX_FRAME = 128 << 20  # what the worker may send back, in bytes
MAX_LOG = 64 << 10  # of the worker's stderr kept for the datasite's log
SHM_BYTES = 64 << 20
SANDBOX_ID = "65534"  # nobody
# bwrap's own environment is /proc/1/environ inside the sandbox: nothing of the datasite's.
_BWRAP_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_INSIDE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/scratch", "TMPDIR": "/tmp",  # noqa: S108 - its own
               "LANG": "C.UTF-8", "MPLCONFIGDIR": "/tmp"}  # noqa: S108 - the sandbox's own tmpfs
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class SandboxLimits:
    """Per call of custom code; stored in ``DIR/policy.json`` (``medsyft domain policy``)."""

    memory_mb: int = 4096  # address space of each process in the sandbox
    cpu_seconds: int = 600  # CPU time of each process
    wall_seconds: int = 900  # the whole call, then the sandbox is killed
    disk_mb: int = 1024  # the writable tmpfs (/scratch, /tmp)


@dataclass
class Outcome:
    """What one sandboxed call gave: the result, or why it has none."""

    result: Any = None
    error: str | None = None  # for the scientist; None when the code returned *result*
    detail: str = ""  # for the datasite's log: the traceback and the worker's stderr
    stdout: str = ""
    stderr: str = ""


@dataclass
class _Finished:
    returncode: int
    out: bytes
    err: bytes
    timed_out: bool = False
    too_large: bool = False


def run(*, code: str, function: str, name: str, kwargs: dict[str, Any], limits: SandboxLimits,
        data_dir: DataDir) -> Outcome:
    """Call *function* defined by *code* on *kwargs* in a fresh sandbox.

    Raises :class:`SandboxError`, before anything runs, when it cannot run sandboxed.
    """
    bwrap = find_bwrap()
    if not function.isidentifier():
        raise SandboxError(f"`{function}` is not a function name")
    roots = python_roots()
    _refuse_exposed(data_dir, roots)
    with _job_dir(data_dir) as job:
        _write_job(job, code=code, function=function, name=name, kwargs=kwargs, limits=limits)
        finished = _launch(bwrap, _options(limits, roots, job), limits.wall_seconds)
    return _outcome(finished, name, limits)


def find_bwrap() -> str:
    found = shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")
    if found is None:
        raise SandboxError("custom code runs only inside the bubblewrap sandbox, and `bwrap` is not "
                           f"installed on this datasite; {INSTALL_HINT} (it never runs unsandboxed)")
    return found


def probe(data_dir: DataDir, limits: SandboxLimits) -> str | None:
    """None when a sandbox starts and runs Python here, else why not (for the startup log)."""
    try:
        outcome = run(code="def medsyft_probe():\n    return 1\n", function="medsyft_probe",
                      name="medsyft_probe", kwargs={}, limits=limits, data_dir=data_dir)
    except SandboxError as exc:
        return str(exc)
    return None if outcome.error is None and outcome.result == 1 else f"{outcome.error} {outcome.detail}"


def version() -> str:
    try:
        text = subprocess.run([find_bwrap(), "--version"], capture_output=True, text=True,
                              timeout=30, env=_BWRAP_ENV).stdout
    except (SandboxError, OSError, subprocess.SubprocessError):
        return "bubblewrap"
    return text.strip() or "bubblewrap"


def clear_stale(data_dir: DataDir) -> None:
    """Remove job directories a killed datasite left behind (they hold copies of inputs)."""
    for path in data_dir.tmp_dir.glob(f"{JOB_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


# -- the job directory -------------------------------------------------------------------
@contextmanager
def _job_dir(data_dir: DataDir) -> Iterator[Path]:
    data_dir.tmp_dir.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix=JOB_PREFIX, dir=data_dir.tmp_dir))  # 0700
    try:
        yield job
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _write_job(job: Path, *, code: str, function: str, name: str, kwargs: dict[str, Any],
               limits: SandboxLimits) -> None:
    """The worker, the code, and the inputs as values: arrays as ``.npy``, the rest as JSON."""
    arrays = 0

    def store(array: Any) -> str:
        nonlocal arrays
        key, arrays = f"a{arrays}", arrays + 1
        (job / f"{key}.npy").write_bytes(worker.write_npy(array))
        return key

    pairs = []
    for key, value in kwargs.items():
        try:
            pairs.append([{"value": str(key)}, worker.encode(value, store)])
        except ValueError as exc:
            raise SandboxError(f"input `{key}` of `{name}` cannot go into the sandbox: {exc}") from None
    shutil.copyfile(worker.__file__, job / "worker.py")
    (job / worker.CODE).write_text(code)
    limits_in = {"memory_mb": limits.memory_mb, "cpu_seconds": limits.cpu_seconds}
    (job / worker.MANIFEST).write_text(json.dumps(
        {"function": function, "kwargs": {"dict": pairs}, "limits": limits_in}))


# -- bubblewrap --------------------------------------------------------------------------
def python_roots() -> list[str]:
    """The Python install and the site-packages that code may import; bound read-only."""
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                  *site.getsitepackages(), str(Path(os.path.realpath(sys.executable)).parent.parent)}
    roots = sorted(os.path.abspath(p) for p in candidates if os.path.isdir(p))
    kept: list[str] = []
    for root in roots:
        if not any(_inside(root, other) for other in [*kept, "/usr"]):
            kept.append(root)
    return kept


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _refuse_exposed(data_dir: DataDir, roots: list[str]) -> None:
    for root in ["/usr", *roots]:
        if _inside(str(data_dir.path), root):
            raise SandboxError(f"the data directory {data_dir.path} lies inside {root}, which the sandbox "
                               "binds read-only for Python; move the data directory elsewhere")


def _options(limits: SandboxLimits, roots: list[str], job: Path) -> list[str]:
    """bwrap's options, in order: namespaces, environment, read-only binds, then scratch."""
    options = ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", SANDBOX_ID,
               "--gid", SANDBOX_ID, "--hostname", "sandbox", "--die-with-parent", "--new-session",
               "--clearenv"]
    for variable, value in _INSIDE_ENV.items():
        options += ["--setenv", variable, value]
    # /tmp, /scratch and /dev/shm here are the sandbox's own tmpfs, not the host's. /tmp comes
    # first: a Python install under the host's /tmp (a venv in a temporary clone) is bound into it.
    options += ["--size", str(limits.disk_mb << 20), "--tmpfs", "/tmp",  # noqa: S108
                "--ro-bind", "/usr", "/usr", *_top_level(),
                "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for root in roots:
        options += ["--ro-bind", root, root]
    return [*options, "--dev", "/dev", "--proc", "/proc", "--size", str(limits.disk_mb << 20),
            "--tmpfs", "/scratch", "--ro-bind", str(job), "/scratch/in",
            "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",  # noqa: S108 - the sandbox's own
            "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/scratch"]


def _top_level() -> list[str]:
    """``/bin``, ``/lib`` ...: the merged-/usr symlinks as symlinks, real folders read-only."""
    options: list[str] = []
    for name in _TOP_LEVEL:
        if os.path.islink(name):
            options += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            options += ["--ro-bind", name, name]
    return options


def _launch(bwrap: str, options: list[str], wall_seconds: int) -> _Finished:
    """Start the sandbox; its options go through a pipe, so ``/proc/1/cmdline`` shows no host path."""
    payload = b"".join(option.encode() + b"\0" for option in options)
    if len(payload) > 60_000:  # more than a pipe holds before bwrap reads it
        raise SandboxError("the sandbox's options are too long (Python installed in too many places)")
    read_end, write_end = os.pipe()
    os.write(write_end, payload)
    os.close(write_end)
    command = [bwrap, "--args", str(read_end), "--", sys.executable, "-I", "-B",
               "/scratch/in/worker.py", "/scratch/in"]
    try:
        proc = subprocess.Popen(command, pass_fds=(read_end,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_BWRAP_ENV, cwd="/")
    except OSError as exc:
        raise SandboxError(f"cannot start bubblewrap ({exc}); {INSTALL_HINT}") from exc
    finally:
        os.close(read_end)
    return _collect(proc, time.monotonic() + wall_seconds)


def _collect(proc: subprocess.Popen[bytes], deadline: float) -> _Finished:
    """Read stdout (capped) and stderr (its tail) until both close; kill at the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out: bytearray(), err: bytearray()}
    finished = _Finished(0, b"", b"")
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                if finished.timed_out or finished.too_large:
                    break  # killed, and still not closed after the grace period
                finished.timed_out = True
                proc.kill()
                deadline = time.monotonic() + 10
                continue
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                buffer = buffers[key.fd]
                if not chunk:
                    selector.unregister(key.fd)
                elif key.fd == err:
                    buffer += chunk
                    del buffer[:-MAX_LOG]
                elif len(buffer) + len(chunk) > MAX_FRAME:
                    finished.too_large = True
                    proc.kill()
                    selector.unregister(key.fd)
                else:
                    buffer += chunk
    finished.returncode = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    finished.out, finished.err = bytes(buffers[out]), bytes(buffers[err])
    return finished


# -- reading what came back --------------------------------------------------------------
def _outcome(finished: _Finished, name: str, limits: SandboxLimits) -> Outcome:
    log = finished.err.decode("utf-8", "replace")
    frame = _frame(finished.out)
    if finished.timed_out:
        return Outcome(error=f"medsyft sandbox: `{name}` ran past its time limit ({limits.wall_seconds} s "
                             "of wall-clock time) and was stopped; the data owner sets it with "
                             "`medsyft domain policy --sandbox-wall-seconds`", detail=log)
    if finished.too_large:
        return Outcome(error=f"medsyft sandbox: `{name}` sent back more than {MAX_FRAME >> 20} MiB; "
                             "return a smaller result", detail=log)
    if frame is None:
        return _no_frame(finished, name, limits, log)
    texts = {k: str(frame.get(k, ""))[-worker.MAX_TEXT:] for k in ("stdout", "stderr")}
    if frame.get("ok") is True:
        try:
            return Outcome(result=_decode_result(frame), detail=log, **texts)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            return Outcome(error=_generic(name), detail=f"unreadable result from the sandbox: {exc}\n{log}",
                           **texts)
    detail = f"{frame.get('traceback', '')}\n{log}"
    kind = frame.get("error")
    if kind == "MemoryError":
        return Outcome(error=_memory_error(name, limits), detail=detail, **texts)
    if kind == "UnsupportedResult":
        return Outcome(error=f"medsyft sandbox: `{name}` returned a value that cannot leave the sandbox; "
                             f"custom code may return {worker.JSON_KINDS}", detail=detail, **texts)
    return Outcome(error=_generic(name), detail=detail, **texts)


def _frame(out: bytes) -> dict[str, Any] | None:
    try:
        frame = json.loads(out)
    except (ValueError, RecursionError):
        return None
    return frame if isinstance(frame, dict) else None


def _decode_result(frame: dict[str, Any]) -> Any:
    blobs = frame.get("blobs") or {}
    if not isinstance(blobs, dict):
        raise ValueError("blobs is not a mapping")
    return worker.decode(frame["result"], lambda key: worker.read_npy(
        base64.b64decode(str(blobs[key]), validate=True)))


def _no_frame(finished: _Finished, name: str, limits: SandboxLimits, log: str) -> Outcome:
    """The worker ended without a frame: bwrap could not start, a limit killed it, or it crashed."""
    if log.startswith("bwrap:") and finished.returncode == 1:
        raise SandboxError(f"custom code runs only inside the bubblewrap sandbox, which cannot start here "
                           f"({log.splitlines()[0]}); {INSTALL_HINT} and let it create user namespaces "
                           "(sysctl user.max_user_namespaces > 0); it never runs unsandboxed")
    signal_number = finished.returncode - 128  # bwrap's status for a command killed by a signal
    cpu = f"its CPU-time limit ({limits.cpu_seconds} s)"
    if signal_number == signal.SIGXCPU:
        return Outcome(error=f"medsyft sandbox: `{name}` ran past {cpu} and was stopped; the data owner "
                             "sets it with `medsyft domain policy --sandbox-cpu-seconds`", detail=log)
    if signal_number == signal.SIGKILL:
        return Outcome(error=f"medsyft sandbox: `{name}` was killed: past {cpu} or out of memory "
                             f"({limits.memory_mb} MiB)", detail=log)
    if "MemoryError" in log:
        return Outcome(error=_memory_error(name, limits), detail=log)
    return Outcome(error=_generic(name), detail=f"the sandbox ended (status {finished.returncode}) "
                                                f"without a result\n{log}")


def _memory_error(name: str, limits: SandboxLimits) -> str:
    return (f"medsyft sandbox: `{name}` ran out of memory (its limit is {limits.memory_mb} MiB); the data "
            "owner sets it with `medsyft domain policy --sandbox-memory-mb`")


def _generic(name: str) -> str:
    """PySyft's own words for code that raised: the traceback may show private values."""
    return f"Exception encountered while running {name}, please contact the Server Admin for more info."
