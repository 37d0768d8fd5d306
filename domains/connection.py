"""Log in to a running datasite as its admin, using the credentials in its data directory.

PySyft prints banners, progress bars and warnings to stdout on most calls; a
data owner's terminal should show medsyft's tables, so :func:`quiet` swallows
them (they stay visible with ``MEDSYFT_VERBOSE=1``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

from domains.datadir import DataDir
from domains.errors import DatasiteNotRunning
from domains.lifecycle import metadata


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence PySyft's stdout chatter and warnings inside the block."""
    if os.environ.get("MEDSYFT_VERBOSE"):
        yield
        return
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def require_running(data_dir: DataDir) -> str:
    """The datasite's URL, or DatasiteNotRunning with the command that starts it."""
    config = data_dir.read_config()
    if metadata(config.url) is None:
        raise DatasiteNotRunning(
            f"datasite '{config.name}' is not running at {config.url}; start it with "
            f"`medsyft domain deploy --data-dir {data_dir.path} --detach`"
        )
    return config.url


def admin_client(data_dir: DataDir) -> Any:
    """A PySyft client logged in as this datasite's admin."""
    url = require_running(data_dir)
    creds = data_dir.read_credentials()
    with quiet():
        import syft as sy

        return sy.login(url=url, email=creds.email, password=creds.password)
