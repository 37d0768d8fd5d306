"""Start and stop a datasite process for a data directory (hospital IT's side).

Deploy never imports PySyft in the calling process: it writes the identity files,
launches ``python -m domains.site.server`` and waits until the datasite answers on
``/api/v2/metadata``. That keeps ``medsyft domain deploy`` quick to fail on bad
input (port in use, unwritable directory) before anything heavy happens.

``DIR/datasite.pid`` holds the datasite's pid (line 1) and its start time as psutil reports it
(line 2). A pid alone can name another process once the datasite is gone and the pid is reused;
the start time cannot, so a process counts as this directory's datasite only when both agree,
or, when they do not (a pid file from before line 2, or the wall clock stepped since), when its
command line runs ``domains.site.server`` for this very directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from domains.data.metadata import datasite_metadata as metadata
from domains.errors import DeployError
from domains.site import database, tls
from domains.site.audit import AuditLog, local_actor
from domains.site.datadir import (
    AUDIT_FILE,
    CREDENTIALS_FILE,
    LOG_FILE,
    PID_FILE,
    Credentials,
    DataDir,
    DatasiteConfig,
    generate_password,
)
from domains.site.server import inherited_environment
from privacy.durable import atomic_write

if TYPE_CHECKING:
    from domains.site.launcher import Launcher

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
START_TIMEOUT_S = 120.0
_START_SLACK_S = 1.0  # psutil derives start times from the boot time, which /proc gives in whole seconds


class DatasiteProcess(Protocol):
    """What deploy needs of a started datasite: ``subprocess.Popen`` or a launcher's child."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class DeployResult:
    config: DatasiteConfig
    pid: int
    created: bool
    credentials_file: Path


def read_pid(data_dir: DataDir) -> int | None:
    """The pid of this directory's datasite if that process is alive, else None."""
    proc = _datasite_process(data_dir)
    return proc.pid if proc is not None else None


def datasite_identity(data_dir: DataDir) -> tuple[int, float] | None:
    """(pid, start time) of this directory's live datasite process, or None: two processes
    never share both, so a restart changes it."""
    proc = _datasite_process(data_dir)
    if proc is None:
        return None
    try:
        return proc.pid, proc.create_time()
    except psutil.Error:
        return None


