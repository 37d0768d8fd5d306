"""Warming the runtime imports what a first call needs, never fails the datasite, and can be off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from domains.runtime import warm

REPO = Path(__file__).resolve().parents[3]


def _fresh_python(body: str) -> subprocess.CompletedProcess[str]:
    """*body* in a new interpreter with warming on and ``warm`` imported (nothing else yet)."""
    code = ("import os, socket, sys, time\n"
            "os.environ['MEDSYFT_WARM_RUNTIME'] = '1'\n"
            "from domains.runtime import warm\n" + body)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          timeout=900)


def test_warming_imports_the_runtime_in_the_background() -> None:
    out = _fresh_python(
        "assert 'torch' not in sys.modules\n"
        "warm.start().join(600)\n"
        "print(sorted(m for m in ('torch', 'opacus', 'monai.metrics', 'tenseal', 'domains.runtime.entry')"
        " if m in sys.modules))\n")
    assert out.stdout.strip() == "['domains.runtime.entry', 'monai.metrics', 'opacus', 'tenseal', 'torch']"
    assert "medsyft: runtime warmed in" in out.stderr


def test_a_failing_import_is_logged_and_left_to_the_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert warm.warm(("json", "no_such_module_for_medsyft")) >= 0
    assert "warming no_such_module_for_medsyft failed (ModuleNotFoundError)" in capsys.readouterr().err


def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warm.ENV_SWITCH, "0")
    assert warm.start() is None


def test_a_datasite_warms_only_once_it_serves() -> None:
    """Warming competes with the datasite's own start-up (and its neighbours') on a small machine,
    so ``serving=`` holds the imports back until the port accepts connections."""
    out = _fresh_python(
        "sock = socket.socket(); sock.bind(('127.0.0.1', 0))\n"
        "thread = warm.start(serving=('127.0.0.1', sock.getsockname()[1]))\n"
        "time.sleep(1.5)\n"
        "print('opacus' in sys.modules)\n"
        "sock.listen(); thread.join(600)\n"
        "print('opacus' in sys.modules)\n")
    assert out.stdout.split() == ["False", "True"]
