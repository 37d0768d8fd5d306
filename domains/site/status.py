"""What is this datasite doing: reachable or not, its datasets, users and pending requests.

Status works on a stopped datasite too: it then reports what the data
directory knows (name, address, datasets published according to the audit log)
and says how to start it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from domains.data.metadata import parse_metadata
from domains.site.audit import AuditLog
from domains.site.connection import admin_client, quiet
from domains.site.datadir import AUDIT_FILE, DataDir, DatasiteConfig
from domains.site.lifecycle import metadata, read_pid
from domains.site.tls import admin_context


@dataclass
class StatusReport:
    name: str
    url: str
    pid: int | None
    reachable: bool
    datasets: pd.DataFrame = field(default_factory=pd.DataFrame)
    users: pd.DataFrame = field(default_factory=pd.DataFrame)
    pending_requests: int = 0
    transport: str = "HTTP (loopback)"  # what a client's connection is protected by


def _dataset_rows(client: Any) -> list[dict[str, Any]]:
    rows = []
    for ds in client.datasets:
        meta = parse_metadata(ds.description)
        images = next((a for a in ds.assets if a.name == "images"), None)
        shape = tuple(images.shape) if images is not None and images.shape else ()
        rows.append({
            "dataset": ds.name,
            "images": meta.get("n", shape[0] if shape else None),
            "shape": "x".join(str(s) for s in shape[1:]) if shape else "?",
            "size MB": round(float(ds.mb_size), 2) if getattr(ds, "mb_size", None) else None,
            "labels": ", ".join(f"{k}={v}" for k, v in meta.get("class_counts", {}).items()),
            "synthetic": bool(meta.get("synthetic", False)),
        })
    return rows


def transport(data_dir: DataDir, config: DatasiteConfig) -> str:
    """HTTPS (with or without client certificates, and the days the certificate has left) or HTTP."""
    if config.tls:
        from privacy import pki

        try:
            cert = pki.info(pki.load_cert(data_dir.tls_dir / "server.crt"))
            left = (f", certificate {cert.common_name} for {', '.join(cert.hosts)}, "
                    f"{cert.days_left():.0f} days left")
        except Exception as exc:
            left = f", certificate unreadable ({exc})"
        return f"HTTPS, {'mutual TLS' if config.client_auth else 'no client certificates'}{left}"
    if config.insecure_http:
        return "INSECURE plain HTTP on a network address (--insecure-http): passwords travel in clear"
    return "HTTP (loopback)"


def status(data_dir: DataDir) -> StatusReport:
    config = data_dir.read_config()
    pid = read_pid(data_dir)
    how = transport(data_dir, config)
    if metadata(config.url, context=admin_context(data_dir, config)) is None:
        published = [e["subject"] for e in AuditLog(data_dir.file(AUDIT_FILE)).entries()
                     if e["event"] == "publish"]
        return StatusReport(config.name, config.url, pid, False,
                            datasets=pd.DataFrame({"dataset (from audit log)": published}), transport=how)
    client = admin_client(data_dir)
    with quiet():
        datasets = pd.DataFrame(_dataset_rows(client))
        users = pd.DataFrame(
            [{"email": u.email, "role": str(u.role).rsplit(".", 1)[-1].lower()} for u in client.users]
        )
        pending = sum(1 for r in client.requests if "PENDING" in str(r.status))
    return StatusReport(config.name, config.url, pid, True, datasets, users, pending, transport=how)
