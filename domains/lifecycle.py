"""Start and stop a datasite process for a data directory (hospital IT's side).

Deploy never imports PySyft in the calling process: it writes the identity files,
launches ``python -m domains.server`` and waits until the datasite answers on
``/api/v2/metadata``. That keeps ``medsyft domain deploy`` quick to fail on bad
input (port in use, unwritable directory) before anything heavy happens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from domains.audit import AuditLog, local_actor
from domains.datadir import (
    AUDIT_FILE,
    CREDENTIALS_FILE,
    LOG_FILE,
    PID_FILE,
    Credentials,
    DataDir,
    DatasiteConfig,
    generate_password,
)
from domains.errors import DeployError
from domains.metadata import datasite_metadata as metadata
from domains.server import inherited_environment

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
START_TIMEOUT_S = 120.0


@dataclass
class DeployResult:
    config: DatasiteConfig
    pid: int
    created: bool
    credentials_file: Path


def read_pid(data_dir: DataDir) -> int | None:
    """The pid of this directory's datasite if that process is alive, else None."""
    try:
        pid = int(data_dir.file(PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"domains.server" not in cmdline.read_bytes():
        return None  # the pid was reused by an unrelated process
    return pid


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


def _spawn(data_dir: DataDir, *, detach: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "domains.server", "--data-dir", str(data_dir.path)]
    env = inherited_environment(dict(os.environ))  # the process reads its secrets from DIR
    # The datasite must import this checkout's packages even when started from elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
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


def _wait_healthy(proc: subprocess.Popen[bytes], data_dir: DataDir, url: str, timeout: float) -> None:
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
        if metadata(url, timeout=1.0) is not None:
            return
        time.sleep(0.3)
    proc.terminate()
    raise DeployError(f"datasite did not answer at {url} within {timeout:.0f} s; see its log")


def deploy(
    data_dir: DataDir,
    *,
    name: str | None,
    port: int,
    host: str = "127.0.0.1",
    detach: bool = True,
    timeout: float = START_TIMEOUT_S,
) -> tuple[DeployResult, subprocess.Popen[bytes]]:
    """Start the datasite for *data_dir*; returns once it answers on its port."""
    running = read_pid(data_dir) if data_dir.is_initialized else None
    if running is not None:
        url = data_dir.read_config().url
        raise DeployError(
            f"datasite in {data_dir.path} is already running (pid {running}, {url}); "
            "stop it first with `medsyft domain stop`"
        )
    check_port_free(host, port)
    config, created = initialize(data_dir, name=name, host=host, port=port)
    proc = _spawn(data_dir, detach=detach)
    data_dir.file(PID_FILE).write_text(f"{proc.pid}\n")
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


def stop(data_dir: DataDir, *, timeout: float = 20.0) -> int | None:
    """Stop the datasite (SIGTERM, then SIGKILL); returns its pid, or None if none ran."""
    data_dir.require_initialized()
    pid = read_pid(data_dir)
    if pid is None:
        data_dir.file(PID_FILE).unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    record_stop(data_dir, pid)
    return pid


def record_stop(data_dir: DataDir, pid: int) -> None:
    """Forget the pid file and log the stop (after the process has exited)."""
    data_dir.file(PID_FILE).unlink(missing_ok=True)
    AuditLog(data_dir.file(AUDIT_FILE)).append(
        "stop", actor=local_actor(), subject=data_dir.read_config().name, pid=pid
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True

