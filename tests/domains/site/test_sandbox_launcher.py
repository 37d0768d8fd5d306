"""The custom-code sandbox's launcher, on its own: real bubblewrap, real worker processes.

No datasite here (tests/integration/test_sandbox.py runs the whole path through PySyft);
these check the launcher's promises one by one: values in and out, limits, and failing
closed when bubblewrap is missing or broken. Skipped where ``bwrap`` is not installed.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from domains.errors import DataDirError, SandboxError
from domains.review.code_policy import POLICY_FILE, load_policy, save_policy
from domains.site import sandbox, sandbox_worker
from domains.site.datadir import DataDir
from domains.site.sandbox import SandboxLimits

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
LIMITS = SandboxLimits(memory_mb=1024, cpu_seconds=20, wall_seconds=120, disk_mb=64)


def _run(tmp_path: Path, source: str, limits: SandboxLimits = LIMITS, **kwargs: object) -> sandbox.Outcome:
    return sandbox.run(code=source, function="f", name="f", kwargs=dict(kwargs), limits=limits,
                       data_dir=DataDir(tmp_path))


@needs_bwrap
def test_sandbox_returns_arrays_and_json_values(tmp_path: Path) -> None:
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    source = ("def f(images, cfg):\n    print('seen', images.shape)\n"
              "    return {'mean': images.mean(axis=0), 'n': images.shape[0], 7: (cfg['k'], None),\n"
              "            'total': images.sum()}\n")
    outcome = _run(tmp_path, source, images=images, cfg={"k": [1.5, "x"]})
    assert outcome.error is None, outcome.detail
    assert outcome.result["n"] == 2 and outcome.result[7] == ([1.5, "x"], None)
    np.testing.assert_array_equal(outcome.result["mean"], images.mean(axis=0))
    assert outcome.result["total"] == int(images.sum()) and type(outcome.result["total"]) is int
    assert outcome.stdout == "seen (2, 3, 4)\n"
    assert not list(DataDir(tmp_path).tmp_dir.iterdir())  # the job directory is gone


@needs_bwrap
def test_sandbox_sees_no_host_files_and_only_its_own_processes(tmp_path: Path) -> None:
    secret = tmp_path / "credentials.json"
    secret.write_text('{"password": "hunter2"}')
    source = ("def f():\n    import os\n"
              "    out = {'procs': sorted(p for p in os.listdir('/proc') if p.isdigit())}\n"
              f"    try:\n        out['read'] = open({str(secret)!r}).read()\n"
              "    except OSError as exc:\n        out['read'] = type(exc).__name__\n"
              "    out['env'] = sorted(os.environ)\n    out['uid'] = os.getuid()\n    return out\n")
    outcome = _run(tmp_path, source)
    assert outcome.result["read"] == "FileNotFoundError"
    assert outcome.result["procs"] == ["1", "2"]  # bwrap's reaper and the worker
    assert set(outcome.result["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "MPLCONFIGDIR", "PWD"}
    assert outcome.result["uid"] == 65534


def test_inputs_it_cannot_send_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match=r"input `cfg` of `f`.*builtins\.set"):
        _run(tmp_path, "def f(cfg):\n    return 1\n", cfg={1, 2})
    with pytest.raises(SandboxError, match=r"input `images`.*Python objects"):
        _run(tmp_path, "def f(images):\n    return 1\n", images=np.array([object()]))


@needs_bwrap
def test_results_it_cannot_read_back_are_refused(tmp_path: Path) -> None:
    outcome = _run(tmp_path, "def f():\n    return {1, 2}\n")
    assert outcome.error is not None and "cannot leave the sandbox" in outcome.error


@needs_bwrap
def test_code_that_raises_gets_pysyft_words_and_the_log_gets_the_traceback(tmp_path: Path) -> None:
    outcome = _run(tmp_path, "def f():\n    raise ValueError('private value 42')\n")
    assert outcome.error is not None and outcome.error.startswith("Exception encountered while running f")
    assert "42" not in outcome.error and "private value 42" in outcome.detail


@needs_bwrap
def test_memory_cpu_and_wall_clock_limits_stop_the_code(tmp_path: Path) -> None:
    memory = _run(tmp_path, "def f():\n    return len(bytearray(8 << 30))\n")
    assert memory.error is not None and "out of memory" in memory.error and "1024 MiB" in memory.error
    busy = _run(tmp_path, "def f():\n    while True:\n        pass\n",
                limits=SandboxLimits(memory_mb=1024, cpu_seconds=2, wall_seconds=120))
    assert busy.error is not None and "CPU-time limit (2 s)" in busy.error
    asleep = _run(tmp_path, "def f():\n    import time\n    time.sleep(600)\n",
                  limits=SandboxLimits(memory_mb=1024, cpu_seconds=20, wall_seconds=3))
    assert asleep.error is not None and "time limit (3 s of wall-clock time)" in asleep.error


def test_missing_bubblewrap_refuses_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda *_, **__: None)
    with pytest.raises(SandboxError, match=r"apt-get install bubblewrap.*never runs unsandboxed"):
        _run(tmp_path, "def f():\n    return 1\n")
    assert "apt-get install bubblewrap" in (sandbox.probe(DataDir(tmp_path), LIMITS) or "")


def test_bubblewrap_without_namespaces_refuses_to_run(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bwrap that cannot create namespaces (as in many containers) must not mean 'run anyway'."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(SandboxError, match=r"cannot start here .*No permissions.*apt-get install bubblewrap"):
        _run(tmp_path / "site", "def f():\n    return 1\n")


def test_worker_output_is_decoded_strictly() -> None:
    """What the worker sends belongs to the scientist: no pickles, no lying headers, no tags
    other than the encoding's."""
    def refuse(tagged: object) -> None:
        with pytest.raises(ValueError):
            sandbox_worker.decode(tagged, lambda key: None)

    refuse({"pickle": "gASVAAAA"})
    refuse({"value": {"a": 1}})
    refuse({"ndarray": "../../etc/passwd"})
    refuse({"value": 1, "list": []})
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        sandbox_worker.read_npy(pickled.getvalue())
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(lying, {"descr": "<f8", "fortran_order": False,
                                                 "shape": (1 << 40,)})
    with pytest.raises(ValueError, match="does not match"):
        sandbox_worker.read_npy(lying.getvalue() + b"\0" * 8)
    zipped = base64.b64encode(b"PK\x03\x04").decode()  # an npz's start: np.load would open it
    frame = {"ok": True, "result": {"ndarray": "a0"}, "blobs": {"a0": zipped}}
    outcome = sandbox._outcome(sandbox._Finished(0, json.dumps(frame).encode(), b""), "f", LIMITS)
    assert outcome.error is not None and "unreadable result" in outcome.detail


def test_site_policy_keeps_sandbox_limits_and_reads_old_files(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    data_dir.file(POLICY_FILE).write_text(json.dumps({"allow_custom_code": True, "custom_approved": {}}))
    assert load_policy(data_dir).sandbox == SandboxLimits()  # written before the sandbox existed
    policy = load_policy(data_dir)
    policy.sandbox = SandboxLimits(memory_mb=512, cpu_seconds=5, wall_seconds=9, disk_mb=32)
    save_policy(data_dir, policy)
    assert load_policy(data_dir).sandbox == policy.sandbox
    raw = json.loads(data_dir.file(POLICY_FILE).read_text())
    data_dir.file(POLICY_FILE).write_text(json.dumps({**raw, "sandbox": {"memory_mb": 0}}))
    with pytest.raises(DataDirError, match="memory_mb must be a whole number >= 1"):
        load_policy(data_dir)
