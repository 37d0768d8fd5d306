"""Running one datasite: its data directory, its PySyft process, its keys, accounts and audit log.

Hospital IT's side of a datasite. A data directory (:class:`DataDir`) is the datasite's identity;
:mod:`~domains.site.lifecycle` starts and stops the PySyft process (:mod:`~domains.site.server`)
that serves it; inside that process, :mod:`~domains.site.syft_guard`, :mod:`~domains.site.syft_policy`
and :mod:`~domains.site.syft_speedups` enforce medsyft's access rules and site policy and speed up
PySyft's per-call path, and custom code runs in a bubblewrap :mod:`~domains.site.sandbox`. The
key-ceremony shares (:mod:`~domains.site.he_key`, :mod:`~domains.site.site_keys`), scientist
accounts and the audit log complete a site. :class:`Datasite` is the data owner's Python handle.

Names are imported on first use (:mod:`domains.lazy`): PySyft takes seconds to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.site.accounts import add_scientist
    from domains.site.audit import AuditLog
    from domains.site.connection import admin_client
    from domains.site.datadir import DataDir, DatasiteConfig
    from domains.site.datasite import Datasite
    from domains.site.lifecycle import DeployResult, deploy, free_ports, read_pid, stop
    from domains.site.quiet import quiet
    from domains.site.sandbox import SandboxLimits
    from domains.site.status import StatusReport, status

__all__, __getattr__, __dir__ = lazy_exports("domains.site", {
    "add_scientist": "domains.site.accounts",
    "AuditLog": "domains.site.audit",
    "admin_client": "domains.site.connection",
    "DataDir": "domains.site.datadir",
    "DatasiteConfig": "domains.site.datadir",
    "Datasite": "domains.site.datasite",
    "DeployResult": "domains.site.lifecycle",
    "deploy": "domains.site.lifecycle",
    "free_ports": "domains.site.lifecycle",
    "read_pid": "domains.site.lifecycle",
    "stop": "domains.site.lifecycle",
    "quiet": "domains.site.quiet",
    "SandboxLimits": "domains.site.sandbox",
    "StatusReport": "domains.site.status",
    "status": "domains.site.status",
})
