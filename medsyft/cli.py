"""``medsyft``: the single command-line entry point.

Each room registers its own subcommands (``domains.cli`` adds ``domain``); this
module only assembles them, so ``domains`` never needs to import ``orchestrator``.
An expected failure prints one line, ``medsyft: error: ...``, and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line naming the problem and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from domains.cli import register as register_domain
    from domains.inference.cli import register as register_inference
    from medsyft.demo import register as register_demo
    from medsyft.federation import register as register_federation
    from medsyft.keys import register as register_keys
    from orchestrator.cli import register as register_orchestrator

    parser = OneLineParser(
        prog="medsyft",
        description="Federated learning across hospital PySyft datasites.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    register_domain(sub)
    register_orchestrator(sub)
    register_keys(sub)
    register_federation(sub)
    register_demo(sub)
    register_inference(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from domains.errors import MedsyftDomainError
    from domains.runtime.errors import TrainingError
    from orchestrator.errors import OrchestratorError
    from privacy.errors import PrivacyError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (MedsyftDomainError, OrchestratorError, TrainingError, PrivacyError) as exc:
        print(f"medsyft: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medsyft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `medsyft domain status | head` closed our stdout early: not an error worth a trace.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def console() -> NoReturn:
    """The ``medsyft`` command: :func:`main`, then an exit that skips tearing the interpreter down.

    With PySyft and torch loaded, Python's own exit spends 1-1.5 s here freeing modules and
    objects that the OS frees at once when the process ends. What an exit must do still happens,
    in Python's order: the threading shutdown (executors finish, other threads are joined), then
    the ``atexit`` handlers (logging's flush, weakref finalizers such as temporary directories'
    cleanup), then stdout and stderr are flushed. An exception or an argparse error leaves the
    ordinary way.
    """
    import atexit
    import contextlib
    import threading

    code = main()
    try:
        shutdown = getattr(threading, "_shutdown", None)  # what Py_Finalize runs first
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    console()
