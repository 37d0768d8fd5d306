"""quiet() is used from parallel per-site threads: stdout must come back whatever the order."""

from __future__ import annotations

import random
import sys
import threading
import time

from domains.quiet import quiet


def test_quiet_restores_stdout_after_interleaved_threads(capsys: object) -> None:
    before = sys.stdout

    def worker() -> None:
        for _ in range(100):
            with quiet():
                print("pysyft noise")
                time.sleep(random.random() / 2000)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stdout is before
    print("visible")
    assert "visible" in capsys.readouterr().out  # type: ignore[attr-defined]


def test_quiet_swallows_output_inside(capsys: object) -> None:
    with quiet():
        print("hidden")
    assert "hidden" not in capsys.readouterr().out  # type: ignore[attr-defined]
