"""``/metrics``: the dashboard's figures in Prometheus' text format, for hospital IT's monitoring.

Each scrape reads a fresh snapshot (:mod:`~orchestrator.dashboard.snapshot`), so the gauges are
what the page shows: sites up and their latency, rounds done of rounds planned, the latest model's
validation figures per site and pooled, ε spent and budgeted per site, and update bytes per round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "registry_for", "render"]


class _SnapshotCollector:
    def __init__(self, get: Callable[[], dict[str, Any]]) -> None:
        self.get = get

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.get()
        up = GaugeMetricFamily("medsyft_site_up", "1 if the site answered its last probe", labels=["site"])
        latency = GaugeMetricFamily("medsyft_site_latency_seconds", "answer time of the last probe",
                                    labels=["site"])
        for h in snap["health"]:
            up.add_metric([h["site"]], 1.0 if h["up"] else 0.0)
            if h["latency_ms"] is not None:
                latency.add_metric([h["site"]], h["latency_ms"] / 1000)
        yield up
        yield latency
        rounds = GaugeMetricFamily("medsyft_rounds", "rounds of the job", labels=["kind"])
        rounds.add_metric(["completed"], snap["round"]["completed"])
        rounds.add_metric(["total"], snap["round"]["total"])
        yield rounds
        yield GaugeMetricFamily("medsyft_job_finished", "1 once the job's last round is done",
                                value=1.0 if snap["finished"] else 0.0)
        model = GaugeMetricFamily("medsyft_validation", "the latest evaluated global model, per site and "
                                  "pooled", labels=["site", "metric"])
        latest = max((m["model_round"] for m in snap["metrics"]), default=None)
        for m in snap["metrics"]:
            if m["model_round"] == latest:
                for name in ("accuracy", "auc", "loss"):
                    if m.get(name) is not None:
                        model.add_metric([m["site"], name], float(m[name]))
        yield model
        eps = GaugeMetricFamily("medsyft_epsilon", "ε of the job's dataset at each site, as the site "
                                "reported it at its last call", labels=["site", "kind"])
        for e in snap["epsilon"]:
            for kind in ("job_spent", "dataset_spent", "budget", "remaining"):
                eps.add_metric([e["site"], kind], e[kind])
        yield eps
        wire = GaugeMetricFamily("medsyft_update_bytes", "bytes of the sites' updates in the latest round",
                                 labels=["kind"])
        if snap["wire"]:
            last = snap["wire"][-1]
            wire.add_metric(["total"], last["bytes_up"])
            wire.add_metric(["per_site"], last["bytes_per_site"])
        yield wire


def registry_for(get: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(get))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return bytes(generate_latest(registry))
