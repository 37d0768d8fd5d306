"""Datasite liveness: a pid file is believed only for the process it was written for (psutil)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from domains.site import lifecycle
from domains.site.datadir import PID_FILE, DataDir


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    site = DataDir(tmp_path / "site")
    lifecycle.initialize(site, name="s", port=1, host="127.0.0.1")
    return site


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not a datasite."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _pid_file(data_dir: DataDir, text: str) -> None:
    data_dir.file(PID_FILE).write_text(text)


def test_a_reused_pid_is_not_taken_for_the_datasite(data_dir: DataDir,
                                                    sleeper: subprocess.Popen[bytes]) -> None:
    """The pid file names a live process, but one started at another time: the datasite is gone."""
    started = psutil.Process(sleeper.pid).create_time()
    _pid_file(data_dir, f"{sleeper.pid}\n{started - 3600!r}\n")
    assert lifecycle.read_pid(data_dir) is None
    assert lifecycle.stop(data_dir) is None  # and stop leaves that process alone
    assert sleeper.poll() is None and not data_dir.file(PID_FILE).exists()


@pytest.mark.parametrize("which", ["own", "sleep"])
def test_an_old_pid_file_naming_another_process_is_not_a_running_datasite(
        data_dir: DataDir, sleeper: subprocess.Popen[bytes], which: str) -> None:
    """Pid files from before the start time was recorded: the command line must be the datasite's."""
    import os

    _pid_file(data_dir, f"{os.getpid() if which == 'own' else sleeper.pid}\n")
    assert lifecycle.read_pid(data_dir) is None


def test_an_old_pid_file_of_this_directorys_server_is_still_recognised(data_dir: DataDir) -> None:
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "domains.site.server",
                                 "--data-dir", str(data_dir.path)])
    try:
        _pid_file(data_dir, f"{stand_in.pid}\n")
        assert lifecycle.read_pid(data_dir) == stand_in.pid
        other = DataDir(data_dir.path.parent / "other")  # the same server command for another directory
        other.path.mkdir()
        _pid_file(other, f"{stand_in.pid}\n")
        assert lifecycle.read_pid(other) is None
    finally:
        stand_in.kill()
        stand_in.wait()


def test_the_recorded_process_is_recognised_and_stopped(data_dir: DataDir,
                                                        sleeper: subprocess.Popen[bytes]) -> None:
    lifecycle._write_pid_file(data_dir, sleeper.pid)
    pid, started = data_dir.file(PID_FILE).read_text().split()
    assert int(pid) == sleeper.pid and float(started) == psutil.Process(sleeper.pid).create_time()
    assert lifecycle.read_pid(data_dir) == sleeper.pid
    assert lifecycle.stop(data_dir, timeout=30) == sleeper.pid
    assert sleeper.poll() is not None  # terminated (and reaped: it was our child)
    assert not data_dir.file(PID_FILE).exists()
    assert "stop" in data_dir.file("audit.jsonl").read_text()


@pytest.mark.parametrize("text", ["", "not-a-pid\n", "0\n", "-1\n", "123 yesterday\n"])
def test_a_damaged_pid_file_means_not_running(data_dir: DataDir, text: str) -> None:
    _pid_file(data_dir, text)
    assert lifecycle.read_pid(data_dir) is None


def test_an_exited_unreaped_datasite_is_not_running(data_dir: DataDir) -> None:
    proc = subprocess.Popen(["true"])
    lifecycle._write_pid_file(data_dir, proc.pid)
    deadline = time.monotonic() + 30
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert lifecycle.read_pid(data_dir) is None
    finally:
        proc.wait()


def test_an_exited_datasite_that_another_process_has_yet_to_reap_counts_as_stopped() -> None:
    """A launcher-forked datasite that outlived its launcher is reaped by the host's init, in its own
    time; a stop must not wait on that zombie (psutil's own wait would, until its timeout)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
         "print(pid, flush=True)\ntime.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        zombie = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 30
        while zombie.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert zombie.status() == psutil.STATUS_ZOMBIE  # exited, and not this process's child
        with pytest.raises(psutil.TimeoutExpired):
            zombie.wait(timeout=0.1)
        assert lifecycle.wait_gone(zombie, timeout=0)
    finally:
        parent.kill()
        parent.wait()
