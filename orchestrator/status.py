"""``medsyft status --config job.toml [--watch]``: the federation as this scientist may see it, live.

One row per site of the job:

- ``reachable`` and ``latency_ms``: PySyft's public metadata route, timed;
- ``cert_days``: days until the site's TLS certificate expires (https only), read from the
  handshake the federation CA verified;
- ``medsyft`` and ``pysyft``: the versions the datasite reports (``/medsyft/v1/version``);
- ``dataset`` and ``images``: the job's dataset and its size, from its public metadata;
- ``pending`` / ``approved`` / ``denied``: this scientist's own requests there (PySyft shows a
  scientist nothing else);
- ``eps_spent`` / ``eps_budget`` / ``eps_left``: the dataset's ε ledger as the site reported it at this
  job's last call (the budget alone, from the public metadata, before any call);
- ``round`` and ``state``: where the job stands at that site, from the run directory.

Nothing here needs more than the scientist's own login: no private data, no other user's request.
A site that cannot be reached is a row that says why, never a traceback.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from domains import parse_metadata, quiet
from domains.shared.release_files import MODEL_FILE, RELEASE_DIR
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.config import JobConfig, SiteConfig
from orchestrator.dashboard.health import SiteAddress, probe
from orchestrator.result import latest_privacy
from orchestrator.site import Site

COLUMNS = ["site", "reachable", "latency_ms", "cert_days", "medsyft", "pysyft", "dataset", "images",
           "pending", "approved", "denied", "eps_spent", "eps_budget", "eps_left", "round", "state", "error"]
VERSION_PATH = "/medsyft/v1/version"  # domains.site.version_route
_TIMEOUT_S = 5.0


class StatusProbe:
    """Looks at every site of *config*; keeps its logins between looks (``--watch``)."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self._sites: dict[str, Site] = {}

    def table(self) -> pd.DataFrame:
        run = RunDir(self.config.run_path)
        state = run.load_state() if run.exists() else None
        history, privacy = run.load_frame("history"), run.load_frame("privacy")
        with ThreadPoolExecutor(max(1, len(self.config.sites))) as pool:  # each its own site's work
            rows = list(pool.map(lambda s: self._row(s, state, history, privacy), self.config.sites))
        return pd.DataFrame(rows, columns=COLUMNS)

    def job_line(self) -> str:
        run = RunDir(self.config.run_path)
        if not run.exists():
            return f"job: not submitted yet ({self.config.run_path} has no state.json)"
        state = run.load_state()
        spec = state.spec
        if (run.path / RELEASE_DIR / MODEL_FILE).exists():
            where = "finished; final model in release/"
        elif state.finished:
            where = "finished" + ("; the final model awaits its release" if spec.he is not None else "")
        elif state.completed_round:
            where = f"training: {state.completed_round} of {spec.rounds} rounds done"
        else:
            where = "submitted: waiting for approval or the first round"
        return f"job {spec.job_id} ({spec.model} on '{spec.dataset}', {spec.rounds} rounds): {where}"

    # -- one site ----------------------------------------------------------------------------------
    def _row(self, site: SiteConfig, state: RunState | None, history: pd.DataFrame,
             privacy: pd.DataFrame) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(site=site.name, reachable=False, dataset=self.config.dataset)
        row.update(_job_position(site.name, state, history))
        try:
            address = SiteAddress.from_config(site, self.config.base_dir)
            seen = probe(address, timeout=_TIMEOUT_S)  # the dashboard's probe
            if seen["up"]:
                row.update(reachable=True, latency_ms=seen["latency_ms"], pysyft=seen["pysyft"])
                context = address.context()
                if context is not None:
                    row["cert_days"] = _cert_days(site.url, context)
                row["medsyft"] = _versions(site.url, context).get("medsyft", "unknown")
                connected = self._sites.get(site.name) or Site.connect(site, self.config.base_dir)
                self._sites[site.name] = connected
                row.update(_own_view(connected, self.config.dataset, state))
            else:
                row["error"] = seen["error"]
                self._sites.pop(site.name, None)
        except Exception as exc:  # a row that says why, whatever went wrong at that site
            self._sites.pop(site.name, None)
            row["error"] = " ".join(str(exc).split()) or type(exc).__name__
        row.update(_ledger(site.name, privacy, row))
        return row


def _cert_days(url: str, context: ssl.SSLContext) -> float | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    with socket.create_connection((host, port), timeout=_TIMEOUT_S) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        cert = conn.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    return round((ssl.cert_time_to_seconds(not_after) - time.time()) / 86400, 1)


def _versions(url: str, context: ssl.SSLContext | None) -> dict[str, str]:
    try:
        with urllib.request.urlopen(f"{url}{VERSION_PATH}", timeout=_TIMEOUT_S,  # noqa: S310
                                    context=context) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return {}  # a datasite older than the route


def _own_view(site: Site, dataset: str, state: RunState | None) -> dict[str, Any]:
    """The dataset's public metadata and this scientist's own requests at *site*."""
    out: dict[str, Any] = {}
    with quiet():
        found = {d.name: d for d in site.client.datasets}
        statuses = [str(r.status).rsplit(".", 1)[-1].lower() for r in site.client.requests]
    if dataset in found:
        meta = parse_metadata(found[dataset].description)
        out.update(images=meta.get("n"), eps_budget=meta.get("epsilon_budget"))
    else:
        out["error"] = f"no dataset '{dataset}' (it has: {', '.join(found) or 'none'})"
    out.update(pending=statuses.count("pending"), approved=statuses.count("approved"),
               denied=statuses.count("rejected"))
    return out


def _ledger(name: str, privacy: pd.DataFrame, row: dict[str, Any]) -> dict[str, Any]:
    """ε as the site reported it at this job's last call there; the public budget before any."""
    latest = latest_privacy(privacy)
    if name not in latest.index:
        return {}
    last = latest.loc[name]
    return {"eps_spent": round(float(last["dataset_epsilon_spent"]), 3),
            "eps_budget": float(last["dataset_epsilon_budget"]),
            "eps_left": round(float(last["dataset_epsilon_remaining"]), 3)}


def _job_position(name: str, state: RunState | None, history: pd.DataFrame) -> dict[str, Any]:
    if state is None:
        return {"round": None, "state": "not submitted"}
    rounds = state.spec.rounds
    mine = history[history["site"] == name] if not history.empty else history
    if state.finished:
        return {"round": f"{rounds}/{rounds}", "state": "finished"}
    if mine.empty:
        return {"round": f"0/{rounds}", "state": "submitted"}
    last = mine.sort_values("round").iloc[-1]
    return {"round": f"{int(last['round'])}/{rounds}", "state": "trained" if last["status"] == "ok"
            else f"skipped ({last['status']})"}


def show(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 70):
        return frame.fillna("-").to_string(index=False)


def watch(probe: StatusProbe, *, interval: float, times: int | None, out: Callable[[str], None]) -> None:
    """Redraw the table in place every *interval* seconds (*times* redraws, or until Ctrl-C)."""
    done = 0
    while times is None or done < times:
        text = f"{probe.job_line()}\n\n{show(probe.table())}\n\n(every {interval:g} s; Ctrl-C stops)"
        out("\x1b[H\x1b[2J" + text)  # home and clear: the table replaces itself
        done += 1
        if times is None or done < times:
            time.sleep(interval)
