"""Log in to a running datasite as its admin, using the credentials in its data directory.

PySyft's own output is kept out of the owner's terminal by :func:`domains.site.quiet.quiet`
(re-exported here for the modules that already import it from this one).
"""

from __future__ import annotations

from typing import Any

from domains.errors import DatasiteNotRunning
from domains.site.datadir import DataDir
from domains.site.lifecycle import metadata
from domains.site.quiet import quiet

__all__ = ["admin_client", "quiet", "require_running"]


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