def _read_pid_file(data_dir: DataDir) -> tuple[int, float | None] | None:
    """The pid file's pid and start time (None in pid files written before it was recorded)."""
    try:
        fields = data_dir.file(PID_FILE).read_text().split()
        pid = int(fields[0])
        started = float(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        return None
    return (pid, started) if pid > 0 else None


def _datasite_process(data_dir: DataDir) -> psutil.Process | None:
    """The live process the pid file names, if it is this directory's datasite (not a reused pid)."""
    record = _read_pid_file(data_dir)
    if record is None:
        return None
    pid, started = record
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None  # exited; only its parent has yet to reap it
        if started is not None and abs(proc.create_time() - started) <= _START_SLACK_S:
            return proc
        return proc if _serves(proc, data_dir) else None
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return proc  # another account's process we may not inspect: as before psutil, taken as running


def _serves(proc: psutil.Process, data_dir: DataDir) -> bool:
    """Whether *proc* runs ``domains.site.server`` for *data_dir* (the command :func:`_spawn` starts)."""
    args = proc.cmdline()
    return "domains.site.server" in args and str(data_dir.path) in args


def _write_pid_file(data_dir: DataDir, pid: int) -> None:
    """Record *pid* with the start time that tells it from a later process given the same pid."""
    try:
        started = f"{psutil.Process(pid).create_time()!r}\n"
    except psutil.Error:
        started = ""  # already gone: start-up fails next, and no running process will match
    atomic_write(data_dir.file(PID_FILE), f"{pid}\n{started}", mode=0o644)


def free_ports(n: int) -> list[int]:
    """*n* distinct free loopback ports, for local federations and tests.

    All sockets stay open until every port is chosen: closing one first lets the kernel
    hand the same port to the next ``bind(0)``, and two datasites then race for it.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def check_port_free(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise DeployError(f"--port {port} is not a TCP port; use 1-65535 (e.g. --port 8081)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DeployError(
                    f"port {port} on {host} is already in use; pick a free one with --port"
                ) from exc
            raise DeployError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host") from exc


def initialize(data_dir: DataDir, *, name: str | None, host: str, port: int) -> tuple[DatasiteConfig, bool]:
    """Create the identity of a new datasite, or reuse (and re-address) an existing one."""
    if name is None and not data_dir.is_initialized:
        raise DeployError("a new datasite needs a name; pass --name (e.g. --name st-mary)")
    data_dir.ensure_writable()
    if data_dir.is_initialized:
        config = data_dir.read_config()
        if name is not None and name != config.name:
            raise DeployError(
                f"{data_dir.path} holds datasite '{config.name}', not '{name}'; "
                "omit --name or use another --data-dir"
            )
        config.host, config.port = host, port
        data_dir.write_config(config)
        return config, False
    if name is None:  # unreachable after the first check; keeps mypy's narrowing
        raise DeployError("a new datasite needs a name; pass --name")
    if not NAME_RE.match(name):
        raise DeployError(
            f"--name {name!r} is not a valid datasite name; use letters, digits, '.', '_' "
            "or '-' (at most 63 characters)"
        )
    os.chmod(data_dir.path, 0o700)
    data_dir.write_server_key(secrets.token_hex(32))  # an ed25519 seed, as PySyft's own keys
    data_dir.write_credentials(
        Credentials(email=f"admin@{name.lower()}.datasite", password=generate_password())
    )
    config = DatasiteConfig(name=name, host=host, port=port, server_uid=uuid.uuid4().hex)
    data_dir.write_config(config)  # written last: its presence marks a complete directory
    return config, True


def child_environment() -> dict[str, str]:
    """The environment a datasite process (or a launcher of them) starts with: no secret of the
    deploying shell (the process reads its own from DIR), and this checkout's packages importable
    even when started from elsewhere."""
    env = inherited_environment(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    return env


def _spawn(data_dir: DataDir, *, detach: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "domains.site.server", "--data-dir", str(data_dir.path)]
    env = child_environment()
    old_umask = os.umask(0o077)  # the store holds private images: owner-only files
    try:
        if detach:
            log = open(data_dir.file(LOG_FILE), "ab")  # noqa: SIM115 - handed to the child
            with log:
                return subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    finally:
        os.umask(old_umask)


def _log_tail(data_dir: DataDir, lines: int = 40) -> str:
    try:
        return "\n".join(data_dir.file(LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_healthy(proc: DatasiteProcess, data_dir: DataDir, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(data_dir)
            if "address already in use" in tail.lower():
                raise DeployError(f"{url} is already in use; pick a free port with --port")
            last = tail.strip().splitlines()[-1] if tail.strip() else f"exit code {proc.returncode}"
            raise DeployError(
                f"datasite exited during start-up ({last}); see {data_dir.file(LOG_FILE)}"
            )
        if metadata(url, timeout=1.0, context=tls.admin_context(data_dir)) is not None:
            return
        time.sleep(0.3)
    proc.terminate()
    raise DeployError(f"datasite did not answer at {url} within {timeout:.0f} s; see its log")


@dataclass(frozen=True)
class TLSFiles:
    """What ``deploy --kit`` or ``--tls-cert/--tls-key/--tls-ca`` names; ``ca`` turns on mutual TLS."""

    cert: Path
    key: Path
    ca: Path | None = None


def deploy(
    data_dir: DataDir,
    *,
    name: str | None,
    port: int,
    host: str = "127.0.0.1",
    detach: bool = True,
    timeout: float = START_TIMEOUT_S,
    tls_files: TLSFiles | None = None,
    insecure_http: bool = False,
    db: str | None = None,
    db_password: str | None = None,
    launcher: Launcher | None = None,
) -> tuple[DeployResult, DatasiteProcess]:
    """Start the datasite for *data_dir*; returns once it answers on its port.

    With *tls_files* the datasite serves HTTPS from then on (the files are checked, then copied
    into ``DIR/tls``); without, a datasite that served HTTPS before still does. Plain HTTP on a
    non-loopback *host* is refused unless *insecure_http*. *db* (``postgresql://USER@HOST:PORT/DB``,
    with *db_password*) keeps PySyft's store in PostgreSQL; the database is logged in to first.
    A *launcher* (detached only) forks the datasite from a process that has imported its code
    already (:mod:`domains.site.launcher`: several sites on one host start faster).
    """
    if launcher is not None and not detach:
        raise ValueError("a launcher starts detached datasites only")
    running = read_pid(data_dir) if data_dir.is_initialized else None
    if running is not None:
        url = data_dir.read_config().url
        raise DeployError(
            f"datasite in {data_dir.path} is already running (pid {running}, {url}); "
            "stop it first with `medsyft domain stop`"
        )
    known_name = name or (data_dir.read_config().name if data_dir.is_initialized else None)
    if tls_files is not None:
        tls.check_files(tls_files.cert, tls_files.key, tls_files.ca, name=known_name, host=host)
    elif data_dir.is_initialized and data_dir.read_config().tls:
        tls.check_stored(data_dir, host=host)  # an expired certificate is refused at every start
    else:
        tls.check_plain_http(host, insecure_http=insecure_http)
    _check_database(data_dir, db, db_password)
    check_port_free(host, port)
    config, created = initialize(data_dir, name=name, host=host, port=port)
    if db is not None:
        database.store_password(data_dir, db_password or "")
        config.db = db
    if tls_files is not None:
        tls.install(data_dir, tls_files.cert, tls_files.key, tls_files.ca)
        config.tls, config.client_auth = True, tls_files.ca is not None
    config.insecure_http = not config.tls and not tls.is_loopback(host)
    data_dir.write_config(config)
    proc: DatasiteProcess = (launcher.spawn(data_dir) if launcher is not None
                             else _spawn(data_dir, detach=detach))
    _write_pid_file(data_dir, proc.pid)
    try:
        _wait_healthy(proc, data_dir, config.url, timeout)
    except BaseException:
        data_dir.file(PID_FILE).unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    AuditLog(data_dir.file(AUDIT_FILE)).append(
        "deploy", actor=local_actor(), subject=config.name,
        url=config.url, pid=proc.pid, created=created,
    )
    result = DeployResult(config, proc.pid, created, data_dir.file(CREDENTIALS_FILE))
    return result, proc


def _check_database(data_dir: DataDir, db: str | None, password: str | None) -> None:
    """Refuse a store the datasite could not open, before anything starts or changes."""
    stored = data_dir.read_config().db if data_dir.is_initialized else None
    if db is None:
        if stored:  # a restart: the database must still take our login
            database.check(stored, data_dir.db_password())
        return
    if data_dir.is_initialized and not stored:
        raise DeployError(f"datasite in {data_dir.path} keeps its PySyft store in SQLite; --db would start "
                          "it with an empty store (there is no migration): deploy a new --data-dir")
    database.check(db, password or "")


def stop(data_dir: DataDir, *, timeout: float = 20.0) -> int | None:
    """Stop the datasite (SIGTERM, then SIGKILL); returns its pid, or None if none ran."""
    data_dir.require_initialized()
    proc = _datasite_process(data_dir)
    if proc is None:
        data_dir.file(PID_FILE).unlink(missing_ok=True)
        return None
    _terminate(proc, timeout=timeout)
    record_stop(data_dir, proc.pid)
    return proc.pid


def record_stop(data_dir: DataDir, pid: int) -> None:
    """Forget the pid file and log the stop (after the process has exited)."""
    data_dir.file(PID_FILE).unlink(missing_ok=True)
    AuditLog(data_dir.file(AUDIT_FILE)).append(
        "stop", actor=local_actor(), subject=data_dir.read_config().name, pid=pid
    )


def wait_gone(proc: psutil.Process, *, timeout: float) -> bool:
    """Wait until *proc* has exited; False if it still runs after *timeout* s.

    An exited process whose parent has not reaped it yet (a zombie) counts as gone. psutil's own
    wait counts it as running: a datasite that a launcher forked and that outlived the launcher
    waits on the host's init to reap it, which can take seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=0.05)  # reaps it if it is our own child
            return True
        except psutil.TimeoutExpired:
            pass
        except psutil.NoSuchProcess:
            return True
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False


def _terminate(proc: psutil.Process, *, timeout: float) -> None:
    """SIGTERM, and SIGKILL after *timeout* s. psutil signals only the process it identified
    (same pid and start time), and its wait reaps the datasite when it is our own child."""
    try:
        proc.terminate()
        if not wait_gone(proc, timeout=timeout):
            proc.kill()
            wait_gone(proc, timeout=5.0)
    except psutil.NoSuchProcess:
        return  # it exited by itself meanwhile
    except psutil.AccessDenied as exc:
        raise PermissionError(errno.EPERM, f"not allowed to stop datasite pid {proc.pid}; run medsyft "
                              "as the user that deployed it") from exc

