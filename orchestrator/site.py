"""One datasite as a data scientist sees it: a logged-in PySyft client and what it may read.

A scientist sees dataset names, their public metadata (size, label schema,
image size) and mocks; never private data. :func:`connect_all` logs in to every
site of a job in parallel, since each login costs about a second.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains import datasite_metadata, parse_metadata, quiet
from domains.shared.tls import TLSClient, preflight, syft_login
from orchestrator.config import SiteConfig
from orchestrator.errors import SiteUnavailable


def healthy(url: str, timeout: float = 3.0, tls: TLSClient | None = None) -> bool:
    context = tls.ssl_context() if tls is not None else None
    return bool((datasite_metadata(url, timeout, context=context) or {}).get("name"))


@dataclass
class Site:
    """A datasite the scientist is logged in to."""

    name: str
    url: str
    client: Any
    server_name: str = ""  # the datasite's own name, as the job's roster names it
    tls: TLSClient | None = None

    @classmethod
    def connect(cls, config: SiteConfig, base: Path) -> Site:
        """Log in; TLS is checked first, so no password is sent to a site that fails verification."""
        tls = config.tls(base)
        preflight(config.url, tls, site=config.name)  # TLSProblem: one line naming the site
        server_name = str((datasite_metadata(config.url, 3.0, context=tls.ssl_context() if tls else None)
                           or {}).get("name") or "")
        if not server_name:
            raise SiteUnavailable(f"site '{config.name}' does not answer at {config.url}; "
                                  "is its datasite running?")
        password = config.password(base)
        try:
            with quiet():
                client = syft_login(config.url, email=config.email, password=password, tls=tls)
        except Exception as exc:
            raise SiteUnavailable(f"site '{config.name}': login as {config.email} failed "
                                  f"({exc}); check the credentials") from exc
        return cls(config.name, config.url, client, server_name, tls)

    def healthy(self) -> bool:
        return healthy(self.url, tls=self.tls)

    def datasets(self) -> pd.DataFrame:
        rows = []
        with quiet():
            for ds in self.client.datasets:
                meta = parse_metadata(ds.description)
                rows.append({"site": self.name, "dataset": ds.name, "images": meta.get("n"),
                             "image_size": meta.get("image_size"), "channels": meta.get("channels"),
                             "labels": meta.get("label_names"), "synthetic": meta.get("synthetic")})
        return pd.DataFrame(rows)

    def metadata(self, dataset: str) -> dict[str, Any]:
        with quiet():
            found = {d.name: d for d in self.client.datasets}  # one listing call, not two
        if dataset not in found:
            raise SiteUnavailable(f"site '{self.name}' has no dataset '{dataset}' "
                                  f"(it has: {', '.join(found) or 'none'})")
        return parse_metadata(found[dataset].description)

    def _dataset(self, dataset: str) -> Any:
        """The dataset named *dataset*, from one listing call.

        PySyft's ``client.datasets[name]`` is the same listing, but first it looks for a
        ``get_index`` endpoint, which the dataset service does not have. That miss re-fetches
        the whole API (about 0.3 s of this process's CPU) every time.
        """
        with quiet():
            return self.client.datasets.get_all()[dataset]

    def asset(self, dataset: str, name: str) -> Any:
        with quiet():
            return self._dataset(dataset).assets[name]

    def mock(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """The public mock images and labels, made of none of the private data: as many images as it
        has, or a sample of them where the site keeps its pixels out of PySyft (`pysyft_images`)."""
        with quiet():
            assets = self._dataset(dataset).assets
            return np.asarray(assets["images"].mock), np.asarray(assets["labels"].mock)


def connect_all(configs: list[SiteConfig], base: Path) -> list[Site]:
    with ThreadPoolExecutor(max(1, len(configs))) as pool:
        return list(pool.map(lambda c: Site.connect(c, base), configs))
