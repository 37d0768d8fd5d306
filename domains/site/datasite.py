"""The data owner's Python API: one object per datasite, addressed by its data directory.

Everything the ``medsyft domain`` commands do is a method here, so a data owner
can work from a notebook::

    >>> from domains import Datasite
    >>> site = Datasite("/srv/st-mary")          # doctest: +SKIP
    >>> site.requests()                           # doctest: +SKIP
    >>> site.approve("3fa2")                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from domains import budget
from domains.data.publish import PublishRequest, PublishResult, publish
from domains.review.requests import RequestBook, ReviewReport
from domains.site import database, he_key, lifecycle, site_keys
from domains.site import tls as site_tls
from domains.site.accounts import add_scientist
from domains.site.audit import AuditLog
from domains.site.datadir import AUDIT_FILE, DataDir, DatasiteConfig
from domains.site.status import StatusReport, status

if TYPE_CHECKING:
    from domains.site.launcher import Launcher


class Datasite:
    """A hospital's datasite as its data owner sees it."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = DataDir(data_dir)

    @classmethod
    def deploy(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        name: str | None,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = lifecycle.START_TIMEOUT_S,
        he_key_file: str | os.PathLike[str] | None = None,
        site_keys_file: str | os.PathLike[str] | None = None,
        kit: str | os.PathLike[str] | None = None,
        tls_files: lifecycle.TLSFiles | None = None,
        insecure_http: bool = False,
        db: str | None = None,
        db_password: str | None = None,
        launcher: Launcher | None = None,
    ) -> Datasite:
        """Start the datasite in the background and return once it answers.

        *he_key_file* is the hospital secret context of ``medsyft keys init``; *site_keys_file*
        this hospital's ``site-keys.medsyftkey`` of ``medsyft keys init --site`` (its site must be
        this datasite's name, its roster's HE key this datasite's). Both are checked before the
        start and copied into the data directory after it. *kit* is this hospital's folder of
        ``medsyft federation init``: HTTPS with mutual TLS, and the two key files unless given.
        *db* keeps PySyft's store in PostgreSQL (``postgresql://USER@HOST:PORT/DB``, *db_password*).
        *launcher* (:class:`domains.site.launcher.Launcher`) forks the datasite from a process that
        imported PySyft once for every site this host starts.
        """
        site = cls(data_dir)
        if kit is not None:
            files = site_tls.kit_files(kit)
            tls_files = lifecycle.TLSFiles(files["cert"], files["key"], files["ca"])
            he_key_file = he_key_file if he_key_file is not None else files.get("he_key")
            site_keys_file = site_keys_file if site_keys_file is not None else files.get("site_keys")
        key = he_key.check(he_key_file) if he_key_file is not None else None
        if site_keys_file is not None:
            site_keys.check_deploy(site.data_dir, site_keys_file, name=name, he_key_id=key)
        lifecycle.deploy(site.data_dir, name=name, port=port, host=host, detach=True,
                         timeout=timeout, tls_files=tls_files, insecure_http=insecure_http,
                         db=None if db is None else database.parse(db), db_password=db_password,
                         launcher=launcher)
        if he_key_file is not None:
            he_key.install(site.data_dir, he_key_file)
        if site_keys_file is not None:
            site_keys.install(site.data_dir, site_keys_file)
        return site

    def released_model(self, job_id: str) -> Any:
        """A finished encrypted job's final model, for local inference, once this owner approved
        its release (:mod:`domains.runtime.final_model`)."""
        from domains.inference.artifact import load_datasite_copy

        return load_datasite_copy(self.data_dir, job_id).network()

    def budget(self) -> pd.DataFrame:
        """ε budget, spent and reserved of every dataset (``medsyft domain budget``)."""
        return budget.status_frame(self.data_dir)

    @property
    def config(self) -> DatasiteConfig:
        return self.data_dir.read_config()

    @property
    def url(self) -> str:
        return self.config.url

    def stop(self) -> int | None:
        return lifecycle.stop(self.data_dir)

    def status(self) -> StatusReport:
        return status(self.data_dir)

    def publish(self, source: str | os.PathLike[str] | None = None, **options: Any) -> PublishResult:
        """Publish a dataset; *options* are :class:`domains.data.publish.PublishRequest` fields."""
        src = Path(source) if source is not None else None
        return publish(self.data_dir, PublishRequest(source=src, **options))

    def add_scientist(self, email: str, *, password: str | None = None, name: str | None = None) -> str:
        return add_scientist(self.data_dir, email=email, password=password, name=name)

    def requests(self) -> pd.DataFrame:
        return RequestBook(self.data_dir).table()

    def review(self, request_id: str) -> ReviewReport:
        return RequestBook(self.data_dir).review(request_id)

    def approve(self, request_id: str, *, allow_custom_code: bool = False) -> ReviewReport:
        return RequestBook(self.data_dir).approve(request_id, allow_custom_code=allow_custom_code)

    def deny(self, request_id: str, *, reason: str) -> ReviewReport:
        return RequestBook(self.data_dir).deny(request_id, reason=reason)

    def audit(self, *, sync: bool = True) -> pd.DataFrame:
        """The audit log as a table; *sync* first copies in executions the datasite recorded."""
        log = AuditLog(self.data_dir.file(AUDIT_FILE))
        if sync and lifecycle.metadata(self.url, context=site_tls.admin_context(self.data_dir)) is not None:
            RequestBook(self.data_dir).sync_executions()
        log.verify()
        return log.to_frame()
