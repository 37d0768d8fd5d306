"""quiet() is used from parallel per-site threads: stdout must come back whatever the order."""

from __future__ import annotations

import random
import sys
import threading
import time

from domains.site.quiet import quiet


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


def test_quiet_in_a_hung_thread_does_not_silence_others(capsys: object) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck_call() -> None:  # like a site call abandoned after a round timeout
        with quiet():
            entered.set()
            print("noise from the stuck call")
            release.wait(10)

    worker = threading.Thread(target=stuck_call)
    worker.start()
    entered.wait(5)
    print("round 2 table")  # the main thread keeps talking while the straggler hangs
    release.set()
    worker.join()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "round 2 table" in out and "noise" not in out


def test_quiet_hides_progress_bars_on_stderr_but_not_other_threads(capsys: object) -> None:
    from tqdm import tqdm

    before = sys.stderr
    done = threading.Event()

    def other_thread() -> None:
        done.wait(5)
        print("other thread's warning", file=sys.stderr)

    helper = threading.Thread(target=other_thread)
    helper.start()
    with quiet():
        for _ in tqdm(range(3), desc="Uploading"):  # as PySyft's upload draws it
            pass
        done.set()
        helper.join()
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "Uploading" not in err and "other thread's warning" in err
    assert sys.stderr is before
